//! The audit event: one per MCP request that reaches a gateway worker.

use serde::{Deserialize, Serialize};

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed and answered by the upstream (or by the gateway itself, e.g. `initialize`).
    Allowed,
    /// Refused by policy or authentication.
    Denied,
    /// Allowed because the virtual server's policy is in monitor mode, but the policy would have
    /// refused it (the reason and rule say why).
    WouldDeny,
    /// Allowed, but the upstream failed or answered with a JSON-RPC error.
    UpstreamError,
    /// The request was malformed.
    Invalid,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::WouldDeny => "would_deny",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Invalid => "invalid",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allowed" => Outcome::Allowed,
            "denied" => Outcome::Denied,
            "would_deny" => Outcome::WouldDeny,
            "upstream_error" => Outcome::UpstreamError,
            "invalid" => Outcome::Invalid,
            _ => return None,
        })
    }
}

/// One audited MCP request, as the worker records it and the control plane stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique id chosen by the worker; ingest is idempotent on it.
    pub id: String,
    /// Unix time in milliseconds when the request arrived.
    pub time_ms: i64,
    /// Tenant slug.
    pub tenant: String,
    /// The authenticated user's id, if authentication succeeded.
    pub user_id: Option<String>,
    /// The authenticated user's e-mail, if authentication succeeded.
    pub user_email: Option<String>,
    /// Client name from `initialize` (`clientInfo.name`).
    pub client_name: Option<String>,
    /// Client version from `initialize` (`clientInfo.version`).
    pub client_version: Option<String>,
    /// The gateway's MCP session id, if any.
    pub session_id: Option<String>,
    /// Virtual server slug.
    pub virtual_server: String,
    /// Upstream server slug the request went to, if it went to one.
    pub upstream_server: Option<String>,
    /// JSON-RPC method (`tools/call`, ...), or the HTTP method for non-JSON-RPC requests.
    pub method: String,
    /// Tool name for `tools/call`: the upstream server's own name of the tool once the gateway
    /// resolved it (what access policy, rate limits and data rules decide on), else the name the
    /// client sent.
    pub tool: Option<String>,
    /// For `tools/call`: the name the client called, as the virtual server exposes the tool (it
    /// differs from `tool` when shaping renamed or prefixed it). Absent in events of older workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_tool: Option<String>,
    /// What became of it.
    pub outcome: Outcome,
    /// Why it was denied or failed, in words a user can act on.
    pub reason: Option<String>,
    /// Time from arrival to answer, in microseconds.
    pub latency_us: i64,
    /// Revision of the bundle that decided.
    pub bundle_revision: Option<String>,
    /// The rule that decided a `tools/call` (a rule id, `grant:{role}:{server}:{tool}`, or
    /// `default-deny`).
    #[serde(default)]
    pub rule_id: Option<String>,
    /// What data-classification rules found in the arguments or the response (never the data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<crate::classification::AuditFinding>,
}
