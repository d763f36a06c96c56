//! Gateway groups, the tenant → group assignment, and the workers' status reports
//! (`docs/decisions/0014-gateway-groups.md`).

use crate::{BundleRow, Result, Store, on_pool};

/// A gateway group.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GatewayGroup {
    /// Slug (what workers name in `GET /v1/bundles/{group}`).
    pub slug: String,
    /// Created at.
    pub created_at_ms: i64,
}

/// A worker's latest report, without its tenants.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WorkerReport {
    /// The worker's id.
    pub worker_id: String,
    /// The group it serves.
    pub group_slug: String,
    /// Its version.
    pub version: String,
    /// Its own last error talking to the control plane.
    pub contact_error: Option<String>,
    /// When the report arrived.
    pub reported_at_ms: i64,
}

/// One tenant of a worker's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTenantReport {
    /// Tenant id.
    pub tenant_id: String,
    /// The revision the worker runs for the tenant (`None`: none active).
    pub revision: Option<String>,
    /// Its sequence.
    pub sequence: Option<i64>,
    /// The worker's last error about this tenant.
    pub error: Option<String>,
}

/// A worker as one tenant sees it: the worker's report and its row for that tenant only.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantWorkerStatus {
    /// The worker's id.
    pub worker_id: String,
    /// The group it serves.
    pub group_slug: String,
    /// Its version.
    pub version: String,
    /// Its own last error talking to the control plane.
    pub contact_error: Option<String>,
    /// When its latest report arrived.
    pub reported_at_ms: i64,
    /// The revision it runs for this tenant.
    pub revision: Option<String>,
    /// Its sequence.
    pub sequence: Option<i64>,
    /// Its last error about this tenant.
    pub error: Option<String>,
}

