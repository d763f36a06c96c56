//! Access rules: what a role allows or denies beyond plain tool grants, and the policy mode of a
//! virtual server.
//!
//! A plain grant (a role may call tool `t` of server `s`, or every tool of `s`) is the common case
//! and stays a checkbox. A rule says more: it selects tools by name, glob or annotation, it can
//! deny (deny wins over every allow), and an allow rule can constrain the call's parameters.
//! The same shapes travel through GraphQL, the console, the bundle and config files; checking and
//! evaluating them lives in `gatehouse-bundle`, which the control plane and the gateway share.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "graphql")]
use async_graphql::{Enum, InputObject, SimpleObject};

/// Whether a rule allows or denies what it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The selected tools may be called (if the parameter constraints hold).
    Allow,
    /// The selected tools are refused, whatever any allow says.
    Deny,
}

impl Effect {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Effect::Allow),
            "deny" => Some(Effect::Deny),
            _ => None,
        }
    }
}

/// Whether a virtual server's access policy is enforced or only observed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Refusals are enforced.
    #[default]
    Enforce,
    /// Nothing is refused by access policy; what would have been refused is audited as
    /// `would_deny` with the rule and the reason. Authentication and the kill switch still apply.
    Monitor,
}

impl PolicyMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Monitor => "monitor",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enforce" => Some(PolicyMode::Enforce),
            "monitor" => Some(PolicyMode::Monitor),
            _ => None,
        }
    }
}

/// A tool annotation hint (MCP `ToolAnnotations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(Enum))]
pub enum Hint {
    /// `readOnlyHint`: the tool does not modify its environment.
    #[serde(rename = "readOnlyHint")]
    ReadOnly,
    /// `destructiveHint`: the tool may perform destructive updates.
    #[serde(rename = "destructiveHint")]
    Destructive,
    /// `idempotentHint`: calling it again with the same arguments has no further effect.
    #[serde(rename = "idempotentHint")]
    Idempotent,
    /// `openWorldHint`: the tool interacts with an open world of external entities.
    #[serde(rename = "openWorldHint")]
    OpenWorld,
}

impl Hint {
    /// The annotation's name in a tool definition.
    pub fn field(self) -> &'static str {
        match self {
            Hint::ReadOnly => "readOnlyHint",
            Hint::Destructive => "destructiveHint",
            Hint::Idempotent => "idempotentHint",
            Hint::OpenWorld => "openWorldHint",
        }
    }

    /// The value MCP says a client must assume when a tool does not state the hint.
    pub fn default_value(self) -> bool {
        match self {
            Hint::ReadOnly | Hint::Idempotent => false,
            Hint::Destructive | Hint::OpenWorld => true,
        }
    }
}

/// Selects tools by one annotation hint's value (missing hints take MCP's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject, InputObject), graphql(input_name = "AnnotationMatchInput"))]
#[serde(rename_all = "camelCase")]
pub struct AnnotationMatch {
    /// Which hint.
    pub hint: Hint,
    /// The value it must have.
    pub value: bool,
}

/// A constraint on one parameter (a top-level property of `arguments`) of an allowed call. Every
/// field that is set must hold; a parameter the call leaves out fails the constraint unless
/// `optional` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject, InputObject), graphql(input_name = "ParamConstraintInput"))]
#[serde(rename_all = "camelCase")]
pub struct ParamConstraint {
    /// The parameter's name in the tool's input schema.
    pub param: String,
    /// A call without this parameter passes.
    #[serde(default)]
    #[cfg_attr(feature = "graphql", graphql(default))]
    pub optional: bool,
    /// The value must equal this one (JSON equality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// The value must be one of these (JSON equality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    /// A string value must match this regular expression in full (Rust `regex` syntax).
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
    /// A string must be an absolute path inside one of these directories, after `.` and `..` are
    /// resolved (`/srv/data` admits `/srv/data` and `/srv/data/x`, not `/srv/database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefixes: Option<Vec<String>>,
    /// A string must be an `http` or `https` URL whose host is one of these; `*.example.com`
    /// admits every subdomain of example.com (not example.com itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_hosts: Option<Vec<String>>,
}

/// What a rule says, as an administrator writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(InputObject))]
#[serde(rename_all = "camelCase")]
pub struct RuleInput {
    /// The server slug it applies to.
    pub server: String,
    /// Allow or deny.
    pub effect: Effect,
    /// Tool name, or a glob (`*` any run of characters, `?` one character); `*` selects every tool.
    pub tools: String,
    /// Narrows the selection to tools whose annotation has this value (taken from the tool
    /// definitions last fetched from the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<AnnotationMatch>,
    /// Constraints on the call's parameters (allow rules only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "graphql", graphql(default))]
    pub params: Vec<ParamConstraint>,
    /// Why the rule exists; shown with every refusal it causes.
    #[serde(default)]
    #[cfg_attr(feature = "graphql", graphql(default))]
    pub description: String,
    /// A CEL condition: the rule applies only when it is true (e.g.
    /// `inCidr(client.ip, '10.0.0.0/8')`; see `docs/decisions/0012-groups-and-conditions.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A stored rule of an access role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    /// Stable id; every decision it makes names it.
    pub id: String,
    /// The server slug it applies to.
    pub server: String,
    /// Allow or deny.
    pub effect: Effect,
    /// Tool name or glob.
    pub tools: String,
    /// Annotation narrowing the selection, if any.
    pub annotation: Option<AnnotationMatch>,
    /// Parameter constraints (allow rules only).
    pub params: Vec<ParamConstraint>,
    /// Why the rule exists.
    pub description: String,
    /// CEL condition, if any: the rule applies only when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Created at.
    pub created_at_ms: i64,
}
