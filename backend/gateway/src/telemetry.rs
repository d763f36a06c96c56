//! OpenTelemetry traces of MCP requests, following the OpenTelemetry semantic conventions for the
//! Model Context Protocol (`docs/gen-ai/mcp.md` of the OpenTelemetry GenAI semantic conventions,
//! status "Development"), exported as OTLP/HTTP protobuf when an endpoint is configured.
//!
//! # What the conventions say, and what the gateway does
//!
//! * **Span name**: "SHOULD follow the format `{mcp.method.name} {target}` where target SHOULD match
//!   `{gen_ai.tool.name}` or `{gen_ai.prompt.name}` when applicable. If there is no low-cardinality
//!   `target` available, the Span name SHOULD be `{mcp.method.name}`." So `tools/call echo`,
//!   `prompts/get review`, `tools/list`. Resource URIs are never used as targets.
//! * **Server span**: "Span kind SHOULD be `SERVER`" for "the processing of the MCP request or
//!   notification initiated by the peer". One per POSTed JSON-RPC request or notification of a tenant
//!   this worker serves (not for client responses, GET or DELETE, nor for POSTs refused before their
//!   body was parsed: those have no MCP method; `/metrics` counts them). It starts when the HTTP
//!   request arrived and ends when the audit event is emitted (for a streamed answer: when the stream
//!   ends). Attributes: `mcp.method.name` (required), `jsonrpc.request.id` (requests only, "a string
//!   representation of the `id`"), `gen_ai.tool.name` (the name the client called) and
//!   `gen_ai.operation.name = execute_tool` on `tools/call`, `gen_ai.prompt.name` on `prompts/get`,
//!   `mcp.resource.uri` on `resources/read|subscribe|unsubscribe` (left out when a data rule found
//!   something in the URI), `mcp.session.id`,
//!   `mcp.protocol.version`, `network.transport = tcp`, `network.protocol.name = http`, and the
//!   gateway's own `gatehouse.tenant`, `gatehouse.virtual_server`, `gatehouse.outcome` (the audit
//!   outcome), `gatehouse.rule_id` (the rule that decided, when one did) and
//!   `gatehouse.upstream_server`.
//! * **`mcp.session.id`** is the audit id of the session (first 32 hex digits of the SHA-256 of the
//!   `Mcp-Session-Id`), never the sealed token itself, which is a credential.
//! * **Errors**: "`error.type` ... Conditionally Required: If and only if the operation fails", and
//!   "Span status SHOULD be set to `ERROR` when `error.type` attribute is present". The gateway knows
//!   the audit outcome rather than the JSON-RPC code of its answer, so `error.type` is the outcome's
//!   low-cardinality name (`denied`, `invalid`, `upstream_error`; the conventions allow custom values)
//!   and the status description is the audit reason. `allowed` and `would_deny` (monitor mode lets
//!   the call through) are not failures. `tool_error` (a result with `isError: true`) is not set: the
//!   gateway does not read results for it.
//! * **Context propagation**: "Instrumentations SHOULD propagate context ... by injecting it into the
//!   MCP request `params._meta` property bag ... The receiver extracts the context from
//!   `params._meta` and uses it as the remote parent", and "the context propagation keys SHOULD be
//!   written unprefixed" (`traceparent`, `tracestate`, `baggage`). The server span's parent is the
//!   W3C trace context in the request's `params._meta`; the HTTP `traceparent` header is not used.
//! * **Client span**: "Span kind SHOULD be `CLIENT`"; "reported by the MCP client when it initiates
//!   the request ... It covers the time to receive the response or ack from the peer." One per request
//!   the gateway forwards to an upstream (`tools/call`, `resources/read`, `prompts/get`, ...), a child
//!   of the server span, with `mcp.method.name`, `gen_ai.tool.name` (the upstream's name of the tool),
//!   `gen_ai.prompt.name`, `mcp.resource.uri`, `jsonrpc.request.id` (the id sent upstream),
//!   `server.address`, `server.port`, `network.transport`, `gatehouse.upstream_server`. Its context
//!   replaces `traceparent` (and `tracestate`) in the forwarded `params._meta`; every other `_meta`
//!   key (`progressToken`, `baggage`, ...) goes upstream untouched. The gateway's own requests
//!   (`initialize`, list fan-out) get no spans.
//!
//! # Cost
//!
//! Without an endpoint there is no tracer at all: `Record` holds `None`, nothing is extracted,
//! allocated or injected, and forwarded params are passed on by reference as before. With one, a
//! traced request costs the span objects and, when forwarded, one copy of the params (to add the
//! trace context to `_meta`). Spans are batched by the SDK's batch processor (its own thread; the
//! standard `OTEL_BSP_*` variables tune it) and sent with the worker's own reqwest client (rustls,
//! ring) on the worker's Tokio runtime: no second HTTP or TLS stack, no gRPC. Sampling is the SDK's
//! default (parent-based, always on), or `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use gatehouse_core::audit::{AuditEvent, Outcome};
use gatehouse_core::jsonrpc::Id;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use serde_json::{Map, Value};
use tracing::warn;

