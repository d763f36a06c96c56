//! Rows as the store reads and writes them. Times are Unix milliseconds.

/// Console role of the bootstrap and platform administrators: may manage every tenant.
pub const ROLE_PLATFORM_ADMIN: &str = "platform_admin";
/// Console role of a tenant administrator.
pub const ROLE_TENANT_ADMIN: &str = "admin";
/// Console role of a plain member (uses the gateway, no console administration).
pub const ROLE_MEMBER: &str = "member";

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Tenant {
    /// Id.
    pub id: String,
    /// URL slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Created at.
    pub created_at_ms: i64,
}

/// A user of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub id: String,
    /// E-mail, unique in the tenant.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Argon2 PHC string; `None` for users who cannot sign in to the console.
    pub password_hash: Option<String>,
    /// One of [`ROLE_PLATFORM_ADMIN`], [`ROLE_TENANT_ADMIN`], [`ROLE_MEMBER`].
    pub console_role: String,
    /// Created at.
    pub created_at_ms: i64,
}

/// An upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Server {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub id: String,
    /// Slug, unique in the tenant.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Streamable HTTP endpoint.
    pub url: String,
    /// The tool list last fetched from the server (a JSON array of MCP tool objects).
    pub tools_json: String,
    /// When the tools were fetched.
    pub tools_fetched_at_ms: Option<i64>,
    /// Labels (PCI, PII, a region ...) as a JSON list.
    pub labels_json: String,
    /// Created at.
    pub created_at_ms: i64,
    /// `streamableHttp`, `sse` (`url` is the legacy SSE URL) or `stdio` (`url` is empty).
    pub transport: String,
    /// For stdio: `{"command": …, "args": […], "env": {…}}`; `None` otherwise.
    pub command_json: Option<String>,
}

/// An access role.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Role {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub id: String,
    /// Slug, unique in the tenant.
    pub slug: String,
    /// What the role is for.
    pub description: String,
    /// Created at.
    pub created_at_ms: i64,
}

/// One tool (or `*`) of one server granted by one role.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Grant {
    /// Role.
    pub role_id: String,
    /// Server.
    pub server_id: String,
    /// Tool name, or `*` for every tool of the server.
    pub tool: String,
}

/// An access rule of a role (see `gatehouse_core::rules`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccessRule {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub id: String,
    /// Role.
    pub role_id: String,
    /// Server.
    pub server_id: String,
    /// `allow` or `deny`.
    pub effect: String,
    /// Tool name or glob.
    pub tools: String,
    /// `AnnotationMatch` as JSON, if the rule selects by annotation.
    pub annotation_json: Option<String>,
    /// `[ParamConstraint]` as JSON.
    pub params_json: String,
    /// Why the rule exists.
    pub description: String,
    /// Created at.
    pub created_at_ms: i64,
    /// CEL condition (`None`: the rule always applies).
    pub condition_cel: Option<String>,
}

/// A local group of users.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserGroup {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub id: String,
    /// Slug, unique in the tenant (what conditions see in `user.groups`).
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Created at.
    pub created_at_ms: i64,
}

/// A user in a group.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GroupMember {
    /// Group.
    pub group_id: String,
    /// User.
    pub user_id: String,
}

/// A role bound to a group.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GroupRole {
    /// Group.
    pub group_id: String,
    /// Role.
    pub role_id: String,
}

/// One attribute of a user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserAttribute {
    /// User.
    pub user_id: String,
    /// Key.
    pub attr_key: String,
    /// Value.
    pub attr_value: String,
}

/// A data-classification rule (see `gatehouse_core::classification`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClassificationRuleRow {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Detector wire name.
    pub detector: String,
    /// Pattern of a `pattern` rule.
    pub pattern: Option<String>,
    /// `block`, `redact` or `log`.
    pub action: String,
    /// `params`, `responses` or `both`.
    pub scope: String,
    /// Server slugs, JSON list.
    pub servers_json: String,
    /// Server labels, JSON list.
    pub labels_json: String,
    /// Created at.
    pub created_at_ms: i64,
}

/// A suspension (kill switch): a user, a server, or one tool of a server.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Suspension {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub id: String,
    /// `user`, `server` or `tool`.
    pub kind: String,
    /// The user id (kind `user`) or the server id (kinds `server` and `tool`).
    pub target_id: String,
    /// The tool name (kind `tool`), else empty.
    pub tool: String,
    /// Why, shown to the people it stops.
    pub reason: String,
    /// E-mail of who pulled the switch.
    pub created_by: String,
    /// When.
    pub created_at_ms: i64,
}

