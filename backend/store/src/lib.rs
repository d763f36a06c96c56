//! Persistence for the control plane.
//!
//! One [`Store`] over either SQLite (the embedded default) or PostgreSQL. Queries are written once,
//! in the SQL both dialects share (`$1` placeholders work in both), and run on whichever typed pool
//! is configured; see `docs/decisions/0002-database-layer.md`. Every method that reads or writes
//! tenant data takes the tenant id first and names it in its `WHERE` clause.

mod cutoffs;
mod gateways;
mod model;
mod publishing;
mod sessions;
mod shaping;
#[cfg(feature = "testing")]
pub mod testing;

pub use cutoffs::SessionCutoffRow;
pub use gateways::*;
pub use model::*;
pub use publishing::{PublicationRow, PublishingModeRow};
pub use shaping::{ShapingRow, ToolOverrideRow};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (the message names the constraint when the database does).
    #[error("already exists: {0}")]
    Conflict(String),
    /// A referenced row does not exist.
    #[error("a referenced object does not exist: {0}")]
    MissingReference(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Db(#[source] sqlx::Error),
    /// A stored value does not decode (a JSON column written by something other than this code).
    #[error("stored value does not decode: {0}")]
    Corrupt(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::Conflict(db.constraint().unwrap_or(db.message()).to_owned());
            }
            if db.is_foreign_key_violation() {
                return StoreError::MissingReference(db.constraint().unwrap_or(db.message()).to_owned());
            }
        }
        StoreError::Db(e)
    }
}

/// Result of a store call.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Which database backs the store.
#[derive(Debug, Clone)]
pub enum Store {
    /// SQLite, one file (or memory), the embedded default.
    Sqlite(SqlitePool),
    /// PostgreSQL, for real deployments with several control-plane replicas.
    Postgres(PgPool),
}

