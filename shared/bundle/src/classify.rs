//! Data classification: find sensitive data in tool-call parameters and tool responses, and block,
//! redact or log it (issue 4).
//!
//! * [`ClassificationRule`] is one rule as the bundle carries it; [`validate_rule`] refuses a rule
//!   that could never work, naming the field, when an administrator saves it.
//! * [`Classifier`] is built once per bundle from all of a tenant's rules and, on the request path,
//!   [scans](Classifier::scan) or [redacts](Classifier::apply) a `serde_json::Value`.
//!
//! Every string in the value is scanned: object values and array items, at any depth (object keys
//! are not). The walk is iterative, so nesting can neither overflow the stack nor hide a string
//! below some depth. Numbers, booleans and keys are never scanned.
//!
//! A [`Finding`] never holds the matched text, only where it was (a JSON pointer) and how often:
//! findings go into audit logs, the secret must not.
//!
//! # Detectors
//!
//! The built-in detectors favour precision: each checks structure (and a checksum where the data has
//! one) so that ids, timestamps, versions and hashes in ordinary tool traffic do not trip them. Each
//! detector's function documents exactly what it matches and what it misses:
//! [`Detector::CardNumber`], [`Detector::UsSsn`], [`Detector::Email`], [`Detector::Phone`],
//! [`Detector::Iban`], [`Detector::ApiKey`], [`Detector::PrivateKey`]. All of them match ASCII only.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest compiled size of a tenant pattern (`regex`'s `size_limit`).
pub const MAX_PATTERN_COMPILED_BYTES: usize = 1 << 20;
/// Longest tenant pattern accepted, in bytes of source.
pub const MAX_PATTERN_LEN: usize = 4096;

pub use gatehouse_core::classification::{Action, Detector, Scope};

/// Position in [`Detector::BUILT_IN`]; `None` for [`Detector::Pattern`].
fn built_in_index(d: Detector) -> Option<usize> {
    Detector::BUILT_IN.iter().position(|x| *x == d)
}

/// A lower bound on the length of any match, to skip short strings without looking at them.
fn min_len(d: Detector) -> usize {
    match d {
        Detector::CardNumber => 13,
        Detector::UsSsn => 11,
        Detector::Email => 6,
        Detector::Phone => 9,
        Detector::Iban => 15,
        Detector::ApiKey => 20,
        Detector::PrivateKey => 27,
        Detector::Pattern => 1,
    }
}

/// Whether a rule of this scope looks at traffic in this direction.
pub fn covers(scope: Scope, direction: Direction) -> bool {
    matches!(
        (scope, direction),
        (Scope::Both, _) | (Scope::Params, Direction::Params) | (Scope::Responses, Direction::Response)
    )
}

/// The direction of the traffic being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Tool-call parameters, client to server.
    Params,
    /// A tool response, server to client.
    Response,
}

/// One data-classification rule, as the signed bundle carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassificationRule {
    /// Stable id, unique among the tenant's rules; findings name it.
    pub id: String,
    /// Name shown to administrators.
    pub name: String,
    /// What to look for.
    pub detector: Detector,
    /// For [`Detector::Pattern`] only: a regular expression (Rust `regex` syntax) matched anywhere
    /// in each string. Must be `None` for the built-in detectors.
    pub pattern: Option<String>,
    /// What to do with a match.
    pub action: Action,
    /// Parameters, responses, or both.
    pub scope: Scope,
    /// Slugs of the upstream servers the rule applies to; empty applies it to every server.
    pub servers: Vec<String>,
}

/// A rule that cannot be used: which rule, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("classification rule {rule_id:?}: {field}: {message}")]
pub struct RuleError {
    /// Id of the offending rule (may be empty when the id is what is wrong).
    pub rule_id: String,
    /// The offending field: `id`, `name`, `pattern` or `servers`.
    pub field: &'static str,
    /// What is wrong, in words an administrator can act on.
    pub message: String,
}

/// Checks a rule as an administrator saves it: id and name non-empty, no empty server slug, a
/// pattern present exactly when the detector is [`Detector::Pattern`], and that pattern a valid
/// regular expression within [`MAX_PATTERN_LEN`] and [`MAX_PATTERN_COMPILED_BYTES`] that cannot match
/// the empty string.
pub fn validate_rule(rule: &ClassificationRule) -> Result<(), RuleError> {
    compile_rule(rule).map(|_| ())
}

/// Validates a rule and compiles its pattern, if it has one.
fn compile_rule(rule: &ClassificationRule) -> Result<Option<Regex>, RuleError> {
    let bad = |field: &'static str, message: String| RuleError { rule_id: rule.id.clone(), field, message };
    if rule.id.trim().is_empty() {
        return Err(bad("id", "the rule needs an id".into()));
    }
    if rule.name.trim().is_empty() {
        return Err(bad("name", "give the rule a name".into()));
    }
    if let Some(i) = rule.servers.iter().position(|s| s.trim().is_empty()) {
        return Err(bad(
            "servers",
            format!("server {} of the list is empty; list server slugs, or none to cover every server", i + 1),
        ));
    }
    match (rule.detector, rule.pattern.as_deref()) {
        (Detector::Pattern, None) => Err(bad("pattern", "a pattern rule needs a regular expression".into())),
        (Detector::Pattern, Some(p)) => {
            if p.is_empty() {
                return Err(bad("pattern", "a pattern rule needs a regular expression".into()));
            }
            if p.len() > MAX_PATTERN_LEN {
                return Err(bad("pattern", format!("the pattern is longer than {MAX_PATTERN_LEN} bytes")));
            }
            let re = RegexBuilder::new(p).size_limit(MAX_PATTERN_COMPILED_BYTES).build().map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => bad(
                    "pattern",
                    format!("the pattern is too complex: it compiles to more than {limit} bytes; simplify it"),
                ),
                e => bad("pattern", format!("not a valid regular expression: {e}")),
            })?;
            if re.is_match("") {
                return Err(bad(
                    "pattern",
                    "the pattern matches the empty string, so it would match everywhere".into(),
                ));
            }
            Ok(Some(re))
        }
        (d, Some(_)) => {
            Err(bad("pattern", format!("only `pattern` rules take a pattern; `{}` is a built-in detector", d.as_str())))
        }
        (_, None) => Ok(None),
    }
}

/// One rule that matched one string. Never carries the matched text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's id.
    pub rule_id: String,
    /// The rule's detector.
    pub detector: Detector,
    /// The rule's action.
    pub action: Action,
    /// JSON pointer (RFC 6901) of the string, e.g. `/content/0/text`; `""` for a bare string.
    pub path: String,
    /// How many separate matches the string held.
    pub count: usize,
}

/// The outcome of [`Classifier::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A [`Action::Block`] rule matched: refuse the call or response. The value was not changed.
    Block {
        /// The first blocking finding (in document order, then rule order).
        finding: Finding,
        /// Every finding, for the audit log (including redact ones: nothing was redacted).
        findings: Vec<Finding>,
    },
    /// Let it through: every [`Action::Redact`] match has been replaced in place.
    Allow {
        /// Every finding (redacted and logged ones), for the audit log; empty if nothing matched.
        findings: Vec<Finding>,
    },
}

impl Verdict {
    /// Every finding, whatever the verdict.
    pub fn findings(&self) -> &[Finding] {
        match self {
            Verdict::Block { findings, .. } | Verdict::Allow { findings } => findings,
        }
    }

    /// Whether the call or response must be refused.
    pub fn is_block(&self) -> bool {
        matches!(self, Verdict::Block { .. })
    }
}

/// A rule ready for the request path.
#[derive(Debug)]
struct CompiledRule {
    id: String,
    detector: Detector,
    /// [`Detector::built_in_index`] of the detector, looked up once.
    built_in: Option<usize>,
    action: Action,
    /// The compiled pattern of a [`Detector::Pattern`] rule.
    regex: Option<Regex>,
    /// Its index in [`Classifier::pattern_set`], if there is a set.
    set_slot: Option<usize>,
}

/// The rules that apply to one (server, direction), in rule order.
#[derive(Debug, Default)]
struct Plan {
    /// Indices into [`Classifier::rules`].
    rules: Vec<usize>,
    /// Which built-in detectors those rules need, by [`Detector::built_in_index`].
    built_in: [bool; 7],
    /// Whether any of them is a pattern rule.
    patterns: bool,
    /// Strings shorter than this cannot match any of them.
    min_len: usize,
}