/// A rate limit (see `gatehouse_core::limits`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RateLimitRow {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub id: String,
    /// `tenant`, `role` or `user`.
    pub scope: String,
    /// The role (scope `role`).
    pub role_id: Option<String>,
    /// One user (scope `user`), or every user when `None`.
    pub user_id: Option<String>,
    /// The server, or every server.
    pub server_id: Option<String>,
    /// Tool name or glob, or every tool.
    pub tool: Option<String>,
    /// Requests per window.
    pub requests: i64,
    /// Window in seconds.
    pub per_seconds: i64,
    /// Bucket size (`None`: `requests`).
    pub burst: Option<i64>,
    /// Why.
    pub description: String,
    /// Created at.
    pub created_at_ms: i64,
}

/// A user bound to a role.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Binding {
    /// Role.
    pub role_id: String,
    /// User.
    pub user_id: String,
}

/// A virtual server.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VirtualServer {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub id: String,
    /// Slug, unique in the tenant.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// `enforce` or `monitor`.
    pub policy_mode: String,
    /// Created at.
    pub created_at_ms: i64,
}

/// One upstream of a virtual server.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VirtualServerUpstream {
    /// Virtual server.
    pub virtual_server_id: String,
    /// Upstream server.
    pub server_id: String,
    /// Order in the virtual server.
    pub position: i64,
}

/// A session sealing key of a tenant (see `docs/decisions/0006-stateless-sessions.md`).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionKeyRow {
    /// Tenant.
    pub tenant_id: String,
    /// Short id, unique in the tenant, carried in every token the key seals.
    pub id: String,
    /// The 32 key bytes, standard base64.
    pub key_b64: String,
    /// Created at: the newest key of a tenant seals.
    pub created_at_ms: i64,
}

// Hand-written so the key never reaches a log line.
impl std::fmt::Debug for SessionKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeyRow")
            .field("tenant_id", &self.tenant_id)
            .field("id", &self.id)
            .field("key_b64", &"<redacted>")
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// An API token (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiToken {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub id: String,
    /// The user it authenticates.
    pub user_id: String,
    /// A name the user chose.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    /// Created at.
    pub created_at_ms: i64,
    /// Expires at, if it expires.
    pub expires_at_ms: Option<i64>,
    /// Revoked at, if revoked.
    pub revoked_at_ms: Option<i64>,
}

/// A stored audit event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    /// Tenant.
    pub tenant_id: String,
    /// Event id chosen by the worker.
    pub id: String,
    /// When the request arrived.
    pub time_ms: i64,
    /// User id.
    pub user_id: Option<String>,
    /// User e-mail.
    pub user_email: Option<String>,
    /// Client name.
    pub client_name: Option<String>,
    /// Client version.
    pub client_version: Option<String>,
    /// Gateway session id.
    pub session_id: Option<String>,
    /// Virtual server slug.
    pub virtual_server: String,
    /// Upstream server slug.
    pub upstream_server: Option<String>,
    /// JSON-RPC method.
    pub method: String,
    /// Tool name (the upstream's, once the gateway resolved it).
    pub tool: Option<String>,
    /// The tool name the client called (as the virtual server exposes it), if recorded.
    #[sqlx(default)]
    pub exposed_tool: Option<String>,
    /// allowed / denied / would_deny / upstream_error / invalid.
    pub outcome: String,
    /// Why.
    pub reason: Option<String>,
    /// Latency in microseconds.
    pub latency_us: i64,
    /// Bundle revision that decided.
    pub bundle_revision: Option<String>,
    /// The rule that decided.
    pub rule_id: Option<String>,
    /// Data-classification findings (JSON list), if any.
    pub findings_json: Option<String>,
    /// When the control plane received it.
    pub received_at_ms: i64,
}

/// A compiled, signed bundle.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BundleRow {
    /// Tenant.
    pub tenant_id: String,
    /// Gateway group.
    pub group_name: String,
    /// Monotonic sequence per tenant and group.
    pub sequence: i64,
    /// Content revision (hex SHA-256).
    pub revision: String,
    /// The `SignedBundle` as JSON.
    pub signed_json: String,
    /// Created at.
    pub created_at_ms: i64,
}
