//! MCP session management for tenant admins (`docs/decisions/0006-stateless-sessions.md`): rotate
//! and retire the keys that seal the client-facing `Mcp-Session-Id`, and end sessions of one user or
//! of the whole tenant. Each takes effect on every gateway worker with the next bundle, in every
//! publishing mode (session keys and the kill list are immediate, `0015`).

use std::collections::HashMap;

use gatehouse_bundle::format::{SESSION_LIFETIME_MS, SessionCutoff};
use gatehouse_core::GatehouseError;
use gatehouse_core::views::{SessionCutoffView, SessionKeyView};
use gatehouse_store::{SessionCutoffRow, SessionKeyRow, Store, StoreError, User};

use super::{Actor, Need, Result, Services, store_err};
use crate::bundles::add_session_key;
use crate::now_ms;

/// The tenant's cutoffs for the compiler: the tenant-wide one and those of users that still exist.
pub(crate) async fn session_cutoffs(
    store: &Store,
    tenant_id: &str,
    users: &[User],
) -> std::result::Result<Vec<SessionCutoff>, StoreError> {
    let rows = store.list_session_cutoffs(tenant_id).await?;
    Ok(rows
        .into_iter()
        .filter(|r| r.user_id.is_empty() || users.iter().any(|u| u.id == r.user_id))
        .map(|r| SessionCutoff { user_id: r.user_id, not_before_ms: r.not_before_ms })
        .collect())
}

/// The key that seals: the newest (highest creation time, then id), as the worker picks it.
fn sealing(keys: &[SessionKeyRow]) -> Option<&SessionKeyRow> {
    keys.iter().max_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)))
}

fn key_views(keys: &[SessionKeyRow]) -> Vec<SessionKeyView> {
    let newest = sealing(keys).map(|k| k.id.clone());
    let mut views: Vec<SessionKeyView> = keys
        .iter()
        .map(|k| SessionKeyView {
            id: k.id.clone(),
            created_at_ms: k.created_at_ms,
            sealing: Some(&k.id) == newest.as_ref(),
        })
        .collect();
    views.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
    views
}

