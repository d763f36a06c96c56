//! `/t/{tenant}/audit`: the newest MCP requests through the gateway.

use gatehouse_core::views::AuditView;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::list_audit;
use crate::components::{ErrorNote, fmt_latency, fmt_time, or_dash};
use crate::pages::tenant::{TenantCtx, use_tenant};

/// How many events the page shows.
const PAGE: i32 = 200;

/// The audit page.
#[component]
pub fn AuditPage() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let reloads = RwSignal::new(0u32);
    let events = Resource::new(move || (slug.get(), reloads.get()), |(t, _)| list_audit(t, Some(PAGE)));

    let table = move || {
        Suspend::new(async move {
            match events.await {
                Ok(list) if list.is_empty() => view! {
                    <p class="muted" data-testid="audit-empty">
                        "No MCP requests yet. Every request through a virtual server appears here."
                    </p>
                }
                .into_any(),
                Ok(list) => view! {
                    <div class="scroll">
                        <table class="audit" data-testid="audit-table">
                            <caption class="muted">{format!("The newest {} events, newest first.", list.len())}</caption>
                            <thead>
                                <tr>
                                    <th scope="col">"Time (UTC)"</th>
                                    <th scope="col">"User"</th>
                                    <th scope="col">"Client"</th>
                                    <th scope="col">"Virtual server"</th>
                                    <th scope="col">"Upstream"</th>
                                    <th scope="col">"Method"</th>
                                    <th scope="col">"Tool"</th>
                                    <th scope="col">"Outcome"</th>
                                    <th scope="col">"Reason"</th>
                                    <th scope="col">"Rule"</th>
                                    <th scope="col">"Latency"</th>
                                </tr>
                            </thead>
                            <tbody>{list.into_iter().map(audit_row).collect_view()}</tbody>
                        </table>
                    </div>
                }
                .into_any(),
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <Title text="Audit" />
        <section aria-labelledby="audit-h">
            <div class="section-head">
                <h2 id="audit-h">"Audit log"</h2>
                <button
                    type="button"
                    class="secondary"
                    on:click=move |_| reloads.update(|n| *n += 1)
                    data-testid="audit-refresh"
                >
                    "Refresh"
                </button>
            </div>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{table}</Transition>
        </section>
    }
}

fn audit_row(e: AuditView) -> impl IntoView {
    let client = match (e.client_name, e.client_version) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        (Some(n), None) => n,
        _ => "—".into(),
    };
    let outcome_class = format!("badge {}", e.outcome.replace('_', "-"));
    view! {
        <tr>
            <td class="nowrap">{fmt_time(e.time_ms).trim_end_matches(" UTC").to_owned()}</td>
            <td>{or_dash(e.user)}</td>
            <td>{client}</td>
            <td>{e.virtual_server}</td>
            <td>{or_dash(e.upstream_server)}</td>
            <td>
                <code>{e.method}</code>
            </td>
            <td class="nowrap">{or_dash(e.tool)}</td>
            <td>
                <span class=outcome_class>{e.outcome}</span>
            </td>
            <td class="reason">{or_dash(e.reason)}</td>
            <td>
                <code class="slug">{or_dash(e.rule_id)}</code>
            </td>
            <td class="num">{fmt_latency(e.latency_us)}</td>
        </tr>
    }
}
