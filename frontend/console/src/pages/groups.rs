//! `/t/{tenant}/groups`: local groups (members, and access roles every member holds) and user
//! attributes, which rule conditions read as `user.groups` and `user.attributes`
//! (`docs/decisions/0012-groups-and-conditions.md`). Plain forms: they work before the
//! WebAssembly loads.

use gatehouse_core::groups::{GroupView, UserAttribute};
use leptos::html::Form;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::ConsoleError;
use crate::api::{CreateGroup, DeleteGroup, GroupMember, GroupRole, SetUserAttributes, list_groups};
use crate::components::{ActionStatus, ErrorNote, reset_on_success};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

/// `key=value` lines into attributes; a line without `=` is refused naming it.
#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
pub fn parse_attributes(text: &str) -> Result<Vec<UserAttribute>, ConsoleError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(ConsoleError::invalid("attributes", &format!("line {}: write key=value", i + 1)));
        };
        out.push(UserAttribute { key: k.trim().to_owned(), value: v.trim().to_owned() });
    }
    Ok(out)
}

fn saved(a: Vec<UserAttribute>) -> impl IntoView {
    let text =
        if a.is_empty() { "Saved: no attributes.".to_owned() } else { format!("Saved: {}.", attributes_text(&a)) };
    view! { <span data-testid="attrs-saved">{text}</span> }
}

fn attributes_text(attrs: &[UserAttribute]) -> String {
    attrs.iter().map(|a| format!("{}={}", a.key, a.value)).collect::<Vec<_>>().join(", ")
}

/// The groups page.
#[component]
pub fn GroupsPage() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let create = ServerAction::<CreateGroup>::new();
    let delete = ServerAction::<DeleteGroup>::new();
    let member = ServerAction::<GroupMember>::new();
    let role = ServerAction::<GroupRole>::new();
    let attrs = ServerAction::<SetUserAttributes>::new();
    notify_change(create);
    notify_change(delete);
    notify_change(member);
    notify_change(role);
    notify_change(attrs);
    let groups = Resource::new(
        move || {
            (slug.get(), create.version().get(), delete.version().get(), member.version().get(), role.version().get())
        },
        |(t, ..)| list_groups(t),
    );
    let (create_form, attrs_form) = (NodeRef::<Form>::new(), NodeRef::<Form>::new());
    reset_on_success(create, create_form);
    reset_on_success(attrs, attrs_form);

    let card = move |g: GroupView| {
        let testid = format!("group-{}", g.slug);
        let members = if g.members.is_empty() { "nobody".to_owned() } else { g.members.join(", ") };
        let roles = if g.roles.is_empty() { "none".to_owned() } else { g.roles.join(", ") };
        let (s1, s2, s3) = (g.slug.clone(), g.slug.clone(), g.slug.clone());
        view! {
            <li data-testid=testid>
                <strong>{g.name.clone()}</strong> " " <code class="slug">{g.slug.clone()}</code>
                <div class="muted">"Members: " {members}</div>
                <div class="muted">"Roles: " {roles}</div>
                <div class="row">
                    <ActionForm action=member>
                        <input type="hidden" name="tenant" value=move || slug.get() />
                        <input type="hidden" name="group" value=s1 />
                        <input name="email" type="email" required placeholder="user e-mail" aria-label="User e-mail" />
                        <select name="member" aria-label="Add or remove">
                            <option value="add">"add"</option>
                            <option value="remove">"remove"</option>
                        </select>
                        <button type="submit">"Apply"</button>
                    </ActionForm>
                    <ActionForm action=role>
                        <input type="hidden" name="tenant" value=move || slug.get() />
                        <input type="hidden" name="group" value=s2 />
                        <input name="role" required placeholder="role slug" aria-label="Role" />
                        <select name="bound" aria-label="Bind or unbind">
                            <option value="bind">"bind"</option>
                            <option value="unbind">"unbind"</option>
                        </select>
                        <button type="submit">"Apply"</button>
                    </ActionForm>
                    <ActionForm action=delete>
                        <input type="hidden" name="tenant" value=move || slug.get() />
                        <input type="hidden" name="slug" value=s3 />
                        <button type="submit" class="link danger">"delete group"</button>
                    </ActionForm>
                </div>
            </li>
        }
    };
    let list = move || {
        Suspend::new(async move {
            match groups.await {
                Ok(items) if items.is_empty() => {
                    view! { <p class="muted" data-testid="groups">"No groups yet."</p> }.into_any()
                }
                Ok(items) => {
                    view! { <ul class="rules" data-testid="groups">{items.into_iter().map(card).collect_view()}</ul> }
                        .into_any()
                }
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <Title text="Groups" />
        <section class="card" aria-labelledby="groups-h">
            <h2 id="groups-h">"Groups"</h2>
            <p class="muted">
                "A group's members hold every access role bound to it, as well as their own. Rule conditions "
                "see a user's groups as user.groups, e.g. 'oncall' in user.groups."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{list}</Transition>
            <ActionStatus action=member ok=|g: GroupView| format!("Group {} updated.", g.slug) testid="group-member-status" />
            <ActionStatus action=role ok=|g: GroupView| format!("Group {} updated.", g.slug) testid="group-role-status" />
            <ActionStatus action=delete ok=|s: String| format!("Group {s} deleted.") testid="group-delete-status" />
            <ActionForm action=create node_ref=create_form>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="row">
                    <div class="field">
                        <label for="group-slug">"Slug"</label>
                        <input id="group-slug" name="slug" required placeholder="oncall" data-testid="group-slug" />
                    </div>
                    <div class="field">
                        <label for="group-name">"Name"</label>
                        <input id="group-name" name="name" required placeholder="On call" data-testid="group-name" />
                    </div>
                </div>
                <button type="submit" data-testid="group-create" disabled=move || create.pending().get()>"Create group"</button>
            </ActionForm>
            <ActionStatus action=create ok=|g: GroupView| format!("Created group {}.", g.slug) testid="group-create-status" />
        </section>
        <section class="card" aria-labelledby="attrs-h">
            <h2 id="attrs-h">"User attributes"</h2>
            <p class="muted">
                "Replaces a user's attributes, one key=value per line (keys: a-z, 0-9 and _). Rule conditions read "
                "them as user.attributes.<key>, e.g. user.attributes.department == 'payments'."
            </p>
            <ActionForm action=attrs node_ref=attrs_form>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="row">
                    <div class="field">
                        <label for="attrs-email">"User (e-mail)"</label>
                        <input id="attrs-email" name="email" type="email" required data-testid="attrs-email" />
                    </div>
                    <div class="field grow">
                        <label for="attrs-text">"Attributes"</label>
                        <textarea id="attrs-text" name="attributes" rows="3" placeholder="department=payments" data-testid="attrs-text"></textarea>
                    </div>
                </div>
                <button type="submit" data-testid="attrs-save" disabled=move || attrs.pending().get()>"Save attributes"</button>
            </ActionForm>
            <ActionStatus action=attrs ok=saved testid="attrs-status" />
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_lines_are_parsed_and_a_bad_line_is_named() {
        let a = parse_attributes("department = payments\n\nclearance=high=1\n").unwrap();
        assert_eq!(attributes_text(&a), "department=payments, clearance=high=1");
        let e = parse_attributes("ok=1\nnope").unwrap_err();
        assert_eq!(e.message, "attributes: line 2: write key=value");
    }
}
