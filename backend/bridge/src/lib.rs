//! Fronts MCP servers that do not speak Streamable HTTP (stdio processes, legacy HTTP+SSE servers)
//! as **local Streamable HTTP endpoints** on 127.0.0.1, so the gateway's request path and the control
//! plane's tool discovery keep speaking one transport (`docs/decisions/0016-stdio-and-sse-upstreams.md`).
//!
//! [`Bridge::start`] binds an ephemeral loopback port. [`Bridge::endpoint`] gives an upstream spec
//! its local URL, `http://127.0.0.1:{port}/u/{key}`, where `key` is a keyed hash of the spec (stable
//! while the process runs, unguessable by other local processes). On that URL:
//! - `POST initialize` opens a [`pipe`] (one child process, or one SSE connection, per session:
//!   stdio servers serve one client) and answers with a fresh `Mcp-Session-Id`. A stdio command
//!   that is not on the allow-list is never launched: initialize is answered with a JSON-RPC error
//!   naming why, which the gateway reports as its `-32004` "upstream unavailable".
//! - `POST` of a request: written to the pipe, answered as an event stream carrying what the upstream
//!   sends until the response with that id (progress for its token, and server-to-client requests
//!   and notifications while it is the newest request in flight).
//! - `POST` of a notification or a client's response: written to the pipe, `202`.
//! - `GET`: an event stream of what the upstream sends while no request is in flight (a bounded
//!   backlog is kept while no GET stream is open). With `Last-Event-ID`, the stream that event
//!   belongs to (a request's or the GET stream) resumes after it: every event carries an id and is
//!   logged per session for the resume window ([`streams`]).
//! - `DELETE`: ends the session (the child is killed). Unknown session: `404`.
//!
//! Sessions idle for longer than [`BridgeConfig::idle_timeout`] are ended.

mod pipe;
pub mod sse;
mod streams;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use gatehouse_bundle::format::{Server, StdioCommand, Transport};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

pub use pipe::forbidden_env;
use streams::{Event, Reader, Resumed, Routes, STREAM_BUFFER, Waiter};

/// The session header of Streamable HTTP.
const SESSION_HEADER: &str = "mcp-session-id";
/// Messages kept for a GET stream that is not open.
const BACKLOG: usize = 64;
/// Requests in flight per session.
const MAX_IN_FLIGHT: usize = 256;

/// What the bridge allows and how long it waits.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Commands a stdio server may run, compared exactly with the spec's `command` (a bare name such
    /// as `npx`, or an absolute path). Empty (the default): no stdio server is ever launched.
    pub stdio_commands: Vec<String>,
    /// Bound on opening a pipe and on the upstream's answer to `initialize`.
    pub timeout: Duration,
    /// A session unused for this long is ended (its child killed).
    pub idle_timeout: Duration,
    /// Open sessions at most (child processes plus SSE connections).
    pub max_sessions: usize,
    /// Largest message: a POST body, a stdout line, an SSE event.
    pub max_message_bytes: usize,
    /// How long a stream that lost its reader (or finished) can be resumed with `Last-Event-ID`;
    /// a request whose reader went away stays in flight this long.
    pub resume_window: Duration,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            stdio_commands: vec![],
            timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15 * 60),
            max_sessions: 100,
            max_message_bytes: 16 << 20,
            resume_window: Duration::from_secs(5 * 60),
        }
    }
}

/// A non-HTTP upstream the bridge fronts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A legacy HTTP+SSE server: its SSE URL.
    Sse(String),
    /// A process to launch.
    Stdio(StdioCommand),
}

impl Upstream {
    /// The bridged upstream of a bundle server, `None` for Streamable HTTP.
    pub fn of(server: &Server) -> Option<Upstream> {
        match &server.transport {
            Transport::StreamableHttp => None,
            Transport::Sse => Some(Upstream::Sse(server.url.clone())),
            Transport::Stdio(c) => Some(Upstream::Stdio(c.clone())),
        }
    }

