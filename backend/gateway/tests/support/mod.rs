//! Test doubles for the gateway worker: a fake control plane, a tiny MCP upstream, bundle content,
//! an MCP client, and the gateway itself served on port 0. Everything listens on 127.0.0.1.

#![allow(dead_code)] // not every test uses every helper

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt as _;
use gatehouse_bundle::format::{Content, Role, Server, SessionKey, Token, User, VirtualServer};
use gatehouse_bundle::{SignedBundle, SigningKey};
use gatehouse_core::audit::AuditEvent;
use gatehouse_core::rules::PolicyMode;
use gatehouse_gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const WORKER_TOKEN: &str = "worker-secret";
pub const TENANT: &str = "acme";
/// Alice has the `analyst` role (grants chosen per test).
pub const ALICE: &str = "tok-alice";
/// Bob has the `admin` role: every tool of every server.
pub const BOB: &str = "tok-bob";
/// Alice's token that expired long ago.
pub const EXPIRED: &str = "tok-expired";
/// The tenant's session key (32 bytes of 7), id `k1`.
pub const SESSION_KEY_B64: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// Serves `router` on a fresh port; returns its base URL.
pub async fn serve(router: Router) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (url, task)
}

/// A URL where nothing listens. The port stays bound (without listening, so connections are refused)
/// for as long as this lives, so no other test can take it meanwhile.
pub struct DeadPort {
    pub url: String,
    _socket: tokio::net::TcpSocket,
}

pub fn dead_port() -> DeadPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    DeadPort { url: format!("http://{}", socket.local_addr().unwrap()), _socket: socket }
}

/// Polls `check` until it gives a value (at most 10 s).
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Fake control plane: the worker API of the contract (`/v1/bundles/{group}`, `/v1/audit`).

pub struct FakeControlPlane {
    pub url: String,
    state: Arc<CpState>,
    _task: JoinHandle<()>,
}

struct CpState {
    bundles: Mutex<Vec<SignedBundle>>,
    version: watch::Sender<u64>,
    /// Every event received, duplicates included.
    audit: Mutex<Vec<AuditEvent>>,
    audit_posts: AtomicUsize,
    refuse_audit: AtomicUsize,
}