impl Store {
    /// Creates a gateway group; an existing one is left as it is. True when it was created.
    pub async fn ensure_gateway_group(&self, slug: &str, at_ms: i64) -> Result<bool> {
        let n = on_pool!(self, |p| sqlx::query(
            "INSERT INTO gateway_groups (slug, created_at_ms) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING"
        )
        .bind(slug)
        .bind(at_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Every gateway group, by slug.
    pub async fn list_gateway_groups(&self) -> Result<Vec<GatewayGroup>> {
        Ok(on_pool!(self, |p| sqlx::query_as("SELECT slug, created_at_ms FROM gateway_groups ORDER BY slug")
            .fetch_all(p)
            .await)?)
    }

    /// Puts a tenant in a group (which must exist: [`crate::StoreError::MissingReference`] otherwise).
    pub async fn assign_gateway_group(&self, tenant_id: &str, group: &str, at_ms: i64) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO tenant_gateway_groups (tenant_id, group_slug, assigned_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET group_slug = excluded.group_slug, \
             assigned_at_ms = excluded.assigned_at_ms"
        )
        .bind(tenant_id)
        .bind(group)
        .bind(at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The group a tenant was assigned to, or `None` (then it is in the configured default group).
    pub async fn tenant_gateway_group(&self, tenant_id: &str) -> Result<Option<String>> {
        let row: Option<(String,)> =
            on_pool!(self, |p| sqlx::query_as("SELECT group_slug FROM tenant_gateway_groups WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(p)
                .await)?;
        Ok(row.map(|r| r.0))
    }

    /// Every explicit assignment, as (tenant id, group).
    pub async fn list_gateway_assignments(&self) -> Result<Vec<(String, String)>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, group_slug FROM tenant_gateway_groups ORDER BY tenant_id"
        )
        .fetch_all(p)
        .await)?)
    }

    /// The newest bundle of a tenant in any group (sequences grow per tenant across groups, so a
    /// tenant that moves never gets a lower sequence).
    pub async fn latest_bundle_any_group(&self, tenant_id: &str) -> Result<Option<BundleRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, group_name, sequence, revision, signed_json, created_at_ms FROM bundles \
             WHERE tenant_id = $1 ORDER BY sequence DESC, group_name LIMIT 1"
        )
        .bind(tenant_id)
        .fetch_optional(p)
        .await)?)
    }

    /// The newest bundle for `group` of every tenant assigned to `group` (a tenant without an
    /// assignment is in `default_group`), by tenant id: what the worker API serves the group.
    pub async fn assigned_bundles_for_group(&self, group: &str, default_group: &str) -> Result<Vec<BundleRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT b.tenant_id, b.group_name, b.sequence, b.revision, b.signed_json, b.created_at_ms FROM bundles b \
             JOIN tenants t ON t.id = b.tenant_id \
             LEFT JOIN tenant_gateway_groups g ON g.tenant_id = b.tenant_id \
             WHERE COALESCE(g.group_slug, $2) = $1 AND b.group_name = $1 AND b.sequence = \
               (SELECT MAX(sequence) FROM bundles m WHERE m.tenant_id = b.tenant_id AND m.group_name = b.group_name) \
             ORDER BY b.tenant_id"
        )
        .bind(group)
        .bind(default_group)
        .fetch_all(p)
        .await)?)
    }

    /// [`Store::assigned_bundles_for_group`] without the signed bundles (`signed_json` is empty):
    /// what the delta endpoint needs for its ETag and tenant list, without reading every bundle of
    /// the group on each long-poll wake-up (`docs/decisions/0017-bundle-delta-and-compression.md`).
    pub async fn assigned_bundle_heads_for_group(&self, group: &str, default_group: &str) -> Result<Vec<BundleRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT b.tenant_id, b.group_name, b.sequence, b.revision, CAST('' AS TEXT) AS signed_json, \
             b.created_at_ms FROM bundles b \
             JOIN tenants t ON t.id = b.tenant_id \
             LEFT JOIN tenant_gateway_groups g ON g.tenant_id = b.tenant_id \
             WHERE COALESCE(g.group_slug, $2) = $1 AND b.group_name = $1 AND b.sequence = \
               (SELECT MAX(sequence) FROM bundles m WHERE m.tenant_id = b.tenant_id AND m.group_name = b.group_name) \
             ORDER BY b.tenant_id"
        )
        .bind(group)
        .bind(default_group)
        .fetch_all(p)
        .await)?)
    }

    /// One tenant's bundle for `group` at `sequence`.
    pub async fn bundle_at(&self, tenant_id: &str, group: &str, sequence: i64) -> Result<Option<BundleRow>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT tenant_id, group_name, sequence, revision, signed_json, created_at_ms FROM bundles \
             WHERE tenant_id = $1 AND group_name = $2 AND sequence = $3"
        )
        .bind(tenant_id)
        .bind(group)
        .bind(sequence)
        .fetch_optional(p)
        .await)?)
    }

    /// Replaces a worker's report (its row and all its tenant rows) in one transaction.
    pub async fn put_worker_report(&self, report: &WorkerReport, tenants: &[WorkerTenantReport]) -> Result<()> {
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO worker_reports (worker_id, group_slug, version, contact_error, reported_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (worker_id) DO UPDATE SET \
                 group_slug = excluded.group_slug, version = excluded.version, \
                 contact_error = excluded.contact_error, reported_at_ms = excluded.reported_at_ms",
            )
            .bind(&report.worker_id)
            .bind(&report.group_slug)
            .bind(&report.version)
            .bind(&report.contact_error)
            .bind(report.reported_at_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM worker_tenant_reports WHERE worker_id = $1")
                .bind(&report.worker_id)
                .execute(&mut *tx)
                .await?;
            for t in tenants {
                sqlx::query(
                    "INSERT INTO worker_tenant_reports (worker_id, tenant_id, revision, sequence, error) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&report.worker_id)
                .bind(&t.tenant_id)
                .bind(&t.revision)
                .bind(t.sequence)
                .bind(&t.error)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// The workers one tenant may see: those reporting `group` (the tenant's group) and those that
    /// reported something about the tenant, each with its row for THIS tenant only, by worker id.
    pub async fn worker_status_for_tenant(&self, tenant_id: &str, group: &str) -> Result<Vec<TenantWorkerStatus>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT w.worker_id, w.group_slug, w.version, w.contact_error, w.reported_at_ms, \
             t.revision, t.sequence, t.error FROM worker_reports w \
             LEFT JOIN worker_tenant_reports t ON t.worker_id = w.worker_id AND t.tenant_id = $1 \
             WHERE w.group_slug = $2 OR t.tenant_id IS NOT NULL \
             ORDER BY w.group_slug, w.worker_id"
        )
        .bind(tenant_id)
        .bind(group)
        .fetch_all(p)
        .await)?)
    }

    /// Deletes the reports (and their tenant rows) of workers silent since `before_ms`: a worker
    /// without a configured id gets a new one at each start, so old ids would pile up. Returns how
    /// many went.
    pub async fn prune_worker_reports(&self, before_ms: i64) -> Result<u64> {
        Ok(on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "DELETE FROM worker_tenant_reports WHERE worker_id IN \
                 (SELECT worker_id FROM worker_reports WHERE reported_at_ms < $1)",
            )
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
            let n = sqlx::query("DELETE FROM worker_reports WHERE reported_at_ms < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await.map(|()| n)
        })?)
    }

    /// Every worker's report (operators), by worker id.
    pub async fn list_worker_reports(&self) -> Result<Vec<WorkerReport>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT worker_id, group_slug, version, contact_error, reported_at_ms FROM worker_reports \
             ORDER BY worker_id"
        )
        .fetch_all(p)
        .await)?)
    }
}