    fn key_material(&self) -> Value {
        match self {
            Upstream::Sse(url) => json!({"sse": url}),
            Upstream::Stdio(c) => json!({"stdio": [c.command, c.args, c.env]}),
        }
    }
}

/// A running bridge. Cheap to clone; the listener, the reaper and every session stop when the last
/// handle goes.
#[derive(Clone)]
pub struct Bridge {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("base", &self.shared.base).finish_non_exhaustive()
    }
}

struct Tasks(Vec<AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

struct Shared {
    config: BridgeConfig,
    base: String,
    secret: [u8; 32],
    http: reqwest::Client,
    upstreams: Mutex<HashMap<String, Upstream>>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

struct Session {
    key: String,
    outgoing: mpsc::Sender<Value>,
    routes: Mutex<Routes>,
    last_used: Mutex<Instant>,
    /// Dropped (child killed) when the session ends.
    guard: Mutex<Option<pipe::PipeGuard>>,
}

impl Bridge {
    /// Binds 127.0.0.1 on an ephemeral port and serves the local endpoints.
    pub async fn start(config: BridgeConfig) -> std::io::Result<Bridge> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(std::io::Error::other)?;
        let limit = config.max_message_bytes;
        let shared =
            Arc::new(Shared { config, base, secret, http, upstreams: Mutex::default(), sessions: Mutex::default() });
        let router = Router::new()
            .route("/u/{key}", post(on_post).get(on_get).delete(on_delete))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                warn!("the stdio/SSE bridge stopped: {e}");
            }
        });
        let reaper = tokio::spawn(reap(Arc::downgrade(&shared)));
        Ok(Bridge { shared, _tasks: Arc::new(Tasks(vec![server.abort_handle(), reaper.abort_handle()])) })
    }

    /// The local Streamable HTTP URL of `upstream` (registered on first use; the same spec always
    /// gets the same URL in this process).
    pub fn endpoint(&self, upstream: &Upstream) -> String {
        let mut h = Sha256::new();
        h.update(self.shared.secret);
        h.update(upstream.key_material().to_string().as_bytes());
        let key = hex::encode(&h.finalize()[..16]);
        let mut map = lock(&self.shared.upstreams);
        map.entry(key.clone()).or_insert_with(|| upstream.clone());
        format!("{}/u/{key}", self.shared.base)
    }

    /// Why `upstream` cannot be opened here, if it cannot (a command not on the allow-list).
    pub fn refusal(&self, upstream: &Upstream) -> Option<String> {
        refusal(&self.shared.config, upstream)
    }

    /// Open sessions (child processes plus SSE connections).
    pub fn open_sessions(&self) -> usize {
        lock(&self.shared.sessions).len()
    }

    /// `servers` with every stdio or SSE server's `url` replaced by its local endpoint (and its
    /// transport set to Streamable HTTP, which is what the endpoint speaks).
    pub fn localize(&self, servers: &mut [Server]) {
        for s in servers {
            if let Some(up) = Upstream::of(s) {
                s.url = self.endpoint(&up);
                s.transport = Transport::StreamableHttp;
            }
        }
    }
}

