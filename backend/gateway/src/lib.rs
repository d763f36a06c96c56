//! The Gatehouse edge gateway worker.
//!
//! A worker serves `/mcp/{tenant}/{virtual-server}` (MCP Streamable HTTP) for the tenants of one gateway
//! group. It pulls signed policy bundles from the control plane (long poll), enforces them on every
//! request, forwards allowed requests to the upstream MCP servers, and ships one audit event per request
//! back to the control plane through a durable local spool.
//!
//! * [`Gateway::start`] loads the last good bundles from disk and spawns the background tasks.
//! * [`Gateway::router`] is the worker's whole HTTP surface, including the operator's `/metrics`.
//! * With [`GatewayConfig::otlp_endpoint`], MCP requests are traced (OpenTelemetry, MCP semantic
//!   conventions) and exported as OTLP/HTTP; see `metrics.rs` and `telemetry.rs`.
//!
//! The protocol reasoning (sessions, tool naming, error mapping) is written down in this crate's
//! `README.md`. The worker never depends on control-plane crates: it only shares `gatehouse-core` and
//! `gatehouse-bundle` with them.

#![warn(missing_docs)]

mod audit;
mod bundles;
mod features;
mod mcp;
mod metrics;
mod modern;
mod ratelimit;
mod relay;
mod resp;
mod routes;
mod screen;
mod seal;
mod session;
mod shared_limits;
mod status;
mod telemetry;
mod upstream;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use gatehouse_bundle::{KeyRing, TenantPolicy};
use tokio::task::{AbortHandle, JoinHandle};

pub use status::{WorkerOptions, default_worker_id};

/// MCP protocol versions the gateway speaks with clients, newest first.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// The version the gateway prefers, with clients and with upstreams.
pub(crate) const LATEST_PROTOCOL_VERSION: &str = SUPPORTED_PROTOCOL_VERSIONS[0];

/// This crate's version, reported as `serverInfo.version` and upstream `clientInfo.version`.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long shutdown waits for the audit shipper to hand spooled events to the control plane.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything a worker needs to start.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Base URL of the control plane, e.g. `http://127.0.0.1:8080` (a trailing slash is ignored).
    pub control_url: String,
    /// Bearer token for the control plane's `/v1/*` worker API.
    pub worker_token: String,
    /// The gateway group whose bundles this worker serves, e.g. `default`.
    pub group: String,
    /// Base64 Ed25519 public keys whose signatures this worker accepts on bundles.
    pub trusted_keys: Vec<String>,
    /// Directory for the last good bundle set (`bundles.json`) and the audit spool.
    pub data_dir: PathBuf,
    /// The worker's public base URL, e.g. `http://127.0.0.1:8090`: the origin clients must come from
    /// and the base of the `resource_metadata` URLs.
    pub public_url: String,
    /// Upper bound for one exchange with an upstream MCP server.
    pub upstream_timeout: Duration,
    /// How long the control plane may hold a bundle long poll open (default 25 s).
    pub poll_wait: Duration,
    /// Where to send OpenTelemetry traces (OTLP/HTTP protobuf): a collector's base URL such as
    /// `http://otel-collector:4318` (`/v1/traces` is appended) or the full traces URL. `None`: no
    /// tracing at all.
    pub otlp_endpoint: Option<String>,
    /// When set, `GET /metrics` requires `Authorization: Bearer <metrics_token>`; when `None` it is
    /// open, and the operator must keep it off the public network (it names every tenant served).
    pub metrics_token: Option<String>,
    /// Commands a stdio upstream may run on this worker (exactly as the bundle names them, e.g.
    /// `npx` or `/opt/mcp/bin/server`). Empty: stdio upstreams are refused, never launched
    /// (`docs/decisions/0016-stdio-and-sse-upstreams.md`).
    pub stdio_commands: Vec<String>,
    /// Where rate-limit buckets are shared by every worker of the deployment:
    /// `redis://[[user]:password@]host[:port][/db][?timeout_ms=N]`. `None`: each worker keeps its
    /// own buckets. When Redis does not answer within the timeout (default 50 ms), calls are judged
    /// by the worker's own buckets (`docs/decisions/0011-rate-limits.md`).
    pub rate_limit_store: Option<String>,
}

