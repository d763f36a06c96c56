//! Observability of the worker end to end: what `/metrics` shows after real MCP traffic, and the
//! OpenTelemetry spans and metrics it produces, received by a tiny OTLP/HTTP collector on 127.0.0.1
//! that decodes the protobuf exports.

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
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message as _;
use serde_json::json;
use sha2::Digest as _;
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
    setup_with(otlp, |_| {}).await
}

/// [`setup`] with the tenant's bundle content adjusted first.
async fn setup_with(
    otlp: Option<String>,
    adjust: impl FnOnce(&mut gatehouse_bundle::format::Content),
) -> (SigningKey, Upstreams, FakeControlPlane, Worker, tempfile::TempDir) {
    let key = SigningKey::generate();
    let up = Upstreams::start().await;
    let cp = FakeControlPlane::start().await;
    let mut bundle = content(&up, ANALYST);
    adjust(&mut bundle);
    bundle.normalize();
    cp.publish(vec![key.sign("default", 1, 0, bundle)]);
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
    /// Every metric of every metrics export, in arrival order.
    metrics: Vec<Metric>,
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
    async fn metrics(State(seen): State<Arc<Mutex<Collected>>>, body: Bytes) -> StatusCode {
        let Ok(request) = ExportMetricsServiceRequest::decode(body) else { return StatusCode::BAD_REQUEST };
        let mut seen = seen.lock().unwrap();
        for resource_metrics in request.resource_metrics {
            seen.metrics.extend(resource_metrics.scope_metrics.into_iter().flat_map(|s| s.metrics));
        }
        StatusCode::OK
    }
    let seen = Arc::new(Mutex::new(Collected::default()));
    let router = Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .with_state(Arc::clone(&seen));
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
    strings(&span.attributes)
}

/// Attributes as strings.
fn strings(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes.iter().map(|kv| (kv.key.clone(), string(kv.value.as_ref().and_then(|v| v.value.as_ref())))).collect()
}

/// The audit id the gateway records for a session id: the first 32 hex digits of its SHA-256.
fn audit_id(session: &str) -> String {
    hex(&sha2::Sha256::digest(session.as_bytes()))[..32].to_owned()
}

