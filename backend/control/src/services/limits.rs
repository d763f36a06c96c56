//! Rate limits: saved only when valid, compiled into the bundle with roles, users and servers
//! named the way the worker knows them (role slug, user id, server slug).

use gatehouse_bundle::format::RateLimit;
use gatehouse_core::GatehouseError;
use gatehouse_core::limits::{LimitScope, RateLimitInput, RateLimitView, validate_limit};
use gatehouse_store::{RateLimitRow, Role, Server, Store, StoreError, User};

use super::{Actor, Need, Result, Services, new_id, store_err};
use crate::now_ms;

fn u32_of(v: i64, what: &str, id: &str) -> std::result::Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("rate limit {id}: {what} {v}")))
}

/// Names resolved from ids: (role slug, user e-mail or id, server slug).
struct Names<'a> {
    roles: &'a [Role],
    users: &'a [User],
    servers: &'a [Server],
}

impl Names<'_> {
    fn role(&self, id: &Option<String>) -> Option<String> {
        id.as_ref().and_then(|id| self.roles.iter().find(|r| &r.id == id).map(|r| r.slug.clone()))
    }
    fn email(&self, id: &Option<String>) -> Option<String> {
        id.as_ref().and_then(|id| self.users.iter().find(|u| &u.id == id).map(|u| u.email.clone()))
    }
    fn server(&self, id: &Option<String>) -> Option<String> {
        id.as_ref().and_then(|id| self.servers.iter().find(|s| &s.id == id).map(|s| s.slug.clone()))
    }
}

fn view(r: &RateLimitRow, names: &Names<'_>) -> std::result::Result<RateLimitView, StoreError> {
    Ok(RateLimitView {
        id: r.id.clone(),
        scope: LimitScope::parse(&r.scope).ok_or_else(|| StoreError::Corrupt(format!("rate limit {}: scope", r.id)))?,
        role: names.role(&r.role_id),
        user: names.email(&r.user_id),
        server: names.server(&r.server_id),
        tool: r.tool.clone(),
        requests: u32_of(r.requests, "requests", &r.id)?,
        per_seconds: u32_of(r.per_seconds, "perSeconds", &r.id)?,
        burst: r.burst.map(|b| u32_of(b, "burst", &r.id)).transpose()?,
        description: r.description.clone(),
        created_at_ms: r.created_at_ms,
    })
}

/// The tenant's rate limits in bundle form. A limit whose role, user or server is gone is left out by
/// the database (the rows cascade away with it).
pub(crate) async fn compiled_limits(
    store: &Store,
    tenant_id: &str,
    roles: &[Role],
    servers: &[Server],
) -> std::result::Result<Vec<RateLimit>, StoreError> {
    let rows = store.list_rate_limits(tenant_id).await?;
    let names = Names { roles, users: &[], servers };
    rows.iter()
        .map(|r| {
            let v = view(r, &names)?;
            Ok(RateLimit {
                id: v.id,
                scope: v.scope,
                role: v.role,
                user: r.user_id.clone(),
                server: v.server,
                tool: v.tool,
                requests: v.requests,
                per_seconds: v.per_seconds,
                burst: v.burst,
            })
        })
        .collect()
}

impl Services {
    /// A tenant's rate limits, oldest first.
    pub async fn list_rate_limits(&self, actor: &Actor, tenant: &str) -> Result<Vec<RateLimitView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let rows = self.store.list_rate_limits(&t.id).await.map_err(store_err("rate limit"))?;
        let roles = self.store.list_roles(&t.id).await.map_err(store_err("role"))?;
        let users = self.store.list_users(&t.id).await.map_err(store_err("user"))?;
        let servers = self.store.list_servers(&t.id).await.map_err(store_err("server"))?;
        let names = Names { roles: &roles, users: &users, servers: &servers };
        rows.iter().map(|r| view(r, &names).map_err(store_err("rate limit"))).collect()
    }

    /// Adds a rate limit. Errors name the field (`requests`, `role`, `server`, ...).
    pub async fn add_rate_limit(&self, actor: &Actor, tenant: &str, input: &RateLimitInput) -> Result<RateLimitView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        validate_limit(input)?;
        let role_id = match &input.role {
            Some(slug) => Some(
                self.store
                    .role_by_slug(&t.id, slug)
                    .await
                    .map_err(store_err("role"))?
                    .ok_or_else(|| GatehouseError::invalid("role", format!("no role '{slug}' in this tenant")))?
                    .id,
            ),
            None => None,
        };
        let user_id = match &input.user {
            Some(email) => Some(
                self.store
                    .user_by_email(&t.id, &email.trim().to_lowercase())
                    .await
                    .map_err(store_err("user"))?
                    .ok_or_else(|| GatehouseError::invalid("user", format!("no user '{email}' in this tenant")))?
                    .id,
            ),
            None => None,
        };
        let server_id = match &input.server {
            Some(slug) => Some(
                self.store
                    .server_by_slug(&t.id, slug)
                    .await
                    .map_err(store_err("server"))?
                    .ok_or_else(|| GatehouseError::invalid("server", format!("no server '{slug}' in this tenant")))?
                    .id,
            ),
            None => None,
        };
        let row = RateLimitRow {
            tenant_id: t.id.clone(),
            id: new_id(),
            scope: input.scope.as_str().to_owned(),
            role_id,
            user_id,
            server_id,
            tool: input.tool.clone(),
            requests: i64::from(input.requests),
            per_seconds: i64::from(input.per_seconds),
            burst: input.burst.map(i64::from),
            description: input.description.trim().to_owned(),
            created_at_ms: now_ms(),
        };
        self.store.insert_rate_limit(&row).await.map_err(store_err("rate limit"))?;
        self.recompile(&t).await?;
        Ok(RateLimitView {
            id: row.id,
            scope: input.scope,
            role: input.role.clone(),
            user: input.user.as_ref().map(|e| e.trim().to_lowercase()),
            server: input.server.clone(),
            tool: input.tool.clone(),
            requests: input.requests,
            per_seconds: input.per_seconds,
            burst: input.burst,
            description: row.description,
            created_at_ms: row.created_at_ms,
        })
    }

    /// Deletes a rate limit by id.
    pub async fn delete_rate_limit(&self, actor: &Actor, tenant: &str, id: &str) -> Result<bool> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        if !self.store.delete_rate_limit(&t.id, id).await.map_err(store_err("rate limit"))? {
            return Err(GatehouseError::not_found(format!("rate limit '{id}'")));
        }
        self.recompile(&t).await?;
        Ok(true)
    }
}
