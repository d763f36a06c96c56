//! Policy as code: the YAML model of a tenant's access policy (`gatehouse export` writes it,
//! `gatehouse apply` reads it), and the pure difference between such a file and the live state.
//!
//! The file manages access roles (description, grants, rules, members), virtual servers (name,
//! upstreams, policy mode, conflict strategy, upstream prefixes, per-tool overrides), local groups
//! (members, roles bound to them) and user attributes. Servers and users are only referenced, by slug and by e-mail: servers
//! are registered through the intake workflow and users come from SSO (or the console), so the file
//! neither creates nor deletes them. Rules have no identity in the file: they are matched with the
//! live ones by their content, so a changed rule is a deleted rule and an added one.
//!
//! Nothing here talks to the network: [`plan`] turns (file, live state) into the lines of a readable
//! diff, the mutations that apply it (restrictive changes first) and the problems that stop it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only version of the file format so far.
pub const FORMAT_VERSION: u32 = 1;

fn format_version() -> u32 {
    FORMAT_VERSION
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------------------- model

/// A tenant's policy as a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyFile {
    /// Format version (1).
    #[serde(default = "format_version")]
    pub version: u32,
    /// The tenant the file describes; `apply` refuses a file of another tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Access roles.
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
    /// Virtual servers.
    #[serde(default)]
    pub virtual_servers: Vec<VirtualServerSpec>,
    /// Local groups (`docs/decisions/0012-groups-and-conditions.md`). Left out: the file does not
    /// manage groups and the live ones are left as they are; given (even `[]`): exactly these groups
    /// (a live group not listed is deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<GroupSpec>>,
    /// User attributes by e-mail (`user.attributes` in rule conditions). Left out: not managed; given
    /// (even `{}`): exactly these (a user not listed has none).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "some_unique_keys")]
    pub user_attributes: Option<BTreeMap<String, AttributeMap>>,
}

/// A local group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GroupSpec {
    /// Slug, unique in the tenant (what conditions see in `user.groups`).
    pub slug: String,
    /// Display name.
    pub name: String,
    /// E-mails of the members.
    #[serde(default)]
    pub members: Vec<String>,
    /// Slugs of the access roles every member holds through the group.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// One user's attributes: key → value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AttributeMap(#[serde(deserialize_with = "unique_keys")] pub BTreeMap<String, String>);

/// A YAML mapping would keep the last of two equal keys: a key written twice is refused instead.
fn unique_keys<'de, D: serde::Deserializer<'de>, V: Deserialize<'de>>(d: D) -> Result<BTreeMap<String, V>, D::Error> {
    struct Keys<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Keys<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("`{key}` is listed twice")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Keys(std::marker::PhantomData))
}

fn some_unique_keys<'de, D: serde::Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, V>>, D::Error> {
    unique_keys(d).map(Some)
}

/// An access role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleSpec {
    /// Slug, unique in the tenant.
    pub slug: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Plain grants: server slug → tool names (`"*"`: every tool of the server).
    #[serde(default, deserialize_with = "grants_without_duplicates")]
    pub grants: BTreeMap<String, Vec<String>>,
    /// Rules (the GraphQL `RuleInput` shape).
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// E-mails of the users bound to the role.
    #[serde(default)]
    pub members: Vec<String>,
}

/// A YAML mapping would keep the last of two equal keys: a server named twice is refused instead.
fn grants_without_duplicates<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    struct Grants;
    impl<'de> serde::de::Visitor<'de> for Grants {
        type Value = BTreeMap<String, Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of server slugs to lists of tool names")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut grants = BTreeMap::new();
            while let Some((server, tools)) = map.next_entry::<String, Vec<String>>()? {
                if grants.contains_key(&server) {
                    return Err(serde::de::Error::custom(format!("server `{server}` is listed twice")));
                }
                grants.insert(server, tools);
            }
            Ok(grants)
        }
    }
    d.deserialize_map(Grants)
}

/// Allow or deny. Written `allow`/`deny`; GraphQL's `ALLOW`/`DENY` are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The selected tools may be called (if the parameter constraints hold).
    #[serde(alias = "ALLOW")]
    Allow,
    /// The selected tools are refused, whatever any allow says.
    #[serde(alias = "DENY")]
    Deny,
}

impl Effect {
    /// The file's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }

    /// The GraphQL enum value.
    pub fn graphql(self) -> &'static str {
        match self {
            Effect::Allow => "ALLOW",
            Effect::Deny => "DENY",
        }
    }
}

/// A tool annotation hint, written as MCP names it (`readOnlyHint`); GraphQL's `READ_ONLY` is
/// accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Hint {
    /// `readOnlyHint`.
    #[serde(rename = "readOnlyHint", alias = "READ_ONLY")]
    ReadOnly,
    /// `destructiveHint`.
    #[serde(rename = "destructiveHint", alias = "DESTRUCTIVE")]
    Destructive,
    /// `idempotentHint`.
    #[serde(rename = "idempotentHint", alias = "IDEMPOTENT")]
    Idempotent,
    /// `openWorldHint`.
    #[serde(rename = "openWorldHint", alias = "OPEN_WORLD")]
    OpenWorld,
}

impl Hint {
    /// The file's word (the MCP annotation's name).
    pub fn as_str(self) -> &'static str {
        match self {
            Hint::ReadOnly => "readOnlyHint",
            Hint::Destructive => "destructiveHint",
            Hint::Idempotent => "idempotentHint",
            Hint::OpenWorld => "openWorldHint",
        }
    }

    /// The GraphQL enum value.
    pub fn graphql(self) -> &'static str {
        match self {
            Hint::ReadOnly => "READ_ONLY",
            Hint::Destructive => "DESTRUCTIVE",
            Hint::Idempotent => "IDEMPOTENT",
            Hint::OpenWorld => "OPEN_WORLD",
        }
    }
}

/// Selects tools by one annotation hint's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationSpec {
    /// Which hint.
    pub hint: Hint,
    /// The value it must have.
    pub value: bool,
}

/// A constraint on one parameter of an allowed call (GraphQL `ParamConstraintInput`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParamSpec {
    /// The parameter's name in the tool's input schema.
    pub param: String,
    /// A call without this parameter passes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
    /// The value must equal this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// The value must be one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    /// A string must match this regular expression in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// A number must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// A number must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// A string must have at most this many characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// A string must be an absolute path inside one of these directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefixes: Option<Vec<String>>,
    /// A string must be an http(s) URL whose host is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_hosts: Option<Vec<String>>,
}

impl ParamSpec {
    /// `message(pattern "hello.*", maxLength 40)`.
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.optional {
            parts.push("optional".to_owned());
        }
        if let Some(v) = &self.equals {
            parts.push(format!("equals {v}"));
        }
        if let Some(v) = &self.one_of {
            parts.push(format!("oneOf {}", Value::Array(v.clone())));
        }
        if let Some(v) = &self.pattern {
            parts.push(format!("pattern {v:?}"));
        }
        if let Some(v) = self.min {
            parts.push(format!("min {v}"));
        }
        if let Some(v) = self.max {
            parts.push(format!("max {v}"));
        }
        if let Some(v) = self.max_length {
            parts.push(format!("maxLength {v}"));
        }
        if let Some(v) = &self.path_prefixes {
            parts.push(format!("pathPrefixes {v:?}"));
        }
        if let Some(v) = &self.url_hosts {
            parts.push(format!("urlHosts {v:?}"));
        }
        format!("{}({})", self.param, parts.join(", "))
    }
}

/// A rule of a role, in the shape of GraphQL's `RuleInput`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    /// The server slug it applies to.
    pub server: String,
    /// Allow or deny.
    pub effect: Effect,
    /// Tool name or glob.
    pub tools: String,
    /// Narrows the selection by an annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<AnnotationSpec>,
    /// Parameter constraints (allow rules only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    /// Why the rule exists.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// A CEL condition: the rule applies only when it is true
    /// (`docs/decisions/0012-groups-and-conditions.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

impl RuleSpec {
    /// The rule as the control plane stores it (the description is trimmed), for matching.
    fn normalized(&self) -> RuleSpec {
        RuleSpec { description: self.description.trim().to_owned(), ..self.clone() }
    }

    /// `deny get-env of everything: "why"`: what a diff line says about a rule.
    pub fn summary(&self) -> String {
        let mut s = format!("{} {} of {}", self.effect.as_str(), self.tools, self.server);
        if let Some(a) = self.annotation {
            s.push_str(&format!(" where {}={}", a.hint.as_str(), a.value));
        }
        if !self.params.is_empty() {
            let params: Vec<String> = self.params.iter().map(ParamSpec::summary).collect();
            s.push_str(&format!(" with {}", params.join(", ")));
        }
        if let Some(c) = &self.condition {
            s.push_str(&format!(" when {c}"));
        }
        let description = self.description.trim();
        if !description.is_empty() {
            s.push_str(&format!(": {description:?}"));
        }
        s
    }
}

/// Enforce or monitor. Written `enforce`/`monitor`; GraphQL's `ENFORCE`/`MONITOR` are accepted too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refusals are enforced.
    #[default]
    #[serde(alias = "ENFORCE")]
    Enforce,
    /// Refusals are only audited as `would_deny`.
    #[serde(alias = "MONITOR")]
    Monitor,
}

impl Mode {
    /// The file's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }

    /// The GraphQL enum value.
    pub fn graphql(self) -> &'static str {
        match self {
            Mode::Enforce => "ENFORCE",
            Mode::Monitor => "MONITOR",
        }
    }
}

