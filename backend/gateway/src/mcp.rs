//! The MCP endpoint `/mcp/{tenant}/{virtual-server}` (Streamable HTTP, 2025-11-25 era; requests of
//! the 2026-07-28 era leave for `modern.rs` after the body is parsed and come back to the same
//! handlers below).
//!
//! Order of checks on a POST: route (503 no bundle, 404 unknown) → `Origin` (403) → bearer token
//! (401 with the resource-metadata pointer) → body (413, 400 -32700/-32600) → protocol version (400
//! -32022) → `initialize` (answered here) → session (400 missing, 404 unknown) → method. Every POST
//! and DELETE of a known tenant yields exactly one audit event, whatever the outcome (a streamed
//! answer's event is emitted when the stream ends). See the crate's README for the reasoning.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest as _, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::join_all;
use gatehouse_bundle::policy::{AuthFailure, Principal, VirtualServerRoute};
use gatehouse_bundle::shaping::Shaping;
use gatehouse_bundle::{Decision, DenyKind, Listing, TenantPolicy};
use gatehouse_core::ErrorCode;
use gatehouse_core::audit::{AuditEvent, Outcome};
use gatehouse_core::jsonrpc::{
    INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, Id, METHOD_NOT_FOUND, Message, POLICY_DENIED, error_response,
    parse_body, result_response,
};
use gatehouse_core::rules::PolicyMode;
use gatehouse_core::shaping::{ArgumentRefusal, check_arguments, shape_definition};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::ratelimit;
use crate::relay::{self, PostEnd};
use crate::routes::{MAX_BODY_BYTES, check_origin, error};
use crate::screen::{self, Screen, Subject};
use crate::seal::{self, SealedUpstream, SessionClaims};
use crate::session::{Session, ToolRoute, UpstreamSlot};
use crate::upstream::{Answer, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, Target, UpstreamError};
use crate::{Gateway, LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS, VERSION, now_ms};

/// JSON-RPC code for an unknown session, as the official MCP SDKs use it (with HTTP 404).
const SESSION_NOT_FOUND: i64 = -32001;
/// JSON-RPC code of the 2026-07-28 era for an unsupported protocol version (with HTTP 400).
pub(crate) const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// Where 2026-07-28 clients put the protocol version of each request.
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// Bound on list pages (`tools/list`, `resources/list`, ...) fetched from one upstream.
const MAX_LIST_PAGES: usize = 20;
/// Client capabilities declared upstream: the server-to-client features the gateway relays.
const RELAYED_CLIENT_CAPABILITIES: [&str; 3] = ["sampling", "elicitation", "roots"];
/// `clientInfo` strings longer than this are cut before they reach the audit trail.
pub(crate) const MAX_CLIENT_INFO_CHARS: usize = 200;

/// Why a request cannot be routed to a tenant's virtual server.
pub(crate) enum RouteError {
    NotReady,
    UnknownTenant,
    /// The tenant exists (so the request is audited) but the virtual server does not.
    UnknownVirtualServer(Arc<TenantPolicy>),
}

impl RouteError {
    /// The HTTP answer to this refusal.
    pub(crate) fn response(&self, tenant: &str, vs: &str) -> Response {
        match self {
            RouteError::NotReady => {
                let mut response = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::NoBundle,
                    "this gateway has no policy bundle yet; try again in a few seconds",
                );
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                response
            }
            // One message for both, so an unauthenticated caller cannot tell tenants exist.
            RouteError::UnknownTenant | RouteError::UnknownVirtualServer(_) => error(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("no virtual server '{vs}' of tenant '{tenant}' on this gateway; check the URL"),
            ),
        }
    }
}

impl Gateway {
    /// The active policy and virtual server for a request.
    pub(crate) fn route(
        &self,
        tenant: &str,
        vs: &str,
    ) -> Result<(Arc<TenantPolicy>, Arc<VirtualServerRoute>), RouteError> {
        if !self.is_ready() {
            return Err(RouteError::NotReady);
        }
        let policy = self.policy(tenant).ok_or(RouteError::UnknownTenant)?;
        match policy.virtual_server(vs) {
            Some(route) => Ok((policy, route)),
            None => Err(RouteError::UnknownVirtualServer(policy)),
        }
    }
}

/// The audit event of one request, filled in while it is handled and emitted at the end.
pub(crate) struct Record {
    started: Instant,
    /// Only requests for a tenant this worker serves are audited.
    known: bool,
    /// In monitor mode, why the policy would have refused this request: the outcome becomes
    /// `would_deny` whatever happens next.
    would_deny: Option<String>,
    /// The outcome is decided (a data-classification block) and later outcomes do not change it.
    frozen: bool,
    /// The virtual server exists (else `/metrics` labels it `other`: its name came from the URL).
    virtual_server_known: bool,
    /// The request's spans, when tracing is on (see `telemetry.rs`).
    trace: Option<Box<crate::telemetry::RequestTrace>>,
    /// The TCP peer's address (`client.ip` in rule conditions), when the listener records it.
    client_ip: Option<std::net::IpAddr>,
    event: AuditEvent,
}

impl Record {
    fn new(tenant: &str, vs: &str, method: &str) -> Self {
        Self {
            started: Instant::now(),
            known: false,
            would_deny: None,
            frozen: false,
            virtual_server_known: false,
            trace: None,
            client_ip: None,
            event: AuditEvent {
                id: uuid::Uuid::now_v7().to_string(),
                time_ms: now_ms(),
                tenant: tenant.to_owned(),
                user_id: None,
                user_email: None,
                client_name: None,
                client_version: None,
                session_id: None,
                virtual_server: vs.to_owned(),
                upstream_server: None,
                method: method.to_owned(),
                tool: None,
                exposed_tool: None,
                outcome: Outcome::Invalid,
                reason: None,
                latency_us: 0,
                bundle_revision: None,
                rule_id: None,
                findings: Vec::new(),
            },
        }
    }

    fn tenant(&mut self, policy: &TenantPolicy) {
        self.known = true;
        self.virtual_server_known = policy.virtual_server(&self.event.virtual_server).is_some();
        self.event.bundle_revision = Some(policy.manifest.revision.clone());
    }

    fn principal(&mut self, principal: &Principal) {
        self.event.user_id = Some(principal.user_id.clone());
        self.event.user_email = Some(principal.email.clone());
    }

    pub(crate) fn session(&mut self, session: &Session) {
        // A pooled session (2026-07-28 clients) is the worker's, not a client session: no id.
        if !session.pooled {
            self.event.session_id = Some(session.audit_id.clone());
        }
        self.event.client_name.clone_from(&session.client_name);
        self.event.client_version.clone_from(&session.client_version);
        if let Some(trace) = &mut self.trace {
            trace.protocol_version(&session.protocol_version);
        }
    }

    /// Starts the request's server span (when tracing is on), parented by `params._meta`.
    fn trace(&mut self, gw: &Gateway, method: Option<&str>, id: Option<&Id>, params: Option<&Value>) {
        self.trace = gw.inner().telemetry.server_span(method, id, params, self.started);
    }

    /// Starts the client span of a forwarded request; the params to send instead (with the span's
    /// context in `_meta`), or `None` to send the client's as they are (tracing off).
    fn upstream_call(
        &mut self,
        gw: &Gateway,
        call: crate::telemetry::UpstreamCall<'_>,
        params: Option<&Value>,
    ) -> Option<Value> {
        gw.inner().telemetry.client_span(self.trace.as_deref_mut()?, call, params)
    }

    pub(crate) fn outcome(&mut self, outcome: Outcome, reason: impl Into<Option<String>>) {
        if self.frozen {
            return;
        }
        let reason = reason.into();
        match &self.would_deny {
            Some(would) => {
                self.event.outcome = Outcome::WouldDeny;
                self.event.reason = Some(match (outcome, reason) {
                    (Outcome::Allowed, _) | (_, None) => would.clone(),
                    (_, Some(then)) => format!("{would}; then: {then}"),
                });
            }
            None => {
                self.event.outcome = outcome;
                self.event.reason = reason;
            }
        }
    }