fn refusal(config: &BridgeConfig, upstream: &Upstream) -> Option<String> {
    match upstream {
        Upstream::Sse(_) => None,
        Upstream::Stdio(c) if config.stdio_commands.contains(&c.command) => None,
        Upstream::Stdio(c) if config.stdio_commands.is_empty() => Some(format!(
            "stdio servers are disabled on this host; to launch '{}', add it to `stdio_commands` in its configuration",
            c.command
        )),
        Upstream::Stdio(c) => Some(format!(
            "the command '{}' is not in this host's `stdio_commands` allow-list, so it is not launched",
            c.command
        )),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key_of(id: &Value) -> String {
    id.to_string()
}

fn rpc_error(id: &Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

fn json_response(status: StatusCode, body: &Value, session: Option<&str>) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if let Some(sid) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        r.headers_mut().insert(SESSION_HEADER, sid);
    }
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

/// Tells the session when a stream's reader goes away (its response body is dropped: the client
/// hung up, or the stream ended), so the resume window starts then.
struct Leaving {
    session: Weak<Session>,
    reader: Reader,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        if let Some(s) = self.session.upgrade() {
            lock(&s.routes).left(self.reader);
        }
    }
}

/// An event stream of `rx`, ending after a response message when `until_response`.
fn event_stream(rx: mpsc::Receiver<Event>, until_response: bool, leaving: Leaving) -> Response {
    let stream = futures::stream::unfold((rx, false, leaving), move |(mut rx, done, leaving)| async move {
        if done {
            return None;
        }
        let (id, message) = rx.recv().await?;
        let last = until_response && message.get("method").is_none();
        let frame = Bytes::from(format!("id: {id}\nevent: message\ndata: {message}\n\n"));
        Some((Ok::<_, Infallible>(frame), (rx, last, leaving)))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

impl Shared {
    fn session(&self, key: &str, headers: &HeaderMap) -> Result<Arc<Session>, Box<Response>> {
        let Some(sid) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return Err(Box::new(plain(StatusCode::BAD_REQUEST, "Mcp-Session-Id is required after initialize")));
        };
        match lock(&self.sessions).get(sid) {
            Some(s) if s.key == key => {
                *lock(&s.last_used) = Instant::now();
                Ok(Arc::clone(s))
            }
            _ => Err(Box::new(plain(StatusCode::NOT_FOUND, "unknown session"))),
        }
    }

    fn end(&self, sid: &str) {
        let session = lock(&self.sessions).remove(sid);
        if let Some(s) = session {
            close(&s);
        }
    }
}

/// Marks `s` closed, answers its requests in flight and drops its pipe (the child is killed).
fn close(s: &Session) {
    let handed: Vec<(mpsc::Sender<Event>, Event)> = {
        let mut r = lock(&s.routes);
        r.closed = true;
        let waiters: Vec<(String, Waiter)> = r.pending.drain().collect();
        waiters
            .into_iter()
            .filter_map(|(id, w)| {
                let id: Value = serde_json::from_str(&id).unwrap_or(Value::Null);
                r.push(w.stream, rpc_error(&id, -32603, "the upstream server closed the connection (it exited)"), true)
            })
            .collect()
    };
    for (reader, event) in handed {
        let _ = reader.try_send(event);
    }
    lock(&s.guard).take();
}

async fn on_post(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let message: Value = match serde_json::from_slice(&body) {
        Ok(m @ Value::Object(_)) => m,
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &rpc_error(&Value::Null, -32700, "the body must be one JSON-RPC message"),
                None,
            );
        }
    };
    let method = message.get("method").and_then(Value::as_str);
    let id = message.get("id").cloned();
    if method == Some("initialize") {
        return initialize(&shared, &key, message).await;
    }
    let session = match shared.session(&key, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match (method, id) {
        (Some(_), Some(id)) => {
            let (tx, rx) = mpsc::channel(STREAM_BUFFER);
            let leaving;
            {
                let mut r = lock(&session.routes);
                if r.closed {
                    return plain(StatusCode::NOT_FOUND, "unknown session");
                }
                if r.pending.len() >= MAX_IN_FLIGHT {
                    return json_response(
                        StatusCode::OK,
                        &rpc_error(&id, -32603, "too many requests in flight on this upstream session"),
                        None,
                    );
                }
                let progress_token = message.pointer("/params/_meta/progressToken").map(key_of);
                r.seq += 1;
                let seq = r.seq;
                if let Some(t) = &progress_token {
                    r.progress.insert(t.clone(), key_of(&id));
                }
                let reader = r.open(tx);
                r.pending.insert(key_of(&id), Waiter { stream: reader.stream, seq, progress_token });
                leaving = Leaving { session: Arc::downgrade(&session), reader };
            }
            if session.outgoing.send(message).await.is_err() {
                lock(&session.routes).pending.remove(&key_of(&id));
                return plain(StatusCode::NOT_FOUND, "the upstream session has ended");
            }
            event_stream(rx, true, leaving)
        }
        _ => {
            if session.outgoing.send(message).await.is_err() {
                return plain(StatusCode::NOT_FOUND, "the upstream session has ended");
            }
            StatusCode::ACCEPTED.into_response()
        }
    }
}

async fn initialize(shared: &Arc<Shared>, key: &str, message: Value) -> Response {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let Some(upstream) = lock(&shared.upstreams).get(key).cloned() else {
        return plain(StatusCode::NOT_FOUND, "unknown endpoint");
    };
    let refuse = |why: String| json_response(StatusCode::OK, &rpc_error(&id, -32603, why), None);
    if let Some(why) = refusal(&shared.config, &upstream) {
        warn!("{why}");
        return refuse(why);
    }
    if lock(&shared.sessions).len() >= shared.config.max_sessions {
        return refuse(format!(
            "this host already has {} open stdio/SSE upstream sessions, its limit",
            shared.config.max_sessions
        ));
    }
    let timeout = shared.config.timeout;
    let max = shared.config.max_message_bytes;
    let opened = match &upstream {
        Upstream::Stdio(c) => {
            info!(command = %c.command, "launching a stdio MCP server");
            pipe::spawn_stdio(c, max)
        }
        Upstream::Sse(url) => pipe::connect_sse(&shared.http, url, timeout, max).await,
    };
    let pipe = match opened {
        Ok(p) => p,
        Err(why) => return refuse(why),
    };
    let pipe::Pipe { outgoing, mut incoming, guard, stderr_tail } = pipe;

    // The handshake is read here, before the session exists, so nothing else can take the answer.
    let handshake = async {
        outgoing.send(message).await.map_err(|_| "it closed its input".to_owned())?;
        loop {
            let Some(m) = incoming.recv().await else {
                return Err("it exited before answering initialize".to_owned());
            };
            if m.get("method").is_none() && m.get("id") == Some(&id) {
                return Ok(m);
            }
            debug!("message before the initialize answer dropped: {m}");
        }
    };
    let answer = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(a)) => a,
        Ok(Err(why)) => {
            let tail: Vec<String> = lock(&stderr_tail).iter().cloned().collect();
            let detail = if tail.is_empty() { String::new() } else { format!(" (stderr: {})", tail.join(" | ")) };
            return refuse(format!("the upstream server failed to start: {why}{detail}"));
        }
        Err(_) => return refuse(format!("the upstream server did not answer initialize within {timeout:?}")),
    };
    let sid = {
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        hex::encode(b)
    };
    let session = Arc::new(Session {
        key: key.to_owned(),
        outgoing,
        routes: Mutex::default(),
        last_used: Mutex::new(Instant::now()),
        guard: Mutex::new(Some(guard)),
    });
    lock(&shared.sessions).insert(sid.clone(), Arc::clone(&session));
    tokio::spawn(dispatch(Arc::downgrade(shared), sid.clone(), session, incoming));
    json_response(StatusCode::OK, &answer, Some(&sid))
}

