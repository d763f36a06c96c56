//! `/t/{tenant}/roles`: access roles, the tools each may call, and their members.

use std::collections::BTreeSet;

use gatehouse_core::views::{GrantView, RoleView, ServerView};
use leptos::html::Form;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{CreateRole, SetRoleGrants, UnbindRole, list_roles, list_servers};
use crate::components::{ActionStatus, ErrorNote, reset_on_success};
use crate::pages::rules::RoleRules;
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

/// The tool name that stands for every tool of a server.
const ALL_TOOLS: &str = "*";

/// The roles page.
#[component]
pub fn RolesPage() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let create = ServerAction::<CreateRole>::new();
    notify_change(create);
    let roles = Resource::new(move || (slug.get(), create.version().get()), |(t, _)| list_roles(t));
    let servers = Resource::new(move || slug.get(), list_servers);
    let form = NodeRef::<Form>::new();
    reset_on_success(create, form);

    let list = move || {
        Suspend::new(async move {
            let (roles, servers) = (roles.await, servers.await);
            match (roles, servers) {
                (Ok(roles), _) if roles.is_empty() => {
                    view! { <p class="muted">"No roles yet: create one below."</p> }.into_any()
                }
                (Ok(roles), Ok(servers)) => roles
                    .into_iter()
                    .map(|role| {
                        view! { <RoleCard tenant=slug.get_untracked() role servers=servers.clone() /> }
                    })
                    .collect_view()
                    .into_any(),
                (Err(e), _) | (_, Err(e)) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <Title text="Roles" />
        <section aria-labelledby="roles-h">
            <h2 id="roles-h">"Access roles"</h2>
            <p class="muted">
                "A role grants tools of the registered servers. Users bound to a role may call exactly those tools "
                "through any virtual server that exposes the server. Rules add tool globs, annotation selectors, "
                "parameter limits and denies (a deny wins over every allow)."
            </p>
            <div class="cards" data-testid="role-list">
                <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{list}</Transition>
            </div>
        </section>
        <section class="card" aria-labelledby="new-role-h">
            <h2 id="new-role-h">"Create a role"</h2>
            <ActionForm action=create node_ref=form>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="row">
                    <div class="field">
                        <label for="role-slug">"Slug"</label>
                        <input id="role-slug" name="slug" required placeholder="data-analyst" data-testid="role-slug" />
                    </div>
                    <div class="field grow">
                        <label for="role-description">"Description"</label>
                        <input
                            id="role-description"
                            name="description"
                            placeholder="What the role is for"
                            data-testid="role-description"
                        />
                    </div>
                </div>
                <button type="submit" data-testid="create-role" disabled=move || create.pending().get()>
                    "Create role"
                </button>
            </ActionForm>
            <ActionStatus
                action=create
                ok=|r: RoleView| format!("Created role {}. Choose its tools above.", r.slug)
                testid="create-role-error"
            />
        </section>
    }
}

/// One role: its grants as checkboxes (saved with one button) and its members.
#[component]
fn RoleCard(tenant: String, role: RoleView, servers: Vec<ServerView>) -> impl IntoView {
    let save = ServerAction::<SetRoleGrants>::new();
    let unbind = ServerAction::<UnbindRole>::new();
    notify_change(save);
    notify_change(unbind);

    let initial: BTreeSet<(String, String)> = role.grants.iter().map(|g| (g.server.clone(), g.tool.clone())).collect();
    // What the checkboxes show, and what the server last confirmed.
    let selected = RwSignal::new(initial.clone());
    let saved = RwSignal::new(initial);
    let members = RwSignal::new(role.members.clone());
    Effect::new(move |_| {
        let result = save.value().get().or_else(|| unbind.value().get());
        if let Some(Ok(r)) = result {
            saved.set(r.grants.iter().map(|g| (g.server.clone(), g.tool.clone())).collect());
            members.set(r.members);
        }
    });
    let dirty = move || selected.with(|s| saved.with(|v| s != v));

    let role_slug = role.slug.clone();
    let on_save = {
        let (tenant, role) = (tenant.clone(), role_slug.clone());
        move |_| {
            let grants =
                selected.get_untracked().into_iter().map(|(server, tool)| GrantView { server, tool }).collect();
            save.dispatch(SetRoleGrants { tenant: tenant.clone(), role: role.clone(), grants });
        }
    };

    let rules = view! {
        <RoleRules tenant=tenant.clone() role=role_slug.clone() rules=role.rules.clone() servers=servers.clone() />
    };
    let server_sets = servers
        .into_iter()
        .map(|server| view! { <ServerGrants role=role_slug.clone() server selected /> })
        .collect_view();
    let no_servers = server_sets.is_empty();

    let member_list = {
        let (tenant, role) = (tenant.clone(), role_slug.clone());
        move || {
            let items = members.get();
            if items.is_empty() {
                return view! { <p class="muted">"No members. Bind users on the Users page."</p> }.into_any();
            }
            let list_id = format!("members-{role}");
            let rows = items
                .into_iter()
                .map(|email| {
                    let label = format!("Remove {email} from {role}");
                    let (tenant, role) = (tenant.clone(), role.clone());
                    view! {
                        <li>
                            <span>{email.clone()}</span>
                            <ActionForm action=unbind>
                                <input type="hidden" name="tenant" value=tenant />
                                <input type="hidden" name="role" value=role />
                                <input type="hidden" name="email" value=email />
                                <button type="submit" class="link" aria-label=label>
                                    "remove"
                                </button>
                            </ActionForm>
                        </li>
                    }
                })
                .collect_view();
            view! { <ul class="members" data-testid=list_id>{rows}</ul> }.into_any()
        }
    };

    view! {
        <article class="card role" data-testid=format!("role-{}", role.slug)>
            <h3>{role.slug.clone()}</h3>
            {(!role.description.is_empty()).then(|| view! { <p>{role.description.clone()}</p> })}
            <h4>"Grants"</h4>
            {no_servers.then(|| view! { <p class="muted">"Register a server first; its tools appear here."</p> })}
            {server_sets}
            <p class="grant-summary" data-testid=format!("grants-{}", role.slug)>
                {move || summary(&saved.get())}
            </p>
            <div class="actions">
                <button
                    type="button"
                    on:click=on_save
                    disabled=move || save.pending().get() || !dirty()
                    data-testid=format!("save-grants-{}", role.slug)
                >
                    "Save grants"
                </button>
                {move || dirty().then(|| view! { <span class="muted">"unsaved changes"</span> })}
            </div>
            <ActionStatus
                action=save
                ok=|r: RoleView| format!("Saved {} grants.", r.grants.len())
                testid=format!("save-grants-error-{}", role.slug)
            />
            {rules}
            <h4>"Members"</h4>
            {member_list}
            <ActionStatus action=unbind ok=|_| "Removed." />
        </article>
    }
}

/// The checkboxes of one server inside a role: "all tools", then each tool.
#[component]
fn ServerGrants(role: String, server: ServerView, selected: RwSignal<BTreeSet<(String, String)>>) -> impl IntoView {
    let all_key = (server.slug.clone(), ALL_TOOLS.to_owned());
    let all_on = {
        let key = all_key.clone();
        move || selected.with(|s| s.contains(&key))
    };
    let toggle = move |key: (String, String), on: bool| {
        selected.update(|s| {
            if on {
                s.insert(key);
            } else {
                s.remove(&key);
            }
        })
    };
    let tools = server
        .tools
        .iter()
        .map(|tool| {
            let key = (server.slug.clone(), tool.name.clone());
            let checked = {
                let key = key.clone();
                move || selected.with(|s| s.contains(&key))
            };
            let initially = checked();
            let all_on = all_on.clone();
            view! {
                <li>
                    <label>
                        <input
                            type="checkbox"
                            checked=initially
                            prop:checked=checked
                            disabled=all_on
                            on:change=move |ev| toggle(key.clone(), event_target_checked(&ev))
                            data-testid=format!("grant-{role}-{}-{}", server.slug, tool.name)
                        />
                        " "
                        <code>{tool.name.clone()}</code>
                    </label>
                </li>
            }
        })
        .collect_view();
    let initially_all = all_on();
    view! {
        <fieldset class="grants">
            <legend>{server.name.clone()} " " <code class="slug">{server.slug.clone()}</code></legend>
            <label class="all">
                <input
                    type="checkbox"
                    checked=initially_all
                    prop:checked=all_on
                    on:change=move |ev| toggle(all_key.clone(), event_target_checked(&ev))
                    data-testid=format!("grant-{role}-{}-all", server.slug)
                />
                " All tools of this server (including ones added later)"
            </label>
            <ul class="tool-grid">{tools}</ul>
        </fieldset>
    }
}

/// The saved grants in words.
fn summary(grants: &BTreeSet<(String, String)>) -> String {
    if grants.is_empty() {
        return "Grants nothing yet.".into();
    }
    let parts: Vec<String> = grants
        .iter()
        .map(
            |(server, tool)| {
                if tool == ALL_TOOLS { format!("every tool of {server}") } else { format!("{tool} of {server}") }
            },
        )
        .collect();
    format!("Grants {}.", parts.join(", "))
}
