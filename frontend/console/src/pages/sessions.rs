//! The MCP sessions card on a tenant's overview: end the sessions of one user or of everyone, and
//! rotate and retire the keys that seal session ids (`docs/decisions/0006-stateless-sessions.md`).

use gatehouse_core::views::{SessionCutoffView, SessionKeyView};
use leptos::html::Form;
use leptos::prelude::*;

use crate::api::{EndSessions, RetireSessionKey, RotateSessionKey, list_session_cutoffs, list_session_keys};
use crate::components::{ActionStatus, ErrorNote, fmt_time, reset_on_success};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

fn whose(c: &SessionCutoffView) -> String {
    c.user.as_ref().map_or_else(|| "every user".to_owned(), |u| u.clone())
}

/// Ended sessions, session keys, and the buttons.
#[component]
pub fn SessionsCard() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let end = ServerAction::<EndSessions>::new();
    let rotate = ServerAction::<RotateSessionKey>::new();
    let retire = ServerAction::<RetireSessionKey>::new();
    notify_change(end);
    notify_change(rotate);
    notify_change(retire);
    let cutoffs = Resource::new(move || (slug.get(), end.version().get()), |(t, _)| list_session_cutoffs(t));
    let keys = Resource::new(
        move || (slug.get(), rotate.version().get(), retire.version().get()),
        |(t, _, _)| list_session_keys(t),
    );
    let form = NodeRef::<Form>::new();
    reset_on_success(end, form);

    let ended = move || {
        Suspend::new(async move {
            match cutoffs.await {
                Ok(items) if items.is_empty() => {
                    view! { <p class="muted" data-testid="session-cutoffs">"No sessions were ended in the last 24 hours."</p> }
                        .into_any()
                }
                Ok(items) => {
                    let rows = items
                        .into_iter()
                        .map(|c| {
                            view! {
                                <li>
                                    "Sessions of " <strong>{whose(&c)}</strong> " started before "
                                    {fmt_time(c.not_before_ms)}
                                    <span class="muted">{format!(" (ended by {})", c.created_by)}</span>
                                </li>
                            }
                        })
                        .collect_view();
                    view! { <ul class="rules" data-testid="session-cutoffs">{rows}</ul> }.into_any()
                }
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };
    let key_rows = move || {
        Suspend::new(async move {
            match keys.await {
                Ok(items) => {
                    let rows = items
                        .into_iter()
                        .map(|k: SessionKeyView| {
                            let id = k.id.clone();
                            let retire_form = (!k.sealing).then(move || {
                                let label = format!("Retire session key {id}");
                                view! {
                                    <ActionForm action=retire>
                                        <input type="hidden" name="tenant" value=move || slug.get() />
                                        <input type="hidden" name="id" value=id />
                                        <label>
                                            <input type="checkbox" name="force" value="true" />
                                            " end its live sessions now"
                                        </label>
                                        <button type="submit" class="link" aria-label=label>"retire"</button>
                                    </ActionForm>
                                }
                            });
                            view! {
                                <li>
                                    <code>{k.id.clone()}</code>
                                    {k.sealing.then(|| view! { " " <span class="badge allow">"seals new sessions"</span> })}
                                    <span class="muted">{format!(" created {}", fmt_time(k.created_at_ms))}</span>
                                    {retire_form}
                                </li>
                            }
                        })
                        .collect_view();
                    view! { <ul class="rules" data-testid="session-keys">{rows}</ul> }.into_any()
                }
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <section class="card" aria-labelledby="sessions-h">
            <h2 id="sessions-h">"MCP sessions"</h2>
            <p class="muted">
                "Ending sessions makes every gateway refuse the sessions started until now (with the next bundle); "
                "their clients start new ones. The users keep their access: to stop someone, use the kill switch."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{ended}</Transition>
            <ActionForm action=end node_ref=form>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="row">
                    <div class="field grow">
                        <label for="end-user">"User (e-mail; empty: every user)"</label>
                        <input id="end-user" name="user_email" type="email" data-testid="end-sessions-user" />
                    </div>
                </div>
                <button type="submit" class="danger" data-testid="end-sessions" disabled=move || end.pending().get()>
                    "End sessions"
                </button>
            </ActionForm>
            <ActionStatus
                action=end
                ok=|c: SessionCutoffView| format!("Ended the sessions of {}.", whose(&c))
                testid="end-sessions-error"
            />
            <h3>"Session keys"</h3>
            <p class="muted">
                "The newest key seals new session ids; older keys keep opening the sessions they sealed until retired. "
                "Retire an old key 24 hours after rotating, when its sessions have expired."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{key_rows}</Transition>
            <ActionForm action=rotate>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <button type="submit" data-testid="rotate-session-key" disabled=move || rotate.pending().get()>
                    "Rotate the session key"
                </button>
            </ActionForm>
            <ActionStatus
                action=rotate
                ok=|k: SessionKeyView| format!("Key {} now seals new sessions.", k.id)
                testid="rotate-error"
            />
            <ActionStatus action=retire ok=|id: String| format!("Retired key {id}.") testid="retire-error" />
        </section>
    }
}
