//! `/metrics`: the worker's counters in the Prometheus text exposition format 0.0.4.
//!
//! # What is measured
//!
//! * `mcp_server_operation_duration_seconds` (histogram): the OpenTelemetry MCP semantic
//!   conventions' `mcp.server.operation.duration` ("MCP request or notification duration as observed
//!   on the receiver from the time it was received until the result or ack is sent", instrument
//!   histogram, unit `s`), in Prometheus naming. One observation per audited request, recorded from
//!   `Record::emit`, so a streamed answer counts when its stream ends. Labels:
//!   - `mcp_method_name`: the JSON-RPC method when it is one MCP defines (the semconv's well-known
//!     `mcp.method.name` values plus `server/discover`); `other` for any other method string (a
//!     client chooses it, so it is never copied into a label); and, like the audit trail's `method`
//!     column, `response` for a client's answer to a server request, `GET` / `DELETE` for the
//!     stream-opening GET and the session-ending DELETE, and `POST` for a POST refused before its
//!     body was read or parsed (401, 403, 413, bad JSON).
//!   - `gen_ai_tool_name`: for `tools/call` only (empty otherwise). The tool's upstream name when the
//!     policy decided on it (it resolved to a tool an upstream of the virtual server lists, allowed or
//!     denied), for at most [`MAX_TOOL_LABELS_PER_TENANT`] distinct names per tenant (first come,
//!     kept while the process lives); `other` for the rest and for calls of tools that do not exist.
//!     A client can send any tool name and an upstream can list any number of tools, so neither may
//!     grow the number of series without bound.
//!   - `outcome`: the audit outcome (`allowed`, `denied`, `would_deny`, `upstream_error`, `invalid`).
//!   - `tenant`, `virtual_server`: only tenants this worker serves (requests for unknown tenants are
//!     neither audited nor measured); an unknown virtual server of a known tenant is `other`.
//!
//!   Buckets: the semconv's advised boundaries `[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30,
//!   60, 120, 300]`, preceded by `0.001, 0.0025, 0.005` because the gateway answers denials, `ping`
//!   and refusals itself in well under 10 ms, and those would otherwise all land in the first bucket.
//! * `gatehouse_audit_events_{queued,shipped,dropped}_total`: events handed to the spool, events the
//!   control plane acknowledged (a resend after a restart counts again), events lost (only events
//!   emitted after shutdown began, and spool lines torn by a crash).
//! * `gatehouse_bundle_activations_total{source}` (a tenant's active bundle changed) and
//!   `gatehouse_bundle_refusals_total{source}`, `source` = `control_plane` or `disk`.
//! * `gatehouse_bundle_info{tenant,revision,sequence} 1` per served tenant (an info-style gauge: join
//!   on it to see which revision a worker enforces), and `gatehouse_ready` (0 or 1).
//! * `gatehouse_sse_streams_open`: event streams (POST answers and GET streams) open to clients.
//! * `gatehouse_rate_limit_untracked_total`: calls let through untracked because the worker's
//!   bucket table was full (`ratelimit.rs`). With a shared rate-limit store (`shared_limits.rs`),
//!   also `gatehouse_rate_limit_store_fallbacks_total` (calls judged by the worker's own buckets
//!   because Redis did not answer in time) and `gatehouse_rate_limit_store_up` (0 or 1: a connection
//!   to Redis is live).
//!
//! # Cost on the request path
//!
//! Counters are atomics. A histogram observation hashes its label values (borrowed strings), looks
//! the series up under a read lock and increments three atomics; only the first observation of a new
//! label combination takes the write lock and allocates. Rendering happens on scrape only.
//!
//! # OTLP
//!
//! With an OTLP endpoint the same series are exported over OTLP as well (`telemetry.rs`): each
//! operation series carries its labels as OpenTelemetry attributes, built when the series is
//! created, which the request path hands to the SDK's `mcp.server.operation.duration` histogram.
//!
//! # Who may read it
//!
//! The labels name every tenant this worker serves, so `/metrics` is an operator endpoint: it is
//! served on the worker's listener, and when `metrics_token` is configured it requires
//! `Authorization: Bearer <metrics_token>` (401 otherwise). Without a token it is open: keep the
//! worker port's `/metrics` path off the public network (e.g. at the ingress) or set a token.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use gatehouse_core::audit::AuditEvent;