impl GatewayConfig {
    /// Default for [`GatewayConfig::poll_wait`].
    pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(25);
    /// A sensible default for [`GatewayConfig::upstream_timeout`].
    pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
}

// Hand-written so the worker token never reaches a log line.
impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("control_url", &self.control_url)
            .field("worker_token", &"<redacted>")
            .field("group", &self.group)
            .field("trusted_keys", &self.trusted_keys)
            .field("data_dir", &self.data_dir)
            .field("public_url", &self.public_url)
            .field("upstream_timeout", &self.upstream_timeout)
            .field("poll_wait", &self.poll_wait)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "<redacted>"))
            .field("stdio_commands", &self.stdio_commands)
            .field("rate_limit_store", &self.rate_limit_store.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A running worker. Cheap to clone: every clone is a handle on the same state.
///
/// Dropping the last handle (including the ones inside a served [`Gateway::router`]) stops the
/// background tasks; [`Gateway::shutdown`] does it gracefully.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

/// Shared state of one worker.
pub(crate) struct Inner {
    pub(crate) config: GatewayConfig,
    /// The id this worker reports its status under.
    pub(crate) worker_id: String,
    /// `scheme://host[:port]` of `public_url`, compared with the `Origin` of requests.
    pub(crate) public_origin: String,
    pub(crate) policies: Arc<bundles::PolicyStore>,
    pub(crate) sessions: session::SessionStore,
    pub(crate) upstreams: upstream::Upstreams,
    pub(crate) audit: audit::AuditSink,
    /// Operation histograms and gauges for `/metrics`.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// The tracer (nothing without an OTLP endpoint).
    pub(crate) telemetry: telemetry::Telemetry,
    /// Token buckets of the tenants' rate limits (per worker).
    pub(crate) limiter: Arc<ratelimit::RateLimiter>,
    /// The buckets shared by every worker (Redis), when configured; `limiter` is then the fallback.
    pub(crate) shared_limits: Option<shared_limits::SharedLimiter>,
    tasks: Tasks,
}

/// Background tasks, stopped on shutdown or when the last handle goes.
struct Tasks {
    poller: AbortHandle,
    sweeper: AbortHandle,
    /// Evicts idle rate-limit buckets.
    limits_sweeper: AbortHandle,
    /// Sends the status reports.
    reporter: AbortHandle,
    shipper: audit::ShipperHandle,
    /// Taken by the first `shutdown` so a second call is a no-op.
    shut_down: Mutex<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tasks.poller.abort();
        self.tasks.sweeper.abort();
        self.tasks.limits_sweeper.abort();
        self.tasks.reporter.abort();
        self.tasks.shipper.abort();
        // The spool task ends by itself: dropping `audit` closes its channel after the queued events.
        self.telemetry.shutdown_in_background();
    }
}

impl Gateway {
    /// Starts a worker: checks the configuration, loads the last good bundle set from
    /// `{data_dir}/bundles.json` (so it can serve while the control plane is away), opens the audit
    /// spool, and spawns the bundle poller, the audit shipper and the sweeper of the session cache.
    pub async fn start(config: GatewayConfig) -> anyhow::Result<Gateway> {
        Self::start_with(config, WorkerOptions::default()).await
    }

