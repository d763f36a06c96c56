//! The console's server functions, all under `/api/console/…`.
//!
//! Each one runs on the server as the signed-in user: it takes the `ControlPlane` from the Leptos
//! context (provided by [`crate::router`]) and the user from the tower-sessions session, then calls
//! one method of `gatehouse_control::Services`, which does every check (tenant access, console role,
//! validation). So these functions only adapt form input and never decide anything themselves.
//!
//! Endpoints are named explicitly (`endpoint = "…"`) so the URLs are stable and readable.

// A server function takes one argument per form field (the macro also generates the browser-side
// caller, which an attribute on the function does not reach).
#![allow(clippy::too_many_arguments)]

use gatehouse_core::classification::ClassificationRuleView;
use gatehouse_core::limits::RateLimitView;
use gatehouse_core::rules::RuleView;
use gatehouse_core::views::{
    AccessExplanationView, AuditView, BundleView, CreatedTokenView, GrantView, MeView, RoleView, ServerView,
    SessionCutoffView, SessionKeyView, SuspensionView, TenantView, TokenView, UserView, VirtualServerView,
};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

use crate::ConsoleError;
#[cfg(feature = "ssr")]
use crate::rule_form::RuleForm;

/// Result of a server function.
pub type ApiResult<T> = Result<T, ConsoleError>;

#[cfg(feature = "ssr")]
mod ssr {
    use axum::http;
    use gatehouse_control::{Actor, ControlPlane, Services};
    use leptos::prelude::use_context;
    use tower_sessions::Session;

    use crate::ConsoleError;

    /// The control plane the router put into the Leptos context.
    pub fn control() -> Result<ControlPlane, ConsoleError> {
        use_context::<ControlPlane>().ok_or_else(|| ConsoleError {
            code: None,
            message: "the console is not connected to a control plane (server misconfiguration)".into(),
        })
    }

    /// The request's session (the binary wraps the console in the session layer).
    pub async fn session() -> Result<Session, ConsoleError> {
        leptos_axum::extract::<Session>()
            .await
            .map_err(|e| ConsoleError { code: None, message: format!("no console session: {e}") })
    }

    /// The services and the signed-in user, or `UNAUTHENTICATED`.
    pub async fn signed_in() -> Result<(Services, Actor), ConsoleError> {
        let control = control()?;
        let session = session().await?;
        let actor = answer(
            gatehouse_control::auth::current_actor(&control, &session).await.ok_or_else(ConsoleError::unauthenticated),
        )?;
        Ok((control.services().clone(), actor))
    }

    /// Turns a service result into the server function's answer. For a call of the server function
    /// over HTTP (not during server rendering) an error also gets the HTTP status of its code, so a
    /// wrong password is a 401 and bad input a 400, not a 500.
    pub fn answer<T>(result: Result<T, impl Into<ConsoleError>>) -> Result<T, ConsoleError> {
        result.map_err(|e| {
            let e = e.into();
            set_status(&e);
            e
        })
    }

    /// Sets the HTTP status of a server function call from the error's code.
    pub fn set_status(e: &ConsoleError) {
        let Some(code) = e.code else { return };
        // Not during server rendering (the page's status is not ours to change), and not for a plain
        // form post before hydration (leptos_axum answers those with a redirect back to the form).
        let is_api_call = use_context::<http::request::Parts>().is_some_and(|p| {
            let accepts_html = p
                .headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html"));
            p.uri.path().starts_with("/api/") && !accepts_html
        });
        if let (true, Some(res)) = (is_api_call, use_context::<leptos_axum::ResponseOptions>())
            && let Ok(status) = http::StatusCode::from_u16(code.http_status())
        {
            res.set_status(status);
        }
    }

    /// Where to go after signing in: a local path made of plain characters, else `/`.
    pub fn safe_next(next: &str) -> &str {
        if crate::app::is_plain_local_path(next) { next } else { "/" }
    }
}

// ------------------------------------------------------------------ session

/// The signed-in user, or `None`.
#[server(prefix = "/api/console", endpoint = "me")]
pub async fn me() -> ApiResult<Option<MeView>> {
    let control = ssr::control()?;
    let session = ssr::session().await?;
    Ok(gatehouse_control::auth::current_actor(&control, &session).await.map(|a| control.services().me(&a)))
}

