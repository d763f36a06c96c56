//! The kill switch: suspend a user, a server or one tool, everywhere, with the next bundle.

use std::collections::HashMap;

use gatehouse_bundle::format::{KillList, Killed, KilledTool};
use gatehouse_core::GatehouseError;
use gatehouse_core::views::SuspensionView;
use gatehouse_store::{Server, Store, StoreError, Suspension, User};

use super::{Actor, Need, Result, Services, new_id, store_err};
use crate::now_ms;

/// The kill list of a tenant, for the compiler (suspensions of users or servers that no longer exist
/// are left out).
pub(crate) async fn kill_list(
    store: &Store,
    tenant_id: &str,
    servers: &[Server],
) -> std::result::Result<KillList, StoreError> {
    let rows = store.list_suspensions(tenant_id).await?;
    let slug: HashMap<&str, &str> = servers.iter().map(|s| (s.id.as_str(), s.slug.as_str())).collect();
    let mut list = KillList::default();
    for r in rows {
        match r.kind.as_str() {
            "user" => list.users.push(Killed { id: r.target_id, reason: r.reason }),
            "server" => {
                if let Some(s) = slug.get(r.target_id.as_str()) {
                    list.servers.push(Killed { id: (*s).to_owned(), reason: r.reason });
                }
            }
            "tool" => {
                if let Some(s) = slug.get(r.target_id.as_str()) {
                    list.tools.push(KilledTool { server: (*s).to_owned(), tool: r.tool, reason: r.reason });
                }
            }
            other => return Err(StoreError::Corrupt(format!("suspension {}: kind '{other}'", r.id))),
        }
    }
    Ok(list)
}

/// A form field that was filled in, trimmed.
fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

fn view(r: &Suspension, users: &[User], servers: &[Server]) -> SuspensionView {
    let user =
        (r.kind == "user").then(|| users.iter().find(|u| u.id == r.target_id).map(|u| u.email.clone())).flatten();
    let server =
        (r.kind != "user").then(|| servers.iter().find(|s| s.id == r.target_id).map(|s| s.slug.clone())).flatten();
    SuspensionView {
        id: r.id.clone(),
        kind: r.kind.clone(),
        user,
        server,
        tool: (r.kind == "tool").then(|| r.tool.clone()),
        reason: r.reason.clone(),
        created_by: r.created_by.clone(),
        created_at_ms: r.created_at_ms,
    }
}

impl Services {
    /// A tenant's suspensions, oldest first.
    pub async fn list_suspensions(&self, actor: &Actor, tenant: &str) -> Result<Vec<SuspensionView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let rows = self.store.list_suspensions(&t.id).await.map_err(store_err("suspension"))?;
        let users = self.store.list_users(&t.id).await.map_err(store_err("user"))?;
        let servers = self.store.list_servers(&t.id).await.map_err(store_err("server"))?;
        Ok(rows.iter().map(|r| view(r, &users, &servers)).collect())
    }

    /// Suspends a user (by e-mail), a server, or one tool of a server: name exactly one of `user`
    /// and `server` (with `tool` for a single tool). Takes effect on every worker with the next
    /// bundle, before any grant or rule and in every policy mode.
    pub async fn suspend(
        &self,
        actor: &Actor,
        tenant: &str,
        user: Option<&str>,
        server: Option<&str>,
        tool: Option<&str>,
        reason: &str,
    ) -> Result<SuspensionView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let reason = super::trimmed("reason", reason, 500)?;
        let (kind, target_id, tool) = match (given(user), given(server), given(tool)) {
            (Some(email), None, None) => ("user", self.user_by_email(&t, email).await?.id, String::new()),
            (None, Some(slug), tool) => {
                let s =
                    self.store.server_by_slug(&t.id, slug).await.map_err(store_err("server"))?.ok_or_else(|| {
                        GatehouseError::invalid("server", format!("no server '{slug}' in this tenant"))
                    })?;
                match tool {
                    None => ("server", s.id, String::new()),
                    Some(name) if name.len() <= 200 => ("tool", s.id, name.to_owned()),
                    Some(_) => return Err(GatehouseError::invalid("tool", "at most 200 characters")),
                }
            }
            (Some(_), Some(_), _) => {
                return Err(GatehouseError::invalid("user", "suspend a user or a server, not both at once"));
            }
            (Some(_), None, Some(_)) => {
                return Err(GatehouseError::invalid("tool", "a tool belongs to a server: name it"));
            }
            (None, None, _) => return Err(GatehouseError::invalid("user", "name a user, or a server (and a tool)")),
        };
        let row = Suspension {
            tenant_id: t.id.clone(),
            id: new_id(),
            kind: kind.to_owned(),
            target_id,
            tool,
            reason,
            created_by: actor.email.clone(),
            created_at_ms: now_ms(),
        };
        self.store.insert_suspension(&row).await.map_err(store_err("a suspension of this target"))?;
        self.recompile(&t).await?;
        let users = self.store.list_users(&t.id).await.map_err(store_err("user"))?;
        let servers = self.store.list_servers(&t.id).await.map_err(store_err("server"))?;
        Ok(view(&row, &users, &servers))
    }

    /// Lifts a suspension.
    pub async fn lift_suspension(&self, actor: &Actor, tenant: &str, id: &str) -> Result<bool> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        if !self.store.delete_suspension(&t.id, id).await.map_err(store_err("suspension"))? {
            return Err(GatehouseError::not_found(format!("suspension '{id}'")));
        }
        self.recompile(&t).await?;
        Ok(true)
    }
}