/// A duration as people say it ("3 h 5 min", "40 min", "under a minute").
fn human(ms: i64) -> String {
    let minutes = ms / 60_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => "under a minute".to_owned(),
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

impl Services {
    /// A tenant's session keys, newest (sealing) first.
    pub async fn session_keys(&self, actor: &Actor, tenant: &str) -> Result<Vec<SessionKeyView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let keys = self.store.list_session_keys(&t.id).await.map_err(store_err("session key"))?;
        Ok(key_views(&keys))
    }

    /// Adds a new session key: it seals every session initialized from the next bundle on; older
    /// keys keep opening the sessions they sealed until they are retired.
    pub async fn rotate_session_key(&self, actor: &Actor, tenant: &str) -> Result<SessionKeyView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let row = add_session_key(&self.store, &t.id).await.map_err(store_err("session key"))?;
        self.recompile(&t).await?;
        Ok(SessionKeyView { id: row.id, created_at_ms: row.created_at_ms, sealing: true })
    }

    /// Retires a session key that no longer seals: every session it sealed ends on every worker
    /// with the next bundle. While such sessions may still be live (less than a session's lifetime
    /// since the next key took over), this needs `force`, so an overlap is never cut short by
    /// accident.
    pub async fn retire_session_key(&self, actor: &Actor, tenant: &str, id: &str, force: bool) -> Result<bool> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let keys = self.store.list_session_keys(&t.id).await.map_err(store_err("session key"))?;
        let key = keys
            .iter()
            .find(|k| k.id == id.trim())
            .ok_or_else(|| GatehouseError::not_found(format!("session key '{}'", id.trim())))?;
        if sealing(&keys).is_some_and(|s| s.id == key.id) {
            return Err(GatehouseError::invalid(
                "id",
                format!("session key '{}' seals new sessions: rotate to a new key first, then retire this one", key.id),
            ));
        }
        // It stopped sealing when the next newer key was created.
        let replaced_at = keys
            .iter()
            .filter(|k| (k.created_at_ms, &k.id) > (key.created_at_ms, &key.id))
            .map(|k| k.created_at_ms)
            .min()
            .unwrap_or(key.created_at_ms);
        let live_for = replaced_at + SESSION_LIFETIME_MS - now_ms();
        if live_for > 0 && !force {
            return Err(GatehouseError::invalid(
                "force",
                format!(
                    "sessions sealed with key '{}' may be live for another {}; retiring it now ends them \
                     (their clients must initialize again): pass force to do so",
                    key.id,
                    human(live_for)
                ),
            ));
        }
        let gone = self.store.delete_session_key(&t.id, &key.id).await.map_err(store_err("session key"))?;
        self.recompile(&t).await?;
        Ok(gone)
    }

    /// Ends every session of one user (by e-mail) or, without one, of the whole tenant, initialized
    /// until now: every worker refuses them (404, so clients initialize again) with the next bundle.
    /// The user keeps their access; to stop them, suspend them (kill switch).
    pub async fn end_sessions(
        &self,
        actor: &Actor,
        tenant: &str,
        user_email: Option<&str>,
    ) -> Result<SessionCutoffView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let user = match user_email.map(str::trim).filter(|e| !e.is_empty()) {
            Some(email) => Some(self.user_by_email(&t, email).await?),
            None => None,
        };
        let now = now_ms();
        let row = SessionCutoffRow {
            tenant_id: t.id.clone(),
            user_id: user.as_ref().map(|u| u.id.clone()).unwrap_or_default(),
            not_before_ms: now,
            created_by: actor.email.clone(),
        };
        self.store.upsert_session_cutoff(&row).await.map_err(store_err("session cutoff"))?;
        // Cutoffs older than a session's lifetime end nothing any more.
        self.store
            .prune_session_cutoffs(&t.id, now - SESSION_LIFETIME_MS)
            .await
            .map_err(store_err("session cutoff"))?;
        self.recompile(&t).await?;
        Ok(SessionCutoffView { user: user.map(|u| u.email), not_before_ms: now, created_by: actor.email.clone() })
    }

    /// A tenant's ended sessions (cutoffs younger than a session's lifetime), the tenant-wide one first.
    pub async fn session_cutoffs(&self, actor: &Actor, tenant: &str) -> Result<Vec<SessionCutoffView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let rows = self.store.list_session_cutoffs(&t.id).await.map_err(store_err("session cutoff"))?;
        let users = self.store.list_users(&t.id).await.map_err(store_err("user"))?;
        let email: HashMap<&str, &str> = users.iter().map(|u| (u.id.as_str(), u.email.as_str())).collect();
        let since = now_ms() - SESSION_LIFETIME_MS;
        Ok(rows
            .iter()
            .filter(|r| r.not_before_ms >= since)
            .filter_map(|r| {
                let user = if r.user_id.is_empty() { None } else { Some((*email.get(r.user_id.as_str())?).to_owned()) };
                Some(SessionCutoffView { user, not_before_ms: r.not_before_ms, created_by: r.created_by.clone() })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, at: i64) -> SessionKeyRow {
        SessionKeyRow { tenant_id: "t".into(), id: id.into(), key_b64: String::new(), created_at_ms: at }
    }

    #[test]
    fn the_newest_key_seals_and_is_listed_first() {
        let views = key_views(&[key("a", 5), key("c", 9), key("b", 9)]);
        let order: Vec<(&str, bool)> = views.iter().map(|v| (v.id.as_str(), v.sealing)).collect();
        assert_eq!(order, [("c", true), ("b", false), ("a", false)]);
    }

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(human(30_000), "under a minute");
        assert_eq!(human(40 * 60_000), "40 min");
        assert_eq!(human(3 * 3_600_000), "3 h");
        assert_eq!(human(3 * 3_600_000 + 5 * 60_000 + 999), "3 h 5 min");
    }
}
