//! The worker's status report to the control plane (`POST /v1/workers/status`): its group, version,
//! its own last error reaching the control plane and, per tenant, the revision it runs and its last
//! error about that tenant. Sent after every applied bundle set, when the control-plane contact
//! changes, and as a heartbeat (`docs/decisions/0014-gateway-groups.md`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::gateways::{
    MAX_ERROR_CHARS, MAX_REPORT_TENANTS, MAX_WORKER_ID_CHARS, WorkerStatusReport, WorkerTenantStatus, truncate_chars,
};
use tracing::{debug, warn};

use crate::bundles::{PolicyStore, describe};

/// Default time between two heartbeat reports.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(15);

/// A worker's identity and reporting rhythm (the parts of a worker's set-up the bundle poll does not
/// need). [`Default`]: the host name plus a random suffix, a report every 15 s.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The id the worker reports under: letters, digits, `.`, `_`, `-`, `:`, at most 128 characters
    /// (other characters are replaced by `-`). Stable across restarts when configured, so the
    /// console shows one row per worker.
    pub worker_id: String,
    /// Time between two heartbeat reports.
    pub status_interval: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self { worker_id: default_worker_id(), status_interval: DEFAULT_STATUS_INTERVAL }
    }
}

/// `{hostname}-{6 random hex digits}`.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    sanitize_worker_id(&format!("{host}-{suffix}"))
}

/// Replaces characters a worker id may not hold with `-` and bounds its length.
pub fn sanitize_worker_id(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':') { c } else { '-' })
        .take(MAX_WORKER_ID_CHARS)
        .collect();
    if clean.is_empty() { "worker".to_owned() } else { clean }
}

/// The report of this moment.
pub(crate) fn build_report(worker_id: &str, group: &str, store: &PolicyStore) -> WorkerStatusReport {
    let mut tenants: BTreeMap<String, WorkerTenantStatus> = BTreeMap::new();
    for (tenant, policy) in store.snapshot().iter() {
        tenants.insert(
            tenant.clone(),
            WorkerTenantStatus {
                tenant: tenant.clone(),
                revision: Some(policy.manifest.revision.clone()),
                sequence: Some(policy.manifest.sequence),
                error: None,
            },
        );
    }
    for (tenant, error) in store.tenant_errors() {
        // A claimed tenant name from an unverified bundle may be anything: keep what the control
        // plane accepts (it ignores tenants it does not know).
        if tenant.is_empty() || tenant.chars().count() > 64 {
            continue;
        }
        tenants
            .entry(tenant.clone())
            .or_insert_with(|| WorkerTenantStatus { tenant, revision: None, sequence: None, error: None })
            .error = Some(truncate_chars(&error, MAX_ERROR_CHARS));
    }
    WorkerStatusReport {
        worker_id: worker_id.to_owned(),
        group: group.to_owned(),
        version: crate::VERSION.to_owned(),
        contact_error: store.contact_error().map(|e| truncate_chars(&e, MAX_ERROR_CHARS)),
        tenants: tenants.into_values().take(MAX_REPORT_TENANTS).collect(),
    }
}

/// Sends a report whenever one is due (a change) or the heartbeat interval passed, forever.
pub(crate) async fn report(
    store: Arc<PolicyStore>,
    http: reqwest::Client,
    url: String,
    token: String,
    worker_id: String,
    group: String,
    interval: Duration,
) {
    loop {
        let body = build_report(&worker_id, &group, &store);
        match http.post(&url).bearer_auth(&token).timeout(Duration::from_secs(10)).json(&body).send().await {
            Ok(r) if r.status().is_success() => debug!(tenants = body.tenants.len(), "status reported"),
            Ok(r) => warn!(status = r.status().as_u16(), "the control plane refused the worker's status report"),
            Err(e) => debug!(error = %describe(&e), "could not send the status report"),
        }
        tokio::select! {
            _ = store.report_due.notified() => {
                // Let a burst of changes settle into one report.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_made_acceptable() {
        assert_eq!(sanitize_worker_id("gw 1/eu"), "gw-1-eu");
        assert_eq!(sanitize_worker_id(&"x".repeat(300)).len(), MAX_WORKER_ID_CHARS);
        assert_eq!(sanitize_worker_id(""), "worker");
        let id = default_worker_id();
        assert!(id.len() > 7 && id.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c)), "{id}");
        assert_ne!(id, default_worker_id(), "two workers on one host get different ids");
    }
}