    /// Adds data-classification findings.
    pub(crate) fn findings(&mut self, findings: impl Iterator<Item = gatehouse_core::classification::AuditFinding>) {
        self.event.findings.extend(findings);
    }

    /// Names the upstream server the request is for (before it is forwarded).
    pub(crate) fn set_upstream(&mut self, server: &str) {
        self.event.upstream_server = Some(server.to_owned());
    }

    /// Names the rule that decided.
    pub(crate) fn set_rule(&mut self, rule: String) {
        self.event.rule_id = Some(rule);
    }

    /// Keeps the current outcome, whatever is reported later.
    pub(crate) fn freeze_outcome(&mut self) {
        self.frozen = true;
    }

    /// Takes the event out, for a stream that emits it when it ends; what stays behind emits nothing.
    fn detach(&mut self) -> Record {
        let stays = Record {
            started: self.started,
            known: false,
            would_deny: self.would_deny.clone(),
            frozen: self.frozen,
            virtual_server_known: self.virtual_server_known,
            trace: None,
            client_ip: self.client_ip,
            event: self.event.clone(),
        };
        std::mem::replace(self, stays)
    }

    async fn emit(mut self, gw: &Gateway) {
        if self.known {
            let elapsed = self.started.elapsed();
            self.event.latency_us = i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX);
            gw.inner().observe(&self.event, self.virtual_server_known, self.trace.take(), elapsed);
            gw.inner().audit.emit(self.event).await;
        }
    }
}

/// `GET /mcp/...`: the session's server-initiated stream, fanned in from the upstreams' GET streams.
pub(crate) async fn get(
    State(gw): State<Gateway>,
    Path((tenant, vs)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut record = Record::new(&tenant, &vs, "GET");
    let response = handle_get(&gw, &tenant, &vs, &headers, &mut record).await;
    record.emit(&gw).await;
    response
}

/// What GET and DELETE share: admission, the version check and the sealed session, or the refusal
/// to answer with.
fn admit_session(
    gw: &Gateway,
    tenant: &str,
    vs: &str,
    headers: &HeaderMap,
    record: &mut Record,
) -> Result<(Arc<VirtualServerRoute>, Arc<Session>), Box<Response>> {
    let Admitted { policy, route, principal } =
        admit(gw, tenant, vs, headers, record).map_err(|refusal| Box::new(refusal.response(gw, tenant, vs)))?;
    if crate::modern::header_is_modern(headers) {
        return Err(Box::new(crate::modern::method_not_allowed(&record.event.method.clone(), record)));
    }
    if let Some(response) = version_refusal(headers, None, record) {
        return Err(Box::new(response));
    }
    let session = session_of(gw, headers, &policy, &route, &principal).map_err(|problem| {
        record.outcome(Outcome::Invalid, problem.message().to_owned());
        Box::new(error(problem.status(), problem.code(), problem.message()))
    })?;
    record.session(&session);
    Ok((route, session))
}

async fn handle_get(gw: &Gateway, tenant: &str, vs: &str, headers: &HeaderMap, record: &mut Record) -> Response {
    let (route, session) = match admit_session(gw, tenant, vs, headers, record) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    // `Last-Event-ID` names one upstream's event: that upstream resumes from it, the others start fresh.
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(relay::parse_event_id);
    let session = &session;
    let opened = join_all(route.upstreams.iter().enumerate().map(|(index, (server, url))| async move {
        let slot = session.upstream_slot(server);
        let target = Target { slot: &slot, url, capabilities: &session.capabilities };
        let last = resume.filter(|(i, _)| *i == index).map(|(_, e)| e);
        (index, server, gw.inner().upstreams.open_stream(target, last).await)
    }))
    .await;
    let mut streams = Vec::new();
    for (index, server, result) in opened {
        match result {
            Ok(Some(stream)) => streams.push((index, stream)),
            Ok(None) => {}
            Err(e) => warn!(server = %server, "could not open the upstream's GET stream: {e}"),
        }
    }
    if streams.is_empty() {
        let why = "none of this virtual server's upstreams offers a server-initiated stream; send requests with POST";
        record.outcome(Outcome::Invalid, why.to_owned());
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::InvalidInput, why);
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
        return response;
    }
    record.outcome(Outcome::Allowed, None);
    let (tx, rx) = relay::channel();
    tokio::spawn(relay::pump_get(streams, tx));
    relay::sse_response(rx)
}

/// `POST /mcp/...`: one JSON-RPC message.
pub(crate) async fn post(
    State(gw): State<Gateway>,
    Path((tenant, vs)): Path<(String, String)>,
    request: Request,
) -> Response {
    let mut record = Record::new(&tenant, &vs, "POST");
    // Headers are borrowed from the request instead of extracted (which would copy them); the body
    // keeps the extensions, where the body-limit layer put the 4 MiB limit.
    let (mut parts, body) = request.into_parts();
    record.client_ip = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let mut body = Request::new(body);
    *body.extensions_mut() = std::mem::take(&mut parts.extensions);
    let handling = handle_post(&gw, &tenant, &vs, &parts.headers, body, &mut record);
    let response = gw.inner().telemetry.scope(handling).await;
    record.emit(&gw).await;
    response
}

/// `DELETE /mcp/...`: ends a session.
pub(crate) async fn delete(
    State(gw): State<Gateway>,
    Path((tenant, vs)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut record = Record::new(&tenant, &vs, "DELETE");
    let response = handle_delete(&gw, &tenant, &vs, &headers, &mut record).await;
    record.emit(&gw).await;
    response
}

async fn handle_delete(gw: &Gateway, tenant: &str, vs: &str, headers: &HeaderMap, record: &mut Record) -> Response {
    let session = match admit_session(gw, tenant, vs, headers, record) {
        Ok((_, session)) => session,
        Err(response) => return *response,
    };
    gw.inner().sessions.end(&session);
    record.outcome(Outcome::Allowed, None);
    StatusCode::OK.into_response()
}

async fn handle_post(
    gw: &Gateway,
    tenant: &str,
    vs: &str,
    headers: &HeaderMap,
    request: Request,
    record: &mut Record,
) -> Response {
    let Admitted { policy, route, principal } = match admit(gw, tenant, vs, headers, record) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(gw, tenant, vs),
    };

    // The body is read only now, so unauthenticated callers cannot make the gateway buffer 4 MiB.
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            let message = format!("the request body is larger than {} MiB", MAX_BODY_BYTES >> 20);
            record.outcome(Outcome::Invalid, message.clone());
            return error(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::InvalidInput, message);
        }
        Err(rejection) => {
            let message = format!("could not read the request body: {}", rejection.body_text());
            record.outcome(Outcome::Invalid, message.clone());
            return error(StatusCode::BAD_REQUEST, ErrorCode::InvalidInput, message);
        }
    };
    let message = match parse_body(&body) {
        Ok(message) => message,
        Err((code, why)) => {
            record.outcome(Outcome::Invalid, why.clone());
            return rpc(StatusCode::BAD_REQUEST, error_response(None, code, &why, Some(ErrorCode::InvalidInput)));
        }
    };
    // Client responses (to server requests) have no method; audit them as such.
    record.event.method = message.method.clone().unwrap_or_else(|| "response".to_owned());
    record.trace(gw, message.method.as_deref(), message.id.as_ref(), message.params.as_ref());
    if crate::modern::is_modern(headers, &message) {
        return crate::modern::handle(gw, &policy, &route, &principal, headers, message, record).await;
    }
    let Message { id, method, params, result, error: failure, .. } = message;

    if let Some(why) = unsupported_version(headers, params.as_ref()) {
        record.outcome(Outcome::Invalid, why);
        let requested = requested_version(headers, params.as_ref());
        return rpc(
            StatusCode::BAD_REQUEST,
            unsupported_version_error(id.as_ref(), requested.map(Value::from).as_ref()),
        );
    }

    if let (Some("initialize"), Some(id)) = (method.as_deref(), id.as_ref()) {
        return initialize(gw, &policy, &route, &principal, params.as_ref(), id, record).await;
    }

    let session = match session_of(gw, headers, &policy, &route, &principal) {
        Ok(session) => session,
        Err(problem) => {
            record.outcome(Outcome::Invalid, problem.message().to_owned());
            let body = error_response(id.as_ref(), problem.rpc_code(), problem.message(), Some(problem.code()));
            return rpc(problem.status(), body);
        }
    };
    record.session(&session);
    debug!(session = %session.audit_id, protocol = %session.protocol_version, method = %record.event.method, "mcp request");

    let Some(method) = method else {
        // A response to a server request that reached the client through the gateway.
        return client_response(gw, &route, &session, id, result, failure, record).await;
    };
    let Some(id) = id else {
        return client_notification(gw, &route, &session, &method, params, record).await;
    };
    let answer = match method.as_str() {
        "ping" => {
            record.outcome(Outcome::Allowed, None);
            result_response(&id, json!({}))
        }
        "tools/list" => tools_list(gw, &policy, &route, &session, &principal, &id, record).await,
        "tools/call" => return tools_call(gw, &policy, &route, &session, &principal, &id, params, record).await,
        "resources/list" => crate::features::resources_list(gw, &route, &session, &id, record).await,
        "resources/templates/list" => crate::features::templates_list(gw, &route, &session, &id, record).await,
        "prompts/list" => crate::features::prompts_list(gw, &route, &session, &id, record).await,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" | "prompts/get" | "completion/complete" => {
            return crate::features::routed(gw, &policy, &route, &session, &id, &method, params, record).await;
        }
        "logging/setLevel" => crate::features::set_level(gw, &route, &session, &id, params, record).await,
        other => {
            let why = format!("method '{other}' is not supported by this gateway");
            record.outcome(Outcome::Invalid, why.clone());
            error_response(Some(&id), METHOD_NOT_FOUND, &why, None)
        }
    };
    rpc(StatusCode::OK, answer)
}

