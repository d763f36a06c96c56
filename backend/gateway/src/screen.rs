//! Data classification on the request path (decision 0009): a `tools/call`'s arguments before they
//! go upstream, and its result before it reaches the client (JSON, or the answer event of an SSE
//! stream, which is parsed anyway, so nothing is buffered). The same for `prompts/get` (its
//! `arguments` are arguments, its `messages` a result) and `resources/read` (its `uri` is an
//! argument, its `contents` a result). Binary data is not scanned: a resource's `blob`, an image's or
//! audio's `data` and an embedded resource's `blob` in prompt messages. Block refuses with
//! `DATA_BLOCKED` naming the rule, the detector and where; redact rewrites the matches in place;
//! every finding is audited, never the data itself.

use std::sync::Arc;

use gatehouse_bundle::TenantPolicy;
use gatehouse_bundle::classify::{Direction, Finding, Verdict};
use gatehouse_core::ErrorCode;
use gatehouse_core::audit::Outcome;
use gatehouse_core::classification::AuditFinding;
use gatehouse_core::jsonrpc::POLICY_DENIED;
use serde_json::{Value, json};

use crate::mcp::Record;

/// What a screened request is about, as refusals name it (never with the data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subject {
    /// `tools/call` of this tool.
    Tool(String),
    /// `prompts/get` of this prompt (the name the client used).
    Prompt(String),
    /// `resources/read`. The URI is not repeated: it may be the very data a rule blocks.
    Resource,
}

impl Subject {
    /// The subject of a routed request that data rules screen: `prompts/get` (with the prompt's name
    /// as the client sent it) and `resources/read`; `None` for any other method.
    pub(crate) fn of(method: &str, prompt: Option<&str>) -> Option<Self> {
        match (method, prompt) {
            ("prompts/get", Some(name)) => Some(Subject::Prompt(name.to_owned())),
            ("resources/read", _) => Some(Subject::Resource),
            _ => None,
        }
    }

    /// The refusal of a request part: "the arguments of tool 'x' hold".
    fn request_part(&self) -> String {
        match self {
            Subject::Tool(tool) => format!("the arguments of tool '{tool}' hold"),
            Subject::Prompt(prompt) => format!("the arguments of prompt '{prompt}' hold"),
            Subject::Resource => "the URI of resources/read holds".to_owned(),
        }
    }

    /// The refusal of an answer: ("the result of tool 'x'", "it").
    fn answer_part(&self) -> (String, &'static str) {
        match self {
            Subject::Tool(tool) => (format!("the result of tool '{tool}'"), "it was"),
            Subject::Prompt(prompt) => (format!("the messages of prompt '{prompt}'"), "they were"),
            Subject::Resource => ("the contents of the resource".to_owned(), "they were"),
        }
    }
}

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

fn at(finding: &Finding) -> &str {
    if finding.path.is_empty() { "/" } else { &finding.path }
}

/// Takes the binary strings of an answer's `result` out (leaving `null`), so no detector sees them;
/// [`restore`] puts them back. Tool results are scanned whole, as before.
fn detach_binary(subject: &Subject, result: &mut Value) -> Vec<(String, Value)> {
    let mut taken = Vec::new();
    let mut take = |item: Option<&mut Value>, key: &str, pointer: String| {
        if let Some(slot) = item.and_then(|i| i.get_mut(key)).filter(|v| v.is_string()) {
            taken.push((pointer, std::mem::take(slot)));
        }
    };
    match subject {
        Subject::Tool(_) => {}
        Subject::Resource => {
            let items = result.get_mut("contents").and_then(Value::as_array_mut);
            for (i, item) in items.into_iter().flatten().enumerate() {
                take(Some(item), "blob", format!("/contents/{i}/blob"));
            }
        }
        Subject::Prompt(_) => {
            let messages = result.get_mut("messages").and_then(Value::as_array_mut);
            for (i, message) in messages.into_iter().flatten().enumerate() {
                let Some(content) = message.get_mut("content") else { continue };
                match content.get("type").and_then(Value::as_str) {
                    Some("image" | "audio") => {
                        take(Some(content), "data", format!("/messages/{i}/content/data"));
                    }
                    Some("resource") => {
                        take(content.get_mut("resource"), "blob", format!("/messages/{i}/content/resource/blob"));
                    }
                    _ => {}
                }
            }
        }
    }
    taken
}

fn restore(result: &mut Value, taken: Vec<(String, Value)>) {
    for (pointer, value) in taken {
        if let Some(slot) = result.pointer_mut(&pointer) {
            *slot = value;
        }
    }
}

