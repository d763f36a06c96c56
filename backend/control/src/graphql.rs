//! The GraphQL API at `/graphql` (POST; GET serves GraphiQL).
//!
//! Authentication: a console session cookie (plus the CSRF guard's same-origin proof) or
//! `Authorization: Bearer <API token>`. Each resolver calls one domain service; errors carry the
//! stable code in `extensions.code` (see `docs/errors.md`). The SDL is committed at
//! `backend/control/schema.graphql`; a test fails when it drifts.

use async_graphql::http::GraphiQLSource;
use async_graphql::{Context, EmptySubscription, ErrorExtensions, InputObject, Object, Schema};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use gatehouse_core::classification::{ClassificationRuleInput, ClassificationRuleView};
use gatehouse_core::groups::{GroupView, UserAttribute};
use gatehouse_core::limits::{RateLimitInput, RateLimitView};
use gatehouse_core::rules::{PolicyMode, RuleInput, RuleView};
use gatehouse_core::shaping::{ConflictStrategy, ExposedToolView, ToolOverride, UpstreamPrefix};
use gatehouse_core::views::*;
use gatehouse_core::{ErrorCode, GatehouseError};
use tower_sessions::Session;

use crate::{Actor, ControlPlane, Services, auth};

/// The schema type.
pub type GatehouseSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

fn gql(e: GatehouseError) -> async_graphql::Error {
    async_graphql::Error::new(e.message.clone()).extend_with(|_, ext| ext.set("code", e.code.as_str()))
}

type R<T> = async_graphql::Result<T>;

/// Per-request identity, resolved before the query runs.
struct Identity(Result<Actor, GatehouseError>);

fn who<'a>(ctx: &'a Context<'_>) -> R<(&'a Services, &'a Actor)> {
    let services = ctx.data_unchecked::<Services>();
    match &ctx.data_unchecked::<Identity>().0 {
        Ok(actor) => Ok((services, actor)),
        Err(e) => Err(gql(e.clone())),
    }
}

