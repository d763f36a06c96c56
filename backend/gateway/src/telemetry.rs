//! OpenTelemetry traces and metrics of MCP requests, following the OpenTelemetry semantic conventions
//! for the Model Context Protocol (`docs/gen-ai/mcp.md` of the OpenTelemetry GenAI semantic
//! conventions, status "Development"), exported as OTLP/HTTP protobuf when an endpoint is configured
//! (decision record `docs/decisions/0019-observability.md`).
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
//!   representation of the `id`"), `gen_ai.tool.name` (the name the client called, which
//!   virtual-server shaping may have renamed or prefixed) and `gen_ai.operation.name = execute_tool`
//!   on `tools/call`, `gatehouse.upstream_tool` (the upstream's own name of that tool, what policy
//!   decided on), `gen_ai.prompt.name` on `prompts/get`,
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
//!   W3C trace context in the request's `params._meta`; the client's HTTP `traceparent` header is not
//!   used (the MCP conventions put the context in `_meta`, and a header could come from any proxy).
//! * **Client spans**: "Span kind SHOULD be `CLIENT`"; "reported by the MCP client when it initiates
//!   the request ... It covers the time to receive the response or ack from the peer." One per HTTP
//!   POST the worker sends to an upstream while it handles a client's POST, each a child of that
//!   request's server span: the forwarded request (`tools/call`, `resources/read`, `prompts/get`, ...),
//!   and the gateway's own requests: the `server/discover` probe (decision 0018; a 2025-era upstream
//!   refuses it, so its span carries `error.type = 400` before the fallback), the upstream
//!   `initialize` and `notifications/initialized` when an upstream session is opened (at the
//!   client's `initialize`, or lazily on first use), and the
//!   list fan-out (`tools/list`, `prompts/list`, ... one span per page). Attributes: `mcp.method.name`,
//!   `gen_ai.tool.name` (the upstream's name of the tool), `gen_ai.prompt.name`, `jsonrpc.request.id`
//!   (the id sent upstream), `server.address`, `server.port`, `network.transport`,
//!   `network.protocol.name = http`, `mcp.session.id` when the request went on an upstream session
//!   (its audit id: the first 32 hex digits of the SHA-256 of the upstream's `Mcp-Session-Id`, which
//!   lets anyone who can reach the upstream act in that session, so it is never exported as it is),
//!   `gatehouse.upstream_server` (forwarded requests, where the slug is known), and `error.type` with
//!   an `ERROR` status on failure: `unreachable`, `timeout`, the HTTP status code (`503`),
//!   `session_expired`, `protocol_error`, or the JSON-RPC error code of an error answer (`-32601`);
//!   a forwarded request that failed is `upstream_error`, the audit outcome.
//! * **Context propagation upstream**: the client span's context replaces `traceparent` (and
//!   `tracestate`) in the sent `params._meta` (created when missing), and is also sent as the W3C
//!   `traceparent` / `tracestate` HTTP headers, for HTTP-level proxies and servers that trace HTTP
//!   rather than MCP; every other `_meta` key (`progressToken`, `baggage`, ...) goes upstream
//!   untouched. The spans of the gateway's own requests need no plumbing through the request path:
//!   the handling of a POST runs inside a task-local scope ([`Telemetry::scope`]) that holds the
//!   server span's context once it exists; [`Hop`] starts a client span under it, and
//!   `upstream::post` adds the headers of the innermost client span ([`propagate`]). Not traced:
//!   client notifications and responses relayed upstream, the upstream GET streams, the DELETE
//!   that ends an upstream session (they carry the server span's context in the header when they
//!   are sent while a POST is handled).
//!
//! # Metrics over OTLP
//!
//! With an endpoint, the series of `/metrics` (see `metrics.rs`) are exported too, to
//! `{endpoint}/v1/metrics`, every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s) and at shutdown,
//! cumulative temporality:
//! * `mcp.server.operation.duration` (histogram, `s`, the same buckets): one point per `/metrics`
//!   series, with the same bounded values under the spans' attribute names: `mcp.method.name`,
//!   `gen_ai.tool.name` (on `tools/call` only: the upstream's tool name, bounded per tenant as on
//!   `/metrics`), `error.type` (on `denied`, `invalid`, `upstream_error`), `gatehouse.outcome`,
//!   `gatehouse.tenant`, `gatehouse.virtual_server`. The attributes are built once per series, so the
//!   request path adds only the SDK's own histogram update.
//! * `mcp.client.operation.duration` (histogram, `s`): every traced upstream request, with
//!   `mcp.method.name` and `error.type` only (server addresses and tool names are left out: an
//!   upstream's URL and tool list are not bounded by the gateway). Recorded only while tracing.
//! * `gatehouse.audit.events.{queued,shipped,dropped}` (counters, `{event}`),
//!   `gatehouse.bundle.{activations,refusals}` (counters, `source`), `gatehouse.bundle.info` (gauge 1
//!   with `gatehouse.tenant`, `gatehouse.bundle.revision`, `gatehouse.bundle.sequence`),
//!   `gatehouse.ready` (gauge), `gatehouse.sse.streams.open` (up-down counter, `{stream}`): read
//!   from the same atomics as the scrape when the SDK collects.
//!
//! # Cost
//!
//! Without an endpoint there is no tracer at all: `Record` holds `None`, no task-local scope is
//! entered, nothing is extracted, allocated or injected, and forwarded params are passed on by
//! reference as before; an upstream POST only tries one task-local look-up. With one, a traced
//! request costs the span objects and, per upstream request, one copy of the params (to add the
//! trace context to `_meta`) and two headers. Spans are batched by the SDK's batch processor (its own thread; the
//! standard `OTEL_BSP_*` variables tune it) and sent with the worker's own reqwest client (rustls,
//! ring) on the worker's Tokio runtime: no second HTTP or TLS stack, no gRPC. Sampling is the SDK's
//! default (parent-based, always on), or `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use futures::future::Either;
use gatehouse_core::audit::{AuditEvent, Outcome};
use gatehouse_core::jsonrpc::Id;
use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use serde_json::{Map, Value};
use tracing::warn;

