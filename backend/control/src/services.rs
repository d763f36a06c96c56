//! Domain services: every operation the console and the GraphQL API offer.
//!
//! Each call takes the [`Actor`] doing it, checks that the actor may act in the named tenant, validates
//! its input into a specific [`GatehouseError`], changes the store, and recompiles the tenant's bundle
//! when policy-relevant state changed. Another tenant's objects are reported as "not found", never as
//! "forbidden", so a caller cannot learn which tenants exist.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gatehouse_core::ids::{validate_email, validate_slug};
use gatehouse_core::views::*;
use gatehouse_core::{ErrorCode, GatehouseError};
use gatehouse_store::{
    ApiToken, ROLE_MEMBER, ROLE_PLATFORM_ADMIN, ROLE_TENANT_ADMIN, Role, Server, Store, StoreError, Tenant, User,
    VirtualServer,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::bundles::Bundles;
use crate::{auth, now_ms};

mod classification;
mod gateways;
mod groups;
mod kill;
mod limits;
mod policy;
pub use policy::CallContext;
mod publishing;
mod sessions;
mod shaping;
mod transport;
pub use transport::ServerSpec;
pub(crate) use transport::bundle_transport;

pub(crate) use classification::{classification_view, compiled_rule};
pub(crate) use kill::kill_list;
pub(crate) use limits::compiled_limits;
pub(crate) use policy::rule_view;
pub(crate) use sessions::session_cutoffs;
pub(crate) use shaping::compile_shaping;

/// Result of a service call.
pub type Result<T> = std::result::Result<T, GatehouseError>;

/// Who is acting: a signed-in console user, or the owner of an API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// User id.
    pub user_id: String,
    /// The user's tenant id.
    pub tenant_id: String,
    /// The user's tenant slug.
    pub tenant_slug: String,
    /// E-mail.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Console role.
    pub console_role: String,
}

impl Actor {
    fn is_platform_admin(&self) -> bool {
        self.console_role == ROLE_PLATFORM_ADMIN
    }
}

/// What an actor needs to be allowed in a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Admin,
}

/// The domain services.
#[derive(Debug, Clone)]
pub struct Services {
    store: Store,
    bundles: Bundles,
    gateway_public_url: String,
    /// Commands stdio servers may run for tool discovery (`set_stdio_commands`).
    stdio_commands: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
}

