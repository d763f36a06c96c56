//! Access rules, checked when an administrator saves them and compiled for the request path.
//!
//! The shapes ([`RuleInput`], [`ParamConstraint`], ...) live in `gatehouse-core` so the console can
//! use them; this module gives them meaning: [`validate_rule`] refuses a rule that could never do
//! what it says (naming the field), [`select_by_annotation`] turns an annotation selector into tool
//! names at compile time, and [`CompiledRule`] decides a call on the request path without parsing
//! anything.

use std::collections::HashSet;

use gatehouse_core::rules::{AnnotationMatch, Effect, Hint, ParamConstraint, RuleInput};
use regex::Regex;
use serde_json::{Map, Value};

use crate::format::Rule;

/// Longest tool selector accepted.
const MAX_SELECTOR_LEN: usize = 200;
/// Largest compiled size of a parameter pattern.
const MAX_PATTERN_BYTES: usize = 256 << 10;
/// Most constraints one rule may carry.
const MAX_CONSTRAINTS: usize = 64;
/// Most values in a list (`oneOf`, `pathPrefixes`, `urlHosts`).
const MAX_LIST: usize = 1000;

/// A rule that cannot be saved: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, e.g. `params[0].pattern`.
    pub field: String,
    /// What is wrong, in words an administrator can act on.
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// A `*`/`?` glob over tool names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
    /// The pattern as bytes when it is ASCII (the fast path).
    ascii: Option<Vec<u8>>,
    literal: bool,
}

impl Glob {
    /// Compiles a glob; a pattern without `*` or `?` matches exactly itself.
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.chars().collect(),
            ascii: pattern.is_ascii().then(|| pattern.as_bytes().to_vec()),
            literal: !pattern.contains(['*', '?']),
        }
    }

    /// Whether the glob is a plain name.
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// Whether `name` matches the whole glob.
    pub fn matches(&self, name: &str) -> bool {
        if self.literal {
            return self.pattern.len() == name.chars().count() && self.pattern.iter().copied().eq(name.chars());
        }
        match &self.ascii {
            // Tool names are ASCII in practice: match bytes, without allocating.
            Some(pattern) if name.is_ascii() => wildcard(pattern, name.as_bytes()),
            _ => wildcard(&self.pattern, &name.chars().collect::<Vec<char>>()),
        }
    }
}

/// Iterative wildcard matching (`*` any run, `?` one item): on a mismatch, retry from the last `*`
/// one item later.
fn wildcard<T: Copy + PartialEq + From<u8>>(pattern: &[T], name: &[T]) -> bool {
    let (many, one) = (T::from(b'*'), T::from(b'?'));
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(&c) if c == many => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == one || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == many)
}

/// The tool definitions a server last reported, by name.
fn tool_name(tool: &Value) -> Option<&str> {
    tool.get("name").and_then(Value::as_str)
}

/// Whether a tool definition's annotation has the selected value. A missing hint takes the value
/// MCP tells clients to assume; `destructiveHint` and `idempotentHint` are "meaningful only when
/// `readOnlyHint == false`", so a read-only tool counts as not destructive and idempotent.
pub fn annotation_matches(tool: &Value, m: &AnnotationMatch) -> bool {
    let hint = |h: Hint| {
        let stated = tool.get("annotations").and_then(|a| a.get(h.field())).and_then(Value::as_bool);
        stated.unwrap_or(h.default_value())
    };
    let value = match m.hint {
        Hint::Destructive if hint(Hint::ReadOnly) => false,
        Hint::Idempotent if hint(Hint::ReadOnly) => true,
        h => hint(h),
    };
    value == m.value
}

