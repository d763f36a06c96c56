//! `/t/{tenant}/tokens`: API tokens for users' MCP clients.

use gatehouse_core::views::{CreatedTokenView, TokenView};
use leptos::html::Form;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{CreateToken, RevokeToken, list_tokens, list_users};
use crate::components::{ActionStatus, ErrorNote, fmt_opt_time, fmt_time, reset_on_success};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

/// The tokens page.
#[component]
pub fn TokensPage() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    notify_change(create);
    notify_change(revoke);
    let tokens =
        Resource::new(move || (slug.get(), create.version().get(), revoke.version().get()), |(t, _, _)| list_tokens(t));
    let users = Resource::new(move || slug.get(), list_users);
    let form = NodeRef::<Form>::new();
    reset_on_success(create, form);

    let table = move || {
        Suspend::new(async move {
            match tokens.await {
                Ok(list) if list.is_empty() => view! { <p class="muted">"No tokens yet."</p> }.into_any(),
                Ok(list) => {
                    let tenant = slug.get_untracked();
                    view! {
                        <table data-testid="token-table">
                            <thead>
                                <tr>
                                    <th scope="col">"Name"</th>
                                    <th scope="col">"User"</th>
                                    <th scope="col">"Prefix"</th>
                                    <th scope="col">"Created"</th>
                                    <th scope="col">"Expires"</th>
                                    <th scope="col">"Status"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {list.into_iter().map(|t| token_row(t, tenant.clone(), revoke)).collect_view()}
                            </tbody>
                        </table>
                    }
                    .into_any()
                }
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    let user_select = move || {
        Suspend::new(async move {
            match users.await {
                Ok(list) => view! {
                    <select id="token-user" name="user_email" required data-testid="token-user">
                        <option value="">"Choose a user…"</option>
                        {list
                            .into_iter()
                            .map(|u| view! { <option value=u.email.clone()>{u.email.clone()}</option> })
                            .collect_view()}
                    </select>
                }
                .into_any(),
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    view! {
        <Title text="API tokens" />
        <section aria-labelledby="tokens-h">
            <h2 id="tokens-h">"API tokens"</h2>
            <p class="muted">
                "A token lets a user's MCP client call virtual servers as that user. Only a hash is stored."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{table}</Transition>
            <ActionStatus action=revoke ok=|_| "Revoked. Workers refuse it with the next bundle." testid="revoke-error" />
        </section>
        <section class="card" aria-labelledby="new-token-h">
            <h2 id="new-token-h">"Create a token"</h2>
            <ActionForm action=create node_ref=form>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="row">
                    <div class="field">
                        <label for="token-user">"User"</label>
                        <Transition fallback=|| view! { <select id="token-user" disabled></select> }>
                            {user_select}
                        </Transition>
                    </div>
                    <div class="field">
                        <label for="token-name">"Name"</label>
                        <input id="token-name" name="name" required placeholder="laptop" data-testid="token-name" />
                    </div>
                    <div class="field">
                        <label for="token-expiry">"Expires after (days, optional)"</label>
                        <input
                            id="token-expiry"
                            name="expires_in_days"
                            type="number"
                            min="1"
                            max="3650"
                            placeholder="never"
                            data-testid="token-expiry"
                        />
                    </div>
                </div>
                <button type="submit" data-testid="create-token" disabled=move || create.pending().get()>
                    "Create token"
                </button>
            </ActionForm>
            {move || match create.value().get() {
                Some(Ok(created)) => view! { <NewSecret created on_done=move || create.value().set(None) /> }.into_any(),
                Some(Err(e)) => view! { <ErrorNote error=e testid="create-token-error" /> }.into_any(),
                None => ().into_any(),
            }}
        </section>
    }
}

/// The secret of a token just created: shown this once, with show/hide and copy.
#[component]
fn NewSecret(created: CreatedTokenView, on_done: impl Fn() + Send + Sync + 'static) -> impl IntoView {
    let shown = RwSignal::new(true);
    let copied = RwSignal::new(false);
    let secret = created.secret.clone();
    let select_all = |ev: leptos::ev::FocusEvent| event_target::<web_sys::HtmlInputElement>(&ev).select();
    let copy = move |_| {
        let clipboard = window().navigator().clipboard();
        let _promise = clipboard.write_text(&secret);
        copied.set(true);
    };
    view! {
        <div class="secret" role="status" data-testid="token-secret-box">
            <p>
                <strong>"Copy this token now: it is shown only this once."</strong>
                {format!(" It authenticates {} as “{}”.", created.token.user_email, created.token.name)}
            </p>
            <label for="token-secret">"Token"</label>
            <div class="row tight">
                <input
                    id="token-secret"
                    class="mono grow"
                    readonly
                    type=move || if shown.get() { "text" } else { "password" }
                    value=created.secret.clone()
                    on:focus=select_all
                    data-testid="token-secret"
                />
                <button
                    type="button"
                    class="secondary"
                    aria-pressed=move || (!shown.get()).to_string()
                    on:click=move |_| shown.update(|s| *s = !*s)
                    data-testid="toggle-secret"
                >
                    {move || if shown.get() { "Hide" } else { "Show" }}
                </button>
                <button type="button" class="secondary" on:click=copy data-testid="copy-secret">
                    {move || if copied.get() { "Copied" } else { "Copy" }}
                </button>
            </div>
            <p class="muted">
                "Give it to the MCP client as " <code>"Authorization: Bearer <token>"</code> "."
            </p>
            <button type="button" class="link" on:click=move |_| on_done() data-testid="secret-done">
                "I have copied it"
            </button>
        </div>
    }
}

fn token_row(t: TokenView, tenant: String, revoke: ServerAction<RevokeToken>) -> impl IntoView {
    let row_id = format!("token-{}", t.name);
    let (revoke_label, revoke_id) = (format!("Revoke token {}", t.name), format!("revoke-{}", t.name));
    let status = match t.revoked_at_ms {
        Some(at) => view! { <span class="badge revoked">{format!("revoked {}", fmt_time(at))}</span> }.into_any(),
        None => view! {
            <span class="badge active">"active"</span>
            " "
            <ActionForm action=revoke>
                <input type="hidden" name="tenant" value=tenant />
                <input type="hidden" name="id" value=t.id.clone() />
                <button
                    type="submit"
                    class="link danger"
                    aria-label=revoke_label
                    data-testid=revoke_id
                >
                    "revoke"
                </button>
            </ActionForm>
        }
        .into_any(),
    };
    view! {
        <tr data-testid=row_id>
            <td>{t.name.clone()}</td>
            <td>{t.user_email}</td>
            <td>
                <code>{format!("{}…", t.prefix)}</code>
            </td>
            <td>{fmt_time(t.created_at_ms)}</td>
            <td>{fmt_opt_time(t.expires_at_ms)}</td>
            <td data-testid="token-status">{status}</td>
        </tr>
    }
}
