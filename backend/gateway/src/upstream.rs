//! The gateway as an MCP client of upstream servers (Streamable HTTP, 2025-11-25 era).
//!
//! Each client session gets its own upstream session per upstream server, opened on first use:
//! `initialize`, remember the upstream's `Mcp-Session-Id`, `notifications/initialized`; after that every
//! request carries `Mcp-Session-Id` and `MCP-Protocol-Version`. An upstream that answers 404 has
//! forgotten the session: it is opened again and the request retried once. A client's requests are
//! forwarded with [`Upstreams::forward`], which hands an event-stream answer back unread so that
//! `relay` can stream it through; the gateway's own requests ([`Upstreams::request`]) are buffered.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::debug;

use crate::session::UpstreamSlot;
use crate::{LATEST_PROTOCOL_VERSION, VERSION};
use gatehouse_bridge::sse::SseParser;

/// The session header of Streamable HTTP.
pub(crate) const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// The protocol version header of Streamable HTTP.
pub(crate) const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// Largest upstream answer (JSON body or one SSE event) the gateway buffers.
const MAX_ANSWER_BYTES: usize = 16 << 20;

// Header values built once instead of being copied (and checked) on every request.
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const JSON_OR_SSE: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
const SSE: HeaderValue = HeaderValue::from_static("text/event-stream");
/// Upstream URLs parsed per thread, so a request does not parse its URL again (`url` + IDNA).
const MAX_PARSED_URLS: usize = 64;

/// An established upstream session.
#[derive(Debug)]
pub(crate) struct UpstreamSession {
    /// The endpoint it was opened on (a new bundle may move the server).
    pub url: String,
    /// The upstream's `Mcp-Session-Id`, if it uses sessions.
    pub session_id: Option<String>,
    /// The protocol version the upstream chose.
    pub protocol_version: String,
    /// The `capabilities` of the upstream's initialize result.
    pub capabilities: Value,
    /// For a 2026-07-28 upstream: its tools' `Mcp-Param-{X}` parameters, from its latest `tools/list`.
    pub tool_headers: std::sync::Mutex<std::collections::HashMap<String, Vec<gatehouse_core::headers::ParamHeader>>>,
}

impl UpstreamSession {
    /// True for a 2026-07-28 upstream (found by the `server/discover` probe): spoken to with a
    /// per-request `_meta` envelope and mirrored headers, without session (decision 0018).
    pub(crate) fn is_modern(&self) -> bool {
        crate::modern::MODERN_PROTOCOL_VERSIONS.contains(&self.protocol_version.as_str())
    }

    /// True if the upstream advertised server capability `name` (`tools`, `resources`, ...).
    pub(crate) fn offers(&self, name: &str) -> bool {
        self.capabilities.get(name).is_some_and(|c| !c.is_null())
    }
}

/// Why an upstream exchange failed, phrased to follow "upstream server 'x' is unavailable: ".
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("it could not be reached ({0})")]
    Unreachable(String),
    #[error("it did not answer within {0:?}")]
    Timeout(Duration),
    #[error("it answered HTTP {0}")]
    Status(u16),
    #[error("it ended the gateway's session again right after it was opened")]
    SessionExpired,
    #[error("it answered with something that is not the expected MCP response ({0})")]
    Protocol(String),
    #[error("it refused the request ({0})")]
    Rpc(String),
}

/// Where a request goes: the slot holding the upstream session, the upstream's URL, and the client
/// capabilities to declare when the session has to be opened.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub slot: &'a UpstreamSlot,
    pub url: &'a str,
    /// The client's `initialize` capabilities, declared upstream so that servers offer what the
    /// client can do (sampling, elicitation, roots).
    pub capabilities: &'a Value,
}

/// The upstream's answer to a forwarded request.
pub(crate) enum Answer {
    /// A JSON body: the response message (with the id the gateway sent).
    Json(Value),
    /// An event stream, not read yet; its events carry the response and whatever comes before it.
    Stream(reqwest::Response),
}

