//! `/login`: sign in with e-mail and password.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::app::SessionCtx;
use crate::components::ErrorNote;

/// The sign-in form. It works before hydration too (a plain form post that the server answers
/// with a redirect); once hydrated, errors appear without a reload.
#[component]
pub fn LoginPage() -> impl IntoView {
    let SessionCtx { login, .. } = expect_context::<SessionCtx>();
    let query = use_query_map();
    let next = move || query.read().get("next").unwrap_or_default();
    view! {
        <Title text="Sign in" />
        <section class="card narrow" aria-labelledby="login-h">
            <h1 id="login-h">"Sign in to Gatehouse"</h1>
            <ActionForm action=login>
                <input type="hidden" name="next" value=next />
                <div class="field">
                    <label for="login-email">"E-mail"</label>
                    <input
                        id="login-email"
                        type="email"
                        name="email"
                        required
                        autocomplete="username"
                        data-testid="login-email"
                    />
                </div>
                <div class="field">
                    <label for="login-password">"Password"</label>
                    <input
                        id="login-password"
                        type="password"
                        name="password"
                        required
                        autocomplete="current-password"
                        data-testid="login-password"
                    />
                </div>
                <button type="submit" data-testid="login-submit" disabled=move || login.pending().get()>
                    "Sign in"
                </button>
            </ActionForm>
            {move || match login.value().get() {
                Some(Err(e)) => view! { <ErrorNote error=e testid="login-error" /> }.into_any(),
                _ => ().into_any(),
            }}
        </section>
    }
}