    /// [`Gateway::start`] with an explicit worker id and status-report interval: the worker reports
    /// its state to the control plane (`POST /v1/workers/status`) after each bundle change and every
    /// `options.status_interval`.
    pub async fn start_with(mut config: GatewayConfig, options: WorkerOptions) -> anyhow::Result<Gateway> {
        let worker_id = status::sanitize_worker_id(&options.worker_id);
        config.control_url = config.control_url.trim_end_matches('/').to_owned();
        config.public_url = config.public_url.trim_end_matches('/').to_owned();
        let public_origin = routes::origin_of(&config.public_url)
            .ok_or_else(|| anyhow!("public URL {:?} is not an absolute http(s) URL", config.public_url))?;
        if config.trusted_keys.is_empty() {
            bail!("no trusted bundle keys: give the control plane's public signing key, or the worker can never serve");
        }
        let mut keyring = KeyRing::default();
        for key in &config.trusted_keys {
            keyring.add_base64(key).map_err(|e| anyhow!("trusted key {key:?}: {e}"))?;
        }
        let shared_limits =
            config.rate_limit_store.as_deref().map(shared_limits::SharedLimiter::connect).transpose()?;
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;

        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        let telemetry = match &config.otlp_endpoint {
            Some(endpoint) => telemetry::Telemetry::otlp(endpoint, http.clone())?,
            None => telemetry::Telemetry::disabled(),
        };

        let policies = Arc::new(bundles::PolicyStore::default());
        let mut activator =
            bundles::Activator::new(keyring, config.group.clone(), &config.data_dir, Arc::clone(&policies));
        // stdio and legacy SSE upstreams are served through local Streamable HTTP endpoints.
        let bridge = gatehouse_bridge::Bridge::start(gatehouse_bridge::BridgeConfig {
            stdio_commands: config.stdio_commands.clone(),
            timeout: config.upstream_timeout,
            ..Default::default()
        })
        .await
        .context("starting the stdio/SSE upstream bridge")?;
        activator.set_bridge(bridge);
        activator.load_from_disk().await;

        let (audit, shipper) = audit::start(&config, http.clone()).await?;
        let poller = tokio::spawn(bundles::poll(activator, http.clone(), bundles::PollTarget::new(&config)));
        let reporter = tokio::spawn(status::report(
            Arc::clone(&policies),
            http.clone(),
            format!("{}/v1/workers/status", config.control_url),
            config.worker_token.clone(),
            worker_id.clone(),
            config.group.clone(),
            options.status_interval.max(Duration::from_millis(100)),
        ));
        let upstreams = upstream::Upstreams::new(http, config.upstream_timeout);
        let sessions = session::SessionStore::new(upstreams.clone());
        let sweeper = tokio::spawn(session::sweep(sessions.clone()));
        let limiter = Arc::new(ratelimit::RateLimiter::default());
        let limits_sweeper = tokio::spawn(ratelimit::sweep(Arc::clone(&limiter)));

        let metrics: Arc<metrics::Metrics> = Arc::default();
        telemetry.observe_worker(telemetry::WorkerState {
            audit: Arc::clone(&audit.counters),
            policies: Arc::clone(&policies),
            metrics: Arc::clone(&metrics),
        });
        let inner = Inner {
            config,
            worker_id,
            public_origin,
            policies,
            sessions,
            upstreams,
            audit,
            metrics,
            telemetry,
            limiter,
            shared_limits,
            tasks: Tasks {
                poller: poller.abort_handle(),
                sweeper: sweeper.abort_handle(),
                limits_sweeper: limits_sweeper.abort_handle(),
                reporter: reporter.abort_handle(),
                shipper,
                shut_down: Mutex::new(false),
            },
        };
        Ok(Gateway { inner: Arc::new(inner) })
    }