impl Plan {
    fn build(
        rules: &[ClassificationRule],
        include: impl Fn(&ClassificationRule) -> bool,
        direction: Direction,
    ) -> Plan {
        let mut plan = Plan { min_len: usize::MAX, ..Plan::default() };
        for (i, rule) in rules.iter().enumerate() {
            if !include(rule) || !covers(rule.scope, direction) {
                continue;
            }
            plan.rules.push(i);
            match built_in_index(rule.detector) {
                Some(d) => plan.built_in[d] = true,
                None => plan.patterns = true,
            }
            plan.min_len = plan.min_len.min(min_len(rule.detector));
        }
        plan
    }
}

/// The plans of one server, per direction.
#[derive(Debug)]
struct Plans {
    params: Plan,
    response: Plan,
}

impl Plans {
    fn build(rules: &[ClassificationRule], include: impl Fn(&ClassificationRule) -> bool) -> Plans {
        Plans {
            params: Plan::build(rules, &include, Direction::Params),
            response: Plan::build(rules, &include, Direction::Response),
        }
    }
}

/// A tenant's classification rules, compiled once per bundle and shared by every request.
#[derive(Debug)]
pub struct Classifier {
    rules: Vec<CompiledRule>,
    /// All pattern rules' regexes in one set (when there are at least two), so a string that matches
    /// none of them costs one pass instead of one per rule.
    pattern_set: Option<RegexSet>,
    /// Plans of the servers some rule names.
    by_server: HashMap<String, Plans>,
    /// The plan of every other server: the rules that name no server.
    default: Plans,
}

impl Classifier {
    /// Validates and compiles the rules ([`validate_rule`] on each; ids must also be unique).
    pub fn new(rules: &[ClassificationRule]) -> Result<Classifier, RuleError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut ids = HashSet::new();
        let mut patterns = Vec::new();
        for rule in rules {
            let regex = compile_rule(rule)?;
            if !ids.insert(rule.id.as_str()) {
                return Err(RuleError {
                    rule_id: rule.id.clone(),
                    field: "id",
                    message: "another rule has the same id".into(),
                });
            }
            let set_slot = regex.as_ref().map(|re| {
                patterns.push(re.as_str().to_owned());
                patterns.len() - 1
            });
            compiled.push(CompiledRule {
                id: rule.id.clone(),
                detector: rule.detector,
                built_in: built_in_index(rule.detector),
                action: rule.action,
                regex,
                set_slot,
            });
        }
        let pattern_set = if patterns.len() >= 2 {
            // A set too large to build only loses the shortcut: each rule's own regex still runs.
            RegexSetBuilder::new(&patterns)
                .size_limit(MAX_PATTERN_COMPILED_BYTES.saturating_mul(patterns.len()))
                .build()
                .ok()
        } else {
            None
        };
        if pattern_set.is_none() {
            for rule in &mut compiled {
                rule.set_slot = None;
            }
        }
        let servers: HashSet<&str> = rules.iter().flat_map(|r| r.servers.iter().map(String::as_str)).collect();
        let by_server = servers
            .into_iter()
            .map(|s| (s.to_owned(), Plans::build(rules, |r| r.servers.is_empty() || r.servers.iter().any(|x| x == s))))
            .collect();
        let default = Plans::build(rules, |r| r.servers.is_empty());
        Ok(Classifier { rules: compiled, pattern_set, by_server, default })
    }

    /// Whether no rule applies to this server in either direction, so the gateway can skip scanning.
    pub fn is_empty_for(&self, server: &str) -> bool {
        let plans = self.plans(server);
        plans.params.rules.is_empty() && plans.response.rules.is_empty()
    }

    /// Every rule that matches some string of `value`: one finding per (string, rule), in document
    /// order and then rule order. Does not change anything; the action is for the caller to take.
    pub fn scan(&self, server: &str, direction: Direction, value: &Value) -> Vec<Finding> {
        let plan = self.plan(server, direction);
        let mut findings = Vec::new();
        if plan.rules.is_empty() {
            return findings;
        }
        let mut scratch = Scratch::default();
        walk(value, |segs, s| {
            let mut path = None;
            self.classify(plan, s, &mut scratch, |rule, ranges| {
                let path = path.get_or_insert_with(|| pointer(segs)).clone();
                findings.push(finding(rule, path, ranges.len()));
            });
        });
        findings
    }

    /// Enforces the rules on `value`: if any [`Action::Block`] rule matches, returns
    /// [`Verdict::Block`] and leaves `value` untouched; otherwise replaces every [`Action::Redact`]
    /// match in place with `[REDACTED:<detector>]` (overlapping matches become one) and returns
    /// [`Verdict::Allow`] with all findings, [`Action::Log`] ones included.
    pub fn apply(&self, server: &str, direction: Direction, value: &mut Value) -> Verdict {
        let plan = self.plan(server, direction);
        let mut findings = Vec::new();
        if plan.rules.is_empty() {
            return Verdict::Allow { findings };
        }
        let mut scratch = Scratch::default();
        // (pointer of a string, its redactions): applied only once we know nothing blocks.
        let mut edits: Vec<(String, Vec<Edit>)> = Vec::new();
        walk(value, |segs, s| {
            let mut path: Option<String> = None;
            let mut here = Vec::new();
            self.classify(plan, s, &mut scratch, |rule, ranges| {
                let path = path.get_or_insert_with(|| pointer(segs)).clone();
                findings.push(finding(rule, path, ranges.len()));
                if rule.action == Action::Redact {
                    here.extend(ranges.iter().map(|r| (r.clone(), rule.detector.as_str())));
                }
            });
            if let Some(path) = path
                && !here.is_empty()
            {
                edits.push((path, here));
            }
        });
        if let Some(first) = findings.iter().find(|f| f.action == Action::Block) {
            return Verdict::Block { finding: first.clone(), findings };
        }
        for (path, here) in edits {
            if let Some(Value::String(s)) = value.pointer_mut(&path) {
                *s = redact(s, here);
            }
        }
        Verdict::Allow { findings }
    }

    fn plans(&self, server: &str) -> &Plans {
        self.by_server.get(server).unwrap_or(&self.default)
    }

    fn plan(&self, server: &str, direction: Direction) -> &Plan {
        let plans = self.plans(server);
        match direction {
            Direction::Params => &plans.params,
            Direction::Response => &plans.response,
        }
    }

    /// Runs the plan's detectors on one string and reports each rule that matched, in rule order,
    /// with its match ranges (sorted by start).
    fn classify(
        &self,
        plan: &Plan,
        s: &str,
        scratch: &mut Scratch,
        mut hit: impl FnMut(&CompiledRule, &[Range<usize>]),
    ) {
        if s.len() < plan.min_len {
            return;
        }
        for (d, needed) in plan.built_in.iter().enumerate() {
            if *needed {
                let out = &mut scratch.built_in[d];
                out.clear();
                find_built_in(Detector::BUILT_IN[d], s, out);
            }
        }
        let set_matches = match &self.pattern_set {
            Some(set) if plan.patterns => Some(set.matches(s)),
            _ => None,
        };
        for &i in &plan.rules {
            let rule = &self.rules[i];
            let ranges: &[Range<usize>] = match (rule.built_in, &rule.regex) {
                (Some(d), _) => &scratch.built_in[d],
                (None, Some(re)) => {
                    if let (Some(m), Some(slot)) = (&set_matches, rule.set_slot)
                        && !m.matched(slot)
                    {
                        continue;
                    }
                    scratch.pattern.clear();
                    scratch.pattern.extend(re.find_iter(s).filter(|m| !m.is_empty()).map(|m| m.range()));
                    &scratch.pattern
                }
                (None, None) => continue,
            };
            if !ranges.is_empty() {
                hit(rule, ranges);
            }
        }
    }
}

fn finding(rule: &CompiledRule, path: String, count: usize) -> Finding {
    Finding { rule_id: rule.id.clone(), detector: rule.detector, action: rule.action, path, count }
}

/// Buffers reused across the strings of one scan.
#[derive(Default)]
struct Scratch {
    built_in: [Vec<Range<usize>>; 7],
    pattern: Vec<Range<usize>>,
}

