//! `/t/{tenant}/users`: users, their console role, and binding them to access roles.

use gatehouse_core::views::{RoleView, UserView};
use leptos::html::Form;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{BindRole, CreateUser, list_roles, list_users};
use crate::components::{ActionStatus, ErrorNote, reset_on_success};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

/// The users page.
#[component]
pub fn UsersPage() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let create = ServerAction::<CreateUser>::new();
    let bind = ServerAction::<BindRole>::new();
    notify_change(create);
    notify_change(bind);
    let users =
        Resource::new(move || (slug.get(), create.version().get(), bind.version().get()), |(t, _, _)| list_users(t));
    let roles = Resource::new(move || (slug.get(), bind.version().get()), |(t, _)| list_roles(t));
    let form = NodeRef::<Form>::new();
    reset_on_success(create, form);

    let table = move || {
        Suspend::new(async move {
            match users.await {
                Ok(list) if list.is_empty() => view! { <p class="muted">"No users yet."</p> }.into_any(),
                Ok(list) => view! {
                    <table data-testid="user-table">
                        <thead>
                            <tr>
                                <th scope="col">"E-mail"</th>
                                <th scope="col">"Name"</th>
                                <th scope="col">"Console role"</th>
                                <th scope="col">"Access roles"</th>
                            </tr>
                        </thead>
                        <tbody>{list.into_iter().map(user_row).collect_view()}</tbody>
                    </table>
                }
                .into_any(),
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    let bind_form = move || {
        Suspend::new(async move {
            let (users, roles) = (users.await, roles.await);
            let (users, roles) = match (users, roles) {
                (Ok(u), Ok(r)) => (u, r),
                (Err(e), _) | (_, Err(e)) => return view! { <ErrorNote error=e /> }.into_any(),
            };
            if users.is_empty() || roles.is_empty() {
                return view! { <p class="muted">"Create a user and a role first."</p> }.into_any();
            }
            view! {
                <ActionForm action=bind>
                    <input type="hidden" name="tenant" value=slug.get_untracked() />
                    <div class="row">
                        <div class="field">
                            <label for="bind-user">"User"</label>
                            <select id="bind-user" name="email" required data-testid="bind-user">
                                <option value="">"Choose a user…"</option>
                                {users
                                    .into_iter()
                                    .map(|u| view! { <option value=u.email.clone()>{u.email.clone()}</option> })
                                    .collect_view()}
                            </select>
                        </div>
                        <div class="field">
                            <label for="bind-role">"Role"</label>
                            <select id="bind-role" name="role" required data-testid="bind-role">
                                <option value="">"Choose a role…"</option>
                                {roles
                                    .into_iter()
                                    .map(|r: RoleView| view! { <option value=r.slug.clone()>{r.slug.clone()}</option> })
                                    .collect_view()}
                            </select>
                        </div>
                    </div>
                    <button type="submit" data-testid="bind-submit" disabled=move || bind.pending().get()>
                        "Bind"
                    </button>
                </ActionForm>
            }
            .into_any()
        })
    };

    view! {
        <Title text="Users" />
        <section aria-labelledby="users-h">
            <h2 id="users-h">"Users"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{table}</Transition>
        </section>
        <section class="card" aria-labelledby="bind-h">
            <h2 id="bind-h">"Bind a user to a role"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{bind_form}</Transition>
            <ActionStatus
                action=bind
                ok=|r: RoleView| format!("{} now has {} member(s).", r.slug, r.members.len())
                testid="bind-error"
            />
        </section>
        <section class="card" aria-labelledby="new-user-h">
            <h2 id="new-user-h">"Add a user"</h2>
            <ActionForm action=create node_ref=form>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="row">
                    <div class="field">
                        <label for="user-email">"E-mail"</label>
                        <input
                            id="user-email"
                            name="email"
                            type="email"
                            required
                            placeholder="alice@example.com"
                            data-testid="user-email"
                        />
                    </div>
                    <div class="field">
                        <label for="user-name">"Display name"</label>
                        <input
                            id="user-name"
                            name="display_name"
                            required
                            placeholder="Alice"
                            data-testid="user-name"
                        />
                    </div>
                </div>
                <div class="row">
                    <div class="field">
                        <label for="user-console-role">"Console role"</label>
                        <select id="user-console-role" name="console_role" data-testid="user-console-role">
                            <option value="member" selected>
                                "member (reads the console)"
                            </option>
                            <option value="admin">"admin (manages this tenant)"</option>
                        </select>
                    </div>
                    <div class="field">
                        <label for="user-password">"Password (optional)"</label>
                        <input
                            id="user-password"
                            name="password"
                            type="password"
                            autocomplete="new-password"
                            aria-describedby="user-password-hint"
                            data-testid="user-password"
                        />
                        <small id="user-password-hint" class="muted">
                            "At least 12 characters. Leave empty for a user who only uses MCP clients with API tokens."
                        </small>
                    </div>
                </div>
                <button type="submit" data-testid="create-user" disabled=move || create.pending().get()>
                    "Add user"
                </button>
            </ActionForm>
            <ActionStatus
                action=create
                ok=|u: UserView| format!("Added {}.", u.email)
                testid="create-user-error"
            />
        </section>
    }
}

fn user_row(u: UserView) -> impl IntoView {
    let testid = format!("user-{}", u.email);
    let roles = if u.roles.is_empty() { "—".to_owned() } else { u.roles.join(", ") };
    view! {
        <tr data-testid=testid>
            <td>{u.email}</td>
            <td>{u.display_name}</td>
            <td>{u.console_role}</td>
            <td data-testid="user-roles">{roles}</td>
        </tr>
    }
}