    /// All worker routes: `/healthz`, `/readyz`, `/metrics`, the RFC 9728 metadata and
    /// `/mcp/{tenant}/{vs}`.
    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }

    /// The id this worker reports its status under.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// The sequence of the bundle serving `tenant`, if any.
    pub fn active_sequence(&self, tenant: &str) -> Option<u64> {
        self.inner.policies.tenant(tenant).map(|p| p.manifest.sequence)
    }

    /// The latest refusal of `tenant`'s bundle (what its status report carries), if any.
    pub fn tenant_error(&self, tenant: &str) -> Option<String> {
        self.inner.policies.tenant_errors().remove(tenant)
    }

    /// The revision of the bundle serving `tenant`, if any.
    pub fn active_revision(&self, tenant: &str) -> Option<String> {
        self.inner.policies.tenant(tenant).map(|p| p.manifest.revision.clone())
    }

    /// The latest problem with bundles or the control plane (refused bundle, unreachable control
    /// plane, disk copy not written), or `None` when the latest attempts went well.
    pub fn last_error(&self) -> Option<String> {
        self.inner.policies.last_error()
    }

    /// True once a bundle set (possibly empty) was activated from the control plane or from disk.
    pub fn is_ready(&self) -> bool {
        self.inner.policies.is_ready()
    }

    /// Stops the worker's background work gracefully: the bundle poller stops, every audit event
    /// already handed over is written to the spool, and the shipper gets a short grace period to send
    /// what is spooled (whatever it cannot send is sent by the next start). Serving stops when the
    /// caller stops serving the router. Calling it twice is harmless.
    pub async fn shutdown(&self) {
        {
            let mut done = self.inner.tasks.shut_down.lock().unwrap_or_else(|e| e.into_inner());
            if *done {
                return;
            }
            *done = true;
        }
        self.inner.tasks.poller.abort();
        self.inner.tasks.sweeper.abort();
        self.inner.tasks.limits_sweeper.abort();
        self.inner.tasks.reporter.abort();
        self.inner.audit.close().await;
        self.inner.tasks.shipper.stop(SHUTDOWN_GRACE).await;
        self.inner.telemetry.shutdown().await;
    }

    /// The Prometheus text exposition (format 0.0.4) served at `/metrics`.
    pub fn metrics_text(&self) -> String {
        let inner = &self.inner;
        let mut active: Vec<(String, String, u64)> = inner
            .policies
            .snapshot()
            .values()
            .map(|p| (p.manifest.tenant.clone(), p.manifest.revision.clone(), p.manifest.sequence))
            .collect();
        active.sort();
        metrics::Exposition {
            metrics: &inner.metrics,
            audit: &inner.audit.counters,
            bundles: &inner.policies.counters,
            active,
            ready: self.is_ready(),
            limits: metrics::LimitCounters {
                untracked: inner.limiter.overflowed(),
                store: inner.shared_limits.as_ref().map(|s| (s.fallbacks(), s.is_connected())),
            },
        }
        .render()
    }

    /// The active policy of `tenant`.
    pub(crate) fn policy(&self, tenant: &str) -> Option<Arc<TenantPolicy>> {
        self.inner.policies.tenant(tenant)
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Inner {
    /// Records a finished request in `/metrics` and ends its spans (called by the audit record when
    /// it emits the request's event).
    pub(crate) fn observe(
        &self,
        event: &gatehouse_core::audit::AuditEvent,
        virtual_server_known: bool,
        trace: Option<Box<telemetry::RequestTrace>>,
        elapsed: Duration,
    ) {
        let telemetry = &self.telemetry;
        self.metrics.observe_with(event, virtual_server_known, event.rule_id.is_some(), elapsed, |attributes| {
            telemetry.record_operation(attributes, elapsed);
        });
        if let Some(trace) = trace {
            trace.finish(event);
        }
    }
}

/// A task handle that is awaited at most once (shared by `shutdown` and `Drop`).
pub(crate) type OnceHandle = Mutex<Option<JoinHandle<()>>>;

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Doubling retry delay with a ceiling, reset after a success.
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// The bounded backoff both background loops use: 200 ms doubling to 5 s.
    pub(crate) fn standard() -> Self {
        let first = Duration::from_millis(200);
        Self { first, max: Duration::from_secs(5), next: first }
    }

    /// The delay to wait now; the following one is twice as long, up to the ceiling.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the first delay.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_ceiling_and_resets() {
        let mut b = Backoff::standard();
        let delays: Vec<_> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 200);
    }

    #[test]
    fn debug_hides_the_worker_token() {
        let config = GatewayConfig {
            control_url: "http://cp".into(),
            worker_token: "s3cret".into(),
            group: "default".into(),
            trusted_keys: vec![],
            data_dir: "/tmp/x".into(),
            public_url: "http://gw".into(),
            upstream_timeout: GatewayConfig::DEFAULT_UPSTREAM_TIMEOUT,
            poll_wait: GatewayConfig::DEFAULT_POLL_WAIT,
            otlp_endpoint: None,
            metrics_token: Some("m3trics".into()),
            stdio_commands: vec![],
            rate_limit_store: Some("redis://:pw@redis:6379/0".into()),
        };
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!format!("{config:?}").contains("pw@"));
        assert!(!format!("{config:?}").contains("m3trics"));
    }
}
