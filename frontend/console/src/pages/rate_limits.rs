//! `/t/{tenant}/limits`: rate limits on tool calls: token buckets for the whole tenant, for each
//! holder of a role, or for each user (or one user), on a server and tool or everywhere.

use gatehouse_core::limits::{LimitScope, RateLimitView};
use leptos::html::Form;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{AddRateLimit, DeleteRateLimit, list_rate_limits};
use crate::components::{ActionStatus, ErrorNote, reset_on_success};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

/// A limit in words.
fn describe(l: &RateLimitView) -> String {
    let who = match (l.scope, &l.role, &l.user) {
        (LimitScope::Tenant, _, _) => "All users of the tenant together".to_owned(),
        (LimitScope::Role, Some(role), _) => format!("Each holder of role {role}"),
        (LimitScope::User, _, Some(user)) => format!("User {user}"),
        _ => "Each user".to_owned(),
    };
    let tools = l.tool.clone().unwrap_or_else(|| "any tool".to_owned());
    let server = l.server.as_ref().map(|s| format!(" of {s}")).unwrap_or_default();
    let burst = l.burst.map(|b| format!(" (bursts of {b})")).unwrap_or_default();
    format!("{who}: {} calls of {tools}{server} per {} s{burst}", l.requests, l.per_seconds)
}

/// The rate limits page.
#[component]
pub fn RateLimitsPage() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let add = ServerAction::<AddRateLimit>::new();
    let delete = ServerAction::<DeleteRateLimit>::new();
    notify_change(add);
    notify_change(delete);
    let limits = Resource::new(
        move || (slug.get(), add.version().get(), delete.version().get()),
        |(t, _, _)| list_rate_limits(t),
    );
    let form = NodeRef::<Form>::new();
    reset_on_success(add, form);

    let list = move || {
        Suspend::new(async move {
            match limits.await {
                Ok(items) if items.is_empty() => {
                    view! { <p class="muted" data-testid="rate-limits">"No rate limits."</p> }.into_any()
                }
                Ok(items) => {
                    let rows = items
                        .into_iter()
                        .map(|l| {
                            let text = describe(&l);
                            let label = format!("Delete rate limit {}", l.id);
                            view! {
                                <li>
                                    {text}
                                    {(!l.description.is_empty()).then(|| view! { <span class="muted">{format!(" — {}", l.description)}</span> })}
                                    " " <code class="slug">{l.id.clone()}</code>
                                    <ActionForm action=delete>
                                        <input type="hidden" name="tenant" value=move || slug.get() />
                                        <input type="hidden" name="id" value=l.id.clone() />
                                        <button type="submit" class="link" aria-label=label>"delete"</button>
                                    </ActionForm>
                                </li>
                            }
                        })
                        .collect_view();
                    view! { <ul class="rules" data-testid="rate-limits">{rows}</ul> }.into_any()
                }
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <Title text="Rate limits" />
        <section aria-labelledby="limits-h">
            <h2 id="limits-h">"Rate limits"</h2>
            <p class="muted">
                "Token buckets on tool calls. Every limit that applies to a call must have room; a refused call gets "
                "HTTP 429 with Retry-After. Each gateway worker counts on its own."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{list}</Transition>
            <ActionStatus action=delete ok=|_| "Rate limit deleted." testid="delete-limit-error" />
        </section>
        <section class="card" aria-labelledby="new-limit-h">
            <h2 id="new-limit-h">"Add a rate limit"</h2>
            <ActionForm action=add node_ref=form>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="row">
                    <div class="field">
                        <label for="limit-scope">"Counted for"</label>
                        <select id="limit-scope" name="scope" data-testid="limit-scope">
                            <option value="user">"each user (or the user below)"</option>
                            <option value="role">"each holder of the role below"</option>
                            <option value="tenant">"the whole tenant together"</option>
                        </select>
                    </div>
                    <div class="field">
                        <label for="limit-role">"Role"</label>
                        <input id="limit-role" name="role" data-testid="limit-role" />
                    </div>
                    <div class="field">
                        <label for="limit-user">"User (e-mail)"</label>
                        <input id="limit-user" name="user" type="email" data-testid="limit-user" />
                    </div>
                </div>
                <div class="row">
                    <div class="field">
                        <label for="limit-server">"Server (empty: every server)"</label>
                        <input id="limit-server" name="server" data-testid="limit-server" />
                    </div>
                    <div class="field">
                        <label for="limit-tool">"Tool or glob (empty: every tool)"</label>
                        <input id="limit-tool" name="tool" data-testid="limit-tool" />
                    </div>
                    <div class="field">
                        <label for="limit-requests">"Calls"</label>
                        <input id="limit-requests" name="requests" inputmode="numeric" required data-testid="limit-requests" />
                    </div>
                    <div class="field">
                        <label for="limit-per">"per seconds"</label>
                        <input id="limit-per" name="per_seconds" inputmode="numeric" required data-testid="limit-per" />
                    </div>
                    <div class="field">
                        <label for="limit-burst">"Burst (empty: = calls)"</label>
                        <input id="limit-burst" name="burst" inputmode="numeric" />
                    </div>
                </div>
                <div class="field grow">
                    <label for="limit-description">"Why"</label>
                    <input id="limit-description" name="description" />
                </div>
                <button type="submit" data-testid="add-limit" disabled=move || add.pending().get()>"Add rate limit"</button>
            </ActionForm>
            <ActionStatus action=add ok=|l: RateLimitView| format!("Added: {}.", describe(&l)) testid="add-limit-error" />
        </section>
    }
}