use crate::upstream::UpstreamError;

/// Upper bound of one OTLP export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The OTLP/HTTP path of traces.
const TRACES_PATH: &str = "/v1/traces";
/// The OTLP/HTTP path of metrics.
const METRICS_PATH: &str = "/v1/metrics";

tokio::task_local! {
    /// The POSTed request this task handles, when tracing is on: the tracer and, once the request
    /// was parsed, its server span, parent of every upstream request sent for it.
    static REQUEST: RequestScope;
    /// The client span of the upstream request being sent now: its context goes into the W3C
    /// `traceparent` header of the HTTP request.
    static HOP: HopScope;
}

struct RequestScope {
    tracer: SdkTracer,
    client_duration: Histogram<f64>,
    server: RefCell<Option<SpanContext>>,
}

/// The context of one upstream request's client span, and the (hashed) upstream session it went on.
#[derive(Clone)]
pub(crate) struct HopScope {
    context: SpanContext,
    session: Arc<Mutex<Option<String>>>,
}

/// The worker's tracer, or nothing when no OTLP endpoint is configured.
pub(crate) struct Telemetry {
    otel: Option<Otel>,
}

struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    meters: SdkMeterProvider,
    meter: Meter,
    /// `mcp.server.operation.duration`: the requests the worker answers.
    server_duration: Histogram<f64>,
    /// `mcp.client.operation.duration`: the requests the worker sends upstream.
    client_duration: Histogram<f64>,
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

/// The metrics URL for a configured endpoint: the traces URL with `/v1/metrics` in place of
/// `/v1/traces` (`http://collector:4318` → `http://collector:4318/v1/metrics`).
pub(crate) fn metrics_url(endpoint: &str) -> anyhow::Result<String> {
    let traces = traces_url(endpoint)?;
    Ok(format!("{}{METRICS_PATH}", traces.strip_suffix(TRACES_PATH).unwrap_or(&traces)))
}