/// The MCP client side. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Upstreams {
    http: reqwest::Client,
    timeout: Duration,
    /// Request ids the gateway uses upstream for its own requests (numbers); requests forwarded for
    /// a client carry a string id derived from the client's (see `relay`), so the two never mix.
    next_id: Arc<AtomicI64>,
    /// Per upstream URL, the `server/discover` probe's verdict (decision 0018).
    verdicts: crate::modern::Verdicts,
}

/// A message as sent upstream, serialised from borrowed parts so a retry needs no copy.
#[derive(Serialize)]
struct Outgoing<'a> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a Value>,
}

impl Upstreams {
    /// A client that bounds every exchange by `timeout`.
    pub(crate) fn new(http: reqwest::Client, timeout: Duration) -> Self {
        Self { http, timeout, next_id: Arc::new(AtomicI64::new(1)), verdicts: Default::default() }
    }

    /// The bound on one exchange (and, on streams, on the silence between two events).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The gateway's own request `method` (answer buffered). Returns the upstream's JSON-RPC
    /// response object, with the gateway's id.
    pub(crate) async fn request(
        &self,
        target: Target<'_>,
        method: &str,
        params: &Value,
    ) -> Result<Value, UpstreamError> {
        let id = Value::from(self.next_id.fetch_add(1, Ordering::Relaxed));
        let hop = crate::telemetry::Hop::start(method, target.url, Some(&id), Some(params));
        let body = encode(Some(&id), method, hop.params(Some(params)))?;
        let work = async {
            let response = self.post_on_session(target, body).await?;
            read_answer(response, &id).await
        };
        hop.run(async {
            tokio::time::timeout(self.timeout, work).await.map_err(|_| UpstreamError::Timeout(self.timeout))?
        })
        .await
    }

    /// Forwards a client's request under upstream id `id`. A JSON answer is read (bounded by the
    /// timeout); an event stream is handed back unread, to be relayed as it comes.
    pub(crate) async fn forward(
        &self,
        target: Target<'_>,
        id: &Value,
        method: &str,
        params: Option<&Value>,
    ) -> Result<Answer, UpstreamError> {
        let body = encode(Some(id), method, params)?;
        let work = async {
            let response = self.post_on_session(target, body).await?;
            if is_event_stream(&response) {
                return Ok(Answer::Stream(response));
            }
            read_answer(response, id).await.map(Answer::Json)
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| UpstreamError::Timeout(self.timeout))?
    }

    /// Sends a notification (or a client's response, when `message` is one) on the session; the
    /// upstream answers 202.
    pub(crate) async fn send(&self, target: Target<'_>, message: &Value) -> Result<(), UpstreamError> {
        let body = serde_json::to_vec(message).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let work = self.post_on_session(target, Bytes::from(body));
        tokio::time::timeout(self.timeout, work).await.map_err(|_| UpstreamError::Timeout(self.timeout))?.map(drop)
    }

    /// Opens the upstream's GET stream (resuming after `last_event_id` if given). `None` when the
    /// upstream offers none (405) or refuses another one (409 and other 4xx).
    pub(crate) async fn open_stream(
        &self,
        target: Target<'_>,
        last_event_id: Option<&str>,
    ) -> Result<Option<reqwest::Response>, UpstreamError> {
        let work = async {
            let session = self.session(target, None).await?;
            if session.is_modern() {
                return Ok(None); // 2026-07-28 has no GET stream
            }
            let mut request = match endpoint(target.url) {
                Some(url) => self.http.get(url),
                None => self.http.get(target.url),
            };
            request = request.header(ACCEPT, SSE);
            request = with_session(request, &session);
            if let Some(last) = last_event_id {
                request = request.header("last-event-id", last);
            }
            let response = request.send().await.map_err(unreachable)?;
            let status = response.status();
            if status.is_success() && is_event_stream(&response) {
                Ok(Some(response))
            } else if status.is_client_error() {
                debug!(url = %target.url, %status, "upstream offers no GET stream");
                Ok(None)
            } else {
                Err(UpstreamError::Status(status.as_u16()))
            }
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| UpstreamError::Timeout(self.timeout))?
    }