impl FakeControlPlane {
    pub async fn start() -> Self {
        let state = Arc::new(CpState {
            bundles: Mutex::new(Vec::new()),
            version: watch::Sender::new(0),
            audit: Mutex::new(Vec::new()),
            audit_posts: AtomicUsize::new(0),
            refuse_audit: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/v1/bundles/{group}", get(cp_bundles))
            .route("/v1/audit", post(cp_audit))
            .with_state(Arc::clone(&state));
        let (url, task) = serve(router).await;
        Self { url, state, _task: task }
    }

    /// Replaces the group's bundle set; waiting long polls answer at once.
    pub fn publish(&self, bundles: Vec<SignedBundle>) {
        *self.state.bundles.lock().unwrap() = bundles;
        self.state.version.send_modify(|v| *v += 1);
    }

    /// Every audit event received so far (duplicates included).
    pub fn audit_events(&self) -> Vec<AuditEvent> {
        self.state.audit.lock().unwrap().clone()
    }

    /// The number of POSTs to `/v1/audit`, refused ones included.
    pub fn audit_posts(&self) -> usize {
        self.state.audit_posts.load(Ordering::SeqCst)
    }

    /// Answers the next `n` audit POSTs with 503.
    pub fn refuse_audit(&self, n: usize) {
        self.state.refuse_audit.store(n, Ordering::SeqCst);
    }
}

fn worker_authorized(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {WORKER_TOKEN}"))
}

async fn cp_bundles(
    State(state): State<Arc<CpState>>,
    UrlPath(group): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !worker_authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if group != "default" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let wait = query.get("wait").and_then(|w| w.parse().ok()).unwrap_or(25);
    let mut changes = state.version.subscribe();
    let version = *changes.borrow_and_update();
    let sent = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    if sent != Some(&etag(version)) {
        return bundle_answer(&state, version);
    }
    match tokio::time::timeout(Duration::from_secs(wait), changes.changed()).await {
        Ok(Ok(())) => {
            let version = *changes.borrow_and_update();
            bundle_answer(&state, version)
        }
        _ => StatusCode::NOT_MODIFIED.into_response(),
    }
}

fn etag(version: u64) -> String {
    format!("\"v{version}\"")
}

fn bundle_answer(state: &CpState, version: u64) -> Response {
    let bundles = state.bundles.lock().unwrap().clone();
    ([(header::ETAG, etag(version))], Json(json!({ "bundles": bundles }))).into_response()
}

async fn cp_audit(State(state): State<Arc<CpState>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !worker_authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    state.audit_posts.fetch_add(1, Ordering::SeqCst);
    if state.refuse_audit.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let events: Vec<AuditEvent> = serde_json::from_value(body["events"].clone()).expect("events of the contract");
    let accepted = events.len();
    state.audit.lock().unwrap().extend(events);
    Json(json!({ "accepted": accepted })).into_response()
}

// ---------------------------------------------------------------------------------------------
// A tiny MCP upstream (Streamable HTTP, stateful): initialize, tools/list in two pages, tools/call
// (as SSE when asked to), DELETE.

pub struct FakeUpstream {
    pub url: String,
    state: Arc<UpState>,
    _task: JoinHandle<()>,
}

struct UpState {
    server: String,
    tools: Vec<String>,
    sse_calls: bool,
    sessions_opened: AtomicUsize,
    live: Mutex<HashSet<String>>,
    deleted: Mutex<Vec<String>>,
    saw_authorization: AtomicBool,
    calls: Mutex<Vec<Value>>,
    /// `resources/read` and `prompts/get` requests received (the whole message).
    reads: Mutex<Vec<Value>>,
    /// Notifications received from the gateway (after initialize).
    notes: Mutex<Vec<Value>>,
    /// Server requests waiting for the client's answer, by id.
    waiting: Mutex<HashMap<String, tokio::sync::oneshot::Sender<Value>>>,
    /// `Last-Event-ID` of every GET.
    gets: Mutex<Vec<Option<String>>>,
    /// The trace context of every POST: `{ method, header, meta }` (the `traceparent` HTTP header and
    /// `params._meta.traceparent`, `null` when absent).
    traceparents: Mutex<Vec<Value>>,
}

impl FakeUpstream {
    /// An upstream named `server` with these tools; `sse_calls` answers tools/call as an event stream.
    pub async fn start(server: &str, tools: &[&str], sse_calls: bool) -> Self {
        let state = Arc::new(UpState {
            server: server.to_owned(),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            sse_calls,
            sessions_opened: AtomicUsize::new(0),
            live: Mutex::new(HashSet::new()),
            deleted: Mutex::new(Vec::new()),
            saw_authorization: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
            reads: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
            waiting: Mutex::new(HashMap::new()),
            gets: Mutex::new(Vec::new()),
            traceparents: Mutex::new(Vec::new()),
        });
        let router =
            Router::new().route("/mcp", post(up_post).delete(up_delete).get(up_get)).with_state(Arc::clone(&state));
        let (base, task) = serve(router).await;
        Self { url: format!("{base}/mcp"), state, _task: task }
    }

    pub fn sessions_opened(&self) -> usize {
        self.state.sessions_opened.load(Ordering::SeqCst)
    }

    pub fn deleted_sessions(&self) -> Vec<String> {
        self.state.deleted.lock().unwrap().clone()
    }

    /// True if any request that reached this upstream carried an Authorization header.
    pub fn saw_authorization(&self) -> bool {
        self.state.saw_authorization.load(Ordering::SeqCst)
    }

    /// The params of every tools/call received.
    pub fn calls(&self) -> Vec<Value> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Notifications the gateway sent (besides `notifications/initialized`).
    /// Every `resources/read` and `prompts/get` request this upstream received.
    pub fn reads(&self) -> Vec<Value> {
        self.state.reads.lock().unwrap().clone()
    }

    pub fn notes(&self) -> Vec<Value> {
        self.state.notes.lock().unwrap().clone()
    }

    /// The `Last-Event-ID` of every GET stream opened.
    pub fn gets(&self) -> Vec<Option<String>> {
        self.state.gets.lock().unwrap().clone()
    }

    /// The trace context of every POST received, in order (see `UpState::traceparents`).
    pub fn traceparents(&self) -> Vec<Value> {
        self.state.traceparents.lock().unwrap().clone()
    }

    /// Forgets every session, as a restarted server would.
    pub fn forget_sessions(&self) {
        self.state.live.lock().unwrap().clear();
    }
}

async fn up_post(State(state): State<Arc<UpState>>, headers: HeaderMap, Json(msg): Json<Value>) -> Response {
    if headers.contains_key(header::AUTHORIZATION) {
        state.saw_authorization.store(true, Ordering::SeqCst);
    }
    let method = msg["method"].as_str().unwrap_or_default();
    state.traceparents.lock().unwrap().push(json!({
        "method": method,
        "header": headers.get("traceparent").and_then(|v| v.to_str().ok()),
        "meta": msg.pointer("/params/_meta/traceparent"),
    }));
    let id = msg.get("id").cloned();
    if method == "initialize" {
        let n = state.sessions_opened.fetch_add(1, Ordering::SeqCst) + 1;
        let sid = format!("{}-session-{n}", state.server);
        state.live.lock().unwrap().insert(sid.clone());
        // alpha offers everything; beta tools and prompts only.
        let capabilities = if state.server == "alpha" {
            json!({ "tools": {}, "resources": { "subscribe": true }, "prompts": {}, "completions": {}, "logging": {} })
        } else {
            json!({ "tools": {}, "prompts": { "listChanged": true } })
        };
        // The client capabilities the gateway declared, for tests to check.
        state.notes.lock().unwrap().push(json!({ "declared": msg["params"]["capabilities"] }));
        let result = json!({
            "protocolVersion": "2025-11-25",
            "capabilities": capabilities,
            "serverInfo": { "name": state.server, "version": "1.0.0" },
        });
        return ([("mcp-session-id", sid)], Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })))
            .into_response();
    }
    // Everything else must come on a live session, with the negotiated protocol version.
    match headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) {
        None => return (StatusCode::BAD_REQUEST, "missing session").into_response(),
        Some(sid) if !state.live.lock().unwrap().contains(sid) => return StatusCode::NOT_FOUND.into_response(),
        Some(_) => {}
    }
    if headers.get("mcp-protocol-version").and_then(|v| v.to_str().ok()) != Some("2025-11-25") {
        return (StatusCode::BAD_REQUEST, "missing protocol version").into_response();
    }
    let Some(id) = id else {
        if method != "notifications/initialized" {
            state.notes.lock().unwrap().push(msg.clone());
        }
        return StatusCode::ACCEPTED.into_response();
    };
    if msg.get("method").is_none() {
        // The client's answer to a server request.
        let key = id.to_string();
        match state.waiting.lock().unwrap().remove(&key) {
            Some(waiter) => {
                let _ = waiter.send(msg);
                return StatusCode::ACCEPTED.into_response();
            }
            None => return (StatusCode::BAD_REQUEST, "unexpected response").into_response(),
        }
    }
    let rpc_result = |result: Value| Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response();
    match method {
        "resources/list" => rpc_result(json!({ "resources": [
            { "uri": format!("{}://doc/1", state.server), "name": "doc 1" },
        ] })),
        "resources/templates/list" => rpc_result(json!({ "resourceTemplates": [
            { "uriTemplate": format!("{}://item/{{id}}", state.server), "name": "item" },
        ] })),
        "resources/read" | "resources/subscribe" => {
            let uri = msg["params"]["uri"].as_str().unwrap_or_default();
            if method == "resources/read" {
                state.reads.lock().unwrap().push(msg.clone());
            }
            // Test hooks for data classification: a URI with `card` reads a card number, one with
            // `blob` binary contents (digits a card detector would match as text), one with `sse`
            // is answered as an event stream.
            let mut text = format!("{} {method} {uri}", state.server);
            if uri.contains("card") {
                text.push_str(": card 4111 1111 1111 1111");
            }
            let content = if uri.contains("blob") {
                json!({ "uri": uri, "mimeType": "application/octet-stream", "blob": "4111111111111111" })
            } else {
                json!({ "uri": uri, "text": text })
            };
            let result = json!({ "contents": [content] });
            if uri.contains("sse") { sse_result(&id, result) } else { rpc_result(result) }
        }
        "prompts/list" => {
            let names: &[&str] = if state.server == "alpha" { &["greet", "summary"] } else { &["summary"] };
            let prompts: Vec<Value> =
                names.iter().map(|n| json!({ "name": n, "description": format!("{n} of {}", state.server) })).collect();
            rpc_result(json!({ "prompts": prompts }))
        }
        "prompts/get" => {
            state.reads.lock().unwrap().push(msg.clone());
            let mut text = format!(
                "{}/{}: {}",
                state.server,
                msg["params"]["name"].as_str().unwrap_or("?"),
                msg["params"]["arguments"]
            );
            // Test hooks: argument `card` adds a card number to the message, `sse` streams the answer.
            let arguments = &msg["params"]["arguments"];
            if arguments.get("card").is_some() {
                text.push_str(" card 4111 1111 1111 1111");
            }
            let result = json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": text } }] });
            if arguments.get("sse").is_some() { sse_result(&id, result) } else { rpc_result(result) }
        }
        "completion/complete" => {
            let what = msg["params"]["ref"]["name"]
                .as_str()
                .or(msg["params"]["ref"]["uri"].as_str())
                .unwrap_or("?")
                .to_owned();
            rpc_result(json!({ "completion": { "values": [format!("{}:{what}", state.server)] } }))
        }
        "logging/setLevel" => {
            state.notes.lock().unwrap().push(msg.clone());
            rpc_result(json!({}))
        }
        "tools/call" if msg["params"]["name"] == "ask" => ask(state, msg),
        "tools/list" => {
            // Two pages, so the gateway has to follow nextCursor.
            let half = state.tools.len().div_ceil(2);
            let second = msg["params"]["cursor"] == "page-2";
            let page = if second { &state.tools[half..] } else { &state.tools[..half] };
            let tools: Vec<Value> = page
                .iter()
                .map(|t| json!({ "name": t, "description": format!("{t} of {}", state.server), "inputSchema": { "type": "object" } }))
                .collect();
            let mut result = json!({ "tools": tools });
            if !second {
                result["nextCursor"] = json!("page-2");
            }
            Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response()
        }
        "tools/call" => {
            state.calls.lock().unwrap().push(msg["params"].clone());
            let text = format!(
                "{}/{}: {}",
                state.server,
                msg["params"]["name"].as_str().unwrap_or("?"),
                msg["params"]["arguments"]
            );
            let response =
                json!({ "jsonrpc": "2.0", "id": id, "result": { "content": [{ "type": "text", "text": text }] } });
            if state.sse_calls {
                let progress = json!({ "jsonrpc": "2.0", "method": "notifications/message", "params": { "level": "info", "data": "working" } });
                let body =
                    format!("event: message\ndata: {progress}\n\n: keep-alive\n\nevent: message\ndata: {response}\n\n");
                ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
            } else {
                Json(response).into_response()
            }
        }
        _ => Json(json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32601, "message": "method not found" } }))
            .into_response(),
    }
}