/// Signs in with e-mail and password, then redirects to `next` (a local path) or `/`.
#[server(prefix = "/api/console", endpoint = "login")]
pub async fn login(email: String, password: String, #[server(default)] next: String) -> ApiResult<()> {
    let control = ssr::control()?;
    let session = ssr::session().await?;
    let actor = ssr::answer(control.services().sign_in(&email, &password).await)?;
    ssr::answer(gatehouse_control::auth::start_session(&session, &actor).await)?;
    leptos_axum::redirect(ssr::safe_next(&next));
    Ok(())
}

/// Signs out and redirects to the sign-in page.
#[server(prefix = "/api/console", endpoint = "logout")]
pub async fn logout() -> ApiResult<()> {
    let session = ssr::session().await?;
    gatehouse_control::auth::end_session(&session).await;
    leptos_axum::redirect("/login");
    Ok(())
}

// ------------------------------------------------------------------ tenants

/// Tenants the user can see.
#[server(prefix = "/api/console", endpoint = "tenants")]
pub async fn list_tenants() -> ApiResult<Vec<TenantView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_tenants(&actor).await)
}

/// Creates a tenant (platform administrators).
#[server(prefix = "/api/console", endpoint = "create_tenant")]
pub async fn create_tenant(slug: String, name: String) -> ApiResult<TenantView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.create_tenant(&actor, slug.trim(), &name).await)
}

/// One tenant with its newest bundle.
#[server(prefix = "/api/console", endpoint = "tenant")]
pub async fn tenant_overview(tenant: String) -> ApiResult<(TenantView, Option<BundleView>)> {
    let (s, actor) = ssr::signed_in().await?;
    let t = ssr::answer(s.tenant(&actor, &tenant).await)?;
    let bundle = ssr::answer(s.bundle(&actor, &tenant).await)?;
    Ok((t, bundle))
}

// ------------------------------------------------------------------ servers

/// A tenant's upstream servers with their tools.
#[server(prefix = "/api/console", endpoint = "servers")]
pub async fn list_servers(tenant: String) -> ApiResult<Vec<ServerView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_servers(&actor, &tenant).await)
}

/// Registers an upstream server and fetches its tools. `transport`: `streamableHttp`, `sse` or
/// `stdio`; a stdio server's `args` are one per line and its `env` is `NAME=value` lines.
#[server(prefix = "/api/console", endpoint = "register_server")]
#[allow(clippy::too_many_arguments)]
pub async fn register_server(
    tenant: String,
    slug: String,
    name: String,
    #[server(default)] transport: String,
    #[server(default)] url: String,
    #[server(default)] command: String,
    #[server(default)] args: String,
    #[server(default)] env: String,
) -> ApiResult<ServerView> {
    let (s, actor) = ssr::signed_in().await?;
    let lines = |text: &str| -> Vec<String> {
        text.lines().map(|l| l.trim_end_matches('\r').to_owned()).filter(|l| !l.trim().is_empty()).collect()
    };
    let env = lines(&env)
        .into_iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), v.to_owned()),
            None => (l.trim().to_owned(), String::new()),
        })
        .collect();
    let spec = gatehouse_control::services::ServerSpec {
        transport: Some(transport).filter(|t| !t.is_empty()),
        url: Some(url).filter(|u| !u.trim().is_empty()),
        command: Some(command).filter(|c| !c.trim().is_empty()),
        args: lines(&args),
        env,
    };
    ssr::answer(s.register_server_spec(&actor, &tenant, slug.trim(), &name, &spec).await)
}

/// Fetches a server's tools again.
#[server(prefix = "/api/console", endpoint = "refresh_server")]
pub async fn refresh_server(tenant: String, slug: String) -> ApiResult<ServerView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.refresh_server_tools(&actor, &tenant, &slug).await)
}

/// Replaces a server's labels (comma-separated in the form).
#[server(prefix = "/api/console", endpoint = "set_server_labels")]
pub async fn set_server_labels(
    tenant: String,
    server: String,
    #[server(default)] labels: String,
) -> ApiResult<ServerView> {
    let (s, actor) = ssr::signed_in().await?;
    let labels: Vec<String> = labels.split(',').map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    ssr::answer(s.set_server_labels(&actor, &tenant, &server, &labels).await)
}