impl Screen {
    /// `None` when no data-classification rule of the tenant applies to `server` (the usual case:
    /// then nothing is scanned and SSE streams pass through untouched).
    pub(crate) fn for_server(policy: &Arc<TenantPolicy>, server: &str) -> Option<Self> {
        (!policy.classifier().is_empty_for(server))
            .then(|| Self { policy: Arc::clone(policy), server: server.to_owned() })
    }

    /// Screens a request's `arguments` (in `params`; for `resources/read` its `uri`), redacting in
    /// place. `Err(reason, rule)` when a rule blocks it.
    pub(crate) fn arguments(
        &self,
        subject: &Subject,
        params: &mut Value,
        record: &mut Record,
    ) -> Result<(), (String, String)> {
        let (findings, blocked) = self.check_arguments(subject, params);
        record.findings(findings.into_iter());
        blocked.map_or(Ok(()), Err)
    }

    /// [`Screen::arguments`] without the record: the audited findings, and the refusal if blocked.
    fn check_arguments(&self, subject: &Subject, params: &mut Value) -> (Vec<AuditFinding>, Option<(String, String)>) {
        let classifier = self.policy.classifier();
        let verdict = match subject {
            Subject::Tool(_) | Subject::Prompt(_) => {
                let Some(arguments) = params.get_mut("arguments") else { return (Vec::new(), None) };
                classifier.apply(&self.server, Direction::Params, arguments)
            }
            Subject::Resource => {
                // Scanned as `{"uri": …}` so the finding's pointer says `/uri`.
                let Some(uri) = params.get_mut("uri") else { return (Vec::new(), None) };
                let mut wrapped = json!({ "uri": std::mem::take(uri) });
                let verdict = classifier.apply(&self.server, Direction::Params, &mut wrapped);
                *uri = wrapped["uri"].take();
                verdict
            }
        };
        let findings = audited(verdict.findings(), "params").collect();
        match verdict {
            Verdict::Allow { .. } => (findings, None),
            Verdict::Block { finding, .. } => {
                let reason = format!(
                    "{} data that rule {} blocks ({} at {})",
                    subject.request_part(),
                    finding.rule_id,
                    finding.detector.as_str(),
                    at(&finding)
                );
                (findings, Some((reason, finding.rule_id)))
            }
        }
    }

    /// Screens a JSON-RPC response message in place: its `result` is redacted, or the whole
    /// message becomes a `DATA_BLOCKED` error (same id). Returns whether it was blocked.
    pub(crate) fn response(&self, subject: &Subject, message: &mut Value, record: &mut Record) -> bool {
        let (findings, blocked) = self.check_response(subject, message);
        record.findings(findings.into_iter());
        let Some((reason, rule)) = blocked else { return false };
        record.blocked(reason, rule);
        true
    }

    /// [`Screen::response`] without the record: the audited findings, and `(reason, rule)` if the
    /// message was replaced by a refusal.
    fn check_response(&self, subject: &Subject, message: &mut Value) -> (Vec<AuditFinding>, Option<(String, String)>) {
        let Some(result) = message.get_mut("result") else { return (Vec::new(), None) };
        let binary = detach_binary(subject, result);
        let verdict = self.policy.classifier().apply(&self.server, Direction::Response, result);
        restore(result, binary);
        let findings = audited(verdict.findings(), "response").collect();
        let Verdict::Block { finding, .. } = verdict else { return (findings, None) };
        let (what, it) = subject.answer_part();
        let reason = format!(
            "{what} held data that rule {} blocks ({} at {}); {it} not delivered",
            finding.rule_id,
            finding.detector.as_str(),
            at(&finding)
        );
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        *message = refusal(&id, &reason, subject, &finding.rule_id);
        (findings, Some((reason, finding.rule_id)))
    }
}

