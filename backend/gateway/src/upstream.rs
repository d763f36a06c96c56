//! The gateway as an MCP client of upstream servers (Streamable HTTP, 2025-11-25 era).
//!
//! Each client session gets its own upstream session per upstream server, opened on first use:
//! `initialize`, remember the upstream's `Mcp-Session-Id`, `notifications/initialized`; after that every
//! request carries `Mcp-Session-Id` and `MCP-Protocol-Version`. An upstream that answers 404 has
//! forgotten the session: it is opened again and the request retried once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http::HeaderName;
use http::header::{ACCEPT, CONTENT_TYPE};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::debug;

use crate::session::UpstreamSlot;
use crate::sse::SseParser;
use crate::{LATEST_PROTOCOL_VERSION, VERSION};

/// The session header of Streamable HTTP.
pub(crate) const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// The protocol version header of Streamable HTTP.
pub(crate) const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// Largest upstream answer (JSON body or one SSE event) the gateway buffers.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// An established upstream session.
#[derive(Debug)]
pub(crate) struct UpstreamSession {
    /// The endpoint it was opened on (a new bundle may move the server).
    pub url: String,
    /// The upstream's `Mcp-Session-Id`, if it uses sessions.
    pub session_id: Option<String>,
    /// The protocol version the upstream chose.
    pub protocol_version: String,
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

/// The MCP client side. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Upstreams {
    http: reqwest::Client,
    timeout: Duration,
    /// Request ids the gateway uses upstream; client ids are restored on the way back, so ids of
    /// different clients and the gateway's own requests never mix.
    next_id: Arc<AtomicI64>,
}

/// A request as sent upstream, serialised from borrowed parts so a retry needs no copy.
#[derive(Serialize)]
struct Outgoing<'a> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a Value>,
}

/// What came back from one POST.
struct Reply {
    /// The JSON-RPC response (absent for notifications).
    message: Option<Value>,
    /// The `Mcp-Session-Id` response header.
    session_id: Option<String>,
}

impl Upstreams {
    /// A client that bounds every exchange by `timeout`.
    pub(crate) fn new(http: reqwest::Client, timeout: Duration) -> Self {
        Self { http, timeout, next_id: Arc::new(AtomicI64::new(1)) }
    }

    /// Sends request `method` to the upstream at `url` on the session kept in `slot` (opened or
    /// re-opened as needed). Returns the upstream's JSON-RPC response object, with the gateway's id.
    pub(crate) async fn request(
        &self,
        slot: &UpstreamSlot,
        url: &str,
        method: &str,
        params: &Value,
    ) -> Result<Value, UpstreamError> {
        let session = self.session(slot, url, None).await?;
        let reply = match self.exchange(url, Some(&session), method, Some(params)).await {
            Err(UpstreamError::SessionExpired) => {
                let session = self.session(slot, url, Some(&session)).await?;
                self.exchange(url, Some(&session), method, Some(params)).await?
            }
            other => other?,
        };
        reply.message.ok_or_else(|| UpstreamError::Protocol("no response".into()))
    }

    /// The session in `slot`, opening one if there is none, if it is for another URL, or if it is
    /// `stale` (the upstream said it no longer knows it).
    async fn session(
        &self,
        slot: &UpstreamSlot,
        url: &str,
        stale: Option<&Arc<UpstreamSession>>,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        let mut current = slot.lock().await;
        if let Some(existing) = current.as_ref()
            && existing.url == url
            && !stale.is_some_and(|s| Arc::ptr_eq(s, existing))
        {
            return Ok(Arc::clone(existing));
        }
        let fresh = Arc::new(self.initialize(url).await?);
        *current = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    async fn initialize(&self, url: &str) -> Result<UpstreamSession, UpstreamError> {
        let params = json!({
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "gatehouse", "version": VERSION },
        });
        let reply = self.exchange(url, None, "initialize", Some(&params)).await?;
        let message = reply.message.unwrap_or_default();
        if let Some(error) = message.get("error") {
            let why = error.get("message").and_then(Value::as_str).unwrap_or("no reason given");
            return Err(UpstreamError::Protocol(format!("it refused initialize: {why}")));
        }
        let version =
            message.pointer("/result/protocolVersion").and_then(Value::as_str).unwrap_or(LATEST_PROTOCOL_VERSION);
        let session =
            UpstreamSession { url: url.to_owned(), session_id: reply.session_id, protocol_version: version.to_owned() };
        self.exchange(url, Some(&session), "notifications/initialized", None).await?;
        Ok(session)
    }

