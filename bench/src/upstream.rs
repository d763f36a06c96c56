//! The fast echo upstream: a minimal MCP Streamable HTTP server (2025-11-25 era) on 127.0.0.1.
//!
//! Answers `initialize` (with a new `Mcp-Session-Id`), notifications (202), `ping`, `tools/list` (two
//! tools, `echo` and `add`, with input schemas) and `tools/call`, always as `application/json` (never
//! SSE). Stateful like real servers: every request but `initialize` needs a session it handed out (400
//! without one, 404 for an unknown one); `DELETE` ends a session. No logging, no middleware.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

struct Echo {
    sessions: RwLock<HashSet<String>>,
    next: AtomicU64,
    /// Makes session ids differ between runs.
    seed: u64,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Value>,
}

/// Serves the echo upstream on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let state = Arc::new(Echo { sessions: RwLock::new(HashSet::new()), next: AtomicU64::new(1), seed });
    let app = Router::new().route("/mcp", post(post_mcp).get(get_mcp).delete(delete_mcp)).with_state(state);
    axum::serve(listener, app).await?;
    Ok(())
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

fn rpc_error(status: StatusCode, id: Option<&Value>, code: i64, message: &str) -> Response {
    json_response(status, &json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }))
}

fn tools() -> Value {
    json!([
        {
            "name": "echo",
            "description": "Echoes back the input message.",
            "inputSchema": {
                "type": "object",
                "properties": { "message": { "type": "string", "description": "Message to echo" } },
                "required": ["message"],
            },
        },
        {
            "name": "add",
            "description": "Adds two numbers.",
            "inputSchema": {
                "type": "object",
                "properties": { "a": { "type": "number" }, "b": { "type": "number" } },
                "required": ["a", "b"],
            },
        },
    ])
}

async fn post_mcp(State(echo): State<Arc<Echo>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(msg) = serde_json::from_slice::<Incoming>(&body) else {
        return rpc_error(StatusCode::BAD_REQUEST, None, -32700, "parse error");
    };
    let Some(method) = msg.method.as_deref() else {
        // A client's response to a server request: nothing to answer.
        return StatusCode::ACCEPTED.into_response();
    };
    if method == "initialize" {
        let requested = msg.params.as_ref().and_then(|p| p.get("protocolVersion")).and_then(Value::as_str);
        let version = requested.filter(|v| VERSIONS.contains(v)).unwrap_or(VERSIONS[0]);
        let n = echo.next.fetch_add(1, Ordering::Relaxed);
        let session = format!("{:016x}{n:016x}", echo.seed);
        echo.sessions.write().unwrap_or_else(|e| e.into_inner()).insert(session.clone());
        let result = json!({
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": { "name": "gatehouse-bench-echo", "version": env!("CARGO_PKG_VERSION") },
        });
        let mut response = json_response(StatusCode::OK, &json!({ "jsonrpc": "2.0", "id": msg.id, "result": result }));
        if let Ok(value) = HeaderValue::from_str(&session) {
            response.headers_mut().insert(SESSION_HEADER, value);
        }
        return response;
    }
    let Some(session) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return rpc_error(StatusCode::BAD_REQUEST, msg.id.as_ref(), -32600, "missing Mcp-Session-Id");
    };
    if !echo.sessions.read().unwrap_or_else(|e| e.into_inner()).contains(session) {
        return rpc_error(StatusCode::NOT_FOUND, msg.id.as_ref(), -32001, "session not found");
    }
    let Some(id) = msg.id else {
        return StatusCode::ACCEPTED.into_response();
    };
    let result = match method {
        "ping" => json!({}),
        "tools/list" => json!({ "tools": tools() }),
        "tools/call" => {
            let params = msg.params.unwrap_or(Value::Null);
            let args = &params["arguments"];
            match params["name"].as_str() {
                Some("echo") => {
                    let text = format!("Echo: {}", args["message"].as_str().unwrap_or_default());
                    json!({ "content": [{ "type": "text", "text": text }] })
                }
                Some("add") => {
                    let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
                    json!({ "content": [{ "type": "text", "text": sum.to_string() }] })
                }
                _ => return rpc_error(StatusCode::OK, Some(&id), -32602, "unknown tool"),
            }
        }
        _ => return rpc_error(StatusCode::OK, Some(&id), -32601, "method not found"),
    };
    json_response(StatusCode::OK, &json!({ "jsonrpc": "2.0", "id": id, "result": result }))
}

async fn get_mcp() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST, DELETE")]).into_response()
}

async fn delete_mcp(State(echo): State<Arc<Echo>>, headers: HeaderMap) -> StatusCode {
    let removed = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| echo.sessions.write().unwrap_or_else(|e| e.into_inner()).remove(s));
    if removed { StatusCode::OK } else { StatusCode::NOT_FOUND }
}