/// The 400 -32022 answer to a request in a protocol version the gateway does not speak: `data`
/// lists the versions we support and, when the request named one, echoes it as `requested`.
pub(crate) fn unsupported_version_error(id: Option<&Id>, requested: Option<&Value>) -> Value {
    let mut data = json!({ "supported": crate::modern::all_supported_versions() });
    if let Some(requested) = requested {
        data["requested"] = requested.clone();
    }
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": UNSUPPORTED_PROTOCOL_VERSION, "message": "Unsupported protocol version", "data": data },
    })
}

/// The protocol version a request names: `params._meta`'s (2026-07-28 era), else the header's.
fn requested_version<'a>(headers: &'a HeaderMap, params: Option<&'a Value>) -> Option<&'a str> {
    params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str)
        .or_else(|| headers.get(&MCP_PROTOCOL_VERSION).and_then(|v| v.to_str().ok()))
}

/// The refusal of a GET or DELETE whose `MCP-Protocol-Version` the gateway does not speak.
fn version_refusal(headers: &HeaderMap, id: Option<&Id>, record: &mut Record) -> Option<Response> {
    let why = unsupported_version(headers, None)?;
    record.outcome(Outcome::Invalid, why);
    Some(rpc(
        StatusCode::BAD_REQUEST,
        unsupported_version_error(id, requested_version(headers, None).map(Value::from).as_ref()),
    ))
}

/// A client notification: `notifications/cancelled` goes to the upstream serving that request,
/// `notifications/progress` (about a server request) to the upstream that asked, and
/// `notifications/roots/list_changed` to every upstream. Others (`notifications/initialized`) stay
/// here: the upstream sessions are the gateway's, and were initialized when they were opened.
async fn client_notification(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    method: &str,
    params: Option<Value>,
    record: &mut Record,
) -> Response {
    let mut params = params.unwrap_or_else(|| json!({}));
    let targets: Vec<&str> = match method {
        "notifications/cancelled" => {
            let request = params.get("requestId").cloned().and_then(|r| serde_json::from_value::<Id>(r).ok());
            match request {
                Some(request) => {
                    params["requestId"] = relay::upstream_request_id(&request);
                    match session.in_flight(&request) {
                        Some(server) => {
                            route.upstreams.iter().filter(|(s, _)| *s == server).map(|(s, _)| s.as_str()).collect()
                        }
                        // Finished already, or in flight on another worker: every upstream session
                        // open here hears it (an upstream ignores a cancellation of a request it
                        // does not know, as the spec allows).
                        None => {
                            let open: HashSet<String> =
                                session.established_upstreams().into_iter().map(|(server, _)| server).collect();
                            route.upstreams.iter().filter(|(s, _)| open.contains(s)).map(|(s, _)| s.as_str()).collect()
                        }
                    }
                }
                None => Vec::new(),
            }
        }
        "notifications/progress" => {
            let token = params.get("progressToken").and_then(relay::from_client);
            match token.and_then(|(index, token)| route.upstreams.get(index).map(|(s, _)| (s, token))) {
                Some((server, token)) => {
                    params["progressToken"] = token;
                    vec![server.as_str()]
                }
                None => Vec::new(),
            }
        }
        "notifications/roots/list_changed" => route.upstreams.iter().map(|(s, _)| s.as_str()).collect(),
        _ => Vec::new(),
    };
    let message = json!({ "jsonrpc": "2.0", "method": method, "params": params });
    let failures = send_upstream(gw, route, session, &targets, &message).await;
    match failures {
        Some(why) => record.outcome(Outcome::UpstreamError, why),
        None => record.outcome(Outcome::Allowed, None),
    }
    StatusCode::ACCEPTED.into_response()
}

/// The client's answer to a server request: back to the upstream that asked, under its own id.
async fn client_response(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    id: Option<Id>,
    result: Option<Value>,
    failure: Option<Value>,
    record: &mut Record,
) -> Response {
    let origin = id.as_ref().and_then(|id| relay::from_client(&json!(id)));
    let Some((server, upstream_id)) =
        origin.and_then(|(index, upstream_id)| route.upstreams.get(index).map(|(s, _)| (s.as_str(), upstream_id)))
    else {
        let why = "this response answers no request the gateway relayed";
        record.outcome(Outcome::Invalid, why.to_owned());
        return rpc(StatusCode::BAD_REQUEST, error_response(None, INVALID_REQUEST, why, Some(ErrorCode::InvalidInput)));
    };
    record.event.upstream_server = Some(server.to_owned());
    let mut message = json!({ "jsonrpc": "2.0", "id": upstream_id });
    match (result, failure) {
        (Some(result), _) => message["result"] = result,
        (None, Some(failure)) => message["error"] = failure,
        (None, None) => {}
    }
    match send_upstream(gw, route, session, &[server], &message).await {
        Some(why) => record.outcome(Outcome::UpstreamError, why),
        None => record.outcome(Outcome::Allowed, None),
    }
    StatusCode::ACCEPTED.into_response()
}

/// Sends one message (notification or response) to each of `servers`, in parallel; the failures, if any.
async fn send_upstream(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    servers: &[&str],
    message: &Value,
) -> Option<String> {
    let sent = join_all(servers.iter().filter_map(|server| {
        let url = route.upstreams.iter().find(|(s, _)| s == server).map(|(_, u)| u.as_str())?;
        Some(async move {
            let slot = session.upstream_slot(server);
            let target = Target { slot: &slot, url, capabilities: &session.capabilities };
            gw.inner().upstreams.send(target, message).await.map_err(|e| format!("upstream server '{server}': {e}"))
        })
    }))
    .await;
    let failures: Vec<String> = sent.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        return None;
    }
    let why = failures.join("; ");
    warn!("could not relay a client message: {why}");
    Some(why)
}

/// A request that passed routing, `Origin` and authentication.
struct Admitted {
    policy: Arc<TenantPolicy>,
    route: Arc<VirtualServerRoute>,
    principal: Principal,
}

