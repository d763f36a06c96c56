//! Data classification on the request path: a `tools/call`'s arguments before they go upstream, and
//! its result before it reaches the client (JSON, or the answer event of an SSE stream, which is
//! parsed anyway, so nothing is buffered). Block refuses with `DATA_BLOCKED` naming the rule, the
//! detector and where; redact rewrites the matches in place; every finding is audited, never the
//! data itself.

use std::sync::Arc;

use gatehouse_bundle::TenantPolicy;
use gatehouse_bundle::classify::{Direction, Finding, Verdict};
use gatehouse_core::ErrorCode;
use gatehouse_core::audit::Outcome;
use gatehouse_core::classification::AuditFinding;
use gatehouse_core::jsonrpc::POLICY_DENIED;
use serde_json::{Value, json};

use crate::mcp::Record;

/// The classifier of one tenant for one upstream server, when any rule applies to it.
pub(crate) struct Screen {
    policy: Arc<TenantPolicy>,
    server: String,
}

fn audited(findings: &[Finding], direction: &str) -> impl Iterator<Item = AuditFinding> {
    findings.iter().map(move |f| AuditFinding {
        rule_id: f.rule_id.clone(),
        detector: f.detector,
        action: f.action,
        direction: direction.to_owned(),
        path: f.path.clone(),
        count: u32::try_from(f.count).unwrap_or(u32::MAX),
    })
}

impl Screen {
    /// `None` when no data-classification rule of the tenant applies to `server` (the usual case:
    /// then nothing is scanned and SSE streams pass through untouched).
    pub(crate) fn for_server(policy: &Arc<TenantPolicy>, server: &str) -> Option<Self> {
        (!policy.classifier().is_empty_for(server))
            .then(|| Self { policy: Arc::clone(policy), server: server.to_owned() })
    }

    /// Screens a call's `arguments` (in `params`), redacting in place. `Err(reason, rule)` when a
    /// rule blocks it.
    pub(crate) fn arguments(
        &self,
        tool: &str,
        params: &mut Value,
        record: &mut Record,
    ) -> Result<(), (String, String)> {
        let Some(arguments) = params.get_mut("arguments") else { return Ok(()) };
        let verdict = self.policy.classifier().apply(&self.server, Direction::Params, arguments);
        record.findings(audited(verdict.findings(), "params"));
        match verdict {
            Verdict::Allow { .. } => Ok(()),
            Verdict::Block { finding, .. } => Err((
                format!(
                    "the arguments of tool '{tool}' hold data that rule {} blocks ({} at {})",
                    finding.rule_id,
                    finding.detector.as_str(),
                    if finding.path.is_empty() { "/" } else { &finding.path }
                ),
                finding.rule_id,
            )),
        }
    }

    /// Screens a JSON-RPC response message in place: its `result` is redacted, or the whole
    /// message becomes a `DATA_BLOCKED` error (same id). Returns whether it was blocked.
    pub(crate) fn response(&self, tool: &str, message: &mut Value, record: &mut Record) -> bool {
        let Some(result) = message.get_mut("result") else { return false };
        let verdict = self.policy.classifier().apply(&self.server, Direction::Response, result);
        record.findings(audited(verdict.findings(), "response"));
        let Verdict::Block { finding, .. } = verdict else { return false };
        let reason = format!(
            "the result of tool '{tool}' held data that rule {} blocks ({} at {}); it was not delivered",
            finding.rule_id,
            finding.detector.as_str(),
            if finding.path.is_empty() { "/" } else { &finding.path }
        );
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        *message = refusal(&id, &reason, tool, &finding.rule_id);
        record.blocked(reason, finding.rule_id);
        true
    }
}

/// The JSON-RPC error of a blocked call or result.
pub(crate) fn refusal(id: &Value, reason: &str, tool: &str, rule: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": POLICY_DENIED,
            "message": reason,
            "data": { "code": ErrorCode::DataBlocked.as_str(), "tool": tool, "rule": rule },
        },
    })
}

impl Record {
    /// Notes a block by a data-classification rule: the outcome is `denied` whatever the upstream did.
    pub(crate) fn blocked(&mut self, reason: String, rule: String) {
        self.outcome(Outcome::Denied, reason);
        self.set_rule(rule);
        self.freeze_outcome();
    }
}