/// Queries.
#[derive(Debug, Default)]
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> R<MeView> {
        let (s, a) = who(ctx)?;
        Ok(s.me(a))
    }
    /// Tenants you can see.
    async fn tenants(&self, ctx: &Context<'_>) -> R<Vec<TenantView>> {
        let (s, a) = who(ctx)?;
        s.list_tenants(a).await.map_err(gql)
    }
    /// One tenant.
    async fn tenant(&self, ctx: &Context<'_>, slug: String) -> R<TenantView> {
        let (s, a) = who(ctx)?;
        s.tenant(a, &slug).await.map_err(gql)
    }
    /// A tenant's upstream MCP servers and their tools.
    async fn servers(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<ServerView>> {
        let (s, a) = who(ctx)?;
        s.list_servers(a, &tenant).await.map_err(gql)
    }
    /// A tenant's access roles.
    async fn roles(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<RoleView>> {
        let (s, a) = who(ctx)?;
        s.list_roles(a, &tenant).await.map_err(gql)
    }
    /// A tenant's users.
    async fn users(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<UserView>> {
        let (s, a) = who(ctx)?;
        s.list_users(a, &tenant).await.map_err(gql)
    }
    /// A tenant's virtual servers.
    async fn virtual_servers(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<VirtualServerView>> {
        let (s, a) = who(ctx)?;
        s.list_virtual_servers(a, &tenant).await.map_err(gql)
    }
    /// A virtual server's tools as clients see them (exposed names, descriptions and schemas after
    /// shaping), in upstream order, before access policy.
    async fn virtual_server_tools(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        virtual_server: String,
    ) -> R<Vec<ExposedToolView>> {
        let (s, a) = who(ctx)?;
        s.virtual_server_tools(a, &tenant, &virtual_server).await.map_err(gql)
    }
    /// A tenant's API tokens (never their secrets).
    async fn tokens(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<TokenView>> {
        let (s, a) = who(ctx)?;
        s.list_tokens(a, &tenant).await.map_err(gql)
    }
    /// A tenant's audit events, newest first (`limit` 1–1000, default 100).
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        limit: Option<i32>,
        before_ms: Option<i64>,
    ) -> R<Vec<AuditView>> {
        let (s, a) = who(ctx)?;
        s.list_audit(a, &tenant, limit, before_ms).await.map_err(gql)
    }
    /// What a user can do on a virtual server, and why (the gateway's own evaluator on the current
    /// bundle).
    async fn explain_access(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        virtual_server: String,
        user_email: String,
    ) -> R<AccessExplanationView> {
        let (s, a) = who(ctx)?;
        s.explain_access(a, &tenant, &virtual_server, &user_email).await.map_err(gql)
    }
    /// Would this call be allowed, and by which rule? Decided with the call's arguments by the
    /// gateway's evaluator on the current bundle, as enforcement would decide it (whatever the
    /// virtual server's policy mode).
    #[allow(clippy::too_many_arguments)] // GraphQL arguments: the call, and what conditions see of it
    async fn explain_call(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        user_email: String,
        server: String,
        tool: String,
        arguments: Option<serde_json::Value>,
        #[graphql(desc = "The client's IP address, for rule conditions (`client.ip`); unknown when left out.")]
        client_ip: Option<String>,
        #[graphql(desc = "The client application (`clientInfo.name`), for rule conditions (`client.app`).")]
        client_app: Option<String>,
        #[graphql(desc = "When, RFC 3339 (`request.time`); now when left out.")] at: Option<String>,
    ) -> R<ToolAccessView> {
        let (s, a) = who(ctx)?;
        let context = crate::services::CallContext { ip: client_ip, app: client_app, at };
        s.explain_call(a, &tenant, &user_email, &server, &tool, arguments.as_ref(), &context).await.map_err(gql)
    }
    /// A tenant's local groups, with members and the roles bound to them.
    async fn groups(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<GroupView>> {
        let (s, a) = who(ctx)?;
        s.list_groups(a, &tenant).await.map_err(gql)
    }
    /// A user's attributes (`user.attributes` in rule conditions).
    async fn user_attributes(&self, ctx: &Context<'_>, tenant: String, email: String) -> R<Vec<UserAttribute>> {
        let (s, a) = who(ctx)?;
        s.user_attributes(a, &tenant, &email).await.map_err(gql)
    }
    /// A tenant's rate limits.
    async fn rate_limits(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<RateLimitView>> {
        let (s, a) = who(ctx)?;
        s.list_rate_limits(a, &tenant).await.map_err(gql)
    }
    /// A tenant's MCP session keys (ids and ages, never the key material), the sealing one first.
    async fn session_keys(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<SessionKeyView>> {
        let (s, a) = who(ctx)?;
        s.session_keys(a, &tenant).await.map_err(gql)
    }
    /// A tenant's ended sessions of the last 24 hours (older ones have expired anyway).
    async fn session_cutoffs(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<SessionCutoffView>> {
        let (s, a) = who(ctx)?;
        s.session_cutoffs(a, &tenant).await.map_err(gql)
    }
    /// A tenant's suspensions (kill switch).
    async fn suspensions(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<SuspensionView>> {
        let (s, a) = who(ctx)?;
        s.list_suspensions(a, &tenant).await.map_err(gql)
    }
    /// A tenant's data-classification rules.
    async fn classification_rules(&self, ctx: &Context<'_>, tenant: String) -> R<Vec<ClassificationRuleView>> {
        let (s, a) = who(ctx)?;
        s.list_classification_rules(a, &tenant).await.map_err(gql)
    }
    /// The tenant's publishing mode and draft: what publishing it would change (per user and
    /// virtual server, the tools gained and lost) and the draft replayed against the last 7 days of
    /// tools/call audit events (at most 10,000).
    async fn policy_draft(&self, ctx: &Context<'_>, tenant: String) -> R<PolicyDraftView> {
        let (s, a) = who(ctx)?;
        s.policy_draft(a, &tenant).await.map_err(gql)
    }
    /// The tenant's publications, newest first (`limit` 1–200, default 50).
    async fn publications(&self, ctx: &Context<'_>, tenant: String, limit: Option<i32>) -> R<Vec<PublicationView>> {
        let (s, a) = who(ctx)?;
        s.list_publications(a, &tenant, limit).await.map_err(gql)
    }
    /// The tenant's newest policy bundle.
    async fn bundle(&self, ctx: &Context<'_>, tenant: String) -> R<Option<BundleView>> {
        let (s, a) = who(ctx)?;
        s.bundle(a, &tenant).await.map_err(gql)
    }
    /// The tenant's gateway group and its workers: the revision each runs for this tenant, whether it
    /// is the newest, its last report and its last error about this tenant.
    async fn gateway_status(
        &self,
        ctx: &Context<'_>,
        tenant: String,
    ) -> R<gatehouse_core::gateways::GatewayStatusView> {
        let (s, a) = who(ctx)?;
        s.gateway_status(a, &tenant).await.map_err(gql)
    }
}

/// One environment variable of a stdio server.
#[derive(Debug, InputObject)]
pub struct EnvVarInput {
    /// Variable name (letters, digits, `_`; not `PATH` or `LD_*`).
    pub name: String,
    /// Its value (not secret: tenant administrators and bundles show it).
    pub value: String,
}

/// One grant: a tool of a server, or `*` for all its tools.
#[derive(Debug, InputObject)]
pub struct GrantInput {
    /// Server slug.
    pub server: String,
    /// Tool name or `*`.
    pub tool: String,
}

/// Mutations.
#[derive(Debug, Default)]
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Creates a tenant (platform administrators).
    async fn create_tenant(&self, ctx: &Context<'_>, slug: String, name: String) -> R<TenantView> {
        let (s, a) = who(ctx)?;
        s.create_tenant(a, &slug, &name).await.map_err(gql)
    }
    /// Registers an upstream MCP server and fetches its tools. `transport`: `streamableHttp`
    /// (default; `url` is the endpoint), `sse` (legacy HTTP+SSE; `url` is the SSE URL) or `stdio`
    /// (`command`, `args`, `env`: a process the workers launch, only if their `stdio_commands`
    /// allow it).
    #[allow(clippy::too_many_arguments)]
    async fn register_server(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        slug: String,
        name: String,
        url: Option<String>,
        transport: Option<String>,
        command: Option<String>,
        #[graphql(default)] args: Vec<String>,
        #[graphql(default)] env: Vec<EnvVarInput>,
    ) -> R<ServerView> {
        let (s, a) = who(ctx)?;
        let spec = crate::services::ServerSpec {
            transport,
            url,
            command,
            args,
            env: env.into_iter().map(|v| (v.name, v.value)).collect(),
        };
        s.register_server_spec(a, &tenant, &slug, &name, &spec).await.map_err(gql)
    }
    /// Fetches a server's tools again.
    async fn refresh_server_tools(&self, ctx: &Context<'_>, tenant: String, slug: String) -> R<ServerView> {
        let (s, a) = who(ctx)?;
        s.refresh_server_tools(a, &tenant, &slug).await.map_err(gql)
    }
    /// Creates an access role.
    async fn create_role(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        slug: String,
        #[graphql(default)] description: String,
    ) -> R<RoleView> {
        let (s, a) = who(ctx)?;
        s.create_role(a, &tenant, &slug, &description).await.map_err(gql)
    }
    /// Replaces a role's grants.
    async fn set_role_grants(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        role: String,
        grants: Vec<GrantInput>,
    ) -> R<RoleView> {
        let (s, a) = who(ctx)?;
        let grants: Vec<GrantView> = grants.into_iter().map(|g| GrantView { server: g.server, tool: g.tool }).collect();
        s.set_role_grants(a, &tenant, &role, &grants).await.map_err(gql)
    }
    /// Adds a rule to an access role: tools by name, glob or annotation; allow (optionally with
    /// parameter constraints) or deny (deny wins). Invalid rules are refused naming the field.
    async fn add_rule(&self, ctx: &Context<'_>, tenant: String, role: String, rule: RuleInput) -> R<RuleView> {
        let (s, a) = who(ctx)?;
        s.add_rule(a, &tenant, &role, &rule).await.map_err(gql)
    }
    /// Deletes a rule by id.
    async fn delete_rule(&self, ctx: &Context<'_>, tenant: String, id: String) -> R<bool> {
        let (s, a) = who(ctx)?;
        s.delete_rule(a, &tenant, &id).await.map_err(gql)
    }
    /// Creates a local group (its slug is what rule conditions see in `user.groups`).
    async fn create_group(&self, ctx: &Context<'_>, tenant: String, slug: String, name: String) -> R<GroupView> {
        let (s, a) = who(ctx)?;
        s.create_group(a, &tenant, &slug, &name).await.map_err(gql)
    }
    /// Deletes a group; its members lose the roles they held through it.
    async fn delete_group(&self, ctx: &Context<'_>, tenant: String, slug: String) -> R<bool> {
        let (s, a) = who(ctx)?;
        s.delete_group(a, &tenant, &slug).await.map_err(gql)
    }
    /// Puts a user in a group.
    async fn add_group_member(&self, ctx: &Context<'_>, tenant: String, group: String, email: String) -> R<GroupView> {
        let (s, a) = who(ctx)?;
        s.set_group_member(a, &tenant, &group, &email, true).await.map_err(gql)
    }
    /// Takes a user out of a group.
    async fn remove_group_member(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        group: String,
        email: String,
    ) -> R<GroupView> {
        let (s, a) = who(ctx)?;
        s.set_group_member(a, &tenant, &group, &email, false).await.map_err(gql)
    }
    /// Binds an access role to a group: every member holds it.
    async fn bind_group_role(&self, ctx: &Context<'_>, tenant: String, group: String, role: String) -> R<GroupView> {
        let (s, a) = who(ctx)?;
        s.set_group_role(a, &tenant, &group, &role, true).await.map_err(gql)
    }
    /// Unbinds an access role from a group.
    async fn unbind_group_role(&self, ctx: &Context<'_>, tenant: String, group: String, role: String) -> R<GroupView> {
        let (s, a) = who(ctx)?;
        s.set_group_role(a, &tenant, &group, &role, false).await.map_err(gql)
    }
    /// Replaces a user's attributes (keys: lowercase identifiers such as `department`).
    async fn set_user_attributes(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        email: String,
        attributes: Vec<UserAttribute>,
    ) -> R<Vec<UserAttribute>> {
        let (s, a) = who(ctx)?;
        s.set_user_attributes(a, &tenant, &email, &attributes).await.map_err(gql)
    }
    /// Enforces a virtual server's access policy, or only monitors it (refusals are then allowed and
    /// audited as `would_deny`).
    async fn set_policy_mode(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        virtual_server: String,
        mode: PolicyMode,
    ) -> R<VirtualServerView> {
        let (s, a) = who(ctx)?;
        s.set_policy_mode(a, &tenant, &virtual_server, mode).await.map_err(gql)
    }
    /// Adds a data-classification rule: a detector (or a pattern), what to do with a match (block,
    /// redact, log), where to look (parameters, responses), and which servers (by slug or label).
    async fn add_classification_rule(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        rule: ClassificationRuleInput,
    ) -> R<ClassificationRuleView> {
        let (s, a) = who(ctx)?;
        s.add_classification_rule(a, &tenant, &rule).await.map_err(gql)
    }
    /// Deletes a data-classification rule by id.
    async fn delete_classification_rule(&self, ctx: &Context<'_>, tenant: String, id: String) -> R<bool> {
        let (s, a) = who(ctx)?;
        s.delete_classification_rule(a, &tenant, &id).await.map_err(gql)
    }
    /// Replaces a server's labels (PCI, PHI, PII, a region ...).
    async fn set_server_labels(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        server: String,
        labels: Vec<String>,
    ) -> R<ServerView> {
        let (s, a) = who(ctx)?;
        s.set_server_labels(a, &tenant, &server, &labels).await.map_err(gql)
    }
    /// The kill switch: suspends a user (by e-mail), a server, or one tool of a server, on every
    /// gateway worker with the next bundle, before any grant or rule and in every policy mode.
    async fn suspend(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        user_email: Option<String>,
        server: Option<String>,
        tool: Option<String>,
        reason: String,
    ) -> R<SuspensionView> {
        let (s, a) = who(ctx)?;
        s.suspend(a, &tenant, user_email.as_deref(), server.as_deref(), tool.as_deref(), &reason).await.map_err(gql)
    }
    /// Lifts a suspension.
    async fn lift_suspension(&self, ctx: &Context<'_>, tenant: String, id: String) -> R<bool> {
        let (s, a) = who(ctx)?;
        s.lift_suspension(a, &tenant, &id).await.map_err(gql)
    }
    /// Ends every MCP session of one user (by e-mail) or, without one, of the whole tenant: every
    /// gateway worker refuses sessions initialized until now (404; clients initialize again). The
    /// user keeps their access (to stop them, `suspend` them).
    async fn end_sessions(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        user_email: Option<String>,
    ) -> R<SessionCutoffView> {
        let (s, a) = who(ctx)?;
        s.end_sessions(a, &tenant, user_email.as_deref()).await.map_err(gql)
    }
    /// Adds a new MCP session key, which seals every new session; older keys keep opening the
    /// sessions they sealed until retired.
    async fn rotate_session_key(&self, ctx: &Context<'_>, tenant: String) -> R<SessionKeyView> {
        let (s, a) = who(ctx)?;
        s.rotate_session_key(a, &tenant).await.map_err(gql)
    }
    /// Retires a session key that no longer seals, ending the sessions it sealed. Within 24 hours
    /// of its replacement (sessions may be live) it needs `force: true`.
    async fn retire_session_key(&self, ctx: &Context<'_>, tenant: String, id: String, force: Option<bool>) -> R<bool> {
        let (s, a) = who(ctx)?;
        s.retire_session_key(a, &tenant, &id, force.unwrap_or(false)).await.map_err(gql)
    }
    /// Sets the publishing mode: `automatic` (every change reaches the gateways at once) or
    /// `reviewed` (changes wait in a draft until `publishPolicy`). Switching to automatic publishes
    /// the draft.
    async fn set_publishing_mode(&self, ctx: &Context<'_>, tenant: String, mode: String) -> R<String> {
        let (s, a) = who(ctx)?;
        s.set_publishing_mode(a, &tenant, &mode).await.map_err(gql)
    }
    /// Publishes the draft to the gateways (a new signed bundle), recorded with you, the time and
    /// the note. NOTHING_TO_PUBLISH when the draft is what runs.
    async fn publish_policy(&self, ctx: &Context<'_>, tenant: String, note: Option<String>) -> R<PublicationView> {
        let (s, a) = who(ctx)?;
        s.publish_policy(a, &tenant, note.as_deref().unwrap_or_default()).await.map_err(gql)
    }
    /// Re-publishes the policy of an earlier publication (by revision) under a new, higher bundle
    /// sequence; the draft is left as edited. Switches an automatic tenant to reviewed mode.
    async fn rollback_policy(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        revision: String,
        note: Option<String>,
    ) -> R<PublicationView> {
        let (s, a) = who(ctx)?;
        s.rollback_policy(a, &tenant, &revision, note.as_deref().unwrap_or_default()).await.map_err(gql)
    }
    /// Adds a rate limit on tools/call (token bucket per tenant, per holder of a role, or per
    /// user); a refused call gets HTTP 429 with Retry-After.
    async fn add_rate_limit(&self, ctx: &Context<'_>, tenant: String, limit: RateLimitInput) -> R<RateLimitView> {
        let (s, a) = who(ctx)?;
        s.add_rate_limit(a, &tenant, &limit).await.map_err(gql)
    }
    /// Deletes a rate limit by id.
    async fn delete_rate_limit(&self, ctx: &Context<'_>, tenant: String, id: String) -> R<bool> {
        let (s, a) = who(ctx)?;
        s.delete_rate_limit(a, &tenant, &id).await.map_err(gql)
    }
    /// Sets how a virtual server resolves a tool name several upstreams use (auto, prefix,
    /// priority, explicit) and its upstreams' prefixes (default: the slug).
    async fn set_conflict_strategy(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        virtual_server: String,
        strategy: ConflictStrategy,
        #[graphql(default)] prefixes: Vec<UpstreamPrefix>,
    ) -> R<VirtualServerView> {
        let (s, a) = who(ctx)?;
        s.set_conflict_strategy(a, &tenant, &virtual_server, strategy, &prefixes).await.map_err(gql)
    }
    /// Sets (adds or replaces) the override of one upstream tool of a virtual server: rename,
    /// description, fixed parameters, hidden parameters, narrowed enums.
    async fn set_tool_override(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        virtual_server: String,
        #[graphql(name = "override")] input: ToolOverride,
    ) -> R<VirtualServerView> {
        let (s, a) = who(ctx)?;
        s.set_tool_override(a, &tenant, &virtual_server, &input).await.map_err(gql)
    }
    /// Deletes the override of one upstream tool of a virtual server.
    async fn delete_tool_override(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        virtual_server: String,
        server: String,
        tool: String,
    ) -> R<VirtualServerView> {
        let (s, a) = who(ctx)?;
        s.delete_tool_override(a, &tenant, &virtual_server, &server, &tool).await.map_err(gql)
    }
    /// Binds a user to a role.
    async fn bind_role(&self, ctx: &Context<'_>, tenant: String, role: String, email: String) -> R<RoleView> {
        let (s, a) = who(ctx)?;
        s.bind_role(a, &tenant, &role, &email).await.map_err(gql)
    }
    /// Removes a user from a role.
    async fn unbind_role(&self, ctx: &Context<'_>, tenant: String, role: String, email: String) -> R<RoleView> {
        let (s, a) = who(ctx)?;
        s.unbind_role(a, &tenant, &role, &email).await.map_err(gql)
    }
    /// Adds a user to a tenant (`consoleRole`: admin or member; a password lets them sign in).
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        email: String,
        display_name: String,
        #[graphql(default_with = "\"member\".to_string()")] console_role: String,
        password: Option<String>,
    ) -> R<UserView> {
        let (s, a) = who(ctx)?;
        s.create_user(a, &tenant, &email, &display_name, &console_role, password.as_deref()).await.map_err(gql)
    }
    /// Creates a virtual server over upstream servers (slugs, in order).
    async fn create_virtual_server(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        slug: String,
        name: String,
        servers: Vec<String>,
    ) -> R<VirtualServerView> {
        let (s, a) = who(ctx)?;
        s.create_virtual_server(a, &tenant, &slug, &name, &servers).await.map_err(gql)
    }
    /// Creates an API token for a user; the secret is in the answer and nowhere else.
    async fn create_token(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        user_email: String,
        name: String,
        expires_in_days: Option<i32>,
    ) -> R<CreatedTokenView> {
        let (s, a) = who(ctx)?;
        s.create_token(a, &tenant, &user_email, &name, expires_in_days).await.map_err(gql)
    }
    /// Revokes an API token.
    async fn revoke_token(&self, ctx: &Context<'_>, tenant: String, id: String) -> R<bool> {
        let (s, a) = who(ctx)?;
        s.revoke_token(a, &tenant, &id).await.map_err(gql)
    }
}

/// Builds the schema (also used to print the SDL).
pub fn schema() -> GatehouseSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription).limit_depth(12).limit_complexity(2_000).finish()
}

async fn identity(control: &ControlPlane, headers: &HeaderMap, session: &Session) -> Identity {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(value) = bearer {
        return Identity(match value.strip_prefix("Bearer ") {
            Some(token) => control.services().actor_for_token(token.trim()).await,
            None => Err(GatehouseError::new(ErrorCode::Unauthenticated, "use Authorization: Bearer <API token>")),
        });
    }
    Identity(auth::current_actor(control, session).await.ok_or_else(|| {
        GatehouseError::new(ErrorCode::Unauthenticated, "sign in to the console or send an API token as a bearer token")
    }))
}

async fn graphql_post(
    State((control, schema)): State<(ControlPlane, GatehouseSchema)>,
    headers: HeaderMap,
    session: Session,
    req: GraphQLRequest,
) -> GraphQLResponse {
    let id = identity(&control, &headers, &session).await;
    schema.execute(req.into_inner().data(control.services().clone()).data(id)).await.into()
}

async fn graphiql() -> impl IntoResponse {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}

/// `/graphql`.
pub fn routes(control: ControlPlane) -> Router {
    Router::new().route("/graphql", get(graphiql).post(graphql_post)).with_state((control, schema()))
}

#[cfg(test)]
mod tests {
    /// The committed SDL must match the code. Run with `UPDATE_SCHEMA=1` to rewrite it.
    #[test]
    fn committed_sdl_matches_the_schema() {
        let sdl = super::schema().sdl();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &sdl).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == sdl,
            "backend/control/schema.graphql is out of date: run `UPDATE_SCHEMA=1 cargo test -p gatehouse-control committed_sdl`"
        );
    }
}