/// Why a request was turned away before its body was looked at.
enum Refusal {
    Route(RouteError),
    Origin(String),
    Unauthenticated(String),
    /// The kill switch: a tenant admin suspended the user.
    Suspended(String),
}

impl Refusal {
    fn response(&self, gw: &Gateway, tenant: &str, vs: &str) -> Response {
        match self {
            Refusal::Route(refusal) => refusal.response(tenant, vs),
            Refusal::Origin(why) => error(StatusCode::FORBIDDEN, ErrorCode::Forbidden, why.clone()),
            Refusal::Suspended(why) => error(StatusCode::FORBIDDEN, ErrorCode::Suspended, why.clone()),
            Refusal::Unauthenticated(why) => {
                let mut response = error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, why.clone());
                let metadata = format!(
                    "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp/{tenant}/{vs}\"",
                    gw.inner().config.public_url
                );
                if let Ok(value) = HeaderValue::from_str(&metadata) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                }
                response
            }
        }
    }
}

/// Routes the request, then checks `Origin` and the bearer token, recording what it learns.
fn admit(gw: &Gateway, tenant: &str, vs: &str, headers: &HeaderMap, record: &mut Record) -> Result<Admitted, Refusal> {
    let (policy, route) = match gw.route(tenant, vs) {
        Ok(found) => found,
        Err(refusal) => {
            if let RouteError::UnknownVirtualServer(policy) = &refusal {
                record.tenant(policy);
                record.outcome(Outcome::Invalid, format!("unknown virtual server '{vs}'"));
            }
            return Err(Refusal::Route(refusal));
        }
    };
    record.tenant(&policy);
    if let Err(why) = check_origin(headers, &gw.inner().public_origin) {
        record.outcome(Outcome::Denied, why.clone());
        return Err(Refusal::Origin(why));
    }
    let authenticated = match bearer(headers) {
        Bearer::Missing => Err(Refusal::Unauthenticated(
            "this endpoint needs an access token: send 'Authorization: Bearer <token>'; MCP clients find where to get \
             one through the resource_metadata link in the WWW-Authenticate header"
                .to_owned(),
        )),
        Bearer::OtherScheme => {
            Err(Refusal::Unauthenticated("the Authorization header must have the form 'Bearer <token>'".to_owned()))
        }
        Bearer::Token(token) => policy.authenticate(token, now_ms()).map_err(|failure| match failure {
            AuthFailure::Unknown => Refusal::Unauthenticated(
                "the bearer token is not valid for this tenant; sign in again or ask a tenant admin for a new token"
                    .to_owned(),
            ),
            AuthFailure::Expired => {
                Refusal::Unauthenticated("the bearer token has expired; sign in again or create a new token".to_owned())
            }
            AuthFailure::Suspended(reason) => {
                Refusal::Suspended(format!("your access is suspended by a tenant admin: {reason}"))
            }
        }),
    };
    match authenticated {
        Ok(principal) => {
            record.principal(&principal);
            Ok(Admitted { policy, route, principal })
        }
        Err(refusal) => {
            if let Refusal::Unauthenticated(why) | Refusal::Suspended(why) = &refusal {
                record.outcome(Outcome::Denied, why.clone());
            }
            Err(refusal)
        }
    }
}

enum Bearer<'a> {
    Missing,
    OtherScheme,
    Token(&'a str),
}

fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Bearer::Missing };
    match value.to_str().ok().and_then(|v| v.trim().split_once(' ')) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Bearer::Token(token.trim())
        }
        _ => Bearer::OtherScheme,
    }
}

/// Why a 2025-era request speaks a protocol version this gateway does not, if it does (2026-07-28
/// requests are told apart before, by `modern::is_modern`, and checked there).
fn unsupported_version(headers: &HeaderMap, params: Option<&Value>) -> Option<String> {
    if let Some(value) = headers.get(&MCP_PROTOCOL_VERSION) {
        let version = value.to_str().unwrap_or("");
        if !SUPPORTED_PROTOCOL_VERSIONS.contains(&version) {
            return Some(format!("unsupported MCP-Protocol-Version {version:?}"));
        }
    }
    let meta = params.and_then(|p| p.get("_meta")).and_then(|m| m.get(META_PROTOCOL_VERSION));
    if let Some(version) = meta.and_then(Value::as_str)
        && !SUPPORTED_PROTOCOL_VERSIONS.contains(&version)
    {
        return Some(format!("unsupported protocol version {version:?} in _meta"));
    }
    None
}

/// Answers `initialize`: opens the session's upstream sessions (in parallel) so that the capabilities
/// advertised are exactly what the upstreams offer, and seals the session into its `Mcp-Session-Id`
/// with the tenant's newest session key. An upstream that cannot be opened now is left out of both
/// (and opened on first use).
async fn initialize(
    gw: &Gateway,
    policy: &TenantPolicy,
    route: &VirtualServerRoute,
    principal: &Principal,
    params: Option<&Value>,
    id: &Id,
    record: &mut Record,
) -> Response {
    let Some(key) = policy.session_keys().first() else {
        let why = "this tenant's policy bundle has no session key, so no session can be opened; \
                   the control plane adds one when it compiles the tenant's next bundle";
        warn!(tenant = %policy.manifest.tenant, "{why}");
        record.outcome(Outcome::Invalid, why.to_owned());
        let body = error_response(Some(id), INTERNAL_ERROR, why, Some(ErrorCode::NoBundle));
        return rpc(StatusCode::SERVICE_UNAVAILABLE, body);
    };
    let requested = params.and_then(|p| p.get("protocolVersion")).and_then(Value::as_str);
    // Version negotiation: echo a version we speak, otherwise offer our latest and let the client decide.
    let version = requested.filter(|v| SUPPORTED_PROTOCOL_VERSIONS.contains(v)).unwrap_or(LATEST_PROTOCOL_VERSION);
    let client_info = |field: &str| {
        params
            .and_then(|p| p.pointer(&format!("/clientInfo/{field}")))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(MAX_CLIENT_INFO_CHARS).collect::<String>())
    };
    // Declared upstream: only the server-to-client features the gateway relays.
    let mut capabilities = serde_json::Map::new();
    if let Some(Value::Object(declared)) = params.and_then(|p| p.get("capabilities")) {
        for (name, value) in declared {
            if RELAYED_CLIENT_CAPABILITIES.contains(&name.as_str()) {
                capabilities.insert(name.clone(), value.clone());
            }
        }
    }
    let capabilities = Value::Object(capabilities);
    let slots: HashMap<String, Arc<UpstreamSlot>> =
        route.upstreams.iter().map(|(server, _)| (server.clone(), Arc::default())).collect();
    let (slots_ref, capabilities_ref) = (&slots, &capabilities);
    let opened = join_all(route.upstreams.iter().map(|(server, url)| async move {
        let target = Target { slot: &slots_ref[server], url, capabilities: capabilities_ref };
        let result = gw.inner().upstreams.established(target).await;
        if let Err(e) = &result {
            warn!(server = %server, "could not open an upstream session at initialize: {e}");
        }
        result.ok().map(|upstream| (server, upstream))
    }))
    .await;
    let opened: Vec<(&String, Arc<crate::upstream::UpstreamSession>)> = opened.into_iter().flatten().collect();
    let upstream_capabilities: Vec<&Value> = opened.iter().map(|(_, u)| &u.capabilities).collect();
    let advertised = merge_capabilities(&upstream_capabilities);
    let claims = SessionClaims {
        format: seal::claims_format(),
        tenant: policy.manifest.tenant.clone(),
        virtual_server: route.slug.clone(),
        user_id: principal.user_id.clone(),
        token_id: principal.token_id.clone(),
        client_name: client_info("name"),
        client_version: client_info("version"),
        protocol_version: version.to_owned(),
        capabilities,
        upstreams: opened
            .iter()
            .map(|(server, upstream)| SealedUpstream {
                server: (*server).clone(),
                url_tag: seal::url_tag(&upstream.url),
                session_id: upstream.session_id.clone(),
                protocol_version: upstream.protocol_version.clone(),
                offers: upstream
                    .capabilities
                    .as_object()
                    .map(|o| o.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k.clone()).collect())
                    .unwrap_or_default(),
            })
            .collect(),
        issued_at_ms: now_ms(),
    };
    let token = seal::seal(key, &claims);
    let session = gw.inner().sessions.insert(Session::new(token, key.id.clone(), claims, route, slots));
    record.session(&session);
    record.outcome(Outcome::Allowed, None);
    let vs = &route.slug;
    let result = json!({
        "protocolVersion": version,
        "capabilities": advertised,
        "serverInfo": { "name": format!("gatehouse/{vs}"), "version": VERSION },
        "instructions": format!(
            "Gatehouse virtual server '{vs}': the tools of its upstream servers that your access roles grant you."
        ),
    });
    let mut response = rpc(StatusCode::OK, result_response(id, result));
    if let Ok(value) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(MCP_SESSION_ID, value);
    }
    response
}