/// Upper bound of one OTLP export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The OTLP/HTTP path of traces.
const TRACES_PATH: &str = "/v1/traces";

/// The worker's tracer, or nothing when no OTLP endpoint is configured.
pub(crate) struct Telemetry {
    otel: Option<Otel>,
}

struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

/// The traces URL for a configured endpoint: a collector's base URL (`http://collector:4318`) gets
/// `/v1/traces` appended, as `OTEL_EXPORTER_OTLP_ENDPOINT` does; a URL ending in it is kept.
pub(crate) fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    let uri: http::Uri = endpoint.parse().with_context(|| format!("the OTLP endpoint {endpoint:?}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        anyhow::bail!("the OTLP endpoint {endpoint:?} is not an absolute http(s) URL");
    }
    Ok(if endpoint.ends_with(TRACES_PATH) { endpoint.to_owned() } else { format!("{endpoint}{TRACES_PATH}") })
}

impl Telemetry {
    /// No tracing.
    pub(crate) fn disabled() -> Self {
        Self { otel: None }
    }

    /// Traces exported to `endpoint` (OTLP/HTTP protobuf) with `http`, from the current Tokio runtime.
    pub(crate) fn otlp(endpoint: &str, http: reqwest::Client) -> anyhow::Result<Self> {
        let url = traces_url(endpoint)?;
        let client = OtlpHttp { http, runtime: tokio::runtime::Handle::current() };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()
            .with_context(|| format!("building the OTLP exporter for {url}"))?;
        let mut resource = Resource::builder().with_attribute(KeyValue::new("service.version", crate::VERSION));
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("gatehouse-gateway");
        }
        let provider =
            SdkTracerProvider::builder().with_resource(resource.build()).with_batch_exporter(exporter).build();
        let tracer = provider.tracer("gatehouse-gateway");
        tracing::info!(endpoint = %url, "exporting OpenTelemetry traces (OTLP/HTTP protobuf)");
        Ok(Self { otel: Some(Otel { provider, tracer, propagator: TraceContextPropagator::new() }) })
    }

    /// Starts the server span of a JSON-RPC request or notification that arrived at `started`, as a
    /// child of the trace context in its `params._meta`. `None` when tracing is off or for a client
    /// response (no method).
    pub(crate) fn server_span(
        &self,
        method: Option<&str>,
        id: Option<&Id>,
        params: Option<&Value>,
        started: Instant,
    ) -> Option<Box<RequestTrace>> {
        let otel = self.otel.as_ref()?;
        let method = method?;
        let meta = params.and_then(|p| p.get("_meta")).and_then(Value::as_object);
        let parent = match meta {
            Some(meta) => otel.propagator.extract_with_context(&Context::new(), &Meta(meta)),
            None => Context::new(),
        };
        let start = SystemTime::now().checked_sub(started.elapsed()).unwrap_or_else(SystemTime::now);
        let mut attributes = vec![
            KeyValue::new("mcp.method.name", method.to_owned()),
            KeyValue::new("network.transport", "tcp"),
            KeyValue::new("network.protocol.name", "http"),
        ];
        if let Some(id) = id {
            attributes.push(KeyValue::new("jsonrpc.request.id", id_string(id)));
        }
        let target = target_attributes(method, params, &mut attributes);
        let span = otel
            .tracer
            .span_builder(span_name(method, target.as_deref()))
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&otel.tracer, &parent);
        Some(Box::new(RequestTrace { server: span, client: None, resource_uri: resource_uri(method, params) }))
    }

    /// Starts the client span of a request forwarded to upstream `server` at `url` (as `method`, with
    /// upstream-side id `upstream_id`), and returns `params` with its context in `_meta`.
    pub(crate) fn client_span(
        &self,
        trace: &mut RequestTrace,
        call: UpstreamCall<'_>,
        params: Option<&Value>,
    ) -> Option<Value> {
        let otel = self.otel.as_ref()?;
        let UpstreamCall { server, url, method, upstream_id } = call;
        let mut attributes = vec![
            KeyValue::new("mcp.method.name", method.to_owned()),
            KeyValue::new("network.transport", "tcp"),
            KeyValue::new("network.protocol.name", "http"),
            KeyValue::new("gatehouse.upstream_server", server.to_owned()),
        ];
        match upstream_id {
            Value::String(s) => attributes.push(KeyValue::new("jsonrpc.request.id", s.clone())),
            Value::Number(n) => attributes.push(KeyValue::new("jsonrpc.request.id", n.to_string())),
            _ => {}
        }
        if let Ok(uri) = url.parse::<http::Uri>()
            && let Some(host) = uri.host()
        {
            attributes.push(KeyValue::new("server.address", host.trim_matches(['[', ']']).to_owned()));
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let target = target_attributes(method, params, &mut attributes);
        let parent = Context::new().with_remote_span_context(trace.server.span_context().clone());
        let span = otel
            .tracer
            .span_builder(span_name(method, target.as_deref()))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&otel.tracer, &parent);

        // The forwarded params: the client's, with this span's context in `_meta` (created if
        // missing; left alone if it is not an object, or if the params are not an object).
        let mut forwarded = params.cloned().unwrap_or_else(|| Value::Object(Map::new()));
        let injected = forwarded.as_object_mut().and_then(|object| {
            let meta = object.entry("_meta").or_insert_with(|| Value::Object(Map::new())).as_object_mut()?;
            let cx = Context::new().with_remote_span_context(span.span_context().clone());
            otel.propagator.inject_context(&cx, &mut MetaMut(meta));
            Some(())
        });
        if let Some(mut previous) = trace.client.replace(span) {
            previous.end();
        }
        injected.map(|()| forwarded)
    }

    /// Exports what is buffered and stops the exporter (waiting at most a few seconds).
    pub(crate) async fn shutdown(&self) {
        if let Some(otel) = &self.otel {
            let provider = otel.provider.clone();
            // The export runs on this runtime, so the blocking shutdown must not hold one of its threads.
            let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)).await;
            if let Ok(Err(e)) = done {
                warn!("could not export the last spans: {e}");
            }
        }
    }

    /// [`Telemetry::shutdown`] without waiting, for a worker dropped without a graceful shutdown.
    pub(crate) fn shutdown_in_background(&self) {
        if let Some(otel) = &self.otel {
            let provider = otel.provider.clone();
            let _ = std::thread::Builder::new()
                .name("otel-shutdown".into())
                .spawn(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT));
        }
    }
}

