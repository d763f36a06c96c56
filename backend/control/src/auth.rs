//! Console sign-in: argon2 password hashes, database-backed sessions, and the CSRF guard.
//!
//! CSRF: every state-changing request that could carry the session cookie must prove it comes from
//! our own pages: its `Origin` (or, failing that, `Referer`) must be our origin. Browsers always send
//! `Origin` on cross-site POSTs and scripts cannot forge it, and the session cookie is `SameSite=Lax`
//! on top. Requests without cookies or with a bearer token carry no ambient credentials and are
//! exempt, as is the worker API (`/v1/…`, bearer only). See `docs/decisions/0005-console-sessions-and-csrf.md`.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_core::views::MeView;
use gatehouse_core::{ErrorCode, GatehouseError};
use serde::{Deserialize, Serialize};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

use crate::{Actor, ControlPlane};

/// Name of the console session cookie.
pub const SESSION_COOKIE: &str = "gatehouse_session";
const SESSION_KEY: &str = "gatehouse.user";
/// Endpoints that start a session: they always need a same-origin proof, cookie or not.
pub const SIGN_IN_PATHS: &[&str] = &["/auth/login", "/api/console/login"];

/// Hashes a password with argon2id, off the async threads (it takes tens of milliseconds on purpose).
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    })
    .await?
}

/// Checks a password against a PHC hash string, off the async threads.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// A valid hash of a random password, checked against when an e-mail is unknown, so that sign-in
/// takes as long for unknown accounts as for known ones.
pub fn dummy_hash() -> String {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default().hash_password(b"not-a-real-password", &salt).map(|h| h.to_string()).unwrap_or_default()
        })
        .clone()
}

/// What the session remembers about who is signed in.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionUser {
    tenant_id: String,
    user_id: String,
}

/// The signed-in actor of this session, if any (and if the account still exists).
pub async fn current_actor(control: &ControlPlane, session: &Session) -> Option<Actor> {
    let user: SessionUser = session.get(SESSION_KEY).await.ok().flatten()?;
    control.services().actor(&user.tenant_id, &user.user_id).await.ok()
}

/// Marks the session as signed in by `actor`, under a new session id (no session fixation).
pub async fn start_session(session: &Session, actor: &Actor) -> Result<(), GatehouseError> {
    let fail = |e: tower_sessions::session::Error| {
        let reference = uuid::Uuid::now_v7();
        tracing::error!(%reference, error = %e, "session store failure");
        GatehouseError::internal(reference)
    };
    session.cycle_id().await.map_err(fail)?;
    session
        .insert(SESSION_KEY, SessionUser { tenant_id: actor.tenant_id.clone(), user_id: actor.user_id.clone() })
        .await
        .map_err(fail)
}

/// Signs the session out and deletes it.
pub async fn end_session(session: &Session) {
    if let Err(e) = session.flush().await {
        tracing::warn!(error = %e, "could not delete session");
    }
}

/// A JSON error answer: `{"error":{"code":"…","message":"…"}}` with the code's HTTP status.
pub fn error_response(e: &GatehouseError) -> Response {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(serde_json::json!({ "error": { "code": e.code.as_str(), "message": e.message } }))).into_response()
}

/// Wraps `router` (the control plane's and the console's routes) in the session layer and the CSRF
/// guard. The session store is the control plane's database.
pub fn layers(control: &ControlPlane, router: Router) -> Router {
    let sessions = SessionManagerLayer::new(control.store().clone())
        .with_name(SESSION_COOKIE)
        .with_secure(control.config().secure_cookies)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_expiry(Expiry::OnInactivity(tower_sessions::cookie::time::Duration::hours(12)));
    router.layer(axum::middleware::from_fn_with_state(control.clone(), csrf_guard)).layer(sessions)
}

fn origin_of(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    Some(u.origin().ascii_serialization())
}

/// Whether a state-changing request proves it came from our own pages.
fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    let claimed = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
        .map(str::to_owned)
        .or_else(|| headers.get(header::REFERER).and_then(|v| v.to_str().ok()).and_then(origin_of));
    let Some(claimed) = claimed else { return false };
    if origin_of(public_url).is_some_and(|ours| ours == claimed) {
        return true;
    }
    // The console may be reached under another name than the configured one (localhost vs
    // 127.0.0.1): same-origin with the Host the browser used is what matters.
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    host.is_some_and(|h| claimed == format!("http://{h}") || claimed == format!("https://{h}"))
}

async fn csrf_guard(State(control): State<ControlPlane>, request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let bearer = request.headers().contains_key(header::AUTHORIZATION);
    // Without a cookie there are no ambient credentials to abuse, except at sign-in, where a
    // forged request would sign the victim's browser into the attacker's account (login CSRF).
    let no_cookie = !request.headers().contains_key(header::COOKIE) && !SIGN_IN_PATHS.contains(&request.uri().path());
    let worker_api = request.uri().path().starts_with("/v1/");
    if safe || bearer || no_cookie || worker_api || same_origin(request.headers(), &control.config().public_url) {
        return next.run(request).await;
    }
    error_response(&GatehouseError::new(
        ErrorCode::CsrfRejected,
        "state-changing requests need an Origin header from this console (or a bearer token)",
    ))
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

async fn login(State(control): State<ControlPlane>, session: Session, Json(body): Json<LoginBody>) -> Response {
    match control.services().sign_in(&body.email, &body.password).await {
        Ok(actor) => match start_session(&session, &actor).await {
            Ok(()) => Json(control.services().me(&actor)).into_response(),
            Err(e) => error_response(&e),
        },
        Err(e) => error_response(&e),
    }
}

async fn logout(session: Session) -> StatusCode {
    end_session(&session).await;
    StatusCode::NO_CONTENT
}

async fn me(State(control): State<ControlPlane>, session: Session) -> Result<Json<MeView>, Response> {
    match current_actor(&control, &session).await {
        Some(actor) => Ok(Json(control.services().me(&actor))),
        None => Err(error_response(&GatehouseError::new(ErrorCode::Unauthenticated, "not signed in"))),
    }
}

/// `/auth/login` (JSON), `/auth/logout`, `/auth/me`.
pub fn routes(control: ControlPlane) -> Router {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
        .with_state(control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn csrf_origin_rules() {
        let ours = "http://127.0.0.1:8080";
        assert!(same_origin(&headers(&[(header::ORIGIN, "http://127.0.0.1:8080")]), ours));
        assert!(same_origin(&headers(&[(header::REFERER, "http://127.0.0.1:8080/t/acme")]), ours));
        assert!(same_origin(
            &headers(&[(header::ORIGIN, "http://localhost:8080"), (header::HOST, "localhost:8080")]),
            ours
        ));
        assert!(!same_origin(&headers(&[(header::ORIGIN, "http://evil.example")]), ours));
        assert!(!same_origin(&headers(&[(header::ORIGIN, "null")]), ours));
        assert!(!same_origin(&headers(&[]), ours));
        assert!(!same_origin(
            &headers(&[(header::ORIGIN, "http://evil.example"), (header::HOST, "127.0.0.1:8080")]),
            ours
        ));
    }

    #[tokio::test]
    async fn passwords_verify_only_with_the_right_password() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(verify_password("correct horse battery".into(), hash.clone()).await);
        assert!(!verify_password("wrong".into(), hash).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
        assert!(!verify_password("x".into(), dummy_hash()).await);
    }
}