/// The names of the tools a selector picks from a server's tool definitions, sorted.
pub fn select_by_annotation(tools: &[Value], selector: &str, annotation: &AnnotationMatch) -> Vec<String> {
    let glob = Glob::new(selector);
    let mut names: Vec<String> = tools
        .iter()
        .filter(|t| annotation_matches(t, annotation))
        .filter_map(tool_name)
        .filter(|n| glob.matches(n))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Checks a rule before it is saved. `tools` are the server's tool definitions as last fetched
/// (`None` when never fetched): when known, every parameter a constraint names must be in the input
/// schema of every tool the rule selects, with a type the constraint fits.
pub fn validate_rule(rule: &RuleInput, tools: Option<&[Value]>) -> Result<(), FieldError> {
    let selector = rule.tools.trim();
    if selector.is_empty() {
        return Err(bad("tools", "name a tool, or a glob such as `read_*`, or `*` for every tool"));
    }
    if selector != rule.tools {
        return Err(bad("tools", "remove the spaces around the tool selector"));
    }
    if selector.len() > MAX_SELECTOR_LEN {
        return Err(bad("tools", format!("at most {MAX_SELECTOR_LEN} characters")));
    }
    if selector.chars().any(char::is_control) {
        return Err(bad("tools", "control characters are not allowed"));
    }
    if rule.description.len() > 500 {
        return Err(bad("description", "at most 500 characters"));
    }
    if rule.effect == Effect::Deny && !rule.params.is_empty() {
        return Err(bad(
            "params",
            "parameter constraints belong on allow rules (a deny rule refuses the selected tools outright)",
        ));
    }
    if let Some(condition) = &rule.condition {
        crate::conditions::check_condition(condition).map_err(|e| bad("condition", e.to_string()))?;
    }
    if rule.params.len() > MAX_CONSTRAINTS {
        return Err(bad("params", format!("at most {MAX_CONSTRAINTS} constraints per rule")));
    }
    let glob = Glob::new(selector);
    let selected: Vec<&Value> = tools
        .unwrap_or_default()
        .iter()
        .filter(|t| tool_name(t).is_some_and(|n| glob.matches(n)))
        .filter(|t| rule.annotation.as_ref().is_none_or(|a| annotation_matches(t, a)))
        .collect();
    let mut seen = HashSet::new();
    for (i, c) in rule.params.iter().enumerate() {
        let at = |f: &str| format!("params[{i}].{f}");
        if !seen.insert(c.param.as_str()) {
            return Err(bad(at("param"), format!("parameter '{}' is constrained twice; merge the two", c.param)));
        }
        check_constraint(c, &at)?;
        if tools.is_some() {
            if selected.is_empty() {
                return Err(bad(
                    "tools",
                    "the selector picks none of the server's tools, so its parameter constraints cannot be checked; \
                     refresh the server's tools or fix the selector",
                ));
            }
            for tool in &selected {
                check_against_schema(c, tool, &at)?;
            }
        }
    }
    Ok(())
}

fn check_constraint(c: &ParamConstraint, at: &dyn Fn(&str) -> String) -> Result<(), FieldError> {
    if c.param.is_empty() {
        return Err(bad(at("param"), "name the parameter"));
    }
    let says_something = c.equals.is_some()
        || c.one_of.is_some()
        || c.pattern.is_some()
        || c.min.is_some()
        || c.max.is_some()
        || c.max_length.is_some()
        || c.path_prefixes.is_some()
        || c.url_hosts.is_some();
    if !says_something {
        return Err(bad(
            at("param"),
            "the constraint sets no condition: give equals, oneOf, pattern, min, max, maxLength, pathPrefixes or urlHosts",
        ));
    }
    if let Some(values) = &c.one_of {
        if values.is_empty() {
            return Err(bad(at("oneOf"), "list at least one value"));
        }
        if values.len() > MAX_LIST {
            return Err(bad(at("oneOf"), format!("at most {MAX_LIST} values")));
        }
    }
    if let Some(p) = &c.pattern {
        compile_pattern(p).map_err(|e| bad(at("pattern"), e))?;
    }
    for (name, v) in [("min", c.min), ("max", c.max)] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err(bad(at(name), "must be a finite number"));
        }
    }
    if let (Some(min), Some(max)) = (c.min, c.max)
        && min > max
    {
        return Err(bad(at("min"), format!("min {min} is greater than max {max}")));
    }
    if let Some(prefixes) = &c.path_prefixes {
        if prefixes.is_empty() || prefixes.len() > MAX_LIST {
            return Err(bad(at("pathPrefixes"), format!("list 1 to {MAX_LIST} directories")));
        }
        for (j, p) in prefixes.iter().enumerate() {
            let normal = normalize_path(p).ok_or_else(|| {
                bad(
                    format!("{}[{j}]", at("pathPrefixes")),
                    format!("'{p}' is not an absolute path (it must start with /)"),
                )
            })?;
            if normal != *p && format!("{normal}/") != *p {
                return Err(bad(
                    format!("{}[{j}]", at("pathPrefixes")),
                    format!("write '{p}' in its normal form '{normal}' (no `.`, `..`, or doubled slashes)"),
                ));
            }
        }
    }
    if let Some(hosts) = &c.url_hosts {
        if hosts.is_empty() || hosts.len() > MAX_LIST {
            return Err(bad(at("urlHosts"), format!("list 1 to {MAX_LIST} hosts")));
        }
        for (j, h) in hosts.iter().enumerate() {
            if !valid_host_pattern(h) {
                return Err(bad(
                    format!("{}[{j}]", at("urlHosts")),
                    format!("'{h}' is not a lower-case host name (e.g. `api.example.com` or `*.example.com`)"),
                ));
            }
        }
    }
    Ok(())
}