/// Where a forwarded request goes, for its client span.
pub(crate) struct UpstreamCall<'a> {
    pub(crate) server: &'a str,
    pub(crate) url: &'a str,
    pub(crate) method: &'a str,
    pub(crate) upstream_id: &'a Value,
}

/// The spans of one request, carried by its audit record.
pub(crate) struct RequestTrace {
    server: Span,
    client: Option<Span>,
    /// `mcp.resource.uri`, set when the request ends unless a data rule found something in it.
    resource_uri: Option<String>,
}

impl RequestTrace {
    /// Adds what the session tells (the negotiated protocol version).
    pub(crate) fn protocol_version(&mut self, version: &str) {
        self.server.set_attribute(KeyValue::new("mcp.protocol.version", version.to_owned()));
    }

    /// Ends the spans with what the audit event says about the request.
    pub(crate) fn finish(mut self, event: &AuditEvent) {
        let now = SystemTime::now();
        let failed = matches!(event.outcome, Outcome::Denied | Outcome::Invalid | Outcome::UpstreamError);
        if let Some(mut client) = self.client.take() {
            if event.outcome == Outcome::UpstreamError {
                client.set_attribute(KeyValue::new("error.type", Outcome::UpstreamError.as_str()));
                client.set_status(Status::error(event.reason.clone().unwrap_or_default()));
            }
            client.end_with_timestamp(now);
        }
        let span = &mut self.server;
        if let Some(uri) = self.resource_uri.take()
            && !event.findings.iter().any(|f| f.path == "/uri")
        {
            span.set_attribute(KeyValue::new("mcp.resource.uri", uri));
        }
        span.set_attribute(KeyValue::new("gatehouse.tenant", event.tenant.clone()));
        span.set_attribute(KeyValue::new("gatehouse.virtual_server", event.virtual_server.clone()));
        span.set_attribute(KeyValue::new("gatehouse.outcome", event.outcome.as_str()));
        if let Some(session) = &event.session_id {
            span.set_attribute(KeyValue::new("mcp.session.id", session.clone()));
        }
        if let Some(rule) = &event.rule_id {
            span.set_attribute(KeyValue::new("gatehouse.rule_id", rule.clone()));
        }
        if let Some(server) = &event.upstream_server {
            span.set_attribute(KeyValue::new("gatehouse.upstream_server", server.clone()));
        }
        if failed {
            span.set_attribute(KeyValue::new("error.type", event.outcome.as_str()));
            span.set_status(Status::error(event.reason.clone().unwrap_or_default()));
        }
        span.end_with_timestamp(now);
    }
}