// ------------------------------------------------------------------ rate limits

/// A tenant's rate limits.
#[server(prefix = "/api/console", endpoint = "rate_limits")]
pub async fn list_rate_limits(tenant: String) -> ApiResult<Vec<RateLimitView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_rate_limits(&actor, &tenant).await)
}

/// Adds a rate limit from the form (empty fields: not set).
#[server(prefix = "/api/console", endpoint = "add_rate_limit")]
pub async fn add_rate_limit(
    tenant: String,
    scope: String,
    #[server(default)] role: String,
    #[server(default)] user: String,
    #[server(default)] server: String,
    #[server(default)] tool: String,
    requests: String,
    per_seconds: String,
    #[server(default)] burst: String,
    #[server(default)] description: String,
) -> ApiResult<RateLimitView> {
    use gatehouse_core::limits::{LimitScope, RateLimitInput};
    let (s, actor) = ssr::signed_in().await?;
    let set = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    let number = |field: &str, v: &str| -> Result<u32, ConsoleError> {
        v.trim().parse().map_err(|_| ConsoleError::invalid(field, "must be a whole number"))
    };
    let input = RateLimitInput {
        scope: LimitScope::parse(&scope)
            .ok_or_else(|| ConsoleError::invalid("scope", "choose tenant, role or user"))?,
        role: set(&role),
        user: set(&user),
        server: set(&server),
        tool: set(&tool),
        requests: number("requests", &requests)?,
        per_seconds: number("perSeconds", &per_seconds)?,
        burst: set(&burst).map(|b| number("burst", &b)).transpose()?,
        description,
    };
    ssr::answer(s.add_rate_limit(&actor, &tenant, &input).await)
}

/// Deletes a rate limit; answers its id.
#[server(prefix = "/api/console", endpoint = "delete_rate_limit")]
pub async fn delete_rate_limit(tenant: String, id: String) -> ApiResult<String> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.delete_rate_limit(&actor, &tenant, &id).await.map(|_| id))
}

// ------------------------------------------------------------------ gateways

/// The tenant's gateway group and the workers serving it (their revision and errors for this tenant).
#[server(prefix = "/api/console", endpoint = "gateway_status")]
pub async fn gateway_status(tenant: String) -> ApiResult<gatehouse_core::gateways::GatewayStatusView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.gateway_status(&actor, &tenant).await)
}

// ------------------------------------------------------------------ kill switch

/// A tenant's suspensions.
#[server(prefix = "/api/console", endpoint = "suspensions")]
pub async fn list_suspensions(tenant: String) -> ApiResult<Vec<SuspensionView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_suspensions(&actor, &tenant).await)
}

/// Suspends a user (e-mail), a server, or one tool of a server.
#[server(prefix = "/api/console", endpoint = "suspend")]
pub async fn suspend_target(
    tenant: String,
    #[server(default)] user_email: String,
    #[server(default)] server: String,
    #[server(default)] tool: String,
    reason: String,
) -> ApiResult<SuspensionView> {
    let (s, actor) = ssr::signed_in().await?;
    let some = |v: &str| Some(v.to_owned()).filter(|v| !v.trim().is_empty());
    let (user, server, tool) = (some(&user_email), some(&server), some(&tool));
    ssr::answer(s.suspend(&actor, &tenant, user.as_deref(), server.as_deref(), tool.as_deref(), &reason).await)
}

/// A tenant's MCP session keys, the sealing one first.
#[server(prefix = "/api/console", endpoint = "session_keys")]
pub async fn list_session_keys(tenant: String) -> ApiResult<Vec<SessionKeyView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.session_keys(&actor, &tenant).await)
}

/// A tenant's ended sessions of the last 24 hours.
#[server(prefix = "/api/console", endpoint = "session_cutoffs")]
pub async fn list_session_cutoffs(tenant: String) -> ApiResult<Vec<SessionCutoffView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.session_cutoffs(&actor, &tenant).await)
}

/// Ends the sessions of one user (e-mail) or, left empty, of every user.
#[server(prefix = "/api/console", endpoint = "end_sessions")]
pub async fn end_sessions(tenant: String, #[server(default)] user_email: String) -> ApiResult<SessionCutoffView> {
    let (s, actor) = ssr::signed_in().await?;
    let user = Some(user_email).filter(|v| !v.trim().is_empty());
    ssr::answer(s.end_sessions(&actor, &tenant, user.as_deref()).await)
}