use crate::bundles::Source;

/// Upper bound of distinct `gen_ai_tool_name` values per tenant; later tools are counted as `other`.
pub(crate) const MAX_TOOL_LABELS_PER_TENANT: usize = 100;

/// Label value for anything outside the bounded sets.
const OTHER: &str = "other";

/// Histogram bucket upper bounds, in seconds (see the module docs).
pub(crate) const BUCKETS: [f64; 17] =
    [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// `mcp.method.name` values that become labels as they are: the semconv's well-known values, plus
/// `server/discover` (2026-07-28 era probe) and what the audit trail records for non-methods.
const KNOWN_METHODS: [&str; 30] = [
    "completion/complete",
    "elicitation/create",
    "initialize",
    "logging/setLevel",
    "notifications/cancelled",
    "notifications/initialized",
    "notifications/message",
    "notifications/progress",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
    "notifications/roots/list_changed",
    "notifications/tools/list_changed",
    "ping",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/read",
    "resources/subscribe",
    "resources/templates/list",
    "resources/unsubscribe",
    "roots/list",
    "sampling/createMessage",
    "tools/call",
    "tools/list",
    "server/discover",
    "response",
    "GET",
    "POST",
    "DELETE",
];

/// The bounded `mcp_method_name` label of an audited method.
pub(crate) fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS.iter().find(|m| **m == method).copied().unwrap_or(OTHER)
}

/// The audit pipeline's counters (owned by the audit sink, read on scrape).
#[derive(Debug, Default)]
pub(crate) struct AuditCounters {
    /// Events handed to the spool channel.
    pub(crate) queued: AtomicU64,
    /// Events the control plane acknowledged.
    pub(crate) shipped: AtomicU64,
    /// Events lost: emitted after shutdown, or spool lines torn by a crash.
    pub(crate) dropped: AtomicU64,
}

/// Bundle activations and refusals, by source (owned by the policy store, read on scrape).
#[derive(Debug, Default)]
pub(crate) struct BundleCounters {
    activated: [AtomicU64; 2],
    refused: [AtomicU64; 2],
}

impl BundleCounters {
    fn index(source: Source) -> usize {
        match source {
            Source::ControlPlane => 0,
            Source::Disk => 1,
        }
    }

    /// One tenant's active bundle changed (a new tenant, or a new revision).
    pub(crate) fn activated(&self, source: Source) {
        self.activated[Self::index(source)].fetch_add(1, Ordering::Relaxed);
    }

    /// `count` bundles of one offered set were refused.
    pub(crate) fn refused(&self, source: Source, count: usize) {
        self.refused[Self::index(source)].fetch_add(count as u64, Ordering::Relaxed);
    }

    /// (source label, activations, refusals) per source, for the OTLP export.
    pub(crate) fn totals(&self) -> [(&'static str, u64, u64); 2] {
        let at = |i: usize| self.activated[i].load(Ordering::Relaxed);
        let rf = |i: usize| self.refused[i].load(Ordering::Relaxed);
        [("control_plane", at(0), rf(0)), ("disk", at(1), rf(1))]
    }
}

/// One latency histogram: per-bucket counts (not cumulative; the last slot is `+Inf`), count, sum.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = BUCKETS.partition_point(|bound| *bound < seconds);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The labels of one operation series.
#[derive(Debug)]
struct Series {
    tenant: Box<str>,
    virtual_server: Box<str>,
    method: &'static str,
    tool: Box<str>,
    outcome: &'static str,
    histogram: Histogram,
    /// The same labels as OpenTelemetry attributes (`mcp.method.name`, `gen_ai.tool.name` when set,
    /// `error.type` on failures, `gatehouse.{outcome,tenant,virtual_server}`), for the OTLP export.
    attributes: Box<[opentelemetry::KeyValue]>,
}

impl Series {
    fn is(&self, key: &Key<'_>) -> bool {
        self.method == key.method
            && self.outcome == key.outcome
            && *self.tenant == *key.tenant
            && *self.virtual_server == *key.virtual_server
            && *self.tool == *key.tool
    }
}

/// Borrowed label values, for look-ups without allocating.
#[derive(Clone, Copy)]
struct Key<'a> {
    tenant: &'a str,
    virtual_server: &'a str,
    method: &'static str,
    tool: &'a str,
    outcome: &'static str,
}