/// A virtual server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualServerSpec {
    /// Slug, unique in the tenant (the endpoint is `/mcp/{tenant}/{slug}`).
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Upstream server slugs, in order.
    pub upstreams: Vec<String>,
    /// Policy mode (default `enforce`).
    #[serde(default)]
    pub mode: Mode,
    /// How a tool name several upstreams use is resolved (default `auto`;
    /// `docs/decisions/0013-virtual-server-shaping.md`).
    #[serde(default)]
    pub conflict_strategy: Strategy,
    /// Upstream server slug → the prefix of its tools (an upstream not listed: its slug).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "unique_keys")]
    pub prefixes: BTreeMap<String, String>,
    /// Per-tool overrides (GraphQL `ToolOverrideInput`, with `fixed` and `enums` as maps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OverrideSpec>,
}

/// A conflict strategy. Written `auto`/`prefix`/`priority`/`explicit`; GraphQL's `AUTO`… are accepted too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// A name several upstreams use is prefixed for each of them.
    #[default]
    #[serde(alias = "AUTO")]
    Auto,
    /// Every tool is prefixed.
    #[serde(alias = "PREFIX")]
    Prefix,
    /// The first upstream keeps the bare name.
    #[serde(alias = "PRIORITY")]
    Priority,
    /// Conflicts must be resolved by renames.
    #[serde(alias = "EXPLICIT")]
    Explicit,
}

impl Strategy {
    /// The file's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Prefix => "prefix",
            Strategy::Priority => "priority",
            Strategy::Explicit => "explicit",
        }
    }

    /// The GraphQL enum value.
    pub fn graphql(self) -> &'static str {
        match self {
            Strategy::Auto => "AUTO",
            Strategy::Prefix => "PREFIX",
            Strategy::Priority => "PRIORITY",
            Strategy::Explicit => "EXPLICIT",
        }
    }
}

/// How one upstream tool is shown and called through a virtual server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OverrideSpec {
    /// Upstream server slug.
    pub server: String,
    /// The tool's name at the upstream.
    pub tool: String,
    /// The name clients see instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<String>,
    /// The description clients see instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Parameter → the value every call gets (hidden from clients).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "unique_keys")]
    pub fixed: BTreeMap<String, Value>,
    /// Optional parameters hidden from clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<String>,
    /// Parameter → the values clients may send.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "unique_keys")]
    pub enums: BTreeMap<String, Vec<Value>>,
}

impl OverrideSpec {
    /// The override as the control plane stores it (trimmed, empty texts and a rename to the
    /// tool's own name left out, hidden parameters sorted), for comparing.
    fn normalized(&self) -> OverrideSpec {
        let text = |t: &Option<String>| t.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
        let mut hidden = self.hidden.clone();
        hidden.sort();
        hidden.dedup();
        OverrideSpec {
            rename: text(&self.rename).filter(|r| *r != self.tool),
            description: text(&self.description),
            hidden,
            ..self.clone()
        }
    }

    /// Whether it changes what a call may send (fixed, hidden or narrowed parameters).
    fn shapes_arguments(&self) -> bool {
        !(self.fixed.is_empty() && self.hidden.is_empty() && self.enums.is_empty())
    }

    /// `rename say, fixed message="hi", hidden [debug]`: what a diff line says about an override.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.rename {
            parts.push(format!("rename {r}"));
        }
        if let Some(d) = &self.description {
            parts.push(format!("description {d:?}"));
        }
        for (name, value) in &self.fixed {
            parts.push(format!("fixed {name}={value}"));
        }
        if !self.hidden.is_empty() {
            parts.push(format!("hidden [{}]", self.hidden.join(", ")));
        }
        for (name, values) in &self.enums {
            parts.push(format!("enum {name}={}", Value::Array(values.clone())));
        }
        if parts.is_empty() { "nothing".to_owned() } else { parts.join(", ") }
    }
}

// ----------------------------------------------------------------------------------- live state

/// The tenant's policy as the control plane reports it: the `data` of one GraphQL query (see
/// `apply::LIVE_QUERY`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveState {
    /// Access roles.
    pub roles: Vec<LiveRole>,
    /// Virtual servers.
    pub virtual_servers: Vec<LiveVirtualServer>,
    /// Registered servers (referenced, never changed).
    pub servers: Vec<LiveServer>,
    /// Users (referenced, never changed).
    pub users: Vec<LiveUser>,
    /// Local groups.
    #[serde(default)]
    pub groups: Vec<LiveGroup>,
    /// User attributes by lowercased e-mail (users without attributes left out); a second query
    /// fills it (`apply::fetch_live`).
    #[serde(skip)]
    pub user_attributes: BTreeMap<String, BTreeMap<String, String>>,
}

/// One user attribute as stored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveAttribute {
    pub key: String,
    pub value: String,
}

/// A local group as stored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveGroup {
    pub slug: String,
    pub name: String,
    pub members: Vec<String>,
    pub roles: Vec<String>,
}

/// An access role as stored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveRole {
    pub slug: String,
    pub description: String,
    pub grants: Vec<LiveGrant>,
    pub rules: Vec<LiveRule>,
    pub members: Vec<String>,
}

/// One plain grant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LiveGrant {
    pub server: String,
    pub tool: String,
}

/// A stored rule: its id and its content.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveRule {
    pub id: String,
    pub server: String,
    pub effect: Effect,
    pub tools: String,
    pub annotation: Option<AnnotationSpec>,
    pub params: Vec<ParamSpec>,
    pub description: String,
    #[serde(default)]
    pub condition: Option<String>,
}

impl LiveRule {
    /// The rule's content, as a file writes it.
    pub fn spec(&self) -> RuleSpec {
        RuleSpec {
            server: self.server.clone(),
            effect: self.effect,
            tools: self.tools.clone(),
            annotation: self.annotation,
            params: self.params.clone(),
            description: self.description.clone(),
            condition: self.condition.clone(),
        }
    }
}

/// A virtual server as stored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveVirtualServer {
    pub slug: String,
    pub name: String,
    pub upstreams: Vec<String>,
    pub mode: Mode,
    #[serde(default)]
    pub conflict_strategy: Strategy,
    #[serde(default)]
    pub prefixes: Vec<LivePrefix>,
    #[serde(default)]
    pub overrides: Vec<LiveOverride>,
}

/// An upstream prefix set by an admin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LivePrefix {
    pub server: String,
    pub prefix: String,
}

/// A stored per-tool override (GraphQL `ToolOverride`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveOverride {
    pub server: String,
    pub tool: String,
    pub rename: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub fixed: Vec<LiveFixed>,
    #[serde(default)]
    pub hidden: Vec<String>,
    #[serde(default)]
    pub enums: Vec<LiveEnum>,
}

/// A fixed parameter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveFixed {
    pub name: String,
    pub value: Value,
}

/// A narrowed parameter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveEnum {
    pub name: String,
    pub values: Vec<Value>,
}

impl LiveOverride {
    /// The override, as a file writes it.
    pub fn spec(&self) -> OverrideSpec {
        OverrideSpec {
            server: self.server.clone(),
            tool: self.tool.clone(),
            rename: self.rename.clone(),
            description: self.description.clone(),
            fixed: self.fixed.iter().map(|f| (f.name.clone(), f.value.clone())).collect(),
            hidden: self.hidden.clone(),
            enums: self.enums.iter().map(|e| (e.name.clone(), e.values.clone())).collect(),
        }
    }
}

/// A registered server and the names of its tools (as last fetched).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveServer {
    pub slug: String,
    pub tools: Vec<LiveTool>,
}

/// A tool's name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveTool {
    pub name: String,
}

/// A user's e-mail.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveUser {
    pub email: String,
}

// --------------------------------------------------------------------------- reading and writing