impl Telemetry {
    /// No tracing.
    pub(crate) fn disabled() -> Self {
        Self { otel: None }
    }

    /// Traces and metrics exported to `endpoint` (OTLP/HTTP protobuf) with `http`, from the current
    /// Tokio runtime.
    pub(crate) fn otlp(endpoint: &str, http: reqwest::Client) -> anyhow::Result<Self> {
        let url = traces_url(endpoint)?;
        let client = OtlpHttp { http, runtime: tokio::runtime::Handle::current() };
        let metrics_endpoint = metrics_url(endpoint)?;
        let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(metrics_endpoint.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client.clone())
            .build()
            .with_context(|| format!("building the OTLP metrics exporter for {metrics_endpoint}"))?;
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
        let resource = resource.build();
        let provider =
            SdkTracerProvider::builder().with_resource(resource.clone()).with_batch_exporter(exporter).build();
        let tracer = provider.tracer("gatehouse-gateway");
        // The export interval is the SDK's: `OTEL_METRIC_EXPORT_INTERVAL` (ms), else 60 s.
        let meters = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(PeriodicReader::builder(metric_exporter).build())
            .build();
        let meter = meters.meter("gatehouse-gateway");
        let duration = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(crate::metrics::BUCKETS.to_vec())
                .build()
        };
        let server_duration = duration(
            "mcp.server.operation.duration",
            "MCP request or notification duration as observed on the receiver from the time it was received \
             until the result or ack is sent.",
        );
        let client_duration = duration(
            "mcp.client.operation.duration",
            "The duration of the MCP request or notification as observed on the sender from the time it was \
             sent until the response or ack is received.",
        );
        tracing::info!(traces = %url, metrics = %metrics_endpoint, "exporting OpenTelemetry traces and metrics (OTLP/HTTP protobuf)");
        Ok(Self {
            otel: Some(Otel {
                provider,
                tracer,
                propagator: TraceContextPropagator::new(),
                meters,
                meter,
                server_duration,
                client_duration,
            }),
        })
    }

    /// Runs the handling of one POSTed request: upstream requests sent while it runs are traced as
    /// children of its server span ([`Hop`], [`propagate`]). Without tracing, `handling` as it is.
    pub(crate) fn scope<F: Future>(&self, handling: F) -> impl Future<Output = F::Output> {
        match &self.otel {
            Some(otel) => Either::Left(REQUEST.scope(
                RequestScope {
                    tracer: otel.tracer.clone(),
                    client_duration: otel.client_duration.clone(),
                    server: RefCell::new(None),
                },
                handling,
            )),
            None => Either::Right(handling),
        }
    }

    /// Records one audited request in `mcp.server.operation.duration`, with the bounded attributes
    /// of its `/metrics` series.
    pub(crate) fn record_operation(&self, attributes: &[KeyValue], elapsed: Duration) {
        if let Some(otel) = &self.otel {
            otel.server_duration.record(elapsed.as_secs_f64(), attributes);
        }
    }

    /// Exports the worker's other `/metrics` series as observable instruments, read when the SDK
    /// collects (each export interval).
    pub(crate) fn observe_worker(&self, worker: WorkerState) {
        let Some(otel) = &self.otel else { return };
        let meter = &otel.meter;
        type Read = fn(&crate::metrics::AuditCounters) -> u64;
        let audit: [(&'static str, &'static str, Read); 3] = [
            ("gatehouse.audit.events.queued", "Audit events handed to the local spool.", |a| {
                a.queued.load(std::sync::atomic::Ordering::Relaxed)
            }),
            (
                "gatehouse.audit.events.shipped",
                "Audit events the control plane acknowledged (resends after a restart count again).",
                |a| a.shipped.load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "gatehouse.audit.events.dropped",
                "Audit events lost: emitted after shutdown began, or spool lines torn by a crash.",
                |a| a.dropped.load(std::sync::atomic::Ordering::Relaxed),
            ),
        ];
        for (name, description, read) in audit {
            let counters = Arc::clone(&worker.audit);
            meter
                .u64_observable_counter(name)
                .with_unit("{event}")
                .with_description(description)
                .with_callback(move |o| o.observe(read(&counters), &[]))
                .build();
        }
        for (name, description, activations) in [
            (
                "gatehouse.bundle.activations",
                "Times a tenant's active policy bundle changed (new tenant or new revision).",
                true,
            ),
            ("gatehouse.bundle.refusals", "Policy bundles refused (signature, group, sequence, content).", false),
        ] {
            let policies = Arc::clone(&worker.policies);
            meter
                .u64_observable_counter(name)
                .with_unit("{bundle}")
                .with_description(description)
                .with_callback(move |o| {
                    for (source, activated, refused) in policies.counters.totals() {
                        o.observe(if activations { activated } else { refused }, &[KeyValue::new("source", source)]);
                    }
                })
                .build();
        }
        let policies = Arc::clone(&worker.policies);
        meter
            .u64_observable_gauge("gatehouse.bundle.info")
            .with_description("The policy bundle revision each tenant is served with (value 1).")
            .with_callback(move |o| {
                for policy in policies.snapshot().values() {
                    let manifest = &policy.manifest;
                    let attributes = [
                        KeyValue::new("gatehouse.tenant", manifest.tenant.clone()),
                        KeyValue::new("gatehouse.bundle.revision", manifest.revision.clone()),
                        KeyValue::new(
                            "gatehouse.bundle.sequence",
                            i64::try_from(manifest.sequence).unwrap_or(i64::MAX),
                        ),
                    ];
                    o.observe(1, &attributes);
                }
            })
            .build();
        let policies = Arc::clone(&worker.policies);
        meter
            .u64_observable_gauge("gatehouse.ready")
            .with_description("1 once a policy bundle set is active, else 0.")
            .with_callback(move |o| o.observe(u64::from(policies.is_ready()), &[]))
            .build();
        let metrics = Arc::clone(&worker.metrics);
        meter
            .i64_observable_up_down_counter("gatehouse.sse.streams.open")
            .with_unit("{stream}")
            .with_description("Event streams (POST answers and GET streams) open to clients.")
            .with_callback(move |o| o.observe(metrics.sse_open.load(std::sync::atomic::Ordering::Relaxed).max(0), &[]))
            .build();
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
        let _outside_a_scope = REQUEST.try_with(|scope| *scope.server.borrow_mut() = Some(span.span_context().clone()));
        Some(Box::new(RequestTrace {
            server: span,
            client: None,
            resource_uri: resource_uri(method, params),
            client_duration: otel.client_duration.clone(),
        }))
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
        let span = start_client_span(
            &otel.tracer,
            trace.server.span_context(),
            ClientRequest { server: Some(server), url, method, id: Some(upstream_id), params },
        );
        let forwarded = with_context_in_meta(params, span.span_context());
        let hop = HopScope { context: span.span_context().clone(), session: Arc::default() };
        if let Some(previous) =
            trace.client.replace(ClientHop { span, hop, started: Instant::now(), method: method_attribute(method) })
        {
            previous.end(None, SystemTime::now());
        }
        forwarded
    }

    /// Exports what is buffered (spans, and the metrics' last values) and stops the exporters
    /// (waiting at most a few seconds).
    pub(crate) async fn shutdown(&self) {
        if let Some(otel) = &self.otel {
            let (provider, meters) = (otel.provider.clone(), otel.meters.clone());
            // The export runs on this runtime, so the blocking shutdown must not hold one of its threads.
            let done = tokio::task::spawn_blocking(move || {
                (provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT), meters.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
            })
            .await;
            if let Ok((spans, metrics)) = done {
                if let Err(e) = spans {
                    warn!("could not export the last spans: {e}");
                }
                if let Err(e) = metrics {
                    warn!("could not export the last metrics: {e}");
                }
            }
        }
    }

    /// [`Telemetry::shutdown`] without waiting, for a worker dropped without a graceful shutdown.
    pub(crate) fn shutdown_in_background(&self) {
        if let Some(otel) = &self.otel {
            let (provider, meters) = (otel.provider.clone(), otel.meters.clone());
            let _ = std::thread::Builder::new().name("otel-shutdown".into()).spawn(move || {
                let _ = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
                let _ = meters.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
            });
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

/// The parts of the worker `observe_worker` reads.
pub(crate) struct WorkerState {
    pub(crate) audit: Arc<crate::metrics::AuditCounters>,
    pub(crate) policies: Arc<crate::bundles::PolicyStore>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// What a client span describes.
struct ClientRequest<'a> {
    /// The upstream server's slug, when the caller knows it (forwarded requests).
    server: Option<&'a str>,
    url: &'a str,
    method: &'a str,
    /// The JSON-RPC id sent upstream (none for notifications).
    id: Option<&'a Value>,
    params: Option<&'a Value>,
}

/// Starts a `CLIENT` span for a request to an upstream, child of `parent` (the server span).
fn start_client_span(tracer: &SdkTracer, parent: &SpanContext, request: ClientRequest<'_>) -> Span {
    let ClientRequest { server, url, method, id, params } = request;
    let mut attributes = vec![
        KeyValue::new("mcp.method.name", method.to_owned()),
        KeyValue::new("network.transport", "tcp"),
        KeyValue::new("network.protocol.name", "http"),
    ];
    if let Some(server) = server {
        attributes.push(KeyValue::new("gatehouse.upstream_server", server.to_owned()));
    }
    match id {
        Some(Value::String(s)) => attributes.push(KeyValue::new("jsonrpc.request.id", s.clone())),
        Some(Value::Number(n)) => attributes.push(KeyValue::new("jsonrpc.request.id", n.to_string())),
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
    let parent = Context::new().with_remote_span_context(parent.clone());
    tracer
        .span_builder(span_name(method, target.as_deref()))
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent)
}

/// `params` with `context` in `_meta` (created if missing), or `None` (send `params` as they are)
/// when the params or their `_meta` are not an object. Every other `_meta` key is kept.
fn with_context_in_meta(params: Option<&Value>, context: &SpanContext) -> Option<Value> {
    let mut forwarded = params.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let object = forwarded.as_object_mut()?;
    let meta = object.entry("_meta").or_insert_with(|| Value::Object(Map::new())).as_object_mut()?;
    let cx = Context::new().with_remote_span_context(context.clone());
    TraceContextPropagator::new().inject_context(&cx, &mut MetaMut(meta));
    Some(forwarded)
}

/// The bounded `mcp.method.name` of a client metric: the gateway only sends MCP's own methods.
fn method_attribute(method: &str) -> &'static str {
    crate::metrics::method_label(method)
}

/// One request of the gateway's own to an upstream (upstream `initialize` and
/// `notifications/initialized`, list fan-out), traced as a `CLIENT` span when the task handles a
/// traced request: [`Hop::start`] before encoding (its [`Hop::params`] carry the span's context in
/// `_meta`), [`Hop::run`] around the exchange (its HTTP request gets the `traceparent` header).
pub(crate) struct Hop {
    active: Option<ActiveHop>,
}

struct ActiveHop {
    client: ClientHop,
    params: Option<Value>,
    client_duration: Histogram<f64>,
}

impl Hop {
    /// Starts the span of `method` to `url` (nothing outside a traced request).
    pub(crate) fn start(method: &str, url: &str, id: Option<&Value>, params: Option<&Value>) -> Hop {
        let active = REQUEST
            .try_with(|scope| {
                let parent = scope.server.borrow().clone()?;
                let request = ClientRequest { server: None, url, method, id, params };
                let span = start_client_span(&scope.tracer, &parent, request);
                let injected = with_context_in_meta(params, span.span_context());
                let hop = HopScope { context: span.span_context().clone(), session: Arc::default() };
                let client = ClientHop { span, hop, started: Instant::now(), method: method_attribute(method) };
                Some(ActiveHop { client, params: injected, client_duration: scope.client_duration.clone() })
            })
            .ok()
            .flatten();
        Hop { active }
    }

    /// The params to send: `params` with the span's context in `_meta`, or `params` untraced.
    pub(crate) fn params<'a>(&'a self, params: Option<&'a Value>) -> Option<&'a Value> {
        self.active.as_ref().and_then(|a| a.params.as_ref()).or(params)
    }

    /// Runs the exchange with the span as the `traceparent` of its HTTP request, and ends the span
    /// with its outcome (`error.type` on failure: see [`error_type`]).
    pub(crate) async fn run<T: Answered>(
        self,
        exchange: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let Some(active) = self.active else { return exchange.await };
        let result = HOP.scope(active.client.hop.clone(), exchange).await;
        let failure = match &result {
            Err(e) => Some((error_type(e), e.to_string())),
            Ok(answer) => answer.rpc_error().map(|(code, message)| (code.to_string(), message)),
        };
        let (elapsed, attributes) = active.client.end(failure, SystemTime::now());
        active.client_duration.record(elapsed.as_secs_f64(), &attributes);
        result
    }
}

/// What an upstream answered, as far as a client span's `error.type` is concerned.
pub(crate) trait Answered {
    /// The JSON-RPC error code and message, when the answer is an error response.
    fn rpc_error(&self) -> Option<(i64, String)> {
        None
    }
}

impl Answered for Value {
    fn rpc_error(&self) -> Option<(i64, String)> {
        let error = self.get("error")?;
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        Some((code, error.get("message").and_then(Value::as_str).unwrap_or_default().to_owned()))
    }
}

impl Answered for () {}

impl Answered for reqwest::Response {}

impl<T> Answered for (T, Value) {
    fn rpc_error(&self) -> Option<(i64, String)> {
        self.1.rpc_error()
    }
}

/// `error.type` of a failed upstream exchange: a low-cardinality name of what went wrong, the HTTP
/// status code when the upstream answered with an error status.
pub(crate) fn error_type(error: &UpstreamError) -> String {
    match error {
        UpstreamError::Unreachable(_) => "unreachable".to_owned(),
        UpstreamError::Timeout(_) => "timeout".to_owned(),
        UpstreamError::Status(code) => code.to_string(),
        UpstreamError::SessionExpired => "session_expired".to_owned(),
        UpstreamError::Protocol(_) => "protocol_error".to_owned(),
        UpstreamError::Rpc(_) => "rpc_error".to_owned(),
    }
}

/// Adds the W3C trace context to an HTTP request to an upstream: the client span being sent
/// ([`Hop::run`], [`within`]), else the request's server span; nothing outside a traced request.
/// Notes the upstream session it goes on (as its audit id, never the id itself) for the span.
pub(crate) fn propagate(request: reqwest::RequestBuilder, upstream_session: Option<&str>) -> reqwest::RequestBuilder {
    let context = HOP
        .try_with(|hop| {
            if let Some(session) = upstream_session {
                *hop.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(crate::seal::audit_id(session));
            }
            hop.context.clone()
        })
        .ok()
        .or_else(|| REQUEST.try_with(|scope| scope.server.borrow().clone()).ok().flatten());
    let Some(context) = context else { return request };
    let mut headers = HashMap::new();
    TraceContextPropagator::new().inject_context(&Context::new().with_remote_span_context(context), &mut headers);
    headers.into_iter().fold(request, |request, (name, value)| request.header(name, value))
}

/// The spans of one request, carried by its audit record.
pub(crate) struct RequestTrace {
    server: Span,
    /// The client span of the forwarded request, if it was forwarded.
    client: Option<ClientHop>,
    /// `mcp.resource.uri`, set when the request ends unless a data rule found something in it.
    resource_uri: Option<String>,
    client_duration: Histogram<f64>,
}

/// A client span in flight, with what its end records.
struct ClientHop {
    span: Span,
    hop: HopScope,
    started: Instant,
    method: &'static str,
}

impl ClientHop {
    /// Ends the span (failed with `error`, if given), recording the session it went on and the
    /// duration in `mcp.client.operation.duration` (when a histogram is given).
    fn end(mut self, error: Option<(String, String)>, at: SystemTime) -> (Duration, Vec<KeyValue>) {
        let elapsed = self.started.elapsed();
        if let Some(session) = self.hop.session.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.span.set_attribute(KeyValue::new("mcp.session.id", session));
        }
        let mut attributes = vec![KeyValue::new("mcp.method.name", self.method)];
        if let Some((kind, description)) = error {
            self.span.set_attribute(KeyValue::new("error.type", kind.clone()));
            self.span.set_status(Status::error(description));
            attributes.push(KeyValue::new("error.type", kind));
        }
        self.span.end_with_timestamp(at);
        (elapsed, attributes)
    }
}