#[derive(Default)]
struct Table {
    /// Series by the hash of their labels (collisions share the vector).
    series: HashMap<u64, Vec<Arc<Series>>>,
    /// Tool label values given out, per tenant (bounded by [`MAX_TOOL_LABELS_PER_TENANT`]).
    tools: HashMap<Box<str>, HashSet<Box<str>>>,
}

impl Table {
    fn find(&self, hash: u64, key: &Key<'_>) -> Option<&Arc<Series>> {
        self.series.get(&hash)?.iter().find(|s| s.is(key))
    }

    /// True when `tool` may not get a label of its own in `tenant` (the tenant's quota is used up by
    /// other tools).
    fn overflows(&self, tenant: &str, tool: &str) -> bool {
        self.tools.get(tenant).is_some_and(|t| t.len() >= MAX_TOOL_LABELS_PER_TENANT && !t.contains(tool))
    }
}

/// The operation histograms and gauges the request path updates.
#[derive(Default)]
pub(crate) struct Metrics {
    table: RwLock<Table>,
    hasher: std::hash::RandomState,
    /// Event streams open to clients.
    pub(crate) sse_open: AtomicI64,
}

impl Metrics {
    fn hash(&self, key: &Key<'_>) -> u64 {
        self.hasher.hash_one((key.tenant, key.virtual_server, key.method, key.tool, key.outcome))
    }

    /// Records one audited request. `decided` is true when the policy decided on the event's tool
    /// (so the name is one an upstream lists); `virtual_server_known` when the virtual server exists.
    #[cfg(test)]
    pub(crate) fn observe(&self, event: &AuditEvent, virtual_server_known: bool, decided: bool, elapsed: Duration) {
        self.observe_with(event, virtual_server_known, decided, elapsed, |_| {});
    }

    /// [`Metrics::observe`], handing the series' attributes to `also` (the OTLP export).
    pub(crate) fn observe_with(
        &self,
        event: &AuditEvent,
        virtual_server_known: bool,
        decided: bool,
        elapsed: Duration,
        also: impl FnOnce(&[opentelemetry::KeyValue]),
    ) {
        let method = method_label(&event.method);
        let tool = match (method, &event.tool) {
            ("tools/call", Some(tool)) if decided => tool.as_str(),
            ("tools/call", _) => OTHER,
            _ => "",
        };
        let mut key = Key {
            tenant: &event.tenant,
            virtual_server: if virtual_server_known { &event.virtual_server } else { OTHER },
            method,
            tool,
            outcome: event.outcome.as_str(),
        };
        {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            if let Some(series) = table.find(self.hash(&key), &key) {
                series.histogram.observe(elapsed);
                also(&series.attributes);
                return;
            }
            if tool != OTHER && !tool.is_empty() && table.overflows(key.tenant, tool) {
                key.tool = OTHER;
                if let Some(series) = table.find(self.hash(&key), &key) {
                    series.histogram.observe(elapsed);
                    also(&series.attributes);
                    return;
                }
            }
        }
        let series = self.insert_and_observe(key, elapsed);
        also(&series.attributes);
    }

    /// The slow path: the first observation of a label combination.
    #[cold]
    fn insert_and_observe(&self, mut key: Key<'_>, elapsed: Duration) -> Arc<Series> {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if !key.tool.is_empty() && key.tool != OTHER {
            let tools = table.tools.entry(key.tenant.into()).or_default();
            if !tools.contains(key.tool) {
                if tools.len() < MAX_TOOL_LABELS_PER_TENANT {
                    tools.insert(key.tool.into());
                } else {
                    key.tool = OTHER;
                }
            }
        }
        let hash = self.hash(&key);
        if let Some(series) = table.find(hash, &key) {
            series.histogram.observe(elapsed);
            return Arc::clone(series);
        }
        let series = Arc::new(Series {
            tenant: key.tenant.into(),
            virtual_server: key.virtual_server.into(),
            method: key.method,
            tool: key.tool.into(),
            outcome: key.outcome,
            histogram: Histogram::default(),
            attributes: otel_attributes(&key),
        });
        series.histogram.observe(elapsed);
        table.series.entry(hash).or_default().push(Arc::clone(&series));
        series
    }

    /// Every operation series, sorted by labels (for a stable exposition).
    fn snapshot(&self) -> Vec<Arc<Series>> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Arc<Series>> = table.series.values().flatten().cloned().collect();
        drop(table);
        all.sort_by(|a, b| {
            (&a.tenant, &a.virtual_server, a.method, &a.tool, a.outcome).cmp(&(
                &b.tenant,
                &b.virtual_server,
                b.method,
                &b.tool,
                b.outcome,
            ))
        });
        all
    }
}