/// The JSON Schema `type`s a property admits (empty when the schema does not say).
fn schema_types(property: &Value) -> Vec<&str> {
    match property.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

fn check_against_schema(c: &ParamConstraint, tool: &Value, at: &dyn Fn(&str) -> String) -> Result<(), FieldError> {
    let name = tool_name(tool).unwrap_or_default();
    let Some(property) = tool.get("inputSchema").and_then(|s| s.get("properties")).and_then(|p| p.get(&c.param)) else {
        return Err(bad(at("param"), format!("tool '{name}' has no parameter '{}' in its input schema", c.param)));
    };
    let types = schema_types(property);
    let admits = |t: &str| types.is_empty() || types.contains(&t) || (t == "number" && types.contains(&"integer"));
    let stringy = c.pattern.is_some() || c.max_length.is_some() || c.path_prefixes.is_some() || c.url_hosts.is_some();
    if stringy && !admits("string") {
        return Err(bad(
            at("param"),
            format!(
                "parameter '{}' of tool '{name}' is not a string ({}); pattern, maxLength, pathPrefixes and urlHosts need one",
                c.param,
                types.join("|")
            ),
        ));
    }
    if (c.min.is_some() || c.max.is_some()) && !admits("number") && !admits("integer") {
        return Err(bad(
            at("param"),
            format!(
                "parameter '{}' of tool '{name}' is not a number ({}); min and max need one",
                c.param,
                types.join("|")
            ),
        ));
    }
    let values: Vec<(&str, &Value)> =
        c.equals.iter().map(|v| ("equals", v)).chain(c.one_of.iter().flatten().map(|v| ("oneOf", v))).collect();
    for (field, v) in values {
        let t = json_type(v);
        let fits = types.is_empty() || types.contains(&t) || (t == "integer" && types.contains(&"number"));
        if !fits {
            return Err(bad(
                at(field),
                format!("{v} is of type {t}, but parameter '{}' of tool '{name}' is {}", c.param, types.join("|")),
            ));
        }
        if let Some(allowed) = property.get("enum").and_then(Value::as_array)
            && !allowed.iter().any(|a| json_eq(a, v))
        {
            return Err(bad(at(field), format!("{v} is not among the values tool '{name}' accepts for '{}'", c.param)));
        }
    }
    Ok(())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON equality, with `1` and `1.0` equal.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compile_pattern(p: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{p})$"))
        .size_limit(MAX_PATTERN_BYTES)
        .build()
        .map_err(|e| format!("not a valid regular expression: {e}"))
}

/// Resolves `.`, `..` and repeated slashes in an absolute POSIX path; `None` if it is not absolute,
/// climbs above `/`, or holds a NUL.
fn normalize_path(p: &str) -> Option<String> {
    if !p.starts_with('/') || p.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn valid_host_pattern(h: &str) -> bool {
    let host = h.strip_prefix("*.").unwrap_or(h);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// One constraint, ready to check.
#[derive(Debug, Clone)]
struct CompiledConstraint {
    source: ParamConstraint,
    pattern: Option<Regex>,
    /// Normalised directories, each ending in `/`, except `/` itself.
    prefixes: Vec<String>,
}

impl CompiledConstraint {
    fn new(c: &ParamConstraint) -> Self {
        let pattern = c.pattern.as_deref().map(|p| {
            // Saved patterns were checked; a bundle built elsewhere with a bad one refuses every call.
            compile_pattern(p).unwrap_or_else(|_| Regex::new("[^\\s\\S]").expect("the empty-language regex compiles"))
        });
        let prefixes = c
            .path_prefixes
            .iter()
            .flatten()
            .filter_map(|p| normalize_path(p))
            .map(|p| if p == "/" { p } else { format!("{p}/") })
            .collect();
        Self { source: c.clone(), pattern, prefixes }
    }

    /// `Err(why)` when `value` breaks the constraint.
    fn check(&self, value: Option<&Value>) -> Result<(), String> {
        let c = &self.source;
        let name = &c.param;
        let Some(value) = value else {
            return if c.optional { Ok(()) } else { Err(format!("parameter '{name}' is required")) };
        };
        if let Some(expected) = &c.equals
            && !json_eq(expected, value)
        {
            return Err(format!("parameter '{name}' must be {expected}"));
        }
        if let Some(allowed) = &c.one_of
            && !allowed.iter().any(|a| json_eq(a, value))
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!("parameter '{name}' must be one of {}", list.join(", ")));
        }
        if c.min.is_some() || c.max.is_some() {
            let Some(n) = value.as_f64() else { return Err(format!("parameter '{name}' must be a number")) };
            if let Some(min) = c.min
                && n < min
            {
                return Err(format!("parameter '{name}' must be at least {min}"));
            }
            if let Some(max) = c.max
                && n > max
            {
                return Err(format!("parameter '{name}' must be at most {max}"));
            }
        }
        let needs_string =
            self.pattern.is_some() || c.max_length.is_some() || c.path_prefixes.is_some() || c.url_hosts.is_some();
        if !needs_string {
            return Ok(());
        }
        let Some(s) = value.as_str() else { return Err(format!("parameter '{name}' must be a string")) };
        if let Some(max) = c.max_length
            && s.chars().count() > max as usize
        {
            return Err(format!("parameter '{name}' must be at most {max} characters long"));
        }
        if let Some(re) = &self.pattern
            && !re.is_match(s)
        {
            return Err(format!("parameter '{name}' must match the pattern {}", c.pattern.as_deref().unwrap_or("")));
        }
        if c.path_prefixes.is_some() {
            let inside = normalize_path(s).is_some_and(|p| {
                self.prefixes.iter().any(|d| d == "/" || p == d[..d.len() - 1] || p.starts_with(d.as_str()))
            });
            if !inside {
                let dirs = c.path_prefixes.as_deref().unwrap_or_default().join(", ");
                return Err(format!("parameter '{name}' must be a path inside {dirs}"));
            }
        }
        if let Some(hosts) = &c.url_hosts {
            let host = url_host(s);
            let ok = host.as_deref().is_some_and(|h| {
                hosts.iter().any(|allowed| match allowed.strip_prefix("*.") {
                    Some(suffix) => {
                        h.len() > suffix.len() + 1 && h.ends_with(suffix) && h[..h.len() - suffix.len()].ends_with('.')
                    }
                    None => h == allowed,
                })
            });
            if !ok {
                return Err(format!("parameter '{name}' must be an http(s) URL on {}", hosts.join(", ")));
            }
        }
        Ok(())
    }
}

/// The lower-case host of an `http`/`https` URL, or `None`.
fn url_host(s: &str) -> Option<String> {
    let url = url::Url::parse(s).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    url.host_str().map(|h| h.trim_end_matches('.').to_ascii_lowercase())
}

/// A rule of one role, ready for the request path.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Rule id.
    pub id: String,
    /// The role it belongs to.
    pub role: String,
    /// Allow or deny.
    pub effect: Effect,
    /// What it is for (shown with refusals).
    pub description: String,
    glob: Glob,
    only: Option<HashSet<String>>,
    constraints: Vec<CompiledConstraint>,
    /// The CEL condition, compiled once per bundle (`Err`: it does not compile; the bundle is then
    /// refused by `TenantPolicy::build`, and the rule fails closed if used anyway).
    condition: Option<Result<crate::conditions::Condition, String>>,
}

