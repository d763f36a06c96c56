//! Publishing mode and publications of a tenant's policy content
//! (`docs/decisions/0015-publishing-and-rollback.md`).

use crate::{Result, Store, on_pool};

/// A tenant's publishing mode as stored (no row: automatic).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PublishingModeRow {
    /// Tenant.
    pub tenant_id: String,
    /// `automatic` or `reviewed`.
    pub mode: String,
    /// E-mail of who set it.
    pub updated_by: String,
    /// When.
    pub updated_at_ms: i64,
}

/// One publication of a tenant's policy content.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PublicationRow {
    /// Tenant.
    pub tenant_id: String,
    /// 1, 2, 3… per tenant.
    pub number: i64,
    /// `automatic`, `publish` or `rollback`.
    pub kind: String,
    /// Hex SHA-256 of the policy content.
    pub revision: String,
    /// The policy content (bundle `Content` JSON without tokens, session keys and kill list); empty
    /// when read by [`Store::list_publications`].
    pub content_json: String,
    /// For a rollback: the publication whose content it restores.
    pub restores_number: Option<i64>,
    /// E-mail of who published (`None` for an automatic publication).
    pub published_by: Option<String>,
    /// Why.
    pub note: String,
    /// When.
    pub published_at_ms: i64,
}

const PUBLICATION_HEAD: &str = "SELECT tenant_id, number, kind, revision, '' AS content_json, restores_number, \
                                published_by, note, published_at_ms FROM publications";
const PUBLICATION_FULL: &str = "SELECT tenant_id, number, kind, revision, content_json, restores_number, \
                                published_by, note, published_at_ms FROM publications";

impl Store {
    /// A tenant's publishing mode row, if one was ever set.
    pub async fn publishing_mode(&self, tenant_id: &str) -> Result<Option<PublishingModeRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, mode, updated_by, updated_at_ms FROM publishing_modes WHERE tenant_id = $1"
        )
        .bind(tenant_id)
        .fetch_optional(p)
        .await)?)
    }

    /// Sets a tenant's publishing mode.
    pub async fn set_publishing_mode(&self, row: &PublishingModeRow) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO publishing_modes (tenant_id, mode, updated_by, updated_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET mode = excluded.mode, updated_by = excluded.updated_by, \
             updated_at_ms = excluded.updated_at_ms"
        )
        .bind(&row.tenant_id)
        .bind(&row.mode)
        .bind(&row.updated_by)
        .bind(row.updated_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Stores a publication. Two writers racing for the same number get [`crate::StoreError::Conflict`].
    pub async fn insert_publication(&self, r: &PublicationRow) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO publications (tenant_id, number, kind, revision, content_json, restores_number, \
             published_by, note, published_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )
        .bind(&r.tenant_id)
        .bind(r.number)
        .bind(&r.kind)
        .bind(&r.revision)
        .bind(&r.content_json)
        .bind(r.restores_number)
        .bind(&r.published_by)
        .bind(&r.note)
        .bind(r.published_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// A tenant's newest publication; with its content only if `content` is true.
    pub async fn latest_publication(&self, tenant_id: &str, content: bool) -> Result<Option<PublicationRow>> {
        let sql = format!(
            "{} WHERE tenant_id = $1 ORDER BY number DESC LIMIT 1",
            if content { PUBLICATION_FULL } else { PUBLICATION_HEAD }
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql).bind(tenant_id).fetch_optional(p).await)?)
    }

    /// A tenant's publications, newest first, at most `limit`, without their content.
    pub async fn list_publications(&self, tenant_id: &str, limit: i64) -> Result<Vec<PublicationRow>> {
        let sql = format!("{PUBLICATION_HEAD} WHERE tenant_id = $1 ORDER BY number DESC LIMIT $2");
        Ok(on_pool!(self, |p| sqlx::query_as(&sql).bind(tenant_id).bind(limit).fetch_all(p).await)?)
    }

    /// The newest publication of a tenant with this revision, with its content.
    pub async fn publication_by_revision(&self, tenant_id: &str, revision: &str) -> Result<Option<PublicationRow>> {
        let sql = format!("{PUBLICATION_FULL} WHERE tenant_id = $1 AND revision = $2 ORDER BY number DESC LIMIT 1");
        Ok(on_pool!(self, |p| sqlx::query_as(&sql).bind(tenant_id).bind(revision).fetch_optional(p).await)?)
    }

    /// A tenant's `tools/call` audit events at or after `since_ms`, newest first, at most `limit`:
    /// the traffic a draft policy is replayed against.
    pub async fn list_tool_calls_since(
        &self,
        tenant_id: &str,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<crate::AuditRow>> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT tenant_id, id, time_ms, user_id, user_email, client_name, client_version, session_id, \
                 virtual_server, upstream_server, method, tool, outcome, reason, latency_us, bundle_revision, \
                 rule_id, findings_json, received_at_ms FROM audit_events WHERE tenant_id = $1 AND time_ms >= $2 \
                 AND method = 'tools/call' ORDER BY time_ms DESC, id LIMIT $3",
            )
            .bind(tenant_id)
            .bind(since_ms)
            .bind(limit)
            .fetch_all(p)
            .await
        })?)
    }
}
