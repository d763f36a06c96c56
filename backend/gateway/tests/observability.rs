//! Observability of the worker end to end: what `/metrics` shows after real MCP traffic, and the
//! OpenTelemetry spans a tools/call produces, received by a tiny OTLP/HTTP collector on 127.0.0.1.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use gatehouse_bundle::SigningKey;
use gatehouse_bundle::policy::grant_rule_id;
use gatehouse_gateway::{Gateway, GatewayConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message as _;
use serde_json::json;
use support::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const METRICS_TOKEN: &str = "scrape-secret";

/// A worker like `TestGateway`, with the observability settings under test.
struct Worker {
    gw: Gateway,
    url: String,
    _server: JoinHandle<()>,
}

impl Worker {
    async fn start(cp: &FakeControlPlane, dir: &Path, key: &SigningKey, otlp: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gw = Gateway::start(GatewayConfig {
            control_url: cp.url.clone(),
            worker_token: WORKER_TOKEN.to_owned(),
            group: "default".to_owned(),
            trusted_keys: vec![key.public_base64()],
            data_dir: dir.to_owned(),
            public_url: url.clone(),
            upstream_timeout: Duration::from_secs(5),
            poll_wait: Duration::from_secs(1),
            otlp_endpoint: otlp,
            metrics_token: Some(METRICS_TOKEN.to_owned()),
            stdio_commands: vec![],
            rate_limit_store: None,
        })
        .await
        .expect("gateway starts");
        let router = gw.router();
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        eventually("an active bundle", async || gw.active_revision(TENANT)).await;
        Self { gw, url, _server: server }
    }

    fn client(&self, vs: &str, token: Option<&str>) -> McpClient {
        McpClient::new(&format!("{}/mcp/{TENANT}/{vs}", self.url), token)
    }

    async fn scrape(&self) -> Metrics {
        let response = reqwest::Client::new()
            .get(format!("{}/metrics", self.url))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        Metrics::parse(&response.text().await.unwrap())
    }
}

/// A scraped exposition: sample lines by `name{labels}` as printed.
struct Metrics {
    text: String,
    samples: HashMap<String, f64>,
}

impl Metrics {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {l}"));
                (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("a number in {l}")))
            })
            .collect();
        Self { text: text.to_owned(), samples }
    }

    /// The value of one series (0 when absent, as Prometheus would read a missing counter).
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// Every observation of the operation histogram.
    fn total_operations(&self) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.starts_with("mcp_server_operation_duration_seconds_count{"))
            .map(|(_, v)| v)
            .sum()
    }

    /// The `_count` of the operation histogram for these label values.
    fn operations(&self, method: &str, tool: &str, outcome: &str, vs: &str) -> f64 {
        self.get(&format!(
            "mcp_server_operation_duration_seconds_count{{mcp_method_name=\"{method}\",gen_ai_tool_name=\"{tool}\",\
             outcome=\"{outcome}\",tenant=\"acme\",virtual_server=\"{vs}\"}}"
        ))
    }
}

async fn setup(otlp: Option<String>) -> (SigningKey, Upstreams, FakeControlPlane, Worker, tempfile::TempDir) {
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    cp.publish(vec![key.sign("default", 1, 0, content(&up, ANALYST))]);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(&cp, dir.path(), &key, otlp).await;
    (key, up, cp, worker, dir)
}