/// The port of an upstream's URL (`http://127.0.0.1:PORT/mcp`).
fn port_of(url: &str) -> String {
    url.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned()
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

    // The forwarded call carried the same context in its HTTP `traceparent` header.
    let forwarded_call = up.alpha.traceparents().into_iter().rfind(|t| t["method"] == "tools/call").unwrap();
    assert_eq!(forwarded_call["header"], traceparent.as_str(), "{forwarded_call}");

    // Shutting down exports what the batch processor holds: 4 server spans, and 11 client spans
    // (the server/discover probe, initialize and notifications/initialized to alpha and beta, the
    // tools/list fan-out of two pages each to resolve `echo`, the forwarded tools/call).
    worker.gw.shutdown().await;
    let spans = eventually("the spans at the collector", async || {
        let seen = seen.lock().unwrap();
        (seen.spans.len() >= 15).then(|| seen.spans.clone())
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

    // initialize and notifications/initialized are traced too.
    let initialize = named("initialize", SpanKind::Server);
    named("notifications/initialized", SpanKind::Server);

    // The gateway's own upstream requests: a CLIENT span each, child of the server span of the
    // request they were sent for, in its trace.
    let children = |parent: &Span, name: &str| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| s.kind == SpanKind::Client as i32 && s.name == name && s.parent_span_id == parent.span_id)
            .cloned()
            .collect()
    };
    let ports = [port_of(&up.alpha.url), port_of(&up.beta.url)];
    for (method, session_bound) in
        [("server/discover", false), ("initialize", false), ("notifications/initialized", true)]
    {
        let hops = children(initialize, method);
        assert_eq!(hops.len(), 2, "one {method} per upstream");
        let mut seen_ports: Vec<String> = Vec::new();
        for hop in &hops {
            assert_eq!(hop.trace_id, initialize.trace_id);
            let h = attributes(hop);
            assert_eq!(h["mcp.method.name"], method);
            assert_eq!(h["network.protocol.name"], "http");
            assert_eq!(h["server.address"], "127.0.0.1");
            // A 2025-era upstream refuses the 2026 probe (HTTP 400): the probe's span says so, and
            // the gateway falls back to initialize.
            let refused = (method == "server/discover").then_some("400");
            assert_eq!(h.get("error.type").map(String::as_str), refused, "{h:?}");
            seen_ports.push(h["server.port"].clone());
            // notifications/initialized goes on the new upstream session: its audit id, never the id.
            let upstream = if h["server.port"] == ports[0] { "alpha" } else { "beta" };
            if session_bound {
                assert_eq!(h["mcp.session.id"], audit_id(&format!("{upstream}-session-1")), "{h:?}");
            } else {
                assert!(h["jsonrpc.request.id"].parse::<i64>().is_ok(), "{h:?}");
            }
        }
        seen_ports.sort();
        let mut expected = ports.to_vec();
        expected.sort();
        assert_eq!(seen_ports, expected);
    }
    let lists = children(server, "tools/list");
    assert_eq!(lists.len(), 4, "two pages from each upstream, to find `echo`");
    assert_eq!(children(server, "tools/call echo").len(), 1);
    assert_eq!(spans.len(), 15);

    // Every POST the upstreams got carried its client span's context, in the HTTP header and in
    // `params._meta` alike (the server/discover probe's body is the 2026 protocol's own, and
    // carries it in the header only).
    for upstream in [&up.alpha, &up.beta] {
        let posts = upstream.traceparents();
        assert_eq!(posts.len(), if std::ptr::eq(upstream, &up.alpha) { 6 } else { 5 }, "{posts:?}");
        for post in posts {
            let header = post["header"].as_str().unwrap_or_else(|| panic!("a traceparent header: {post}"));
            if post["method"] != "server/discover" {
                assert_eq!(post["meta"], header, "{post}");
            }
            let span_id = header.split('-').nth(2).unwrap();
            let hop = spans.iter().find(|s| hex(&s.span_id) == span_id).unwrap_or_else(|| panic!("{post}"));
            assert_eq!(hop.kind, SpanKind::Client as i32);
            assert_eq!(attributes(hop)["mcp.method.name"], post["method"].as_str().unwrap());
        }
    }
}

#[tokio::test]
async fn an_unreachable_upstream_fails_its_client_span() {
    let (collector_url, seen) = collector().await;
    let (_key, up, _cp, worker, _dir) = setup(Some(collector_url)).await;
    // `broken` has alpha and a server that is never there.
    let mut alice = worker.client("broken", Some(ALICE));
    assert_eq!(alice.initialize().await.status, 200);
    worker.gw.shutdown().await;
    let spans = eventually("the spans at the collector", async || {
        let seen = seen.lock().unwrap();
        (seen.spans.len() >= 4).then(|| seen.spans.clone())
    })
    .await;
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32 && s.name == "initialize").unwrap();
    // The first request to each upstream is the server/discover probe: alpha refused it (a
    // 2025-era server), the dead port could not be reached (and nothing more was sent there).
    let probes: Vec<&Span> =
        spans.iter().filter(|s| s.name == "server/discover" && s.kind == SpanKind::Client as i32).collect();
    assert_eq!(probes.len(), 2, "{:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    let (failed, fine): (Vec<&Span>, Vec<&Span>) =
        probes.into_iter().partition(|s| attributes(s)["server.port"] != port_of(&up.alpha.url));
    let f = attributes(failed[0]);
    assert_eq!(f["error.type"], "unreachable", "{f:?}");
    assert_eq!(f["server.port"], port_of(&up.gone.url));
    let status = failed[0].status.clone().unwrap();
    assert_eq!(status.code, SpanStatus::Error as i32);
    assert!(status.message.contains("could not be reached"), "{}", status.message);
    assert_eq!(attributes(fine[0])["error.type"], "400", "alpha speaks 2025-11-25 only");
    let alpha_port = port_of(&up.alpha.url);
    let others: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32 && s.name != "server/discover")
        .inspect(|s| assert_eq!(attributes(s)["server.port"], alpha_port))
        .collect();
    assert_eq!(others.len(), 2, "initialize and notifications/initialized, to alpha only");
    for hop in spans.iter().filter(|s| s.kind == SpanKind::Client as i32) {
        assert_eq!(hop.parent_span_id, server.span_id);
        assert_eq!(hop.trace_id, server.trace_id);
    }
    // The session still opens with what answered.
    assert!(!attributes(server).contains_key("error.type"));
}