/// The capabilities the gateway advertises: tools always; resources, prompts, completions and
/// logging when at least one upstream offers them; each flag (`listChanged`, `subscribe`) when one
/// of those upstreams sets it.
pub(crate) fn merge_capabilities(upstreams: &[&Value]) -> Value {
    fn offering<'a>(upstreams: &'a [&'a Value], name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        upstreams.iter().filter_map(move |c| c.get(name).filter(|v| !v.is_null()))
    }
    let flag =
        |name: &str, flag: &str| offering(upstreams, name).any(|c| c.get(flag).and_then(Value::as_bool) == Some(true));
    let offering = |name| offering(upstreams, name);
    let mut merged = serde_json::Map::new();
    merged.insert("tools".into(), json!({ "listChanged": flag("tools", "listChanged") }));
    if offering("resources").next().is_some() {
        merged.insert(
            "resources".into(),
            json!({ "subscribe": flag("resources", "subscribe"), "listChanged": flag("resources", "listChanged") }),
        );
    }
    if offering("prompts").next().is_some() {
        merged.insert("prompts".into(), json!({ "listChanged": flag("prompts", "listChanged") }));
    }
    for name in ["completions", "logging"] {
        if offering(name).next().is_some() {
            merged.insert(name.into(), json!({}));
        }
    }
    Value::Object(merged)
}

/// Why a request's session cannot be used.
enum SessionProblem {
    Missing,
    Unknown,
}

impl SessionProblem {
    fn status(&self) -> StatusCode {
        match self {
            SessionProblem::Missing => StatusCode::BAD_REQUEST,
            SessionProblem::Unknown => StatusCode::NOT_FOUND,
        }
    }
    fn code(&self) -> ErrorCode {
        match self {
            SessionProblem::Missing => ErrorCode::InvalidInput,
            SessionProblem::Unknown => ErrorCode::NotFound,
        }
    }
    fn rpc_code(&self) -> i64 {
        match self {
            SessionProblem::Missing => INVALID_REQUEST,
            SessionProblem::Unknown => SESSION_NOT_FOUND,
        }
    }
    fn message(&self) -> &'static str {
        match self {
            SessionProblem::Missing => "missing Mcp-Session-Id; send initialize first",
            SessionProblem::Unknown => "unknown or ended session; send initialize to start a new one",
        }
    }
}

/// The request's session: its sealed token must open with one of the tenant's session keys at this
/// tenant and virtual server, must not be expired, ended here or ended by a tenant admin, and must
/// belong to the caller's user. Every refusal is the same 404 as an unknown session, so a token reveals nothing. A session
/// this worker has cached is taken from the cache (the token string is the key, so it was opened or
/// sealed here); any other is opened from the token and cached.
fn session_of(
    gw: &Gateway,
    headers: &HeaderMap,
    policy: &TenantPolicy,
    route: &VirtualServerRoute,
    principal: &Principal,
) -> Result<Arc<Session>, SessionProblem> {
    let raw = headers.get(&MCP_SESSION_ID).ok_or(SessionProblem::Missing)?;
    let token = raw.to_str().map_err(|_| SessionProblem::Unknown)?;
    if token.len() > seal::MAX_TOKEN_CHARS {
        return Err(SessionProblem::Unknown);
    }
    let tenant = policy.manifest.tenant.as_str();
    let now = now_ms();
    let sessions = &gw.inner().sessions;
    if sessions.is_ended(&seal::audit_id(token)) {
        return Err(SessionProblem::Unknown);
    }
    let session = match sessions.get(token) {
        Some(session) => session,
        None => {
            let (claims, key_id) = seal::open(policy.session_keys(), tenant, &route.slug, token, now).map_err(|e| {
                debug!(session = %seal::audit_id(token), "refused a session token: {e}");
                SessionProblem::Unknown
            })?;
            if claims.user_id != principal.user_id {
                debug!(session = %seal::audit_id(token), "refused a session token of another user");
                return Err(SessionProblem::Unknown);
            }
            sessions.insert(Session::new(token.to_owned(), key_id, claims, route, HashMap::new()))
        }
    };
    let usable = session.tenant == tenant
        && session.virtual_server == route.slug
        && session.user_id == principal.user_id
        && !session.expired(now)
        // A pooled session (2026-07-28 clients) is never a client's `Mcp-Session-Id`.
        && !session.pooled
        // A key that left the bundle (the end of a rotation) ends its sessions, cached or not.
        && policy.session_keys().iter().any(|k| k.id == session.key_id)
        // A tenant admin ended this user's (or every) session after it began.
        && !policy.session_ended(&session.user_id, session.issued_at_ms);
    if !usable {
        return Err(SessionProblem::Unknown);
    }
    Ok(session)
}

/// One upstream tool (or prompt) as the client sees it.
pub(crate) struct Listed {
    /// The name shown to the client.
    pub exposed: String,
    pub route: ToolRoute,
    /// The tool definition, with `name` set to `exposed`.
    pub tool: Value,
}

/// An upstream that failed, for the -32004 answer.
pub(crate) struct UpstreamFailure {
    pub server: String,
    pub error: UpstreamError,
}

/// What rule conditions see of this request: the TCP peer's address, the session's client
/// application (`clientInfo.name`, sealed in the session token) and the time.
fn condition_facts<'a>(record: &Record, session: &'a Session) -> gatehouse_bundle::conditions::RequestFacts<'a> {
    gatehouse_bundle::conditions::RequestFacts::new(record.client_ip, session.client_name.as_deref(), None)
}

pub(crate) async fn tools_list(
    gw: &Gateway,
    policy: &TenantPolicy,
    route: &VirtualServerRoute,
    session: &Session,
    principal: &Principal,
    id: &Id,
    record: &mut Record,
) -> Value {
    match catalog(gw, route, session).await {
        Ok(listed) => {
            // Monitor mode lists everything: a call of any listed tool goes through.
            let monitor = route.mode == PolicyMode::Monitor;
            let facts = condition_facts(record, session);
            let visible: Vec<Value> = listed
                .into_iter()
                .filter(|l| match policy.listing_in(&facts, &principal.user_id, &l.route.server, &l.route.name) {
                    Listing::Visible => true,
                    // Monitor mode lists what access policy would hide, never what the kill switch hides.
                    Listing::Hidden => monitor,
                    Listing::Suspended => false,
                })
                .map(|l| l.tool)
                .collect();
            record.outcome(Outcome::Allowed, None);
            result_response(id, json!({ "tools": visible }))
        }
        Err(failure) => upstream_failed(id, failure, record),
    }
}