/// Parses a policy file. Errors carry the line and column (and the path inside the document).
pub fn parse(text: &str) -> Result<PolicyFile, String> {
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

/// The items of `items` whose key an earlier item already had, in order.
fn repeats<T, K: Ord>(items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut seen = BTreeSet::new();
    items.into_iter().filter(|item| !seen.insert(key(item))).collect()
}

/// Checks what the file says about itself, before anything is read from the control plane:
/// the format version, and that roles, virtual servers, members, granted tools and upstreams are
/// each listed once.
pub fn validate(file: &PolicyFile) -> Vec<String> {
    let mut errors = Vec::new();
    if file.version != FORMAT_VERSION {
        errors.push(format!(
            "version: this gatehouse reads version {FORMAT_VERSION}, the file is version {}",
            file.version
        ));
    }
    let mut roles = BTreeSet::new();
    for (i, role) in file.roles.iter().enumerate() {
        let item = format!("roles[{i}] ({})", role.slug);
        if !roles.insert(role.slug.as_str()) {
            errors.push(format!("{item}: role '{}' is listed twice", role.slug));
        }
        for (server, tools) in &role.grants {
            for tool in repeats(tools, |t| t.as_str()) {
                errors.push(format!("{item}: grants.{server}: tool '{tool}' is listed twice"));
            }
        }
        for member in repeats(&role.members, |m| normalize_email(m)) {
            errors.push(format!("{item}: members: '{member}' is listed twice"));
        }
    }
    let mut vss = BTreeSet::new();
    for (i, vs) in file.virtual_servers.iter().enumerate() {
        let item = format!("virtualServers[{i}] ({})", vs.slug);
        if !vss.insert(vs.slug.as_str()) {
            errors.push(format!("{item}: virtual server '{}' is listed twice", vs.slug));
        }
        if vs.upstreams.is_empty() {
            errors.push(format!("{item}: upstreams: name at least one upstream server"));
        }
        for u in repeats(&vs.upstreams, |u| u.as_str()) {
            errors.push(format!("{item}: upstreams: server '{u}' is listed twice"));
        }
        for (j, o) in repeats(vs.overrides.iter().enumerate(), |(_, o)| (o.server.as_str(), o.tool.as_str())) {
            errors.push(format!("{item}: overrides[{j}]: tool '{}' of server '{}' is listed twice", o.tool, o.server));
        }
    }
    let mut groups = BTreeSet::new();
    for (i, g) in file.groups.iter().flatten().enumerate() {
        let item = format!("groups[{i}] ({})", g.slug);
        if !groups.insert(g.slug.as_str()) {
            errors.push(format!("{item}: group '{}' is listed twice", g.slug));
        }
        for member in repeats(&g.members, |m| normalize_email(m)) {
            errors.push(format!("{item}: members: '{member}' is listed twice"));
        }
        for role in repeats(&g.roles, |r| r.as_str()) {
            errors.push(format!("{item}: roles: '{role}' is listed twice"));
        }
    }
    for email in repeats(file.user_attributes.iter().flat_map(BTreeMap::keys), |e| normalize_email(e)) {
        errors.push(format!("userAttributes: '{email}' is listed twice"));
    }
    errors
}

/// The live state as a file: what `gatehouse export` prints.
pub fn export(live: &LiveState, tenant: &str) -> PolicyFile {
    PolicyFile {
        version: FORMAT_VERSION,
        tenant: Some(tenant.to_owned()),
        roles: live
            .roles
            .iter()
            .map(|r| {
                let mut grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for g in &r.grants {
                    grants.entry(g.server.clone()).or_default().push(g.tool.clone());
                }
                RoleSpec {
                    slug: r.slug.clone(),
                    description: r.description.clone(),
                    grants,
                    rules: r.rules.iter().map(LiveRule::spec).collect(),
                    members: r.members.clone(),
                }
            })
            .collect(),
        virtual_servers: live
            .virtual_servers
            .iter()
            .map(|v| VirtualServerSpec {
                slug: v.slug.clone(),
                name: v.name.clone(),
                upstreams: v.upstreams.clone(),
                mode: v.mode,
                conflict_strategy: v.conflict_strategy,
                prefixes: v.prefixes.iter().map(|p| (p.server.clone(), p.prefix.clone())).collect(),
                overrides: v.overrides.iter().map(LiveOverride::spec).collect(),
            })
            .collect(),
        groups: Some(
            live.groups
                .iter()
                .map(|g| GroupSpec {
                    slug: g.slug.clone(),
                    name: g.name.clone(),
                    members: g.members.clone(),
                    roles: g.roles.clone(),
                })
                .collect(),
        ),
        user_attributes: Some(
            live.user_attributes
                .iter()
                .filter(|(_, a)| !a.is_empty())
                .map(|(email, a)| (email.clone(), AttributeMap(a.clone())))
                .collect(),
        ),
    }
}

/// The file as YAML, after a comment saying what it is.
pub fn to_yaml(file: &PolicyFile, source: &str) -> String {
    let body = serde_norway::to_string(file).expect("a policy file serialises");
    format!(
        "# Gatehouse access policy{tenant}, exported from {source}.\n\
         # Apply it with `gatehouse apply -f <this file> --url … --tenant …` (add --dry-run to see the diff).\n\
         # Servers are referenced by slug (they are registered through the intake workflow) and users by\n\
         # e-mail (they come from SSO): this file neither creates nor deletes them.\n{body}",
        tenant = file.tenant.as_deref().map(|t| format!(" of tenant {t}")).unwrap_or_default(),
    )
}

fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

// ------------------------------------------------------------------------------------------ plan

/// One mutation of the control plane's GraphQL API.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `createRole`.
    CreateRole { role: String, description: String },
    /// `setRoleGrants` (the whole set).
    SetGrants { role: String, grants: Vec<LiveGrant> },
    /// `addRule`.
    AddRule { role: String, rule: RuleSpec },
    /// `deleteRule`.
    DeleteRule { id: String },
    /// `bindRole`.
    BindRole { role: String, email: String },
    /// `unbindRole`.
    UnbindRole { role: String, email: String },
    /// `createVirtualServer`.
    CreateVirtualServer { slug: String, name: String, upstreams: Vec<String> },
    /// `setPolicyMode`.
    SetPolicyMode { virtual_server: String, mode: Mode },
    /// `setConflictStrategy` (the strategy and every prefix, upstream slug → prefix).
    SetConflictStrategy { virtual_server: String, strategy: Strategy, prefixes: BTreeMap<String, String> },
    /// `setToolOverride` (adds or replaces).
    SetToolOverride { virtual_server: String, over: OverrideSpec },
    /// `deleteToolOverride`.
    DeleteToolOverride { virtual_server: String, server: String, tool: String },
    /// `createGroup`.
    CreateGroup { group: String, name: String },
    /// `deleteGroup`.
    DeleteGroup { group: String },
    /// `addGroupMember`.
    AddGroupMember { group: String, email: String },
    /// `removeGroupMember`.
    RemoveGroupMember { group: String, email: String },
    /// `bindGroupRole`.
    BindGroupRole { group: String, role: String },
    /// `unbindGroupRole`.
    UnbindGroupRole { group: String, role: String },
    /// `setUserAttributes` (the whole set of one user).
    SetUserAttributes { email: String, attributes: BTreeMap<String, String> },
}

/// A mutation, with the item of the file it belongs to (named when the control plane refuses it).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// E.g. `role ops: rule (allow echo of everything)`.
    pub item: String,
    /// What to call.
    pub op: Op,
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The file asks for something that cannot be done: nothing is applied.
    Error,
    /// Something the file does not manage, or cannot yet: reported, applied around.
    Warning,
}

/// Something the plan cannot do, naming the item.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub severity: Severity,
    /// E.g. `role ops`, `virtual server dev`.
    pub item: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{word}: {}: {}", self.item, self.message)
    }
}

/// What applying a file would change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The readable diff, one change a line (`+` added, `-` removed, `~` changed).
    pub lines: Vec<String>,
    /// The mutations, in the order they run: new roles and groups, then every change that removes
    /// access (deny rules added, allow rules deleted, grants narrowed, members unbound, enforce, tool
    /// overrides set, groups deleted, group members removed and group roles unbound), then every
    /// change that adds access (new virtual servers, grants widened, allow rules added, members
    /// bound, deny rules deleted, monitor, overrides that shaped arguments deleted, group members
    /// added and group roles bound, user attributes). A failure half-way leaves the tenant closer
    /// to closed.
    pub steps: Vec<Step>,
    /// Errors (nothing is applied) and warnings.
    pub problems: Vec<Problem>,
}

impl Plan {
    /// True when the file and the live state agree.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.steps.is_empty()
    }

    /// The errors (what stops `apply`).
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.severity == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.severity == Severity::Warning)
    }
}

#[derive(Default)]
struct Planner {
    lines: Vec<String>,
    create: Vec<Step>,
    restrict: Vec<Step>,
    permit: Vec<Step>,
    problems: Vec<Problem>,
}

impl Planner {
    fn error(&mut self, item: &str, message: impl Into<String>) {
        self.problems.push(Problem { severity: Severity::Error, item: item.to_owned(), message: message.into() });
    }

    fn warning(&mut self, item: &str, message: impl Into<String>) {
        self.problems.push(Problem { severity: Severity::Warning, item: item.to_owned(), message: message.into() });
    }

    /// Plans taking away what `have` holds and `want` does not (`- {item}: {what} {x}`, restricting).
    fn removals<T: Ord + std::fmt::Display>(
        &mut self,
        item: &str,
        what: &str,
        have: &BTreeSet<T>,
        want: &BTreeSet<T>,
        op: impl Fn(String) -> Op,
    ) {
        for x in have.difference(want) {
            self.lines.push(format!("- {item}: {what} {x}"));
            self.restrict.push(Step { item: format!("{item}: {what} {x}"), op: op(x.to_string()) });
        }
    }

    /// Plans adding what `want` holds and `have` does not (`+ {item}: {what} {x}`, permitting).
    fn additions<T: Ord + std::fmt::Display>(
        &mut self,
        item: &str,
        what: &str,
        have: &BTreeSet<T>,
        want: &BTreeSet<T>,
        op: impl Fn(String) -> Op,
    ) {
        for x in want.difference(have) {
            self.lines.push(format!("+ {item}: {what} {x}"));
            self.permit.push(Step { item: format!("{item}: {what} {x}"), op: op(x.to_string()) });
        }
    }
}

const NO_SERVER: &str = "servers are registered through the intake workflow, not by this file";
const NO_USER: &str = "users come from SSO (or the console), not from this file";

/// The difference between `file` and the live state: the diff, the mutations that apply it, and what
/// cannot be applied. Pure; `apply` runs the steps.
pub fn plan(file: &PolicyFile, live: &LiveState) -> Plan {
    let mut p = Planner::default();
    let servers: HashMap<&str, BTreeSet<&str>> =
        live.servers.iter().map(|s| (s.slug.as_str(), s.tools.iter().map(|t| t.name.as_str()).collect())).collect();
    let users: BTreeSet<String> = live.users.iter().map(|u| normalize_email(&u.email)).collect();
    let live_roles: HashMap<&str, &LiveRole> = live.roles.iter().map(|r| (r.slug.as_str(), r)).collect();

    for role in &file.roles {
        plan_role(&mut p, role, live_roles.get(role.slug.as_str()).copied(), &servers, &users);
    }
    let in_file: BTreeSet<&str> = file.roles.iter().map(|r| r.slug.as_str()).collect();
    for r in live.roles.iter().filter(|r| !in_file.contains(r.slug.as_str())) {
        p.warning(
            &format!("role {}", r.slug),
            "exists but is not in the file; the API cannot delete roles yet, so it is left as it is \
             (add it to the file to manage it)",
        );
    }

    let live_vss: HashMap<&str, &LiveVirtualServer> =
        live.virtual_servers.iter().map(|v| (v.slug.as_str(), v)).collect();
    for vs in &file.virtual_servers {
        plan_virtual_server(&mut p, vs, live_vss.get(vs.slug.as_str()).copied(), &servers);
    }
    let in_file: BTreeSet<&str> = file.virtual_servers.iter().map(|v| v.slug.as_str()).collect();
    for v in live.virtual_servers.iter().filter(|v| !in_file.contains(v.slug.as_str())) {
        p.warning(
            &format!("virtual server {}", v.slug),
            "exists but is not in the file; the API cannot delete virtual servers yet, so it is left as it is \
             (add it to the file to manage it)",
        );
    }

    match &file.groups {
        Some(groups) => plan_groups(&mut p, file, groups, live, &users),
        None if !live.groups.is_empty() => p.warning(
            "groups",
            "the file has no `groups:` section, so the live groups are left as they are (add `groups:` to \
             manage them)",
        ),
        None => {}
    }
    match &file.user_attributes {
        Some(attributes) => plan_attributes(&mut p, attributes, live, &users),
        None if !live.user_attributes.is_empty() => p.warning(
            "userAttributes",
            "the file has no `userAttributes:` section, so the live attributes are left as they are (add \
             `userAttributes:` to manage them)",
        ),
        None => {}
    }

    let mut steps = p.create;
    steps.extend(p.restrict);
    steps.extend(p.permit);
    Plan { lines: p.lines, steps, problems: p.problems }
}