/// A series' labels as OpenTelemetry attributes (the names of the spans' attributes).
fn otel_attributes(key: &Key<'_>) -> Box<[opentelemetry::KeyValue]> {
    use opentelemetry::KeyValue;
    let mut attributes = vec![KeyValue::new("mcp.method.name", key.method)];
    if !key.tool.is_empty() {
        attributes.push(KeyValue::new("gen_ai.tool.name", key.tool.to_owned()));
    }
    if matches!(key.outcome, "denied" | "invalid" | "upstream_error") {
        attributes.push(KeyValue::new("error.type", key.outcome));
    }
    attributes.push(KeyValue::new("gatehouse.outcome", key.outcome));
    attributes.push(KeyValue::new("gatehouse.tenant", key.tenant.to_owned()));
    attributes.push(KeyValue::new("gatehouse.virtual_server", key.virtual_server.to_owned()));
    attributes.into_boxed_slice()
}

/// A guard that counts one open event stream while it lives.
pub(crate) struct OpenStream(Arc<Metrics>);

impl OpenStream {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        metrics.sse_open.fetch_add(1, Ordering::Relaxed);
        Self(metrics)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.sse_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything the scrape shows, gathered from the worker's parts.
pub(crate) struct Exposition<'a> {
    pub(crate) metrics: &'a Metrics,
    pub(crate) audit: &'a AuditCounters,
    pub(crate) bundles: &'a BundleCounters,
    /// (tenant, revision, sequence) of every served tenant.
    pub(crate) active: Vec<(String, String, u64)>,
    pub(crate) ready: bool,
    pub(crate) limits: LimitCounters,
}

/// The rate limiter's counters, read on scrape.
#[derive(Debug, Default)]
pub(crate) struct LimitCounters {
    /// Calls let through untracked (the local bucket table was full).
    pub(crate) untracked: u64,
    /// With a shared store: (calls judged locally because it did not answer, connected now).
    pub(crate) store: Option<(u64, bool)>,
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as Prometheus prints it (`+Inf`, or the shortest exact decimal).
fn float(value: f64) -> String {
    if value.is_infinite() { "+Inf".to_owned() } else { format!("{value}") }
}

impl Exposition<'_> {
    /// The text exposition (format 0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.render_operations(&mut out);
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        let a = self.audit;
        counter(
            &mut out,
            "gatehouse_audit_events_queued_total",
            "Audit events handed to the local spool.",
            a.queued.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "gatehouse_audit_events_shipped_total",
            "Audit events the control plane acknowledged (resends after a restart count again).",
            a.shipped.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "gatehouse_audit_events_dropped_total",
            "Audit events lost: emitted after shutdown began, or spool lines torn by a crash.",
            a.dropped.load(Ordering::Relaxed),
        );
        for (name, help, values) in [
            (
                "gatehouse_bundle_activations_total",
                "Times a tenant's active policy bundle changed (new tenant or new revision).",
                &self.bundles.activated,
            ),
            (
                "gatehouse_bundle_refusals_total",
                "Policy bundles refused (signature, group, sequence, content).",
                &self.bundles.refused,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (source, value) in ["control_plane", "disk"].iter().zip(values) {
                let _ = writeln!(out, "{name}{{source=\"{source}\"}} {}", value.load(Ordering::Relaxed));
            }
        }
        out.push_str(
            "# HELP gatehouse_bundle_info The policy bundle revision each tenant is served with (value 1).\n\
             # TYPE gatehouse_bundle_info gauge\n",
        );
        for (tenant, revision, sequence) in &self.active {
            out.push_str("gatehouse_bundle_info{tenant=\"");
            escape(tenant, &mut out);
            out.push_str("\",revision=\"");
            escape(revision, &mut out);
            let _ = writeln!(out, "\",sequence=\"{sequence}\"}} 1");
        }
        let _ = writeln!(
            out,
            "# HELP gatehouse_ready 1 once a policy bundle set is active, else 0.\n# TYPE gatehouse_ready gauge\n\
             gatehouse_ready {}",
            u8::from(self.ready)
        );
        let _ = writeln!(
            out,
            "# HELP gatehouse_sse_streams_open Event streams (POST answers and GET streams) open to clients.\n\
             # TYPE gatehouse_sse_streams_open gauge\ngatehouse_sse_streams_open {}",
            self.metrics.sse_open.load(Ordering::Relaxed).max(0)
        );
        counter(
            &mut out,
            "gatehouse_rate_limit_untracked_total",
            "Calls let through without a rate-limit bucket because the worker's bucket table was full.",
            self.limits.untracked,
        );
        if let Some((fallbacks, up)) = self.limits.store {
            counter(
                &mut out,
                "gatehouse_rate_limit_store_fallbacks_total",
                "Calls judged by this worker's own rate-limit buckets because the shared store did not answer in time.",
                fallbacks,
            );
            let _ = writeln!(
                out,
                "# HELP gatehouse_rate_limit_store_up 1 while a connection to the shared rate-limit store is live, else 0.\n\
                 # TYPE gatehouse_rate_limit_store_up gauge\ngatehouse_rate_limit_store_up {}",
                u8::from(up)
            );
        }
        out
    }

