//! The console's axum routes, for the `gatehouse` binary.

use std::path::PathBuf;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Redirect, Response};
use gatehouse_control::ControlPlane;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list};
use tower_http::services::ServeDir;
use tower_sessions::Session;

use crate::app::{App, is_plain_local_path, shell};

/// The console's routes: the pages (`/`, `/login`, `/t/{tenant}/…`), the server functions
/// (`/api/console/…`) and the browser bundle (`/pkg/…`, served from `{site_root}/pkg`, where
/// `scripts/build-console.sh` writes it).
///
/// The caller merges this with the control plane's router and wraps both in
/// `gatehouse_control::auth::layers` (sessions and the CSRF guard): the console reads the
/// session, so it must sit inside that layer. Unauthenticated page visits are redirected to
/// `/login`.
pub fn router(control: ControlPlane, site_root: PathBuf) -> Router {
    let options = LeptosOptions::builder()
        .output_name(crate::OUTPUT_NAME)
        .site_root(site_root.to_string_lossy().into_owned())
        .site_pkg_dir("pkg")
        .build();
    let routes = generate_route_list(App);
    let pages = Router::new()
        .leptos_routes_with_context(
            &options,
            routes,
            {
                let control = control.clone();
                move || provide_context(control.clone())
            },
            {
                let options = options.clone();
                move || shell(options.clone())
            },
        )
        .layer(from_fn_with_state(control, sign_in_guard))
        .with_state(options);
    pages.nest_service("/pkg", ServeDir::new(site_root.join("pkg")))
}

/// Sends page visits without a session to `/login` (remembering where they were going), and
/// signed-in visits of `/login` home. Server functions check the session themselves.
async fn sign_in_guard(State(control): State<ControlPlane>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if request.method() != Method::GET || path.starts_with("/api/") {
        return next.run(request).await;
    }
    let session = request.extensions().get::<Session>().cloned();
    let signed_in = match &session {
        Some(session) => gatehouse_control::auth::current_actor(&control, session).await.is_some(),
        None => false,
    };
    match (path == "/login", signed_in) {
        (true, true) => Redirect::to("/").into_response(),
        (false, false) if path != "/" && is_plain_local_path(&path) => {
            Redirect::to(&format!("/login?next={path}")).into_response()
        }
        (false, false) => Redirect::to("/login").into_response(),
        _ => next.run(request).await,
    }
}
