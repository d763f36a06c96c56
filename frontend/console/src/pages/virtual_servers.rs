//! `/t/{tenant}/virtual-servers`: the endpoints MCP clients connect to.

use std::collections::BTreeSet;

use gatehouse_core::views::VirtualServerView;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{CreateVirtualServer, list_servers, list_virtual_servers};
use crate::components::{ActionStatus, ErrorNote};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

/// The virtual servers page.
#[component]
pub fn VirtualServersPage() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let create = ServerAction::<CreateVirtualServer>::new();
    notify_change(create);
    let vss = Resource::new(move || (slug.get(), create.version().get()), |(t, _)| list_virtual_servers(t));
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
                                <th scope="col">"MCP endpoint"</th>
                            </tr>
                        </thead>
                        <tbody>{list.into_iter().map(vs_row).collect_view()}</tbody>
                    </table>
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
    }
}

fn vs_row(vs: VirtualServerView) -> impl IntoView {
    view! {
        <tr data-testid=format!("vs-{}", vs.slug)>
            <td>
                <code>{vs.slug.clone()}</code>
            </td>
            <td>{vs.name}</td>
            <td>{vs.upstreams.join(", ")}</td>
            <td>
                <code class="endpoint" data-testid=format!("vs-endpoint-{}", vs.slug)>
                    {vs.endpoint}
                </code>
            </td>
        </tr>
    }
}
