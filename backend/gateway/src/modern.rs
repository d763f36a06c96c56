//! MCP 2026-07-28 clients (`docs/decisions/0018-protocol-2026-07-28.md`).
//!
//! Such a client has no handshake and no session: every request carries
//! `params._meta["io.modelcontextprotocol/protocolVersion" | "…/clientCapabilities" | "…/clientInfo"]`
//! and mirrors parts of its body in headers (`gatehouse_core::headers`). The gateway answers
//! `server/discover` itself and runs every other request through the same pipeline as a 2025-era
//! client's (authentication, policy, shaping, data rules, rate limits, audit, spans), over a
//! **pooled** [`Session`]: one per tenant, virtual server, user and client application on this
//! worker, never handed to the client, holding the upstream sessions the worker opens on demand.
//!
//! Order of checks, after admission and the body (as for every POST): notification (202, nothing
//! else to do) or response (400 -32600) → `params._meta` envelope (400 -32602 naming the key) →
//! standard headers against the body (400 -32020) → version (400 -32022 with `supported`) → method
//! (unknown: 404 -32601) → `Mcp-Param-{X}` of `tools/call` against the tool's schema (400 -32020) →
//! the shared pipeline. The answers get `resultType`, and list results and `resources/read` get
//! `ttlMs` and `cacheScope: "private"` (what the gateway answers depends on who asks).
//! `subscriptions/listen` fans in the upstreams' list-change notices.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::join_all;
use gatehouse_bundle::TenantPolicy;
use gatehouse_bundle::policy::{Principal, VirtualServerRoute};
use gatehouse_core::ErrorCode;
use gatehouse_core::audit::Outcome;
use gatehouse_core::headers::{self, META_PROTOCOL_VERSION};
use gatehouse_core::jsonrpc::{INVALID_PARAMS, INVALID_REQUEST, Id, METHOD_NOT_FOUND, Message, error_response};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::mcp::{self, Record, rpc};
use crate::session::Session;
use crate::upstream::{MCP_PROTOCOL_VERSION, Target};
use crate::{Gateway, SUPPORTED_PROTOCOL_VERSIONS, VERSION};

/// The per-request protocol versions (no handshake) the gateway speaks, newest first.
pub(crate) const MODERN_PROTOCOL_VERSIONS: [&str; 1] = ["2026-07-28"];
/// `params._meta` key of the client's capabilities (required on every 2026-07-28 request).
pub(crate) const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `params._meta` key of the client's name and version (optional).
pub(crate) const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `params._meta` key of the log level a client asks for on one request.
pub(crate) const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// Gateway-private `_meta` key carrying a 2026-07-28 client's relayable capabilities from the client
/// side to the upstream side of the gateway (never sent anywhere as such).
const PRIVATE_CLIENT_CAPABILITIES: &str = "io.gatehouse/clientCapabilities";
/// The client capabilities passed on to a 2026-07-28 upstream: what its `input_required` results may
/// ask of the client.
const RELAYED_TO_MODERN_UPSTREAMS: [&str; 3] = ["sampling", "elicitation", "roots"];
/// `_meta` key of a result carrying the server's name and version.
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// How long a client may reuse a list, `resources/read` or `server/discover` answer: not at all.
/// What the gateway answers depends on a policy that a new bundle can change at any moment (a
/// revoked grant must hide a tool at once), so every answer is immediately stale.
pub(crate) const TTL_MS: u64 = 0;
/// Methods whose 2026-07-28 results carry `ttlMs` and `cacheScope`.
const CACHEABLE: [&str; 6] =
    ["server/discover", "tools/list", "resources/list", "resources/templates/list", "prompts/list", "resources/read"];

/// Every version the gateway speaks with clients, for `server/discover` and -32022 answers.
pub(crate) fn all_supported_versions() -> Vec<&'static str> {
    MODERN_PROTOCOL_VERSIONS.iter().chain(SUPPORTED_PROTOCOL_VERSIONS.iter()).copied().collect()
}

/// True if a POST comes from a 2026-07-28 (or later) client: `server/discover`, a `_meta` protocol
/// version that is not one of the handshake era's, or an `MCP-Protocol-Version` header naming a
/// per-request version. Everything else is handled as 2025-era traffic, exactly as before.
pub(crate) fn is_modern(headers: &HeaderMap, message: &Message) -> bool {
    if message.method.as_deref() == Some("server/discover") {
        return true;
    }
    let meta = message.params.as_ref().and_then(|p| p.get("_meta")).and_then(|m| m.get(META_PROTOCOL_VERSION));
    if let Some(version) = meta {
        return !version.as_str().is_some_and(|v| SUPPORTED_PROTOCOL_VERSIONS.contains(&v));
    }
    header_is_modern(headers)
}