    /// The session in the slot, opened if needed (for capabilities).
    pub(crate) async fn established(&self, target: Target<'_>) -> Result<Arc<UpstreamSession>, UpstreamError> {
        tokio::time::timeout(self.timeout, self.session(target, None))
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
    }

    /// POSTs `body` on the target's session, opening it first if needed and once more if the
    /// upstream says it forgot it (404). Returns the successful response, unread.
    async fn post_on_session(&self, target: Target<'_>, body: Bytes) -> Result<reqwest::Response, UpstreamError> {
        let session = self.session(target, None).await?;
        if session.is_modern() {
            // No session to lose: the message goes in 2026-07-28 form, once.
            let (body, headers) = crate::modern::upstream_message(&session, &body).map_err(UpstreamError::Protocol)?;
            return self.post_with(target.url, Some(&session), body, headers).await;
        }
        let body = crate::modern::strip_private(body);
        match self.post(target.url, Some(&session), body.clone()).await {
            Err(UpstreamError::SessionExpired) => {
                let session = self.session(target, Some(&session)).await?;
                self.post(target.url, Some(&session), body).await
            }
            other => other,
        }
    }

    /// The session in the slot, opening one if there is none, if it is for another URL, or if it is
    /// `stale` (the upstream said it no longer knows it).
    async fn session(
        &self,
        target: Target<'_>,
        stale: Option<&Arc<UpstreamSession>>,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        let mut current = target.slot.lock().await;
        if let Some(existing) = current.as_ref()
            && existing.url == target.url
            && !stale.is_some_and(|s| Arc::ptr_eq(s, existing))
        {
            return Ok(Arc::clone(existing));
        }
        // A 2026-07-28 upstream (by its `server/discover` answer) needs no handshake.
        let fresh = match self.probe(target.url).await? {
            Some(modern) => Arc::new(modern),
            None => Arc::new(self.initialize(target.url, target.capabilities).await?),
        };
        *current = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    async fn initialize(&self, url: &str, capabilities: &Value) -> Result<UpstreamSession, UpstreamError> {
        let params = json!({
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": capabilities,
            "clientInfo": { "name": "gatehouse", "version": VERSION },
        });
        let id = Value::from(self.next_id.fetch_add(1, Ordering::Relaxed));
        let hop = crate::telemetry::Hop::start("initialize", url, Some(&id), Some(&params));
        let body = encode(Some(&id), "initialize", hop.params(Some(&params)))?;
        let (session_id, mut message) = hop
            .run(async {
                let response = self.post(url, None, body).await?;
                let session_id =
                    response.headers().get(&MCP_SESSION_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
                Ok((session_id, read_answer(response, &id).await?))
            })
            .await?;
        if let Some(error) = message.get("error") {
            let why = error.get("message").and_then(Value::as_str).unwrap_or("no reason given");
            return Err(UpstreamError::Protocol(format!("it refused initialize: {why}")));
        }
        let version =
            message.pointer("/result/protocolVersion").and_then(Value::as_str).unwrap_or(LATEST_PROTOCOL_VERSION);
        let version = version.to_owned();
        let capabilities = message.pointer_mut("/result/capabilities").map(Value::take).unwrap_or_else(|| json!({}));
        let session = UpstreamSession {
            url: url.to_owned(),
            session_id,
            protocol_version: version,
            capabilities,
            tool_headers: Default::default(),
        };
        let hop = crate::telemetry::Hop::start("notifications/initialized", url, None, None);
        let body = encode(None, "notifications/initialized", hop.params(None))?;
        hop.run(self.post(url, Some(&session), body)).await?;
        Ok(session)
    }

    /// One POST with the MCP headers; statuses other than 2xx become errors (404 on a session:
    /// [`UpstreamError::SessionExpired`]).
    async fn post(
        &self,
        url: &str,
        session: Option<&UpstreamSession>,
        body: Bytes,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.post_with(url, session, body, http::HeaderMap::new()).await
    }

    /// [`Upstreams::post`] with `extra` headers (a 2026-07-28 request's mirrored headers).
    async fn post_with(
        &self,
        url: &str,
        session: Option<&UpstreamSession>,
        body: Bytes,
        extra: http::HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        let request = match endpoint(url) {
            Some(parsed) => self.http.post(parsed),
            // Unparsable: reqwest reports it as before.
            None => self.http.post(url),
        };
        let mut request = request.header(CONTENT_TYPE, JSON).header(ACCEPT, JSON_OR_SSE).body(body);
        if let Some(s) = session {
            request = with_session(request, s);
        }
        if !extra.is_empty() {
            request = request.headers(extra);
        }
        request = crate::telemetry::propagate(request, session.and_then(|s| s.session_id.as_deref()));
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND && session.is_some_and(|s| s.session_id.is_some()) {
            return Err(UpstreamError::SessionExpired);
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        Ok(response)
    }

    /// The `server/discover` probe of the upstream at `url`, from the verdict cache while it is
    /// fresh: `Some` session (no handshake, no id) for a 2026-07-28 server, `None` for any other
    /// answer (then `initialize` follows, as before). A network failure is not a verdict: it fails.
    async fn probe(&self, url: &str) -> Result<Option<UpstreamSession>, UpstreamError> {
        if let Some(verdict) = self.verdicts.get(url) {
            return Ok(verdict.map(|capabilities| crate::modern::upstream_session(url, capabilities)));
        }
        let id = Value::from(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (body, headers) = crate::modern::discover_request(&id).map_err(UpstreamError::Protocol)?;
        let hop = crate::telemetry::Hop::start("server/discover", url, Some(&id), None);
        let response = hop.run(self.post_with(url, None, body, headers)).await;
        let answer = match response {
            Ok(response) => read_answer(response, &id).await.ok(),
            Err(UpstreamError::Unreachable(why)) => return Err(UpstreamError::Unreachable(why)),
            Err(_) => None,
        };
        let verdict = crate::modern::verdict(answer.as_ref());
        debug!(url, modern = verdict.0.is_some(), "server/discover probe");
        self.verdicts.put(url, verdict.0.clone(), verdict.1);
        Ok(verdict.0.map(|capabilities| crate::modern::upstream_session(url, capabilities)))
    }

    /// Ends an upstream session (HTTP DELETE), best effort.
    pub(crate) async fn delete(&self, session: &UpstreamSession) {
        let Some(sid) = &session.session_id else { return };
        let result = self
            .http
            .delete(&session.url)
            .header(MCP_SESSION_ID, sid)
            .header(MCP_PROTOCOL_VERSION, &session.protocol_version)
            .timeout(self.timeout)
            .send()
            .await;
        if let Err(e) = result {
            debug!(url = %session.url, "could not end an upstream session: {}", crate::bundles::describe(&e));
        }
    }
}

fn with_session(mut request: reqwest::RequestBuilder, session: &UpstreamSession) -> reqwest::RequestBuilder {
    if let Some(sid) = &session.session_id {
        request = request.header(MCP_SESSION_ID, sid);
    }
    // A supported version is a `&'static str`: no copy. Anything else is passed as it is (reqwest
    // refuses an invalid one, as before).
    match crate::SUPPORTED_PROTOCOL_VERSIONS.iter().find(|v| **v == session.protocol_version) {
        Some(version) => request.header(MCP_PROTOCOL_VERSION, HeaderValue::from_static(version)),
        None => request.header(MCP_PROTOCOL_VERSION, &session.protocol_version),
    }
}

/// `url` parsed, from a small per-thread cache: an upstream's URL is parsed once per runtime thread
/// instead of on every request. `None` if it does not parse (the caller then lets reqwest report it).
fn endpoint(url: &str) -> Option<reqwest::Url> {
    thread_local! {
        static PARSED: RefCell<Vec<(Box<str>, reqwest::Url)>> = const { RefCell::new(Vec::new()) };
    }
    PARSED.with_borrow_mut(|cache| {
        if let Some((_, parsed)) = cache.iter().find(|(s, _)| **s == *url) {
            return Some(parsed.clone());
        }
        let parsed = reqwest::Url::parse(url).ok()?;
        if cache.len() >= MAX_PARSED_URLS {
            cache.remove(0);
        }
        cache.push((url.into(), parsed.clone()));
        Some(parsed)
    })
}

fn encode(id: Option<&Value>, method: &str, params: Option<&Value>) -> Result<Bytes, UpstreamError> {
    // Sized for a typical request, so the buffer is not grown step by step.
    let mut body = Vec::with_capacity(512);
    serde_json::to_writer(&mut body, &Outgoing { jsonrpc: "2.0", id, method, params })
        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    Ok(Bytes::from(body))
}

/// True if the response is `text/event-stream`.
pub(crate) fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/event-stream"))
}

/// Reads a JSON or SSE answer (bounded) until the response to request `id`.
async fn read_answer(response: reqwest::Response, id: &Value) -> Result<Value, UpstreamError> {
    if is_event_stream(&response) { read_sse(response, id).await } else { read_json(response, id).await }
}

fn unreachable(e: reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(crate::bundles::describe(&e.without_url()))
}

/// Reads a JSON body (bounded) and picks the response to request `id` out of it.
async fn read_json(mut response: reqwest::Response, id: &Value) -> Result<Value, UpstreamError> {
    // A small answer usually arrives as one chunk: parse it in place, copying only when there are more.
    let mut first: Option<Bytes> = None;
    let mut joined = Vec::new();
    let mut size = 0;
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        size += chunk.len();
        if size > MAX_ANSWER_BYTES {
            return Err(UpstreamError::Protocol(format!("answer larger than {MAX_ANSWER_BYTES} bytes")));
        }
        if first.is_none() && joined.is_empty() {
            first = Some(chunk);
            continue;
        }
        if let Some(first) = first.take() {
            joined.reserve(size);
            joined.extend_from_slice(&first);
        }
        joined.extend_from_slice(&chunk);
    }
    let body: &[u8] = first.as_deref().unwrap_or(&joined);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| UpstreamError::Protocol(format!("invalid JSON: {e}")))?;
    response_to(value, id).ok_or_else(|| UpstreamError::Protocol(format!("no response to request {id}")))
}

/// Reads an event stream until the response to request `id`. Other messages are skipped: this is
/// only used for the gateway's own requests (lists, initialize), never for a client's.
async fn read_sse(mut response: reqwest::Response, id: &Value) -> Result<Value, UpstreamError> {
    let mut parser = SseParser::new(MAX_ANSWER_BYTES);
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        let events = parser
            .push(&chunk)
            .map_err(|_| UpstreamError::Protocol(format!("event larger than {MAX_ANSWER_BYTES} bytes")))?;
        for event in events {
            if let Some(found) = serde_json::from_str(&event.data).ok().and_then(|v| response_to(v, id)) {
                return Ok(found);
            }
        }
    }
    Err(UpstreamError::Protocol(format!("the event stream ended before the response to request {id}")))
}

/// The JSON-RPC response with this id in `value` (a message or an array of them).
fn response_to(value: Value, id: &Value) -> Option<Value> {
    match value {
        Value::Array(items) => items.into_iter().find_map(|item| response_to(item, id)),
        Value::Object(ref o) if o.get("id") == Some(id) && (o.contains_key("result") || o.contains_key("error")) => {
            Some(value)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_matching_response() {
        let note = json!({"jsonrpc":"2.0","method":"notifications/progress"});
        let other = json!({"jsonrpc":"2.0","id":6,"result":{}});
        let mine = json!({"jsonrpc":"2.0","id":7,"result":{"ok":true}});
        let seven = json!(7);
        assert_eq!(response_to(mine.clone(), &seven), Some(mine.clone()));
        assert_eq!(response_to(json!([note.clone(), other.clone(), mine.clone()]), &seven), Some(mine));
        assert_eq!(response_to(note, &seven), None);
        assert_eq!(response_to(other, &seven), None);
    }
}
