//! Virtual-server shaping (issue 3, `docs/decisions/0013-virtual-server-shaping.md`): how the tools
//! of several upstreams are named behind one endpoint, and how one tool is reshaped (renamed,
//! described, parameters fixed or hidden, enums narrowed).
//!
//! Everything here is pure, so the control plane (validation, the effective tool list it shows),
//! the gateway worker (listing, `tools/call`) and the console share one implementation:
//! [`expose`] names the tools, [`validate_override`] checks an override against the tool's input
//! schema, [`shape_definition`] rewrites a tool definition for `tools/list`, and
//! [`check_arguments`] enforces the narrowed schema and injects fixed values on `tools/call`.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(feature = "graphql")]
use async_graphql::{Enum, InputObject, SimpleObject};

use crate::error::GatehouseError;

/// Longest exposed tool name (MCP's own bound on tool names).
pub const MAX_TOOL_NAME_LEN: usize = 128;
/// Longest upstream prefix.
pub const MAX_PREFIX_LEN: usize = 32;
/// Longest description override, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most values in one narrowed enum.
pub const MAX_ENUM_VALUES: usize = 100;
/// What joins a prefix and a tool name: `{prefix}__{name}`.
pub const SEPARATOR: &str = "__";

/// How a virtual server resolves a tool (or prompt) name that more than one upstream uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum ConflictStrategy {
    /// Names used by one upstream stay bare; a name used by several becomes `{prefix}__{name}` for
    /// each of them (the behaviour before shaping existed, and the default).
    #[default]
    Auto,
    /// Every tool is exposed as `{prefix}__{name}`.
    Prefix,
    /// The first upstream (in the virtual server's order) keeps the bare name; the others are
    /// exposed prefixed. Nothing is dropped.
    Priority,
    /// Conflicts must be resolved by renames: the control plane refuses a configuration that
    /// leaves one. A conflict that appears later (an upstream added a tool) is prefixed at run
    /// time, with a warning, as under `auto`.
    Explicit,
}

impl ConflictStrategy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictStrategy::Auto => "auto",
            ConflictStrategy::Prefix => "prefix",
            ConflictStrategy::Priority => "priority",
            ConflictStrategy::Explicit => "explicit",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(ConflictStrategy::Auto),
            "prefix" => Some(ConflictStrategy::Prefix),
            "priority" => Some(ConflictStrategy::Priority),
            "explicit" => Some(ConflictStrategy::Explicit),
            _ => None,
        }
    }

    /// Whether this is the default (`auto`), which the bundle leaves out.
    pub fn is_default(&self) -> bool {
        *self == ConflictStrategy::Auto
    }
}

/// The prefix of one upstream (default: its slug).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject, InputObject))]
#[cfg_attr(feature = "graphql", graphql(input_name = "UpstreamPrefixInput"))]
#[serde(rename_all = "camelCase")]
pub struct UpstreamPrefix {
    /// Upstream server slug.
    pub server: String,
    /// The prefix its tools get: `{prefix}__{tool}`.
    pub prefix: String,
}

/// A parameter fixed to a value: hidden from the advertised schema, injected on every call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject, InputObject))]
#[cfg_attr(feature = "graphql", graphql(input_name = "FixedParamInput"))]
#[serde(rename_all = "camelCase")]
pub struct FixedParam {
    /// Parameter (top-level property of the tool's input schema).
    pub name: String,
    /// The value every call gets.
    pub value: Value,
}

/// A parameter whose allowed values are narrowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject, InputObject))]
#[cfg_attr(feature = "graphql", graphql(input_name = "NarrowedEnumInput"))]
#[serde(rename_all = "camelCase")]
pub struct NarrowedEnum {
    /// Parameter (top-level property of the tool's input schema).
    pub name: String,
    /// The values clients may send: a subset of the upstream's enum, or values of its type.
    pub values: Vec<Value>,
}