    /// One POST. A method starting with `notifications/` is sent without id and expects no response.
    async fn exchange(
        &self,
        url: &str,
        session: Option<&UpstreamSession>,
        method: &str,
        params: Option<&Value>,
    ) -> Result<Reply, UpstreamError> {
        let id = (!method.starts_with("notifications/")).then(|| self.next_id.fetch_add(1, Ordering::Relaxed));
        let body = serde_json::to_vec(&Outgoing { jsonrpc: "2.0", id, method, params })
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let work = async {
            let mut request = self
                .http
                .post(url)
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "application/json, text/event-stream")
                .body(body);
            if let Some(s) = session {
                if let Some(sid) = &s.session_id {
                    request = request.header(MCP_SESSION_ID, sid);
                }
                request = request.header(MCP_PROTOCOL_VERSION, &s.protocol_version);
            }
            let response = request.send().await.map_err(unreachable)?;
            let status = response.status();
            let session_id = response.headers().get(&MCP_SESSION_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if status == reqwest::StatusCode::NOT_FOUND && session.is_some_and(|s| s.session_id.is_some()) {
                return Err(UpstreamError::SessionExpired);
            }
            if !status.is_success() {
                return Err(UpstreamError::Status(status.as_u16()));
            }
            let Some(id) = id else { return Ok(Reply { message: None, session_id }) };
            let sse = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
            let message = if sse { read_sse(response, id).await? } else { read_json(response, id).await? };
            Ok(Reply { message: Some(message), session_id })
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| UpstreamError::Timeout(self.timeout))?
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

fn unreachable(e: reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(crate::bundles::describe(&e.without_url()))
}

/// Reads a JSON body (bounded) and picks the response to request `id` out of it.
async fn read_json(mut response: reqwest::Response, id: i64) -> Result<Value, UpstreamError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(UpstreamError::Protocol(format!("answer larger than {MAX_ANSWER_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol(format!("invalid JSON: {e}")))?;
    response_to(value, id).ok_or_else(|| UpstreamError::Protocol(format!("no response to request {id}")))
}

/// Reads an event stream until the response to request `id`. Other messages (progress and log
/// notifications, server requests) are skipped for now.
async fn read_sse(mut response: reqwest::Response, id: i64) -> Result<Value, UpstreamError> {
    let mut parser = SseParser::new(MAX_ANSWER_BYTES);
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        let events = parser
            .push(&chunk)
            .map_err(|_| UpstreamError::Protocol(format!("event larger than {MAX_ANSWER_BYTES} bytes")))?;
        for data in events {
            if let Some(found) = serde_json::from_str(&data).ok().and_then(|v| response_to(v, id)) {
                return Ok(found);
            }
        }
    }
    Err(UpstreamError::Protocol(format!("the event stream ended before the response to request {id}")))
}

/// The JSON-RPC response with this id in `value` (a message or an array of them).
fn response_to(value: Value, id: i64) -> Option<Value> {
    match value {
        Value::Array(items) => items.into_iter().find_map(|item| response_to(item, id)),
        Value::Object(ref o)
            if o.get("id").and_then(Value::as_i64) == Some(id)
                && (o.contains_key("result") || o.contains_key("error")) =>
        {
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
        assert_eq!(response_to(mine.clone(), 7), Some(mine.clone()));
        assert_eq!(response_to(json!([note.clone(), other.clone(), mine.clone()]), 7), Some(mine));
        assert_eq!(response_to(note, 7), None);
        assert_eq!(response_to(other, 7), None);
    }
}