/// The JSON-RPC error of a blocked request or answer: `data` names the tool or prompt (never a
/// resource's URI) and the rule.
pub(crate) fn refusal(id: &Value, reason: &str, subject: &Subject, rule: &str) -> Value {
    let mut data = json!({ "code": ErrorCode::DataBlocked.as_str(), "rule": rule });
    match subject {
        Subject::Tool(tool) => data["tool"] = json!(tool),
        Subject::Prompt(prompt) => data["prompt"] = json!(prompt),
        Subject::Resource => {}
    }
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": POLICY_DENIED, "message": reason, "data": data },
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

#[cfg(test)]
mod tests {
    use gatehouse_bundle::classify::{Action, ClassificationRule, Detector, Scope};
    use gatehouse_bundle::format::{Bundle, Content, Manifest};

    use super::*;

    const CARD: &str = "4111 1111 1111 1111";

    fn rule(id: &str, detector: Detector, action: Action, scope: Scope, servers: &[&str]) -> ClassificationRule {
        ClassificationRule {
            id: id.into(),
            name: id.into(),
            detector,
            pattern: None,
            action,
            scope,
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn policy(rules: Vec<ClassificationRule>) -> Arc<TenantPolicy> {
        let manifest = Manifest {
            schema_version: gatehouse_bundle::format::SCHEMA_VERSION,
            tenant: "acme".into(),
            group: "default".into(),
            revision: "r1".into(),
            sequence: 1,
            compiled_at_ms: 0,
            key_id: "k".into(),
        };
        let content = Content { tenant: "acme".into(), classification: rules, ..Content::default() };
        Arc::new(TenantPolicy::build(&Bundle { manifest, content }).unwrap())
    }

    /// Cards in results are redacted on `pci`, in arguments blocked on `pci`; nothing applies to `docs`.
    fn pci() -> Screen {
        let policy = policy(vec![
            rule("mask-cards", Detector::CardNumber, Action::Redact, Scope::Responses, &["pci"]),
            rule("no-card-args", Detector::CardNumber, Action::Block, Scope::Params, &["pci"]),
        ]);
        assert!(Screen::for_server(&policy, "docs").is_none(), "no rule for docs: nothing is scanned");
        Screen::for_server(&policy, "pci").expect("rules apply to pci")
    }

    fn prompt() -> Subject {
        Subject::Prompt("summary".into())
    }

    #[test]
    fn only_prompts_get_and_resources_read_are_screened_among_routed_methods() {
        assert_eq!(Subject::of("prompts/get", Some("p")), Some(Subject::Prompt("p".into())));
        assert_eq!(Subject::of("resources/read", None), Some(Subject::Resource));
        assert_eq!(Subject::of("resources/subscribe", None), None);
        assert_eq!(Subject::of("completion/complete", Some("p")), None);
    }

    #[test]
    fn prompt_arguments_are_arguments() {
        let screen = pci();
        let mut params = json!({ "name": "summary", "arguments": { "card": format!("pay with {CARD}") } });
        let (findings, blocked) = screen.check_arguments(&prompt(), &mut params);
        let (reason, rule) = blocked.expect("a blocking params rule");
        assert_eq!(rule, "no-card-args");
        assert_eq!(
            reason,
            "the arguments of prompt 'summary' hold data that rule no-card-args blocks (card_number at /card)"
        );
        assert!(!reason.contains("4111"));
        assert_eq!(findings.len(), 1);
        assert_eq!((findings[0].direction.as_str(), findings[0].path.as_str()), ("params", "/card"));
        // Clean arguments pass, unchanged and unaudited.
        let mut clean = json!({ "name": "summary", "arguments": { "x": "1" } });
        assert_eq!(screen.check_arguments(&prompt(), &mut clean), (vec![], None));
        assert_eq!(clean, json!({ "name": "summary", "arguments": { "x": "1" } }));
    }

    #[test]
    fn a_resource_uri_is_an_argument_and_is_never_repeated() {
        let screen = pci();
        let mut params = json!({ "uri": "file:///cards/4111111111111111.txt" });
        let (findings, blocked) = screen.check_arguments(&Subject::Resource, &mut params);
        let (reason, _) = blocked.expect("blocked");
        assert_eq!(reason, "the URI of resources/read holds data that rule no-card-args blocks (card_number at /uri)");
        assert_eq!(findings[0].path, "/uri");
        assert_eq!(params["uri"], "file:///cards/4111111111111111.txt", "a blocked request is left as it was");
        let refusal = refusal(&json!(7), &reason, &Subject::Resource, "no-card-args");
        assert_eq!(refusal["error"]["data"], json!({ "code": "DATA_BLOCKED", "rule": "no-card-args" }));
        assert!(!refusal.to_string().contains("4111"), "the refusal does not echo the URI");

        // Redacted, the URI goes upstream without the data.
        let policy = policy(vec![rule("mask", Detector::CardNumber, Action::Redact, Scope::Both, &[])]);
        let screen = Screen::for_server(&policy, "any").unwrap();
        let mut params = json!({ "uri": "file:///cards/4111111111111111.txt" });
        let (findings, blocked) = screen.check_arguments(&Subject::Resource, &mut params);
        assert_eq!(blocked, None);
        assert_eq!(params, json!({ "uri": "file:///cards/[REDACTED:card_number].txt" }));
        assert_eq!(findings[0].action, Action::Redact);
    }

    #[test]
    fn resource_text_is_redacted_and_blobs_are_not_scanned() {
        let screen = pci();
        let mut message = json!({ "jsonrpc": "2.0", "id": 3, "result": { "contents": [
            { "uri": "pci://doc", "text": format!("card {CARD}") },
            { "uri": "pci://img", "mimeType": "image/png", "blob": "4111111111111111" },
        ] } });
        let (findings, blocked) = screen.check_response(&Subject::Resource, &mut message);
        assert_eq!(blocked, None);
        assert_eq!(message["result"]["contents"][0]["text"], "card [REDACTED:card_number]");
        assert_eq!(message["result"]["contents"][1]["blob"], "4111111111111111", "binary is passed through");
        assert_eq!(findings.len(), 1);
        assert_eq!((findings[0].direction.as_str(), findings[0].path.as_str()), ("response", "/contents/0/text"));
        // The same string as a tool result's text is redacted: the blob was skipped, not missed.
        let mut tool = json!({ "id": 1, "result": { "content": [{ "type": "text", "text": "4111111111111111" }] } });
        screen.check_response(&Subject::Tool("t".into()), &mut tool);
        assert_eq!(tool["result"]["content"][0]["text"], "[REDACTED:card_number]");
    }

    #[test]
    fn blocked_prompt_messages_become_data_blocked_with_the_id_kept() {
        let policy = policy(vec![rule("no-cards", Detector::CardNumber, Action::Block, Scope::Both, &["pci"])]);
        let screen = Screen::for_server(&policy, "pci").unwrap();
        let mut message = json!({ "jsonrpc": "2.0", "id": "u-9", "result": { "messages": [
            { "role": "user", "content": { "type": "image", "mimeType": "image/png", "data": "4111111111111111" } },
            { "role": "user", "content": { "type": "resource",
                "resource": { "uri": "pci://x", "blob": "4111111111111111" } } },
        ] } });
        let (findings, blocked) = screen.check_response(&prompt(), &mut message);
        assert_eq!((findings, blocked), (vec![], None), "image data and embedded blobs are not scanned");
        assert_eq!(message["result"]["messages"][0]["content"]["data"], "4111111111111111");
        assert_eq!(message["result"]["messages"][1]["content"]["resource"]["blob"], "4111111111111111");

        let mut message = json!({ "jsonrpc": "2.0", "id": "u-9", "result": { "messages": [
            { "role": "user", "content": { "type": "text", "text": format!("charge {CARD}") } },
        ] } });
        let (findings, blocked) = screen.check_response(&prompt(), &mut message);
        let (reason, rule) = blocked.expect("blocked");
        assert_eq!(rule, "no-cards");
        assert_eq!(
            reason,
            "the messages of prompt 'summary' held data that rule no-cards blocks \
             (card_number at /messages/0/content/text); they were not delivered"
        );
        assert_eq!(findings[0].direction, "response");
        assert_eq!(message["id"], "u-9");
        assert_eq!(message["error"]["code"], POLICY_DENIED);
        assert_eq!(
            message["error"]["data"],
            json!({ "code": "DATA_BLOCKED", "prompt": "summary", "rule": "no-cards" })
        );
        assert!(message.get("result").is_none());
        assert!(!message.to_string().contains("4111"));
    }

    #[test]
    fn scope_decides_the_direction() {
        // `pci()` redacts results and blocks arguments: prompt arguments are not results, and
        // messages are not arguments.
        let screen = pci();
        let mut result = json!({ "id": 1, "result": { "messages": [
            { "role": "user", "content": { "type": "text", "text": CARD } },
        ] } });
        let (_, blocked) = screen.check_response(&prompt(), &mut result);
        assert_eq!(blocked, None, "the blocking rule covers arguments only");
        assert_eq!(result["result"]["messages"][0]["content"]["text"], "[REDACTED:card_number]");
        let policy = policy(vec![rule("mask", Detector::CardNumber, Action::Redact, Scope::Responses, &[])]);
        let screen = Screen::for_server(&policy, "pci").unwrap();
        let mut params = json!({ "name": "p", "arguments": { "c": CARD } });
        assert_eq!(screen.check_arguments(&prompt(), &mut params), (vec![], None));
        assert_eq!(params["arguments"]["c"], CARD, "a results-only rule leaves arguments alone");
    }
}
