//! Virtual-server shaping (`docs/decisions/0013-virtual-server-shaping.md`): a virtual server's
//! conflict strategy and upstream prefixes, and its per-tool overrides. Every query names the tenant.

use crate::{Result, Store, on_pool};

/// A virtual server's naming settings (a virtual server without a row is on the defaults).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ShapingRow {
    /// Tenant.
    pub tenant_id: String,
    /// Virtual server.
    pub virtual_server_id: String,
    /// `auto`, `prefix`, `priority` or `explicit`.
    pub conflict_strategy: String,
    /// JSON object: server id → prefix.
    pub prefixes_json: String,
    /// Last change.
    pub updated_at_ms: i64,
}

/// One tool override.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ToolOverrideRow {
    /// Tenant.
    pub tenant_id: String,
    /// Virtual server.
    pub virtual_server_id: String,
    /// Upstream server.
    pub server_id: String,
    /// The tool's upstream name.
    pub tool: String,
    /// The override without server and tool (`gatehouse_core::shaping::ToolOverride`).
    pub override_json: String,
    /// Last change.
    pub updated_at_ms: i64,
}

impl Store {
    /// Sets a virtual server's strategy and prefixes (insert or replace).
    pub async fn set_shaping(&self, r: &ShapingRow) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO virtual_server_shaping (tenant_id, virtual_server_id, conflict_strategy, prefixes_json, \
             updated_at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, virtual_server_id) DO UPDATE SET \
             conflict_strategy = excluded.conflict_strategy, prefixes_json = excluded.prefixes_json, \
             updated_at_ms = excluded.updated_at_ms"
        )
        .bind(&r.tenant_id)
        .bind(&r.virtual_server_id)
        .bind(&r.conflict_strategy)
        .bind(&r.prefixes_json)
        .bind(r.updated_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// A tenant's shaping rows, by virtual server id.
    pub async fn list_shaping(&self, tenant_id: &str) -> Result<Vec<ShapingRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, virtual_server_id, conflict_strategy, prefixes_json, updated_at_ms \
             FROM virtual_server_shaping WHERE tenant_id = $1 ORDER BY virtual_server_id"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// Stores a tool override (insert or replace).
    pub async fn upsert_tool_override(&self, r: &ToolOverrideRow) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO tool_overrides (tenant_id, virtual_server_id, server_id, tool, override_json, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, virtual_server_id, server_id, tool) DO UPDATE \
             SET override_json = excluded.override_json, updated_at_ms = excluded.updated_at_ms"
        )
        .bind(&r.tenant_id)
        .bind(&r.virtual_server_id)
        .bind(&r.server_id)
        .bind(&r.tool)
        .bind(&r.override_json)
        .bind(r.updated_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes a tool override; returns whether there was one.
    pub async fn delete_tool_override(
        &self,
        tenant_id: &str,
        virtual_server_id: &str,
        server_id: &str,
        tool: &str,
    ) -> Result<bool> {
        let n = on_pool!(self, |p| {
            sqlx::query(
            "DELETE FROM tool_overrides WHERE tenant_id = $1 AND virtual_server_id = $2 AND server_id = $3 AND tool = $4"
        )
        .bind(tenant_id)
        .bind(virtual_server_id)
        .bind(server_id)
        .bind(tool)
        .execute(p)
        .await
        .map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }

    /// A tenant's tool overrides, ordered by virtual server, server and tool.
    pub async fn list_tool_overrides(&self, tenant_id: &str) -> Result<Vec<ToolOverrideRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, virtual_server_id, server_id, tool, override_json, updated_at_ms FROM tool_overrides \
             WHERE tenant_id = $1 ORDER BY virtual_server_id, server_id, tool"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }
}