#[allow(clippy::too_many_arguments)] // the request's whole context; a struct would only rename it
pub(crate) async fn tools_call(
    gw: &Gateway,
    policy: &Arc<TenantPolicy>,
    route: &VirtualServerRoute,
    session: &Arc<Session>,
    principal: &Principal,
    id: &Id,
    params: Option<Value>,
    record: &mut Record,
) -> Response {
    let ok = |body| rpc(StatusCode::OK, body);
    let (mut params, name) = match params {
        Some(params) => match params.get("name").and_then(Value::as_str).map(str::to_owned) {
            Some(name) => (params, name),
            None => return ok(invalid_params(id, "tools/call needs params.name, the tool's name", record)),
        },
        None => return ok(invalid_params(id, "tools/call needs params with the tool's name", record)),
    };
    record.event.tool = Some(name.clone());
    record.event.exposed_tool = Some(name.clone());
    let target = match resolve(gw, route, session, &name).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            let mut why = format!("unknown tool '{name}'; call tools/list to see the tools you may use");
            for (server, reason) in &route.suspended {
                why.push_str(&format!(
                    " (server '{server}' of this virtual server is suspended by a tenant admin: {reason})"
                ));
            }
            return ok(invalid_params(id, &why, record));
        }
        Err(failure) => return ok(upstream_failed(id, failure, record)),
    };
    record.event.upstream_server = Some(target.server.clone());
    record.event.tool = Some(target.name.clone());
    // Virtual-server shaping: the narrowed schema is enforced and fixed values injected before
    // anything decides, so access policy and data rules see the final arguments.
    if let Some(o) = route.shaping.tool(&target.server, &target.name).filter(|o| o.shapes_arguments()) {
        let arguments = params.as_object_mut().map(|p| p.entry("arguments").or_insert_with(|| json!({})));
        match arguments.and_then(Value::as_object_mut) {
            Some(arguments) => {
                if let Err(refusal) = check_arguments(o, &name, arguments) {
                    return ok(shaped_refusal(id, &name, refusal, record));
                }
            }
            None => return ok(invalid_params(id, "tools/call params.arguments must be an object", record)),
        }
    }
    let arguments = params.get("arguments").and_then(Value::as_object);
    let facts = condition_facts(record, session);
    match policy.authorize_call_in(&facts, &principal.user_id, &target.server, &target.name, arguments) {
        Decision::Allow { rule, .. } => record.event.rule_id = Some(rule),
        // Monitor mode observes access policy; it never relaxes the kill switch.
        Decision::Deny { reason, rule, kind } if route.mode == PolicyMode::Monitor && kind != DenyKind::Suspended => {
            record.event.rule_id = Some(rule);
            record.would_deny = Some(reason);
        }
        Decision::Deny { reason, rule, kind } => {
            record.outcome(Outcome::Denied, reason.clone());
            let code = match kind {
                DenyKind::NotGranted => ErrorCode::ToolNotGranted,
                DenyKind::Arguments => ErrorCode::ArgumentsNotAllowed,
                DenyKind::Suspended => ErrorCode::Suspended,
            };
            let body = json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {
                    "code": POLICY_DENIED,
                    "message": reason,
                    "data": { "code": code.as_str(), "tool": name, "rule": rule },
                },
            });
            record.event.rule_id = Some(rule);
            return ok(body);
        }
    }
    if let Some(refused) = rate_limit(gw, policy, route, principal, &target, &name, id, record).await {
        return refused;
    }
    let screen = Screen::for_server(policy, &target.server);
    if let Some(screen) = &screen
        && let Err((reason, rule)) = screen.arguments(&Subject::Tool(target.name.clone()), &mut params, record)
    {
        let body = screen::refusal(&json!(id), &reason, &Subject::Tool(name.clone()), &rule);
        record.blocked(reason, rule);
        return ok(body);
    }
    // Forward the client's params (arguments, `_meta`) as they are (redacted where a rule says so),
    // under the upstream's tool name. Only the body goes upstream: the client's Authorization
    // header never does.
    if let Some(object) = params.as_object_mut() {
        object.insert("name".to_owned(), Value::String(target.name.clone()));
    }
    let screen = screen.map(|s| (s, Subject::Tool(name)));
    forward_screened(gw, route, session, &target.server, id, "tools/call", Some(&params), record, screen).await
}

/// Checks the rate limits that count this call (after access and the kill switch, so a refused call
/// spends no allowance). A refusal is HTTP 429 with `Retry-After` and a JSON-RPC error naming the
/// limit; in monitor mode it is audited as `would_deny` and the call goes on.
#[allow(clippy::too_many_arguments)] // the request's whole context
async fn rate_limit(
    gw: &Gateway,
    policy: &TenantPolicy,
    route: &VirtualServerRoute,
    principal: &Principal,
    target: &ToolRoute,
    name: &str,
    id: &Id,
    record: &mut Record,
) -> Option<Response> {
    let applied: Vec<ratelimit::Applied<'_>> = policy
        .rate_limits_for(&principal.user_id, &target.server, &target.name)
        .map(|l| ratelimit::Applied {
            limit_id: &l.limit.id,
            subject: ratelimit::subject(l.limit.scope, &principal.user_id),
            quota: ratelimit::Quota::per_seconds(l.limit.requests, l.limit.per_seconds, l.limit.burst),
        })
        .collect();
    if applied.is_empty() {
        return None;
    }
    let refusal = ratelimit::check(gw.inner(), &policy.manifest.tenant, &applied).await.err()?;
    let secs = refusal.retry_after_secs();
    let reason = format!("rate limit {} reached for tool '{name}'; retry after {secs} s", refusal.limit_id);
    record.set_rule(refusal.limit_id.to_owned());
    if route.mode == PolicyMode::Monitor {
        record.would_deny.get_or_insert(reason);
        return None;
    }
    record.outcome(Outcome::Denied, reason.clone());
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": POLICY_DENIED,
            "message": reason,
            "data": { "code": ErrorCode::RateLimited.as_str(), "tool": name, "rule": refusal.limit_id, "retryAfter": secs },
        },
    });
    let mut response = rpc(StatusCode::TOO_MANY_REQUESTS, body);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    Some(response)
}

/// Forwards a client request to upstream `server` and relays the answer: JSON as JSON, an event
/// stream as an event stream (progress, logs and server requests on it reach the client as they
/// come). The audit event of a streamed answer is emitted when the stream ends.
#[allow(clippy::too_many_arguments)] // the request's whole context
pub(crate) async fn forward(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Arc<Session>,
    server: &str,
    id: &Id,
    method: &str,
    params: Option<&Value>,
    record: &mut Record,
) -> Response {
    forward_screened(gw, route, session, server, id, method, params, record, None).await
}