/// How one upstream tool is shown and called through a virtual server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject, InputObject))]
#[cfg_attr(feature = "graphql", graphql(input_name = "ToolOverrideInput"))]
#[serde(rename_all = "camelCase")]
pub struct ToolOverride {
    /// Upstream server slug (left out where the key is elsewhere, as in the store's rows).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    /// The tool's name at the upstream.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool: String,
    /// The name clients see instead (kept as written under every strategy: never prefixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<String>,
    /// The description clients see instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Parameters fixed to a value, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "graphql", graphql(default))]
    pub fixed: Vec<FixedParam>,
    /// Optional parameters hidden from clients (a call that sends one is refused), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "graphql", graphql(default))]
    pub hidden: Vec<String>,
    /// Parameters whose allowed values are narrowed, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "graphql", graphql(default))]
    pub enums: Vec<NarrowedEnum>,
}

impl ToolOverride {
    /// Sorts and trims, so equal overrides have equal bytes.
    pub fn normalize(&mut self) {
        self.rename = self.rename.take().map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
        self.description = self.description.take().map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
        self.fixed.sort_by(|a, b| a.name.cmp(&b.name));
        self.hidden.sort();
        self.hidden.dedup();
        self.enums.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Whether the override changes what a call may send (fixed, hidden or narrowed parameters).
    pub fn shapes_arguments(&self) -> bool {
        !(self.fixed.is_empty() && self.hidden.is_empty() && self.enums.is_empty())
    }

    fn fixed_value(&self, name: &str) -> Option<&Value> {
        self.fixed.iter().find(|f| f.name == name).map(|f| &f.value)
    }
}

/// One tool of the effective list of a virtual server, as the console and GraphQL show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
#[serde(rename_all = "camelCase")]
pub struct ExposedToolView {
    /// The name clients see.
    pub exposed: String,
    /// Upstream server slug.
    pub server: String,
    /// The tool's name at the upstream (what policy, audit and the upstream see).
    pub tool: String,
    /// The description clients see.
    pub description: Option<String>,
    /// The input schema clients see (fixed and hidden parameters removed, enums narrowed).
    pub input_schema: Option<Value>,
    /// Whether an override applies.
    pub overridden: bool,
    /// Set when the name is a run-time fallback (an unresolved conflict): why.
    pub warning: Option<String>,
}

/// The names of one virtual server's tools: `lists` are the upstreams in order, each with its tool
/// names in the upstream's order; the answer has the exposed name of every tool, at the same
/// positions, and a warning for every fallback. No tool is ever dropped.
///
/// - A renamed tool keeps its new name under every strategy.
/// - Otherwise: `auto` prefixes a name several tools use, `prefix` prefixes all, `priority` keeps
///   the bare name for the first claimer and prefixes the others, `explicit` keeps bare names and
///   falls back to `auto`'s prefixing (with a warning) on a conflict it did not foresee. A bare
///   name a rename claims is prefixed under every strategy.
/// - A name that is still taken (two renames to one name, or a prefixed name equal to another
///   tool's) falls back to `{prefix}__{name}`, then `{prefix}__{name}_2`, `_3`, ... with a warning.
pub fn expose<S: AsRef<str>, T: AsRef<str>>(
    strategy: ConflictStrategy,
    prefix_of: &dyn Fn(&str) -> String,
    rename_of: &dyn Fn(&str, &str) -> Option<String>,
    lists: &[(S, Vec<T>)],
) -> (Vec<Vec<String>>, Vec<String>) {
    // Renames and how many tools claim each bare name.
    let renames: Vec<Vec<Option<String>>> =
        lists.iter().map(|(s, tools)| tools.iter().map(|t| rename_of(s.as_ref(), t.as_ref())).collect()).collect();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    let mut renamed_to: HashSet<&str> = HashSet::new();
    for ((_, tools), renames) in lists.iter().zip(&renames) {
        for (t, r) in tools.iter().zip(renames) {
            let base = r.as_deref().unwrap_or(t.as_ref());
            *uses.entry(base).or_default() += 1;
            if r.is_some() {
                renamed_to.insert(base);
            }
        }
    }
    let mut warnings = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    let mut claimed_bare: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(lists.len());
    for ((server, tools), renames) in lists.iter().zip(&renames) {
        let server = server.as_ref();
        let prefix = prefix_of(server);
        let mut names = Vec::with_capacity(tools.len());
        for (t, r) in tools.iter().zip(renames) {
            let t = t.as_ref();
            let prefixed = || format!("{prefix}{SEPARATOR}{t}");
            let shared = uses.get(t).copied().unwrap_or(0) > 1;
            let wanted = match (r, strategy) {
                (Some(r), _) => r.clone(),
                (None, _) if renamed_to.contains(t) => prefixed(),
                (None, ConflictStrategy::Prefix) => prefixed(),
                (None, ConflictStrategy::Auto) if shared => prefixed(),
                (None, ConflictStrategy::Priority) if !claimed_bare.insert(t) => prefixed(),
                (None, ConflictStrategy::Explicit) if shared => {
                    warnings.push(format!(
                        "tool '{t}' of '{server}' conflicts with another upstream's and no rename resolves it; \
                         exposed as '{}'",
                        prefixed()
                    ));
                    prefixed()
                }
                (None, _) => t.to_owned(),
            };
            let exposed = if taken.contains(&wanted) {
                let mut candidate = prefixed();
                let mut n = 2;
                while taken.contains(&candidate) {
                    candidate = format!("{prefix}{SEPARATOR}{t}_{n}");
                    n += 1;
                }
                warnings.push(format!(
                    "tool '{t}' of '{server}' would be exposed as '{wanted}', which another tool has; exposed as \
                     '{candidate}'"
                ));
                candidate
            } else {
                wanted
            };
            taken.insert(exposed.clone());
            names.push(exposed);
        }
        out.push(names);
    }
    (out, warnings)
}

/// The conflicts `explicit` would refuse: every name (after renames) that more than one tool would
/// take, with the tools that take it (`server/tool`), in order. Renames to one name are conflicts
/// under every strategy (see [`rename_clashes`]).
pub fn conflicts<S: AsRef<str>, T: AsRef<str>>(
    rename_of: &dyn Fn(&str, &str) -> Option<String>,
    lists: &[(S, Vec<T>)],
) -> Vec<(String, Vec<String>)> {
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for (s, tools) in lists {
        for t in tools {
            let base = rename_of(s.as_ref(), t.as_ref()).unwrap_or_else(|| t.as_ref().to_owned());
            let who = format!("{}/{}", s.as_ref(), t.as_ref());
            match by_name.iter_mut().find(|(n, _)| *n == base) {
                Some((_, tools)) => tools.push(who),
                None => by_name.push((base, vec![who])),
            }
        }
    }
    by_name.retain(|(_, tools)| tools.len() > 1);
    by_name
}

/// Names two renames give the same new name (a conflict under every strategy).
pub fn rename_clashes<S: AsRef<str>, T: AsRef<str>>(
    rename_of: &dyn Fn(&str, &str) -> Option<String>,
    lists: &[(S, Vec<T>)],
) -> Vec<(String, Vec<String>)> {
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for (s, tools) in lists {
        for t in tools {
            let Some(base) = rename_of(s.as_ref(), t.as_ref()) else { continue };
            let who = format!("{}/{}", s.as_ref(), t.as_ref());
            match by_name.iter_mut().find(|(n, _)| *n == base) {
                Some((_, tools)) => tools.push(who),
                None => by_name.push((base, vec![who])),
            }
        }
    }
    by_name.retain(|(_, tools)| tools.len() > 1);
    by_name
}

/// Checks an exposed tool name (a rename, or a prefix joined to a name): 1 to 128 characters of
/// `A-Z a-z 0-9 _ - .`, as MCP recommends for tool names.
pub fn validate_tool_name(field: &str, name: &str) -> Result<(), GatehouseError> {
    if name.is_empty() || name.len() > MAX_TOOL_NAME_LEN {
        return Err(GatehouseError::invalid(field, format!("must be 1 to {MAX_TOOL_NAME_LEN} characters long")));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(GatehouseError::invalid(
            field,
            format!("may contain only A-Z, a-z, 0-9, '_', '-' and '.', found {bad:?}"),
        ));
    }
    Ok(())
}

/// Checks an upstream prefix: 1 to 32 characters of `A-Z a-z 0-9 _ - .`, not ending in `_` (so the
/// `__` separator stays readable).
pub fn validate_prefix(field: &str, prefix: &str) -> Result<(), GatehouseError> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN {
        return Err(GatehouseError::invalid(field, format!("must be 1 to {MAX_PREFIX_LEN} characters long")));
    }
    validate_tool_name(field, prefix)?;
    if prefix.ends_with('_') {
        return Err(GatehouseError::invalid(field, "must not end with '_'"));
    }
    Ok(())
}

