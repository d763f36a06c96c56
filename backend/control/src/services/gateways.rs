//! What a tenant sees of the gateway workers serving it (`docs/decisions/0014-gateway-groups.md`).

use gatehouse_core::gateways::{GatewayStatusView, GatewayWorkerView, STALE_AFTER_MS};

use super::{Actor, Need, Result, Services, store_err};
use crate::now_ms;

impl Services {
    /// The tenant's gateway group and, per worker of that group (and any worker that reported about
    /// this tenant), the revision it runs for THIS tenant, whether it is the newest, when it last
    /// reported (older than a minute: offline) and its last error about this tenant. Another
    /// tenant's revisions and errors are never read: the store query joins on this tenant only.
    pub async fn gateway_status(&self, actor: &Actor, tenant: &str) -> Result<GatewayStatusView> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let group = self.bundles.group_of(&t.id).await.map_err(store_err("gateway group"))?;
        let latest = self.bundles.latest(&t.id).await.map_err(store_err("bundle"))?;
        let rows = self.store.worker_status_for_tenant(&t.id, &group).await.map_err(store_err("worker status"))?;
        let now = now_ms();
        let latest_revision = latest.as_ref().map(|b| b.revision.clone());
        let workers = rows
            .into_iter()
            .map(|w| GatewayWorkerView {
                latest: w.revision.is_some()
                    && w.revision == latest_revision
                    && w.sequence == latest.as_ref().map(|b| b.sequence),
                online: now - w.reported_at_ms <= STALE_AFTER_MS,
                worker_id: w.worker_id,
                group: w.group_slug,
                version: w.version,
                revision: w.revision,
                sequence: w.sequence,
                reported_at_ms: w.reported_at_ms,
                error: w.error,
                contact_error: w.contact_error,
            })
            .collect();
        Ok(GatewayStatusView { group, latest_revision, latest_sequence: latest.map(|b| b.sequence), workers })
    }
}