#[tokio::test]
async fn a_renamed_tool_is_audited_and_traced_under_both_names() {
    use gatehouse_core::shaping::ToolOverride;
    let (collector_url, seen) = collector().await;
    let (_key, up, cp, worker, _dir) = setup_with(Some(collector_url), |c| {
        let dev = c.virtual_servers.iter_mut().find(|v| v.slug == "dev").unwrap();
        dev.overrides.push(ToolOverride {
            server: "alpha".into(),
            tool: "echo".into(),
            rename: Some("say".into()),
            ..Default::default()
        });
    })
    .await;
    let mut alice = worker.client("dev", Some(ALICE));
    alice.initialize().await;
    assert!(alice.tool_names().await.contains(&"say".to_owned()));
    assert_eq!(text_of(&alice.call("say", json!({ "x": 1 })).await), r#"alpha/echo: {"x":1}"#);
    assert_eq!(up.alpha.calls().last().unwrap()["name"], "echo");
    assert_eq!(alice.call("nope", json!({})).await.rpc_code(), Some(-32602));

    // The audit event names the tool both ways: what the client called, what ran upstream.
    let events = eventually("the calls audited", async || {
        let calls: Vec<_> = cp.audit_events().into_iter().filter(|e| e.method == "tools/call").collect();
        (calls.len() == 2).then_some(calls)
    })
    .await;
    let say = events.iter().find(|e| e.outcome == gatehouse_core::audit::Outcome::Allowed).unwrap();
    assert_eq!((say.tool.as_deref(), say.exposed_tool.as_deref()), (Some("echo"), Some("say")));
    assert_eq!(say.upstream_server.as_deref(), Some("alpha"));
    assert_eq!(say.rule_id.as_deref(), Some(grant_rule_id("analyst", "alpha", "echo").as_str()));
    let nope = events.iter().find(|e| e.outcome == gatehouse_core::audit::Outcome::Invalid).unwrap();
    assert_eq!((nope.tool.as_deref(), nope.exposed_tool.as_deref()), (Some("nope"), Some("nope")));

    // The server span is the client's view (`gen_ai.tool.name` = "say"), with the upstream's name
    // beside it; the client span is the upstream's view.
    worker.gw.shutdown().await;
    let spans = eventually("the spans at the collector", async || {
        let seen = seen.lock().unwrap();
        seen.spans.iter().any(|s| s.name == "tools/call echo").then(|| seen.spans.clone())
    })
    .await;
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32 && s.name == "tools/call say").unwrap();
    let a = attributes(server);
    assert_eq!(a["gen_ai.tool.name"], "say");
    assert_eq!(a["gatehouse.upstream_tool"], "echo");
    let client = spans.iter().find(|s| s.kind == SpanKind::Client as i32 && s.name == "tools/call echo").unwrap();
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(attributes(client)["gen_ai.tool.name"], "echo");
}

/// The data points of the metric `name` in the last export that has it (cumulative: the last is the total).
fn last_metric(metrics: &[Metric], name: &str) -> Metric {
    metrics.iter().rfind(|m| m.name == name).cloned().unwrap_or_else(|| {
        panic!("{name} in {:?}", metrics.iter().map(|m| &m.name).collect::<std::collections::BTreeSet<_>>())
    })
}

/// The integer value of a sum or gauge data point with these attributes (as strings).
fn number(metric: &Metric, with: &[(&str, &str)]) -> Option<i64> {
    let points = match metric.data.as_ref()? {
        metric::Data::Sum(sum) => &sum.data_points,
        metric::Data::Gauge(gauge) => &gauge.data_points,
        _ => return None,
    };
    points
        .iter()
        .find(|p| with.iter().all(|(k, v)| strings(&p.attributes).get(*k).map(String::as_str) == Some(*v)))
        .and_then(|p| match p.value? {
            number_data_point::Value::AsInt(i) => Some(i),
            number_data_point::Value::AsDouble(d) => Some(d as i64),
        })
}

