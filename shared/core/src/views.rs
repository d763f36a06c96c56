//! What the control plane shows about its objects: the shapes the console and the GraphQL API
//! both return. Times are Unix milliseconds.

use serde::{Deserialize, Serialize};

#[cfg(feature = "graphql")]
use async_graphql::SimpleObject;

/// The signed-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct MeView {
    /// User id.
    pub id: String,
    /// E-mail.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Console role: platform_admin, admin or member.
    pub console_role: String,
    /// Slug of the user's home tenant.
    pub tenant: String,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct TenantView {
    /// URL slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Created at.
    pub created_at_ms: i64,
}

/// A tool as the upstream server describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct ToolView {
    /// Tool name.
    pub name: String,
    /// Description, if the server gave one.
    pub description: Option<String>,
    /// The tool's input JSON Schema, as the server gave it (parameter constraints are checked
    /// against it).
    pub input_schema: Option<serde_json::Value>,
    /// The tool's annotations (`readOnlyHint`, `destructiveHint`, ...), as the server gave them.
    pub annotations: Option<serde_json::Value>,
}

/// A registered upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct ServerView {
    /// Slug, unique in the tenant.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Streamable HTTP endpoint.
    pub url: String,
    /// Tools fetched from the server.
    pub tools: Vec<ToolView>,
    /// Labels (PCI, PII, a region ...), sorted.
    pub labels: Vec<String>,
    /// When the tools were fetched.
    pub tools_fetched_at_ms: Option<i64>,
}

/// One grant of a role: a tool (or `*`, all tools) of a server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct GrantView {
    /// Server slug.
    pub server: String,
    /// Tool name, or `*`.
    pub tool: String,
}

/// An access role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct RoleView {
    /// Slug, unique in the tenant.
    pub slug: String,
    /// What it is for.
    pub description: String,
    /// What it grants, ordered by server and tool.
    pub grants: Vec<GrantView>,
    /// Its rules (globs, annotation selectors, denies, parameter constraints), oldest first.
    pub rules: Vec<crate::rules::RuleView>,
    /// E-mails of the users bound to it, ordered.
    pub members: Vec<String>,
}

/// A user of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct UserView {
    /// Id.
    pub id: String,
    /// E-mail.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Console role.
    pub console_role: String,
    /// Slugs of the access roles bound to the user.
    pub roles: Vec<String>,
}

/// A virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct VirtualServerView {
    /// Slug, unique in the tenant.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Upstream server slugs, in order.
    pub upstreams: Vec<String>,
    /// Whether access policy is enforced here or only observed.
    pub mode: crate::rules::PolicyMode,
    /// Where MCP clients connect: the gateway's `/mcp/{tenant}/{slug}` URL.
    pub endpoint: String,
}

/// An API token (never the secret itself, except once in [`CreatedTokenView`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct TokenView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The user it authenticates.
    pub user_email: String,
    /// First characters, to recognise it.
    pub prefix: String,
    /// Created at.
    pub created_at_ms: i64,
    /// Expires at.
    pub expires_at_ms: Option<i64>,
    /// Revoked at.
    pub revoked_at_ms: Option<i64>,
}

/// A newly created token: the secret is shown this once and never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct CreatedTokenView {
    /// The secret; give it to the MCP client as `Authorization: Bearer …`.
    pub secret: String,
    /// The stored token.
    pub token: TokenView,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct AuditView {
    /// Event id.
    pub id: String,
    /// When the request arrived.
    pub time_ms: i64,
    /// User e-mail, if authenticated.
    pub user: Option<String>,
    /// Client name.
    pub client_name: Option<String>,
    /// Client version.
    pub client_version: Option<String>,
    /// Virtual server.
    pub virtual_server: String,
    /// Upstream server.
    pub upstream_server: Option<String>,
    /// JSON-RPC method.
    pub method: String,
    /// Tool.
    pub tool: Option<String>,
    /// allowed, denied, would_deny (monitor mode), upstream_error or invalid.
    pub outcome: String,
    /// Why it was denied or failed.
    pub reason: Option<String>,
    /// The rule that decided (a rule id, `grant:{role}:{server}:{tool}`, `default-deny`, or the
    /// data-classification rule that blocked it).
    pub rule_id: Option<String>,
    /// What data-classification rules found (where, never what).
    pub findings: Vec<crate::classification::AuditFinding>,
    /// Latency in microseconds.
    pub latency_us: i64,
    /// Bundle revision that decided.
    pub bundle_revision: Option<String>,
}

/// The tenant's active policy bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct BundleView {
    /// Content revision (hex SHA-256).
    pub revision: String,
    /// Sequence number.
    pub sequence: i64,
    /// Compiled at.
    pub created_at_ms: i64,
}

/// Whether one tool is available to a user, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct ToolAccessView {
    /// Upstream server slug.
    pub server: String,
    /// Tool name as the upstream names it.
    pub tool: String,
    /// Whether the user may list and call it.
    pub allowed: bool,
    /// The access role that grants it, when allowed.
    pub role: Option<String>,
    /// The rule that decides (see [`AuditView::rule_id`]).
    pub rule_id: Option<String>,
    /// Allowed only with parameter constraints: a call can still be refused for its arguments.
    pub constrained: bool,
    /// Why not, when refused (the same words the gateway answers with).
    pub reason: Option<String>,
}

/// What a user can do on a virtual server, decided by the same evaluator the gateway runs, on the
/// tenant's current bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct AccessExplanationView {
    /// The user's e-mail.
    pub user: String,
    /// The virtual server's slug.
    pub virtual_server: String,
    /// Revision of the bundle the answer comes from.
    pub bundle_revision: String,
    /// Every tool of the virtual server's upstreams (as last fetched), in upstream order.
    pub tools: Vec<ToolAccessView>,
}

/// A suspension (kill switch): a user, a server, or one tool of a server, stopped on every gateway
/// worker with the next bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct SuspensionView {
    /// Id (to lift it).
    pub id: String,
    /// `user`, `server` or `tool`.
    pub kind: String,
    /// The suspended user's e-mail (kind `user`).
    pub user: Option<String>,
    /// The server's slug (kinds `server` and `tool`).
    pub server: Option<String>,
    /// The tool's name (kind `tool`).
    pub tool: Option<String>,
    /// Why; shown to the people it stops.
    pub reason: String,
    /// Who pulled the switch.
    pub created_by: String,
    /// When.
    pub created_at_ms: i64,
}