/// True if the request's `MCP-Protocol-Version` header names a per-request (2026-07-28) version.
pub(crate) fn header_is_modern(headers: &HeaderMap) -> bool {
    headers
        .get(&MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| MODERN_PROTOCOL_VERSIONS.contains(&v.trim()))
}

/// The answer to a GET or DELETE of a 2026-07-28 client: 405, the era has neither a GET stream nor
/// sessions to end.
pub(crate) fn method_not_allowed(method: &str, record: &mut Record) -> Response {
    let why = format!(
        "{method} is not part of MCP 2026-07-28 (no server-initiated stream, no sessions); send requests with POST"
    );
    record.outcome(Outcome::Invalid, why.clone());
    let mut response = crate::routes::error(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::InvalidInput, why);
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// A 2026-07-28 client's POST, after admission and parsing.
#[allow(clippy::too_many_arguments)] // the request's whole context
pub(crate) async fn handle(
    gw: &Gateway,
    policy: &Arc<TenantPolicy>,
    route: &Arc<VirtualServerRoute>,
    principal: &Principal,
    headers: &HeaderMap,
    message: Message,
    record: &mut Record,
) -> Response {
    let Some(method) = message.method.clone() else {
        let why = "MCP 2026-07-28 clients must not send JSON-RPC responses (server requests are not relayed to them)";
        record.outcome(Outcome::Invalid, why.to_owned());
        return rpc(StatusCode::BAD_REQUEST, error_response(None, INVALID_REQUEST, why, Some(ErrorCode::InvalidInput)));
    };
    let Some(id) = message.id.clone() else {
        // Client notifications have no use in this era (closing a request's stream cancels it),
        // and the revision defines no header rules for them: accepted and dropped.
        record.outcome(Outcome::Allowed, None);
        return StatusCode::ACCEPTED.into_response();
    };
    let envelope = match Envelope::read(message.params.as_ref()) {
        Ok(envelope) => envelope,
        Err(why) => {
            record.outcome(Outcome::Invalid, why.clone());
            let body = error_response(Some(&id), INVALID_PARAMS, &why, Some(ErrorCode::InvalidInput));
            return rpc(StatusCode::BAD_REQUEST, body);
        }
    };
    if let Err(mismatch) = headers::check_request_headers(headers, &message, &|_| None) {
        record.outcome(Outcome::Invalid, mismatch.to_string());
        return rpc(mismatch.status(), mismatch.to_error(Some(&id)));
    }
    let Some(version) = envelope.version.filter(|v| MODERN_PROTOCOL_VERSIONS.contains(v)) else {
        let requested =
            message.params.as_ref().and_then(|p| p.pointer("/_meta")).and_then(|m| m.get(META_PROTOCOL_VERSION));
        record.outcome(Outcome::Invalid, format!("unsupported protocol version {requested:?} in _meta"));
        return rpc(StatusCode::BAD_REQUEST, mcp::unsupported_version_error(Some(&id), requested));
    };
    if !KNOWN_METHODS.contains(&method.as_str()) {
        let why = format!("method '{method}' is not supported by this gateway in MCP {version}");
        record.outcome(Outcome::Invalid, why.clone());
        return rpc(StatusCode::NOT_FOUND, error_response(Some(&id), METHOD_NOT_FOUND, &why, None));
    }

    let session = pooled_session(gw, policy, route, principal, version, &envelope);
    record.session(&session);
    let params = message.params.clone().map(strip_envelope);

    if method == "tools/call" {
        // `Mcp-Param-{X}` headers mirror arguments the called tool's schema (as this client sees
        // it) marks with `x-mcp-header`: the tool list must be known to check them.
        let name = params.as_ref().and_then(|p| p.get("name")).and_then(Value::as_str).unwrap_or("");
        if session.tool(name).is_none() {
            // An unknown tool or a failing upstream is reported by the call itself, below.
            let _ = mcp::catalog(gw, route, &session).await;
        }
        let mapped = |tool: &str| session.tool_headers(tool);
        if let Err(mismatch) = headers::check_request_headers(headers, &message, &mapped) {
            record.outcome(Outcome::Invalid, mismatch.to_string());
            return rpc(mismatch.status(), mismatch.to_error(Some(&id)));
        }
    }

    let answer = match method.as_str() {
        "server/discover" => discover(gw, route, &session, &id, record).await,
        "tools/list" => mcp::tools_list(gw, policy, route, &session, principal, &id, record).await,
        "tools/call" => return mcp::tools_call(gw, policy, route, &session, principal, &id, params, record).await,
        "resources/list" => crate::features::resources_list(gw, route, &session, &id, record).await,
        "resources/templates/list" => crate::features::templates_list(gw, route, &session, &id, record).await,
        "prompts/list" => crate::features::prompts_list(gw, route, &session, &id, record).await,
        "resources/read" | "prompts/get" | "completion/complete" => {
            return crate::features::routed(gw, policy, route, &session, &id, &method, params, record).await;
        }
        "subscriptions/listen" => return listen(gw, route, &session, &id, params.as_ref(), record).await,
        // Only methods in KNOWN_METHODS get here.
        other => unreachable!("method {other} passed the 2026-07-28 method check"),
    };
    let mut answer = answer;
    decorate(&method, &mut answer);
    rpc(StatusCode::OK, answer)
}

/// The 2026-07-28 requests the gateway serves.
const KNOWN_METHODS: [&str; 10] = [
    "subscriptions/listen",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
];

/// What `params._meta` says about the client.
#[derive(Debug)]
struct Envelope<'a> {
    /// `None` when the version is not a string (then it is refused as unsupported).
    version: Option<&'a str>,
    client_name: Option<String>,
    client_version: Option<String>,
}