fn plan_role(
    p: &mut Planner,
    role: &RoleSpec,
    live: Option<&LiveRole>,
    servers: &HashMap<&str, BTreeSet<&str>>,
    users: &BTreeSet<String>,
) {
    let slug = role.slug.as_str();
    let item = format!("role {slug}");

    // References to what the file does not manage.
    for (server, tools) in &role.grants {
        match servers.get(server.as_str()) {
            None => p.error(&item, format!("grants: no server '{server}' in this tenant ({NO_SERVER})")),
            Some(known) => {
                for tool in tools.iter().filter(|t| *t != "*" && !known.contains(t.as_str())) {
                    p.error(
                        &item,
                        format!(
                            "grants.{server}: server '{server}' has no tool '{tool}' \
                             (as last fetched: refresh its tools if it was added recently)"
                        ),
                    );
                }
            }
        }
    }
    for (i, rule) in role.rules.iter().enumerate() {
        if !servers.contains_key(rule.server.as_str()) {
            p.error(&item, format!("rules[{i}].server: no server '{}' in this tenant ({NO_SERVER})", rule.server));
        }
    }
    for m in &role.members {
        if !users.contains(&normalize_email(m)) {
            p.error(&item, format!("members: no user '{}' in this tenant ({NO_USER})", m.trim()));
        }
    }

    // The role itself.
    let sign = if live.is_some() { '~' } else { '+' };
    match live {
        None => {
            let description = role.description.trim();
            p.lines.push(if description.is_empty() {
                format!("+ role {slug}")
            } else {
                format!("+ role {slug} ({description:?})")
            });
            p.create.push(Step {
                item: item.clone(),
                op: Op::CreateRole { role: slug.to_owned(), description: description.to_owned() },
            });
        }
        Some(l) if l.description.trim() != role.description.trim() => p.error(
            &item,
            format!(
                "description: the API cannot change a role's description yet (live {:?}, file {:?}); \
                 keep the live description in the file",
                l.description.trim(),
                role.description.trim()
            ),
        ),
        Some(_) => {}
    }

    // Grants: narrowed before, widened after the rest.
    let want: BTreeSet<LiveGrant> = role
        .grants
        .iter()
        .flat_map(|(s, tools)| tools.iter().map(move |t| LiveGrant { server: s.clone(), tool: t.clone() }))
        .collect();
    let have: BTreeSet<LiveGrant> = live.map(|l| l.grants.iter().cloned().collect()).unwrap_or_default();
    if want != have {
        let servers_touched: BTreeSet<&str> = want.symmetric_difference(&have).map(|g| g.server.as_str()).collect();
        for server in servers_touched {
            let mut words = Vec::new();
            for g in want.difference(&have).filter(|g| g.server == server) {
                words.push(format!("+{}", g.tool));
            }
            for g in have.difference(&want).filter(|g| g.server == server) {
                words.push(format!("-{}", g.tool));
            }
            p.lines.push(format!("{sign} role {slug}: grants {server}: {}", words.join(" ")));
        }
        let item = format!("{item}: grants");
        if have.difference(&want).next().is_some() {
            let kept: Vec<LiveGrant> = have.intersection(&want).cloned().collect();
            p.restrict.push(Step { item: item.clone(), op: Op::SetGrants { role: slug.to_owned(), grants: kept } });
        }
        if want.difference(&have).next().is_some() {
            p.permit
                .push(Step { item, op: Op::SetGrants { role: slug.to_owned(), grants: want.into_iter().collect() } });
        }
    }

    // Rules: matched by content (as a multiset), never by id.
    let live_rules: Vec<&LiveRule> = live.map(|l| l.rules.iter().collect()).unwrap_or_default();
    let live_specs: Vec<RuleSpec> = live_rules.iter().map(|r| r.spec().normalized()).collect();
    let mut used = vec![false; live_rules.len()];
    let mut added = Vec::new();
    for rule in &role.rules {
        let rule = rule.normalized();
        match (0..live_specs.len()).find(|&j| !used[j] && live_specs[j] == rule) {
            Some(j) => used[j] = true,
            None => added.push(rule),
        }
    }
    for (j, r) in live_rules.iter().enumerate().filter(|(j, _)| !used[*j]) {
        let summary = live_specs[j].summary();
        p.lines.push(format!("- role {slug}: rule {} ({summary})", r.id));
        let step = Step { item: format!("{item}: rule {} ({summary})", r.id), op: Op::DeleteRule { id: r.id.clone() } };
        match r.effect {
            Effect::Allow => p.restrict.push(step),
            Effect::Deny => p.permit.push(step),
        }
    }
    for rule in added {
        let summary = rule.summary();
        p.lines.push(format!("+ role {slug}: rule ({summary})"));
        let effect = rule.effect;
        let step = Step { item: format!("{item}: rule ({summary})"), op: Op::AddRule { role: slug.to_owned(), rule } };
        match effect {
            Effect::Deny => p.restrict.push(step),
            Effect::Allow => p.permit.push(step),
        }
    }

    // Members (only e-mails the tenant knows; the others are errors above).
    let want: BTreeSet<String> =
        role.members.iter().map(|m| normalize_email(m)).filter(|m| users.contains(m)).collect();
    let have: BTreeSet<String> =
        live.map(|l| l.members.iter().map(|m| normalize_email(m)).collect()).unwrap_or_default();
    p.removals(&item, "member", &have, &want, |email| Op::UnbindRole { role: slug.to_owned(), email });
    p.additions(&item, "member", &have, &want, |email| Op::BindRole { role: slug.to_owned(), email });
}

fn plan_virtual_server(
    p: &mut Planner,
    vs: &VirtualServerSpec,
    live: Option<&LiveVirtualServer>,
    servers: &HashMap<&str, BTreeSet<&str>>,
) {
    let slug = vs.slug.as_str();
    let item = format!("virtual server {slug}");
    for u in vs.upstreams.iter().filter(|u| !servers.contains_key(u.as_str())) {
        p.error(&item, format!("upstreams: no server '{u}' in this tenant ({NO_SERVER})"));
    }
    match live {
        None => {
            p.lines.push(format!(
                "+ virtual server {slug} ({:?} over {}, mode {})",
                vs.name.trim(),
                vs.upstreams.join(", "),
                vs.mode.as_str()
            ));
            p.permit.push(Step {
                item: item.clone(),
                op: Op::CreateVirtualServer {
                    slug: slug.to_owned(),
                    name: vs.name.trim().to_owned(),
                    upstreams: vs.upstreams.clone(),
                },
            });
            plan_shaping(p, vs, None, servers);
            if vs.mode != Mode::Enforce {
                p.permit.push(Step { item, op: Op::SetPolicyMode { virtual_server: slug.to_owned(), mode: vs.mode } });
            }
        }
        Some(l) => {
            if l.name.trim() != vs.name.trim() {
                p.error(
                    &item,
                    format!(
                        "name: the API cannot rename a virtual server yet (live {:?}, file {:?}); \
                         keep the live name in the file",
                        l.name.trim(),
                        vs.name.trim()
                    ),
                );
            }
            if l.upstreams != vs.upstreams {
                p.error(
                    &item,
                    format!(
                        "upstreams: the API cannot change a virtual server's upstreams yet (live [{}], file [{}]); \
                         create a new virtual server with the new upstreams instead",
                        l.upstreams.join(", "),
                        vs.upstreams.join(", ")
                    ),
                );
            }
            if l.mode != vs.mode {
                p.lines.push(format!("~ virtual server {slug}: mode {} → {}", l.mode.as_str(), vs.mode.as_str()));
                let step = Step { item, op: Op::SetPolicyMode { virtual_server: slug.to_owned(), mode: vs.mode } };
                match vs.mode {
                    Mode::Enforce => p.restrict.push(step),
                    Mode::Monitor => p.permit.push(step),
                }
            }
            plan_shaping(p, vs, Some(l), servers);
        }
    }
}

