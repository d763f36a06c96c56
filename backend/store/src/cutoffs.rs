//! Ended sessions (`docs/decisions/0006-stateless-sessions.md`, "Ending sessions"): per tenant, a
//! cutoff for one user or for every user. Every query names the tenant.

use crate::{Result, Store, on_pool};

/// Sessions of `user_id` (`""`: every user of the tenant) initialized before `not_before_ms` are ended.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionCutoffRow {
    /// Tenant.
    pub tenant_id: String,
    /// User id, or `""` for the whole tenant.
    pub user_id: String,
    /// Unix milliseconds.
    pub not_before_ms: i64,
    /// E-mail of the admin who ended them.
    pub created_by: String,
}

impl Store {
    /// Stores a cutoff, replacing an earlier one of the same target (a later cutoff only ever ends
    /// more sessions; an earlier one is kept).
    pub async fn upsert_session_cutoff(&self, row: &SessionCutoffRow) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO session_cutoffs (tenant_id, user_id, not_before_ms, created_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET not_before_ms = excluded.not_before_ms, \
             created_by = excluded.created_by WHERE session_cutoffs.not_before_ms < excluded.not_before_ms"
        )
        .bind(&row.tenant_id)
        .bind(&row.user_id)
        .bind(row.not_before_ms)
        .bind(&row.created_by)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// A tenant's cutoffs, by user id (the tenant-wide one, `""`, first).
    pub async fn list_session_cutoffs(&self, tenant_id: &str) -> Result<Vec<SessionCutoffRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, user_id, not_before_ms, created_by FROM session_cutoffs WHERE tenant_id = $1 \
             ORDER BY user_id"
        )
        .bind(tenant_id)
        .fetch_all(p)
        .await)?)
    }

    /// Deletes a tenant's cutoffs older than `before_ms` (every session they end has expired by
    /// then); returns how many.
    pub async fn prune_session_cutoffs(&self, tenant_id: &str, before_ms: i64) -> Result<u64> {
        Ok(on_pool!(self, |p| sqlx::query("DELETE FROM session_cutoffs WHERE tenant_id = $1 AND not_before_ms < $2")
            .bind(tenant_id)
            .bind(before_ms)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?)
    }
}