impl<'a> Envelope<'a> {
    /// Reads the envelope: `params._meta` must be an object with the protocol version and the client
    /// capabilities (an object); `clientInfo` is optional but, when present, must be an object.
    fn read(params: Option<&'a Value>) -> Result<Self, String> {
        let meta = params.and_then(|p| p.get("_meta")).and_then(Value::as_object).ok_or_else(|| {
            format!(
                "params._meta must be an object carrying '{META_PROTOCOL_VERSION}' and '{META_CLIENT_CAPABILITIES}' \
                 (MCP 2026-07-28 requests have no handshake)"
            )
        })?;
        let missing: Vec<&str> =
            [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES].into_iter().filter(|k| !meta.contains_key(*k)).collect();
        if !missing.is_empty() {
            return Err(format!("params._meta is missing '{}'", missing.join("', '")));
        }
        if !meta[META_CLIENT_CAPABILITIES].is_object() {
            return Err(format!("params._meta['{META_CLIENT_CAPABILITIES}'] must be an object"));
        }
        let info = match meta.get(META_CLIENT_INFO) {
            None | Some(Value::Null) => None,
            Some(info @ Value::Object(_)) => Some(info),
            Some(_) => return Err(format!("params._meta['{META_CLIENT_INFO}'] must be an object")),
        };
        let field = |name: &str| {
            info.and_then(|i| i.get(name))
                .and_then(Value::as_str)
                .map(|s| s.chars().take(mcp::MAX_CLIENT_INFO_CHARS).collect::<String>())
        };
        Ok(Self {
            version: meta[META_PROTOCOL_VERSION].as_str(),
            client_name: field("name"),
            client_version: field("version"),
        })
    }
}

/// The request's params without the 2026-07-28 envelope keys in `_meta`: they describe the client
/// to the gateway, not to the upstream (which the gateway speaks to in its own era and name). The
/// other `_meta` keys (progress token, trace context, ...) go upstream as sent. The client's
/// server-to-client capabilities (sampling, elicitation, roots) are kept under a gateway-private key
/// for a 2026-07-28 upstream, which may answer with `input_required` (MRTR) only to a client that
/// declared them; a 2025-era upstream never sees that key ([`strip_private`]).
fn strip_envelope(mut params: Value) -> Value {
    if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        let declared = meta.get(META_CLIENT_CAPABILITIES).and_then(Value::as_object).map(|caps| {
            caps.iter()
                .filter(|(name, _)| RELAYED_TO_MODERN_UPSTREAMS.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect::<serde_json::Map<_, _>>()
        });
        for key in [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL] {
            meta.remove(key);
        }
        if let Some(declared) = declared.filter(|d| !d.is_empty()) {
            meta.insert(PRIVATE_CLIENT_CAPABILITIES.to_owned(), Value::Object(declared));
        }
        if meta.is_empty()
            && let Some(object) = params.as_object_mut()
        {
            object.remove("_meta");
        }
    }
    params
}

/// The pooled session of this caller on this worker (made on first use): keyed by tenant, virtual
/// server, user, client application and protocol version, so upstream sessions are shared by one
/// user's requests and never across users or tenants.
fn pooled_session(
    gw: &Gateway,
    policy: &TenantPolicy,
    route: &VirtualServerRoute,
    principal: &Principal,
    version: &str,
    envelope: &Envelope<'_>,
) -> Arc<Session> {
    let tenant = policy.manifest.tenant.as_str();
    let mut digest = Sha256::new();
    for part in [
        tenant,
        route.slug.as_str(),
        principal.user_id.as_str(),
        version,
        envelope.client_name.as_deref().unwrap_or("\u{1}"),
        envelope.client_version.as_deref().unwrap_or("\u{1}"),
    ] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    // "pool:" cannot start a sealed token (base64url has no ':'); `session_of` refuses pooled
    // sessions besides.
    let key = format!("pool:{}", hex::encode(digest.finalize()));
    gw.inner().sessions.pooled(&key, || {
        Session::new_pooled(
            key.clone(),
            tenant,
            &route.slug,
            &principal.user_id,
            envelope.client_name.clone(),
            envelope.client_version.clone(),
            version,
        )
    })
}

