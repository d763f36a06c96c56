//! Relaying messages between a client session and its upstream sessions: the id, progress-token and
//! event-id mappings, and the tasks that stream upstream events through to the client.
//!
//! All mappings are stateless encodings, so an answer can be mapped back wherever it shows up (on the
//! POST stream, or on a GET stream after the client resumed):
//!
//! * a client request goes upstream with id `gh:n:5` (client id 5) or `gh:s:abc` (client id "abc");
//!   the gateway's own requests use plain numbers, so the two never mix;
//! * a server request (or progress token) of upstream number `i` reaches the client as `"{i}:n:7"` /
//!   `"{i}:s:xyz"`, so ids of different upstreams cannot collide and the client's answer finds its
//!   upstream;
//! * an upstream event id `e` of upstream `i` reaches the client as `"{i}.{e}"`, so a client's
//!   `Last-Event-ID` says which upstream to resume and from where.
//!
//! `i` is the upstream's position in the virtual server's list.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use gatehouse_core::ErrorCode;
use gatehouse_core::jsonrpc::{Id, UPSTREAM_ERROR};
use serde_json::{Number, Value, json};
use tokio::sync::mpsc;
use tracing::debug;

use gatehouse_bridge::sse::SseParser;

/// Largest upstream event relayed.
const MAX_EVENT_BYTES: usize = 16 << 20;
/// Events buffered between an upstream and a slow client before the upstream is read no further.
const CHANNEL_DEPTH: usize = 32;
/// How often a GET stream carries a comment, so idle proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

const CLIENT_ID_PREFIX: &str = "gh:";

/// `n:5` / `s:abc` for a JSON-RPC id or progress token (number or string); `None` for anything else.
fn tag(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(format!("n:{n}")),
        Value::String(s) => Some(format!("s:{s}")),
        _ => None,
    }
}

fn untag(tagged: &str) -> Option<Value> {
    if let Some(n) = tagged.strip_prefix("n:") {
        return serde_json::from_str::<Number>(n).ok().map(Value::Number);
    }
    tagged.strip_prefix("s:").map(|s| Value::String(s.to_owned()))
}

/// The id a client request carries upstream.
pub(crate) fn upstream_request_id(id: &Id) -> Value {
    Value::String(match id {
        Id::Num(n) => format!("{CLIENT_ID_PREFIX}n:{n}"),
        Id::Str(s) => format!("{CLIENT_ID_PREFIX}s:{s}"),
    })
}

/// The client's id back from an upstream response id; `None` for the gateway's own requests.
pub(crate) fn client_request_id(id: &Value) -> Option<Id> {
    let tagged = id.as_str()?.strip_prefix(CLIENT_ID_PREFIX)?;
    match untag(tagged)? {
        Value::Number(n) => n.as_i64().map(Id::Num),
        Value::String(s) => Some(Id::Str(s)),
        _ => None,
    }
}

/// A server-side id (request id or progress token) of upstream `index`, as the client sees it.
pub(crate) fn to_client(index: usize, id: &Value) -> Option<Value> {
    tag(id).map(|t| Value::String(format!("{index}:{t}")))
}

/// The upstream and its own id back from an id made by [`to_client`].
pub(crate) fn from_client(id: &Value) -> Option<(usize, Value)> {
    let (index, tagged) = id.as_str()?.split_once(':')?;
    Some((index.parse().ok()?, untag(tagged)?))
}

/// The client-facing event id of upstream `index`'s event `id`.
pub(crate) fn event_id(index: usize, id: &str) -> String {
    format!("{index}.{id}")
}

