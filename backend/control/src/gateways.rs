//! Gateway groups as an operator manages them (`gatehouse groups …`): create a group, list the
//! groups with their tenants, and move a tenant to a group. These act on the database directly and
//! are not part of any tenant's API: a tenant admin cannot choose where their bundles go
//! (`docs/decisions/0014-gateway-groups.md`).

use gatehouse_core::ids::validate_slug;
use gatehouse_core::{ErrorCode, GatehouseError};
use gatehouse_store::{Store, StoreError};

use crate::bundles::Bundles;
use crate::now_ms;

/// A group and the tenants (slugs) in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group's slug.
    pub slug: String,
    /// True for the control plane's configured group (where unassigned tenants are).
    pub default: bool,
    /// Its tenants, by slug.
    pub tenants: Vec<String>,
}

fn db(e: StoreError) -> anyhow::Error {
    anyhow::anyhow!("database: {e}")
}

/// Creates a gateway group. Fails with `invalid_input` (field `group`) for a bad slug and
/// `conflict` when it exists.
pub async fn create_group(store: &Store, slug: &str) -> anyhow::Result<()> {
    validate_slug("group", slug)?;
    if !store.ensure_gateway_group(slug, now_ms()).await.map_err(db)? {
        return Err(GatehouseError::new(ErrorCode::Conflict, format!("gateway group '{slug}' already exists")).into());
    }
    Ok(())
}

/// Every group with its tenants; `default_group` (the configured one) holds the unassigned tenants.
pub async fn list_groups(store: &Store, default_group: &str) -> anyhow::Result<Vec<GroupListing>> {
    let groups = store.list_gateway_groups().await.map_err(db)?;
    let assignments: std::collections::HashMap<String, String> =
        store.list_gateway_assignments().await.map_err(db)?.into_iter().collect();
    let tenants = store.list_tenants().await.map_err(db)?;
    let mut out: Vec<GroupListing> = groups
        .iter()
        .map(|g| GroupListing { slug: g.slug.clone(), default: g.slug == default_group, tenants: Vec::new() })
        .collect();
    if !out.iter().any(|g| g.default) {
        out.push(GroupListing { slug: default_group.to_owned(), default: true, tenants: Vec::new() });
        out.sort_by(|a, b| a.slug.cmp(&b.slug));
    }
    for t in tenants {
        let group = assignments.get(&t.id).map_or(default_group, String::as_str);
        if let Some(g) = out.iter_mut().find(|g| g.slug == group) {
            g.tenants.push(t.slug.clone());
        }
    }
    for g in &mut out {
        g.tenants.sort();
    }
    Ok(out)
}

/// Moves a tenant to a group and recompiles it there: its bundle leaves the old group's set and
/// joins the new one's with a higher sequence. Fails with `not_found` for an unknown tenant or
/// group. Other replicas learn of it through the bundle notice (PostgreSQL).
pub async fn assign(store: &Store, bundles: &Bundles, tenant: &str, group: &str) -> anyhow::Result<()> {
    validate_slug("tenant", tenant)?;
    validate_slug("group", group)?;
    let t = store
        .tenant_by_slug(tenant)
        .await
        .map_err(db)?
        .ok_or_else(|| GatehouseError::not_found(format!("tenant '{tenant}'")))?;
    match store.assign_gateway_group(&t.id, group, now_ms()).await {
        Ok(()) => {}
        Err(StoreError::MissingReference(_)) => {
            return Err(GatehouseError::not_found(format!(
                "gateway group '{group}' (create it with `gatehouse groups create {group}`)"
            ))
            .into());
        }
        Err(e) => return Err(db(e)),
    }
    bundles.recompile(&t).await
}