#[tokio::test]
async fn metrics_count_requests_by_method_tool_and_outcome() {
    let (_key, up, cp, worker, _dir) = setup(None).await;

    // The scrape is for the operator only.
    let anonymous = reqwest::get(format!("{}/metrics", worker.url)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let wrong =
        reqwest::Client::new().get(format!("{}/metrics", worker.url)).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    let mut alice = worker.client("dev", Some(ALICE));
    alice.initialize().await;
    alice.tool_names().await;
    // Tracing is off: the client's `_meta` (trace context included) goes upstream as it was sent.
    let meta = json!({ "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k": "v" });
    let echoed = alice.request("tools/call", json!({ "name": "echo", "arguments": {}, "_meta": meta })).await;
    assert_eq!(echoed.status, 200, "{echoed:?}");
    assert_eq!(up.alpha.calls().last().unwrap()["_meta"], meta);
    alice.call("echo", json!({ "n": 2 })).await;
    assert_eq!(alice.call("add", json!({})).await.rpc_code(), Some(-32003));
    assert_eq!(alice.call("no-such-tool", json!({})).await.rpc_code(), Some(-32602));
    // beta answers tools/call as an event stream, relayed as one.
    let streamed = alice.call("beta__search", json!({})).await;
    assert_eq!(text_of(&streamed), "beta/search: {}");
    alice.request("x/made-up", json!({})).await;
    // Refused before the body is read; an unknown virtual server; an unknown tenant (not measured).
    assert_eq!(worker.client("dev", None).request("tools/list", json!({})).await.status, 401);
    assert_eq!(worker.client("nope", Some(ALICE)).request("tools/list", json!({})).await.status, 404);
    let stranger = McpClient::new(&format!("{}/mcp/evil-corp/dev", worker.url), Some(ALICE));
    assert_eq!(stranger.post(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await.status, 404);

    // Eleven audited requests (the unknown tenant's is not one); a streamed answer is counted when
    // its stream ends, which may be a moment after the client read the last event.
    let m = eventually("eleven requests measured", async || {
        let m = worker.scrape().await;
        (m.total_operations() == 11.0).then_some(m)
    })
    .await;
    assert_eq!(m.operations("initialize", "", "allowed", "dev"), 1.0, "{}", m.text);
    assert_eq!(m.operations("notifications/initialized", "", "allowed", "dev"), 1.0);
    assert_eq!(m.operations("tools/list", "", "allowed", "dev"), 1.0);
    assert_eq!(m.operations("tools/call", "echo", "allowed", "dev"), 2.0);
    assert_eq!(m.operations("tools/call", "add", "denied", "dev"), 1.0);
    // alpha__search / beta__search are both the upstream tool `search`.
    assert_eq!(m.operations("tools/call", "search", "allowed", "dev"), 1.0);
    assert_eq!(m.operations("tools/call", "other", "invalid", "dev"), 1.0);
    assert_eq!(m.operations("other", "", "invalid", "dev"), 1.0);
    assert_eq!(m.operations("POST", "", "denied", "dev"), 1.0);
    assert_eq!(m.operations("POST", "", "invalid", "other"), 1.0);
    for absent in ["evil-corp", "no-such-tool", "x/made-up", "nope"] {
        assert!(!m.text.contains(absent), "{absent} must not become a label:\n{}", m.text);
    }

    // The buckets of one series are cumulative, end at +Inf with the count, and everything here
    // took less than the largest bound.
    let echo =
        r#"mcp_method_name="tools/call",gen_ai_tool_name="echo",outcome="allowed",tenant="acme",virtual_server="dev""#;
    let bucket = |le: &str| m.get(&format!("mcp_server_operation_duration_seconds_bucket{{{echo},le=\"{le}\"}}"));
    assert_eq!(bucket("+Inf"), 2.0);
    assert_eq!(bucket("300"), 2.0);
    let les = ["0.001", "0.0025", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5", "10", "30"];
    for pair in les.windows(2) {
        assert!(bucket(pair[0]) <= bucket(pair[1]), "{} > {}", pair[0], pair[1]);
    }
    let sum = m.get(&format!("mcp_server_operation_duration_seconds_sum{{{echo}}}"));
    assert!(sum > 0.0 && sum < 10.0, "{sum}");

    // Bundles: the active revision per tenant, one activation, no refusal.
    let revision = worker.gw.active_revision(TENANT).unwrap();
    assert_eq!(m.get(&format!("gatehouse_bundle_info{{tenant=\"acme\",revision=\"{revision}\",sequence=\"1\"}}")), 1.0);
    assert_eq!(m.get("gatehouse_bundle_activations_total{source=\"control_plane\"}"), 1.0);
    assert_eq!(m.get("gatehouse_bundle_refusals_total{source=\"control_plane\"}"), 0.0);
    assert_eq!(m.get("gatehouse_ready"), 1.0);

    // Audit: every audited request was queued, and all of them get shipped.
    let audited = m.total_operations();
    assert_eq!(m.get("gatehouse_audit_events_queued_total"), audited);
    let shipped = eventually("the audit events shipped", async || {
        let m = worker.scrape().await;
        (m.get("gatehouse_audit_events_shipped_total") >= audited).then_some(m)
    })
    .await;
    assert_eq!(shipped.get("gatehouse_audit_events_dropped_total"), 0.0);
    assert_eq!(cp.audit_events().len() as f64, audited);
    assert_eq!(shipped.get("gatehouse_sse_streams_open"), 0.0);

    // An open GET stream is counted while it is open.
    let stream = reqwest::Client::new()
        .get(&alice.endpoint)
        .bearer_auth(ALICE)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", alice.session.clone().unwrap())
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(worker.scrape().await.get("gatehouse_sse_streams_open"), 1.0);
    drop(stream);
    eventually("the stream closed", async || {
        (worker.scrape().await.get("gatehouse_sse_streams_open") == 0.0).then_some(())
    })
    .await;
}

/// What the fake collector received.
#[derive(Default)]
struct Collected {
    spans: Vec<Span>,
    service_names: Vec<String>,
}

/// A minimal OTLP/HTTP traces receiver (protobuf) on 127.0.0.1.
async fn collector() -> (String, Arc<Mutex<Collected>>) {
    async fn traces(State(seen): State<Arc<Mutex<Collected>>>, body: Bytes) -> StatusCode {
        let Ok(request) = ExportTraceServiceRequest::decode(body) else { return StatusCode::BAD_REQUEST };
        let mut seen = seen.lock().unwrap();
        for resource_spans in request.resource_spans {
            for attribute in resource_spans.resource.iter().flat_map(|r| &r.attributes) {
                if attribute.key == "service.name" {
                    seen.service_names.push(string(attribute.value.as_ref().and_then(|v| v.value.as_ref())));
                }
            }
            seen.spans.extend(resource_spans.scope_spans.into_iter().flat_map(|s| s.spans));
        }
        StatusCode::OK
    }
    let seen = Arc::new(Mutex::new(Collected::default()));
    let router = Router::new().route("/v1/traces", post(traces)).with_state(Arc::clone(&seen));
    let (url, _task) = serve(router).await;
    (url, seen)
}

fn string(value: Option<&any_value::Value>) -> String {
    match value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// A span's attributes as strings.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.clone(), string(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_tool_call_is_traced_from_the_clients_meta_to_the_upstream() {
    let (collector_url, seen) = collector().await;
    let (_key, up, _cp, worker, _dir) = setup(Some(collector_url)).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut alice = worker.client("dev", Some(ALICE));
    alice.initialize().await;
    let meta = json!({
        "traceparent": format!("00-{trace_id}-{client_span}-01"),
        "tracestate": "rojo=00f067aa0ba902b7",
        "example.com/keep": "me",
    });
    let reply = alice.request("tools/call", json!({ "name": "echo", "arguments": { "x": 1 }, "_meta": meta })).await;
    assert_eq!(text_of(&reply), r#"alpha/echo: {"x":1}"#);
    // A denied call has a server span with an error and no upstream hop.
    assert_eq!(alice.call("add", json!({})).await.rpc_code(), Some(-32003));

    // The upstream got the gateway's client span as parent, and every other `_meta` key as sent.
    let forwarded = up.alpha.calls().last().unwrap()["_meta"].clone();
    assert_eq!(forwarded["example.com/keep"], "me");
    assert_eq!(forwarded["tracestate"], "rojo=00f067aa0ba902b7");
    let traceparent = forwarded["traceparent"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace_id, "01"), "{traceparent}");
    let upstream_parent = parts[2].to_owned();
    assert_ne!(upstream_parent, client_span);

    // Shutting down exports what the batch processor holds.
    worker.gw.shutdown().await;
    let spans = eventually("the spans at the collector", async || {
        let seen = seen.lock().unwrap();
        (seen.spans.len() >= 5).then(|| seen.spans.clone())
    })
    .await;
    assert_eq!(seen.lock().unwrap().service_names.first().map(String::as_str), Some("gatehouse-gateway"));
    let named = |name: &str, kind: SpanKind| {
        let found: Vec<&Span> = spans.iter().filter(|s| s.name == name && s.kind == kind as i32).collect();
        assert_eq!(
            found.len(),
            1,
            "one {kind:?} span '{name}' in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        found[0]
    };

    let server = named("tools/call echo", SpanKind::Server);
    assert_eq!(hex(&server.trace_id), trace_id);
    assert_eq!(hex(&server.parent_span_id), client_span);
    let a = attributes(server);
    let expected = [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "echo"),
        ("gen_ai.operation.name", "execute_tool"),
        ("jsonrpc.request.id", "2"),
        ("mcp.protocol.version", "2025-11-25"),
        ("network.transport", "tcp"),
        ("gatehouse.tenant", "acme"),
        ("gatehouse.virtual_server", "dev"),
        ("gatehouse.outcome", "allowed"),
        ("gatehouse.upstream_server", "alpha"),
    ];
    for (key, value) in expected {
        assert_eq!(a.get(key).map(String::as_str), Some(value), "{key} in {a:?}");
    }
    assert_eq!(a["gatehouse.rule_id"], grant_rule_id("analyst", "alpha", "echo"));
    let session = &a["mcp.session.id"];
    assert!(session.len() == 32 && session.chars().all(|c| c.is_ascii_hexdigit()), "{session}");
    assert!(!a.contains_key("error.type"));
    assert_ne!(server.status.as_ref().map(|s| s.code), Some(SpanStatus::Error as i32));

    let client = named("tools/call echo", SpanKind::Client);
    assert_eq!(hex(&client.trace_id), trace_id);
    assert_eq!(hex(&client.span_id), upstream_parent, "the upstream's parent is the client span");
    assert_eq!(client.parent_span_id, server.span_id);
    let c = attributes(client);
    assert_eq!(c["mcp.method.name"], "tools/call");
    assert_eq!(c["gen_ai.tool.name"], "echo");
    assert_eq!(c["jsonrpc.request.id"], "gh:n:2");
    assert_eq!(c["server.address"], "127.0.0.1");
    assert_eq!(c["gatehouse.upstream_server"], "alpha");
    assert!(client.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);

    let denied = named("tools/call add", SpanKind::Server);
    let d = attributes(denied);
    assert_eq!(d["error.type"], "denied");
    assert_eq!(d["gatehouse.outcome"], "denied");
    let status = denied.status.as_ref().unwrap();
    assert_eq!(status.code, SpanStatus::Error as i32);
    assert!(status.message.contains("add"), "{}", status.message);
    // Without a traceparent the request starts a trace of its own.
    assert!(denied.parent_span_id.is_empty());
    assert_ne!(hex(&denied.trace_id), trace_id);

    // initialize and notifications/initialized are traced too; nothing else is.
    named("initialize", SpanKind::Server);
    named("notifications/initialized", SpanKind::Server);
    assert_eq!(spans.len(), 5);
}