/// The upstream and its event id back from a client's `Last-Event-ID`.
pub(crate) fn parse_event_id(id: &str) -> Option<(usize, &str)> {
    let (index, rest) = id.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

/// Rewrites a message from upstream `index` for the client. Returns it with, for a response, the
/// client's id it answers; `None` when it must not reach the client (the answer to one of the
/// gateway's own requests, or not a JSON-RPC object).
pub(crate) fn from_upstream(index: usize, mut message: Value) -> Option<(Value, Option<Id>)> {
    let object = message.as_object_mut()?;
    if object.contains_key("method") {
        if let Some(id) = object.get_mut("id") {
            // A server request: its id and progress token get the upstream's mark.
            *id = to_client(index, id)?;
            if let Some(token) = object.get_mut("params").and_then(|p| p.pointer_mut("/_meta/progressToken"))
                && let Some(mapped) = to_client(index, token)
            {
                *token = mapped;
            }
        } else if object.get("method").and_then(Value::as_str) == Some("notifications/cancelled")
            && let Some(request) = object.get_mut("params").and_then(|p| p.get_mut("requestId"))
            && let Some(mapped) = to_client(index, request)
        {
            // The upstream cancels one of its own requests to the client.
            *request = mapped;
        }
        return Some((message, None));
    }
    let id = client_request_id(object.get("id")?)?;
    object.insert("id".to_owned(), json!(id));
    Some((message, Some(id)))
}

/// One SSE event, framed.
pub(crate) fn frame(id: Option<&str>, data: &str, retry: Option<u64>) -> Bytes {
    let mut out = String::with_capacity(data.len() + id.map_or(0, str::len) + 24);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    if let Some(retry) = retry {
        out.push_str(&format!("retry: {retry}\n"));
    }
    out.push_str("data: ");
    out.push_str(data);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// The client side of a relayed stream.
pub(crate) fn channel() -> (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
    mpsc::channel(CHANNEL_DEPTH)
}

/// An SSE response whose events come from `rx`. It ends when every sender is gone; when the client
/// goes away the senders see the channel closed.
pub(crate) fn sse_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// How a relayed POST stream ended.
#[derive(Debug)]
pub(crate) enum PostEnd {
    /// The response reached the client; `Some(message)` if it was a JSON-RPC error.
    Answered(Option<String>),
    /// The client went away first.
    ClientGone,
    /// The upstream closed a resumable stream before the response; the client may resume it with GET.
    Suspended,
    /// The upstream failed; the client got a -32004 error with this message.
    Failed(String),
}

/// Relays the event stream `upstream` (upstream `index`'s answer to client request `id`) to `tx`
/// until the response to `id`, the end, a failure, or the client's departure. Silence longer than
/// `timeout` counts as a failure. With `server_requests`, requests of the upstream (sampling,
/// elicitation, roots) are handed to it instead of reaching the client (a 2026-07-28 client, which
/// cannot answer them).
#[allow(clippy::too_many_arguments)] // the relay's whole context
pub(crate) async fn pump_post(
    mut upstream: reqwest::Response,
    index: usize,
    server: &str,
    id: &Id,
    timeout: Duration,
    tx: &mpsc::Sender<Bytes>,
    on_answer: &mut (dyn FnMut(&mut Value) + Send),
    server_requests: Option<&(dyn Fn(&Value) + Send + Sync)>,
) -> PostEnd {
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    // Once the upstream gives event ids, a stream that ends early can be resumed by the client.
    let mut resumable = false;
    loop {
        let chunk = tokio::select! {
            () = tx.closed() => return PostEnd::ClientGone,
            chunk = tokio::time::timeout(timeout, upstream.chunk()) => chunk,
        };
        let bytes = match chunk {
            Err(_) => return fail(tx, id, server, format!("it sent nothing for {timeout:?}")).await,
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) | Ok(Err(_)) if resumable => return PostEnd::Suspended,
            Ok(Ok(None)) => return fail(tx, id, server, "its event stream ended before the response".into()).await,
            Ok(Err(e)) => {
                let why = format!("its event stream broke ({})", crate::bundles::describe(&e.without_url()));
                return fail(tx, id, server, why).await;
            }
        };
        let Ok(events) = parser.push(&bytes) else {
            return fail(tx, id, server, format!("it sent an event larger than {MAX_EVENT_BYTES} bytes")).await;
        };
        for event in events {
            let event_id = event.id.as_deref().map(|e| event_id(index, e));
            resumable |= event_id.is_some();
            if event.data.is_empty() {
                // A priming event (id, maybe retry, no message): relayed so the client can resume.
                if event_id.is_some() && tx.send(frame(event_id.as_deref(), "", event.retry)).await.is_err() {
                    return PostEnd::ClientGone;
                }
                continue;
            }
            let parsed: Option<Value> = serde_json::from_str(&event.data).ok();
            if let (Some(handle), Some(request)) = (server_requests, parsed.as_ref())
                && request.get("method").is_some()
                && request.get("id").is_some()
            {
                handle(request);
                continue;
            }
            let Some((mut message, answers)) = parsed.and_then(|m| from_upstream(index, m)) else {
                debug!(server, "skipping an upstream event that is not for the client");
                continue;
            };
            if answers.as_ref() == Some(id) {
                // The answer itself: screened (data classification) before the client sees it.
                on_answer(&mut message);
            }
            if tx.send(frame(event_id.as_deref(), &message.to_string(), event.retry)).await.is_err() {
                return PostEnd::ClientGone;
            }
            if answers.as_ref() == Some(id) {
                let error = message.pointer("/error/message").map(|m| m.as_str().unwrap_or("no message").to_owned());
                return PostEnd::Answered(error);
            }
        }
    }
}

/// Ends a POST stream with a -32004 error response for the client.
async fn fail(tx: &mpsc::Sender<Bytes>, id: &Id, server: &str, why: String) -> PostEnd {
    let message = format!("upstream server '{server}' is unavailable: {why}");
    let body = upstream_error(Some(id), server, &message);
    // The client may be gone already; nothing else to do then.
    let _ = tx.send(frame(None, &body.to_string(), None)).await;
    PostEnd::Failed(message)
}

/// The -32004 JSON-RPC error naming upstream `server`.
pub(crate) fn upstream_error(id: Option<&Id>, server: &str, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": UPSTREAM_ERROR,
            "message": message,
            "data": { "code": ErrorCode::UpstreamUnavailable.as_str(), "server": server },
        },
    })
}