/// One step of a JSON pointer.
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// A container being walked.
enum Frame<'a> {
    Object(serde_json::map::Iter<'a>),
    Array(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
}

impl<'a> Frame<'a> {
    fn of(value: &'a Value) -> Option<Frame<'a>> {
        match value {
            Value::Object(map) => Some(Frame::Object(map.iter())),
            Value::Array(items) => Some(Frame::Array(items.iter().enumerate())),
            _ => None,
        }
    }
}

/// Calls `visit` with the path and text of every string in `root`, in document order. Iterative:
/// the explicit stack lives on the heap, so no nesting depth is too deep.
fn walk<'a>(root: &'a Value, mut visit: impl FnMut(&[Seg<'a>], &'a str)) {
    let mut segs: Vec<Seg<'a>> = Vec::new();
    let mut stack: Vec<Frame<'a>> = Vec::new();
    match root {
        Value::String(s) => return visit(&segs, s),
        other => stack.extend(Frame::of(other)),
    }
    while let Some(top) = stack.last_mut() {
        let next = match top {
            Frame::Object(it) => it.next().map(|(k, v)| (Seg::Key(k), v)),
            Frame::Array(it) => it.next().map(|(i, v)| (Seg::Index(i), v)),
        };
        match next {
            // The container is done; drop the step that led into it (none for the root).
            None => {
                stack.pop();
                segs.pop();
            }
            Some((seg, Value::String(s))) => {
                segs.push(seg);
                visit(&segs, s);
                segs.pop();
            }
            Some((seg, child)) => {
                if let Some(frame) = Frame::of(child) {
                    segs.push(seg);
                    stack.push(frame);
                }
            }
        }
    }
}

/// Renders a JSON pointer (RFC 6901: `~` as `~0`, `/` as `~1`).
fn pointer(segs: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in segs {
        out.push('/');
        match seg {
            Seg::Key(k) => {
                for c in k.chars() {
                    match c {
                        '~' => out.push_str("~0"),
                        '/' => out.push_str("~1"),
                        c => out.push(c),
                    }
                }
            }
            Seg::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// A range of a string to replace, and the label of its replacement.
type Edit = (Range<usize>, &'static str);

/// Replaces each range with `[REDACTED:<label>]`; overlapping ranges become one replacement, labelled
/// by the one that starts first (the longest of those that start together).
fn redact(s: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by(|a, b| a.0.start.cmp(&b.0.start).then(b.0.end.cmp(&a.0.end)));
    let mut out = String::with_capacity(s.len());
    let mut done = 0;
    let mut i = 0;
    while i < edits.len() {
        let (Range { start, mut end }, label) = edits[i].clone();
        i += 1;
        while i < edits.len() && edits[i].0.start < end {
            end = end.max(edits[i].0.end);
            i += 1;
        }
        out.push_str(&s[done..start]);
        out.push_str("[REDACTED:");
        out.push_str(label);
        out.push(']');
        done = end;
    }
    out.push_str(&s[done..]);
    out
}

fn find_built_in(detector: Detector, s: &str, out: &mut Vec<Range<usize>>) {
    match detector {
        Detector::CardNumber => find_card_numbers(s, out),
        Detector::UsSsn => find_us_ssns(s, out),
        Detector::Email => find_emails(s, out),
        Detector::Phone => find_phones(s, out),
        Detector::Iban => find_ibans(s, out),
        Detector::ApiKey => find_api_keys(s, out),
        Detector::PrivateKey => find_private_keys(s, out),
        Detector::Pattern => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Shared byte-level helpers. The built-in detectors match ASCII only, so every range they return
// starts and ends next to an ASCII byte and is a valid `str` boundary.

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_digit_at(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(u8::is_ascii_digit)
}

fn all_digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

/// Whether the text just before `start` carries a number on: a word character, or one of `joins`
/// right after a digit.
fn continues_before(b: &[u8], start: usize, joins: &[u8]) -> bool {
    start > 0 && {
        let p = b[start - 1];
        is_word(p) || (joins.contains(&p) && start >= 2 && b[start - 2].is_ascii_digit())
    }
}

/// Whether the text just after `end` carries a number on: a word character, or one of `joins` right
/// before a digit.
fn continues_after(b: &[u8], end: usize, joins: &[u8]) -> bool {
    b.get(end).is_some_and(|&n| is_word(n) || (joins.contains(&n) && is_digit_at(b, end + 1)))
}

/// `b[start..end]` is a number of its own: no word character touches it, and it does not continue
/// as a number through a `-` or `.` (as in `1-555-…`, a version `2.345.678.9012`, or a longer id).
fn standalone(b: &[u8], start: usize, end: usize) -> bool {
    !continues_before(b, start, b"-.") && !continues_after(b, end, b"-.")
}

// ---------------------------------------------------------------------------------------------
// Payment card numbers.

/// [`Detector::CardNumber`]: 13 to 19 digits that pass the Luhn check, written either
///
/// * as one run of digits (`4111111111111111`), or
/// * in groups joined by a single space or a single dash, the same one throughout: a first group of
///   exactly 4 digits, further groups of 4 to 6 digits, and a last group of 1 to 6 (`4111 1111 1111
///   1111`, Amex `3782-822463-10005`);
///
/// and that
///
/// * is not part of a longer digit run, nor touches a letter or `_` (so not inside a hex hash or an
///   id like `ORD4111…`), nor is part of a decimal number (`0.4111…`);
/// * starts with 2 to 6, the issuer ranges of Mastercard (2, 5), Amex, Diners and JCB (3), Visa (4),
///   Discover, UnionPay and Maestro (6): this rules out epoch-millisecond timestamps (`17…`), the
///   biggest source of Luhn-valid noise;
/// * is not one digit repeated (placeholders like `6666666666666` pass Luhn).
///
/// A grouped number followed by more groups (`4111 1111 1111 1111 123`, a card and its CVV) matches
/// its longest valid prefix of groups.
///
/// Misses: cards starting with 1, 7, 8 or 9 (UATP, some RuPay), numbers split by other characters
/// (`4111.1111…`, `4111  1111…`), mixed separators, other groupings. About one random 13–19-digit
/// number in ten passes Luhn, so a standalone numeric id of that length starting with 2–6 is a false
/// positive one time in ten.
fn find_card_numbers(s: &str, out: &mut Vec<Range<usize>>) {
    let b = s.as_bytes();
    if b.iter().filter(|c| c.is_ascii_digit()).count() < 13 {
        return;
    }
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            // Skip digit-free stretches 16 bytes at a time (the fold vectorises, `any` would not).
            while b.get(i..i + 16).is_some_and(|c| !c.iter().fold(false, |d, c| d | c.is_ascii_digit())) {
                i += 16;
            }
            i += usize::from(i < b.len() && !b[i].is_ascii_digit());
            continue;
        }
        // Every maximal digit run may start a card, also one that follows a separator.
        let run_end = digits_end(b, i);
        match card_at(b, i, run_end) {
            Some(end) => {
                out.push(i..end);
                i = end;
            }
            None => i = run_end,
        }
    }
}

/// The end of the run of digits starting at `i`.
fn digits_end(b: &[u8], mut i: usize) -> usize {
    while is_digit_at(b, i) {
        i += 1;
    }
    i
}

/// The end of the longest card number whose first digit run is `b[start..first_end]`.
fn card_at(b: &[u8], start: usize, first_end: usize) -> Option<usize> {
    // Separators may join groups, so only a word character or a decimal point ends the number here.
    if continues_before(b, start, b".") || !(b'2'..=b'6').contains(&b[start]) {
        return None;
    }
    let first = first_end - start;
    if first != 4 {
        let ok =
            (13..=19).contains(&first) && !continues_after(b, first_end, b".") && card_checks(b, &[(start, first_end)]);
        return ok.then_some(first_end);
    }
    let sep = match b.get(first_end) {
        Some(&c @ (b' ' | b'-')) => c,
        _ => return None,
    };
    // At most 5 groups: a first of 4, middle ones of at least 4, 19 digits in all.
    let mut groups = [(start, first_end); 5];
    let mut n = 1;
    let mut digits = first;
    let mut best = None;
    let mut pos = first_end;
    while n < groups.len() && b.get(pos) == Some(&sep) && is_digit_at(b, pos + 1) {
        let (gs, ge) = (pos + 1, digits_end(b, pos + 1));
        let len = ge - gs;
        digits += len;
        if len > 6 || digits > 19 {
            break;
        }
        groups[n] = (gs, ge);
        n += 1;
        if digits >= 13 && !continues_after(b, ge, b".") && card_checks(b, &groups[..n]) {
            best = Some(ge);
        }
        if len < 4 {
            // Only the last group may be shorter than 4.
            break;
        }
        pos = ge;
    }
    best
}

/// Luhn over the digits of `groups`, and not one digit repeated.
fn card_checks(b: &[u8], groups: &[(usize, usize)]) -> bool {
    let mut digits = groups.iter().flat_map(|&(s, e)| &b[s..e]);
    let first = b[groups[0].0];
    if digits.all(|&c| c == first) {
        return false;
    }
    luhn(groups.iter().rev().flat_map(|&(s, e)| b[s..e].iter().rev().copied()))
}

/// The Luhn checksum, over ASCII digits given from the rightmost.
fn luhn(digits_from_right: impl Iterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits_from_right.enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

// ---------------------------------------------------------------------------------------------
// US social security numbers.

/// [`Detector::UsSsn`]: `AAA-GG-SSSS` with dashes, standing alone (see below), where the area `AAA`
/// is not 000, 666 or 900–999, the group `GG` is not 00 and the serial `SSSS` is not 0000 (the
/// SSA's never-issued values).
///
/// Only the dashed form: an undashed 9-digit number is far more often an id, a zip+4, an amount or a
/// phone fragment than an SSN, and there is no checksum to tell them apart. Spaced (`123 45 6789`) or
/// undashed SSNs are therefore missed. "Standing alone" means no letter, digit or `_` touches it and
/// it does not continue through another `-` or `.` into more digits (`12-123-45-6789` is not one).
fn find_us_ssns(s: &str, out: &mut Vec<Range<usize>>) {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(off) = s[from..].find('-') {
        let dash = from + off;
        from = dash + 1;
        if dash < 3 || dash + 8 > b.len() {
            continue;
        }
        let (start, end) = (dash - 3, dash + 8);
        let (area, group, serial) = (&b[start..dash], &b[dash + 1..dash + 3], &b[dash + 4..end]);
        if !(all_digits(area) && all_digits(group) && b[dash + 3] == b'-' && all_digits(serial)) {
            continue;
        }
        if !standalone(b, start, end) || area == b"000" || area == b"666" || area[0] == b'9' {
            continue;
        }
        if group == b"00" || serial == b"0000" {
            continue;
        }
        out.push(start..end);
        from = end;
    }
}

// ---------------------------------------------------------------------------------------------
// E-mail addresses.

/// Local part: dot-separated atoms of letters, digits and `_ % + -`; domain: at least two labels of
/// letters, digits and inner hyphens (at most 63 long), the last all letters.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}",
    )
    .expect("the e-mail regex compiles")
});

/// File extensions that look like a top-level domain in `icon@2x.png`, and are none.
const NOT_TLDS: [&str; 12] = ["png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "avif", "heic"];

/// [`Detector::Email`]: a pragmatic subset of RFC 5322 `addr-spec`: a dot-atom local part of letters,
/// digits and `_ % + -` (no leading, trailing or doubled dot), `@`, then a domain of two or more
/// DNS labels (letters, digits, inner hyphens, at most 63 each) whose last label (the TLD) is 2–63
/// letters, not followed by a letter, digit, `-` or `_`.
///
/// Misses: quoted local parts (`"john doe"@example.com`), the rarer atext characters
/// (`! # $ & ' * / = ? ^ { | } ~ \``; `o'brien@example.com` matches only from `brien`), IP-literal
/// domains (`user@[192.0.2.1]`), internationalised (non-ASCII) addresses, and dotless domains
/// (`root@localhost`). Rejects image names like `icon@2x.png` and package specs like
/// `lodash@4.17.21` (numeric TLD). Reports SSH remotes such as `git@github.com` (same shape).
fn find_emails(s: &str, out: &mut Vec<Range<usize>>) {
    if !s.contains('@') {
        return;
    }
    let b = s.as_bytes();
    for m in EMAIL.find_iter(s) {
        if b.get(m.end()).is_some_and(|&c| is_word(c) || c == b'-') {
            continue;
        }
        let tld = m.as_str().rsplit('.').next().unwrap_or_default();
        if NOT_TLDS.iter().any(|x| x.eq_ignore_ascii_case(tld)) {
            continue;
        }
        out.push(m.range());
    }
}

// ---------------------------------------------------------------------------------------------
// Phone numbers.

/// [`Detector::Phone`]: either
///
/// * international (E.164): `+`, a digit 1–9, then digits with at most two of space, `-`, `(`, `)`
///   between any two of them, 8 to 15 digits in all (`+44 20 7946 0958`, `+1 (555) 123-4567`,
///   `+44 (0)20 7946 0958`); the `+` must not follow a letter, digit, `_`, `)` or `+` (so not `1e+10`,
///   `UTC+01:00`, semver build metadata `1.0.0+2013…`, arithmetic `2+12345678`), and the last digit
///   must not touch a word character; or
/// * North American: `(AAA) EEE-SSSS`, `(AAA)EEE-SSSS`, `AAA-EEE-SSSS` or `AAA.EEE.SSSS`, optionally
///   after `1`, `1-`, `1 ` or `1.`, where the area code starts with 2–9 (as real ones do; the
///   exchange is not checked, so that the customary fictional `555-123-4567` matches), standing
///   alone (no word character touching it, not continued by `-`/`.` and more digits).
///
/// Misses: national formats without `+` outside North America (`020 7946 0958`, `0044…`), dotted
/// international numbers (`+33.1.23.45.67.89`), unseparated or space-only North American numbers
/// (`5551234567`, `555 123 4567`: too easily an id), vanity numbers (`1-800-FLOWERS`), and an
/// international number immediately followed by another group of digits (it counts them too and
/// may exceed 15).
fn find_phones(s: &str, out: &mut Vec<Range<usize>>) {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(off) = s[from..].find('+') {
        let plus = from + off;
        from = plus + 1;
        if let Some(end) = e164_at(b, plus) {
            out.push(plus..end);
            from = end;
        }
    }
    let international = out.len();
    let mut p = 0;
    while p < b.len() {
        if matches!(b[p], b'-' | b'.')
            && let Some(r) = north_american_at(b, p)
            && !out[..international].iter().any(|x| x.start < r.end && r.start < x.end)
        {
            p = r.end;
            out.push(r);
        } else {
            p += 1;
        }
    }
    out.sort_by_key(|r| r.start);
}

/// The North American number whose `EEE-SSSS` (or `EEE.SSSS`) separator is at `sep`, if any.
fn north_american_at(b: &[u8], sep: usize) -> Option<Range<usize>> {
    let end = sep + 5;
    if sep < 3 || end > b.len() || !all_digits(&b[sep - 3..sep]) || !all_digits(&b[sep + 1..end]) {
        return None;
    }
    let exchange = sep - 3;
    let area_at = |i: usize| all_digits(&b[i..i + 3]) && b[i] >= b'2';
    let c = b[sep];
    let start = if exchange >= 4 && b[exchange - 1] == c && area_at(exchange - 4) {
        exchange - 4 // AAA-EEE-SSSS, AAA.EEE.SSSS
    } else if c == b'-' && exchange >= 5 && b[exchange - 1] == b')' && b[exchange - 5] == b'(' && area_at(exchange - 4)
    {
        exchange - 5 // (AAA)EEE-SSSS
    } else if c == b'-'
        && exchange >= 6
        && b[exchange - 1] == b' '
        && b[exchange - 2] == b')'
        && b[exchange - 6] == b'('
        && area_at(exchange - 5)
    {
        exchange - 6 // (AAA) EEE-SSSS
    } else {
        return None;
    };
    // The country code 1, directly or after one of ` .-`; without it if it is part of something else.
    let prefixed = if start >= 2 && matches!(b[start - 1], b' ' | b'.' | b'-') && b[start - 2] == b'1' {
        start - 2
    } else if start >= 1 && b[start - 1] == b'1' {
        start - 1
    } else {
        start
    };
    [prefixed, start].into_iter().find(|&s| standalone(b, s, end)).map(|s| s..end)
}

/// The end of an E.164 number whose `+` is at `plus`.
fn e164_at(b: &[u8], plus: usize) -> Option<usize> {
    if plus > 0 && (is_word(b[plus - 1]) || matches!(b[plus - 1], b')' | b'+')) {
        return None;
    }
    let mut i = plus + 1;
    if !matches!(b.get(i), Some(b'1'..=b'9')) {
        return None;
    }
    let mut digits = 0;
    let end = loop {
        while is_digit_at(b, i) {
            digits += 1;
            i += 1;
        }
        let end = i;
        while i < b.len() && i - end < 2 && matches!(b[i], b' ' | b'-' | b'(' | b')') {
            i += 1;
        }
        if i == end || !is_digit_at(b, i) {
            break end;
        }
    };
    let touches_word = b.get(end).is_some_and(|&c| is_word(c));
    ((8..=15).contains(&digits) && !touches_word).then_some(end)
}

// ---------------------------------------------------------------------------------------------
// IBANs.

/// IBAN length by country (ISO 13616 registry), for the countries that use IBANs most.
fn iban_length(country: &[u8]) -> Option<usize> {
    Some(match country {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" => 22,
        b"AE" | b"GI" | b"IL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" => 31,
        _ => return None,
    })
}

/// [`Detector::Iban`]: a country code from the length table (ISO 13616: the EU/EEA, the UK,
/// Switzerland and 40-odd other common countries), two check digits (not 00, 01 or 99), and a BBAN
/// of uppercase letters and digits making up exactly that country's length; written compactly
/// (`DE89370400440532013000`) or in groups of four joined by single spaces (`DE89 3704 0044 0532
/// 0130 00`); passing the mod-97 check (the number, rearranged, is 1 mod 97); not touched by a
/// letter, digit or `_`.
///
/// Misses: lowercase IBANs, other groupings (dashes, groups other than four), countries outside the
/// table (e.g. `LC`, `RU`, `SC`). The mod-97 check lets about 1 in 97 random strings of the right
/// shape through.
fn find_ibans(s: &str, out: &mut Vec<Range<usize>>) {
    let b = s.as_bytes();
    if b.len() < 15 {
        return;
    }
    let mut i = 0;
    while i + 4 <= b.len() {
        // b[i + 3] is a digit or a capital in every candidate starting at i..=i + 3: skip them all
        // when it is neither, as in most prose.
        if !(b[i + 3].is_ascii_digit() || b[i + 3].is_ascii_uppercase()) {
            i += 4;
            continue;
        }
        if b[i].is_ascii_uppercase()
            && b[i + 1].is_ascii_uppercase()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit()
            && (i == 0 || !is_word(b[i - 1]))
            && let Some(len) = iban_length(&b[i..i + 2])
            && let Some(end) = iban_at(b, i, len)
        {
            out.push(i..end);
            i = end;
        } else {
            i += 1;
        }
    }
}

/// The end of an IBAN of `len` characters starting at `start`, compact or in groups of four.
fn iban_at(b: &[u8], start: usize, len: usize) -> Option<usize> {
    if matches!(&b[start + 2..start + 4], b"00" | b"01" | b"99") {
        return None;
    }
    let is_bban = |c: &u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    let ends_ok = |end: usize| end == b.len() || !is_word(b[end]);
    let mut chars = Vec::with_capacity(len);
    // Compact.
    if start + len <= b.len() && b[start..start + len].iter().all(is_bban) && ends_ok(start + len) {
        chars.extend_from_slice(&b[start..start + len]);
        return mod97(&chars).then_some(start + len);
    }
    // Groups of four.
    chars.extend_from_slice(&b[start..start + 4]);
    let mut i = start + 4;
    while chars.len() < len {
        if b.get(i) != Some(&b' ') {
            return None;
        }
        let take = (len - chars.len()).min(4);
        let group = b.get(i + 1..i + 1 + take)?;
        if !group.iter().all(is_bban) {
            return None;
        }
        chars.extend_from_slice(group);
        i += 1 + take;
    }
    (ends_ok(i) && mod97(&chars)).then_some(i)
}

/// ISO 13616 check: move the first four characters to the end, letters to 10–35, then mod 97 = 1.
fn mod97(iban: &[u8]) -> bool {
    let (head, rest) = iban.split_at(4);
    let mut rem = 0u32;
    for &c in rest.iter().chain(head) {
        rem = if c.is_ascii_digit() {
            (rem * 10 + u32::from(c - b'0')) % 97
        } else {
            (rem * 100 + u32::from(c - b'A') + 10) % 97
        };
    }
    rem == 1
}

// ---------------------------------------------------------------------------------------------
// API keys and tokens.

/// The known key formats, as one regex so its literal prefixes make one fast prefilter.
static API_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?:AKIA|ASIA)[A-Z0-9]{16}",
        r"|gh[pousr]_[A-Za-z0-9]{36,}",
        r"|github_pat_[A-Za-z0-9_]{22,}",
        r"|xox[abprs]-[A-Za-z0-9-]{20,}",
        r"|[rs]k_live_[A-Za-z0-9]{20,}",
        r"|AIza[A-Za-z0-9_-]{35}",
        r"|sk-[A-Za-z0-9_-]{32,}",
        r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    ))
    .expect("the API key regex compiles")
});