/// [`forward`], with the answer screened by data-classification rules (for `tools/call`,
/// `prompts/get` and `resources/read`; the subject names what refusals are about).
#[allow(clippy::too_many_arguments)] // the request's whole context
pub(crate) async fn forward_screened(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Arc<Session>,
    server: &str,
    id: &Id,
    method: &str,
    params: Option<&Value>,
    record: &mut Record,
    screen: Option<(Screen, Subject)>,
) -> Response {
    record.event.upstream_server = Some(server.to_owned());
    let Some((index, (_, url))) = route.upstreams.iter().enumerate().find(|(_, (s, _))| s == server) else {
        let error = UpstreamError::Protocol("it is no longer part of this virtual server".to_owned());
        return rpc(StatusCode::OK, upstream_failed(id, UpstreamFailure { server: server.to_owned(), error }, record));
    };
    let slot = session.upstream_slot(server);
    let target = Target { slot: &slot, url, capabilities: &session.capabilities };
    let in_flight = session.track(id, server);
    let upstream_id = relay::upstream_request_id(id);
    let call = crate::telemetry::UpstreamCall { server, url, method, upstream_id: &upstream_id };
    let traced = record.upstream_call(gw, call, params);
    let sending = gw.inner().upstreams.forward(target, &upstream_id, method, traced.as_ref().or(params));
    match crate::telemetry::within(record.trace.as_deref(), sending).await {
        Ok(Answer::Json(mut response)) => {
            if let Some((screen, subject)) = &screen
                && screen.response(subject, &mut response, record)
            {
                if let Some(object) = response.as_object_mut() {
                    object.insert("id".to_owned(), json!(id));
                }
                return rpc(StatusCode::OK, response);
            }
            match response.pointer("/error/message") {
                Some(message) => {
                    let why = format!("upstream error: {}", message.as_str().unwrap_or("no message"));
                    record.outcome(Outcome::UpstreamError, why);
                }
                None => record.outcome(Outcome::Allowed, None),
            }
            if let Some(object) = response.as_object_mut() {
                object.insert("id".to_owned(), json!(id));
            }
            crate::modern::for_client(session.pooled, method, &mut response);
            rpc(StatusCode::OK, response)
        }
        Ok(Answer::Stream(stream)) => {
            let mut record = record.detach();
            let (tx, rx) = relay::channel();
            let (gw, server, id) = (gw.clone(), server.to_owned(), id.clone());
            // A 2026-07-28 client (pooled session) cannot be asked anything: the gateway answers
            // the upstream's requests itself, on the same upstream session, so its call finishes.
            let answer_upstream = session.pooled.then(|| {
                let (gw, slot, url, method) = (gw.clone(), slot.clone(), url.clone(), method.to_owned());
                move |request: &Value| {
                    let Some(answer) = crate::modern::answer_for_server_request(request) else { return };
                    debug!(method = %method, "answering an upstream's server request for a 2026-07-28 client");
                    let (gw, slot, url) = (gw.clone(), slot.clone(), url.clone());
                    tokio::spawn(async move {
                        let none = json!({});
                        let target = Target { slot: &slot, url: &url, capabilities: &none };
                        if let Err(e) = gw.inner().upstreams.send(target, &answer).await {
                            warn!("could not answer an upstream's server request: {e}");
                        }
                    });
                }
            });
            let (decorate, pooled) = (method.to_owned(), session.pooled);
            tokio::spawn(async move {
                let _in_flight = in_flight;
                let timeout = gw.inner().upstreams.timeout();
                let mut on_answer = |message: &mut Value| {
                    if let Some((screen, subject)) = &screen {
                        screen.response(subject, message, &mut record);
                    }
                    crate::modern::for_client(pooled, &decorate, message);
                };
                let server_requests = answer_upstream.as_ref().map(|f| f as &(dyn Fn(&Value) + Send + Sync));
                let end =
                    relay::pump_post(stream, index, &server, &id, timeout, &tx, &mut on_answer, server_requests).await;
                match end {
                    PostEnd::Answered(None) => record.outcome(Outcome::Allowed, None),
                    PostEnd::Answered(Some(message)) => {
                        record.outcome(Outcome::UpstreamError, format!("upstream error: {message}"));
                    }
                    PostEnd::ClientGone => {
                        record.outcome(Outcome::Allowed, "the client left before the answer".to_owned());
                    }
                    PostEnd::Suspended => {
                        let why = "the upstream paused its stream before the answer; the client may resume it";
                        record.outcome(Outcome::Allowed, why.to_owned());
                    }
                    PostEnd::Failed(message) => {
                        warn!("{message}");
                        record.outcome(Outcome::UpstreamError, message);
                    }
                }
                drop(tx);
                record.emit(&gw).await;
            });
            relay::sse_response(rx)
        }
        Err(error) => {
            rpc(StatusCode::OK, upstream_failed(id, UpstreamFailure { server: server.to_owned(), error }, record))
        }
    }
}

/// Where exposed tool `name` leads: from the session's latest listing, else from a fresh one (clients
/// may call a tool they know without listing first, and a new bundle may have changed the upstreams).
async fn resolve(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    name: &str,
) -> Result<Option<ToolRoute>, UpstreamFailure> {
    let known = |target: &ToolRoute| route.upstreams.iter().any(|(s, _)| *s == target.server);
    if let Some(target) = session.tool(name).filter(known) {
        return Ok(Some(target));
    }
    let listed = catalog(gw, route, session).await?;
    Ok(listed.into_iter().find(|l| l.exposed == name).map(|l| l.route).filter(known))
}

/// Lists every tool of every upstream of the virtual server (unfiltered), in upstream order, and
/// remembers the name map in the session. The map holds ungranted tools too, so that calling one
/// gets a policy denial rather than "unknown tool".
pub(crate) async fn catalog(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
) -> Result<Vec<Listed>, UpstreamFailure> {
    let lists = list_all(gw, route, session, "tools", "tools/list", "tools").await?;
    let listed = merge(&route.shaping, lists, true);
    session.set_tools(listed.iter().map(|l| (l.exposed.clone(), l.route.clone())).collect());
    if session.pooled {
        // 2026-07-28 clients mirror `x-mcp-header` arguments of the schema they see in headers.
        let mapped = listed.iter().filter_map(|l| {
            let schema = l.tool.get("inputSchema")?;
            gatehouse_core::headers::tool_param_headers(schema).ok().map(|h| (l.exposed.clone(), h))
        });
        session.set_tool_headers(mapped.collect());
    }
    Ok(listed)
}

/// Lists `key` items (`method`, all pages) of every upstream that offers `capability`, in
/// parallel, returned in upstream order. One failing upstream fails the whole list.
pub(crate) async fn list_all(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    capability: &str,
    method: &str,
    key: &str,
) -> Result<Vec<(String, Vec<Value>)>, UpstreamFailure> {
    let lists = join_all(route.upstreams.iter().map(|(server, url)| async move {
        let slot = session.upstream_slot(server);
        let target = Target { slot: &slot, url, capabilities: &session.capabilities };
        let listed = async {
            if !gw.inner().upstreams.established(target).await?.offers(capability) {
                return Ok(Vec::new());
            }
            list_upstream(gw, target, server, method, key).await
        };
        match listed.await {
            Ok(items) => Ok((server.clone(), items)),
            Err(error) => Err(UpstreamFailure { server: server.clone(), error }),
        }
    }))
    .await;
    lists.into_iter().collect()
}

/// All pages of one upstream's list `method` (bounded).
async fn list_upstream(
    gw: &Gateway,
    target: Target<'_>,
    server: &str,
    method: &str,
    key: &str,
) -> Result<Vec<Value>, UpstreamError> {
    let mut items = Vec::new();
    let mut params = json!({});
    for _ in 0..MAX_LIST_PAGES {
        let mut response = gw.inner().upstreams.request(target, method, &params).await?;
        if let Some(message) = response.pointer("/error/message") {
            return Err(UpstreamError::Rpc(format!("{method} failed: {}", message.as_str().unwrap_or("no message"))));
        }
        let Some(result) = response.get_mut("result") else {
            return Err(UpstreamError::Protocol(format!("{method} answered without a result")));
        };
        if let Some(Value::Array(page)) = result.get_mut(key).map(Value::take) {
            items.extend(page);
        }
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(cursor) => params = json!({ "cursor": cursor }),
            None => {
                remember_tools(gw, target, method, &items).await;
                return Ok(items);
            }
        }
    }
    remember_tools(gw, target, method, &items).await;
    warn!(server, "{method} still had more pages after {MAX_LIST_PAGES}; using those");
    Ok(items)
}

/// After a 2026-07-28 upstream's `tools/list`: which arguments its tools mirror in `Mcp-Param-{X}`
/// headers, for the calls the gateway forwards to it.
async fn remember_tools(gw: &Gateway, target: Target<'_>, method: &str, items: &[Value]) {
    if method != "tools/list" {
        return;
    }
    if let Ok(upstream) = gw.inner().upstreams.established(target).await
        && upstream.is_modern()
    {
        crate::modern::remember_tools(&upstream, items);
    }
}