impl CompiledRule {
    /// Compiles a bundle rule of `role`.
    pub fn new(role: &str, rule: &Rule) -> Self {
        Self {
            id: rule.id.clone(),
            role: role.to_owned(),
            effect: rule.effect,
            description: rule.description.clone(),
            glob: Glob::new(&rule.tools),
            only: rule.only.as_ref().map(|names| names.iter().cloned().collect()),
            constraints: rule.params.iter().map(CompiledConstraint::new).collect(),
            condition: rule
                .condition
                .as_deref()
                .map(|c| crate::conditions::Condition::compile(c).map_err(|e| e.to_string())),
        }
    }

    /// The condition's compile error, if it has a condition that does not compile.
    pub fn condition_error(&self) -> Option<&str> {
        match &self.condition {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// Whether the rule has a condition.
    pub fn is_conditional(&self) -> bool {
        self.condition.is_some()
    }

    /// The condition as written, if any.
    pub fn condition_source(&self) -> Option<&str> {
        match &self.condition {
            Some(Ok(c)) => Some(c.source()),
            _ => None,
        }
    }

    /// Whether the rule's condition holds for this request: `Ok(true)` without a condition, and an
    /// error in words when it cannot be evaluated (callers fail closed).
    pub fn condition_holds(
        &self,
        user: Option<&cel::Value>,
        facts: &crate::conditions::RequestFacts<'_>,
        server: &str,
        tool: &str,
    ) -> Result<bool, String> {
        match &self.condition {
            None => Ok(true),
            Some(Err(e)) => Err(format!("its condition does not compile: {e}")),
            Some(Ok(c)) => match user {
                Some(user) => c.eval(user, facts, server, tool),
                None => Err("the user is not known to the policy".to_owned()),
            },
        }
    }

    /// Whether the rule selects `tool`.
    pub fn selects(&self, tool: &str) -> bool {
        self.only.as_ref().is_none_or(|names| names.contains(tool)) && self.glob.matches(tool)
    }

    /// Whether the rule constrains parameters.
    pub fn is_constrained(&self) -> bool {
        !self.constraints.is_empty()
    }

    /// Checks a call's `arguments` against the constraints: `Err(why)` names the first one broken.
    pub fn check(&self, arguments: Option<&Map<String, Value>>) -> Result<(), String> {
        for c in &self.constraints {
            c.check(arguments.and_then(|a| a.get(&c.source.param)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tools() -> Vec<Value> {
        vec![
            json!({"name": "read_file", "annotations": {"readOnlyHint": true},
                   "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}}}),
            json!({"name": "write_file", "annotations": {"readOnlyHint": false, "destructiveHint": true},
                   "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}}}),
            json!({"name": "fetch", "inputSchema": {"type": "object", "properties": {
                "url": {"type": "string"}, "limit": {"type": "integer"},
                "mode": {"type": "string", "enum": ["fast", "full"]}}}}),
        ]
    }

    fn allow(tools: &str, params: Vec<ParamConstraint>) -> RuleInput {
        RuleInput {
            server: "fs".into(),
            effect: Effect::Allow,
            tools: tools.into(),
            annotation: None,
            params,
            description: String::new(),
            condition: None,
        }
    }

    fn constraint(param: &str) -> ParamConstraint {
        ParamConstraint { param: param.into(), ..Default::default() }
    }

    #[test]
    fn globs_match_whole_names() {
        let g = Glob::new("read_*");
        assert!(g.matches("read_file") && g.matches("read_"));
        assert!(!g.matches("xread_file") && !g.matches("rea"));
        let g = Glob::new("*_file");
        assert!(g.matches("write_file") && !g.matches("write_files"));
        let g = Glob::new("get-?um");
        assert!(g.matches("get-sum") && !g.matches("get-summ"));
        let g = Glob::new("a*b*c");
        assert!(g.matches("aXbYc") && g.matches("abc") && g.matches("abcbc") && !g.matches("acb"));
        assert!(Glob::new("*").matches("anything") && Glob::new("*").matches(""));
        assert!(
            Glob::new("echo").is_literal() && Glob::new("echo").matches("echo") && !Glob::new("echo").matches("echo2")
        );
    }

    #[test]
    fn annotation_selection_uses_mcp_defaults_for_missing_hints() {
        let read_only = AnnotationMatch { hint: Hint::ReadOnly, value: true };
        assert_eq!(select_by_annotation(&tools(), "*", &read_only), ["read_file"]);
        // `fetch` states no hints: MCP says assume destructive and not read-only.
        let destructive = AnnotationMatch { hint: Hint::Destructive, value: true };
        assert_eq!(select_by_annotation(&tools(), "*", &destructive), ["fetch", "write_file"]);
        assert_eq!(select_by_annotation(&tools(), "w*", &destructive), ["write_file"]);
    }

    #[test]
    fn validation_names_the_field() {
        let t = tools();
        let err = |r: RuleInput| validate_rule(&r, Some(&t)).unwrap_err();
        assert_eq!(err(allow("", vec![])).field, "tools");
        let mut deny = allow("write_file", vec![ParamConstraint { max_length: Some(3), ..constraint("path") }]);
        deny.effect = Effect::Deny;
        assert_eq!(err(deny).field, "params");
        assert_eq!(err(allow("read_file", vec![constraint("path")])).field, "params[0].param");
        let e = err(allow("read_file", vec![ParamConstraint { pattern: Some("(".into()), ..constraint("path") }]));
        assert_eq!(e.field, "params[0].pattern");
        let e = err(allow("read_file", vec![ParamConstraint { max_length: Some(9), ..constraint("nope") }]));
        assert_eq!(e.field, "params[0].param");
        assert!(e.message.contains("no parameter 'nope'"), "{}", e.message);
        let e = err(allow("fetch", vec![ParamConstraint { min: Some(1.0), ..constraint("url") }]));
        assert!(e.message.contains("not a number"), "{}", e.message);
        let e = err(allow("fetch", vec![ParamConstraint { min: Some(5.0), max: Some(1.0), ..constraint("limit") }]));
        assert_eq!(e.field, "params[0].min");
        let e = err(allow("fetch", vec![ParamConstraint { one_of: Some(vec![json!("slow")]), ..constraint("mode") }]));
        assert_eq!(e.field, "params[0].oneOf");
        let e = err(allow("fetch", vec![ParamConstraint { equals: Some(json!(3)), ..constraint("mode") }]));
        assert_eq!(e.message, "3 is of type integer, but parameter 'mode' of tool 'fetch' is string");
        let e = err(allow(
            "*_file",
            vec![ParamConstraint { path_prefixes: Some(vec!["tmp".into()]), ..constraint("path") }],
        ));
        assert_eq!(e.field, "params[0].pathPrefixes[0]");
        let e = err(allow(
            "*_file",
            vec![ParamConstraint { path_prefixes: Some(vec!["/srv/../etc".into()]), ..constraint("path") }],
        ));
        assert!(e.message.contains("'/etc'"), "{}", e.message);
        let e = err(allow(
            "fetch",
            vec![ParamConstraint { url_hosts: Some(vec!["Example.com".into()]), ..constraint("url") }],
        ));
        assert_eq!(e.field, "params[0].urlHosts[0]");
        let e = err(allow("nothing_*", vec![ParamConstraint { max_length: Some(1), ..constraint("path") }]));
        assert_eq!(e.field, "tools");
        let e = err(allow(
            "fetch",
            vec![
                ParamConstraint { max: Some(1.0), ..constraint("limit") },
                ParamConstraint { min: Some(0.0), ..constraint("limit") },
            ],
        ));
        assert_eq!(e.field, "params[1].param");
        // `write_file` is selected too and has a `path`: fine. A glob over both with `content`: not.
        assert!(
            validate_rule(
                &allow("*_file", vec![ParamConstraint { max_length: Some(9), ..constraint("path") }]),
                Some(&t)
            )
            .is_ok()
        );
        let e = err(allow("*_file", vec![ParamConstraint { max_length: Some(9), ..constraint("content") }]));
        assert!(e.message.contains("read_file"), "{}", e.message);
        // Without tool definitions only the rule's own consistency is checked.
        assert!(
            validate_rule(&allow("x", vec![ParamConstraint { max_length: Some(9), ..constraint("y") }]), None).is_ok()
        ); // A condition is checked when saved, and the error names the field and the place.
        let conditional = |c: &str| RuleInput { condition: Some(c.into()), ..allow("read_file", vec![]) };
        let e = err(conditional("inCidr(client.ip, '10.0.0.0/33')"));
        assert_eq!(e.field, "condition");
        assert_eq!(e.message, "line 1, column 19: '10.0.0.0/33': the prefix length must be a number from 0 to 32");
        assert!(validate_rule(&conditional("'oncall' in user.groups"), Some(&t)).is_ok());
    }

    fn compiled(params: Vec<ParamConstraint>) -> CompiledRule {
        CompiledRule::new(
            "analyst",
            &Rule {
                id: "r1".into(),
                server: "fs".into(),
                effect: Effect::Allow,
                tools: "*".into(),
                only: None,
                annotation: None,
                params,
                description: String::new(),
                condition: None,
            },
        )
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn path_prefixes_resolve_dot_dot_and_respect_directory_boundaries() {
        let r = compiled(vec![ParamConstraint { path_prefixes: Some(vec!["/srv/data".into()]), ..constraint("path") }]);
        assert_eq!(r.check(Some(&args(json!({"path": "/srv/data"})))), Ok(()));
        assert_eq!(r.check(Some(&args(json!({"path": "/srv/data/a/./b.txt"})))), Ok(()));
        for escape in ["/srv/database", "/srv/data/../secrets", "srv/data/x", "/etc/passwd", "/srv/data/../../etc"] {
            let why = r.check(Some(&args(json!({ "path": escape })))).unwrap_err();
            assert_eq!(why, "parameter 'path' must be a path inside /srv/data", "{escape}");
        }
        assert_eq!(r.check(Some(&args(json!({})))).unwrap_err(), "parameter 'path' is required");
        assert_eq!(r.check(None).unwrap_err(), "parameter 'path' is required");
        assert_eq!(r.check(Some(&args(json!({"path": 7})))).unwrap_err(), "parameter 'path' must be a string");
    }

    #[test]
    fn url_hosts_compare_the_parsed_host() {
        let r = compiled(vec![ParamConstraint {
            url_hosts: Some(vec!["api.example.com".into(), "*.corp.io".into()]),
            ..constraint("url")
        }]);
        for ok in [
            "https://api.example.com/x",
            "http://API.example.com.",
            "https://a.corp.io/",
            "https://a.b.corp.io:8443/p?q",
        ] {
            assert_eq!(r.check(Some(&args(json!({ "url": ok })))), Ok(()), "{ok}");
        }
        for no in [
            "https://corp.io/",
            "https://evilcorp.io/",
            "https://api.example.com@evil.net/",
            "https://evil.net/?https://api.example.com",
            "ftp://api.example.com/",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(r.check(Some(&args(json!({ "url": no })))).is_err(), "{no}");
        }
    }

    #[test]
    fn values_ranges_lengths_and_patterns() {
        let r = compiled(vec![
            ParamConstraint { one_of: Some(vec![json!("fast"), json!("full")]), ..constraint("mode") },
            ParamConstraint { min: Some(1.0), max: Some(100.0), optional: true, ..constraint("limit") },
            ParamConstraint {
                max_length: Some(5),
                pattern: Some("[a-z]+".into()),
                optional: true,
                ..constraint("tag")
            },
            ParamConstraint { equals: Some(json!(1)), optional: true, ..constraint("version") },
        ]);
        assert_eq!(r.check(Some(&args(json!({"mode": "fast", "limit": 100, "tag": "abc", "version": 1.0})))), Ok(()));
        let why = |v: Value| r.check(Some(&args(v))).unwrap_err();
        assert_eq!(why(json!({"mode": "slow"})), "parameter 'mode' must be one of \"fast\", \"full\"");
        assert_eq!(why(json!({"mode": "fast", "limit": 101})), "parameter 'limit' must be at most 100");
        assert_eq!(why(json!({"mode": "fast", "limit": 0.5})), "parameter 'limit' must be at least 1");
        assert_eq!(why(json!({"mode": "fast", "limit": "9"})), "parameter 'limit' must be a number");
        assert_eq!(why(json!({"mode": "fast", "tag": "abcdef"})), "parameter 'tag' must be at most 5 characters long");
        // The pattern must match the whole value, not a part of it.
        assert_eq!(why(json!({"mode": "fast", "tag": "ab1"})), "parameter 'tag' must match the pattern [a-z]+");
        assert_eq!(why(json!({"mode": "fast", "version": 2})), "parameter 'version' must be 1");
    }
}