/// Runs `sending` (the forwarding of a client's request) with the request's client span as the
/// context of its HTTP `traceparent` header. Without a client span, `sending` as it is.
pub(crate) fn within<F: Future>(trace: Option<&RequestTrace>, sending: F) -> impl Future<Output = F::Output> {
    match trace.and_then(|t| t.client.as_ref()) {
        Some(client) => Either::Left(HOP.scope(client.hop.clone(), sending)),
        None => Either::Right(sending),
    }
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
        if let Some(client) = self.client.take() {
            let failure = (event.outcome == Outcome::UpstreamError)
                .then(|| (Outcome::UpstreamError.as_str().to_owned(), event.reason.clone().unwrap_or_default()));
            let (elapsed, attributes) = client.end(failure, now);
            self.client_duration.record(elapsed.as_secs_f64(), &attributes);
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
        // `gen_ai.tool.name` is the name the client called (from its params); with virtual-server
        // shaping the upstream's own name of the tool can differ, and is recorded beside it.
        if let Some(tool) = &event.tool {
            span.set_attribute(KeyValue::new("gatehouse.upstream_tool", tool.clone()));
        }
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
#[derive(Debug, Clone)]
struct OtlpHttp {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let uri = parts.uri.to_string();
        let request = self.http.request(parts.method, &uri).headers(parts.headers).timeout(EXPORT_TIMEOUT).body(body);
        let sent = self.runtime.spawn(async move {
            let response = request.send().await.inspect_err(|e| {
                warn!("could not send telemetry to the OTLP endpoint: {}", crate::bundles::describe(e));
            })?;
            let status = response.status();
            if !status.is_success() {
                warn!("the OTLP endpoint {uri} refused telemetry with HTTP {}", status.as_u16());
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
    fn metrics_go_beside_the_traces() {
        assert_eq!(metrics_url("http://collector:4318").unwrap(), "http://collector:4318/v1/metrics");
        assert_eq!(metrics_url("https://c.example/otlp/v1/traces").unwrap(), "https://c.example/otlp/v1/metrics");
        assert!(metrics_url("collector:4318").is_err());
    }

    #[test]
    fn upstream_failures_have_low_cardinality_types() {
        assert_eq!(error_type(&UpstreamError::Status(503)), "503");
        assert_eq!(error_type(&UpstreamError::Timeout(Duration::from_secs(1))), "timeout");
        assert_eq!(error_type(&UpstreamError::Unreachable("connection refused".into())), "unreachable");
        let answer = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "error": { "code": -32601, "message": "no" } });
        assert_eq!(answer.rpc_error(), Some((-32601, "no".to_owned())));
        assert_eq!(serde_json::json!({ "result": {} }).rpc_error(), None);
    }

    #[test]
    fn nothing_is_traced_outside_a_request() {
        // No task-local scope (tracing off, or a background task): no span, params untouched.
        let params = serde_json::json!({ "cursor": "c" });
        let hop = Hop::start("tools/list", "http://up/mcp", None, Some(&params));
        assert!(std::ptr::eq(hop.params(Some(&params)).unwrap(), &params));
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
