//! The "Gateways" card on a tenant's overview: the tenant's gateway group and, per worker, the policy
//! revision it runs for THIS tenant, whether that is the newest, when it last reported (offline after
//! a minute without a report) and its last error about this tenant
//! (`docs/decisions/0014-gateway-groups.md`).

use gatehouse_core::gateways::GatewayWorkerView;
use leptos::prelude::*;

use crate::api::gateway_status;
use crate::components::{ErrorNote, fmt_time};
use crate::pages::tenant::{TenantCtx, use_tenant};

fn short(revision: &str) -> String {
    revision.chars().take(12).collect()
}

fn row(w: GatewayWorkerView) -> impl IntoView {
    let revision = match (&w.revision, w.sequence) {
        (Some(r), Some(s)) => format!("{} (#{s})", short(r)),
        (Some(r), None) => short(r),
        _ => "none".to_owned(),
    };
    let state = if w.latest {
        view! { <span class="badge active">"latest"</span> }.into_any()
    } else {
        view! { <span class="badge deny">"behind"</span> }.into_any()
    };
    let online = if w.online {
        view! { <span class="badge active">"online"</span> }.into_any()
    } else {
        view! { <span class="badge revoked">"offline"</span> }.into_any()
    };
    let error = match (&w.error, &w.contact_error) {
        (Some(e), _) => e.clone(),
        (None, Some(c)) => format!("control plane: {c}"),
        (None, None) => String::new(),
    };
    view! {
        <tr data-testid=format!("worker-{}", w.worker_id)>
            <td><code>{w.worker_id.clone()}</code></td>
            <td>{w.group.clone()}</td>
            <td>{w.version.clone()}</td>
            <td><code>{revision}</code> " " {state}</td>
            <td>{online} " " <span class="muted">{fmt_time(w.reported_at_ms)}</span></td>
            <td>{error}</td>
        </tr>
    }
}

/// The tenant's gateway workers.
#[component]
pub fn GatewaysCard() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let refresh = RwSignal::new(0u32);
    let status = Resource::new(move || (slug.get(), refresh.get()), |(t, _)| gateway_status(t));
    let body = move || {
        Suspend::new(async move {
            match status.await {
                Ok(s) => {
                    let latest = s.latest_revision.as_deref().map(short).unwrap_or_else(|| "none".to_owned());
                    let header = view! {
                        <p data-testid="gateway-group">
                            "Gateway group " <strong>{s.group.clone()}</strong> "; newest revision "
                            <code>{latest}</code>
                            {s.latest_sequence.map(|n| format!(" (#{n})"))}
                        </p>
                    };
                    let table = if s.workers.is_empty() {
                        view! { <p class="muted" data-testid="gateway-workers">"No worker has reported yet."</p> }
                            .into_any()
                    } else {
                        let rows = s.workers.into_iter().map(row).collect_view();
                        view! {
                            <table data-testid="gateway-workers">
                                <thead>
                                    <tr>
                                        <th>"Worker"</th>
                                        <th>"Group"</th>
                                        <th>"Version"</th>
                                        <th>"Revision for this tenant"</th>
                                        <th>"Last report"</th>
                                        <th>"Last error"</th>
                                    </tr>
                                </thead>
                                <tbody>{rows}</tbody>
                            </table>
                        }
                        .into_any()
                    };
                    view! { {header} {table} }.into_any()
                }
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };
    view! {
        <section class="card" aria-labelledby="gateways-h">
            <h2 id="gateways-h">"Gateways"</h2>
            <p class="muted">
                "The gateway workers serving this tenant and the policy each one runs. A worker that has not "
                "reported for a minute is shown offline."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{body}</Transition>
            <button type="button" data-testid="gateways-refresh" on:click=move |_| refresh.update(|n| *n += 1)>
                "Refresh"
            </button>
        </section>
    }
}