/// A result answered as an event stream: a log event first, then the answer.
fn sse_result(id: &Value, result: Value) -> Response {
    let log = json!({ "jsonrpc": "2.0", "method": "notifications/message", "params": { "level": "info", "data": "reading" } });
    let answer = json!({ "jsonrpc": "2.0", "id": id, "result": result });
    let body = format!("event: message\ndata: {log}\n\nevent: message\ndata: {answer}\n\n");
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// beta's `ask` tool, answered over SSE: a priming event, progress (if asked for), a sampling request
/// to the client, and after the client's answer (or 5 s) the result quoting it. Event ids `b-1`...
fn ask(state: Arc<UpState>, msg: Value) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(8);
    let (answered, answer) = tokio::sync::oneshot::channel();
    state.waiting.lock().unwrap().insert("1".to_owned(), answered);
    state.calls.lock().unwrap().push(msg["params"].clone());
    tokio::spawn(async move {
        let _ = tx.send("id: b-1\ndata:\n\n".to_owned()).await;
        if let Some(token) = msg["params"]["_meta"].get("progressToken") {
            let note = json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": { "progressToken": token, "progress": 1 } });
            let _ = tx.send(format!("id: b-2\ndata: {note}\n\n")).await;
        }
        let request = json!({ "jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage", "params": { "maxTokens": 5, "messages": [] } });
        let _ = tx.send(format!("id: b-3\ndata: {request}\n\n")).await;
        let text = match tokio::time::timeout(Duration::from_secs(5), answer).await {
            Ok(Ok(reply)) => format!("beta/ask: {}", reply["result"]["content"]["text"].as_str().unwrap_or("?")),
            _ => "beta/ask: no answer".to_owned(),
        };
        let response =
            json!({ "jsonrpc": "2.0", "id": msg["id"], "result": { "content": [{ "type": "text", "text": text }] } });
        let _ = tx.send(format!("id: b-4\ndata: {response}\n\n")).await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|s| (Ok::<_, std::convert::Infallible>(s), rx))
    });
    ([(header::CONTENT_TYPE, "text/event-stream")], axum::body::Body::from_stream(body)).into_response()
}