/// Adds a new session key, which seals every new session.
#[server(prefix = "/api/console", endpoint = "rotate_session_key")]
pub async fn rotate_session_key(tenant: String) -> ApiResult<SessionKeyView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.rotate_session_key(&actor, &tenant).await)
}

/// Retires a session key that no longer seals (`force` = "true" ends its live sessions); answers its id.
#[server(prefix = "/api/console", endpoint = "retire_session_key")]
pub async fn retire_session_key(tenant: String, id: String, #[server(default)] force: String) -> ApiResult<String> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.retire_session_key(&actor, &tenant, &id, force == "true").await.map(|_| id))
}

/// Lifts a suspension; answers its id.
#[server(prefix = "/api/console", endpoint = "lift_suspension")]
pub async fn lift_suspension(tenant: String, id: String) -> ApiResult<String> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.lift_suspension(&actor, &tenant, &id).await.map(|_| id))
}

// ------------------------------------------------------------------ data classification

/// A tenant's data-classification rules.
#[server(prefix = "/api/console", endpoint = "classification_rules")]
pub async fn list_classification_rules(tenant: String) -> ApiResult<Vec<ClassificationRuleView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_classification_rules(&actor, &tenant).await)
}

/// Adds a data-classification rule from the form (wire names; servers and labels comma-separated).
#[server(prefix = "/api/console", endpoint = "add_classification_rule")]
pub async fn add_classification_rule(
    tenant: String,
    name: String,
    detector: String,
    action: String,
    scope: String,
    #[server(default)] pattern: String,
    #[server(default)] servers: String,
    #[server(default)] labels: String,
) -> ApiResult<ClassificationRuleView> {
    use gatehouse_core::classification::{Action, ClassificationRuleInput, Detector, Scope};
    let (s, actor) = ssr::signed_in().await?;
    let list =
        |v: &str| -> Vec<String> { v.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect() };
    let input = ClassificationRuleInput {
        name,
        detector: Detector::from_wire(&detector)
            .ok_or_else(|| ConsoleError::invalid("detector", "choose a detector"))?,
        pattern: Some(pattern).filter(|p| !p.trim().is_empty()),
        action: Action::from_wire(&action)
            .ok_or_else(|| ConsoleError::invalid("action", "choose block, redact or log"))?,
        scope: Scope::from_wire(&scope).ok_or_else(|| ConsoleError::invalid("scope", "choose where to look"))?,
        servers: list(&servers),
        labels: list(&labels),
    };
    ssr::answer(s.add_classification_rule(&actor, &tenant, &input).await)
}

/// Deletes a data-classification rule; answers its id.
#[server(prefix = "/api/console", endpoint = "delete_classification_rule")]
pub async fn delete_classification_rule(tenant: String, id: String) -> ApiResult<String> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.delete_classification_rule(&actor, &tenant, &id).await.map(|_| id))
}

// ------------------------------------------------------------------ roles

/// A tenant's access roles with grants and members.
#[server(prefix = "/api/console", endpoint = "roles")]
pub async fn list_roles(tenant: String) -> ApiResult<Vec<RoleView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_roles(&actor, &tenant).await)
}

/// Creates an access role.
#[server(prefix = "/api/console", endpoint = "create_role")]
pub async fn create_role(tenant: String, slug: String, #[server(default)] description: String) -> ApiResult<RoleView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.create_role(&actor, &tenant, slug.trim(), &description).await)
}

/// Replaces a role's grants (JSON, since an empty list must be expressible).
#[server(prefix = "/api/console", endpoint = "set_role_grants", input = Json)]
pub async fn set_role_grants(tenant: String, role: String, grants: Vec<GrantView>) -> ApiResult<RoleView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.set_role_grants(&actor, &tenant, &role, &grants).await)
}