/// `server/discover`: the versions the gateway speaks and what this virtual server offers, merged
/// from its upstreams (opened in parallel; one that cannot be reached now is left out), private to
/// the caller.
async fn discover(gw: &Gateway, route: &VirtualServerRoute, session: &Session, id: &Id, record: &mut Record) -> Value {
    let opened = join_all(route.upstreams.iter().map(|(server, url)| async move {
        let slot = session.upstream_slot(server);
        let target = Target { slot: &slot, url, capabilities: &session.capabilities };
        match gw.inner().upstreams.established(target).await {
            Ok(upstream) => Some(upstream),
            Err(e) => {
                tracing::warn!(server = %server, "could not open an upstream session for server/discover: {e}");
                None
            }
        }
    }))
    .await;
    let opened: Vec<_> = opened.into_iter().flatten().collect();
    let offered: Vec<&Value> = opened.iter().map(|u| &u.capabilities).collect();
    let mut capabilities = mcp::merge_capabilities(&offered);
    // `listChanged` notices reach 2026-07-28 clients through `subscriptions/listen`; resource
    // subscriptions are not honoured there (see `listen`), so no `subscribe` flag.
    if let Some(flags) = capabilities.get_mut("resources").and_then(Value::as_object_mut) {
        flags.remove("subscribe");
    }
    record.outcome(Outcome::Allowed, None);
    let vs = &route.slug;
    let mut answer = gatehouse_core::jsonrpc::result_response(
        id,
        json!({
            "supportedVersions": all_supported_versions(),
            "capabilities": capabilities,
            "instructions": format!(
                "Gatehouse virtual server '{vs}': the tools of its upstream servers that your access roles grant you."
            ),
            "_meta": { META_SERVER_INFO: { "name": format!("gatehouse/{vs}"), "version": VERSION } },
        }),
    );
    decorate("server/discover", &mut answer);
    answer
}

/// A forwarded answer as its client's era expects it: [`decorate`]d for a 2026-07-28 client (a
/// pooled session), [`undecorate`]d for a 2025-era one.
pub(crate) fn for_client(pooled: bool, method: &str, response: &mut Value) {
    if pooled { decorate(method, response) } else { undecorate(response) }
}

/// Completes a response for a 2026-07-28 client: `resultType: "complete"` unless the result names
/// one (an upstream's `input_required` passes), and on cacheable methods `ttlMs` and
/// `cacheScope: "private"`, replacing whatever an upstream said (the gateway's answer depends on the
/// caller's policy). Errors pass unchanged.
pub(crate) fn decorate(method: &str, response: &mut Value) {
    let Some(result) = response.get_mut("result").and_then(Value::as_object_mut) else { return };
    result.entry("resultType").or_insert_with(|| json!("complete"));
    if CACHEABLE.contains(&method) {
        result.insert("ttlMs".to_owned(), json!(TTL_MS));
        result.insert("cacheScope".to_owned(), json!("private"));
    }
}

/// The reverse for a 2025-era client whose request a 2026-07-28 upstream answered: the era's
/// `ttlMs`, `cacheScope` and `resultType: "complete"` are not part of 2025 results. Another
/// `resultType` (`input_required`) is left for the client to see: dropping it would misrepresent
/// the answer.
pub(crate) fn undecorate(response: &mut Value) {
    let Some(result) = response.get_mut("result").and_then(Value::as_object_mut) else { return };
    result.remove("ttlMs");
    result.remove("cacheScope");
    if result.get("resultType").and_then(Value::as_str) == Some("complete") {
        result.remove("resultType");
    }
}

/// The answer a 2025-era upstream gets for a server-to-client request (sampling, elicitation,
/// roots) made while serving a 2026-07-28 client: that client has no channel for it, so the
/// gateway answers on its behalf and the upstream's own request can finish. Elicitation is
/// declined (a defined outcome servers handle); anything else is a JSON-RPC error.
pub(crate) fn answer_for_server_request(request: &Value) -> Option<Value> {
    let id = request.get("id")?.clone();
    let method = request.get("method").and_then(Value::as_str)?;
    Some(if method == "elicitation/create" {
        json!({ "jsonrpc": "2.0", "id": id, "result": { "action": "decline" } })
    } else {
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": METHOD_NOT_FOUND,
                "message": format!(
                    "{method} cannot reach this client: it speaks MCP 2026-07-28 through the Gatehouse gateway, \
                     which does not relay server requests to such clients"
                ),
            },
        })
    })
}