#[tokio::test]
async fn metrics_are_exported_over_otlp_with_the_scrapes_attributes() {
    let (collector_url, seen) = collector().await;
    let (_key, _up, _cp, worker, _dir) = setup(Some(collector_url)).await;
    let mut alice = worker.client("dev", Some(ALICE));
    alice.initialize().await;
    alice.call("echo", json!({})).await;
    alice.call("echo", json!({ "n": 2 })).await;
    assert_eq!(alice.call("add", json!({})).await.rpc_code(), Some(-32003));
    let scraped = eventually("five requests measured", async || {
        let m = worker.scrape().await;
        (m.total_operations() == 5.0).then_some(m)
    })
    .await;

    // Shutting down exports the metrics' last values.
    worker.gw.shutdown().await;
    let metrics = eventually("the metrics at the collector", async || {
        let seen = seen.lock().unwrap();
        seen.metrics.iter().any(|m| m.name == "mcp.server.operation.duration").then(|| seen.metrics.clone())
    })
    .await;

    let duration = last_metric(&metrics, "mcp.server.operation.duration");
    assert_eq!(duration.unit, "s");
    let Some(metric::Data::Histogram(histogram)) = &duration.data else { panic!("a histogram: {duration:?}") };
    let point = |with: &[(&str, &str)]| {
        histogram
            .data_points
            .iter()
            .find(|p| {
                let a = strings(&p.attributes);
                with.iter().all(|(k, v)| a.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("a point with {with:?} in {histogram:?}"))
    };
    let echo = point(&[("mcp.method.name", "tools/call"), ("gen_ai.tool.name", "echo")]);
    let expected: HashMap<String, String> = [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "echo"),
        ("gatehouse.outcome", "allowed"),
        ("gatehouse.tenant", "acme"),
        ("gatehouse.virtual_server", "dev"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(strings(&echo.attributes), expected, "exactly the scrape's labels, under the spans' names");
    assert_eq!(echo.count as f64, scraped.operations("tools/call", "echo", "allowed", "dev"));
    assert_eq!(echo.count, 2);
    assert!(echo.sum.unwrap() > 0.0);
    assert_eq!(
        echo.explicit_bounds,
        [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]
    );
    let denied = point(&[("gen_ai.tool.name", "add")]);
    assert_eq!(strings(&denied.attributes)["error.type"], "denied");
    assert_eq!(strings(&denied.attributes)["gatehouse.outcome"], "denied");
    assert_eq!(denied.count, 1);
    let initialize = point(&[("mcp.method.name", "initialize")]);
    assert!(!strings(&initialize.attributes).contains_key("gen_ai.tool.name"));
    let total: u64 = histogram.data_points.iter().map(|p| p.count).sum();
    assert_eq!(total as f64, scraped.total_operations());

    // The gateway's upstream requests: the forwarded calls among them.
    let client = last_metric(&metrics, "mcp.client.operation.duration");
    assert_eq!(client.unit, "s");
    let Some(metric::Data::Histogram(client)) = &client.data else { panic!("a histogram") };
    let calls: u64 = client
        .data_points
        .iter()
        .filter(|p| strings(&p.attributes).get("mcp.method.name").map(String::as_str) == Some("tools/call"))
        .map(|p| p.count)
        .sum();
    assert_eq!(calls, 2);

    // The other series of the scrape.
    let queued = number(&last_metric(&metrics, "gatehouse.audit.events.queued"), &[]).unwrap();
    assert_eq!(queued as f64, scraped.get("gatehouse_audit_events_queued_total"));
    let activations = last_metric(&metrics, "gatehouse.bundle.activations");
    assert_eq!(number(&activations, &[("source", "control_plane")]), Some(1));
    let revision = worker.gw.active_revision(TENANT).unwrap();
    let info = last_metric(&metrics, "gatehouse.bundle.info");
    assert_eq!(
        number(
            &info,
            &[
                ("gatehouse.tenant", "acme"),
                ("gatehouse.bundle.revision", &revision),
                ("gatehouse.bundle.sequence", "1")
            ]
        ),
        Some(1)
    );
    assert_eq!(number(&last_metric(&metrics, "gatehouse.ready"), &[]), Some(1));
    assert_eq!(number(&last_metric(&metrics, "gatehouse.sse.streams.open"), &[]), Some(0));
}