/// The conflict strategy, prefixes and overrides of a virtual server. Overrides are keyed by
/// (server, tool) and compared after the control plane's normalisation. Setting an override narrows
/// what a call may send (or only renames), so sets run with the restrictive changes; deleting an
/// override that fixed, hid or narrowed parameters widens it and runs with the permissive ones. The
/// strategy goes before the overrides, or after them when it becomes `explicit` (which needs their
/// renames). A new virtual server gets its shaping right after it is created.
fn plan_shaping(
    p: &mut Planner,
    vs: &VirtualServerSpec,
    live: Option<&LiveVirtualServer>,
    servers: &HashMap<&str, BTreeSet<&str>>,
) {
    let slug = vs.slug.as_str();
    let item = format!("virtual server {slug}");
    let sign = if live.is_some() { '~' } else { '+' };

    // References.
    for server in vs.prefixes.keys().filter(|s| !vs.upstreams.contains(s)) {
        p.error(&item, format!("prefixes.{server}: '{server}' is not an upstream of this virtual server"));
    }
    for (j, o) in vs.overrides.iter().enumerate() {
        let n = o.normalized();
        if n.rename.is_none() && n.description.is_none() && !n.shapes_arguments() {
            p.error(
                &item,
                format!(
                    "overrides[{j}]: set at least one of rename, description, fixed, hidden or enums (or leave the \
                     override out)"
                ),
            );
        }
        if !vs.upstreams.contains(&o.server) {
            p.error(&item, format!("overrides[{j}].server: '{}' is not an upstream of this virtual server", o.server));
        } else if let Some(tools) = servers.get(o.server.as_str())
            && !tools.contains(o.tool.as_str())
        {
            p.error(
                &item,
                format!(
                    "overrides[{j}].tool: server '{}' has no tool '{}' (as last fetched: refresh its tools if it \
                     was added recently)",
                    o.server, o.tool
                ),
            );
        }
    }

    // Strategy and prefixes (a prefix equal to the upstream's slug is its default: not stored).
    let want_prefixes: BTreeMap<String, String> =
        vs.prefixes.iter().map(|(s, x)| (s.clone(), x.trim().to_owned())).filter(|(s, x)| s != x).collect();
    let have_prefixes: BTreeMap<String, String> =
        live.map(|l| l.prefixes.iter().map(|x| (x.server.clone(), x.prefix.clone())).collect()).unwrap_or_default();
    let have_strategy = live.map(|l| l.conflict_strategy).unwrap_or_default();
    let mut strategy_step = None;
    if want_prefixes != have_prefixes || vs.conflict_strategy != have_strategy {
        if vs.conflict_strategy != have_strategy {
            p.lines.push(if live.is_some() {
                format!("~ {item}: conflict strategy {} → {}", have_strategy.as_str(), vs.conflict_strategy.as_str())
            } else {
                format!("+ {item}: conflict strategy {}", vs.conflict_strategy.as_str())
            });
        }
        let servers_touched: BTreeSet<&String> = want_prefixes.keys().chain(have_prefixes.keys()).collect();
        for server in servers_touched {
            let (old, new) = (have_prefixes.get(server), want_prefixes.get(server));
            if old != new {
                let old = old.unwrap_or(server);
                let new = new.unwrap_or(server);
                p.lines.push(format!("{sign} {item}: prefix of {server}: {old} → {new}"));
            }
        }
        strategy_step = Some(Step {
            item: format!("{item}: conflict strategy"),
            op: Op::SetConflictStrategy {
                virtual_server: slug.to_owned(),
                strategy: vs.conflict_strategy,
                prefixes: want_prefixes,
            },
        });
    }
    // A new virtual server: everything after its creation, with the permissive changes.
    let before = if live.is_some() { &mut p.restrict } else { &mut p.permit };
    let strategy_last = vs.conflict_strategy == Strategy::Explicit;
    if !strategy_last && let Some(step) = strategy_step.take() {
        before.push(step);
    }

    // Overrides.
    let have: BTreeMap<(String, String), OverrideSpec> = live
        .map(|l| l.overrides.iter().map(|o| ((o.server.clone(), o.tool.clone()), o.spec().normalized())).collect())
        .unwrap_or_default();
    let want: BTreeMap<(String, String), OverrideSpec> =
        vs.overrides.iter().map(|o| ((o.server.clone(), o.tool.clone()), o.normalized())).collect();
    let mut sets = Vec::new();
    let mut widening_deletes = Vec::new();
    for ((server, tool), old) in &have {
        if want.contains_key(&(server.clone(), tool.clone())) {
            continue;
        }
        p.lines.push(format!("- {item}: override {server}/{tool} ({})", old.summary()));
        let step = Step {
            item: format!("{item}: override {server}/{tool}"),
            op: Op::DeleteToolOverride { virtual_server: slug.to_owned(), server: server.clone(), tool: tool.clone() },
        };
        // A rename or description only frees a name: it goes before the sets that may take it.
        if old.shapes_arguments() { widening_deletes.push(step) } else { before.push(step) }
    }
    for ((server, tool), new) in &want {
        match have.get(&(server.clone(), tool.clone())) {
            Some(old) if old == new => continue,
            Some(old) => {
                p.lines.push(format!("~ {item}: override {server}/{tool}: {} → {}", old.summary(), new.summary()))
            }
            None => p.lines.push(format!("+ {item}: override {server}/{tool} ({})", new.summary())),
        }
        sets.push(Step {
            item: format!("{item}: override {server}/{tool}"),
            op: Op::SetToolOverride { virtual_server: slug.to_owned(), over: new.clone() },
        });
    }
    before.extend(sets);
    if let Some(step) = strategy_step {
        before.push(step);
    }
    p.permit.extend(widening_deletes);
}

/// Groups, when the file has a `groups:` section: exactly those. New groups are created empty with
/// the new roles; removed members, unbound roles and deleted groups narrow access and run first;
/// added members and bound roles run with the permissive changes.
fn plan_groups(p: &mut Planner, file: &PolicyFile, groups: &[GroupSpec], live: &LiveState, users: &BTreeSet<String>) {
    let roles: BTreeSet<&str> =
        live.roles.iter().map(|r| r.slug.as_str()).chain(file.roles.iter().map(|r| r.slug.as_str())).collect();
    let live_groups: HashMap<&str, &LiveGroup> = live.groups.iter().map(|g| (g.slug.as_str(), g)).collect();
    for g in groups {
        let slug = g.slug.as_str();
        let item = format!("group {slug}");
        for m in g.members.iter().filter(|m| !users.contains(&normalize_email(m))) {
            p.error(&item, format!("members: no user '{}' in this tenant ({NO_USER})", m.trim()));
        }
        for r in g.roles.iter().filter(|r| !roles.contains(r.as_str())) {
            p.error(&item, format!("roles: no role '{r}' in this tenant or in the file"));
        }
        let l = live_groups.get(slug).copied();
        match l {
            None => {
                p.lines.push(format!("+ {item} ({:?})", g.name.trim()));
                p.create.push(Step {
                    item: item.clone(),
                    op: Op::CreateGroup { group: slug.to_owned(), name: g.name.trim().to_owned() },
                });
            }
            Some(l) if l.name.trim() != g.name.trim() => p.error(
                &item,
                format!(
                    "name: the API cannot rename a group yet (live {:?}, file {:?}); keep the live name in the file",
                    l.name.trim(),
                    g.name.trim()
                ),
            ),
            Some(_) => {}
        }
        // Roles bound to the group.
        let want: BTreeSet<&str> = g.roles.iter().map(String::as_str).filter(|r| roles.contains(r)).collect();
        let have: BTreeSet<&str> = l.map(|l| l.roles.iter().map(String::as_str).collect()).unwrap_or_default();
        p.removals(&item, "role", &have, &want, |role| Op::UnbindGroupRole { group: slug.to_owned(), role });
        // Members.
        let want_m: BTreeSet<String> =
            g.members.iter().map(|m| normalize_email(m)).filter(|m| users.contains(m)).collect();
        let have_m: BTreeSet<String> =
            l.map(|l| l.members.iter().map(|m| normalize_email(m)).collect()).unwrap_or_default();
        p.removals(&item, "member", &have_m, &want_m, |email| Op::RemoveGroupMember { group: slug.to_owned(), email });
        p.additions(&item, "role", &have, &want, |role| Op::BindGroupRole { group: slug.to_owned(), role });
        p.additions(&item, "member", &have_m, &want_m, |email| Op::AddGroupMember { group: slug.to_owned(), email });
    }
    let in_file: BTreeSet<&str> = groups.iter().map(|g| g.slug.as_str()).collect();
    for g in live.groups.iter().filter(|g| !in_file.contains(g.slug.as_str())) {
        let item = format!("group {}", g.slug);
        p.lines.push(format!("- {item} ({:?})", g.name.trim()));
        p.restrict.push(Step { item, op: Op::DeleteGroup { group: g.slug.clone() } });
    }
}

