//! The worker's HTTP surface outside the MCP endpoint itself, and the helpers every route shares.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::map_response_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use gatehouse_core::ErrorCode;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::metrics::OpenStream;
use crate::{Gateway, mcp};

/// The content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Largest request body the MCP endpoint reads (larger → 413).
pub(crate) const MAX_BODY_BYTES: usize = 4 << 20;

/// All routes of the worker.
pub(crate) fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/oauth-protected-resource/mcp/{tenant}/{vs}", get(protected_resource))
        .route(
            "/mcp/{tenant}/{vs}",
            get(mcp::get)
                .post(mcp::post)
                .delete(mcp::delete)
                .layer(map_response_with_state(gateway.clone(), count_streams)),
        )
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(gateway)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(gw): State<Gateway>) -> Response {
    if gw.is_ready() {
        "ok".into_response()
    } else {
        let why = match gw.last_error() {
            Some(e) => format!("no policy bundle is active yet ({e})"),
            None => "no policy bundle is active yet; waiting for the control plane".to_owned(),
        };
        error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NoBundle, why)
    }
}

/// `/metrics`: the Prometheus text exposition. An operator endpoint (the labels name every tenant
/// served): with `metrics_token` configured it needs that bearer token, else it is open.
async fn metrics(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    if let Some(expected) = &gw.inner().config.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        // Digests are compared, so the time taken says nothing about the token.
        let digest = |token: &str| Sha256::digest(token.as_bytes());
        if given.map(digest) != Some(digest(expected)) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                "/metrics needs 'Authorization: Bearer <metrics token>' (the worker's metrics_token setting)",
            );
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], gw.metrics_text()).into_response()
}

/// Counts the event streams of the MCP endpoint in `gatehouse_sse_streams_open` for as long as their
/// bodies live (a JSON answer passes through untouched).
async fn count_streams(State(gw): State<Gateway>, response: Response) -> Response {
    let is_stream =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_stream {
        return response;
    }
    let open = OpenStream::new(gw.inner().metrics.clone());
    response.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _counted = &open;
            chunk
        }))
    })
}

/// RFC 9728 protected-resource metadata of one virtual server.
async fn protected_resource(State(gw): State<Gateway>, Path((tenant, vs)): Path<(String, String)>) -> Response {
    if let Err(refusal) = gw.route(&tenant, &vs) {
        return refusal.response(&tenant, &vs);
    }
    let config = &gw.inner().config;
    Json(json!({
        "resource": format!("{}/mcp/{tenant}/{vs}", config.public_url),
        "authorization_servers": [config.control_url],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [],
    }))
    .into_response()
}

async fn fallback() -> Response {
    error(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such route on this gateway; MCP endpoints are /mcp/{tenant}/{virtual-server}",
    )
}

/// The JSON error body of non-JSON-RPC failures: `{"error":{"code":...,"message":...}}`.
pub(crate) fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": { "code": code.as_str(), "message": message.into() } }))).into_response()
}

/// `scheme://host[:port]` of an absolute URL, lowercased and without a default port, so that two
/// spellings of one origin compare equal. `None` for anything else (including `Origin: null`).
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    let host = authority.host().to_ascii_lowercase();
    Some(match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// DNS-rebinding protection: a browser-sent `Origin` must be the gateway's own. Non-browser clients
/// send none, which is fine.
pub(crate) fn check_origin(headers: &HeaderMap, public_origin: &str) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let text = origin.to_str().unwrap_or("");
    if origin_of(text).as_deref() == Some(public_origin) {
        Ok(())
    } else {
        Err(format!(
            "requests from origin {text:?} are not allowed; only {public_origin} may call this endpoint from a browser"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalise() {
        assert_eq!(origin_of("http://127.0.0.1:8090").as_deref(), Some("http://127.0.0.1:8090"));
        assert_eq!(origin_of("HTTPS://GW.example.com:443/x").as_deref(), Some("https://gw.example.com"));
        assert_eq!(origin_of("http://gw:80").as_deref(), Some("http://gw"));
        assert_eq!(origin_of("null"), None);
        assert_eq!(origin_of("ftp://gw"), None);
    }

    #[test]
    fn origin_check() {
        let mut h = HeaderMap::new();
        assert!(check_origin(&h, "http://gw:8090").is_ok());
        h.insert(header::ORIGIN, "http://gw:8090".parse().unwrap());
        assert!(check_origin(&h, "http://gw:8090").is_ok());
        h.insert(header::ORIGIN, "http://evil:8090".parse().unwrap());
        assert!(check_origin(&h, "http://gw:8090").unwrap_err().contains("evil"));
    }
}