    fn render_operations(&self, out: &mut String) {
        const NAME: &str = "mcp_server_operation_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {NAME} MCP request or notification duration as observed on the receiver from the time it was \
             received until the result or ack is sent (OpenTelemetry mcp.server.operation.duration).\n\
             # TYPE {NAME} histogram"
        );
        for series in self.metrics.snapshot() {
            let mut labels = String::with_capacity(128);
            labels.push_str("mcp_method_name=\"");
            escape(series.method, &mut labels);
            labels.push_str("\",gen_ai_tool_name=\"");
            escape(&series.tool, &mut labels);
            labels.push_str("\",outcome=\"");
            labels.push_str(series.outcome);
            labels.push_str("\",tenant=\"");
            escape(&series.tenant, &mut labels);
            labels.push_str("\",virtual_server=\"");
            escape(&series.virtual_server, &mut labels);
            labels.push('"');
            let h = &series.histogram;
            let mut cumulative = 0u64;
            for (bound, count) in BUCKETS.iter().copied().chain([f64::INFINITY]).zip(&h.buckets) {
                cumulative += count.load(Ordering::Relaxed);
                let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"{}\"}} {cumulative}", float(bound));
            }
            let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{NAME}_sum{{{labels}}} {}", float(sum));
            // The count is the +Inf bucket, so the two always agree within one scrape.
            let _ = writeln!(out, "{NAME}_count{{{labels}}} {cumulative}");
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_core::audit::Outcome;

    use super::*;

    fn event(method: &str, tool: Option<&str>, outcome: Outcome) -> AuditEvent {
        AuditEvent {
            id: "e".into(),
            time_ms: 0,
            tenant: "acme".into(),
            user_id: None,
            user_email: None,
            client_name: None,
            client_version: None,
            session_id: None,
            virtual_server: "dev".into(),
            upstream_server: None,
            method: method.into(),
            tool: tool.map(str::to_owned),
            exposed_tool: None,
            outcome,
            reason: None,
            latency_us: 0,
            bundle_revision: None,
            rule_id: None,
            findings: Vec::new(),
        }
    }

    fn render(metrics: &Metrics) -> String {
        let (audit, bundles) = (AuditCounters::default(), BundleCounters::default());
        let limits = LimitCounters::default();
        Exposition { metrics, audit: &audit, bundles: &bundles, active: vec![], ready: true, limits }.render()
    }

