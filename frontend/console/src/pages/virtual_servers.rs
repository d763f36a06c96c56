//! `/t/{tenant}/virtual-servers`: the endpoints MCP clients connect to.

use std::collections::BTreeSet;

use gatehouse_core::rules::PolicyMode;
use gatehouse_core::views::{AccessExplanationView, VirtualServerView};
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{CreateVirtualServer, ExplainAccess, SetPolicyMode, list_servers, list_users, list_virtual_servers};
use crate::components::{ActionStatus, ErrorNote};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

/// The virtual servers page.
#[component]
pub fn VirtualServersPage() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let create = ServerAction::<CreateVirtualServer>::new();
    let set_mode = ServerAction::<SetPolicyMode>::new();
    notify_change(create);
    notify_change(set_mode);
    let vss = Resource::new(
        move || (slug.get(), create.version().get(), set_mode.version().get()),
        |(t, _, _)| list_virtual_servers(t),
    );
    let servers = Resource::new(move || slug.get(), list_servers);

    // The form's state; it is sent as JSON (a list of server slugs), so it is built by hand.
    let vs_slug = RwSignal::new(String::new());
    let vs_name = RwSignal::new(String::new());
    let picked = RwSignal::new(BTreeSet::<String>::new());
    Effect::new(move |_| {
        if matches!(create.value().get(), Some(Ok(_))) {
            vs_slug.set(String::new());
            vs_name.set(String::new());
            picked.set(BTreeSet::new());
        }
    });
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        create.dispatch(CreateVirtualServer {
            tenant: slug.get_untracked(),
            slug: vs_slug.get_untracked(),
            name: vs_name.get_untracked(),
            servers: picked.get_untracked().into_iter().collect(),
        });
    };

    let table = move || {
        Suspend::new(async move {
            match vss.await {
                Ok(list) if list.is_empty() => view! { <p class="muted">"No virtual servers yet."</p> }.into_any(),
                Ok(list) => view! {
                    <table data-testid="vs-table">
                        <thead>
                            <tr>
                                <th scope="col">"Slug"</th>
                                <th scope="col">"Name"</th>
                                <th scope="col">"Upstream servers"</th>
                                <th scope="col">"Policy"</th>
                                <th scope="col">"MCP endpoint"</th>
                            </tr>
                        </thead>
                        <tbody>{list.into_iter().map(|vs| vs_row(vs, set_mode)).collect_view()}</tbody>
                    </table>
                    <ActionStatus
                        action=set_mode
                        ok=|vs: VirtualServerView| format!("{} now {}s its access policy.", vs.slug, vs.mode.as_str())
                        testid="set-mode-error"
                    />
                    <p class="muted">
                        "Point an MCP client (Streamable HTTP) at the endpoint with the header "
                        <code>"Authorization: Bearer <API token>"</code> "."
                    </p>
                }
                .into_any(),
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    let server_choices = move || {
        Suspend::new(async move {
            match servers.await {
                Ok(list) if list.is_empty() => view! { <p class="muted">"Register a server first."</p> }.into_any(),
                Ok(list) => list
                    .into_iter()
                    .map(|s| {
                        let key = s.slug.clone();
                        let checked = {
                            let key = key.clone();
                            move || picked.with(|p| p.contains(&key))
                        };
                        view! {
                            <label class="choice">
                                <input
                                    type="checkbox"
                                    prop:checked=checked
                                    on:change=move |ev| {
                                        let on = event_target_checked(&ev);
                                        picked
                                            .update(|p| {
                                                if on {
                                                    p.insert(key.clone());
                                                } else {
                                                    p.remove(&key);
                                                }
                                            })
                                    }
                                    data-testid=format!("vs-server-{}", s.slug)
                                />
                                " " {s.name} " " <code class="slug">{s.slug.clone()}</code>
                            </label>
                        }
                    })
                    .collect_view()
                    .into_any(),
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <Title text="Virtual servers" />
        <section aria-labelledby="vs-h">
            <h2 id="vs-h">"Virtual servers"</h2>
            <p class="muted">
                "A virtual server bundles upstream servers behind one gateway endpoint; each user sees the tools "
                "their roles grant."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{table}</Transition>
        </section>
        <section class="card" aria-labelledby="new-vs-h">
            <h2 id="new-vs-h">"Create a virtual server"</h2>
            <form on:submit=on_submit>
                <div class="row">
                    <div class="field">
                        <label for="vs-slug">"Slug"</label>
                        <input id="vs-slug" required placeholder="engineering" bind:value=vs_slug data-testid="vs-slug" />
                    </div>
                    <div class="field">
                        <label for="vs-name">"Name"</label>
                        <input id="vs-name" required placeholder="Engineering tools" bind:value=vs_name data-testid="vs-name" />
                    </div>
                </div>
                <fieldset>
                    <legend>"Upstream servers"</legend>
                    <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{server_choices}</Transition>
                </fieldset>
                <button type="submit" data-testid="create-vs" disabled=move || create.pending().get()>
                    "Create virtual server"
                </button>
            </form>
            <ActionStatus
                action=create
                ok=|vs: VirtualServerView| format!("Created {}: {}", vs.slug, vs.endpoint)
                testid="create-vs-error"
            />
        </section>
        <ExplainAccessCard />
    }
}

/// "What can this user do on this virtual server, and why?", answered by the gateway's own
/// evaluator on the tenant's current bundle.
#[component]
fn ExplainAccessCard() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let explain = ServerAction::<ExplainAccess>::new();
    let vss = Resource::new(move || slug.get(), list_virtual_servers);
    let users = Resource::new(move || slug.get(), list_users);
    let options = move || {
        Suspend::new(async move {
            let vs_options = vss
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|v| {
                    let label = v.slug.clone();
                    view! { <option value=v.slug>{label}</option> }
                })
                .collect_view();
            let user_options = users
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|u| {
                    let label = u.email.clone();
                    view! { <option value=u.email>{label}</option> }
                })
                .collect_view();
            view! {
                <div class="row">
                    <div class="field">
                        <label for="explain-vs">"Virtual server"</label>
                        <select id="explain-vs" name="virtual_server" data-testid="explain-vs">{vs_options}</select>
                    </div>
                    <div class="field">
                        <label for="explain-user">"User"</label>
                        <select id="explain-user" name="user_email" data-testid="explain-user">{user_options}</select>
                    </div>
                </div>
            }
        })
    };
    let result = move || match explain.value().get() {
        None => ().into_any(),
        Some(Err(e)) => view! { <ErrorNote error=e /> }.into_any(),
        Some(Ok(x)) => explanation(x).into_any(),
    };
    view! {
        <section class="card" aria-labelledby="explain-h">
            <h2 id="explain-h">"Explain access"</h2>
            <p class="muted">"Which tools a user gets on a virtual server, and which role grants each, from the policy the gateways enforce."</p>
            <ActionForm action=explain>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{options}</Transition>
                <button type="submit" data-testid="explain" disabled=move || explain.pending().get()>"Explain"</button>
            </ActionForm>
            {result}
        </section>
    }
}

fn explanation(x: AccessExplanationView) -> impl IntoView {
    let revision: String = x.bundle_revision.chars().take(12).collect();
    view! {
        <p class="muted">{format!("{} on {} (bundle {revision}):", x.user, x.virtual_server)}</p>
        <table data-testid="explain-table">
            <thead>
                <tr>
                    <th scope="col">"Server"</th>
                    <th scope="col">"Tool"</th>
                    <th scope="col">"Access"</th>
                    <th scope="col">"Why"</th>
                </tr>
            </thead>
            <tbody>
                {x
                    .tools
                    .into_iter()
                    .map(|t| {
                        let rule = t.rule_id.unwrap_or_default();
                        let why = match (t.allowed, t.constrained) {
                            (true, false) => format!("granted by role {} ({rule})", t.role.unwrap_or_default()),
                            (true, true) => format!(
                                "allowed by role {} with parameter limits: a call can still be refused for its arguments ({rule})",
                                t.role.unwrap_or_default()
                            ),
                            (false, _) => t.reason.unwrap_or_default(),
                        };
                        let testid = format!("explain-{}-{}", t.server, t.tool);
                        view! {
                            <tr data-testid=testid>
                                <td><code>{t.server}</code></td>
                                <td><code>{t.tool}</code></td>
                                <td>{if t.allowed { "allowed" } else { "refused" }}</td>
                                <td>{why}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}

fn vs_row(vs: VirtualServerView, set_mode: ServerAction<SetPolicyMode>) -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let (label, next, button) = match vs.mode {
        PolicyMode::Enforce => ("enforced", "monitor", "Monitor only"),
        PolicyMode::Monitor => ("monitor only: refusals are logged as would_deny, not enforced", "enforce", "Enforce"),
    };
    let (row_id, mode_id, button_id, endpoint_id) = (
        format!("vs-{}", vs.slug),
        format!("vs-mode-{}", vs.slug),
        format!("vs-set-mode-{}", vs.slug),
        format!("vs-endpoint-{}", vs.slug),
    );
    let vs_slug = vs.slug.clone();
    view! {
        <tr data-testid=row_id>
            <td>
                <code>{vs.slug.clone()}</code>
            </td>
            <td>{vs.name}</td>
            <td>{vs.upstreams.join(", ")}</td>
            <td>
                <span data-testid=mode_id>{label}</span>
                <ActionForm action=set_mode>
                    <input type="hidden" name="tenant" value=move || slug.get() />
                    <input type="hidden" name="virtual_server" value=vs_slug />
                    <input type="hidden" name="mode" value=next />
                    <button type="submit" class="secondary" data-testid=button_id>
                        {button}
                    </button>
                </ActionForm>
            </td>
            <td>
                <code class="endpoint" data-testid=endpoint_id>
                    {vs.endpoint}
                </code>
            </td>
        </tr>
    }
}
