//! `/t/{tenant}/publish`: the publishing mode, what publishing the draft would change (who gains or
//! loses which tools, and the draft replayed against recent tool calls), publish with a note, and
//! the publications with a rollback per entry (`docs/decisions/0015-publishing-and-rollback.md`).

use gatehouse_core::views::{PolicyDraftView, PublicationView, ToolRefView};
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{PublishPolicy, RollbackPolicy, SetPublishingMode, list_publications, policy_draft};
use crate::components::{ActionStatus, ErrorNote, fmt_time};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

fn short(rev: &str) -> String {
    rev.chars().take(12).collect()
}

fn tools(list: &[ToolRefView]) -> String {
    if list.is_empty() {
        return "—".into();
    }
    list.iter().map(|t| format!("{}/{}", t.server, t.tool)).collect::<Vec<_>>().join(", ")
}

fn draft_view(d: PolicyDraftView) -> AnyView {
    let state = if d.changed {
        format!(
            "The draft (revision {}) differs from what the gateways run (revision {}).",
            short(&d.revision),
            d.published_revision.as_deref().map(short).unwrap_or_else(|| "none".into())
        )
    } else if d.mode == "automatic" {
        "Automatic publishing: every change reaches the gateways at once, so there is no draft to review. \
         Switch to reviewed to preview changes before they are published."
            .to_owned()
    } else {
        "Nothing to publish: the draft is what the gateways run.".to_owned()
    };
    let rolled_back = d.rolled_back.then(|| {
        view! {
            <p class="error" data-testid="rolled-back">
                "The gateways run a rolled-back revision. Your roles, rules and settings still hold what you \
                 edited; publishing them undoes the rollback."
            </p>
        }
    });
    let access = if d.access.is_empty() {
        view! { <p class="muted" data-testid="access-diff">"Nobody gains or loses a tool."</p> }.into_any()
    } else {
        let rows = d
            .access
            .iter()
            .map(|a| {
                view! {
                    <tr>
                        <td>{a.user.clone()}</td>
                        <td>{a.virtual_server.clone()}</td>
                        <td class="allow">{tools(&a.gained)}</td>
                        <td class="deny">{tools(&a.lost)}</td>
                    </tr>
                }
            })
            .collect_view();
        let cut = d.access_truncated.then(|| view! { <p class="muted">"(only the first 500 entries)"</p> });
        view! {
            <table data-testid="access-diff">
                <thead>
                    <tr><th>"User"</th><th>"Virtual server"</th><th>"Gains"</th><th>"Loses"</th></tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
            {cut}
        }
        .into_any()
    };
    let r = d.replay;
    let summary = format!(
        "Replayed {} tool calls since {}{}: {} allowed now would be denied, {} denied now would be allowed, {} depend on arguments the audit does not keep.",
        r.events,
        fmt_time(r.since_ms),
        if r.truncated { format!(" (the newest {} only)", r.max_events) } else { String::new() },
        r.now_denied,
        r.now_allowed,
        r.depends_on_arguments,
    );
    let replay_rows = (!r.changes.is_empty()).then(|| {
        let rows = r
            .changes
            .iter()
            .map(|c| {
                view! {
                    <tr>
                        <td>{c.user.clone()}</td>
                        <td>{c.virtual_server.clone()}</td>
                        <td>{format!("{}/{}", c.server, c.tool)}</td>
                        <td>{c.calls}</td>
                        <td>{c.now_denied}</td>
                        <td>{c.now_allowed}</td>
                        <td>{c.depends_on_arguments}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <table data-testid="replay-changes">
                <thead>
                    <tr>
                        <th>"User"</th><th>"Virtual server"</th><th>"Tool"</th><th>"Calls"</th>
                        <th>"Now denied"</th><th>"Now allowed"</th><th>"Depends on arguments"</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        }
    });
    view! {
        <p data-testid="draft-state" data-mode=d.mode.clone() data-changed=d.changed.to_string()>{state}</p>
        {rolled_back}
        <h3>"Who gains or loses which tools"</h3>
        {access}
        <h3>"Recent traffic replayed"</h3>
        <p data-testid="replay-summary">{summary}</p>
        {replay_rows}
    }
    .into_any()
}

/// The publish page.
#[component]
pub fn PublishPage() -> impl IntoView {
    let TenantCtx { slug, changed } = use_tenant();
    let set_mode = ServerAction::<SetPublishingMode>::new();
    let publish = ServerAction::<PublishPolicy>::new();
    let rollback = ServerAction::<RollbackPolicy>::new();
    notify_change(set_mode);
    notify_change(publish);
    notify_change(rollback);
    let draft = Resource::new(move || (slug.get(), changed.get()), |(t, _)| policy_draft(t));
    let history = Resource::new(move || (slug.get(), changed.get()), |(t, _)| list_publications(t));

    let draft_part = move || {
        Suspend::new(async move {
            match draft.await {
                Ok(d) => draft_view(d),
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };
    let mode_part = move || {
        Suspend::new(async move {
            match draft.await {
                Ok(d) => {
                    let other = if d.mode == "reviewed" { "automatic" } else { "reviewed" };
                    let label = if other == "reviewed" {
                        "Switch to reviewed publishing"
                    } else {
                        "Switch to automatic publishing (publishes the draft now)"
                    };
                    view! {
                        <p>
                            "Publishing mode: " <strong data-testid="publishing-mode">{d.mode.clone()}</strong>
                        </p>
                        <ActionForm action=set_mode>
                            <input type="hidden" name="tenant" value=move || slug.get() />
                            <input type="hidden" name="mode" value=other />
                            <button type="submit" data-testid="mode-switch">{label}</button>
                        </ActionForm>
                    }
                    .into_any()
                }
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };
    let history_part = move || {
        Suspend::new(async move {
            match history.await {
                Ok(items) if items.is_empty() => {
                    view! { <p class="muted" data-testid="publications">"Nothing published yet."</p> }.into_any()
                }
                Ok(items) => {
                    let newest = items[0].number;
                    let rows = items
                        .into_iter()
                        .map(|p: PublicationView| {
                            let what = match (p.kind.as_str(), p.restores_number) {
                                ("rollback", Some(n)) => format!("rollback to #{n}"),
                                (kind, _) => kind.to_owned(),
                            };
                            let by = p.published_by.clone().unwrap_or_else(|| "automatic".into());
                            let label = format!("Roll back to publication {}", p.number);
                            let button = (p.number != newest).then(|| {
                                let revision = p.revision.clone();
                                view! {
                                    <ActionForm action=rollback>
                                        <input type="hidden" name="tenant" value=move || slug.get() />
                                        <input type="hidden" name="revision" value=revision />
                                        <input name="note" placeholder="why" aria-label=format!("Note for the rollback to {}", p.number) />
                                        <button type="submit" class="danger" aria-label=label data-testid=format!("rollback-{}", p.number)>
                                            "Roll back to this"
                                        </button>
                                    </ActionForm>
                                }
                            });
                            view! {
                                <tr data-testid=format!("publication-{}", p.number)>
                                    <td>{format!("#{}", p.number)}</td>
                                    <td>{what}</td>
                                    <td><code title=p.revision.clone()>{short(&p.revision)}</code></td>
                                    <td>{by}</td>
                                    <td>{fmt_time(p.published_at_ms)}</td>
                                    <td>{p.note.clone()}</td>
                                    <td>{button}</td>
                                </tr>
                            }
                        })
                        .collect_view();
                    view! {
                        <table data-testid="publications">
                            <thead>
                                <tr>
                                    <th>"#"</th><th>"What"</th><th>"Revision"</th><th>"By"</th><th>"When"</th>
                                    <th>"Note"</th><th></th>
                                </tr>
                            </thead>
                            <tbody>{rows}</tbody>
                        </table>
                    }
                    .into_any()
                }
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <Title text="Publish" />
        <section class="card" aria-labelledby="publish-h">
            <h2 id="publish-h">"Publish"</h2>
            <p class="muted">
                "In reviewed mode, changes to roles, rules, bindings, servers, virtual servers, data rules and "
                "rate limits wait in a draft until published. Users, tokens and the kill switch always take "
                "effect at once."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{mode_part}</Transition>
            <ActionStatus action=set_mode ok=|m: String| format!("Publishing mode: {m}.") testid="mode-error" />
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{draft_part}</Transition>
            <ActionForm action=publish>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="field grow">
                    <label for="publish-note">"Note"</label>
                    <input id="publish-note" name="note" data-testid="publish-note" />
                </div>
                <button type="submit" data-testid="publish-submit" disabled=move || publish.pending().get()>
                    "Publish"
                </button>
            </ActionForm>
            <ActionStatus
                action=publish
                ok=|p: PublicationView| format!("Published revision {} as #{}.", short(&p.revision), p.number)
                testid="publish-error"
            />
        </section>
        <section class="card" aria-labelledby="publications-h">
            <h2 id="publications-h">"Publications"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{history_part}</Transition>
            <ActionStatus
                action=rollback
                ok=|p: PublicationView| format!("Rolled back: revision {} runs as #{}.", short(&p.revision), p.number)
                testid="rollback-error"
            />
        </section>
    }
}
