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

/// The tool column: the name the client called, with the upstream's own name beside it when
/// virtual-server shaping renamed or prefixed the tool.
fn tool_cell(exposed: Option<String>, upstream: Option<String>) -> String {
    match (exposed, upstream) {
        (Some(exposed), Some(upstream)) if exposed != upstream => format!("{exposed} (upstream: {upstream})"),
        (_, Some(tool)) | (Some(tool), None) => tool,
        (None, None) => "—".into(),
    }
}

fn audit_row(e: AuditView) -> impl IntoView {
    let client = match (e.client_name, e.client_version) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        (Some(n), None) => n,
        _ => "—".into(),
    };
    let outcome_class = format!("badge {}", e.outcome.replace('_', "-"));
    let tool = tool_cell(e.exposed_tool, e.tool);
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
            <td class="nowrap" data-testid="audit-tool">{tool}</td>
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

#[cfg(test)]
mod tests {
    use super::tool_cell;

    #[test]
    fn the_tool_column_shows_both_names_when_they_differ() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(tool_cell(some("add-forty"), some("get-sum")), "add-forty (upstream: get-sum)");
        assert_eq!(tool_cell(some("echo"), some("echo")), "echo");
        // Events of workers that did not record the exposed name.
        assert_eq!(tool_cell(None, some("echo")), "echo");
        assert_eq!(tool_cell(None, None), "—");
    }
}
