//! Publishing: which content the workers get, the tenant's draft or its published policy
//! (`docs/decisions/0015-publishing-and-rollback.md`).
//!
//! [`crate::bundles::compile`] always compiles the tenant's live rows: the **draft**. Its *policy
//! part* ([`policy_part`]: roles, grants, rules, role bindings, servers, virtual servers, data rules,
//! rate limits) is what gets published; the rest (which users exist and their e-mails, tokens,
//! session keys and the kill list) is **immediate** and always comes from the live rows, so a removed
//! user, a revoked token or a suspension takes effect at once in every mode ([`compose`]).
//!
//! * `automatic` mode (the default): every change of the policy part is recorded as an automatic
//!   publication and signed at once (the behaviour before publishing existed).
//! * `reviewed` mode: the signed content is the newest publication's policy part plus the live
//!   immediate parts; changes wait in the draft until an admin publishes.

use std::collections::HashMap;

use gatehouse_bundle::format::{self, Content, KillList};
use gatehouse_store::{PublicationRow, Store, StoreError, Tenant};

use crate::now_ms;

/// Every change is published at once.
pub const AUTOMATIC: &str = "automatic";
/// Changes wait in a draft until an admin publishes.
pub const REVIEWED: &str = "reviewed";

/// The policy part of compiled content: what a publication holds and its revision hashes. Tokens,
/// session keys and the kill list are left out (they are immediate); users are kept only for what
/// policy says about them (roles, groups, attributes; e-mails blanked, users with none of these left
/// out), so adding a user or changing an e-mail is not a policy change.
pub fn policy_part(c: &Content) -> Content {
    let mut p = c.clone();
    p.tokens.clear();
    p.session_keys.clear();
    p.kill = KillList::default();
    p.users.retain(|u| !u.roles.is_empty() || !u.groups.is_empty() || !u.attributes.is_empty());
    for u in &mut p.users {
        u.email.clear();
    }
    p.normalize();
    p
}

/// The revision of content's policy part.
pub fn policy_revision(c: &Content) -> String {
    policy_part(c).revision()
}

/// The content to sign: the published policy part, with the immediate parts of `live` (the draft
/// as compiled now). Every live user is listed with their e-mail and the roles the publication
/// binds them to (a user created since has none until the next publish); users deleted since are
/// gone, and with them their tokens.
pub fn compose(published: &Content, live: &Content) -> Content {
    let mut c = published.clone();
    let bound: HashMap<&str, &format::User> = published.users.iter().map(|u| (u.id.as_str(), u)).collect();
    c.users = live
        .users
        .iter()
        .map(|live| match bound.get(live.id.as_str()) {
            Some(published) => format::User { email: live.email.clone(), ..(*published).clone() },
            None => {
                let mut u = live.clone();
                u.roles.clear();
                u.groups.clear();
                u.attributes.clear();
                u
            }
        })
        .collect();
    c.tenant = live.tenant.clone();
    c.tokens = live.tokens.clone();
    c.session_keys = live.session_keys.clone();
    c.kill = live.kill.clone();
    c.normalize();
    c
}

/// A tenant's publishing mode (`automatic` without a stored one).
pub async fn mode(store: &Store, tenant_id: &str) -> Result<String, StoreError> {
    Ok(store.publishing_mode(tenant_id).await?.map_or_else(|| AUTOMATIC.to_owned(), |r| r.mode))
}

/// The published policy content of a tenant (the newest publication), if any.
pub async fn published(store: &Store, tenant_id: &str) -> anyhow::Result<Option<(PublicationRow, Content)>> {
    let Some(row) = store.latest_publication(tenant_id, true).await? else { return Ok(None) };
    let content: Content = serde_json::from_str(&row.content_json)
        .map_err(|e| anyhow::anyhow!("publication {} of tenant {tenant_id} does not parse: {e}", row.number))?;
    Ok(Some((row, content)))
}

/// What a new publication records.
#[derive(Debug, Clone)]
pub struct NewPublication<'a> {
    /// `automatic`, `publish` or `rollback`.
    pub kind: &'a str,
    /// For a rollback: the publication restored.
    pub restores_number: Option<i64>,
    /// The publisher's e-mail.
    pub published_by: Option<&'a str>,
    /// Why.
    pub note: &'a str,
}