/// GET: alpha streams one log message (event id `a-1`, or `a-2` when resuming) and stays open;
/// beta has no GET stream (405).
async fn up_get(State(state): State<Arc<UpState>>, headers: HeaderMap) -> Response {
    if state.server != "alpha" {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    state.gets.lock().unwrap().push(last.clone());
    let (id, data) = match &last {
        None => ("a-1", "hello".to_owned()),
        Some(after) => ("a-2", format!("resumed after {after}")),
    };
    let note =
        json!({ "jsonrpc": "2.0", "method": "notifications/message", "params": { "level": "info", "data": data } });
    let first = format!("id: {id}\ndata: {note}\n\n");
    let body = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(first) })
        .chain(futures::stream::pending());
    ([(header::CONTENT_TYPE, "text/event-stream")], axum::body::Body::from_stream(body)).into_response()
}

async fn up_delete(State(state): State<Arc<UpState>>, headers: HeaderMap) -> StatusCode {
    let Some(sid) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else { return StatusCode::BAD_REQUEST };
    if state.live.lock().unwrap().remove(sid) {
        state.deleted.lock().unwrap().push(sid.to_owned());
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

// ---------------------------------------------------------------------------------------------
// Bundle content.

/// The upstreams a tenant's bundle points at.
pub struct Upstreams {
    pub alpha: FakeUpstream,
    pub beta: FakeUpstream,
    /// A server that is configured but never answers.
    pub gone: DeadPort,
}

impl Upstreams {
    /// alpha: echo, add, search (JSON answers); beta: search, wipe, ask (tools/call over SSE).
    pub async fn start() -> Self {
        Self {
            alpha: FakeUpstream::start("alpha", &["echo", "add", "search"], false).await,
            beta: FakeUpstream::start("beta", &["search", "wipe", "ask"], true).await,
            gone: dead_port(),
        }
    }
}

/// What the `analyst` role grants by default: alpha's echo and search, beta's search.
pub const ANALYST: &[(&str, &[&str])] = &[("alpha", &["echo", "search"]), ("beta", &["search"])];

/// Tenant `acme`: alice (analyst, with `analyst` grants), bob (admin: everything); virtual servers
/// `dev` (alpha, beta) and `broken` (alpha, gone).
pub fn content(up: &Upstreams, analyst: &[(&str, &[&str])]) -> Content {
    let digest = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
    let grants = |g: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
        g.iter().map(|(s, tools)| ((*s).to_owned(), tools.iter().map(|t| (*t).to_owned()).collect())).collect()
    };
    let mut content = Content {
        tenant: TENANT.into(),
        users: vec![
            User {
                id: "u-alice".into(),
                email: "alice@acme.test".into(),
                roles: vec!["analyst".into()],
                groups: vec![],
                attributes: Default::default(),
            },
            User {
                id: "u-bob".into(),
                email: "bob@acme.test".into(),
                roles: vec!["admin".into()],
                groups: vec![],
                attributes: Default::default(),
            },
        ],
        tokens: vec![
            Token { sha256: digest(ALICE), id: "t-alice".into(), user_id: "u-alice".into(), expires_at_ms: None },
            Token { sha256: digest(BOB), id: "t-bob".into(), user_id: "u-bob".into(), expires_at_ms: None },
            Token { sha256: digest(EXPIRED), id: "t-old".into(), user_id: "u-alice".into(), expires_at_ms: Some(1) },
        ],
        servers: vec![
            Server { slug: "alpha".into(), url: up.alpha.url.clone(), labels: vec![], transport: Default::default() },
            Server { slug: "beta".into(), url: up.beta.url.clone(), labels: vec![], transport: Default::default() },
            Server {
                slug: "gone".into(),
                url: format!("{}/mcp", up.gone.url),
                labels: vec![],
                transport: Default::default(),
            },
        ],
        roles: vec![
            Role { slug: "analyst".into(), grants: grants(analyst), rules: vec![] },
            Role { slug: "admin".into(), grants: grants(&[("alpha", &["*"]), ("beta", &["*"])]), rules: vec![] },
        ],
        virtual_servers: vec![
            VirtualServer {
                slug: "dev".into(),
                upstreams: vec!["alpha".into(), "beta".into()],
                mode: PolicyMode::Enforce,
                conflict_strategy: Default::default(),
                prefixes: vec![],
                overrides: vec![],
            },
            VirtualServer {
                slug: "broken".into(),
                upstreams: vec!["alpha".into(), "gone".into()],
                mode: PolicyMode::Enforce,
                conflict_strategy: Default::default(),
                prefixes: vec![],
                overrides: vec![],
            },
        ],
        session_keys: vec![SessionKey { id: "k1".into(), key_b64: SESSION_KEY_B64.into(), created_at_ms: 1 }],
        classification: vec![],
        kill: Default::default(),
        rate_limits: vec![],
    };
    content.normalize();
    content
}

// ---------------------------------------------------------------------------------------------
// The gateway under test, and an MCP client for it.

pub struct TestGateway {
    pub gw: Gateway,
    pub url: String,
    server: JoinHandle<()>,
}

impl TestGateway {
    /// A worker of group `default` trusting `key`, polling `control_url` with a 1 s long-poll wait.
    pub async fn start(control_url: &str, data_dir: &Path, key: &SigningKey) -> Self {
        Self::start_configured(control_url, data_dir, key, |_| {}).await
    }

    /// [`TestGateway::start`], with the configuration adjusted by `adjust` first.
    pub async fn start_configured(
        control_url: &str,
        data_dir: &Path,
        key: &SigningKey,
        adjust: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = GatewayConfig {
            control_url: control_url.to_owned(),
            worker_token: WORKER_TOKEN.to_owned(),
            group: "default".to_owned(),
            trusted_keys: vec![key.public_base64()],
            data_dir: data_dir.to_owned(),
            public_url: url.clone(),
            upstream_timeout: Duration::from_secs(5),
            poll_wait: Duration::from_secs(1),
            otlp_endpoint: None,
            metrics_token: None,
            stdio_commands: vec![],
            rate_limit_store: None,
        };
        let mut config = config;
        adjust(&mut config);
        let gw = Gateway::start(config).await.expect("gateway starts");
        let router = gw.router();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { gw, url, server }
    }

    /// Waits for the first active revision of the test tenant.
    pub async fn revision(&self) -> String {
        eventually("an active bundle", async || self.gw.active_revision(TENANT)).await
    }

    pub fn client(&self, vs: &str, token: Option<&str>) -> McpClient {
        McpClient::new(&format!("{}/mcp/{TENANT}/{vs}", self.url), token)
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::from(reqwest::get(format!("{}{path}", self.url)).await.unwrap()).await
    }

    /// Shuts the worker down gracefully and stops serving.
    pub async fn stop(self) {
        self.gw.shutdown().await;
        self.server.abort();
    }
}

/// An HTTP answer, with the body parsed as JSON when it is JSON (else `Value::String`, or `Null` if empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body; for an event stream, its last response (or error) message.
    pub body: Value,
    /// For an event stream: every event, as (id, data parsed as JSON or Null when empty).
    pub events: Vec<(Option<String>, Value)>,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let sse =
            headers.get("content-type").is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
        let text = response.text().await.unwrap();
        if sse {
            let events = parse_events(&text);
            let body = events
                .iter()
                .rev()
                .map(|(_, v)| v)
                .find(|v| v.get("result").is_some() || v.get("error").is_some())
                .cloned()
                .unwrap_or(Value::Null);
            return Self { status, headers, body, events };
        }
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Self { status, headers, body, events: Vec::new() }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON-RPC error code, if the body is a JSON-RPC error.
    pub fn rpc_code(&self) -> Option<i64> {
        self.body["error"]["code"].as_i64()
    }
}

