//! Gateway workers' status reports (`POST /v1/workers/status`) and what a tenant sees of them
//! (`docs/decisions/0014-gateway-groups.md`).

use serde::{Deserialize, Serialize};

#[cfg(feature = "graphql")]
use async_graphql::SimpleObject;

use crate::GatehouseError;

/// Most tenants one report may carry.
pub const MAX_REPORT_TENANTS: usize = 10_000;
/// Longest error text (characters) a report may carry; workers cut theirs to this.
pub const MAX_ERROR_CHARS: usize = 1_000;
/// Longest worker id (characters).
pub const MAX_WORKER_ID_CHARS: usize = 128;
/// Longest version string (characters).
pub const MAX_VERSION_CHARS: usize = 64;
/// A worker whose latest report is older than this is shown offline (workers report every 15 s).
pub const STALE_AFTER_MS: i64 = 60_000;

/// What a worker reports, after each bundle change and as a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerStatusReport {
    /// The worker's id (letters, digits, `.`, `_`, `-`, `:`).
    pub worker_id: String,
    /// The gateway group it serves.
    pub group: String,
    /// Its version.
    pub version: String,
    /// Its own last error talking to the control plane (`None`: the last poll went well).
    pub contact_error: Option<String>,
    /// One entry per tenant the worker serves or has an error about.
    pub tenants: Vec<WorkerTenantStatus>,
}

/// One tenant in a worker's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerTenantStatus {
    /// Tenant slug.
    pub tenant: String,
    /// The revision it runs for the tenant (`None`: nothing active).
    pub revision: Option<String>,
    /// Its sequence.
    pub sequence: Option<u64>,
    /// The worker's last error about this tenant (a refused bundle), `None` once it is resolved.
    pub error: Option<String>,
}

/// `text` cut to at most `max` characters (on a character boundary), with `…` when cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn bounded(field: &str, value: &str, max: usize) -> Result<(), GatehouseError> {
    if value.chars().count() > max {
        return Err(GatehouseError::invalid(field, format!("at most {max} characters")));
    }
    Ok(())
}

impl WorkerStatusReport {
    /// Checks the bounds of a report; the error names the offending field.
    pub fn validate(&self) -> Result<(), GatehouseError> {
        let id = &self.worker_id;
        if id.is_empty()
            || id.chars().count() > MAX_WORKER_ID_CHARS
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
        {
            return Err(GatehouseError::invalid(
                "workerId",
                format!("1 to {MAX_WORKER_ID_CHARS} letters, digits, '.', '_', '-' or ':'"),
            ));
        }
        crate::ids::validate_slug("group", &self.group)?;
        bounded("version", &self.version, MAX_VERSION_CHARS)?;
        if let Some(e) = &self.contact_error {
            bounded("contactError", e, MAX_ERROR_CHARS)?;
        }
        if self.tenants.len() > MAX_REPORT_TENANTS {
            return Err(GatehouseError::invalid("tenants", format!("at most {MAX_REPORT_TENANTS} per report")));
        }
        for (i, t) in self.tenants.iter().enumerate() {
            bounded(&format!("tenants[{i}].tenant"), &t.tenant, 64)?;
            if let Some(r) = &t.revision {
                bounded(&format!("tenants[{i}].revision"), r, 64)?;
            }
            if let Some(e) = &t.error {
                bounded(&format!("tenants[{i}].error"), e, MAX_ERROR_CHARS)?;
            }
        }
        Ok(())
    }
}

/// One worker as a tenant sees it: only the revision and the error concerning that tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct GatewayWorkerView {
    /// The worker's id.
    pub worker_id: String,
    /// The gateway group it serves.
    pub group: String,
    /// Its version.
    pub version: String,
    /// The revision it runs for this tenant (`None`: none).
    pub revision: Option<String>,
    /// Its sequence.
    pub sequence: Option<i64>,
    /// True when that is the tenant's newest bundle.
    pub latest: bool,
    /// When its latest report arrived.
    pub reported_at_ms: i64,
    /// False when the latest report is older than a minute.
    pub online: bool,
    /// Its last error about this tenant (a refused bundle).
    pub error: Option<String>,
    /// Its own last error reaching the control plane.
    pub contact_error: Option<String>,
}

/// A tenant's gateway group and the workers serving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct GatewayStatusView {
    /// The tenant's gateway group.
    pub group: String,
    /// Revision of the tenant's newest bundle.
    pub latest_revision: Option<String>,
    /// Its sequence.
    pub latest_sequence: Option<i64>,
    /// The workers of the group, and any other worker that reported about this tenant, by group and id.
    pub workers: Vec<GatewayWorkerView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> WorkerStatusReport {
        WorkerStatusReport {
            worker_id: "gw-1.example:a1".into(),
            group: "default".into(),
            version: "0.1.0".into(),
            contact_error: None,
            tenants: vec![WorkerTenantStatus {
                tenant: "acme".into(),
                revision: Some("ab".into()),
                sequence: Some(1),
                error: None,
            }],
        }
    }

    #[test]
    fn reports_are_bounded_and_errors_name_the_field() {
        assert!(report().validate().is_ok());
        let mut r = report();
        r.worker_id = "bad id".into();
        assert!(r.validate().unwrap_err().message.contains("workerId"));
        let mut r = report();
        r.tenants[0].error = Some("x".repeat(MAX_ERROR_CHARS + 1));
        assert!(r.validate().unwrap_err().message.contains("tenants[0].error"));
        let mut r = report();
        r.tenants = vec![r.tenants[0].clone(); MAX_REPORT_TENANTS + 1];
        assert!(r.validate().unwrap_err().message.contains("tenants"));
        let mut r = report();
        r.group = "Not A Slug".into();
        assert!(r.validate().unwrap_err().message.contains("group"));
    }

    #[test]
    fn truncation_keeps_the_bound() {
        assert_eq!(truncate_chars("héllo", 10), "héllo");
        let cut = truncate_chars(&"é".repeat(2000), MAX_ERROR_CHARS);
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS);
        assert!(cut.ends_with('…'));
    }
}