/// The JSON Schema type names a value has (`integer` values are `number`s too).
fn type_names(value: &Value) -> &'static [&'static str] {
    match value {
        Value::Null => &["null"],
        Value::Bool(_) => &["boolean"],
        Value::Number(n) if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
            &["integer", "number"]
        }
        Value::Number(_) => &["number"],
        Value::String(_) => &["string"],
        Value::Array(_) => &["array"],
        Value::Object(_) => &["object"],
    }
}

/// Whether `value` fits a property schema's `type` and `enum` (the checks a narrowing can be held
/// to; other keywords are the upstream's to enforce).
fn fits(property: &Value, value: &Value) -> Result<(), String> {
    if let Some(allowed) = property.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{value} is not one of the tool's values {}", Value::Array(allowed.clone())));
    }
    let names = type_names(value);
    let ok = match property.get("type") {
        None => true,
        Some(Value::String(t)) => names.contains(&t.as_str()),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).any(|t| names.contains(&t)),
        Some(_) => true,
    };
    if ok { Ok(()) } else { Err(format!("{value} is not of the parameter's type {}", property["type"])) }
}

/// Checks an override against the tool's input schema. `field` prefixes every error's field
/// (`overrides[0]` gives `overrides[0].fixed.path: ...`). Call [`ToolOverride::normalize`] first.
pub fn validate_override(field: &str, o: &ToolOverride, input_schema: Option<&Value>) -> Result<(), GatehouseError> {
    if let Some(rename) = &o.rename {
        validate_tool_name(&format!("{field}.rename"), rename)?;
    }
    if let Some(d) = &o.description
        && d.chars().count() > MAX_DESCRIPTION_CHARS
    {
        return Err(GatehouseError::invalid(
            &format!("{field}.description"),
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    let empty = Map::new();
    let properties = input_schema.and_then(|s| s.get("properties")).and_then(Value::as_object).unwrap_or(&empty);
    let required: Vec<&str> = input_schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let property = |kind: &str, name: &str| {
        properties.get(name).ok_or_else(|| {
            let known: Vec<&str> = properties.keys().map(String::as_str).collect();
            GatehouseError::invalid(
                &format!("{field}.{kind}.{name}"),
                format!("the tool has no parameter '{name}' (its parameters: {})", list(&known)),
            )
        })
    };
    let mut seen = HashSet::new();
    for f in &o.fixed {
        let p = property("fixed", &f.name)?;
        if !seen.insert(f.name.as_str()) {
            return Err(GatehouseError::invalid(&format!("{field}.fixed.{}", f.name), "is fixed twice"));
        }
        fits(p, &f.value).map_err(|why| GatehouseError::invalid(&format!("{field}.fixed.{}", f.name), why))?;
    }
    for h in &o.hidden {
        property("hidden", h)?;
        if required.contains(&h.as_str()) && o.fixed_value(h).is_none() {
            return Err(GatehouseError::invalid(
                &format!("{field}.hidden.{h}"),
                format!("'{h}' is required by the tool: fix it to a value to hide it"),
            ));
        }
    }
    let mut seen = HashSet::new();
    for e in &o.enums {
        let p = property("enums", &e.name)?;
        let at = format!("{field}.enums.{}", e.name);
        if !seen.insert(e.name.as_str()) {
            return Err(GatehouseError::invalid(&at, "is narrowed twice"));
        }
        if o.fixed_value(&e.name).is_some() || o.hidden.contains(&e.name) {
            return Err(GatehouseError::invalid(&at, "is fixed or hidden, so clients cannot send it at all"));
        }
        if e.values.is_empty() || e.values.len() > MAX_ENUM_VALUES {
            return Err(GatehouseError::invalid(&at, format!("name 1 to {MAX_ENUM_VALUES} values")));
        }
        for (i, v) in e.values.iter().enumerate() {
            if e.values[..i].contains(v) {
                return Err(GatehouseError::invalid(&at, format!("{v} is listed twice")));
            }
            fits(p, v).map_err(|why| GatehouseError::invalid(&at, why))?;
        }
    }
    Ok(())
}

fn list(names: &[&str]) -> String {
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

/// Rewrites a tool definition as clients see it: `name`, the description, fixed and hidden
/// parameters removed from `inputSchema.properties` and `required`, narrowed enums set.
pub fn shape_definition(o: &ToolOverride, exposed: &str, tool: &mut Value) {
    let Some(object) = tool.as_object_mut() else { return };
    object.insert("name".to_owned(), Value::String(exposed.to_owned()));
    if let Some(d) = &o.description {
        object.insert("description".to_owned(), Value::String(d.clone()));
    }
    let Some(schema) = object.get_mut("inputSchema").and_then(Value::as_object_mut) else { return };
    let gone = |name: &str| o.fixed_value(name).is_some() || o.hidden.iter().any(|h| h == name);
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.retain(|name, _| !gone(name));
        for e in &o.enums {
            if let Some(p) = properties.get_mut(&e.name).and_then(Value::as_object_mut) {
                p.insert("enum".to_owned(), Value::Array(e.values.clone()));
            }
        }
    }
    if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| r.as_str().is_none_or(|r| !gone(r)));
    }
}

/// Why a call's arguments break the narrowed schema: the parameter and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentRefusal {
    /// The parameter.
    pub param: String,
    /// What the client reads.
    pub message: String,
}