/// Merges the upstreams' tool (`tools` true) or prompt lists in order, naming them by the virtual
/// server's conflict strategy and prefixes (`gatehouse_core::shaping::expose`; by default a name
/// more than one upstream uses is exposed as `{server}__{tool}` for each of them) and reshaping the
/// tools that have an override (rename, description, fixed and hidden parameters, narrowed enums).
/// No item is dropped: an unforeseen clash falls back to a prefixed name, with a warning. Names are
/// chosen from the unfiltered lists, so a tool keeps its name when grants change.
pub(crate) fn merge(shaping: &Shaping, lists: Vec<(String, Vec<Value>)>, tools: bool) -> Vec<Listed> {
    let lists: Vec<(String, Vec<(String, Value)>)> = lists
        .into_iter()
        .map(|(server, items)| {
            let named = items
                .into_iter()
                .filter_map(|item| match item.get("name").and_then(Value::as_str) {
                    Some(name) => Some((name.to_owned(), item)),
                    None => {
                        warn!(server = %server, "skipping an upstream tool or prompt without a name");
                        None
                    }
                })
                .collect();
            (server, named)
        })
        .collect();
    let names: Vec<(&str, Vec<&str>)> =
        lists.iter().map(|(s, items)| (s.as_str(), items.iter().map(|(n, _)| n.as_str()).collect())).collect();
    let (exposed, warnings) = shaping.names(&names, tools);
    for warning in warnings {
        warn!("{warning}");
    }
    let mut merged = Vec::new();
    for ((server, items), exposed) in lists.into_iter().zip(exposed) {
        for ((name, mut tool), exposed) in items.into_iter().zip(exposed) {
            match shaping.tool(&server, &name).filter(|_| tools) {
                Some(o) => shape_definition(o, &exposed, &mut tool),
                None => {
                    if let Some(object) = tool.as_object_mut() {
                        object.insert("name".to_owned(), Value::String(exposed.clone()));
                    }
                }
            }
            merged.push(Listed { exposed, route: ToolRoute { server: server.clone(), name }, tool });
        }
    }
    merged
}

/// The -32602 refusal of a call whose arguments break the virtual server's narrowed schema.
fn shaped_refusal(id: &Id, tool: &str, refusal: ArgumentRefusal, record: &mut Record) -> Value {
    record.outcome(Outcome::Invalid, refusal.message.clone());
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": INVALID_PARAMS,
            "message": refusal.message,
            "data": { "code": ErrorCode::InvalidInput.as_str(), "tool": tool, "param": refusal.param },
        },
    })
}

pub(crate) fn invalid_params(id: &Id, why: &str, record: &mut Record) -> Value {
    record.outcome(Outcome::Invalid, why.to_owned());
    error_response(Some(id), INVALID_PARAMS, why, None)
}

pub(crate) fn upstream_failed(id: &Id, failure: UpstreamFailure, record: &mut Record) -> Value {
    let UpstreamFailure { server, error } = failure;
    let message = format!("upstream server '{server}' is unavailable: {error}");
    warn!("{message}");
    record.event.upstream_server.get_or_insert_with(|| server.clone());
    record.outcome(Outcome::UpstreamError, message.clone());
    relay::upstream_error(Some(id), &server, &message)
}

/// A JSON-RPC answer as `application/json` (streamed answers go through `relay::sse_response`).
pub(crate) fn rpc(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use gatehouse_core::jsonrpc::PARSE_ERROR;

    use super::*;

    fn tool(name: &str) -> Value {
        json!({ "name": name, "inputSchema": { "type": "object" } })
    }

    #[test]
    fn shared_names_are_prefixed_for_every_upstream() {
        let merged = merge(
            &Shaping::default(),
            vec![
                ("alpha".into(), vec![tool("echo"), tool("search")]),
                ("beta".into(), vec![tool("search"), json!({ "description": "nameless" })]),
            ],
            true,
        );
        let names: Vec<&str> = merged.iter().map(|l| l.exposed.as_str()).collect();
        assert_eq!(names, ["echo", "alpha__search", "beta__search"]);
        assert_eq!(merged[2].route, ToolRoute { server: "beta".into(), name: "search".into() });
        assert_eq!(merged[2].tool["name"], "beta__search");
    }

    #[test]
    fn merge_follows_the_strategy_and_reshapes_overridden_tools() {
        use gatehouse_bundle::format::VirtualServer;
        use gatehouse_core::shaping::{ConflictStrategy, FixedParam, ToolOverride, UpstreamPrefix};
        let add = json!({ "name": "add", "description": "Adds", "inputSchema": {
            "type": "object", "properties": { "a": { "type": "number" }, "b": { "type": "number" } }, "required": ["a", "b"] } });
        let lists =
            || vec![("alpha".to_owned(), vec![tool("echo"), add.clone()]), ("beta".to_owned(), vec![tool("echo")])];
        let vs = |strategy| VirtualServer {
            slug: "dev".into(),
            upstreams: vec!["alpha".into(), "beta".into()],
            mode: PolicyMode::Enforce,
            conflict_strategy: strategy,
            prefixes: vec![UpstreamPrefix { server: "beta".into(), prefix: "b".into() }],
            overrides: vec![ToolOverride {
                server: "alpha".into(),
                tool: "add".into(),
                rename: Some("add-forty".into()),
                fixed: vec![FixedParam { name: "a".into(), value: json!(40) }],
                ..Default::default()
            }],
        };
        let names = |strategy| -> Vec<String> {
            merge(&Shaping::new(&vs(strategy)), lists(), true).into_iter().map(|l| l.exposed).collect()
        };
        assert_eq!(names(ConflictStrategy::Auto), ["alpha__echo", "add-forty", "b__echo"]);
        assert_eq!(names(ConflictStrategy::Prefix), ["alpha__echo", "add-forty", "b__echo"]);
        assert_eq!(names(ConflictStrategy::Priority), ["echo", "add-forty", "b__echo"]);
        assert_eq!(names(ConflictStrategy::Explicit), ["alpha__echo", "add-forty", "b__echo"], "unforeseen: prefixed");
        let merged = merge(&Shaping::new(&vs(ConflictStrategy::Priority)), lists(), true);
        assert_eq!(merged[1].route, ToolRoute { server: "alpha".into(), name: "add".into() });
        assert_eq!(merged[1].tool["name"], "add-forty");
        assert_eq!(merged[1].tool["inputSchema"]["required"], json!(["b"]));
        assert!(merged[1].tool["inputSchema"]["properties"].get("a").is_none());
        // Prompts: the strategy and prefixes, never the tool overrides.
        let prompts = merge(&Shaping::new(&vs(ConflictStrategy::Priority)), lists(), false);
        assert_eq!(prompts.iter().map(|l| l.exposed.as_str()).collect::<Vec<_>>(), ["echo", "add", "b__echo"]);
        assert_eq!(prompts[1].tool["inputSchema"]["required"], json!(["a", "b"]));
    }

    #[test]
    fn parse_errors_map_to_json_rpc_codes() {
        assert_eq!(parse_body(b"{nope").unwrap_err().0, PARSE_ERROR);
        assert_eq!(parse_body(b"[]").unwrap_err().0, INVALID_REQUEST);
        assert_eq!(parse_body(b"42").unwrap_err().0, INVALID_REQUEST);
        assert_eq!(parse_body(br#"{"jsonrpc":"1.0","method":"x"}"#).unwrap_err().0, INVALID_REQUEST);
        assert_eq!(parse_body(br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#).unwrap_err().0, INVALID_REQUEST);
        assert_eq!(parse_body(br#"{"jsonrpc":"2.0","id":1}"#).unwrap_err().0, INVALID_REQUEST);
        assert_eq!(parse_body(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#).unwrap_err().0, INVALID_REQUEST);
        assert!(parse_body(br#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#).unwrap().is_request());
        assert!(parse_body(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).is_ok());
    }

    #[test]
    fn protocol_versions() {
        let mut headers = HeaderMap::new();
        assert!(unsupported_version(&headers, None).is_none());
        let meta = json!({ "_meta": { META_PROTOCOL_VERSION: "2026-07-28" } });
        assert!(unsupported_version(&headers, Some(&meta)).is_some());
        headers.insert(MCP_PROTOCOL_VERSION, HeaderValue::from_static("2025-06-18"));
        assert!(unsupported_version(&headers, None).is_none());
        headers.insert(MCP_PROTOCOL_VERSION, HeaderValue::from_static("2026-07-28"));
        assert!(unsupported_version(&headers, None).is_some());
    }
}
