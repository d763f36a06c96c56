//! `/t/{tenant}/virtual-servers`: the endpoints MCP clients connect to.

use std::collections::BTreeSet;

use gatehouse_core::rules::PolicyMode;
use gatehouse_core::shaping::{FixedParam, NarrowedEnum, ToolOverride, UpstreamPrefix};
use gatehouse_core::views::{AccessExplanationView, VirtualServerView};
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{
    CreateVirtualServer, DeleteToolOverride, ExplainAccess, SetConflictStrategy, SetPolicyMode, SetToolOverride,
    list_servers, list_users, list_virtual_servers, virtual_server_tools,
};
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
        <ShapingCard />
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

/// Parses `name=value, name=value` lines of the prefixes field.
fn parse_prefixes(text: &str) -> Result<Vec<UpstreamPrefix>, String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((server, prefix)) => {
                Ok(UpstreamPrefix { server: server.trim().to_owned(), prefix: prefix.trim().to_owned() })
            }
            None => Err(format!("prefixes: write server=prefix, found '{p}'")),
        })
        .collect()
}

/// The override form's fields as the control plane takes them; errors name the field.
fn parse_override(
    target: &str,
    rename: &str,
    description: &str,
    fixed: &str,
    hidden: &str,
    enums: &str,
) -> Result<ToolOverride, String> {
    let Some((server, tool)) = target.split_once('/') else {
        return Err("override.tool: pick a tool".to_owned());
    };
    let object = |field: &str, text: &str| -> Result<serde_json::Map<String, serde_json::Value>, String> {
        if text.trim().is_empty() {
            return Ok(serde_json::Map::new());
        }
        serde_json::from_str(text).map_err(|e| format!("override.{field}: not a JSON object ({e})"))
    };
    let fixed = object("fixed", fixed)?.into_iter().map(|(name, value)| FixedParam { name, value }).collect();
    let enums = object("enums", enums)?
        .into_iter()
        .map(|(name, values)| match values {
            serde_json::Value::Array(values) => Ok(NarrowedEnum { name, values }),
            _ => Err(format!("override.enums.{name}: give a JSON list of the allowed values")),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let set = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    Ok(ToolOverride {
        server: server.to_owned(),
        tool: tool.to_owned(),
        rename: set(rename),
        description: set(description),
        fixed,
        hidden: hidden.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect(),
        enums,
    })
}

/// Shaping of one virtual server: the conflict strategy, per-tool overrides, and the effective
/// tool list clients get (`docs/decisions/0013-virtual-server-shaping.md`).
#[component]
fn ShapingCard() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let set_strategy = ServerAction::<SetConflictStrategy>::new();
    let set_override = ServerAction::<SetToolOverride>::new();
    let delete_override = ServerAction::<DeleteToolOverride>::new();
    notify_change(set_strategy);
    notify_change(set_override);
    notify_change(delete_override);
    let changes = move || (set_strategy.version().get(), set_override.version().get(), delete_override.version().get());
    let vss = Resource::new(move || (slug.get(), changes()), |(t, _)| list_virtual_servers(t));
    let chosen = RwSignal::new(String::new());
    // The virtual server shown (the chosen one, else the first) with its effective tool list.
    let tools = Resource::new(
        move || (slug.get(), chosen.get(), changes()),
        |(t, vs, _)| async move {
            let list = list_virtual_servers(t.clone()).await?;
            let Some(shown) = list.into_iter().find(|v| vs.is_empty() || v.slug == vs) else {
                return Ok(None);
            };
            let tools = virtual_server_tools(t, shown.slug.clone()).await?;
            Ok(Some((shown, tools)))
        },
    );
    let current =
        move || tools.get_untracked().and_then(Result::ok).flatten().map(|(vs, _)| vs.slug).unwrap_or_default();

    let strategy = RwSignal::new("auto".to_owned());
    let prefixes = RwSignal::new(String::new());
    let target = RwSignal::new(String::new());
    let rename = RwSignal::new(String::new());
    let description = RwSignal::new(String::new());
    let fixed = RwSignal::new(String::new());
    let hidden = RwSignal::new(String::new());
    let enums = RwSignal::new(String::new());
    let local_error = RwSignal::new(None::<String>);

    // In the browser: the strategy form shows what the shown virtual server has saved.
    Effect::new(move |_| {
        if let Some(Ok(Some((vs, _)))) = tools.get() {
            strategy.set(vs.conflict_strategy.as_str().to_owned());
            prefixes
                .set(vs.prefixes.iter().map(|p| format!("{}={}", p.server, p.prefix)).collect::<Vec<_>>().join(", "));
        }
    });
    let edit = move |o: Option<ToolOverride>, server: String, tool: String| {
        target.set(format!("{server}/{tool}"));
        let o = o.unwrap_or_default();
        rename.set(o.rename.unwrap_or_default());
        description.set(o.description.unwrap_or_default());
        let fixed_map: serde_json::Map<String, serde_json::Value> =
            o.fixed.into_iter().map(|f| (f.name, f.value)).collect();
        fixed.set(if fixed_map.is_empty() { String::new() } else { serde_json::Value::Object(fixed_map).to_string() });
        hidden.set(o.hidden.join(", "));
        let enum_map: serde_json::Map<String, serde_json::Value> =
            o.enums.into_iter().map(|e| (e.name, serde_json::Value::Array(e.values))).collect();
        enums.set(if enum_map.is_empty() { String::new() } else { serde_json::Value::Object(enum_map).to_string() });
        local_error.set(None);
    };

    let vs_picker = move || {
        Suspend::new(async move {
            let list = vss.await.unwrap_or_default();
            let options = list
                .iter()
                .map(|v| {
                    let (value, label) = (v.slug.clone(), v.slug.clone());
                    let selected = v.slug == chosen.get_untracked();
                    view! { <option value=value selected=selected>{label}</option> }
                })
                .collect_view();
            view! {
                <div class="field">
                    <label for="shape-vs">"Virtual server"</label>
                    <select
                        id="shape-vs"
                        data-testid="shape-vs"
                        on:change=move |ev| {
                            chosen.set(event_target_value(&ev));
                            target.set(String::new());
                        }
                    >
                        {options}
                    </select>
                </div>
            }
        })
    };

    let on_strategy = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match parse_prefixes(&prefixes.get_untracked()) {
            Ok(list) => {
                local_error.set(None);
                set_strategy.dispatch(SetConflictStrategy {
                    tenant: slug.get_untracked(),
                    virtual_server: current(),
                    strategy: strategy.get_untracked(),
                    prefixes: list,
                });
            }
            Err(e) => local_error.set(Some(e)),
        }
    };
    let on_override = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let parsed = parse_override(
            &target.get_untracked(),
            &rename.get_untracked(),
            &description.get_untracked(),
            &fixed.get_untracked(),
            &hidden.get_untracked(),
            &enums.get_untracked(),
        );
        match parsed {
            Ok(o) => {
                local_error.set(None);
                set_override.dispatch(SetToolOverride {
                    tenant: slug.get_untracked(),
                    virtual_server: current(),
                    tool_override: o,
                });
            }
            Err(e) => local_error.set(Some(e)),
        }
    };

    let tool_table = move || {
        Suspend::new(async move {
            let (overrides, list) = match tools.await {
                Ok(Some((vs, list))) => (vs.overrides, Ok(list)),
                Ok(None) => (Vec::new(), Ok(Vec::new())),
                Err(e) => (Vec::new(), Err(e)),
            };
            match list {
                Ok(list) if list.is_empty() => view! { <p class="muted">"No tools fetched for these upstreams."</p> }.into_any(),
                Ok(list) => view! {
                    <table data-testid="shape-tools">
                        <thead>
                            <tr>
                                <th scope="col">"Exposed as"</th>
                                <th scope="col">"Upstream tool"</th>
                                <th scope="col">"Parameters clients see"</th>
                                <th scope="col">"Override"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {list
                                .into_iter()
                                .map(|t| {
                                    let o = overrides.iter().find(|o| o.server == t.server && o.tool == t.tool).cloned();
                                    let params = t
                                        .input_schema
                                        .as_ref()
                                        .and_then(|s| s.get("properties"))
                                        .and_then(|p| p.as_object())
                                        .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "))
                                        .unwrap_or_default();
                                    let testid = format!("shape-tool-{}-{}", t.server, t.tool);
                                    let (server, tool) = (t.server.clone(), t.tool.clone());
                                    let (del_server, del_tool) = (t.server.clone(), t.tool.clone());
                                    let has_override = o.is_some();
                                    view! {
                                        <tr data-testid=testid>
                                            <td>
                                                <code data-testid="exposed">{t.exposed}</code>
                                                {t.warning.map(|w| view! { <p class="muted">{w}</p> })}
                                            </td>
                                            <td><code>{format!("{}/{}", t.server, t.tool)}</code></td>
                                            <td data-testid="params">{params}</td>
                                            <td>
                                                <button type="button" class="secondary" data-testid="edit-override" on:click=move |_| edit(o.clone(), server.clone(), tool.clone())>
                                                    {if has_override { "Edit" } else { "Override" }}
                                                </button>
                                                {has_override.then(|| view! {
                                                    <button type="button" class="secondary" data-testid="delete-override" on:click=move |_| {
                                                        delete_override.dispatch(DeleteToolOverride {
                                                            tenant: slug.get_untracked(),
                                                            virtual_server: current(),
                                                            server: del_server.clone(),
                                                            tool: del_tool.clone(),
                                                        });
                                                    }>"Delete"</button>
                                                })}
                                            </td>
                                        </tr>
                                    }
                                })
                                .collect_view()}
                        </tbody>
                    </table>
                }
                .into_any(),
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <section class="card" aria-labelledby="shape-h">
            <h2 id="shape-h">"Shape tools"</h2>
            <p class="muted">
                "How tool names several upstreams use are resolved, and per-tool renames, descriptions, fixed "
                "parameters (hidden from clients and injected into every call), hidden parameters and narrowed "
                "enums. Access rules and data rules see the upstream tool name and the final arguments."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{vs_picker}</Transition>
            <form on:submit=on_strategy>
                <div class="row">
                    <div class="field">
                        <label for="shape-strategy">"Conflict strategy"</label>
                        <select id="shape-strategy" data-testid="shape-strategy" prop:value=move || strategy.get() on:change=move |ev| strategy.set(event_target_value(&ev))>
                            <option value="auto">"auto: prefix names several upstreams use"</option>
                            <option value="prefix">"prefix: prefix every tool"</option>
                            <option value="priority">"priority: first upstream keeps the name"</option>
                            <option value="explicit">"explicit: conflicts need renames"</option>
                        </select>
                    </div>
                    <div class="field">
                        <label for="shape-prefixes">"Prefixes (server=prefix, …)"</label>
                        <input id="shape-prefixes" data-testid="shape-prefixes" placeholder="github=gh" bind:value=prefixes />
                    </div>
                </div>
                <button type="submit" data-testid="save-strategy" disabled=move || set_strategy.pending().get()>"Save strategy"</button>
            </form>
            <ActionStatus
                action=set_strategy
                ok=|vs: VirtualServerView| format!("{} now resolves conflicts by {}.", vs.slug, vs.conflict_strategy.as_str())
                testid="shape-strategy-error"
            />
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{tool_table}</Transition>
            <ActionStatus action=delete_override ok=|_vs: VirtualServerView| "Override deleted." testid="delete-override-error" />
            <form on:submit=on_override>
                <fieldset>
                    <legend>{move || format!("Override {}", target.get())}</legend>
                    <div class="row">
                        <div class="field">
                            <label for="ov-rename">"Rename to"</label>
                            <input id="ov-rename" data-testid="ov-rename" bind:value=rename />
                        </div>
                        <div class="field">
                            <label for="ov-description">"Description"</label>
                            <input id="ov-description" data-testid="ov-description" bind:value=description />
                        </div>
                    </div>
                    <div class="row">
                        <div class="field">
                            <label for="ov-fixed">"Fixed parameters (JSON object)"</label>
                            <input id="ov-fixed" data-testid="ov-fixed" placeholder="{\"path\": \"/srv\"}" bind:value=fixed />
                        </div>
                        <div class="field">
                            <label for="ov-hidden">"Hidden parameters (comma-separated)"</label>
                            <input id="ov-hidden" data-testid="ov-hidden" bind:value=hidden />
                        </div>
                        <div class="field">
                            <label for="ov-enums">"Narrowed enums (JSON object of lists)"</label>
                            <input id="ov-enums" data-testid="ov-enums" placeholder="{\"mode\": [\"fast\"]}" bind:value=enums />
                        </div>
                    </div>
                </fieldset>
                <button type="submit" data-testid="save-override" disabled=move || target.get().is_empty() || set_override.pending().get()>
                    "Save override"
                </button>
            </form>
            {move || local_error.get().map(|e| view! { <p class="error" role="alert" data-testid="override-error">{e}</p> })}
            <ActionStatus
                action=set_override
                ok=|vs: VirtualServerView| format!("Saved; {} has {} override(s).", vs.slug, vs.overrides.len())
                testid="override-error"
            />
        </section>
    }
}