/// `{method} {target}`, or `{method}` without a target.
fn span_name(method: &str, target: Option<&str>) -> String {
    match target {
        Some(target) => format!("{method} {target}"),
        None => method.to_owned(),
    }
}

/// Adds the tool, prompt or resource attributes of `method` from its params; the span-name target.
fn target_attributes(method: &str, params: Option<&Value>, attributes: &mut Vec<KeyValue>) -> Option<String> {
    let field = |name: &str| params.and_then(|p| p.get(name)).and_then(Value::as_str).map(str::to_owned);
    match method {
        "tools/call" => {
            attributes.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
            let tool = field("name")?;
            attributes.push(KeyValue::new("gen_ai.tool.name", tool.clone()));
            Some(tool)
        }
        "prompts/get" => {
            let prompt = field("name")?;
            attributes.push(KeyValue::new("gen_ai.prompt.name", prompt.clone()));
            Some(prompt)
        }
        _ => None,
    }
}

/// The `uri` of a resources method, recorded on the span only when the request ends (see
/// [`RequestTrace::finish`]): a data rule may find that the URI itself holds data it blocks or redacts.
fn resource_uri(method: &str, params: Option<&Value>) -> Option<String> {
    match method {
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            params.and_then(|p| p.get("uri")).and_then(Value::as_str).map(str::to_owned)
        }
        _ => None,
    }
}

/// A JSON-RPC id as the conventions want it: its string representation.
fn id_string(id: &Id) -> String {
    match id {
        Id::Num(n) => n.to_string(),
        Id::Str(s) => s.clone(),
    }
}

/// `params._meta` as a propagation carrier (string values only).
struct Meta<'a>(&'a Map<String, Value>);

impl Extractor for Meta<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetaMut<'a>(&'a mut Map<String, Value>);

impl Injector for MetaMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), Value::String(value));
    }
}

/// The OTLP exporter's HTTP client: the worker's reqwest client, driven on the worker's runtime (the
/// SDK's batch processor calls it from its own thread, outside any runtime).
#[derive(Debug)]
struct OtlpHttp {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .timeout(EXPORT_TIMEOUT)
            .body(body);
        let sent = self.runtime.spawn(async move {
            let response = request.send().await.inspect_err(|e| {
                warn!("could not send spans to the OTLP endpoint: {}", crate::bundles::describe(e));
            })?;
            let status = response.status();
            if !status.is_success() {
                warn!("the OTLP endpoint refused spans with HTTP {}", status.as_u16());
            }
            let mut answer = Response::builder().status(status);
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(answer.body(body)?)
        });
        sent.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(traces_url("http://collector:4318").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("https://c.example/otlp/v1/traces").unwrap(), "https://c.example/otlp/v1/traces");
        assert!(traces_url("collector:4318").is_err());
        assert!(traces_url("ftp://collector").is_err());
    }

    #[test]
    fn span_names_follow_the_conventions() {
        let mut attributes = Vec::new();
        let params = serde_json::json!({ "name": "echo", "arguments": {} });
        let target = target_attributes("tools/call", Some(&params), &mut attributes);
        assert_eq!(span_name("tools/call", target.as_deref()), "tools/call echo");
        assert!(attributes.contains(&KeyValue::new("gen_ai.tool.name", "echo")));
        assert!(attributes.contains(&KeyValue::new("gen_ai.operation.name", "execute_tool")));
        let params = serde_json::json!({ "uri": "file:///a" });
        let target = target_attributes("resources/read", Some(&params), &mut attributes);
        assert_eq!(span_name("resources/read", target.as_deref()), "resources/read");
        assert_eq!(resource_uri("resources/read", Some(&params)).as_deref(), Some("file:///a"));
        assert_eq!(resource_uri("tools/call", Some(&params)), None);
    }
}