/// Routes what the upstream sends until the pipe closes, then ends the session.
async fn dispatch(shared: Weak<Shared>, sid: String, session: Arc<Session>, mut incoming: mpsc::Receiver<Value>) {
    let window = shared.upgrade().map_or(Duration::ZERO, |s| s.config.resume_window);
    while let Some(message) = incoming.recv().await {
        route(&session, message, window).await;
    }
    debug!(session = %sid, "upstream pipe closed");
    if let Some(shared) = shared.upgrade() {
        lock(&shared.sessions).remove(&sid);
    }
    close(&session);
}

async fn route(session: &Session, message: Value, window: Duration) {
    let is_response = message.get("method").is_none();
    let handed = {
        let mut r = lock(&session.routes);
        r.prune_now_and_then(window);
        if is_response {
            let Some(id) = message.get("id").map(key_of) else { return };
            let Some(w) = r.pending.remove(&id) else {
                debug!("an upstream answer to no request in flight dropped");
                return;
            };
            if let Some(t) = &w.progress_token {
                r.progress.remove(t);
            }
            r.push(w.stream, message, true).map(|h| (w.stream, h))
        } else {
            // Progress goes to its request's stream; anything else to the newest request whose
            // reader is there, else the GET stream, else the newest request (logged for when its
            // reader resumes), else the backlog for a GET stream yet to come.
            let by_token = (message.get("method").and_then(Value::as_str) == Some("notifications/progress"))
                .then(|| message.pointer("/params/progressToken").map(key_of))
                .flatten()
                .and_then(|t| r.progress.get(&t).cloned())
                .and_then(|id| r.pending.get(&id).map(|w| w.stream));
            let newest = |live: bool| {
                r.pending.values().filter(|w| !live || r.live(w.stream)).max_by_key(|w| w.seq).map(|w| w.stream)
            };
            let target = by_token.or_else(|| newest(true)).or(r.get.filter(|g| r.live(*g))).or_else(|| newest(false));
            match target.or(r.get) {
                Some(stream) => r.push(stream, message, false).map(|h| (stream, h)),
                None => {
                    if r.backlog.len() == BACKLOG {
                        r.backlog.pop_front();
                    }
                    r.backlog.push_back(message);
                    return;
                }
            }
        }
    };
    if let Some((stream, (reader, event))) = handed
        && reader.send(event).await.is_err()
    {
        // Logged: the reader may come back with Last-Event-ID.
        lock(&session.routes).reader_gone(stream);
    }
}