/// User attributes, when the file has a `userAttributes:` section: each user's set replaces the
/// live one, and a user not listed loses theirs. Conditions may read an attribute to allow or to
/// deny, so these run last, after every other change.
fn plan_attributes(
    p: &mut Planner,
    attributes: &BTreeMap<String, AttributeMap>,
    live: &LiveState,
    users: &BTreeSet<String>,
) {
    let mut want: BTreeMap<String, &BTreeMap<String, String>> = BTreeMap::new();
    for (email, attrs) in attributes {
        let email = normalize_email(email);
        if !users.contains(&email) {
            p.error(&format!("user {email}"), format!("userAttributes: no user '{email}' in this tenant ({NO_USER})"));
            continue;
        }
        want.insert(email, &attrs.0);
    }
    let empty = BTreeMap::new();
    let emails: BTreeSet<&String> = want.keys().chain(live.user_attributes.keys()).collect();
    for email in emails {
        let new = want.get(email).copied().unwrap_or(&empty);
        let old = live.user_attributes.get(email).unwrap_or(&empty);
        if new == old {
            continue;
        }
        let item = format!("user {email}");
        let keys: BTreeSet<&String> = new.keys().chain(old.keys()).collect();
        for key in keys {
            match (old.get(key), new.get(key)) {
                (None, Some(v)) => p.lines.push(format!("+ {item}: attribute {key} = {v:?}")),
                (Some(v), None) => p.lines.push(format!("- {item}: attribute {key} = {v:?}")),
                (Some(a), Some(b)) if a != b => p.lines.push(format!("~ {item}: attribute {key}: {a:?} → {b:?}")),
                _ => {}
            }
        }
        p.permit.push(Step {
            item: format!("{item}: attributes"),
            op: Op::SetUserAttributes { email: email.clone(), attributes: new.clone() },
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn live() -> LiveState {
        serde_json::from_value(json!({
            "roles": [{
                "slug": "ops",
                "description": "Operators",
                "grants": [{ "server": "everything", "tool": "get-sum" }, { "server": "files", "tool": "*" }],
                "rules": [
                    { "id": "r-deny", "server": "everything", "effect": "DENY", "tools": "get-env", "annotation": null,
                      "params": [], "description": "it shows the environment" },
                    { "id": "r-echo", "server": "everything", "effect": "ALLOW", "tools": "echo", "annotation": null,
                      "params": [{ "param": "message", "optional": false, "equals": null, "oneOf": null,
                                   "pattern": "hello.*", "min": null, "max": null, "maxLength": 40,
                                   "pathPrefixes": null, "urlHosts": null }],
                      "description": "" },
                    { "id": "r-ro", "server": "everything", "effect": "ALLOW", "tools": "get-*",
                      "annotation": { "hint": "READ_ONLY", "value": true }, "params": [], "description": "" }
                ],
                "members": ["alice@acme.test"]
            }],
            "virtualServers": [{ "slug": "dev", "name": "Dev", "upstreams": ["everything"], "mode": "ENFORCE",
                                 "conflictStrategy": "PREFIX", "prefixes": [{ "server": "everything", "prefix": "ev" }],
                                 "overrides": [{ "server": "everything", "tool": "echo", "rename": "say",
                                                 "description": null, "fixed": [{ "name": "message", "value": "hi" }],
                                                 "hidden": [], "enums": [] }] }],
            "groups": [{ "slug": "oncall", "name": "On call", "members": ["alice@acme.test"], "roles": ["ops"] }],
            "servers": [
                { "slug": "everything", "tools": [{ "name": "echo" }, { "name": "get-sum" }, { "name": "get-env" }] },
                { "slug": "files", "tools": [{ "name": "read" }] }
            ],
            "users": [{ "email": "alice@acme.test" }, { "email": "bob@acme.test" }]
        }))
        .map(|mut l: LiveState| {
            l.user_attributes.insert("alice@acme.test".into(), BTreeMap::from([("department".into(), "eng".into())]));
            l
        })
        .unwrap()
    }

    fn exported() -> PolicyFile {
        export(&live(), "acme")
    }

    fn kinds(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| match &s.op {
                Op::CreateRole { role, .. } => format!("createRole {role}"),
                Op::SetGrants { role, grants } => format!(
                    "setRoleGrants {role} [{}]",
                    grants.iter().map(|g| format!("{}/{}", g.server, g.tool)).collect::<Vec<_>>().join(" ")
                ),
                Op::AddRule { role, rule } => format!("addRule {role} {} {}", rule.effect.as_str(), rule.tools),
                Op::DeleteRule { id } => format!("deleteRule {id}"),
                Op::BindRole { role, email } => format!("bindRole {role} {email}"),
                Op::UnbindRole { role, email } => format!("unbindRole {role} {email}"),
                Op::CreateVirtualServer { slug, .. } => format!("createVirtualServer {slug}"),
                Op::SetPolicyMode { virtual_server, mode } => {
                    format!("setPolicyMode {virtual_server} {}", mode.as_str())
                }
                Op::SetConflictStrategy { virtual_server, strategy, prefixes } => format!(
                    "setConflictStrategy {virtual_server} {} [{}]",
                    strategy.as_str(),
                    prefixes.iter().map(|(s, x)| format!("{s}={x}")).collect::<Vec<_>>().join(" ")
                ),
                Op::SetToolOverride { virtual_server, over } => {
                    format!("setToolOverride {virtual_server} {}/{}", over.server, over.tool)
                }
                Op::DeleteToolOverride { virtual_server, server, tool } => {
                    format!("deleteToolOverride {virtual_server} {server}/{tool}")
                }
                Op::CreateGroup { group, .. } => format!("createGroup {group}"),
                Op::DeleteGroup { group } => format!("deleteGroup {group}"),
                Op::AddGroupMember { group, email } => format!("addGroupMember {group} {email}"),
                Op::RemoveGroupMember { group, email } => format!("removeGroupMember {group} {email}"),
                Op::BindGroupRole { group, role } => format!("bindGroupRole {group} {role}"),
                Op::UnbindGroupRole { group, role } => format!("unbindGroupRole {group} {role}"),
                Op::SetUserAttributes { email, attributes } => format!(
                    "setUserAttributes {email} [{}]",
                    attributes.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
                ),
            })
            .collect()
    }

    #[test]
    fn an_export_applied_to_its_own_state_changes_nothing_even_through_yaml() {
        let yaml = to_yaml(&exported(), "http://control");
        let file = parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(file, exported(), "YAML round trip:\n{yaml}");
        assert!(validate(&file).is_empty());
        let plan = plan(&file, &live());
        assert!(plan.is_empty(), "{plan:?}");
        assert!(plan.problems.is_empty(), "{plan:?}");
    }

    #[test]
    fn the_export_is_readable_yaml_with_quoted_stars_and_file_words() {
        let yaml = to_yaml(&exported(), "http://control");
        assert!(yaml.starts_with("# Gatehouse access policy of tenant acme, exported from http://control."), "{yaml}");
        assert!(yaml.contains("files:\n    - '*'"), "a bare * would be a YAML alias:\n{yaml}");
        assert!(yaml.contains("effect: deny"), "{yaml}");
        assert!(yaml.contains("hint: readOnlyHint"), "{yaml}");
        assert!(yaml.contains("maxLength: 40"), "{yaml}");
        assert!(yaml.contains("mode: enforce"), "{yaml}");
        assert!(yaml.contains("virtualServers:"), "{yaml}");
        assert!(!yaml.contains("optional"), "defaults are left out: {yaml}");
        assert!(yaml.contains("conflictStrategy: prefix\n  prefixes:\n    everything: ev"), "{yaml}");
        assert!(yaml.contains("rename: say\n    fixed:\n      message: hi"), "{yaml}");
        assert!(yaml.contains("groups:\n- slug: oncall\n  name: On call"), "{yaml}");
        assert!(yaml.contains("userAttributes:\n  alice@acme.test:\n    department: eng"), "{yaml}");
    }

    #[test]
    fn groups_are_diffed_narrowing_first_and_deleted_when_left_out() {
        let mut file = exported();
        let groups = file.groups.as_mut().unwrap();
        groups[0].roles.clear();
        groups[0].members.push("Bob@acme.test".into());
        groups.push(GroupSpec {
            slug: "sre".into(),
            name: "SRE".into(),
            members: vec!["alice@acme.test".into()],
            roles: vec!["ops".into()],
        });
        let plan = plan(&file, &live());
        assert_eq!(
            plan.lines,
            vec![
                "- group oncall: role ops",
                "+ group oncall: member bob@acme.test",
                "+ group sre (\"SRE\")",
                "+ group sre: role ops",
                "+ group sre: member alice@acme.test",
            ]
        );
        assert_eq!(
            kinds(&plan),
            vec![
                "createGroup sre",
                "unbindGroupRole oncall ops",
                "addGroupMember oncall bob@acme.test",
                "bindGroupRole sre ops",
                "addGroupMember sre alice@acme.test",
            ],
            "the group role goes before anything is added"
        );

        // `groups: []` deletes every group (first: it narrows); no `groups:` leaves them alone.
        let mut file = exported();
        file.roles[0].members.push("bob@acme.test".into());
        file.groups = Some(vec![]);
        let plan = super::plan(&file, &live());
        assert_eq!(plan.lines, vec!["+ role ops: member bob@acme.test", "- group oncall (\"On call\")"]);
        assert_eq!(kinds(&plan), vec!["deleteGroup oncall", "bindRole ops bob@acme.test"]);
        file.groups = None;
        file.roles[0].members.pop();
        let plan = super::plan(&file, &live());
        assert!(plan.is_empty(), "{plan:?}");
        let warnings: Vec<String> = plan.warnings().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("warning: groups: the file has no `groups:` section"), "{warnings:?}");
    }

    #[test]
    fn group_references_and_renames_are_errors() {
        let mut file = exported();
        let groups = file.groups.as_mut().unwrap();
        groups[0].name = "Pager".into();
        groups[0].members.push("carol@acme.test".into());
        groups[0].roles.push("ghost".into());
        let plan = plan(&file, &live());
        let errors: Vec<String> = plan.errors().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "error: group oncall: members: no user 'carol@acme.test' in this tenant (users come from SSO (or the console), not from this file)",
                "error: group oncall: roles: no role 'ghost' in this tenant or in the file",
                "error: group oncall: name: the API cannot rename a group yet (live \"On call\", file \"Pager\"); keep the live name in the file",
            ]
        );
        // A role the same file creates may be bound.
        let mut file = exported();
        file.roles.push(RoleSpec {
            slug: "viewer".into(),
            description: String::new(),
            grants: BTreeMap::new(),
            rules: vec![],
            members: vec![],
        });
        file.groups.as_mut().unwrap()[0].roles.push("viewer".into());
        let plan = super::plan(&file, &live());
        assert!(plan.problems.is_empty(), "{plan:?}");
        assert_eq!(kinds(&plan), vec!["createRole viewer", "bindGroupRole oncall viewer"]);
    }

    #[test]
    fn user_attributes_are_replaced_per_user_and_cleared_when_left_out() {
        let mut file = exported();
        let attrs = file.user_attributes.as_mut().unwrap();
        attrs.get_mut("alice@acme.test").unwrap().0.insert("department".into(), "sales".into());
        attrs.insert("Bob@Acme.test".into(), AttributeMap(BTreeMap::from([("level".into(), "3".into())])));
        let plan = plan(&file, &live());
        assert_eq!(
            plan.lines,
            vec![
                "~ user alice@acme.test: attribute department: \"eng\" → \"sales\"",
                "+ user bob@acme.test: attribute level = \"3\"",
            ]
        );
        assert_eq!(
            kinds(&plan),
            vec!["setUserAttributes alice@acme.test [department=sales]", "setUserAttributes bob@acme.test [level=3]"]
        );

        let mut file = exported();
        file.user_attributes = Some(BTreeMap::new());
        let plan = super::plan(&file, &live());
        assert_eq!(plan.lines, vec!["- user alice@acme.test: attribute department = \"eng\""]);
        assert_eq!(kinds(&plan), vec!["setUserAttributes alice@acme.test []"]);

        file.user_attributes = None;
        let plan = super::plan(&file, &live());
        assert!(plan.is_empty(), "{plan:?}");
        assert!(plan.warnings().any(|w| w.item == "userAttributes"), "{plan:?}");

        let mut file = exported();
        file.user_attributes.as_mut().unwrap().insert("carol@acme.test".into(), AttributeMap::default());
        let errors: Vec<String> = super::plan(&file, &live()).errors().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "error: user carol@acme.test: userAttributes: no user 'carol@acme.test' in this tenant (users come from SSO (or the console), not from this file)"
            ]
        );
    }

    #[test]
    fn shaping_is_diffed_per_virtual_server() {
        // Normalised like the control plane: a rename to the tool's own name, blank texts, a prefix
        // equal to the slug, and hidden parameters in another order are no change.
        let mut file = exported();
        let vs = &mut file.virtual_servers[0];
        vs.prefixes.insert("files".into(), "files".into());
        vs.overrides.push(OverrideSpec {
            server: "everything".into(),
            tool: "get-sum".into(),
            rename: Some("get-sum".into()),
            description: Some("  ".into()),
            hidden: vec!["b".into(), "a".into()],
            ..Default::default()
        });
        vs.upstreams.push("files".into());
        let mut live_two = live();
        live_two.virtual_servers[0].upstreams.push("files".into());
        live_two.virtual_servers[0].overrides.push(LiveOverride {
            server: "everything".into(),
            tool: "get-sum".into(),
            rename: None,
            description: None,
            fixed: vec![],
            hidden: vec!["a".into(), "b".into()],
            enums: vec![],
        });
        assert!(plan(&file, &live_two).is_empty(), "{:?}", plan(&file, &live_two));

        // Strategy, prefix and overrides changed: the strategy first, then overrides set, and the
        // deletion of an override that fixed a parameter (it widens) with the permissive changes.
        let mut file = exported();
        let vs = &mut file.virtual_servers[0];
        vs.conflict_strategy = Strategy::Priority;
        vs.prefixes.insert("everything".into(), "every".into());
        vs.overrides[0].tool = "get-sum".into();
        vs.overrides[0].hidden = vec!["b".into()];
        let plan = plan(&file, &live());
        assert_eq!(
            plan.lines,
            vec![
                "~ virtual server dev: conflict strategy prefix → priority",
                "~ virtual server dev: prefix of everything: ev → every",
                "- virtual server dev: override everything/echo (rename say, fixed message=\"hi\")",
                "+ virtual server dev: override everything/get-sum (rename say, fixed message=\"hi\", hidden [b])",
            ]
        );
        assert_eq!(
            kinds(&plan),
            vec![
                "setConflictStrategy dev priority [everything=every]",
                "setToolOverride dev everything/get-sum",
                "deleteToolOverride dev everything/echo",
            ]
        );

        // `explicit` needs the renames first; a rename-only override is deleted before the sets
        // (it frees its name); back to the slug is the default prefix.
        let mut live_rename = live();
        live_rename.virtual_servers[0].overrides[0].fixed.clear();
        let mut file = export(&live_rename, "acme");
        let vs = &mut file.virtual_servers[0];
        vs.conflict_strategy = Strategy::Explicit;
        vs.prefixes.clear();
        vs.overrides[0].tool = "get-sum".into();
        let plan = super::plan(&file, &live_rename);
        assert_eq!(
            plan.lines,
            vec![
                "~ virtual server dev: conflict strategy prefix → explicit",
                "~ virtual server dev: prefix of everything: ev → everything",
                "- virtual server dev: override everything/echo (rename say)",
                "+ virtual server dev: override everything/get-sum (rename say)",
            ]
        );
        assert_eq!(
            kinds(&plan),
            vec![
                "deleteToolOverride dev everything/echo",
                "setToolOverride dev everything/get-sum",
                "setConflictStrategy dev explicit []",
            ]
        );
    }

    #[test]
    fn a_new_virtual_server_is_shaped_right_after_it_is_created() {
        let mut file = exported();
        let mut vs = file.virtual_servers[0].clone();
        vs.slug = "staging".into();
        vs.name = "Staging".into();
        vs.mode = Mode::Monitor;
        file.virtual_servers.push(vs);
        let plan = plan(&file, &live());
        assert_eq!(
            plan.lines,
            vec![
                "+ virtual server staging (\"Staging\" over everything, mode monitor)",
                "+ virtual server staging: conflict strategy prefix",
                "+ virtual server staging: prefix of everything: everything → ev",
                "+ virtual server staging: override everything/echo (rename say, fixed message=\"hi\")",
            ]
        );
        assert_eq!(
            kinds(&plan),
            vec![
                "createVirtualServer staging",
                "setConflictStrategy staging prefix [everything=ev]",
                "setToolOverride staging everything/echo",
                "setPolicyMode staging monitor",
            ]
        );
    }

    #[test]
    fn shaping_references_are_errors() {
        let mut file = exported();
        let vs = &mut file.virtual_servers[0];
        vs.prefixes.insert("files".into(), "f".into());
        let renamed = |server: &str, tool: &str| OverrideSpec {
            server: server.into(),
            tool: tool.into(),
            rename: Some("x".into()),
            ..Default::default()
        };
        vs.overrides.push(renamed("files", "read"));
        vs.overrides.push(renamed("everything", "nope"));
        vs.overrides.push(OverrideSpec { rename: Some(" get-sum ".into()), ..renamed("everything", "get-sum") });
        let errors: Vec<String> = plan(&file, &live()).errors().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "error: virtual server dev: prefixes.files: 'files' is not an upstream of this virtual server",
                "error: virtual server dev: overrides[1].server: 'files' is not an upstream of this virtual server",
                "error: virtual server dev: overrides[2].tool: server 'everything' has no tool 'nope' (as last fetched: refresh its tools if it was added recently)",
                "error: virtual server dev: overrides[3]: set at least one of rename, description, fixed, hidden or enums (or leave the override out)",
            ]
        );
    }

    #[test]
    fn grants_are_diffed_per_server_narrowed_first_and_widened_last() {
        let mut file = exported();
        file.roles[0].grants.insert("everything".into(), vec!["echo".into()]);
        let plan = plan(&file, &live());
        assert_eq!(plan.lines, vec!["~ role ops: grants everything: +echo -get-sum"]);
        assert_eq!(
            kinds(&plan),
            vec!["setRoleGrants ops [files/*]", "setRoleGrants ops [everything/echo files/*]"],
            "the removal is applied before the addition"
        );
    }

    #[test]
    fn rules_are_matched_by_content_not_by_position_or_id() {
        let mut file = exported();
        file.roles[0].rules.reverse();
        // Whitespace around a description is not content (the control plane trims it).
        file.roles[0].rules[2].description = "  it shows the environment ".into();
        assert!(plan(&file, &live()).is_empty());

        // A changed rule is a deleted rule and an added one; the deny goes in before the allow goes.
        let mut file = exported();
        file.roles[0].rules[1].params[0].max_length = Some(80);
        file.roles[0].rules[0].tools = "get-env*".into();
        let plan = plan(&file, &live());
        assert_eq!(
            plan.lines,
            vec![
                "- role ops: rule r-deny (deny get-env of everything: \"it shows the environment\")",
                "- role ops: rule r-echo (allow echo of everything with message(pattern \"hello.*\", maxLength 40))",
                "+ role ops: rule (deny get-env* of everything: \"it shows the environment\")",
                "+ role ops: rule (allow echo of everything with message(pattern \"hello.*\", maxLength 80))",
            ]
        );
        assert_eq!(
            kinds(&plan),
            vec!["deleteRule r-echo", "addRule ops deny get-env*", "deleteRule r-deny", "addRule ops allow echo"],
            "restrictive first (the old allow goes, the new deny comes), then the permissive ones"
        );
    }

    #[test]
    fn identical_rules_count_as_many_times_as_they_are_written() {
        let mut file = exported();
        let dup = file.roles[0].rules[2].clone();
        file.roles[0].rules.push(dup);
        let plan = plan(&file, &live());
        assert_eq!(plan.lines, vec!["+ role ops: rule (allow get-* of everything where readOnlyHint=true)"]);
    }

    #[test]
    fn a_new_role_is_created_then_filled_denies_before_allows_members_last() {
        let mut file = exported();
        let text = r#"
slug: data-analyst
description: Reads things
grants:
  everything: [echo]
rules:
  - server: everything
    effect: allow
    tools: get-*
    annotation: { hint: readOnlyHint, value: true }
  - server: everything
    effect: DENY
    tools: get-env
members: [Bob@Acme.test]
"#;
        file.roles.push(serde_norway::from_str(text).unwrap());
        let plan = plan(&file, &live());
        assert_eq!(
            plan.lines,
            vec![
                "+ role data-analyst (\"Reads things\")",
                "+ role data-analyst: grants everything: +echo",
                "+ role data-analyst: rule (allow get-* of everything where readOnlyHint=true)",
                "+ role data-analyst: rule (deny get-env of everything)",
                "+ role data-analyst: member bob@acme.test",
            ]
        );
        assert_eq!(
            kinds(&plan),
            vec![
                "createRole data-analyst",
                "addRule data-analyst deny get-env",
                "setRoleGrants data-analyst [everything/echo]",
                "addRule data-analyst allow get-*",
                "bindRole data-analyst bob@acme.test",
            ]
        );
        assert!(plan.problems.is_empty(), "{plan:?}");
    }

    #[test]
    fn members_are_compared_by_lowercased_e_mail() {
        let mut file = exported();
        file.roles[0].members = vec![" Alice@ACME.test".into(), "bob@acme.test".into()];
        let plan = plan(&file, &live());
        assert_eq!(plan.lines, vec!["+ role ops: member bob@acme.test"]);
        file.roles[0].members = vec![];
        let plan = super::plan(&file, &live());
        assert_eq!(plan.lines, vec!["- role ops: member alice@acme.test"]);
        assert_eq!(kinds(&plan), vec!["unbindRole ops alice@acme.test"]);
    }

    #[test]
    fn policy_modes_and_new_virtual_servers() {
        let mut file = exported();
        file.virtual_servers[0].mode = Mode::Monitor;
        file.virtual_servers.push(VirtualServerSpec {
            slug: "staging".into(),
            name: "Staging".into(),
            upstreams: vec!["files".into(), "everything".into()],
            mode: Mode::Monitor,
            conflict_strategy: Strategy::Auto,
            prefixes: BTreeMap::new(),
            overrides: vec![],
        });
        let plan = plan(&file, &live());
        assert_eq!(
            plan.lines,
            vec![
                "~ virtual server dev: mode enforce → monitor",
                "+ virtual server staging (\"Staging\" over files, everything, mode monitor)",
            ]
        );
        assert_eq!(
            kinds(&plan),
            vec!["setPolicyMode dev monitor", "createVirtualServer staging", "setPolicyMode staging monitor"]
        );

        // Back to enforce is a restrictive change: it runs before anything that opens access.
        let mut live_monitor = live();
        live_monitor.virtual_servers[0].mode = Mode::Monitor;
        let mut file = exported();
        file.roles[0].members.push("bob@acme.test".into());
        let plan = super::plan(&file, &live_monitor);
        assert_eq!(kinds(&plan), vec!["setPolicyMode dev enforce", "bindRole ops bob@acme.test"]);
    }

    #[test]
    fn what_the_api_cannot_do_is_an_error_naming_the_item() {
        let mut file = exported();
        file.roles[0].description = "Something else".into();
        file.virtual_servers[0].upstreams = vec!["files".into()];
        file.virtual_servers[0].prefixes.clear();
        file.virtual_servers[0].overrides.clear();
        file.virtual_servers[0].name = "Development".into();
        let plan = plan(&file, &live());
        let errors: Vec<String> = plan.errors().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("error: role ops: description: the API cannot change"), "{errors:?}");
        assert!(errors[1].starts_with("error: virtual server dev: name: the API cannot rename"), "{errors:?}");
        assert!(
            errors[2].starts_with("error: virtual server dev: upstreams: the API cannot change a virtual server's upstreams yet (live [everything], file [files])"),
            "{errors:?}"
        );
    }

    #[test]
    fn references_to_unknown_servers_tools_and_users_are_errors() {
        let mut file = exported();
        file.roles[0].grants.insert("ghost".into(), vec!["x".into()]);
        file.roles[0].grants.insert("files".into(), vec!["write".into()]);
        file.roles[0].rules[0].server = "ghost".into();
        file.roles[0].members.push("carol@acme.test".into());
        file.virtual_servers[0].upstreams.push("ghost".into());
        let plan = plan(&file, &live());
        let errors: Vec<String> = plan.errors().map(ToString::to_string).collect();
        let expected = [
            "error: role ops: grants.files: server 'files' has no tool 'write'",
            "error: role ops: grants: no server 'ghost' in this tenant (servers are registered through the intake workflow",
            "error: role ops: rules[0].server: no server 'ghost'",
            "error: role ops: members: no user 'carol@acme.test' in this tenant (users come from SSO",
            "error: virtual server dev: upstreams: no server 'ghost'",
        ];
        for e in expected {
            assert!(errors.iter().any(|x| x.starts_with(e)), "missing {e:?} in {errors:?}");
        }
        assert!(!plan.lines.iter().any(|l| l.contains("carol")), "an unknown member is not planned: {:?}", plan.lines);
    }

    #[test]
    fn what_is_live_but_not_in_the_file_is_a_warning_not_a_change() {
        let mut file = exported();
        file.roles.clear();
        file.virtual_servers.clear();
        let plan = plan(&file, &live());
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.errors().count(), 0);
        let warnings: Vec<String> = plan.warnings().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings[0].starts_with("warning: role ops: exists but is not in the file; the API cannot delete roles")
        );
        assert!(warnings[1].starts_with("warning: virtual server dev: exists but is not in the file"));
    }

    #[test]
    fn unknown_keys_and_yaml_errors_are_refused_with_their_line() {
        let e = parse("version: 1\nroles:\n  - slug: ops\n    grantz: {}\n").unwrap_err();
        assert!(e.contains("unknown field `grantz`") && e.contains("line 4"), "{e}");
        let e = parse("roles:\n  - slug: ops\n    rules:\n      - server: s\n        effect: allow\n        tools: x\n        params:\n          - param: a\n            patern: b\n").unwrap_err();
        assert!(e.contains("unknown field `patern`") && e.contains("line 9"), "{e}");
        let e =
            parse("roles:\n  - slug: ops\n    rules:\n      - server: s\n        effect: maybe\n        tools: x\n")
                .unwrap_err();
        assert!(e.contains("unknown variant `maybe`") && e.contains("line 5"), "{e}");
        let e = parse("roles: [\n").unwrap_err();
        assert!(e.contains("line"), "{e}");
        let e = parse("bogus: 1\n").unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = parse("roles:\n  - slug: ops\n    grants:\n      s: [a]\n      s: [b]\n").unwrap_err();
        assert!(e.contains("server `s` is listed twice") && e.contains("line"), "{e}");
        let e = parse("groups:\n  - slug: g\n    name: G\n    member: [a@b.c]\n").unwrap_err();
        assert!(e.contains("unknown field `member`") && e.contains("line 4"), "{e}");
        let e = parse("virtualServers:\n  - slug: v\n    name: V\n    upstreams: [s]\n    overrides:\n      - server: s\n        tool: t\n        renam: x\n").unwrap_err();
        assert!(e.contains("unknown field `renam`") && e.contains("line 8"), "{e}");
        let e =
            parse("virtualServers:\n  - { slug: v, name: V, upstreams: [s], conflictStrategy: first }\n").unwrap_err();
        assert!(e.contains("unknown variant `first`"), "{e}");
        let e = parse("userAttributes:\n  a@b.c:\n    team: x\n    team: y\n").unwrap_err();
        assert!(e.contains("`team` is listed twice") && e.contains("line"), "{e}");
        let e = parse("userAttributes:\n  a@b.c: { team: x }\n  a@b.c: { team: y }\n").unwrap_err();
        assert!(e.contains("`a@b.c` is listed twice"), "{e}");
        let e = parse("virtualServers:\n  - slug: v\n    name: V\n    upstreams: [s]\n    overrides:\n      - { server: s, tool: t, fixed: { a: 1, a: 2 } }\n").unwrap_err();
        assert!(e.contains("`a` is listed twice"), "{e}");
        let file = parse("userAttributes: { a@b.c: { team: \"1\" } }\nvirtualServers:\n  - { slug: v, name: V, upstreams: [s], conflictStrategy: EXPLICIT }\n").unwrap();
        assert_eq!(file.virtual_servers[0].conflict_strategy, Strategy::Explicit, "GraphQL's spelling is accepted");
        assert_eq!(file.groups, None, "no `groups:`: not managed");
    }

    #[test]
    fn validation_finds_duplicates_and_other_versions() {
        let file = parse(
            "version: 2\nroles:\n  - slug: ops\n    grants: { s: [a, a] }\n    members: [x@y.z, X@y.z]\n  - slug: ops\n\
             virtualServers:\n  - { slug: dev, name: Dev, upstreams: [] }\n  - { slug: dev, name: Dev, upstreams: [s, s] }\n\
             groups:\n  - { slug: g, name: G, members: [a@b.c, A@b.c], roles: [r, r] }\n  - { slug: g, name: G }\n\
             userAttributes: { a@b.c: {}, A@B.C: {} }\n",
        )
        .unwrap();
        let errors = validate(&file);
        assert_eq!(
            errors,
            vec![
                "version: this gatehouse reads version 1, the file is version 2",
                "roles[0] (ops): grants.s: tool 'a' is listed twice",
                "roles[0] (ops): members: 'X@y.z' is listed twice",
                "roles[1] (ops): role 'ops' is listed twice",
                "virtualServers[0] (dev): upstreams: name at least one upstream server",
                "virtualServers[1] (dev): virtual server 'dev' is listed twice",
                "virtualServers[1] (dev): upstreams: server 's' is listed twice",
                "groups[0] (g): members: 'A@b.c' is listed twice",
                "groups[0] (g): roles: 'r' is listed twice",
                "groups[1] (g): group 'g' is listed twice",
                "userAttributes: 'a@b.c' is listed twice",
            ]
        );
    }
}