/// The list-change notices `subscriptions/listen` can carry: (filter key, notification method, the
/// server capability whose `listChanged` flag an upstream must set to send it).
const LIST_CHANGES: [(&str, &str, &str); 3] = [
    ("toolsListChanged", "notifications/tools/list_changed", "tools"),
    ("promptsListChanged", "notifications/prompts/list_changed", "prompts"),
    ("resourcesListChanged", "notifications/resources/list_changed", "resources"),
];
/// `_meta` key tagging a notification with the `subscriptions/listen` request it belongs to.
const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// `subscriptions/listen`: one long event stream of the list-change notices the client asked for and
/// some upstream of the virtual server can send (`listChanged` in its capabilities), fanned in from
/// the pooled session's upstream GET streams. The first event acknowledges the honoured subset
/// (`resourceSubscriptions` are never honoured: a subscription on the pooled upstream session would be
/// shared by every request of the user); each notice carries the request's id as
/// `_meta["io.modelcontextprotocol/subscriptionId"]`. The stream ends when the client closes it or
/// every upstream stream ended. The audit event is emitted when the stream opens.
async fn listen(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    id: &Id,
    params: Option<&Value>,
    record: &mut Record,
) -> Response {
    let Some(filter) = params.and_then(|p| p.get("notifications")).and_then(Value::as_object) else {
        let why = "subscriptions/listen needs params.notifications, the notices to receive";
        record.outcome(Outcome::Invalid, why.to_owned());
        let body = error_response(Some(id), INVALID_PARAMS, why, Some(ErrorCode::InvalidInput));
        return rpc(StatusCode::BAD_REQUEST, body);
    };
    let opened = join_all(route.upstreams.iter().enumerate().map(|(index, (server, url))| async move {
        let slot = session.upstream_slot(server);
        let target = Target { slot: &slot, url, capabilities: &session.capabilities };
        let upstreams = &gw.inner().upstreams;
        let offers = match upstreams.established(target).await {
            Ok(upstream) => upstream.capabilities.clone(),
            Err(e) => {
                tracing::warn!(server = %server, "subscriptions/listen: upstream unavailable: {e}");
                return None;
            }
        };
        match upstreams.open_stream(target, None).await {
            Ok(Some(stream)) => Some((index, offers, stream)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(server = %server, "subscriptions/listen: no upstream stream: {e}");
                None
            }
        }
    }))
    .await;
    let streams: Vec<(usize, Value, reqwest::Response)> = opened.into_iter().flatten().collect();
    let honoured: Vec<&str> = LIST_CHANGES
        .iter()
        .filter(|(key, _, capability)| {
            filter.get(*key).and_then(Value::as_bool) == Some(true)
                && streams.iter().any(|(_, offers, _)| {
                    offers.pointer(&format!("/{capability}/listChanged")).and_then(Value::as_bool) == Some(true)
                })
        })
        .map(|(key, _, _)| *key)
        .collect();
    let methods: Vec<&'static str> =
        LIST_CHANGES.iter().filter(|(key, _, _)| honoured.contains(key)).map(|(_, method, _)| *method).collect();
    let acknowledged: serde_json::Map<String, Value> =
        honoured.iter().map(|k| ((*k).to_owned(), json!(true))).collect();
    record.outcome(Outcome::Allowed, None);
    let (tx, rx) = crate::relay::channel();
    let ack = json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": { "notifications": acknowledged, "_meta": { META_SUBSCRIPTION_ID: id } },
    });
    let (id, upstreams) = (json!(id), gw.inner().upstreams.clone());
    let answerers: Vec<(usize, Arc<crate::session::UpstreamSlot>, String)> = route
        .upstreams
        .iter()
        .enumerate()
        .map(|(index, (server, url))| (index, session.upstream_slot(server), url.clone()))
        .collect();
    tokio::spawn(async move {
        if tx.send(crate::relay::frame(None, &ack.to_string(), None)).await.is_err() {
            return;
        }
        let mut pumps: futures::stream::FuturesUnordered<_> = streams
            .into_iter()
            .map(|(index, _, stream)| {
                let (tx, id, methods, upstreams) = (tx.clone(), id.clone(), methods.clone(), upstreams.clone());
                let answerer = answerers.iter().find(|(i, _, _)| *i == index).map(|(_, s, u)| (s.clone(), u.clone()));
                listen_one(stream, tx, id, methods, upstreams, answerer)
            })
            .collect();
        let keep_alive = std::time::Duration::from_secs(15);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
        loop {
            tokio::select! {
                () = tx.closed() => return,
                done = futures::StreamExt::next(&mut pumps) => if done.is_none() { return },
                _ = tick.tick() => if tx.send(bytes::Bytes::from_static(b": keep-alive\n\n")).await.is_err() { return },
            }
        }
    });
    crate::relay::sse_response(rx)
}