/// Relays the GET streams of several upstreams (`(index, response)`) to `tx` until all of them end
/// or the client goes away, with a keep-alive comment every 15 s.
pub(crate) async fn pump_get(streams: Vec<(usize, reqwest::Response)>, tx: mpsc::Sender<Bytes>) {
    let mut pumps: FuturesUnordered<_> =
        streams.into_iter().map(|(index, response)| pump_one(index, response, tx.clone())).collect();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    loop {
        tokio::select! {
            () = tx.closed() => return,
            done = pumps.next() => if done.is_none() { return },
            _ = tick.tick() => if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() { return },
        }
    }
}

/// One upstream's GET stream, relayed until it ends (a dropped client ends it at the next send).
async fn pump_one(index: usize, mut upstream: reqwest::Response, tx: mpsc::Sender<Bytes>) {
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    while let Ok(Some(bytes)) = upstream.chunk().await {
        let Ok(events) = parser.push(&bytes) else {
            debug!(index, "an upstream GET stream sent an oversized event; dropping the stream");
            return;
        };
        for event in events {
            let event_id = event.id.as_deref().map(|e| event_id(index, e));
            let data = if event.data.is_empty() {
                if event_id.is_none() {
                    continue;
                }
                String::new()
            } else {
                match serde_json::from_str(&event.data).ok().and_then(|m| from_upstream(index, m)) {
                    Some((message, _)) => message.to_string(),
                    None => continue,
                }
            };
            if tx.send(frame(event_id.as_deref(), &data, event.retry)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_round_trip_through_upstream_ids() {
        for id in [Id::Num(0), Id::Num(-7), Id::Num(i64::MAX), Id::Str(String::new()), Id::Str("a:b.c".into())] {
            let upstream = upstream_request_id(&id);
            assert_eq!(client_request_id(&upstream), Some(id));
        }
        assert_eq!(client_request_id(&json!(5)), None, "the gateway's own ids are not the client's");
        assert_eq!(client_request_id(&json!("5")), None);
        assert_eq!(client_request_id(&json!("gh:x:1")), None);
    }

    #[test]
    fn server_ids_are_marked_with_their_upstream() {
        for (index, id) in [(0, json!(1)), (1, json!(1)), (12, json!("x:y")), (3, json!(1.5)), (4, json!(""))] {
            let mapped = to_client(index, &id).unwrap();
            assert_eq!(from_client(&mapped), Some((index, id)));
        }
        assert_ne!(to_client(0, &json!(1)), to_client(1, &json!(1)));
        assert_ne!(to_client(0, &json!(1)), to_client(0, &json!("1")));
        assert_eq!(to_client(0, &json!(null)), None);
        assert_eq!(from_client(&json!("nope")), None);
        assert_eq!(from_client(&json!("x:n:1")), None);
        assert_eq!(from_client(&json!(7)), None);
    }

    #[test]
    fn event_ids_name_the_upstream() {
        let id = event_id(2, "stream_1.5_abc");
        assert_eq!(parse_event_id(&id), Some((2, "stream_1.5_abc")));
        assert_eq!(parse_event_id("abc"), None);
        assert_eq!(parse_event_id("x.1"), None);
    }

    #[test]
    fn upstream_messages_are_rewritten() {
        let request = json!({"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage",
            "params": {"_meta": {"progressToken": 9}, "maxTokens": 1}});
        let (request, answers) = from_upstream(1, request).unwrap();
        assert_eq!(answers, None);
        assert_eq!(request["id"], "1:n:3");
        assert_eq!(request["params"]["_meta"]["progressToken"], "1:n:9");
        assert_eq!(request["params"]["maxTokens"], 1);

        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "t"}});
        assert_eq!(from_upstream(1, progress.clone()).unwrap().0, progress, "the client's own token");
        let cancelled = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}});
        assert_eq!(from_upstream(1, cancelled).unwrap().0["params"]["requestId"], "1:n:3");

        let response = json!({"jsonrpc": "2.0", "id": "gh:s:abc", "result": {}});
        let (response, answers) = from_upstream(1, response).unwrap();
        assert_eq!((response["id"].clone(), answers), (json!("abc"), Some(Id::Str("abc".into()))));
        assert!(from_upstream(1, json!({"jsonrpc": "2.0", "id": 4, "result": {}})).is_none());
        assert!(from_upstream(1, json!([1])).is_none());
    }

    #[test]
    fn frames() {
        assert_eq!(frame(Some("0.1"), "{}", None), Bytes::from_static(b"id: 0.1\ndata: {}\n\n"));
        assert_eq!(frame(None, "", Some(500)), Bytes::from_static(b"retry: 500\ndata: \n\n"));
    }
}