/// Binds a user to a role.
#[server(prefix = "/api/console", endpoint = "bind_role")]
pub async fn bind_role(tenant: String, role: String, email: String) -> ApiResult<RoleView> {
    let (s, actor) = ssr::signed_in().await?;
    if role.is_empty() {
        return ssr::answer(Err(ConsoleError::invalid("role", "choose a role")));
    }
    if email.is_empty() {
        return ssr::answer(Err(ConsoleError::invalid("user", "choose a user")));
    }
    ssr::answer(s.bind_role(&actor, &tenant, &role, &email).await)
}

/// Removes a user from a role.
#[server(prefix = "/api/console", endpoint = "unbind_role")]
pub async fn unbind_role(tenant: String, role: String, email: String) -> ApiResult<RoleView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.unbind_role(&actor, &tenant, &role, &email).await)
}

/// Adds a rule to a role from the console's form: one optional parameter constraint, with lists
/// written comma-separated and values as JSON (a bare word is taken as a string). The service
/// checks everything and names the field.
#[server(prefix = "/api/console", endpoint = "add_rule")]
pub async fn add_rule(
    tenant: String,
    role: String,
    server: String,
    effect: String,
    tools: String,
    #[server(default)] annotation: String,
    #[server(default)] description: String,
    #[server(default)] param: String,
    #[server(default)] one_of: String,
    #[server(default)] pattern: String,
    #[server(default)] max_length: String,
    #[server(default)] min: String,
    #[server(default)] max: String,
    #[server(default)] path_prefixes: String,
    #[server(default)] url_hosts: String,
    #[server(default)] optional: Option<String>,
    #[server(default)] condition: String,
) -> ApiResult<RuleView> {
    let (s, actor) = ssr::signed_in().await?;
    let form = RuleForm {
        server,
        effect,
        tools,
        annotation,
        description,
        param,
        one_of,
        pattern,
        max_length,
        min,
        max,
        path_prefixes,
        url_hosts,
        optional: optional.is_some(),
        condition,
    };
    let rule = form.into_input()?;
    ssr::answer(s.add_rule(&actor, &tenant, &role, &rule).await)
}

/// Deletes a rule; answers its id.
#[server(prefix = "/api/console", endpoint = "delete_rule")]
pub async fn delete_rule(tenant: String, id: String) -> ApiResult<String> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.delete_rule(&actor, &tenant, &id).await.map(|_| id))
}

// ------------------------------------------------------------------ users

/// A tenant's users.
#[server(prefix = "/api/console", endpoint = "users")]
pub async fn list_users(tenant: String) -> ApiResult<Vec<UserView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_users(&actor, &tenant).await)
}

/// Adds a user; an empty password makes a gateway-only user (API tokens, no console sign-in).
#[server(prefix = "/api/console", endpoint = "create_user")]
pub async fn create_user(
    tenant: String,
    email: String,
    display_name: String,
    console_role: String,
    #[server(default)] password: String,
) -> ApiResult<UserView> {
    let (s, actor) = ssr::signed_in().await?;
    let password = Some(password.as_str()).filter(|p| !p.is_empty());
    ssr::answer(s.create_user(&actor, &tenant, &email, &display_name, &console_role, password).await)
}

// ------------------------------------------------------------------ virtual servers

/// A tenant's virtual servers.
#[server(prefix = "/api/console", endpoint = "virtual_servers")]
pub async fn list_virtual_servers(tenant: String) -> ApiResult<Vec<VirtualServerView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_virtual_servers(&actor, &tenant).await)
}

/// What a user can do on a virtual server, and why (the gateway's evaluator on the current bundle).
#[server(prefix = "/api/console", endpoint = "explain_access")]
pub async fn explain_access(
    tenant: String,
    virtual_server: String,
    user_email: String,
) -> ApiResult<AccessExplanationView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.explain_access(&actor, &tenant, &virtual_server, &user_email).await)
}

/// Creates a virtual server over the given upstream servers (JSON: a list of slugs).
#[server(prefix = "/api/console", endpoint = "create_virtual_server", input = Json)]
pub async fn create_virtual_server(
    tenant: String,
    slug: String,
    name: String,
    servers: Vec<String>,
) -> ApiResult<VirtualServerView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.create_virtual_server(&actor, &tenant, slug.trim(), &name, &servers).await)
}