/// Maps a store error to a user-facing one; `what` names the object for conflicts.
pub(crate) fn store_err(what: &str) -> impl FnOnce(StoreError) -> GatehouseError + '_ {
    move |e| match e {
        StoreError::Conflict(_) => GatehouseError::new(ErrorCode::Conflict, format!("{what} already exists")),
        StoreError::MissingReference(_) => GatehouseError::not_found(format!("an object referenced by this {what}")),
        other => {
            let reference = uuid::Uuid::now_v7();
            tracing::error!(%reference, error = %other, "store failure");
            GatehouseError::internal(reference)
        }
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn trimmed(field: &str, value: &str, max: usize) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(GatehouseError::invalid(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(GatehouseError::invalid(field, format!("must be at most {max} characters")));
    }
    Ok(v.to_owned())
}

fn tools_of(server: &Server) -> Vec<ToolView> {
    let tools: Vec<serde_json::Value> = serde_json::from_str(&server.tools_json).unwrap_or_default();
    tools
        .iter()
        .filter_map(|t| {
            Some(ToolView {
                name: t.get("name")?.as_str()?.to_owned(),
                description: t.get("description").and_then(|d| d.as_str()).map(str::to_owned),
                input_schema: t.get("inputSchema").cloned(),
                annotations: t.get("annotations").cloned(),
            })
        })
        .collect()
}

fn server_view(s: &Server) -> ServerView {
    let mut view = ServerView {
        slug: s.slug.clone(),
        name: s.name.clone(),
        url: s.url.clone(),
        tools: tools_of(s),
        labels: classification::server_labels(s),
        tools_fetched_at_ms: s.tools_fetched_at_ms,
        transport: s.transport.clone(),
        command: None,
        args: vec![],
        env_names: vec![],
    };
    transport::describe(s, &mut view);
    view
}

/// Hex SHA-256, as tokens are stored and carried in bundles.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl Services {
    /// Services over `store`, recompiling through `bundles`.
    pub fn new(store: Store, bundles: Bundles, gateway_public_url: String) -> Self {
        Self { store, bundles, gateway_public_url, stdio_commands: Default::default() }
    }

    /// The bundle compiler and distribution.
    pub fn bundles(&self) -> &Bundles {
        &self.bundles
    }

    /// Compiles every tenant (at start-up, so state changed by another version is picked up).
    pub async fn recompile_all(&self) -> anyhow::Result<()> {
        for t in self.store.list_tenants().await? {
            self.bundles.recompile(&t).await?;
        }
        Ok(())
    }

    async fn recompile(&self, tenant: &Tenant) -> Result<()> {
        self.bundles.recompile(tenant).await.map_err(|e| {
            let reference = uuid::Uuid::now_v7();
            tracing::error!(%reference, tenant = %tenant.slug, error = %e, "bundle compilation failed");
            GatehouseError::internal(reference)
        })
    }

    async fn tenant_for(&self, actor: &Actor, slug: &str, need: Need) -> Result<Tenant> {
        let not_found = || GatehouseError::not_found(format!("tenant '{slug}'"));
        let tenant = self.store.tenant_by_slug(slug).await.map_err(store_err("tenant"))?.ok_or_else(not_found)?;
        if actor.is_platform_admin() {
            return Ok(tenant);
        }
        if actor.tenant_id != tenant.id {
            return Err(not_found());
        }
        if need == Need::Admin && actor.console_role != ROLE_TENANT_ADMIN {
            return Err(GatehouseError::new(
                ErrorCode::Forbidden,
                "this needs the tenant admin console role; ask an admin of this tenant",
            ));
        }
        Ok(tenant)
    }

    // ------------------------------------------------------------------ identity

    /// Signs in with e-mail and password.
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<Actor> {
        let email = email.trim().to_lowercase();
        let wrong = || GatehouseError::new(ErrorCode::InvalidCredentials, "e-mail or password is wrong");
        let candidates = self.store.sign_in_candidates(&email).await.map_err(store_err("user"))?;
        if candidates.is_empty() {
            // Spend the same time as a real check, so response time does not reveal accounts.
            auth::verify_password(password.to_owned(), auth::dummy_hash()).await;
            return Err(wrong());
        }
        for user in candidates {
            let Some(hash) = user.password_hash.clone() else { continue };
            if auth::verify_password(password.to_owned(), hash).await {
                return self.actor(&user.tenant_id, &user.id).await;
            }
        }
        Err(wrong())
    }

    /// The actor for a user (used to restore a console session).
    pub async fn actor(&self, tenant_id: &str, user_id: &str) -> Result<Actor> {
        let gone = || GatehouseError::new(ErrorCode::Unauthenticated, "your account no longer exists; sign in again");
        let user = self.store.user_by_id(tenant_id, user_id).await.map_err(store_err("user"))?.ok_or_else(gone)?;
        let tenant = self.store.tenant_by_id(tenant_id).await.map_err(store_err("tenant"))?.ok_or_else(gone)?;
        Ok(Actor {
            user_id: user.id,
            tenant_id: tenant.id,
            tenant_slug: tenant.slug,
            email: user.email,
            display_name: user.display_name,
            console_role: user.console_role,
        })
    }

    /// The actor for an API token (GraphQL bearer authentication).
    pub async fn actor_for_token(&self, secret: &str) -> Result<Actor> {
        let bad = || GatehouseError::new(ErrorCode::Unauthenticated, "the bearer token is unknown, revoked or expired");
        let token = self.store.token_by_hash(&sha256_hex(secret)).await.map_err(store_err("token"))?.ok_or_else(bad)?;
        if token.expires_at_ms.is_some_and(|e| now_ms() >= e) {
            return Err(bad());
        }
        self.actor(&token.tenant_id, &token.user_id).await
    }

    /// The signed-in user's own view.
    pub fn me(&self, actor: &Actor) -> MeView {
        MeView {
            id: actor.user_id.clone(),
            email: actor.email.clone(),
            display_name: actor.display_name.clone(),
            console_role: actor.console_role.clone(),
            tenant: actor.tenant_slug.clone(),
        }
    }

    /// Creates the first platform administrator (and the `platform` tenant that is its home) when
    /// there is none. Returns the password when one was generated.
    pub async fn ensure_bootstrap_admin(&self, email: &str, password: Option<&str>) -> anyhow::Result<Option<String>> {
        if self.store.count_platform_admins().await? > 0 {
            return Ok(None);
        }
        validate_email("admin email", email)?;
        let generated = password.is_none();
        let password = match password {
            Some(p) => p.to_owned(),
            None => {
                let mut b = [0u8; 12];
                rand::thread_rng().fill_bytes(&mut b);
                hex::encode(b)
            }
        };
        let tenant = match self.store.tenant_by_slug("platform").await? {
            Some(t) => t,
            None => {
                let t = Tenant {
                    id: new_id(),
                    slug: "platform".into(),
                    name: "Platform operators".into(),
                    created_at_ms: now_ms(),
                };
                self.store.create_tenant(&t).await?;
                t
            }
        };
        let user = User {
            tenant_id: tenant.id.clone(),
            id: new_id(),
            email: email.to_lowercase(),
            display_name: "Administrator".into(),
            password_hash: Some(auth::hash_password(password.clone()).await?),
            console_role: ROLE_PLATFORM_ADMIN.into(),
            created_at_ms: now_ms(),
        };
        self.store.create_user(&user).await?;
        self.bundles.recompile(&tenant).await?;
        Ok(generated.then_some(password))
    }

    // ------------------------------------------------------------------ tenants

    /// Tenants the actor can see: all of them for platform admins, else the actor's own.
    pub async fn list_tenants(&self, actor: &Actor) -> Result<Vec<TenantView>> {
        let tenants = if actor.is_platform_admin() {
            self.store.list_tenants().await.map_err(store_err("tenant"))?
        } else {
            self.store.tenant_by_id(&actor.tenant_id).await.map_err(store_err("tenant"))?.into_iter().collect()
        };
        Ok(tenants
            .into_iter()
            .map(|t| TenantView { slug: t.slug, name: t.name, created_at_ms: t.created_at_ms })
            .collect())
    }

    /// One tenant.
    pub async fn tenant(&self, actor: &Actor, slug: &str) -> Result<TenantView> {
        let t = self.tenant_for(actor, slug, Need::Read).await?;
        Ok(TenantView { slug: t.slug, name: t.name, created_at_ms: t.created_at_ms })
    }

    /// Creates a tenant (platform administrators only).
    pub async fn create_tenant(&self, actor: &Actor, slug: &str, name: &str) -> Result<TenantView> {
        if !actor.is_platform_admin() {
            return Err(GatehouseError::new(ErrorCode::Forbidden, "only platform administrators can create tenants"));
        }
        validate_slug("slug", slug)?;
        let name = trimmed("name", name, 100)?;
        let t = Tenant { id: new_id(), slug: slug.to_owned(), name, created_at_ms: now_ms() };
        self.store.create_tenant(&t).await.map_err(store_err("a tenant with this slug"))?;
        self.recompile(&t).await?;
        Ok(TenantView { slug: t.slug, name: t.name, created_at_ms: t.created_at_ms })
    }

    // ------------------------------------------------------------------ servers

    /// A tenant's upstream servers.
    pub async fn list_servers(&self, actor: &Actor, tenant: &str) -> Result<Vec<ServerView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        Ok(self.store.list_servers(&t.id).await.map_err(store_err("server"))?.iter().map(server_view).collect())
    }

    /// Registers a Streamable HTTP upstream server by URL and fetches its tools. Nothing is stored
    /// when the server cannot be reached, so a typo costs nothing. Other transports:
    /// [`Services::register_server_spec`].
    pub async fn register_server(
        &self,
        actor: &Actor,
        tenant: &str,
        slug: &str,
        name: &str,
        url: &str,
    ) -> Result<ServerView> {
        let spec = ServerSpec { url: Some(url.to_owned()), ..Default::default() };
        self.register_server_spec(actor, tenant, slug, name, &spec).await
    }

    /// Fetches a server's tools again.
    pub async fn refresh_server_tools(&self, actor: &Actor, tenant: &str, slug: &str) -> Result<ServerView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let mut s = self
            .store
            .server_by_slug(&t.id, slug)
            .await
            .map_err(store_err("server"))?
            .ok_or_else(|| GatehouseError::not_found(format!("server '{slug}'")))?;
        let tools = self.discover_tools(&s).await?;
        s.tools_json = serde_json::to_string(&tools).unwrap_or_else(|_| "[]".into());
        s.tools_fetched_at_ms = Some(now_ms());
        self.store.update_server_tools(&t.id, &s.id, &s.tools_json, now_ms()).await.map_err(store_err("server"))?;
        self.recompile(&t).await?;
        Ok(server_view(&s))
    }

    // ------------------------------------------------------------------ roles

    /// A tenant's access roles with their grants and members.
    pub async fn list_roles(&self, actor: &Actor, tenant: &str) -> Result<Vec<RoleView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        self.role_views(&t).await
    }

    async fn role_views(&self, t: &Tenant) -> Result<Vec<RoleView>> {
        let e = store_err("role");
        let (roles, grants, bindings, servers, users) = match tokio::try_join!(
            self.store.list_roles(&t.id),
            self.store.list_grants(&t.id),
            self.store.list_bindings(&t.id),
            self.store.list_servers(&t.id),
            self.store.list_users(&t.id),
        ) {
            Ok(all) => all,
            Err(err) => return Err(e(err)),
        };
        let server_slug: HashMap<_, _> = servers.iter().map(|s| (s.id.as_str(), s.slug.as_str())).collect();
        let email: HashMap<_, _> = users.iter().map(|u| (u.id.as_str(), u.email.as_str())).collect();
        let mut rules = self.rules_by_role(&t.id).await?;
        Ok(roles
            .iter()
            .map(|r| {
                let mut grants: Vec<GrantView> = grants
                    .iter()
                    .filter(|g| g.role_id == r.id)
                    .filter_map(|g| {
                        Some(GrantView {
                            server: server_slug.get(g.server_id.as_str())?.to_string(),
                            tool: g.tool.clone(),
                        })
                    })
                    .collect();
                grants.sort();
                let mut members: Vec<String> = bindings
                    .iter()
                    .filter(|b| b.role_id == r.id)
                    .filter_map(|b| email.get(b.user_id.as_str()).map(|e| e.to_string()))
                    .collect();
                members.sort();
                RoleView {
                    slug: r.slug.clone(),
                    description: r.description.clone(),
                    grants,
                    rules: rules.remove(&r.id).unwrap_or_default(),
                    members,
                }
            })
            .collect())
    }

    async fn role_view(&self, t: &Tenant, slug: &str) -> Result<RoleView> {
        self.role_views(t)
            .await?
            .into_iter()
            .find(|r| r.slug == slug)
            .ok_or_else(|| GatehouseError::not_found(format!("role '{slug}'")))
    }

    async fn role_by_slug(&self, t: &Tenant, slug: &str) -> Result<Role> {
        self.store
            .role_by_slug(&t.id, slug)
            .await
            .map_err(store_err("role"))?
            .ok_or_else(|| GatehouseError::not_found(format!("role '{slug}'")))
    }

    /// Creates an access role with no grants.
    pub async fn create_role(&self, actor: &Actor, tenant: &str, slug: &str, description: &str) -> Result<RoleView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        validate_slug("slug", slug)?;
        let description = description.trim();
        if description.chars().count() > 500 {
            return Err(GatehouseError::invalid("description", "must be at most 500 characters"));
        }
        let r = Role {
            tenant_id: t.id.clone(),
            id: new_id(),
            slug: slug.to_owned(),
            description: description.to_owned(),
            created_at_ms: now_ms(),
        };
        self.store.create_role(&r).await.map_err(store_err("a role with this slug"))?;
        self.recompile(&t).await?;
        self.role_view(&t, slug).await
    }

    /// Replaces a role's grants. Each grant names a registered server and one of its tools (as last
    /// fetched), or `*` for all of its tools.
    pub async fn set_role_grants(
        &self,
        actor: &Actor,
        tenant: &str,
        role: &str,
        grants: &[GrantView],
    ) -> Result<RoleView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let r = self.role_by_slug(&t, role).await?;
        let servers = self.store.list_servers(&t.id).await.map_err(store_err("server"))?;
        let by_slug: HashMap<_, _> = servers.iter().map(|s| (s.slug.as_str(), s)).collect();
        let mut rows = BTreeSet::new();
        for (i, g) in grants.iter().enumerate() {
            let s = by_slug.get(g.server.as_str()).ok_or_else(|| {
                GatehouseError::invalid(
                    &format!("grants[{i}].server"),
                    format!("no server '{}' in this tenant", g.server),
                )
            })?;
            if g.tool != "*" && !tools_of(s).iter().any(|tool| tool.name == g.tool) {
                return Err(GatehouseError::invalid(
                    &format!("grants[{i}].tool"),
                    format!(
                        "server '{}' has no tool '{}' (refresh its tools if it was added recently)",
                        g.server, g.tool
                    ),
                ));
            }
            rows.insert((s.id.clone(), g.tool.clone()));
        }
        let rows: Vec<_> = rows.into_iter().collect();
        self.store.set_role_grants(&t.id, &r.id, &rows).await.map_err(store_err("grant"))?;
        self.recompile(&t).await?;
        self.role_view(&t, role).await
    }

    /// Binds a user (by e-mail) to a role.
    pub async fn bind_role(&self, actor: &Actor, tenant: &str, role: &str, email: &str) -> Result<RoleView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let r = self.role_by_slug(&t, role).await?;
        let u = self.user_by_email(&t, email).await?;
        self.store.bind_role(&t.id, &r.id, &u.id).await.map_err(store_err("binding"))?;
        self.recompile(&t).await?;
        self.role_view(&t, role).await
    }

    /// Removes a user's binding to a role.
    pub async fn unbind_role(&self, actor: &Actor, tenant: &str, role: &str, email: &str) -> Result<RoleView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let r = self.role_by_slug(&t, role).await?;
        let u = self.user_by_email(&t, email).await?;
        self.store.unbind_role(&t.id, &r.id, &u.id).await.map_err(store_err("binding"))?;
        self.recompile(&t).await?;
        self.role_view(&t, role).await
    }

    // ------------------------------------------------------------------ users

    async fn user_by_email(&self, t: &Tenant, email: &str) -> Result<User> {
        let email = email.trim().to_lowercase();
        self.store
            .user_by_email(&t.id, &email)
            .await
            .map_err(store_err("user"))?
            .ok_or_else(|| GatehouseError::not_found(format!("user '{email}'")))
    }

    /// A tenant's users with their roles.
    pub async fn list_users(&self, actor: &Actor, tenant: &str) -> Result<Vec<UserView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let users = self.store.list_users(&t.id).await.map_err(store_err("user"))?;
        let roles = self.store.list_roles(&t.id).await.map_err(store_err("role"))?;
        let bindings = self.store.list_bindings(&t.id).await.map_err(store_err("binding"))?;
        let role_slug: HashMap<_, _> = roles.iter().map(|r| (r.id.as_str(), r.slug.as_str())).collect();
        let mut by_user: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for b in &bindings {
            if let Some(slug) = role_slug.get(b.role_id.as_str()) {
                by_user.entry(b.user_id.as_str()).or_default().push(slug.to_string());
            }
        }
        Ok(users
            .iter()
            .map(|u| UserView {
                id: u.id.clone(),
                email: u.email.clone(),
                display_name: u.display_name.clone(),
                console_role: u.console_role.clone(),
                roles: by_user.get(u.id.as_str()).cloned().unwrap_or_default(),
            })
            .collect())
    }

    /// Adds a user to a tenant. `password` lets the user sign in to the console; without one the
    /// user only uses the gateway with API tokens.
    pub async fn create_user(
        &self,
        actor: &Actor,
        tenant: &str,
        email: &str,
        display_name: &str,
        console_role: &str,
        password: Option<&str>,
    ) -> Result<UserView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let email = email.trim().to_lowercase();
        validate_email("email", &email)?;
        let display_name = trimmed("displayName", display_name, 100)?;
        if ![ROLE_TENANT_ADMIN, ROLE_MEMBER].contains(&console_role) {
            return Err(GatehouseError::invalid("consoleRole", "must be 'admin' or 'member'"));
        }
        let password_hash = match password.filter(|p| !p.is_empty()) {
            Some(p) if p.chars().count() < 12 => {
                return Err(GatehouseError::invalid("password", "must be at least 12 characters"));
            }
            Some(p) => Some(auth::hash_password(p.to_owned()).await.map_err(|e| {
                let reference = uuid::Uuid::now_v7();
                tracing::error!(%reference, error = %e, "password hashing failed");
                GatehouseError::internal(reference)
            })?),
            None => None,
        };
        let u = User {
            tenant_id: t.id.clone(),
            id: new_id(),
            email,
            display_name,
            password_hash,
            console_role: console_role.to_owned(),
            created_at_ms: now_ms(),
        };
        self.store.create_user(&u).await.map_err(store_err("a user with this e-mail"))?;
        self.recompile(&t).await?;
        Ok(UserView {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            console_role: u.console_role,
            roles: vec![],
        })
    }

    // ------------------------------------------------------------------ virtual servers

    fn endpoint(&self, tenant: &str, vs: &str) -> String {
        format!("{}/mcp/{tenant}/{vs}", self.gateway_public_url)
    }

    /// A tenant's virtual servers.
    pub async fn list_virtual_servers(&self, actor: &Actor, tenant: &str) -> Result<Vec<VirtualServerView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let vss = self.store.list_virtual_servers(&t.id).await.map_err(store_err("virtual server"))?;
        let links = self.store.list_virtual_server_upstreams(&t.id).await.map_err(store_err("virtual server"))?;
        let servers = self.store.list_servers(&t.id).await.map_err(store_err("server"))?;
        let slug: HashMap<_, _> = servers.iter().map(|s| (s.id.as_str(), s.slug.as_str())).collect();
        let mut shaping = self.shaping_by_vs(&t.id, &servers).await?;
        Ok(vss
            .iter()
            .map(|vs| (vs, shaping.remove(&vs.id).unwrap_or_default()))
            .map(|(vs, shaping)| VirtualServerView {
                slug: vs.slug.clone(),
                name: vs.name.clone(),
                upstreams: links
                    .iter()
                    .filter(|l| l.virtual_server_id == vs.id)
                    .filter_map(|l| slug.get(l.server_id.as_str()).map(|s| s.to_string()))
                    .collect(),
                mode: gatehouse_core::rules::PolicyMode::parse(&vs.policy_mode).unwrap_or_default(),
                endpoint: self.endpoint(&t.slug, &vs.slug),
                conflict_strategy: shaping.strategy,
                prefixes: shaping.prefixes,
                overrides: shaping.overrides,
            })
            .collect())
    }

    /// Creates a virtual server exposing the named upstream servers, in order.
    pub async fn create_virtual_server(
        &self,
        actor: &Actor,
        tenant: &str,
        slug: &str,
        name: &str,
        servers: &[String],
    ) -> Result<VirtualServerView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        validate_slug("slug", slug)?;
        let name = trimmed("name", name, 100)?;
        if servers.is_empty() {
            return Err(GatehouseError::invalid("servers", "name at least one upstream server"));
        }
        let known = self.store.list_servers(&t.id).await.map_err(store_err("server"))?;
        let mut ids = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            let server = known.iter().find(|k| &k.slug == s).ok_or_else(|| {
                GatehouseError::invalid(&format!("servers[{i}]"), format!("no server '{s}' in this tenant"))
            })?;
            if ids.contains(&server.id) {
                return Err(GatehouseError::invalid(&format!("servers[{i}]"), format!("server '{s}' is listed twice")));
            }
            ids.push(server.id.clone());
        }
        let vs = VirtualServer {
            tenant_id: t.id.clone(),
            id: new_id(),
            slug: slug.to_owned(),
            name: name.clone(),
            policy_mode: gatehouse_core::rules::PolicyMode::Enforce.as_str().to_owned(),
            created_at_ms: now_ms(),
        };
        self.store.create_virtual_server(&vs, &ids).await.map_err(store_err("a virtual server with this slug"))?;
        self.recompile(&t).await?;
        Ok(VirtualServerView {
            slug: vs.slug.clone(),
            name,
            upstreams: servers.to_vec(),
            mode: gatehouse_core::rules::PolicyMode::Enforce,
            endpoint: self.endpoint(&t.slug, &vs.slug),
            conflict_strategy: Default::default(),
            prefixes: Vec::new(),
            overrides: Vec::new(),
        })
    }

    /// What `user_email` can do on virtual server `vs`, and why: every tool of its upstreams, decided
    /// by the gateway's own evaluator on the current bundle. Admins may ask about anyone; members
    /// about themselves.
    pub async fn explain_access(
        &self,
        actor: &Actor,
        tenant: &str,
        vs: &str,
        user_email: &str,
    ) -> Result<AccessExplanationView> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let user = self.user_by_email(&t, user_email).await?;
        self.may_explain(actor, &user)?;
        let vss = self.store.list_virtual_servers(&t.id).await.map_err(store_err("virtual server"))?;
        let v = vss
            .iter()
            .find(|v| v.slug == vs)
            .ok_or_else(|| GatehouseError::not_found(format!("virtual server '{vs}'")))?;
        let links = self.store.list_virtual_server_upstreams(&t.id).await.map_err(store_err("virtual server"))?;
        let servers = self.store.list_servers(&t.id).await.map_err(store_err("server"))?;
        let policy = self.active_policy(&t).await?;
        let mut tools = Vec::new();
        for link in links.iter().filter(|l| l.virtual_server_id == v.id) {
            let Some(server) = servers.iter().find(|s| s.id == link.server_id) else { continue };
            for tool in tools_of(server) {
                let decision = policy.authorize_tool(&user.id, &server.slug, &tool.name);
                tools.push(policy::access_view(&server.slug, &tool.name, decision));
            }
        }
        Ok(AccessExplanationView {
            user: user.email,
            virtual_server: v.slug.clone(),
            bundle_revision: policy.manifest.revision.clone(),
            tools,
        })
    }

    // ------------------------------------------------------------------ tokens

    fn token_view(t: &ApiToken, email: &str) -> TokenView {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            user_email: email.to_owned(),
            prefix: t.prefix.clone(),
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
            revoked_at_ms: t.revoked_at_ms,
        }
    }

    /// A tenant's API tokens (never their secrets).
    pub async fn list_tokens(&self, actor: &Actor, tenant: &str) -> Result<Vec<TokenView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let tokens = self.store.list_tokens(&t.id).await.map_err(store_err("token"))?;
        let users = self.store.list_users(&t.id).await.map_err(store_err("user"))?;
        let email: HashMap<_, _> = users.iter().map(|u| (u.id.as_str(), u.email.as_str())).collect();
        Ok(tokens.iter().map(|k| Self::token_view(k, email.get(k.user_id.as_str()).copied().unwrap_or(""))).collect())
    }

    /// Creates an API token for a user of the tenant. The secret is returned once.
    pub async fn create_token(
        &self,
        actor: &Actor,
        tenant: &str,
        user_email: &str,
        name: &str,
        expires_in_days: Option<i32>,
    ) -> Result<CreatedTokenView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let u = self.user_by_email(&t, user_email).await?;
        let name = trimmed("name", name, 100)?;
        let expires_at_ms = match expires_in_days {
            None => None,
            Some(d) if (1..=3650).contains(&d) => Some(now_ms() + i64::from(d) * 86_400_000),
            Some(_) => return Err(GatehouseError::invalid("expiresInDays", "must be between 1 and 3650")),
        };
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let secret = format!("ghp_{}", hex::encode(raw));
        let token = ApiToken {
            tenant_id: t.id.clone(),
            id: new_id(),
            user_id: u.id.clone(),
            name,
            sha256: sha256_hex(&secret),
            prefix: secret[..12].to_owned(),
            created_at_ms: now_ms(),
            expires_at_ms,
            revoked_at_ms: None,
        };
        self.store.create_token(&token).await.map_err(store_err("token"))?;
        self.recompile(&t).await?;
        Ok(CreatedTokenView { token: Self::token_view(&token, &u.email), secret })
    }

    /// Revokes a token; it stops working on every worker with the next bundle.
    pub async fn revoke_token(&self, actor: &Actor, tenant: &str, id: &str) -> Result<bool> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let revoked = self.store.revoke_token(&t.id, id, now_ms()).await.map_err(store_err("token"))?;
        if !revoked {
            return Err(GatehouseError::not_found(format!("active token '{id}'")));
        }
        self.recompile(&t).await?;
        Ok(true)
    }

    // ------------------------------------------------------------------ audit and bundles

    /// A tenant's audit events, newest first.
    pub async fn list_audit(
        &self,
        actor: &Actor,
        tenant: &str,
        limit: Option<i32>,
        before_ms: Option<i64>,
    ) -> Result<Vec<AuditView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let limit = match limit {
            None => 100,
            Some(l) if (1..=1000).contains(&l) => i64::from(l),
            Some(_) => return Err(GatehouseError::invalid("limit", "must be between 1 and 1000")),
        };
        let rows = self.store.list_audit(&t.id, limit, before_ms).await.map_err(store_err("audit event"))?;
        Ok(rows
            .into_iter()
            .map(|r| AuditView {
                id: r.id,
                time_ms: r.time_ms,
                user: r.user_email,
                client_name: r.client_name,
                client_version: r.client_version,
                virtual_server: r.virtual_server,
                upstream_server: r.upstream_server,
                method: r.method,
                tool: r.tool,
                exposed_tool: r.exposed_tool,
                outcome: r.outcome,
                reason: r.reason,
                latency_us: r.latency_us,
                bundle_revision: r.bundle_revision,
                rule_id: r.rule_id,
                findings: r.findings_json.as_deref().and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default(),
            })
            .collect())
    }

    /// The tenant's newest bundle.
    pub async fn bundle(&self, actor: &Actor, tenant: &str) -> Result<Option<BundleView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let b = self.bundles.latest(&t.id).await.map_err(store_err("bundle"))?;
        Ok(b.map(|b| BundleView { revision: b.revision, sequence: b.sequence, created_at_ms: b.created_at_ms }))
    }
}