pub struct McpClient {
    http: reqwest::Client,
    pub endpoint: String,
    pub token: Option<String>,
    pub session: Option<String>,
    next_id: i64,
}

impl McpClient {
    pub fn new(endpoint: &str, token: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::new(),
            endpoint: endpoint.to_owned(),
            token: token.map(str::to_owned),
            session: None,
            next_id: 1,
        }
    }

    /// POSTs a raw body with the usual MCP headers (bearer, session, protocol version) plus `extra`.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>, extra: &[(&str, &str)]) -> Reply {
        let mut request = self
            .http
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session).header("mcp-protocol-version", "2025-11-25");
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        Reply::from(request.send().await.unwrap()).await
    }

    pub async fn post(&self, body: Value) -> Reply {
        self.post_raw(body.to_string(), &[]).await
    }

    /// A request with a fresh id.
    pub async fn request(&mut self, method: &str, params: Value) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        let reply = self.post(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })).await;
        if reply.status == 200 && reply.body.get("id").is_some() {
            assert_eq!(reply.body["id"], json!(id), "the answer carries the request's id");
        }
        reply
    }

    /// `initialize` (as client `test-client` 1.2.3) and `notifications/initialized`; keeps the session id.
    pub async fn initialize(&mut self) -> Reply {
        self.session = None;
        let reply = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": { "name": "test-client", "version": "1.2.3" },
                }),
            )
            .await;
        assert_eq!(reply.status, 200, "initialize: {reply:?}");
        self.session = Some(reply.header("mcp-session-id").expect("a session id").to_owned());
        let note = self.post(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })).await;
        assert_eq!(note.status, 202, "notifications/initialized: {note:?}");
        reply
    }

    pub async fn tool_names(&mut self) -> Vec<String> {
        let reply = self.request("tools/list", json!({})).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let tools = reply.body["result"]["tools"].as_array().unwrap_or_else(|| panic!("a tool list: {reply:?}"));
        tools.iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
    }

    pub async fn call(&mut self, tool: &str, arguments: Value) -> Reply {
        self.request("tools/call", json!({ "name": tool, "arguments": arguments })).await
    }
}

/// The events of an SSE text: (id, data as JSON, or Null when empty). Comments are skipped.
pub fn parse_events(text: &str) -> Vec<(Option<String>, Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut id, mut data, mut any) = (None, String::new(), false);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim_start().to_owned());
                any = true;
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
                any = true;
            }
        }
        if any {
            events.push((id, if data.is_empty() { Value::Null } else { serde_json::from_str(&data).unwrap() }));
        }
    }
    events
}

/// The text of the first content item of a tools/call result.
pub fn text_of(reply: &Reply) -> &str {
    reply.body["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("a text result: {reply:?}"))
}