/// [`Detector::ApiKey`]: one of these, not preceded by a letter or digit:
///
/// * AWS access key id: `AKIA` or `ASIA` and exactly 16 uppercase letters or digits (not followed
///   by another letter or digit);
/// * GitHub: `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` and 36 or more letters or digits;
///   `github_pat_` and 22 or more letters, digits or `_`;
/// * Slack: `xoxa-`, `xoxb-`, `xoxp-`, `xoxr-`, `xoxs-` and 20 or more letters, digits or `-`;
/// * Stripe live secret and restricted keys: `sk_live_`, `rk_live_` and 20 or more letters or digits;
/// * Google API key: `AIza` and exactly 35 letters, digits, `_` or `-` (not followed by another);
/// * OpenAI / Anthropic style: `sk-` and 32 or more letters, digits, `_` or `-` that include an
///   uppercase letter, a lowercase letter and a digit (so not a long kebab-case name like
///   `sk-some-long-css-class-name…`);
/// * JWT: `eyJ` + 8 or more base64url, `.`, `eyJ` + 8 or more base64url, `.`, and a signature of
///   base64url (possibly empty, for unsigned tokens).
///
/// Misses: test-mode Stripe keys (`sk_test_`), AWS secret access keys (40 characters with no
/// prefix, indistinguishable from other base64), and keys of other vendors and generic high-entropy
/// secrets; add tenant patterns for those.
fn find_api_keys(s: &str, out: &mut Vec<Range<usize>>) {
    let b = s.as_bytes();
    for m in API_KEY.find_iter(s) {
        if m.start() > 0 && b[m.start() - 1].is_ascii_alphanumeric() {
            continue;
        }
        let key = m.as_str();
        let next = b.get(m.end()).copied();
        let ok = if key.starts_with("AKIA") || key.starts_with("ASIA") {
            !next.is_some_and(|c| c.is_ascii_alphanumeric())
        } else if key.starts_with("AIza") {
            !next.is_some_and(|c| is_word(c) || c == b'-')
        } else if let Some(rest) = key.strip_prefix("sk-") {
            let has = |f: fn(&u8) -> bool| rest.as_bytes().iter().any(f);
            has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase) && has(u8::is_ascii_digit)
        } else {
            true
        };
        if ok {
            out.push(m.range());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Private keys.

/// [`Detector::PrivateKey`]: a PEM or OpenSSH private key block: `-----BEGIN <label>-----` where the
/// label is uppercase letters, digits and spaces ending in `PRIVATE KEY` or `PRIVATE KEY BLOCK`
/// (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`, `DSA PRIVATE KEY`, `OPENSSH PRIVATE KEY`,
/// `ENCRYPTED PRIVATE KEY`, `PGP PRIVATE KEY BLOCK`), followed, after white space or escaped `\n`,
/// by key material (16 or more base64 characters) or a `Proc-Type:` header. The match runs through
/// the matching `-----END <label>-----`, or to the end of the string if that is missing (a
/// truncated key is still a leak).
///
/// Public keys and certificates do not match, nor does text that only mentions the marker
/// (`begins with "-----BEGIN RSA PRIVATE KEY-----"`: no key material follows). Misses: keys in
/// other encodings (PuTTY `.ppk`, JWK, raw base64 DER).
fn find_private_keys(s: &str, out: &mut Vec<Range<usize>>) {
    const BEGIN: &str = "-----BEGIN ";
    let mut from = 0;
    while let Some(off) = s[from..].find(BEGIN) {
        let start = from + off;
        let label_start = start + BEGIN.len();
        from = label_start;
        let label_len = s.as_bytes()[label_start..]
            .iter()
            .take(41)
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || **c == b' ')
            .count();
        let label = &s[label_start..label_start + label_len];
        let header_end = label_start + label_len + 5;
        if !s[label_start + label_len..].starts_with("-----")
            || !(label.ends_with("PRIVATE KEY") || label.ends_with("PRIVATE KEY BLOCK"))
            || !has_key_material(&s.as_bytes()[header_end..])
        {
            continue;
        }
        let end_marker = format!("-----END {label}-----");
        let end = s[header_end..].find(&end_marker).map_or(s.len(), |o| header_end + o + end_marker.len());
        out.push(start..end);
        from = end;
    }
}

/// What follows a private key header looks like a key: white space (or `\n`, `\r` escapes left in
/// doubly-encoded JSON), then 16 base64 characters or a `Proc-Type:` header.
fn has_key_material(rest: &[u8]) -> bool {
    let mut i = 0;
    loop {
        match rest.get(i) {
            Some(b' ' | b'\t' | b'\r' | b'\n') => i += 1,
            Some(b'\\') if matches!(rest.get(i + 1), Some(b'n' | b'r')) => i += 2,
            _ => break,
        }
    }
    let rest = &rest[i..];
    rest.starts_with(b"Proc-Type:")
        || rest.iter().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')).count() >= 16
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The substrings a built-in detector matches in `s`.
    fn found(detector: Detector, s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find_built_in(detector, s, &mut out);
        out.into_iter().map(|r| &s[r]).collect()
    }

    fn rule(id: &str, detector: Detector, action: Action) -> ClassificationRule {
        ClassificationRule {
            id: id.into(),
            name: format!("rule {id}"),
            detector,
            pattern: None,
            action,
            scope: Scope::Both,
            servers: vec![],
        }
    }

    fn pattern_rule(id: &str, pattern: &str, action: Action) -> ClassificationRule {
        ClassificationRule { pattern: Some(pattern.into()), ..rule(id, Detector::Pattern, action) }
    }

    fn hit(rule_id: &str, detector: Detector, action: Action, path: &str, count: usize) -> Finding {
        Finding { rule_id: rule_id.into(), detector, action, path: path.into(), count }
    }

    fn luhn_str(s: &str) -> bool {
        luhn(s.bytes().rev())
    }

    // --- card numbers ---------------------------------------------------------------------

    #[test]
    fn card_numbers_in_the_usual_writings_are_found() {
        assert_eq!(found(Detector::CardNumber, "card 4111 1111 1111 1111 exp 12/27"), ["4111 1111 1111 1111"]);
        assert_eq!(found(Detector::CardNumber, "mc:5555-5555-5555-4444."), ["5555-5555-5555-4444"]);
        assert_eq!(
            found(Detector::CardNumber, "amex 378282246310005, amex 3782-822463-10005"),
            ["378282246310005", "3782-822463-10005"]
        );
        assert_eq!(found(Detector::CardNumber, "visa13=4222222222222"), ["4222222222222"]);
    }

    #[test]
    fn a_card_followed_by_its_cvv_matches_only_the_card() {
        assert_eq!(found(Detector::CardNumber, "4111 1111 1111 1111 123"), ["4111 1111 1111 1111"]);
        assert_eq!(found(Detector::CardNumber, "4111111111111111 123"), ["4111111111111111"]);
    }

    #[test]
    fn card_lookalikes_are_not_cards() {
        // 16 digits that fail Luhn.
        assert!(!luhn_str("4111111111111112"));
        assert_eq!(found(Detector::CardNumber, "ref 4111111111111112"), Vec::<&str>::new());
        // A valid card inside a 20-digit run is part of a longer number.
        assert_eq!(found(Detector::CardNumber, "txn 41111111111111110000"), Vec::<&str>::new());
        // Inside a hex hash or an id.
        assert_eq!(found(Detector::CardNumber, "sha a4111111111111111f, ORD4111111111111111"), Vec::<&str>::new());
        // The fractional part of a decimal.
        assert_eq!(found(Detector::CardNumber, "score 0.4111111111111111"), Vec::<&str>::new());
        // An epoch-millisecond timestamp that happens to pass Luhn.
        assert!(luhn_str("1718035200001"));
        assert_eq!(found(Detector::CardNumber, "\"ts\": 1718035200001"), Vec::<&str>::new());
        // Placeholders: zero-filled, and one digit repeated (which passes Luhn).
        assert!(luhn_str("0000000000000000") && luhn_str("6666666666666"));
        assert_eq!(found(Detector::CardNumber, "0000 0000 0000 0000 / 6666666666666"), Vec::<&str>::new());
        // Dates, versions, phone numbers with mixed separators.
        assert_eq!(
            found(Detector::CardNumber, "on 2024-01-15 v4.1.11.1111 call 555-123-4567 555-987-6543"),
            Vec::<&str>::new()
        );
    }

    // --- SSNs ---------------------------------------------------------------------------

    #[test]
    fn dashed_ssns_are_found() {
        assert_eq!(found(Detector::UsSsn, "SSN: 123-45-6789."), ["123-45-6789"]);
        assert_eq!(found(Detector::UsSsn, "078-05-1120 and (219-09-9999)"), ["078-05-1120", "219-09-9999"]);
    }

    #[test]
    fn ssn_lookalikes_are_not_ssns() {
        for s in [
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
            "1234-56-7890",
            "123-45-67890",
            "12-123-45-6789",
            "123-45-6789-01",
            "123456789",
            "123 45 6789",
            "2024-01-15",
            "555-123-4567",
            "id=A123-45-6789",
        ] {
            assert_eq!(found(Detector::UsSsn, s), Vec::<&str>::new(), "{s}");
        }
    }

    // --- e-mail --------------------------------------------------------------------------

    #[test]
    fn email_addresses_are_found() {
        assert_eq!(found(Detector::Email, "mail alice@example.com today"), ["alice@example.com"]);
        assert_eq!(
            found(Detector::Email, "<bob.smith+tag@mail.example.co.uk>, carol_o%x@sub-domain.example.org."),
            ["bob.smith+tag@mail.example.co.uk", "carol_o%x@sub-domain.example.org"]
        );
        assert_eq!(found(Detector::Email, "mailto:dave@EXAMPLE.COM"), ["dave@EXAMPLE.COM"]);
    }

    #[test]
    fn email_lookalikes_are_not_addresses() {
        for s in [
            "icon@2x.png",
            "logo@3x.JPG",
            "npm i lodash@4.17.21",
            "import '@types/node'",
            "ssh user@localhost",
            "name@domain.c",
            "@app.route('/x')",
            "bob@-example.com",
            "a@b.com1",
        ] {
            assert_eq!(found(Detector::Email, s), Vec::<&str>::new(), "{s}");
        }
    }

    // --- phone numbers ---------------------------------------------------------------------

    #[test]
    fn international_phone_numbers_are_found() {
        assert_eq!(found(Detector::Phone, "call +1 (555) 123-4567 now"), ["+1 (555) 123-4567"]);
        assert_eq!(found(Detector::Phone, "London: +44 20 7946 0958."), ["+44 20 7946 0958"]);
        assert_eq!(found(Detector::Phone, "+44 (0)20 7946 0958"), ["+44 (0)20 7946 0958"]);
        assert_eq!(found(Detector::Phone, "tel:+4930123456"), ["+4930123456"]);
    }

    #[test]
    fn north_american_phone_numbers_are_found() {
        assert_eq!(found(Detector::Phone, "(555) 123-4567 or 555-123-4567"), ["(555) 123-4567", "555-123-4567"]);
        assert_eq!(
            found(Detector::Phone, "fax 555.123.4567, toll-free 1-800-555-0199"),
            ["555.123.4567", "1-800-555-0199"]
        );
    }

    #[test]
    fn a_one_that_belongs_to_something_else_is_not_taken_as_the_country_code() {
        assert_eq!(found(Detector::Phone, "room 21 555-123-4567"), ["555-123-4567"]);
        assert_eq!(found(Detector::Phone, "room 1 555-123-4567"), ["1 555-123-4567"]);
    }

    #[test]
    fn phone_lookalikes_are_not_phone_numbers() {
        for s in [
            "UTC+01:00",
            "2024-01-15T10:30:00+01:00",
            "1e+10",
            "version 1.0.0+20130313144700",
            "2+12345678",
            "+1234567",
            "+12345678901234567",
            "+0123456789",
            "order 100-200-3000",
            "build 2.345.678.9012",
            "ticket 555-123-45678",
            "123-45-6789",
            "5551234567",
        ] {
            assert_eq!(found(Detector::Phone, s), Vec::<&str>::new(), "{s}");
        }
    }

    // --- IBANs ---------------------------------------------------------------------------

    #[test]
    fn ibans_are_found_compact_and_grouped() {
        assert_eq!(found(Detector::Iban, "IBAN: DE89 3704 0044 0532 0130 00, thanks"), ["DE89 3704 0044 0532 0130 00"]);
        assert_eq!(
            found(Detector::Iban, "GB82WEST12345698765432 / NL91ABNA0417164300"),
            ["GB82WEST12345698765432", "NL91ABNA0417164300"]
        );
        assert_eq!(found(Detector::Iban, "FR14 2004 1010 0505 0001 3M02 606"), ["FR14 2004 1010 0505 0001 3M02 606"]);
        assert_eq!(found(Detector::Iban, "NO9386011117947"), ["NO9386011117947"]);
    }

    #[test]
    fn iban_lookalikes_are_not_ibans() {
        for s in [
            // Wrong check digits.
            "DE88 3704 0044 0532 0130 00",
            "GB83WEST12345698765432",
            // One character short, one too long.
            "GB82WEST1234569876543",
            "GB82WEST123456987654321",
            // Unknown country.
            "XX89370400440532013000",
            // Part of a longer token; lowercase.
            "ACCTDE89370400440532013000",
            "de89370400440532013000",
            // Groups of other sizes.
            "DE89 370400 440532 013000",
        ] {
            assert_eq!(found(Detector::Iban, s), Vec::<&str>::new(), "{s}");
        }
    }

    // --- API keys --------------------------------------------------------------------------

    const GITHUB: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[test]
    fn api_keys_of_each_vendor_are_found() {
        let google = "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe";
        assert_eq!(google.len(), 39);
        let openai = "sk-proj-Xk4mP2vN8qR5tL9wY3zB7cD1fG6hJ0aE";
        let slack = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx";
        let stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
        let fine_grained = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz";
        let text = format!(
            "aws_access_key_id=AKIAIOSFODNN7EXAMPLE\ntoken: {GITHUB}\n{fine_grained} {slack} '{stripe}' key={google}\nOPENAI_API_KEY={openai}\nAuthorization: Bearer {JWT}"
        );
        assert_eq!(
            found(Detector::ApiKey, &text),
            ["AKIAIOSFODNN7EXAMPLE", GITHUB, fine_grained, slack, stripe, google, openai, JWT]
        );
        assert_eq!(found(Detector::ApiKey, "ASIAY34FZKBOKMUTVV7A"), ["ASIAY34FZKBOKMUTVV7A"]);
    }

    #[test]
    fn api_key_lookalikes_are_not_keys() {
        for s in [
            "AKIAEXAMPLE",
            "AKIAIOSFODNN7EXAMPLEXYZ",
            "XAKIAIOSFODNN7EXAMPLE",
            "pip install sk-learn",
            "class=\"sk-some-very-long-kebab-case-component-name\"",
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            "ghp_short",
            "cursor: eyJvZmZzZXQiOjEwMCwibGltaXQiOjUwfQ",
            "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQeXX",
        ] {
            assert_eq!(found(Detector::ApiKey, s), Vec::<&str>::new(), "{s}");
        }
    }

    // --- private keys --------------------------------------------------------------------------

    const RSA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----";

    #[test]
    fn private_key_blocks_are_found_through_the_end_line() {
        let text = format!("key:\n{RSA_KEY}\nbye");
        assert_eq!(found(Detector::PrivateKey, &text), [RSA_KEY]);
        let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----";
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\\n-----END ENCRYPTED PRIVATE KEY-----";
        let ec = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0123\n\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----";
        let text = format!("{openssh}\n{encrypted}\n{ec}");
        assert_eq!(found(Detector::PrivateKey, &text), [openssh, encrypted, ec]);
    }

    #[test]
    fn a_truncated_private_key_is_matched_to_the_end_of_the_string() {
        let text = "here: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";
        assert_eq!(found(Detector::PrivateKey, text), [&text[6..]]);
    }

    #[test]
    fn public_keys_certificates_and_mentions_are_not_private_keys() {
        for s in [
            "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ\n-----END CERTIFICATE-----",
            "The file must begin with \"-----BEGIN RSA PRIVATE KEY-----\" and end with \"-----END RSA PRIVATE KEY-----\".",
            "-----BEGIN RSA PRIVATE KEY----- ... -----END RSA PRIVATE KEY-----",
        ] {
            assert_eq!(found(Detector::PrivateKey, s), Vec::<&str>::new(), "{s}");
        }
    }

    // --- the classifier ------------------------------------------------------------------------

    fn all_built_in(action: Action) -> Vec<ClassificationRule> {
        Detector::BUILT_IN.iter().map(|d| rule(d.as_str(), *d, action)).collect()
    }

    #[test]
    fn redact_replaces_each_match_and_reports_counts_without_the_text() {
        let c = Classifier::new(&all_built_in(Action::Redact)).unwrap();
        // Keys in sorted order: findings follow document order whether or not serde_json preserves it.
        let mut v = json!({
            "key": format!("Bearer {GITHUB}"),
            "note": "Pay with 4111 1111 1111 1111, mail alice@example.com or bob@example.org, SSN 123-45-6789.",
            "plain": "nothing to see here"
        });
        let verdict = c.apply("github", Direction::Params, &mut v);
        assert_eq!(
            v,
            json!({
                "note": "Pay with [REDACTED:card_number], mail [REDACTED:email] or [REDACTED:email], SSN [REDACTED:us_ssn].",
                "key": "Bearer [REDACTED:api_key]",
                "plain": "nothing to see here"
            })
        );
        assert_eq!(
            verdict,
            Verdict::Allow {
                findings: vec![
                    hit("api_key", Detector::ApiKey, Action::Redact, "/key", 1),
                    hit("card_number", Detector::CardNumber, Action::Redact, "/note", 1),
                    hit("us_ssn", Detector::UsSsn, Action::Redact, "/note", 1),
                    hit("email", Detector::Email, Action::Redact, "/note", 2),
                ]
            }
        );
        let audit = serde_json::to_string(verdict.findings()).unwrap();
        assert!(!audit.contains("4111") && !audit.contains("alice") && !audit.contains("ghp_"), "{audit}");
    }

    #[test]
    fn block_takes_precedence_over_redact_and_leaves_the_value_untouched() {
        let rules = [
            rule("redact-email", Detector::Email, Action::Redact),
            rule("block-keys", Detector::PrivateKey, Action::Block),
            rule("log-phone", Detector::Phone, Action::Log),
        ];
        let c = Classifier::new(&rules).unwrap();
        let original = json!({
            "content": [
                {"type": "text", "text": "contact alice@example.com, +44 20 7946 0958"},
                {"type": "text", "text": RSA_KEY}
            ]
        });
        let mut v = original.clone();
        let verdict = c.apply("files", Direction::Response, &mut v);
        assert_eq!(v, original);
        assert_eq!(
            verdict,
            Verdict::Block {
                finding: hit("block-keys", Detector::PrivateKey, Action::Block, "/content/1/text", 1),
                findings: vec![
                    hit("redact-email", Detector::Email, Action::Redact, "/content/0/text", 1),
                    hit("log-phone", Detector::Phone, Action::Log, "/content/0/text", 1),
                    hit("block-keys", Detector::PrivateKey, Action::Block, "/content/1/text", 1),
                ]
            }
        );
        assert!(verdict.is_block());
    }

    #[test]
    fn log_rules_report_but_change_nothing() {
        let c = Classifier::new(&[rule("log-iban", Detector::Iban, Action::Log)]).unwrap();
        let original = json!({"iban": "DE89370400440532013000"});
        let mut v = original.clone();
        let verdict = c.apply("bank", Direction::Params, &mut v);
        assert_eq!(v, original);
        assert_eq!(
            verdict,
            Verdict::Allow { findings: vec![hit("log-iban", Detector::Iban, Action::Log, "/iban", 1)] }
        );
    }

    #[test]
    fn overlapping_redactions_become_one() {
        // The tenant pattern covers the e-mail and the `;` after it: one replacement, the first label.
        let rules = [
            rule("email", Detector::Email, Action::Redact),
            pattern_rule("contact", r"contact: \S+", Action::Redact),
            rule("pk", Detector::PrivateKey, Action::Redact),
        ];
        let c = Classifier::new(&rules).unwrap();
        let mut v = json!(format!("contact: alice@example.com; key {RSA_KEY} end"));
        c.apply("x", Direction::Params, &mut v);
        assert_eq!(v, json!("[REDACTED:pattern] key [REDACTED:private_key] end"));
    }

    #[test]
    fn rules_apply_only_to_their_servers() {
        let rules = [
            ClassificationRule { servers: vec!["github".into()], ..rule("gh-keys", Detector::ApiKey, Action::Block) },
            rule("everywhere", Detector::Email, Action::Log),
        ];
        let c = Classifier::new(&rules).unwrap();
        let v = json!({"text": format!("{GITHUB} from alice@example.com")});
        assert_eq!(
            c.scan("github", Direction::Params, &v),
            [
                hit("gh-keys", Detector::ApiKey, Action::Block, "/text", 1),
                hit("everywhere", Detector::Email, Action::Log, "/text", 1),
            ]
        );
        assert_eq!(
            c.scan("jira", Direction::Params, &v),
            [hit("everywhere", Detector::Email, Action::Log, "/text", 1)]
        );
        assert!(!c.is_empty_for("jira"));

        let scoped = Classifier::new(&rules[..1]).unwrap();
        assert!(!scoped.is_empty_for("github"));
        assert!(scoped.is_empty_for("jira"));
        assert_eq!(scoped.scan("jira", Direction::Params, &v), Vec::<Finding>::new());
        assert!(Classifier::new(&[]).unwrap().is_empty_for("github"));
    }

    #[test]
    fn rules_apply_only_in_their_direction() {
        let rules = [
            ClassificationRule { scope: Scope::Params, ..rule("p", Detector::UsSsn, Action::Log) },
            ClassificationRule { scope: Scope::Responses, ..rule("r", Detector::UsSsn, Action::Log) },
            rule("b", Detector::UsSsn, Action::Log),
        ];
        let c = Classifier::new(&rules).unwrap();
        let v = json!("SSN 123-45-6789");
        let ids = |d| c.scan("s", d, &v).into_iter().map(|f| f.rule_id).collect::<Vec<_>>();
        assert_eq!(ids(Direction::Params), ["p", "b"]);
        assert_eq!(ids(Direction::Response), ["r", "b"]);

        let params_only = Classifier::new(&rules[..1]).unwrap();
        assert!(!params_only.is_empty_for("s"));
        assert_eq!(params_only.scan("s", Direction::Response, &v), Vec::<Finding>::new());
    }

    #[test]
    fn finding_paths_are_json_pointers_with_escaping() {
        let c = Classifier::new(&[rule("e", Detector::Email, Action::Redact)]).unwrap();
        let mut v = json!({
            "a/b": "x@example.com",
            "m~n": ["ok", {"deep": ["y@example.com"]}],
            "": "z@example.com",
            "n": 42,
            "mail@example.com": "keys are not scanned"
        });
        let paths: Vec<String> = c.scan("s", Direction::Params, &v).into_iter().map(|f| f.path).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(sorted, ["/", "/a~1b", "/m~0n/1/deep/0"]);
        // Redaction finds its way back through the same pointers.
        c.apply("s", Direction::Params, &mut v);
        assert_eq!(v["a/b"], "[REDACTED:email]");
        assert_eq!(v["m~n"][1]["deep"][0], "[REDACTED:email]");
        assert_eq!(v[""], "[REDACTED:email]");
        assert_eq!(v["mail@example.com"], "keys are not scanned");
    }

    #[test]
    fn a_bare_string_value_has_the_empty_pointer() {
        let c = Classifier::new(&[rule("e", Detector::Email, Action::Redact)]).unwrap();
        let mut v = json!("to x@example.com");
        assert_eq!(
            c.apply("s", Direction::Response, &mut v).findings(),
            [hit("e", Detector::Email, Action::Redact, "", 1)]
        );
        assert_eq!(v, json!("to [REDACTED:email]"));
    }

    #[test]
    fn strings_nested_deeper_than_any_stack_are_still_scanned() {
        let c = Classifier::new(&[rule("ssn", Detector::UsSsn, Action::Block)]).unwrap();
        let mut v = json!("123-45-6789");
        for _ in 0..1000 {
            v = json!([v]);
        }
        let findings = c.scan("s", Direction::Params, &v);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].path, "/0".repeat(1000));
    }

    #[test]
    fn tenant_patterns_match_anywhere_in_strings() {
        let rules = [
            pattern_rule("employee-id", r"\bEMP-\d{6}\b", Action::Redact),
            pattern_rule("project", r"(?i)project\s+falcon", Action::Block),
            pattern_rule("never", r"zz\d{40}", Action::Log),
        ];
        let c = Classifier::new(&rules).unwrap();
        assert!(c.pattern_set.is_some());
        let mut v = json!({"q": "EMP-004211 and EMP-000007 but not EMP-12345 or XEMP-123456"});
        let verdict = c.apply("hr", Direction::Params, &mut v);
        assert_eq!(
            verdict,
            Verdict::Allow { findings: vec![hit("employee-id", Detector::Pattern, Action::Redact, "/q", 2)] }
        );
        assert_eq!(v, json!({"q": "[REDACTED:pattern] and [REDACTED:pattern] but not EMP-12345 or XEMP-123456"}));

        let mut v = json!({"q": "status of Project  Falcon?"});
        assert_eq!(
            c.apply("hr", Direction::Params, &mut v),
            Verdict::Block {
                finding: hit("project", Detector::Pattern, Action::Block, "/q", 1),
                findings: vec![hit("project", Detector::Pattern, Action::Block, "/q", 1)],
            }
        );

        // A single pattern runs without a set.
        let one = Classifier::new(&rules[..1]).unwrap();
        assert!(one.pattern_set.is_none());
        assert_eq!(
            one.scan("hr", Direction::Response, &json!(["EMP-004211"])),
            [hit("employee-id", Detector::Pattern, Action::Redact, "/0", 1)]
        );
    }

    #[test]
    fn validation_names_the_field() {
        let check = |r: ClassificationRule| validate_rule(&r).map_err(|e| (e.field, e.message));
        assert_eq!(check(rule("ok", Detector::CardNumber, Action::Block)), Ok(()));
        assert_eq!(check(rule("", Detector::CardNumber, Action::Block)), Err(("id", "the rule needs an id".into())));
        assert_eq!(
            check(ClassificationRule { name: " ".into(), ..rule("r", Detector::Email, Action::Log) }),
            Err(("name", "give the rule a name".into()))
        );
        assert_eq!(
            check(ClassificationRule {
                servers: vec!["github".into(), "".into()],
                ..rule("r", Detector::Email, Action::Log)
            }),
            Err(("servers", "server 2 of the list is empty; list server slugs, or none to cover every server".into()))
        );
        assert_eq!(
            check(rule("r", Detector::Pattern, Action::Log)),
            Err(("pattern", "a pattern rule needs a regular expression".into()))
        );
        assert_eq!(
            check(ClassificationRule { pattern: Some("x".into()), ..rule("r", Detector::Iban, Action::Log) }),
            Err(("pattern", "only `pattern` rules take a pattern; `iban` is a built-in detector".into()))
        );
        assert_eq!(
            check(pattern_rule("r", "a*", Action::Log)),
            Err(("pattern", "the pattern matches the empty string, so it would match everywhere".into()))
        );
        assert_eq!(check(pattern_rule("r", &"x".repeat(MAX_PATTERN_LEN + 1), Action::Log)).unwrap_err().0, "pattern");
    }

    #[test]
    fn a_bad_or_huge_regex_is_refused() {
        let err = validate_rule(&pattern_rule("bad", "(unclosed", Action::Log)).unwrap_err();
        assert_eq!((err.rule_id.as_str(), err.field), ("bad", "pattern"));
        assert!(err.message.starts_with("not a valid regular expression: "), "{}", err.message);
        assert!(err.to_string().starts_with("classification rule \"bad\": pattern: not a valid regular expression"));

        // Tiny source, enormous automaton: refused by the size limit, not compiled.
        let err = validate_rule(&pattern_rule("huge", r"\w{1000}\w{1000}", Action::Log)).unwrap_err();
        assert_eq!(err.field, "pattern");
        assert_eq!(err.message, "the pattern is too complex: it compiles to more than 1048576 bytes; simplify it");

        // Classifier::new refuses the same rule, and duplicate ids.
        assert_eq!(Classifier::new(&[pattern_rule("bad", "(unclosed", Action::Log)]).unwrap_err().field, "pattern");
        let dup = Classifier::new(&[rule("x", Detector::Email, Action::Log), rule("x", Detector::Phone, Action::Log)])
            .unwrap_err();
        assert_eq!(
            (dup.rule_id.as_str(), dup.field, dup.message.as_str()),
            ("x", "id", "another rule has the same id")
        );
    }

    #[test]
    fn rules_have_a_stable_snake_case_wire_form() {
        let r = ClassificationRule {
            servers: vec!["github".into()],
            scope: Scope::Responses,
            ..pattern_rule("r1", "EMP-\\d+", Action::Redact)
        };
        let wire = serde_json::to_string(&r).unwrap();
        assert_eq!(
            wire,
            r#"{"id":"r1","name":"rule r1","detector":"pattern","pattern":"EMP-\\d+","action":"redact","scope":"responses","servers":["github"]}"#
        );
        assert_eq!(serde_json::from_str::<ClassificationRule>(&wire).unwrap(), r);
        let names: Vec<String> =
            Detector::BUILT_IN.iter().map(|d| serde_json::to_value(d).unwrap().as_str().unwrap().to_owned()).collect();
        assert_eq!(names, ["card_number", "us_ssn", "email", "phone", "iban", "api_key", "private_key"]);
        assert_eq!(serde_json::to_string(&[Action::Block, Action::Log]).unwrap(), r#"["block","log"]"#);
        assert_eq!(serde_json::to_string(&Scope::Both).unwrap(), r#""both""#);
    }

    #[test]
    fn a_classifier_can_be_shared_between_request_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Classifier>();
    }

    #[test]
    fn non_string_values_are_not_scanned() {
        let c = Classifier::new(&all_built_in(Action::Block)).unwrap();
        let v = json!({"card": 4111111111111111u64, "ok": true, "none": null, "list": [1.5, 2]});
        assert_eq!(c.scan("s", Direction::Params, &v), Vec::<Finding>::new());
    }
}
