//! The kill switch card on a tenant's overview: suspend a user, a server or one tool on every
//! gateway worker at once, see what is suspended, and lift it again.

use gatehouse_core::views::SuspensionView;
use leptos::html::Form;
use leptos::prelude::*;

use crate::api::{LiftSuspension, SuspendTarget, list_suspensions};
use crate::components::{ActionStatus, ErrorNote, fmt_time, reset_on_success};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

fn target(s: &SuspensionView) -> String {
    match (s.kind.as_str(), &s.user, &s.server, &s.tool) {
        ("user", Some(u), _, _) => format!("user {u}"),
        ("tool", _, Some(server), Some(tool)) => format!("tool {tool} of {server}"),
        (_, _, Some(server), _) => format!("server {server}"),
        _ => format!("a {} that no longer exists", s.kind),
    }
}

/// Suspensions and the switch.
#[component]
pub fn KillSwitchCard() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let suspend = ServerAction::<SuspendTarget>::new();
    let lift = ServerAction::<LiftSuspension>::new();
    notify_change(suspend);
    notify_change(lift);
    let list = Resource::new(
        move || (slug.get(), suspend.version().get(), lift.version().get()),
        |(t, _, _)| list_suspensions(t),
    );
    let form = NodeRef::<Form>::new();
    reset_on_success(suspend, form);

    let rows = move || {
        Suspend::new(async move {
            match list.await {
                Ok(items) if items.is_empty() => {
                    view! { <p class="muted" data-testid="suspensions">"Nothing is suspended."</p> }.into_any()
                }
                Ok(items) => {
                    let rows = items
                        .into_iter()
                        .map(|s| {
                            let what = target(&s);
                            let label = format!("Lift the suspension of {what}");
                            view! {
                                <li>
                                    <span class="badge deny">"suspended"</span>
                                    " " <strong>{what}</strong> " — " {s.reason.clone()}
                                    <span class="muted">{format!(" (by {}, {})", s.created_by, fmt_time(s.created_at_ms))}</span>
                                    <ActionForm action=lift>
                                        <input type="hidden" name="tenant" value=move || slug.get() />
                                        <input type="hidden" name="id" value=s.id.clone() />
                                        <button type="submit" class="link" aria-label=label>"lift"</button>
                                    </ActionForm>
                                </li>
                            }
                        })
                        .collect_view();
                    view! { <ul class="rules" data-testid="suspensions">{rows}</ul> }.into_any()
                }
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <section class="card" aria-labelledby="kill-h">
            <h2 id="kill-h">"Kill switch"</h2>
            <p class="muted">
                "Stops a user, a server or one tool on every gateway at once (with the next bundle, in about a second), "
                "before any grant or rule and even in monitor mode. The reason is shown to the people it stops."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{rows}</Transition>
            <ActionStatus action=lift ok=|_| "Lifted." testid="lift-error" />
            <ActionForm action=suspend node_ref=form>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="row">
                    <div class="field">
                        <label for="kill-user">"User (e-mail)"</label>
                        <input id="kill-user" name="user_email" type="email" data-testid="kill-user" />
                    </div>
                    <div class="field">
                        <label for="kill-server">"or server (slug)"</label>
                        <input id="kill-server" name="server" data-testid="kill-server" />
                    </div>
                    <div class="field">
                        <label for="kill-tool">"and tool (empty: the whole server)"</label>
                        <input id="kill-tool" name="tool" data-testid="kill-tool" />
                    </div>
                </div>
                <div class="field grow">
                    <label for="kill-reason">"Reason"</label>
                    <input id="kill-reason" name="reason" required data-testid="kill-reason" />
                </div>
                <button type="submit" class="danger" data-testid="kill-submit" disabled=move || suspend.pending().get()>
                    "Suspend"
                </button>
            </ActionForm>
            <ActionStatus
                action=suspend
                ok=|s: SuspensionView| format!("Suspended {}.", target(&s))
                testid="kill-error"
            />
        </section>
    }
}