    #[test]
    fn buckets_are_cumulative_and_count_matches() {
        let m = Metrics::default();
        let e = event("tools/call", Some("echo"), Outcome::Allowed);
        m.observe(&e, true, true, Duration::from_micros(500));
        m.observe(&e, true, true, Duration::from_millis(30));
        m.observe(&e, true, true, Duration::from_secs(400));
        let text = render(&m);
        let labels = r#"mcp_method_name="tools/call",gen_ai_tool_name="echo",outcome="allowed",tenant="acme",virtual_server="dev""#;
        for (le, n) in [("0.001", 1), ("0.02", 1), ("0.05", 2), ("300", 2), ("+Inf", 3)] {
            let line = format!("mcp_server_operation_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains(&format!("mcp_server_operation_duration_seconds_count{{{labels}}} 3\n")), "{text}");
        assert!(text.contains(&format!("mcp_server_operation_duration_seconds_sum{{{labels}}} 400.0305\n")), "{text}");
    }

    #[test]
    fn labels_stay_bounded() {
        let m = Metrics::default();
        // Unknown methods, undecided tools and unknown virtual servers fold into `other`.
        m.observe(&event("x/evil-1", None, Outcome::Invalid), true, false, Duration::ZERO);
        m.observe(&event("x/evil-2", None, Outcome::Invalid), false, false, Duration::ZERO);
        m.observe(&event("tools/call", Some("nope"), Outcome::Invalid), true, false, Duration::ZERO);
        for i in 0..MAX_TOOL_LABELS_PER_TENANT + 20 {
            m.observe(&event("tools/call", Some(&format!("t{i}")), Outcome::Allowed), true, true, Duration::ZERO);
        }
        // A tool that got its label keeps it.
        m.observe(&event("tools/call", Some("t0"), Outcome::Denied), true, true, Duration::ZERO);
        let text = render(&m);
        assert!(!text.contains("evil"), "{text}");
        assert!(!text.contains("nope"), "{text}");
        assert!(text.contains(
            r#"mcp_method_name="other",gen_ai_tool_name="",outcome="invalid",tenant="acme",virtual_server="other""#
        ));
        let tools: HashSet<&str> = text
            .lines()
            .filter_map(|l| l.split("gen_ai_tool_name=\"").nth(1))
            .filter_map(|l| l.split('"').next())
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(tools.len(), MAX_TOOL_LABELS_PER_TENANT + 1, "the first 100 tools and `other`");
        assert!(tools.contains("other") && tools.contains("t0") && !tools.contains("t100"));
        let overflow = r#"mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call",gen_ai_tool_name="other",outcome="allowed",tenant="acme",virtual_server="dev"} 20"#;
        assert!(text.contains(overflow), "{text}");
        assert!(text.contains(r#"gen_ai_tool_name="t0",outcome="denied""#));
    }

    #[test]
    fn otlp_attributes_are_the_series_labels() {
        let m = Metrics::default();
        let mut seen = Vec::new();
        let denied = event("tools/call", Some("add"), Outcome::Denied);
        m.observe_with(&denied, true, true, Duration::ZERO, |a| seen = a.to_vec());
        let strings: Vec<(String, String)> = seen.iter().map(|kv| (kv.key.to_string(), kv.value.to_string())).collect();
        let expected = [
            ("mcp.method.name", "tools/call"),
            ("gen_ai.tool.name", "add"),
            ("error.type", "denied"),
            ("gatehouse.outcome", "denied"),
            ("gatehouse.tenant", "acme"),
            ("gatehouse.virtual_server", "dev"),
        ];
        assert_eq!(strings, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));
        // The same series again (the fast path) hands out the same attributes; an unknown method
        // and virtual server are `other`, without a tool.
        m.observe_with(&denied, true, true, Duration::ZERO, |a| assert_eq!(a, seen.as_slice()));
        let odd = event("x/evil", None, Outcome::Allowed);
        m.observe_with(&odd, false, false, Duration::ZERO, |a| {
            let keys: Vec<String> = a.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect();
            assert_eq!(
                keys,
                [
                    "mcp.method.name=other",
                    "gatehouse.outcome=allowed",
                    "gatehouse.tenant=acme",
                    "gatehouse.virtual_server=other"
                ]
            );
        });
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape("a\"b\\c\nd", &mut s);
        assert_eq!(s, r#"a\"b\\c\nd"#);
    }
}