/// Enforces a virtual server's policy (`enforce`) or only observes it (`monitor`).
#[server(prefix = "/api/console", endpoint = "set_policy_mode")]
pub async fn set_policy_mode(tenant: String, virtual_server: String, mode: String) -> ApiResult<VirtualServerView> {
    let (s, actor) = ssr::signed_in().await?;
    let Some(mode) = gatehouse_core::rules::PolicyMode::parse(&mode) else {
        return Err(ConsoleError::invalid("mode", "must be 'enforce' or 'monitor'"));
    };
    ssr::answer(s.set_policy_mode(&actor, &tenant, &virtual_server, mode).await)
}

/// A virtual server's tools as clients see them (after shaping), in upstream order.
#[server(prefix = "/api/console", endpoint = "virtual_server_tools")]
pub async fn virtual_server_tools(
    tenant: String,
    virtual_server: String,
) -> ApiResult<Vec<gatehouse_core::shaping::ExposedToolView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.virtual_server_tools(&actor, &tenant, &virtual_server).await)
}

/// Sets a virtual server's conflict strategy (`auto`, `prefix`, `priority`, `explicit`) and its
/// upstreams' prefixes.
#[server(prefix = "/api/console", endpoint = "set_conflict_strategy", input = Json)]
pub async fn set_conflict_strategy(
    tenant: String,
    virtual_server: String,
    strategy: String,
    prefixes: Vec<gatehouse_core::shaping::UpstreamPrefix>,
) -> ApiResult<VirtualServerView> {
    let (s, actor) = ssr::signed_in().await?;
    let Some(strategy) = gatehouse_core::shaping::ConflictStrategy::parse(&strategy) else {
        return Err(ConsoleError::invalid("strategy", "must be 'auto', 'prefix', 'priority' or 'explicit'"));
    };
    ssr::answer(s.set_conflict_strategy(&actor, &tenant, &virtual_server, strategy, &prefixes).await)
}

/// Sets (adds or replaces) the override of one upstream tool of a virtual server.
#[server(prefix = "/api/console", endpoint = "set_tool_override", input = Json)]
pub async fn set_tool_override(
    tenant: String,
    virtual_server: String,
    tool_override: gatehouse_core::shaping::ToolOverride,
) -> ApiResult<VirtualServerView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.set_tool_override(&actor, &tenant, &virtual_server, &tool_override).await)
}

/// Deletes the override of one upstream tool of a virtual server.
#[server(prefix = "/api/console", endpoint = "delete_tool_override")]
pub async fn delete_tool_override(
    tenant: String,
    virtual_server: String,
    server: String,
    tool: String,
) -> ApiResult<VirtualServerView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.delete_tool_override(&actor, &tenant, &virtual_server, &server, &tool).await)
}

// ------------------------------------------------------------------ tokens

/// A tenant's API tokens (never their secrets).
#[server(prefix = "/api/console", endpoint = "tokens")]
pub async fn list_tokens(tenant: String) -> ApiResult<Vec<TokenView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_tokens(&actor, &tenant).await)
}

/// Creates an API token; the answer carries the secret, this once.
#[server(prefix = "/api/console", endpoint = "create_token")]
pub async fn create_token(
    tenant: String,
    user_email: String,
    name: String,
    #[server(default)] expires_in_days: String,
) -> ApiResult<CreatedTokenView> {
    let (s, actor) = ssr::signed_in().await?;
    if user_email.is_empty() {
        return ssr::answer(Err(ConsoleError::invalid("user", "choose the user the token authenticates")));
    }
    let days = match expires_in_days.trim() {
        "" => None,
        d => Some(ssr::answer(
            d.parse::<i32>()
                .map_err(|_| ConsoleError::invalid("expiry", "enter a whole number of days, or leave it empty")),
        )?),
    };
    ssr::answer(s.create_token(&actor, &tenant, &user_email, &name, days).await)
}

/// Revokes a token.
#[server(prefix = "/api/console", endpoint = "revoke_token")]
pub async fn revoke_token(tenant: String, id: String) -> ApiResult<bool> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.revoke_token(&actor, &tenant, &id).await)
}

// ------------------------------------------------------------------ audit

/// The newest audit events (at most `limit`, default 100).
#[server(prefix = "/api/console", endpoint = "audit")]
pub async fn list_audit(tenant: String, limit: Option<i32>) -> ApiResult<Vec<AuditView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_audit(&actor, &tenant, limit, None).await)
}