/// One upstream GET stream of a `subscriptions/listen`: the notices in `methods` go to the client,
/// tagged with the subscription id; server requests are answered for the client (as on a request's
/// stream); everything else is dropped.
async fn listen_one(
    mut stream: reqwest::Response,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    id: Value,
    methods: Vec<&'static str>,
    upstreams: crate::upstream::Upstreams,
    answerer: Option<(Arc<crate::session::UpstreamSlot>, String)>,
) {
    let mut parser = gatehouse_bridge::sse::SseParser::new(16 << 20);
    while let Ok(Some(bytes)) = stream.chunk().await {
        let Ok(events) = parser.push(&bytes) else { return };
        for event in events {
            let Ok(mut message) = serde_json::from_str::<Value>(&event.data) else { continue };
            if message.get("id").is_some() {
                if let (Some(answer), Some((slot, url))) = (answer_for_server_request(&message), &answerer) {
                    let none = json!({});
                    let target = Target { slot, url, capabilities: &none };
                    if let Err(e) = upstreams.send(target, &answer).await {
                        tracing::debug!("could not answer an upstream's server request: {e}");
                    }
                }
                continue;
            }
            let method = message.get("method").and_then(Value::as_str).unwrap_or("");
            if !methods.contains(&method) {
                continue;
            }
            let params = message.as_object_mut().and_then(|m| {
                m.entry("params").or_insert_with(|| json!({}));
                m.get_mut("params")
            });
            if let Some(params) = params.and_then(Value::as_object_mut) {
                let meta = params.entry("_meta").or_insert_with(|| json!({}));
                if let Some(meta) = meta.as_object_mut() {
                    meta.insert(META_SUBSCRIPTION_ID.to_owned(), id.clone());
                }
            }
            if tx.send(crate::relay::frame(None, &message.to_string(), None)).await.is_err() {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2026-07-28 upstreams: the `server/discover` probe, its cached verdict, and requests in that form.

/// How long a "not 2026-07-28" verdict is kept (such a server gives no `ttlMs`); it is probed again
/// after that, so an upstream upgraded in place is noticed.
const LEGACY_VERDICT_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// Longest a "2026-07-28" verdict is kept, whatever `ttlMs` the upstream gave.
const MAX_VERDICT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Per upstream URL: `Some(capabilities)` of a 2026-07-28 server or `None`, until an instant.
#[derive(Clone, Default)]
pub(crate) struct Verdicts(Arc<dashmap::DashMap<String, (Option<Value>, std::time::Instant)>>);

impl Verdicts {
    /// The fresh verdict for `url`, if there is one.
    pub(crate) fn get(&self, url: &str) -> Option<Option<Value>> {
        let entry = self.0.get(url)?;
        (entry.1 > std::time::Instant::now()).then(|| entry.0.clone())
    }

    pub(crate) fn put(&self, url: &str, verdict: Option<Value>, ttl: std::time::Duration) {
        // Bounded by the number of upstream URLs in the bundles (stale ones are overwritten).
        self.0.insert(url.to_owned(), (verdict, std::time::Instant::now() + ttl));
    }
}

/// The `_meta` envelope the gateway sends a 2026-07-28 upstream: its own version and name, and no
/// client capabilities (it relays no server requests and no `input_required` results yet).
fn gateway_envelope() -> Value {
    json!({
        META_PROTOCOL_VERSION: MODERN_PROTOCOL_VERSIONS[0],
        META_CLIENT_CAPABILITIES: {},
        META_CLIENT_INFO: { "name": "gatehouse", "version": VERSION },
    })
}

/// The probe: `server/discover` with the envelope and its headers (version, method).
pub(crate) fn discover_request(id: &Value) -> Result<(bytes::Bytes, HeaderMap), String> {
    let body =
        json!({ "jsonrpc": "2.0", "id": id, "method": "server/discover", "params": { "_meta": gateway_envelope() } });
    let mut headers = HeaderMap::new();
    headers.insert(MCP_PROTOCOL_VERSION, HeaderValue::from_static(MODERN_PROTOCOL_VERSIONS[0]));
    headers.insert(headers::MCP_METHOD, HeaderValue::from_static("server/discover"));
    Ok((bytes::Bytes::from(serde_json::to_vec(&body).map_err(|e| e.to_string())?), headers))
}

/// The verdict of a probe answer (the JSON-RPC response, or `None` when there was none or not a
/// 2xx): the capabilities of a server whose `supportedVersions` include a version the gateway
/// speaks per request, and how long to keep the verdict (`ttlMs`, bounded).
pub(crate) fn verdict(answer: Option<&Value>) -> (Option<Value>, std::time::Duration) {
    let result = answer.and_then(|a| a.get("result"));
    let modern = result
        .and_then(|r| r.get("supportedVersions"))
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|v| v.as_str().is_some_and(|v| MODERN_PROTOCOL_VERSIONS.contains(&v))));
    if !modern {
        return (None, LEGACY_VERDICT_TTL);
    }
    let result = result.unwrap_or(&Value::Null);
    let capabilities = result.get("capabilities").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let ttl = result.get("ttlMs").and_then(Value::as_u64).unwrap_or(0);
    (Some(capabilities), std::time::Duration::from_millis(ttl).min(MAX_VERDICT_TTL))
}

/// A message for a 2025-era upstream without the gateway-private `_meta` key (present only on
/// requests forwarded for 2026-07-28 clients; found without parsing otherwise).
pub(crate) fn strip_private(body: bytes::Bytes) -> bytes::Bytes {
    let needle = PRIVATE_CLIENT_CAPABILITIES.as_bytes();
    if !body.windows(needle.len()).any(|w| w == needle) {
        return body;
    }
    let Ok(mut message) = serde_json::from_slice::<Value>(&body) else { return body };
    if let Some(meta) = message.pointer_mut("/params/_meta").and_then(Value::as_object_mut) {
        meta.remove(PRIVATE_CLIENT_CAPABILITIES);
        if meta.is_empty()
            && let Some(params) = message.get_mut("params").and_then(Value::as_object_mut)
        {
            params.remove("_meta");
        }
    }
    serde_json::to_vec(&message).map(bytes::Bytes::from).unwrap_or(body)
}

/// The "session" of a 2026-07-28 upstream: its capabilities, no id.
pub(crate) fn upstream_session(url: &str, capabilities: Value) -> crate::upstream::UpstreamSession {
    crate::upstream::UpstreamSession {
        url: url.to_owned(),
        session_id: None,
        protocol_version: MODERN_PROTOCOL_VERSIONS[0].to_owned(),
        capabilities,
        tool_headers: Default::default(),
    }
}

/// Remembers a 2026-07-28 upstream's tools' `Mcp-Param-{X}` parameters from its `tools/list`.
pub(crate) fn remember_tools(session: &crate::upstream::UpstreamSession, tools: &[Value]) {
    let mapped = tools.iter().filter_map(|tool| {
        let name = tool.get("name")?.as_str()?;
        let params = headers::tool_param_headers(tool.get("inputSchema")?).ok()?;
        Some((name.to_owned(), params))
    });
    let mut known = session.tool_headers.lock().unwrap_or_else(|e| e.into_inner());
    known.extend(mapped);
}

/// A message (as encoded for a 2025-era upstream) rewritten for a 2026-07-28 one: the gateway's
/// envelope in `params._meta` of a request (other `_meta` keys kept), and the headers mirroring it
/// (`Mcp-Method`, `Mcp-Name` for the name-bearing methods, `Mcp-Param-{X}` for the called tool's
/// annotated arguments). `MCP-Protocol-Version` comes with the session. Notifications and responses
/// pass unchanged (the era defines no header rules for them).
pub(crate) fn upstream_message(
    session: &crate::upstream::UpstreamSession,
    body: &[u8],
) -> Result<(bytes::Bytes, HeaderMap), String> {
    let mut message: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut extra = HeaderMap::new();
    let method = message.get("method").and_then(Value::as_str).map(str::to_owned);
    let (Some(method), true) = (method, message.get("id").is_some()) else {
        return Ok((bytes::Bytes::copy_from_slice(body), extra));
    };
    let params = message.as_object_mut().ok_or("not a JSON-RPC object")?.entry("params").or_insert_with(|| json!({}));
    let object = params.as_object_mut().ok_or("params is not an object")?;
    let meta = object.entry("_meta").or_insert_with(|| json!({}));
    if let (Some(meta), Value::Object(envelope)) = (meta.as_object_mut(), gateway_envelope()) {
        // A 2026-07-28 client's own capabilities, for a request forwarded for it (MRTR passthrough).
        let declared = meta.remove(PRIVATE_CLIENT_CAPABILITIES);
        meta.extend(envelope);
        if let Some(declared) = declared {
            meta.insert(META_CLIENT_CAPABILITIES.to_owned(), declared);
        }
    }
    let header = |text: &str| HeaderValue::from_str(text).map_err(|e| e.to_string());
    extra.insert(headers::MCP_METHOD, header(&method)?);
    let name_field = match method.as_str() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(name) = name_field.and_then(|f| params.get(f)).and_then(Value::as_str) {
        extra.insert(headers::MCP_NAME, header(&headers::encode_header_text(name))?);
        if method == "tools/call" {
            let mapped = session.tool_headers.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
            for param in mapped.unwrap_or_default() {
                let mut value = params.get("arguments");
                for key in &param.path {
                    value = value.and_then(|v| v.get(key));
                }
                let Some(text) = value.and_then(headers::encode_param_value) else { continue };
                let name =
                    http::HeaderName::from_bytes(format!("{}{}", headers::MCP_PARAM_PREFIX, param.name).as_bytes())
                        .map_err(|e| e.to_string())?;
                extra.insert(name, header(&text)?);
            }
        }
    }
    Ok((bytes::Bytes::from(serde_json::to_vec(&message).map_err(|e| e.to_string())?), extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: Value) -> Message {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn eras_are_told_apart() {
        let mut headers = HeaderMap::new();
        let legacy = message(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
        assert!(!is_modern(&headers, &legacy));
        let discover = message(json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover"}));
        assert!(is_modern(&headers, &discover));
        let meta_2026 = message(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}}));
        assert!(is_modern(&headers, &meta_2026));
        let meta_2025 = message(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {META_PROTOCOL_VERSION: "2025-06-18"}}}));
        assert!(!is_modern(&headers, &meta_2025), "a handshake-era version in _meta stays 2025 traffic");
        let meta_future = message(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {META_PROTOCOL_VERSION: "2099-01-01"}}}));
        assert!(is_modern(&headers, &meta_future), "so that it is answered -32022 with the modern versions");
        headers.insert(MCP_PROTOCOL_VERSION, HeaderValue::from_static("2026-07-28"));
        assert!(is_modern(&headers, &legacy));
        headers.insert(MCP_PROTOCOL_VERSION, HeaderValue::from_static("2025-11-25"));
        assert!(!is_modern(&headers, &legacy));
    }

    #[test]
    fn envelopes_are_validated_and_stripped() {
        let ok = json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {},
            META_CLIENT_INFO: {"name": "py", "version": "2"}, "progressToken": 4}, "name": "echo"});
        let envelope = Envelope::read(Some(&ok)).unwrap();
        assert_eq!((envelope.version, envelope.client_name.as_deref()), (Some("2026-07-28"), Some("py")));
        assert_eq!(strip_envelope(ok.clone()), json!({"_meta": {"progressToken": 4}, "name": "echo"}));
        let eliciting = json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28",
            META_CLIENT_CAPABILITIES: {"elicitation": {}, "experimental": {"x": {}}}}, "name": "echo"});
        let kept = strip_envelope(eliciting);
        assert_eq!(kept, json!({"_meta": {PRIVATE_CLIENT_CAPABILITIES: {"elicitation": {}}}, "name": "echo"}));
        let legacy = strip_private(bytes::Bytes::from(json!({"jsonrpc": "2.0", "id": 1, "params": kept}).to_string()));
        assert_eq!(
            serde_json::from_slice::<Value>(&legacy).unwrap(),
            json!({"jsonrpc": "2.0", "id": 1, "params": {"name": "echo"}})
        );
        let plain = bytes::Bytes::from_static(br#"{"jsonrpc":"2.0","id":1}"#);
        assert_eq!(strip_private(plain.clone()), plain);
        let bare = json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {}}});
        assert_eq!(strip_envelope(bare.clone()), json!({}));
        assert!(Envelope::read(Some(&bare)).unwrap().client_name.is_none(), "clientInfo is optional");
        assert!(Envelope::read(None).unwrap_err().contains("params._meta must be an object"));
        let no_caps = json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}});
        assert!(Envelope::read(Some(&no_caps)).unwrap_err().contains(META_CLIENT_CAPABILITIES));
        let bad_info = json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {},
            META_CLIENT_INFO: "py"}});
        assert!(Envelope::read(Some(&bad_info)).unwrap_err().contains(META_CLIENT_INFO));
    }

    #[test]
    fn results_are_decorated() {
        let mut list =
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [], "ttlMs": 60000, "cacheScope": "public"}});
        decorate("tools/list", &mut list);
        assert_eq!(list["result"], json!({"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"}));
        let mut call = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "resultType": "input_required"}});
        decorate("tools/call", &mut call);
        assert_eq!(call["result"], json!({"content": [], "resultType": "input_required"}));
        let mut error = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "x"}});
        decorate("tools/list", &mut error);
        assert!(error.get("result").is_none());
        // For a 2025-era client, a 2026-07-28 upstream's fields go.
        let mut read = json!({"jsonrpc": "2.0", "id": 1, "result": {"contents": [], "resultType": "complete",
            "ttlMs": 5, "cacheScope": "public"}});
        undecorate(&mut read);
        assert_eq!(read["result"], json!({"contents": []}));
        undecorate(&mut call);
        assert_eq!(call["result"]["resultType"], "input_required");
    }

    #[test]
    fn server_requests_are_answered_for_the_client() {
        let elicit = json!({"jsonrpc": "2.0", "id": 7, "method": "elicitation/create", "params": {}});
        assert_eq!(answer_for_server_request(&elicit).unwrap()["result"], json!({"action": "decline"}));
        let sample = json!({"jsonrpc": "2.0", "id": "s", "method": "sampling/createMessage", "params": {}});
        let answer = answer_for_server_request(&sample).unwrap();
        assert_eq!((answer["id"].clone(), answer["error"]["code"].clone()), (json!("s"), json!(METHOD_NOT_FOUND)));
        assert!(answer_for_server_request(&json!({"jsonrpc": "2.0", "method": "notifications/progress"})).is_none());
    }
}