/// Runs the same query code on whichever pool the store has. The body is expanded once per
/// database, so `sqlx` checks types and binds parameters natively for each.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc`, `sqlite::memory:`, or `postgres://…`) and runs
    /// the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            Store::Postgres(PgPoolOptions::new().max_connections(16).connect_with(opts).await?)
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .foreign_keys(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(std::time::Duration::from_secs(5));
            // An in-memory database exists per connection, so it must stay on one.
            let max = if url.contains(":memory:") { 1 } else { 8 };
            Store::Sqlite(SqlitePoolOptions::new().max_connections(max).connect_with(opts).await?)
        } else {
            return Err(StoreError::Db(sqlx::Error::Configuration(
                format!("unsupported database URL (expected sqlite:… or postgres://…): {}", redact_url(url)).into(),
            )));
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations from `migrations/sqlite` or `migrations/postgres`.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Sqlite(p) => sqlx::migrate!("../../migrations/sqlite").run(p).await?,
            Store::Postgres(p) => sqlx::migrate!("../../migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    /// "sqlite" or "postgres".
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    // ---------------------------------------------------------------- tenants

    /// Creates a tenant.
    pub async fn create_tenant(&self, t: &Tenant) -> Result<()> {
        on_pool!(self, |p| sqlx::query("INSERT INTO tenants (id, slug, name, created_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(&t.id)
            .bind(&t.slug)
            .bind(&t.name)
            .bind(t.created_at_ms)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The tenant with this slug.
    pub async fn tenant_by_slug(&self, slug: &str) -> Result<Option<Tenant>> {
        Ok(on_pool!(self, |p| sqlx::query_as("SELECT id, slug, name, created_at_ms FROM tenants WHERE slug = $1")
            .bind(slug)
            .fetch_optional(p)
            .await)?)
    }

    /// The tenant with this id.
    pub async fn tenant_by_id(&self, id: &str) -> Result<Option<Tenant>> {
        Ok(on_pool!(self, |p| sqlx::query_as("SELECT id, slug, name, created_at_ms FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(p)
            .await)?)
    }

    /// Every tenant, by slug. For platform administrators only.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        Ok(on_pool!(self, |p| sqlx::query_as("SELECT id, slug, name, created_at_ms FROM tenants ORDER BY slug")
            .fetch_all(p)
            .await)?)
    }

    // ---------------------------------------------------------------- users

    /// Creates a user.
    pub async fn create_user(&self, u: &User) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO users (tenant_id, id, email, display_name, password_hash, console_role, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(&u.tenant_id)
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(&u.console_role)
        .bind(u.created_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The users of a tenant, by e-mail.
    pub async fn list_users(&self, tenant_id: &str) -> Result<Vec<User>> {
        Ok(on_pool!(self, |p| sqlx::query_as(&format!("{USER_COLUMNS} WHERE tenant_id = $1 ORDER BY email"))
            .bind(tenant_id)
            .fetch_all(p)
            .await)?)
    }

    /// One user of a tenant.
    pub async fn user_by_id(&self, tenant_id: &str, id: &str) -> Result<Option<User>> {
        Ok(on_pool!(self, |p| sqlx::query_as(&format!("{USER_COLUMNS} WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(p)
            .await)?)
    }

    /// One user of a tenant, by e-mail.
    pub async fn user_by_email(&self, tenant_id: &str, email: &str) -> Result<Option<User>> {
        Ok(on_pool!(self, |p| sqlx::query_as(&format!("{USER_COLUMNS} WHERE tenant_id = $1 AND email = $2"))
            .bind(tenant_id)
            .bind(email)
            .fetch_optional(p)
            .await)?)
    }

    /// Users in any tenant who can sign in to the console with this e-mail and a password. This is
    /// the one cross-tenant read: sign-in happens before we know the tenant.
    pub async fn sign_in_candidates(&self, email: &str) -> Result<Vec<User>> {
        Ok(on_pool!(self, |p| sqlx::query_as(&format!(
            "{USER_COLUMNS} WHERE email = $1 AND password_hash IS NOT NULL ORDER BY created_at_ms"
        ))
        .bind(email)
        .fetch_all(p)
        .await)?)
    }

    /// Number of platform administrators (to know whether to bootstrap one).
    pub async fn count_platform_admins(&self) -> Result<i64> {
        Ok(on_pool!(self, |p| sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE console_role = $1")
            .bind(ROLE_PLATFORM_ADMIN)
            .fetch_one(p)
            .await)?)
    }

    // ---------------------------------------------------------------- servers

    /// Registers an upstream server.
    pub async fn create_server(&self, s: &Server) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO servers (tenant_id, id, slug, name, url, tools_json, tools_fetched_at_ms, labels_json, \
             created_at_ms, transport, command_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )
        .bind(&s.tenant_id)
        .bind(&s.id)
        .bind(&s.slug)
        .bind(&s.name)
        .bind(&s.url)
        .bind(&s.tools_json)
        .bind(s.tools_fetched_at_ms)
        .bind(&s.labels_json)
        .bind(s.created_at_ms)
        .bind(&s.transport)
        .bind(&s.command_json)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// A tenant's servers, by slug.
    pub async fn list_servers(&self, tenant_id: &str) -> Result<Vec<Server>> {
        Ok(on_pool!(self, |p| sqlx::query_as(&format!("{SERVER_COLUMNS} WHERE tenant_id = $1 ORDER BY slug"))
            .bind(tenant_id)
            .fetch_all(p)
            .await)?)
    }

    /// One server of a tenant, by slug.
    pub async fn server_by_slug(&self, tenant_id: &str, slug: &str) -> Result<Option<Server>> {
        Ok(on_pool!(self, |p| sqlx::query_as(&format!("{SERVER_COLUMNS} WHERE tenant_id = $1 AND slug = $2"))
            .bind(tenant_id)
            .bind(slug)
            .fetch_optional(p)
            .await)?)
    }

    /// Replaces a server's tool snapshot. Returns false when no such server is in the tenant.
    pub async fn update_server_tools(&self, tenant_id: &str, id: &str, tools_json: &str, at_ms: i64) -> Result<bool> {
        let r = on_pool!(self, |p| sqlx::query(
            "UPDATE servers SET tools_json = $3, tools_fetched_at_ms = $4 WHERE tenant_id = $1 AND id = $2"
        )
        .bind(tenant_id)
        .bind(id)
        .bind(tools_json)
        .bind(at_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(r == 1)
    }

    /// Replaces a server's labels (a JSON list). Returns false when no such server is in the tenant.
    pub async fn set_server_labels(&self, tenant_id: &str, id: &str, labels_json: &str) -> Result<bool> {
        let r =
            on_pool!(self, |p| sqlx::query("UPDATE servers SET labels_json = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(id)
                .bind(labels_json)
                .execute(p)
                .await
                .map(|r| r.rows_affected()))?;
        Ok(r == 1)
    }

    // ---------------------------------------------------------------- rate limits

    /// Stores a rate limit.
    pub async fn insert_rate_limit(&self, r: &RateLimitRow) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO rate_limits (tenant_id, id, scope, role_id, user_id, server_id, tool, requests, per_seconds, \
             burst, description, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        )
        .bind(&r.tenant_id)
        .bind(&r.id)
        .bind(&r.scope)
        .bind(&r.role_id)
        .bind(&r.user_id)
        .bind(&r.server_id)
        .bind(&r.tool)
        .bind(r.requests)
        .bind(r.per_seconds)
        .bind(r.burst)
        .bind(&r.description)
        .bind(r.created_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes a rate limit of a tenant; returns whether there was one.
    pub async fn delete_rate_limit(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query("DELETE FROM rate_limits WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// A tenant's rate limits, oldest first.
    pub async fn list_rate_limits(&self, tenant_id: &str) -> Result<Vec<RateLimitRow>> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(
            "SELECT tenant_id, id, scope, role_id, user_id, server_id, tool, requests, per_seconds, burst, description, \
             created_at_ms FROM rate_limits WHERE tenant_id = $1 ORDER BY created_at_ms, id"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await
        })?)
    }

    // ---------------------------------------------------------------- kill switch

    /// Stores a suspension; a second suspension of the same target is a conflict.
    pub async fn insert_suspension(&self, r: &Suspension) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO suspensions (tenant_id, id, kind, target_id, tool, reason, created_by, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(&r.tenant_id)
        .bind(&r.id)
        .bind(&r.kind)
        .bind(&r.target_id)
        .bind(&r.tool)
        .bind(&r.reason)
        .bind(&r.created_by)
        .bind(r.created_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Lifts a suspension of a tenant; returns whether there was one.
    pub async fn delete_suspension(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query("DELETE FROM suspensions WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// A tenant's suspensions, oldest first.
    pub async fn list_suspensions(&self, tenant_id: &str) -> Result<Vec<Suspension>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, id, kind, target_id, tool, reason, created_by, created_at_ms FROM suspensions \
             WHERE tenant_id = $1 ORDER BY created_at_ms, id"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    // ---------------------------------------------------------------- data classification

    /// Stores a data-classification rule.
    pub async fn insert_classification_rule(&self, r: &ClassificationRuleRow) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO classification_rules (tenant_id, id, name, detector, pattern, action, scope, servers_json, \
             labels_json, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )
        .bind(&r.tenant_id)
        .bind(&r.id)
        .bind(&r.name)
        .bind(&r.detector)
        .bind(&r.pattern)
        .bind(&r.action)
        .bind(&r.scope)
        .bind(&r.servers_json)
        .bind(&r.labels_json)
        .bind(r.created_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes a data-classification rule of a tenant; returns whether there was one.
    pub async fn delete_classification_rule(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query("DELETE FROM classification_rules WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// A tenant's data-classification rules, oldest first.
    pub async fn list_classification_rules(&self, tenant_id: &str) -> Result<Vec<ClassificationRuleRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, id, name, detector, pattern, action, scope, servers_json, labels_json, created_at_ms \
             FROM classification_rules WHERE tenant_id = $1 ORDER BY created_at_ms, id"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    // ---------------------------------------------------------------- roles

    /// Creates an access role.
    pub async fn create_role(&self, r: &Role) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO roles (tenant_id, id, slug, description, created_at_ms) VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(&r.tenant_id)
        .bind(&r.id)
        .bind(&r.slug)
        .bind(&r.description)
        .bind(r.created_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// A tenant's roles, by slug.
    pub async fn list_roles(&self, tenant_id: &str) -> Result<Vec<Role>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, id, slug, description, created_at_ms FROM roles WHERE tenant_id = $1 ORDER BY slug"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// One role of a tenant, by slug.
    pub async fn role_by_slug(&self, tenant_id: &str, slug: &str) -> Result<Option<Role>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, id, slug, description, created_at_ms FROM roles WHERE tenant_id = $1 AND slug = $2"
        )
        .bind(tenant_id)
        .bind(slug)
        .fetch_optional(p)
        .await)?)
    }

    /// Replaces all grants of a role in one transaction.
    pub async fn set_role_grants(&self, tenant_id: &str, role_id: &str, grants: &[(String, String)]) -> Result<()> {
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            sqlx::query("DELETE FROM role_grants WHERE tenant_id = $1 AND role_id = $2")
                .bind(tenant_id)
                .bind(role_id)
                .execute(&mut *tx)
                .await?;
            for (server_id, tool) in grants {
                sqlx::query("INSERT INTO role_grants (tenant_id, role_id, server_id, tool) VALUES ($1, $2, $3, $4)")
                    .bind(tenant_id)
                    .bind(role_id)
                    .bind(server_id)
                    .bind(tool)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Every grant in a tenant, ordered by role, server and tool.
    pub async fn list_grants(&self, tenant_id: &str) -> Result<Vec<Grant>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT role_id, server_id, tool FROM role_grants WHERE tenant_id = $1 ORDER BY role_id, server_id, tool"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// Stores an access rule.
    pub async fn insert_rule(&self, r: &AccessRule) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO access_rules (tenant_id, id, role_id, server_id, effect, tools, annotation_json, params_json, \
             description, created_at_ms, condition_cel) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )
        .bind(&r.tenant_id)
        .bind(&r.id)
        .bind(&r.role_id)
        .bind(&r.server_id)
        .bind(&r.effect)
        .bind(&r.tools)
        .bind(&r.annotation_json)
        .bind(&r.params_json)
        .bind(&r.description)
        .bind(r.created_at_ms)
        .bind(&r.condition_cel)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes an access rule of a tenant; returns whether there was one.
    pub async fn delete_rule(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query("DELETE FROM access_rules WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Every access rule in a tenant, ordered by role, then creation, then id.
    pub async fn list_rules(&self, tenant_id: &str) -> Result<Vec<AccessRule>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, id, role_id, server_id, effect, tools, annotation_json, params_json, description, \
             created_at_ms, condition_cel FROM access_rules WHERE tenant_id = $1 ORDER BY role_id, created_at_ms, id"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// Binds a user to a role (idempotent).
    pub async fn bind_role(&self, tenant_id: &str, role_id: &str, user_id: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO role_bindings (tenant_id, role_id, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        )
        .bind(tenant_id)
        .bind(role_id)
        .bind(user_id)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Removes a binding; returns whether there was one.
    pub async fn unbind_role(&self, tenant_id: &str, role_id: &str, user_id: &str) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query(
            "DELETE FROM role_bindings WHERE tenant_id = $1 AND role_id = $2 AND user_id = $3"
        )
        .bind(tenant_id)
        .bind(role_id)
        .bind(user_id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Every role binding in a tenant.
    pub async fn list_bindings(&self, tenant_id: &str) -> Result<Vec<Binding>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT role_id, user_id FROM role_bindings WHERE tenant_id = $1 ORDER BY role_id, user_id"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    // ---------------------------------------------------------------- groups and user attributes

    /// Creates a local group.
    pub async fn create_group(&self, g: &UserGroup) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO user_groups (tenant_id, id, slug, name, created_at_ms) VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(&g.tenant_id)
        .bind(&g.id)
        .bind(&g.slug)
        .bind(&g.name)
        .bind(g.created_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes a group of a tenant (its memberships and role bindings go with it); returns whether
    /// there was one.
    pub async fn delete_group(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query("DELETE FROM user_groups WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// A tenant's groups, by slug.
    pub async fn list_groups(&self, tenant_id: &str) -> Result<Vec<UserGroup>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, id, slug, name, created_at_ms FROM user_groups WHERE tenant_id = $1 ORDER BY slug"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// One group of a tenant, by slug.
    pub async fn group_by_slug(&self, tenant_id: &str, slug: &str) -> Result<Option<UserGroup>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, id, slug, name, created_at_ms FROM user_groups WHERE tenant_id = $1 AND slug = $2"
        )
        .bind(tenant_id)
        .bind(slug)
        .fetch_optional(p)
        .await)?)
    }

    /// Puts a user in a group (idempotent). Both must belong to the tenant (foreign keys).
    pub async fn add_group_member(&self, tenant_id: &str, group_id: &str, user_id: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO group_members (tenant_id, group_id, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        )
        .bind(tenant_id)
        .bind(group_id)
        .bind(user_id)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Takes a user out of a group; returns whether they were in it.
    pub async fn remove_group_member(&self, tenant_id: &str, group_id: &str, user_id: &str) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query(
            "DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2 AND user_id = $3"
        )
        .bind(tenant_id)
        .bind(group_id)
        .bind(user_id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Every membership in a tenant.
    pub async fn list_group_members(&self, tenant_id: &str) -> Result<Vec<GroupMember>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT group_id, user_id FROM group_members WHERE tenant_id = $1 ORDER BY group_id, user_id"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// Binds a role to a group (idempotent).
    pub async fn bind_group_role(&self, tenant_id: &str, group_id: &str, role_id: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO group_roles (tenant_id, group_id, role_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        )
        .bind(tenant_id)
        .bind(group_id)
        .bind(role_id)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Unbinds a role from a group; returns whether it was bound.
    pub async fn unbind_group_role(&self, tenant_id: &str, group_id: &str, role_id: &str) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query(
            "DELETE FROM group_roles WHERE tenant_id = $1 AND group_id = $2 AND role_id = $3"
        )
        .bind(tenant_id)
        .bind(group_id)
        .bind(role_id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Every group role binding in a tenant.
    pub async fn list_group_roles(&self, tenant_id: &str) -> Result<Vec<GroupRole>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT group_id, role_id FROM group_roles WHERE tenant_id = $1 ORDER BY group_id, role_id"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// Replaces all attributes of a user in one transaction.
    pub async fn set_user_attributes(&self, tenant_id: &str, user_id: &str, attrs: &[(String, String)]) -> Result<()> {
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            sqlx::query("DELETE FROM user_attributes WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            for (key, value) in attrs {
                sqlx::query(
                    "INSERT INTO user_attributes (tenant_id, user_id, attr_key, attr_value) VALUES ($1, $2, $3, $4)",
                )
                .bind(tenant_id)
                .bind(user_id)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Every user attribute in a tenant, by user then key.
    pub async fn list_user_attributes(&self, tenant_id: &str) -> Result<Vec<UserAttribute>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT user_id, attr_key, attr_value FROM user_attributes WHERE tenant_id = $1 ORDER BY user_id, attr_key"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    // ---------------------------------------------------------------- virtual servers

    /// Creates a virtual server over the given upstream server ids (in order), in one transaction.
    pub async fn create_virtual_server(&self, vs: &VirtualServer, server_ids: &[String]) -> Result<()> {
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO virtual_servers (tenant_id, id, slug, name, policy_mode, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&vs.tenant_id)
            .bind(&vs.id)
            .bind(&vs.slug)
            .bind(&vs.name)
            .bind(&vs.policy_mode)
            .bind(vs.created_at_ms)
            .execute(&mut *tx)
            .await?;
            for (pos, server_id) in server_ids.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO virtual_server_upstreams (tenant_id, virtual_server_id, server_id, position) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&vs.tenant_id)
                .bind(&vs.id)
                .bind(server_id)
                .bind(pos as i64)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// A tenant's virtual servers, by slug.
    pub async fn list_virtual_servers(&self, tenant_id: &str) -> Result<Vec<VirtualServer>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, id, slug, name, policy_mode, created_at_ms FROM virtual_servers \
             WHERE tenant_id = $1 ORDER BY slug"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// Sets a virtual server's policy mode; returns whether it exists.
    pub async fn set_policy_mode(&self, tenant_id: &str, id: &str, mode: &str) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query(
            "UPDATE virtual_servers SET policy_mode = $3 WHERE tenant_id = $1 AND id = $2"
        )
        .bind(tenant_id)
        .bind(id)
        .bind(mode)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Every virtual-server upstream link in a tenant, ordered by virtual server and position.
    pub async fn list_virtual_server_upstreams(&self, tenant_id: &str) -> Result<Vec<VirtualServerUpstream>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT virtual_server_id, server_id, position FROM virtual_server_upstreams \
             WHERE tenant_id = $1 ORDER BY virtual_server_id, position"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    // ---------------------------------------------------------------- API tokens

    /// Stores a new API token (its hash only).
    pub async fn create_token(&self, t: &ApiToken) -> Result<()> {
        on_pool!(self, |p| {
            sqlx::query(
            "INSERT INTO api_tokens (tenant_id, id, user_id, name, sha256, prefix, created_at_ms, expires_at_ms, revoked_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )
        .bind(&t.tenant_id)
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(&t.name)
        .bind(&t.sha256)
        .bind(&t.prefix)
        .bind(t.created_at_ms)
        .bind(t.expires_at_ms)
        .bind(t.revoked_at_ms)
        .execute(p)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// A tenant's tokens, newest first.
    pub async fn list_tokens(&self, tenant_id: &str) -> Result<Vec<ApiToken>> {
        Ok(on_pool!(self, |p| sqlx::query_as(&format!(
            "{TOKEN_COLUMNS} WHERE tenant_id = $1 ORDER BY created_at_ms DESC, id"
        ))
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// The unrevoked token with this hash, in any tenant (for GraphQL bearer authentication).
    pub async fn token_by_hash(&self, sha256: &str) -> Result<Option<ApiToken>> {
        Ok(on_pool!(self, |p| sqlx::query_as(&format!("{TOKEN_COLUMNS} WHERE sha256 = $1 AND revoked_at_ms IS NULL"))
            .bind(sha256)
            .fetch_optional(p)
            .await)?)
    }

    /// Revokes a token; returns whether it was active.
    pub async fn revoke_token(&self, tenant_id: &str, id: &str, at_ms: i64) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query(
            "UPDATE api_tokens SET revoked_at_ms = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at_ms IS NULL"
        )
        .bind(tenant_id)
        .bind(id)
        .bind(at_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    // ---------------------------------------------------------------- session keys

    /// Stores a new session key of a tenant (a second key with the same id is a conflict).
    pub async fn insert_session_key(&self, k: &SessionKeyRow) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO session_keys (tenant_id, id, key_b64, created_at_ms) VALUES ($1, $2, $3, $4)"
        )
        .bind(&k.tenant_id)
        .bind(&k.id)
        .bind(&k.key_b64)
        .bind(k.created_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// A tenant's session keys, by id.
    pub async fn list_session_keys(&self, tenant_id: &str) -> Result<Vec<SessionKeyRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, id, key_b64, created_at_ms FROM session_keys WHERE tenant_id = $1 ORDER BY id"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// Deletes a session key (the end of a rotation's overlap); returns whether it existed.
    pub async fn delete_session_key(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query("DELETE FROM session_keys WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    // ---------------------------------------------------------------- audit

    /// Stores audit events; an event whose id is already stored is skipped, so a worker's retry never
    /// duplicates. Returns how many were new.
    pub async fn insert_audit_events(&self, events: &[AuditRow]) -> Result<u64> {
        // One multi-row INSERT per chunk, in one transaction. A row binds 20 parameters, so 1,000 rows
        // bind 20,000: below SQLite's limit (32,766) and PostgreSQL's (65,535).
        const ROWS_PER_STATEMENT: usize = 1_000;
        if events.is_empty() {
            return Ok(0);
        }
        let mut new = 0;
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_events (tenant_id, id, time_ms, user_id, user_email, client_name, client_version, \
                     session_id, virtual_server, upstream_server, method, tool, outcome, reason, latency_us, \
                     bundle_revision, rule_id, findings_json, received_at_ms, exposed_tool) ",
                );
                q.push_values(chunk, |mut row, e| {
                    row.push_bind(&e.tenant_id)
                        .push_bind(&e.id)
                        .push_bind(e.time_ms)
                        .push_bind(&e.user_id)
                        .push_bind(&e.user_email)
                        .push_bind(&e.client_name)
                        .push_bind(&e.client_version)
                        .push_bind(&e.session_id)
                        .push_bind(&e.virtual_server)
                        .push_bind(&e.upstream_server)
                        .push_bind(&e.method)
                        .push_bind(&e.tool)
                        .push_bind(&e.outcome)
                        .push_bind(&e.reason)
                        .push_bind(e.latency_us)
                        .push_bind(&e.bundle_revision)
                        .push_bind(&e.rule_id)
                        .push_bind(&e.findings_json)
                        .push_bind(e.received_at_ms)
                        .push_bind(&e.exposed_tool);
                });
                // Idempotent by event id: a resent event (or one twice in the batch) adds nothing.
                q.push(" ON CONFLICT (id) DO NOTHING");
                new += q.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await
        })?;
        Ok(new)
    }

    /// A tenant's audit events, newest first, at most `limit`, older than `before_ms` if given.
    pub async fn list_audit(&self, tenant_id: &str, limit: i64, before_ms: Option<i64>) -> Result<Vec<AuditRow>> {
        let before = before_ms.unwrap_or(i64::MAX);
        Ok(on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT tenant_id, id, time_ms, user_id, user_email, client_name, client_version, session_id, \
             virtual_server, upstream_server, method, tool, outcome, reason, latency_us, bundle_revision, rule_id, \
             findings_json, received_at_ms, exposed_tool FROM audit_events WHERE tenant_id = $1 AND time_ms < $2 \
             ORDER BY time_ms DESC, id LIMIT $3",
            )
            .bind(tenant_id)
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await
        })?)
    }

    // ---------------------------------------------------------------- bundles

    /// Stores a compiled bundle.
    pub async fn insert_bundle(&self, b: &BundleRow) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO bundles (tenant_id, group_name, sequence, revision, signed_json, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        )
        .bind(&b.tenant_id)
        .bind(&b.group_name)
        .bind(b.sequence)
        .bind(&b.revision)
        .bind(&b.signed_json)
        .bind(b.created_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The newest bundle of a tenant for a group.
    pub async fn latest_bundle(&self, tenant_id: &str, group: &str) -> Result<Option<BundleRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, group_name, sequence, revision, signed_json, created_at_ms FROM bundles \
             WHERE tenant_id = $1 AND group_name = $2 ORDER BY sequence DESC LIMIT 1"
        )
        .bind(tenant_id)
        .bind(group)
        .fetch_optional(p)
        .await)?)
    }

    /// The newest bundle of every tenant for a group, by tenant id. Read by the worker API, which
    /// serves all tenants of a gateway group.
    pub async fn latest_bundles_for_group(&self, group: &str) -> Result<Vec<BundleRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT b.tenant_id, b.group_name, b.sequence, b.revision, b.signed_json, b.created_at_ms FROM bundles b \
             WHERE b.group_name = $1 AND b.sequence = \
               (SELECT MAX(sequence) FROM bundles m WHERE m.tenant_id = b.tenant_id AND m.group_name = b.group_name) \
             ORDER BY b.tenant_id"
        )
        .bind(group)
        .fetch_all(p)
        .await)?)
    }
}

/// The PostgreSQL notification channel on which a control-plane replica announces a new bundle, so
/// that the other replicas wake the workers long-polling them.
pub const BUNDLE_CHANNEL: &str = "gatehouse_bundles";

impl Store {
    /// Tells the other control-plane replicas that a tenant has a new bundle (PostgreSQL `NOTIFY`;
    /// on SQLite there is only one process, so nothing to do).
    pub async fn notify_bundle_change(&self, tenant_id: &str) -> Result<()> {
        if let Store::Postgres(p) = self {
            sqlx::query("SELECT pg_notify($1, $2)").bind(BUNDLE_CHANNEL).bind(tenant_id).execute(p).await?;
        }
        Ok(())
    }

    /// A listener on [`BUNDLE_CHANNEL`] (PostgreSQL only; `None` on SQLite).
    pub async fn bundle_change_listener(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        match self {
            Store::Postgres(p) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(p).await?;
                listener.listen(BUNDLE_CHANNEL).await?;
                Ok(Some(listener))
            }
            Store::Sqlite(_) => Ok(None),
        }
    }
}

const USER_COLUMNS: &str =
    "SELECT tenant_id, id, email, display_name, password_hash, console_role, created_at_ms FROM users";
const SERVER_COLUMNS: &str = "SELECT tenant_id, id, slug, name, url, tools_json, tools_fetched_at_ms, labels_json, \
     created_at_ms, transport, command_json FROM servers";
const TOKEN_COLUMNS: &str = "SELECT tenant_id, id, user_id, name, sha256, prefix, created_at_ms, expires_at_ms, \
     revoked_at_ms FROM api_tokens";

/// Hides the password in a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}