/// Enforces the narrowed schema on a call's `arguments` and injects the fixed values. A client may
/// not send a fixed parameter (even with the fixed value) nor a hidden one, and a narrowed
/// parameter must have one of the allowed values. `arguments` is created when absent.
pub fn check_arguments(
    o: &ToolOverride,
    tool: &str,
    arguments: &mut Map<String, Value>,
) -> Result<(), ArgumentRefusal> {
    for (name, value) in arguments.iter() {
        let refuse = |message: String| Err(ArgumentRefusal { param: name.clone(), message });
        if o.fixed_value(name).is_some() {
            return refuse(format!(
                "parameter '{name}' of tool '{tool}' is fixed by this virtual server; do not send it"
            ));
        }
        if o.hidden.iter().any(|h| h == name) {
            return refuse(format!("tool '{tool}' has no parameter '{name}' on this virtual server"));
        }
        if let Some(e) = o.enums.iter().find(|e| e.name == *name)
            && !e.values.contains(value)
        {
            return refuse(format!(
                "parameter '{name}' of tool '{tool}' must be one of {}",
                Value::Array(e.values.clone())
            ));
        }
    }
    for f in &o.fixed {
        arguments.insert(f.name.clone(), f.value.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names(strategy: ConflictStrategy, renames: &[(&str, &str, &str)]) -> (Vec<Vec<String>>, Vec<String>) {
        let lists = vec![("alpha", vec!["echo", "search"]), ("beta", vec!["search", "add"]), ("gamma", vec!["search"])];
        let renames: Vec<(String, String, String)> =
            renames.iter().map(|(s, t, r)| ((*s).into(), (*t).into(), (*r).into())).collect();
        let prefix_of = |s: &str| if s == "gamma" { "g".to_owned() } else { s.to_owned() };
        let rename_of =
            move |s: &str, t: &str| renames.iter().find(|(rs, rt, _)| rs == s && rt == t).map(|(_, _, r)| r.clone());
        expose(strategy, &prefix_of, &rename_of, &lists)
    }

    #[test]
    fn auto_prefixes_shared_names_only() {
        let (n, w) = names(ConflictStrategy::Auto, &[]);
        assert_eq!(n, [vec!["echo", "alpha__search"], vec!["beta__search", "add"], vec!["g__search"]]);
        assert!(w.is_empty());
    }

    #[test]
    fn prefix_prefixes_everything_but_renames() {
        let (n, _) = names(ConflictStrategy::Prefix, &[("beta", "add", "sum")]);
        assert_eq!(n, [vec!["alpha__echo", "alpha__search"], vec!["beta__search", "sum"], vec!["g__search"]]);
    }

    #[test]
    fn priority_keeps_the_first_and_prefixes_the_rest() {
        let (n, w) = names(ConflictStrategy::Priority, &[]);
        assert_eq!(n, [vec!["echo", "search"], vec!["beta__search", "add"], vec!["g__search"]]);
        assert!(w.is_empty());
    }

    #[test]
    fn explicit_uses_renames_and_falls_back_to_prefixing_with_a_warning() {
        let (n, w) =
            names(ConflictStrategy::Explicit, &[("beta", "search", "web_search"), ("gamma", "search", "g_search")]);
        assert_eq!(n, [vec!["echo", "search"], vec!["web_search", "add"], vec!["g_search"]]);
        assert!(w.is_empty());
        let (n, w) = names(ConflictStrategy::Explicit, &[("gamma", "search", "g_search")]);
        assert_eq!(n, [vec!["echo", "alpha__search"], vec!["beta__search", "add"], vec!["g_search"]]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("tool 'search' of 'alpha' conflicts"), "{w:?}");
    }

    #[test]
    fn a_rename_claims_its_name_and_nothing_is_dropped() {
        // beta's add renamed to "echo": alpha's own echo is prefixed.
        let (n, w) = names(ConflictStrategy::Priority, &[("beta", "add", "echo")]);
        assert_eq!(n, [vec!["alpha__echo", "search"], vec!["beta__search", "echo"], vec!["g__search"]]);
        assert!(w.is_empty());
        // Two renames to one name: the second falls back, with a warning.
        let (n, w) = names(ConflictStrategy::Auto, &[("alpha", "echo", "x"), ("beta", "add", "x")]);
        assert_eq!(n[1][1], "beta__add");
        assert_eq!(n.iter().flatten().count(), 5);
        assert_eq!(w.len(), 1);
        // A prefixed name equal to another tool's.
        let lists = vec![("a", vec!["b__x"]), ("b", vec!["x"])];
        let (n, w) = expose(ConflictStrategy::Prefix, &|s: &str| s.to_owned(), &|_: &str, _: &str| None, &lists);
        assert_eq!(n, [vec!["a__b__x"], vec!["b__x"]]);
        assert!(w.is_empty());
        let lists = vec![("a", vec!["b__x", "b__x"])];
        let (n, w) = expose(ConflictStrategy::Auto, &|s: &str| s.to_owned(), &|_: &str, _: &str| None, &lists);
        assert_eq!(n, [vec!["a__b__x", "a__b__x_2"]]);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn conflicts_name_the_tools() {
        let lists = vec![("alpha", vec!["echo", "search"]), ("beta", vec!["search"])];
        let none = |_: &str, _: &str| None;
        assert_eq!(
            conflicts(&none, &lists),
            [("search".to_owned(), vec!["alpha/search".to_owned(), "beta/search".to_owned()])]
        );
        let renamed = |s: &str, t: &str| (s == "beta" && t == "search").then(|| "echo".to_owned());
        assert_eq!(conflicts(&renamed, &lists)[0].1, ["alpha/echo", "beta/search"]);
        assert!(rename_clashes(&renamed, &lists).is_empty());
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": { "type": "string" },
                "mode": { "type": "string", "enum": ["fast", "slow", "exact"] },
                "limit": { "type": "integer" },
                "verbose": { "type": "boolean" },
            },
            "required": ["path"],
        })
    }

    fn check(o: ToolOverride) -> Result<(), String> {
        let mut o = o;
        o.normalize();
        validate_override("overrides[0]", &o, Some(&schema())).map_err(|e| e.message)
    }

    fn base() -> ToolOverride {
        ToolOverride { server: "fs".into(), tool: "read".into(), ..Default::default() }
    }

    #[test]
    fn validation_names_the_field() {
        let fixed =
            |name: &str, value: Value| ToolOverride { fixed: vec![FixedParam { name: name.into(), value }], ..base() };
        assert_eq!(check(fixed("path", json!("/srv"))), Ok(()));
        assert_eq!(
            check(fixed("path", json!(3))).unwrap_err(),
            "overrides[0].fixed.path: 3 is not of the parameter's type \"string\""
        );
        assert_eq!(
            check(fixed("nope", json!(1))).unwrap_err(),
            "overrides[0].fixed.nope: the tool has no parameter 'nope' (its parameters: limit, mode, path, verbose)"
        );
        assert_eq!(
            check(fixed("mode", json!("turbo"))).unwrap_err(),
            "overrides[0].fixed.mode: \"turbo\" is not one of the tool's values [\"fast\",\"slow\",\"exact\"]"
        );
        assert_eq!(check(fixed("limit", json!(5.0))), Ok(()));
        assert!(check(fixed("limit", json!(5.5))).is_err());

        let hidden = |h: &str| ToolOverride { hidden: vec![h.into()], ..base() };
        assert_eq!(check(hidden("verbose")), Ok(()));
        assert_eq!(
            check(hidden("path")).unwrap_err(),
            "overrides[0].hidden.path: 'path' is required by the tool: fix it to a value to hide it"
        );
        assert_eq!(check(ToolOverride { hidden: vec!["path".into()], ..fixed("path", json!("/srv")) }), Ok(()));

        let narrowed = |name: &str, values: Vec<Value>| ToolOverride {
            enums: vec![NarrowedEnum { name: name.into(), values }],
            ..base()
        };
        assert_eq!(check(narrowed("mode", vec![json!("fast")])), Ok(()));
        assert_eq!(
            check(narrowed("mode", vec![json!("fast"), json!("turbo")])).unwrap_err(),
            "overrides[0].enums.mode: \"turbo\" is not one of the tool's values [\"fast\",\"slow\",\"exact\"]"
        );
        assert_eq!(check(narrowed("limit", vec![json!(10), json!(20)])), Ok(()));
        assert_eq!(
            check(narrowed("limit", vec![json!("ten")])).unwrap_err(),
            "overrides[0].enums.limit: \"ten\" is not of the parameter's type \"integer\""
        );
        assert_eq!(check(narrowed("mode", vec![])).unwrap_err(), "overrides[0].enums.mode: name 1 to 100 values");
        assert_eq!(
            check(ToolOverride { rename: Some("bad name".into()), ..base() }).unwrap_err(),
            "overrides[0].rename: may contain only A-Z, a-z, 0-9, '_', '-' and '.', found ' '"
        );
        assert_eq!(
            validate_prefix("prefixes[0].prefix", "fs_").unwrap_err().message,
            "prefixes[0].prefix: must not end with '_'"
        );
    }

    #[test]
    fn definitions_and_calls_follow_the_override() {
        let o = ToolOverride {
            rename: Some("read_file".into()),
            description: Some("Reads under /srv".into()),
            fixed: vec![FixedParam { name: "path".into(), value: json!("/srv") }],
            hidden: vec!["verbose".into()],
            enums: vec![NarrowedEnum { name: "mode".into(), values: vec![json!("fast")] }],
            ..base()
        };
        let mut tool = json!({ "name": "read", "description": "Reads", "inputSchema": schema() });
        shape_definition(&o, "read_file", &mut tool);
        assert_eq!(tool["name"], "read_file");
        assert_eq!(tool["description"], "Reads under /srv");
        let properties: Vec<&String> = tool["inputSchema"]["properties"].as_object().unwrap().keys().collect();
        assert_eq!(properties, ["limit", "mode"]);
        assert_eq!(tool["inputSchema"]["properties"]["mode"]["enum"], json!(["fast"]));
        assert_eq!(tool["inputSchema"]["required"], json!([]));

        let call = |args: Value| {
            let mut args = args.as_object().unwrap().clone();
            check_arguments(&o, "read_file", &mut args).map(|()| Value::Object(args))
        };
        assert_eq!(call(json!({ "mode": "fast" })).unwrap(), json!({ "mode": "fast", "path": "/srv" }));
        assert_eq!(call(json!({})).unwrap(), json!({ "path": "/srv" }));
        let refused = call(json!({ "path": "/etc" })).unwrap_err();
        assert_eq!(refused.param, "path");
        assert_eq!(
            refused.message,
            "parameter 'path' of tool 'read_file' is fixed by this virtual server; do not send it"
        );
        assert_eq!(
            call(json!({ "verbose": true })).unwrap_err().message,
            "tool 'read_file' has no parameter 'verbose' on this virtual server"
        );
        assert_eq!(
            call(json!({ "mode": "slow" })).unwrap_err().message,
            "parameter 'mode' of tool 'read_file' must be one of [\"fast\"]"
        );
    }
}
