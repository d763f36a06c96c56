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
    /// How gateways reach it: `streamableHttp` (`url`), `sse` (`url` is the legacy SSE URL) or
    /// `stdio` (a process the worker launches; `url` is empty).
    #[serde(default = "streamable_http")]
    pub transport: String,
    /// The program of a stdio server.
    #[serde(default)]
    pub command: Option<String>,
    /// The arguments of a stdio server.
    #[serde(default)]
    pub args: Vec<String>,
    /// The names of the environment variables a stdio server is given (values are not shown).
    #[serde(default)]
    pub env_names: Vec<String>,
}

fn streamable_http() -> String {
    "streamableHttp".to_owned()
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
    /// How a tool name several upstreams use is resolved (`docs/decisions/0013-virtual-server-shaping.md`).
    #[serde(default)]
    pub conflict_strategy: crate::shaping::ConflictStrategy,
    /// Upstream prefixes set by an admin (the others are the upstream's slug), in upstream order.
    #[serde(default)]
    pub prefixes: Vec<crate::shaping::UpstreamPrefix>,
    /// Per-tool overrides, sorted by server and tool.
    #[serde(default)]
    pub overrides: Vec<crate::shaping::ToolOverride>,
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
    /// Tool: the upstream server's own name of it (what the policy decided on).
    pub tool: Option<String>,
    /// The tool name the client called, as the virtual server exposes it (differs from `tool` when
    /// virtual-server shaping renamed or prefixed the tool).
    pub exposed_tool: Option<String>,
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

/// A tool of an upstream server, as the upstream names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct ToolRefView {
    /// Upstream server slug.
    pub server: String,
    /// Tool name.
    pub tool: String,
}

/// What one user would gain or lose on one virtual server if the draft were published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct AccessChangeView {
    /// The user's e-mail.
    pub user: String,
    /// Virtual server slug.
    pub virtual_server: String,
    /// Tools the user could call under the draft and cannot under what runs now.
    pub gained: Vec<ToolRefView>,
    /// Tools the user can call now and could not under the draft.
    pub lost: Vec<ToolRefView>,
}

/// Recorded `tools/call` traffic of one user and tool whose decision the draft would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct ReplayChangeView {
    /// The user's e-mail (as recorded).
    pub user: String,
    /// Virtual server slug.
    pub virtual_server: String,
    /// Upstream server slug.
    pub server: String,
    /// Tool name.
    pub tool: String,
    /// Recorded calls of this user, virtual server and tool in the window.
    pub calls: i64,
    /// Calls allowed by the policy that runs now and denied by the draft.
    pub now_denied: i64,
    /// Calls denied by the policy that runs now and allowed by the draft.
    pub now_allowed: i64,
    /// Calls whose decision depends on their arguments (a parameter constraint is involved), which
    /// the audit log does not keep: not counted as either.
    pub depends_on_arguments: i64,
}

/// The draft replayed against the tenant's recent `tools/call` audit events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct ReplayView {
    /// Start of the window (Unix ms): events at or after it were considered.
    pub since_ms: i64,
    /// The most events considered (newest first).
    pub max_events: i64,
    /// Events considered.
    pub events: i64,
    /// True when `max_events` was reached, so older events in the window were left out.
    pub truncated: bool,
    /// Calls allowed now and denied by the draft, in total.
    pub now_denied: i64,
    /// Calls denied now and allowed by the draft, in total.
    pub now_allowed: i64,
    /// Calls whose decision depends on arguments, in total.
    pub depends_on_arguments: i64,
    /// Per user, virtual server and tool, only where something would change.
    pub changes: Vec<ReplayChangeView>,
}

/// A tenant's publishing mode, its draft and what publishing the draft would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct PolicyDraftView {
    /// `automatic` (every change is published at once) or `reviewed` (changes wait for a publish).
    pub mode: String,
    /// Whether the draft differs from the published policy content.
    pub changed: bool,
    /// Revision of the draft's policy content.
    pub revision: String,
    /// Revision of the published policy content (none before the first publication).
    pub published_revision: Option<String>,
    /// Number of the newest publication.
    pub published_number: Option<i64>,
    /// True when the newest publication is a rollback: what runs is an earlier revision, and the
    /// draft (the roles, rules… as edited) still holds what was there before the rollback.
    pub rolled_back: bool,
    /// Per user and virtual server, the tools the draft would give or take away (users and virtual
    /// servers without a change are left out).
    pub access: Vec<AccessChangeView>,
    /// True when the access diff was cut at its limit (see `docs/decisions/0015-publishing-and-rollback.md`).
    pub access_truncated: bool,
    /// The draft replayed against recent traffic.
    pub replay: ReplayView,
}

/// A publication: a revision of the policy content sent to the gateway workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct PublicationView {
    /// 1, 2, 3… per tenant.
    pub number: i64,
    /// `automatic` (a change in automatic mode), `publish` or `rollback`.
    pub kind: String,
    /// Revision of the policy content published.
    pub revision: String,
    /// For a rollback: the number of the publication whose content it restored.
    pub restores_number: Option<i64>,
    /// E-mail of who published (none for an automatic publication).
    pub published_by: Option<String>,
    /// The publisher's note.
    pub note: String,
    /// When.
    pub published_at_ms: i64,
}

/// A session sealing key of a tenant (never its material): the newest seals new sessions, every
/// listed key opens the sessions it sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct SessionKeyView {
    /// Id (carried in every session id it seals).
    pub id: String,
    /// When it was created.
    pub created_at_ms: i64,
    /// Whether it seals new sessions (the newest key).
    pub sealing: bool,
}

/// Ended sessions: sessions of a user, or of every user, initialized before a time are refused by
/// every gateway worker with the next bundle; the client initializes a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
pub struct SessionCutoffView {
    /// The user's e-mail; none for every user of the tenant.
    pub user: Option<String>,
    /// Sessions initialized before this (Unix ms) are ended.
    pub not_before_ms: i64,
    /// Who ended them.
    pub created_by: String,
}
