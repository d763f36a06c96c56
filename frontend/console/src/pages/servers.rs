//! `/t/{tenant}/servers`: upstream MCP servers and their tools.

use gatehouse_core::views::ServerView;
use leptos::html::Form;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{RefreshServer, RegisterServer, SetServerLabels, list_servers};
use crate::components::{ActionStatus, ErrorNote, fmt_opt_time, reset_on_success};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

/// The servers page.
#[component]
pub fn ServersPage() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let register = ServerAction::<RegisterServer>::new();
    let refresh = ServerAction::<RefreshServer>::new();
    let label = ServerAction::<SetServerLabels>::new();
    notify_change(register);
    notify_change(refresh);
    notify_change(label);
    let servers = Resource::new(
        move || (slug.get(), register.version().get(), refresh.version().get(), label.version().get()),
        |(t, _, _, _)| list_servers(t),
    );
    let form = NodeRef::<Form>::new();
    reset_on_success(register, form);

    let list = move || {
        Suspend::new(async move {
            match servers.await {
                Ok(list) if list.is_empty() => {
                    view! { <p class="muted">"No servers yet: register one below."</p> }.into_any()
                }
                Ok(list) => list
                    .into_iter()
                    .map(|s| view! { <ServerCard server=s tenant=slug.get_untracked() refresh label /> })
                    .collect_view()
                    .into_any(),
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <Title text="Servers" />
        <section aria-labelledby="servers-h">
            <h2 id="servers-h">"Upstream MCP servers"</h2>
            <ActionStatus
                action=refresh
                ok=|s: ServerView| format!("Fetched {} tools from {}.", s.tools.len(), s.slug)
                testid="refresh-error"
            />
            <ActionStatus
                action=label
                ok=|s: ServerView| format!("{} is labelled {}.", s.slug, if s.labels.is_empty() { "nothing".to_owned() } else { s.labels.join(", ") })
                testid="labels-error"
            />
            <div class="cards" data-testid="server-list">
                <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{list}</Transition>
            </div>
        </section>
        <section class="card" aria-labelledby="register-h">
            <h2 id="register-h">"Register a server"</h2>
            <p class="muted">
                "A Streamable HTTP MCP endpoint, a legacy HTTP+SSE server, or a stdio command the gateway "
                "workers launch (only commands on their stdio_commands allow-list). Gatehouse connects to it "
                "now and lists its tools; nothing is saved if it cannot be reached."
            </p>
            <ActionForm action=register node_ref=form>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="row">
                    <div class="field">
                        <label for="server-slug">"Slug"</label>
                        <input id="server-slug" name="slug" required placeholder="github" data-testid="server-slug" />
                    </div>
                    <div class="field">
                        <label for="server-name">"Name"</label>
                        <input id="server-name" name="name" required placeholder="GitHub" data-testid="server-name" />
                    </div>
                </div>
                <div class="field">
                    <label for="server-transport">"Transport"</label>
                    <select id="server-transport" name="transport" data-testid="server-transport">
                        <option value="streamableHttp" selected>"Streamable HTTP"</option>
                        <option value="sse">"HTTP+SSE (legacy)"</option>
                        <option value="stdio">"stdio (a command the workers launch)"</option>
                    </select>
                </div>
                <div class="field">
                    <label for="server-url">"URL (Streamable HTTP endpoint or SSE URL)"</label>
                    <input
                        id="server-url"
                        name="url"
                        type="url"
                        placeholder="https://mcp.example.com/mcp"
                        data-testid="server-url"
                    />
                </div>
                <div class="row">
                    <div class="field">
                        <label for="server-command">"Command (stdio)"</label>
                        <input
                            id="server-command"
                            name="command"
                            placeholder="npx or /opt/mcp/bin/server"
                            data-testid="server-command"
                        />
                    </div>
                    <div class="field">
                        <label for="server-args">"Arguments (stdio, one per line)"</label>
                        <textarea id="server-args" name="args" rows="2" data-testid="server-args"></textarea>
                    </div>
                    <div class="field">
                        <label for="server-env">"Environment (stdio, NAME=value per line; not secret)"</label>
                        <textarea id="server-env" name="env" rows="2" data-testid="server-env"></textarea>
                    </div>
                </div>
                <button type="submit" data-testid="register-server" disabled=move || register.pending().get()>
                    "Register and fetch tools"
                </button>
            </ActionForm>
            <ActionStatus
                action=register
                ok=|s: ServerView| format!("Registered {} with {} tools.", s.slug, s.tools.len())
                testid="register-server-error"
            />
        </section>
    }
}

#[component]
fn ServerCard(
    server: ServerView,
    tenant: String,
    refresh: ServerAction<RefreshServer>,
    label: ServerAction<SetServerLabels>,
) -> impl IntoView {
    let ServerView { slug, name, url, tools, labels, tools_fetched_at_ms, transport, command, args, env_names } =
        server;
    let transport_id = format!("transport-{slug}");
    let reached = match (transport.as_str(), command) {
        ("stdio", Some(c)) => {
            let mut line = std::iter::once(c).chain(args).collect::<Vec<_>>().join(" ");
            if !env_names.is_empty() {
                line = format!("{line} (env: {})", env_names.join(", "));
            }
            format!("stdio: {line}")
        }
        ("sse", _) => format!("HTTP+SSE: {url}"),
        _ => url,
    };
    let tool_count = tools.len();
    let (card_id, refresh_id, tools_id, labels_id) =
        (format!("server-{slug}"), format!("refresh-{slug}"), format!("tools-{slug}"), format!("labels-{slug}"));
    let (labels_text, labels_input_id, labels_save_id) =
        (labels.join(", "), format!("labels-input-{slug}"), format!("labels-save-{slug}"));
    let (label_tenant, label_slug) = (tenant.clone(), slug.clone());
    view! {
        <article class="card" data-testid=card_id>
            <header class="card-head">
                <h3>{name} " " <code class="slug">{slug.clone()}</code></h3>
                <ActionForm action=refresh>
                    <input type="hidden" name="tenant" value=tenant />
                    <input type="hidden" name="slug" value=slug.clone() />
                    <button
                        type="submit"
                        class="secondary"
                        data-testid=refresh_id
                        disabled=move || refresh.pending().get()
                    >
                        "Refresh tools"
                    </button>
                </ActionForm>
            </header>
            <p>
                <code class="url" data-testid=transport_id>{reached}</code>
            </p>
            <ActionForm action=label attr:class="inline-form">
                <input type="hidden" name="tenant" value=label_tenant />
                <input type="hidden" name="server" value=label_slug />
                <label for=labels_input_id.clone()>"Labels"</label>
                " "
                <input
                    id=labels_input_id.clone()
                    name="labels"
                    value=labels_text
                    placeholder="PCI, PII, eu"
                    data-testid=labels_input_id
                />
                " "
                <button type="submit" class="secondary" data-testid=labels_save_id>"Save labels"</button>
                " "
                <span class="muted" data-testid=labels_id>
                    {if labels.is_empty() { "no labels".to_owned() } else { labels.join(", ") }}
                </span>
            </ActionForm>
            <details open=tool_count <= 20>
                <summary>
                    {format!("{tool_count} tools · fetched {}", fmt_opt_time(tools_fetched_at_ms))}
                </summary>
                <ul class="tools" data-testid=tools_id>
                    {tools
                        .into_iter()
                        .map(|t| {
                            view! {
                                <li>
                                    <code>{t.name}</code>
                                    {t.description.map(|d| view! { <span class="muted">" — " {d}</span> })}
                                </li>
                            }
                        })
                        .collect_view()}
                </ul>
            </details>
        </article>
    }
}