// ------------------------------------------------------------------ publishing

/// The tenant's publishing mode, its draft's access diff and replay.
#[server(prefix = "/api/console", endpoint = "policy_draft")]
pub async fn policy_draft(tenant: String) -> ApiResult<gatehouse_core::views::PolicyDraftView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.policy_draft(&actor, &tenant).await)
}

/// The tenant's publications, newest first.
#[server(prefix = "/api/console", endpoint = "publications")]
pub async fn list_publications(tenant: String) -> ApiResult<Vec<gatehouse_core::views::PublicationView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_publications(&actor, &tenant, None).await)
}

/// Sets the publishing mode (`automatic` or `reviewed`).
#[server(prefix = "/api/console", endpoint = "set_publishing_mode")]
pub async fn set_publishing_mode(tenant: String, mode: String) -> ApiResult<String> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.set_publishing_mode(&actor, &tenant, &mode).await)
}

/// Publishes the draft with a note.
#[server(prefix = "/api/console", endpoint = "publish_policy")]
pub async fn publish_policy(
    tenant: String,
    #[server(default)] note: String,
) -> ApiResult<gatehouse_core::views::PublicationView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.publish_policy(&actor, &tenant, &note).await)
}

/// Re-publishes an earlier publication's revision.
#[server(prefix = "/api/console", endpoint = "rollback_policy")]
pub async fn rollback_policy(
    tenant: String,
    revision: String,
    #[server(default)] note: String,
) -> ApiResult<gatehouse_core::views::PublicationView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.rollback_policy(&actor, &tenant, &revision, &note).await)
}

// ------------------------------------------------------------------ groups and user attributes

/// A tenant's local groups, with members and roles.
#[server(prefix = "/api/console", endpoint = "groups")]
pub async fn list_groups(tenant: String) -> ApiResult<Vec<gatehouse_core::groups::GroupView>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.list_groups(&actor, &tenant).await)
}

/// Creates a local group.
#[server(prefix = "/api/console", endpoint = "create_group")]
pub async fn create_group(tenant: String, slug: String, name: String) -> ApiResult<gatehouse_core::groups::GroupView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.create_group(&actor, &tenant, slug.trim(), &name).await)
}

/// Deletes a group; answers its slug.
#[server(prefix = "/api/console", endpoint = "delete_group")]
pub async fn delete_group(tenant: String, slug: String) -> ApiResult<String> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.delete_group(&actor, &tenant, &slug).await.map(|_| slug))
}

/// Puts a user in a group (`member` = `add`) or takes them out (`remove`).
#[server(prefix = "/api/console", endpoint = "group_member")]
pub async fn group_member(
    tenant: String,
    group: String,
    email: String,
    member: String,
) -> ApiResult<gatehouse_core::groups::GroupView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.set_group_member(&actor, &tenant, &group, &email, member != "remove").await)
}

/// Binds a role to a group (`bound` = `bind`) or unbinds it (`unbind`).
#[server(prefix = "/api/console", endpoint = "group_role")]
pub async fn group_role(
    tenant: String,
    group: String,
    role: String,
    bound: String,
) -> ApiResult<gatehouse_core::groups::GroupView> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.set_group_role(&actor, &tenant, &group, role.trim(), bound != "unbind").await)
}

/// A user's attributes as `key=value` lines.
#[server(prefix = "/api/console", endpoint = "user_attributes")]
pub async fn user_attributes(tenant: String, email: String) -> ApiResult<Vec<gatehouse_core::groups::UserAttribute>> {
    let (s, actor) = ssr::signed_in().await?;
    ssr::answer(s.user_attributes(&actor, &tenant, &email).await)
}

/// Replaces a user's attributes from `key=value` lines (blank lines are skipped).
#[server(prefix = "/api/console", endpoint = "set_user_attributes")]
pub async fn set_user_attributes(
    tenant: String,
    email: String,
    #[server(default)] attributes: String,
) -> ApiResult<Vec<gatehouse_core::groups::UserAttribute>> {
    let (s, actor) = ssr::signed_in().await?;
    let attrs = crate::pages::groups::parse_attributes(&attributes)?;
    ssr::answer(s.set_user_attributes(&actor, &tenant, &email, &attrs).await)
}