/// Records a publication of `policy` (a [`policy_part`]) with the next number; retries when another
/// replica took the number first.
pub async fn record(
    store: &Store,
    tenant_id: &str,
    policy: &Content,
    what: NewPublication<'_>,
) -> Result<PublicationRow, StoreError> {
    let content_json = serde_json::to_string(policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let revision = policy.revision();
    let mut last = None;
    for _ in 0..5 {
        let number = store.latest_publication(tenant_id, false).await?.map_or(1, |p| p.number + 1);
        let row = PublicationRow {
            tenant_id: tenant_id.to_owned(),
            number,
            kind: what.kind.to_owned(),
            revision: revision.clone(),
            content_json: content_json.clone(),
            restores_number: what.restores_number,
            published_by: what.published_by.map(str::to_owned),
            note: what.note.to_owned(),
            published_at_ms: now_ms(),
        };
        match store.insert_publication(&row).await {
            Ok(()) => return Ok(row),
            Err(e @ StoreError::Conflict(_)) => {
                // Another replica recompiling the same change published it already: once is enough.
                if what.kind == AUTOMATIC
                    && let Some(winner) = store.latest_publication(tenant_id, false).await?
                    && winner.revision == revision
                {
                    return Ok(winner);
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| StoreError::Conflict("publications".into())))
}

/// Given a freshly compiled draft, the content to sign for the workers (called by
/// [`crate::bundles::Bundles::recompile`]). In automatic mode that is the draft, recorded as an
/// automatic publication when its policy part changed; in reviewed mode, the published policy part
/// composed with the draft's immediate parts. A reviewed tenant without any publication (not
/// reachable through the services, which record one before the switch) publishes its draft as the
/// baseline.
pub async fn content_to_sign(store: &Store, tenant: &Tenant, draft: Content) -> anyhow::Result<Content> {
    let policy = policy_part(&draft);
    if mode(store, &tenant.id).await? == REVIEWED
        && let Some((_, published)) = published(store, &tenant.id).await?
    {
        return Ok(compose(&published, &draft));
    }
    let latest = store.latest_publication(&tenant.id, false).await?;
    if latest.is_none_or(|p| p.revision != policy.revision()) {
        let what = NewPublication { kind: AUTOMATIC, restores_number: None, published_by: None, note: "" };
        let row = record(store, &tenant.id, &policy, what).await?;
        tracing::info!(tenant = %tenant.slug, number = row.number, revision = %row.revision, "published automatically");
    }
    Ok(draft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_bundle::format::{Killed, Token, User};

    fn user(id: &str, email: &str, roles: &[&str]) -> User {
        serde_json::from_value(serde_json::json!({"id": id, "email": email, "roles": roles})).unwrap()
    }

    #[test]
    fn immediate_parts_do_not_change_the_policy_revision() {
        let mut a =
            Content { tenant: "acme".into(), users: vec![user("u1", "a@x.io", &["dev"])], ..Default::default() };
        a.normalize();
        let mut b = a.clone();
        b.users.push(user("u2", "b@x.io", &[]));
        b.users[0].email = "renamed@x.io".into();
        b.tokens.push(Token { sha256: "ab".into(), id: "t".into(), user_id: "u1".into(), expires_at_ms: None });
        b.kill.users.push(Killed { id: "u1".into(), reason: "lost laptop".into() });
        b.normalize();
        assert_eq!(policy_revision(&a), policy_revision(&b));
        b.users[1].roles.push("dev".into());
        assert_ne!(policy_revision(&a), policy_revision(&b), "binding a role is a policy change");
    }

    #[test]
    fn compose_takes_roles_from_the_publication_and_everything_immediate_from_live() {
        let published = policy_part(&Content {
            tenant: "acme".into(),
            users: vec![user("u1", "a@x.io", &["dev"]), user("gone", "g@x.io", &["dev"])],
            ..Default::default()
        });
        let mut live = Content {
            tenant: "acme".into(),
            users: vec![user("u1", "a@x.io", &["dev", "ops"]), user("new", "n@x.io", &["ops"])],
            ..Default::default()
        };
        live.kill.users.push(Killed { id: "u1".into(), reason: "r".into() });
        live.tokens.push(Token { sha256: "cd".into(), id: "t".into(), user_id: "new".into(), expires_at_ms: None });
        let c = compose(&published, &live);
        assert_eq!(c.users, vec![user("new", "n@x.io", &[]), user("u1", "a@x.io", &["dev"])]);
        assert_eq!(c.kill, live.kill);
        assert_eq!(c.tokens, live.tokens);
    }
}