async fn on_get(State(shared): State<Arc<Shared>>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let session = match shared.session(&key, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let mut r = lock(&session.routes);
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        match r.resume(last) {
            Resumed::Stream(rx, is_get, reader) => {
                return event_stream(rx, !is_get, Leaving { session: Arc::downgrade(&session), reader });
            }
            Resumed::Unknown => debug!("Last-Event-ID {last} names no stream kept here; opening a new GET stream"),
        }
    }
    if r.get.is_some_and(|g| r.live(g)) {
        return plain(StatusCode::CONFLICT, "a GET stream is already open on this session");
    }
    let (tx, rx) = mpsc::channel(BACKLOG + STREAM_BUFFER);
    let reader = r.open(tx.clone());
    let stream = reader.stream;
    r.get = Some(stream);
    let backlog: Vec<Value> = r.backlog.drain(..).collect();
    for m in backlog {
        if let Some((_, event)) = r.push(stream, m, false) {
            let _ = tx.try_send(event);
        }
    }
    drop(r);
    event_stream(rx, false, Leaving { session: Arc::downgrade(&session), reader })
}

async fn on_delete(State(shared): State<Arc<Shared>>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    match shared.session(&key, &headers) {
        Ok(_) => {
            if let Some(sid) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
                shared.end(sid);
            }
            StatusCode::OK.into_response()
        }
        Err(r) => *r,
    }
}

/// Ends sessions idle for longer than the idle timeout, with nothing in flight.
async fn reap(shared: Weak<Shared>) {
    let every = Duration::from_secs(5);
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else { return };
        let idle = shared.config.idle_timeout;
        let stale: Vec<String> = lock(&shared.sessions)
            .iter()
            .filter(|(_, s)| {
                let mut r = lock(&s.routes);
                r.prune(shared.config.resume_window);
                lock(&s.last_used).elapsed() > idle && r.pending.is_empty() && !r.any_stream()
            })
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in stale {
            debug!(session = %sid, "ending an idle upstream session");
            shared.end(&sid);
        }
    }
}

#[cfg(test)]
mod tests;
