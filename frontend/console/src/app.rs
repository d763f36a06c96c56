//! The HTML shell, the router and the header every page shares.

use gatehouse_core::views::MeView;
use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{A, ParentRoute, Route, Router, Routes};
use leptos_router::path;

use crate::api::{ApiResult, Login, Logout, me};
use crate::pages::{
    audit, data_rules, home, login, rate_limits, roles, servers, tenant, tokens, users, virtual_servers,
};

/// The whole document the server renders; `<HydrationScripts>` loads `/pkg/gatehouse_console.js`,
/// which fetches `/pkg/gatehouse_console_bg.wasm` and calls [`crate::hydrate`].
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                // No favicon yet: an empty one saves the browser a request that would 404.
                <link rel="icon" href="data:," />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// What every page knows about the session: who is signed in, and the sign-in and sign-out actions
/// (the `me` resource reloads after either).
#[derive(Clone, Copy)]
pub struct SessionCtx {
    /// The signed-in user.
    pub me: Resource<ApiResult<Option<MeView>>>,
    /// Sign in.
    pub login: ServerAction<Login>,
    /// Sign out.
    pub logout: ServerAction<Logout>,
}

/// The console application.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let login = ServerAction::<Login>::new();
    let logout = ServerAction::<Logout>::new();
    let me = Resource::new(move || (login.version().get(), logout.version().get()), |_| me());
    provide_context(SessionCtx { me, login, logout });

    // Runs only in the browser, once the page is hydrated: lets tests (and curious people) see that
    // the page is live.
    Effect::new(move |_| {
        if let Some(body) = document().body() {
            _ = body.set_attribute("data-hydrated", "true");
        }
    });

    view! {
        <Stylesheet id="leptos" href=format!("/pkg/{}.css", crate::OUTPUT_NAME) />
        <Title formatter=|page: String| {
            if page.is_empty() { "Gatehouse".to_owned() } else { format!("{page} · Gatehouse") }
        } />
        <Router>
            <Header />
            <main id="main">
                <Routes fallback=|| view! { <NotFound /> }>
                    <Route path=path!("/login") view=login::LoginPage />
                    <Route path=path!("/") view=home::HomePage />
                    <ParentRoute path=path!("/t/:tenant") view=tenant::TenantLayout>
                        <Route path=path!("") view=tenant::TenantOverview />
                        <Route path=path!("servers") view=servers::ServersPage />
                        <Route path=path!("roles") view=roles::RolesPage />
                        <Route path=path!("users") view=users::UsersPage />
                        <Route path=path!("groups") view=crate::pages::groups::GroupsPage />
                        <Route path=path!("virtual-servers") view=virtual_servers::VirtualServersPage />
                        <Route path=path!("tokens") view=tokens::TokensPage />
                        <Route path=path!("data") view=data_rules::DataRulesPage />
                        <Route path=path!("limits") view=rate_limits::RateLimitsPage />
                        <Route path=path!("audit") view=audit::AuditPage />
                        <Route path=path!("publish") view=crate::pages::publish::PublishPage />
                    </ParentRoute>
                </Routes>
            </main>
        </Router>
    }
}

/// The top bar: the product name, who is signed in, and the sign-out button.
#[component]
fn Header() -> impl IntoView {
    let SessionCtx { me, logout, .. } = expect_context::<SessionCtx>();
    view! {
        <header class="topbar">
            <A href="/" attr:class="brand">
                "Gatehouse"
            </A>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match me.await {
                        Ok(Some(me)) => {
                            view! {
                                <div class="whoami">
                                    <span data-testid="whoami">{me.email}</span>
                                    <span class="muted">{format!(" ({})", me.console_role)}</span>
                                    <ActionForm action=logout>
                                        <button type="submit" class="secondary" data-testid="sign-out">
                                            "Sign out"
                                        </button>
                                    </ActionForm>
                                </div>
                            }
                                .into_any()
                        }
                        _ => ().into_any(),
                    }
                })}
            </Transition>
        </header>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
        resp.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Not found" />
        <h1>"Page not found"</h1>
        <p>
            <A href="/">"Back to the tenants"</A>
        </p>
    }
}

/// Whether `path` is a local path of plain characters (`/t/acme/roles`), safe to redirect to
/// after signing in: no scheme, no `//host`, nothing to escape.
pub fn is_plain_local_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= 200
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::is_plain_local_path;

    #[test]
    fn only_plain_local_paths_are_redirect_targets() {
        assert!(is_plain_local_path("/"));
        assert!(is_plain_local_path("/t/acme/roles"));
        assert!(!is_plain_local_path("//evil.example/"));
        assert!(!is_plain_local_path("https://evil.example/"));
        assert!(!is_plain_local_path("/t/a?x=1"));
        assert!(!is_plain_local_path(""));
    }
}
