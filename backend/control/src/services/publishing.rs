//! Publishing mode, the draft's access diff and replay, publish and rollback
//! (`docs/decisions/0015-publishing-and-rollback.md`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gatehouse_bundle::conditions::RequestFacts;
use gatehouse_bundle::format::{self, Content};
use gatehouse_bundle::{Bundle, Decision, DenyKind, Listing, Manifest, SCHEMA_VERSION, TenantPolicy};
use gatehouse_core::rules::PolicyMode;
use gatehouse_core::views::{
    AccessChangeView, PolicyDraftView, PublicationView, ReplayChangeView, ReplayView, ToolRefView,
};
use gatehouse_core::{ErrorCode, GatehouseError};
use gatehouse_store::{PublicationRow, PublishingModeRow, Server, Tenant};

use super::{Actor, Need, Result, Services, store_err};
use crate::now_ms;
use crate::publishing::{self as p, AUTOMATIC, NewPublication, REVIEWED};

/// The replay window: `tools/call` events of the last 7 days…
pub const REPLAY_WINDOW_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// …at most this many, newest first.
pub const REPLAY_MAX_EVENTS: i64 = 10_000;
/// The access diff lists at most this many (user, virtual server) entries.
pub const ACCESS_MAX_ENTRIES: usize = 500;
/// Notes are at most this long.
const NOTE_MAX: usize = 500;

fn internal(e: impl std::fmt::Display) -> GatehouseError {
    let reference = uuid::Uuid::now_v7();
    tracing::error!(%reference, error = %e, "publishing failure");
    GatehouseError::internal(reference)
}

fn note_of(note: &str) -> Result<String> {
    let note = note.trim();
    if note.chars().count() > NOTE_MAX {
        return Err(GatehouseError::invalid("note", format!("must be at most {NOTE_MAX} characters")));
    }
    Ok(note.to_owned())
}

fn publication_view(r: &PublicationRow) -> PublicationView {
    PublicationView {
        number: r.number,
        kind: r.kind.clone(),
        revision: r.revision.clone(),
        restores_number: r.restores_number,
        published_by: r.published_by.clone(),
        note: r.note.clone(),
        published_at_ms: r.published_at_ms,
    }
}

/// The runtime policy of content, built exactly as a worker builds it from a bundle.
fn policy_of(content: &Content) -> Result<TenantPolicy> {
    let bundle = Bundle {
        manifest: Manifest {
            schema_version: SCHEMA_VERSION,
            tenant: content.tenant.clone(),
            group: "simulation".into(),
            revision: content.revision(),
            sequence: 0,
            compiled_at_ms: 0,
            key_id: String::new(),
        },
        content: content.clone(),
    };
    TenantPolicy::build(&bundle).map_err(|e| internal(e.0))
}

/// Could `user` call `tool` of `server` through virtual server `vs`, as `tools/list` shows it? In
/// monitor mode everything but a suspension goes through.
fn callable(policy: &TenantPolicy, vs: &str, user: &str, server: &str, tool: &str) -> bool {
    let Some(route) = policy.virtual_server(vs) else { return false };
    if !route.upstreams.iter().any(|(s, _)| s == server) {
        return false;
    }
    match policy.listing(user, server, tool) {
        Listing::Visible => true,
        Listing::Suspended => false,
        Listing::Hidden => route.mode == PolicyMode::Monitor,
    }
}

/// A recorded call re-decided without its arguments.
#[derive(Debug, PartialEq)]
enum Replayed {
    Allow,
    Deny,
    /// Allowed only if the arguments meet this rule's constraints (`None`: the rule is not found).
    Arguments(Option<format::Rule>),
}

fn rule_in(content: &Content, id: &str) -> Option<format::Rule> {
    content.roles.iter().flat_map(|r| &r.rules).find(|r| r.id == id).cloned()
}

/// One audited call judged again by `policy`, with what the audit event knows of the request (its
/// time and client application; not the client address, which events do not keep, so conditions on
/// `client.ip` fail closed here as they do for an unknown address).
fn replay_one(
    policy: &TenantPolicy,
    content: &Content,
    facts: &RequestFacts<'_>,
    (vs, user, server, tool): (&str, &str, &str, &str),
) -> Replayed {
    let Some(route) = policy.virtual_server(vs) else { return Replayed::Deny };
    if !route.upstreams.iter().any(|(s, _)| s == server) {
        return Replayed::Deny;
    }
    let monitor = route.mode == PolicyMode::Monitor;
    match policy.authorize_tool_in(facts, user, server, tool) {
        Decision::Allow { constrained: false, .. } => Replayed::Allow,
        Decision::Allow { constrained: true, .. } if monitor => Replayed::Allow,
        Decision::Allow { rule, .. } => Replayed::Arguments(rule_in(content, &rule)),
        Decision::Deny { kind: DenyKind::Suspended, .. } => Replayed::Deny,
        Decision::Deny { .. } if monitor => Replayed::Allow,
        Decision::Deny { .. } => Replayed::Deny,
    }
}

/// Tool names of each server, from the definitions the control plane fetched.
fn tools_by_server(servers: &[Server]) -> HashMap<String, Vec<String>> {
    servers
        .iter()
        .map(|s| {
            let defs: Vec<serde_json::Value> = serde_json::from_str(&s.tools_json).unwrap_or_default();
            let names = defs.iter().filter_map(|d| d.get("name")?.as_str().map(str::to_owned)).collect();
            (s.slug.clone(), names)
        })
        .collect()
}

/// The static access diff between what runs and the draft.
fn access_diff(
    running: (&TenantPolicy, &Content),
    draft: (&TenantPolicy, &Content),
    tools: &HashMap<String, Vec<String>>,
) -> (Vec<AccessChangeView>, bool) {
    let mut vss: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in [running.1, draft.1] {
        for vs in &c.virtual_servers {
            vss.entry(vs.slug.as_str()).or_default().extend(vs.upstreams.iter().map(String::as_str));
        }
    }
    let mut users: Vec<&format::User> = draft.1.users.iter().collect();
    users.sort_by(|a, b| a.email.cmp(&b.email));
    let mut out = Vec::new();
    for u in users {
        for (vs, servers) in &vss {
            let (mut gained, mut lost) = (Vec::new(), Vec::new());
            for server in servers {
                for tool in tools.get(*server).into_iter().flatten() {
                    let before = callable(running.0, vs, &u.id, server, tool);
                    let after = callable(draft.0, vs, &u.id, server, tool);
                    let t = || ToolRefView { server: (*server).to_owned(), tool: tool.clone() };
                    match (before, after) {
                        (false, true) => gained.push(t()),
                        (true, false) => lost.push(t()),
                        _ => {}
                    }
                }
            }
            if gained.is_empty() && lost.is_empty() {
                continue;
            }
            if out.len() == ACCESS_MAX_ENTRIES {
                return (out, true);
            }
            out.push(AccessChangeView { user: u.email.clone(), virtual_server: (*vs).to_owned(), gained, lost });
        }
    }
    (out, false)
}

impl Services {
    /// The tenant's draft (compiled from its live rows) and what runs (the published policy with
    /// the live immediate parts), with the newest publication.
    async fn draft_and_running(&self, t: &Tenant) -> Result<(Content, Content, Option<PublicationRow>)> {
        let draft = crate::bundles::compile(&self.store, t).await.map_err(store_err("policy"))?;
        match p::published(&self.store, &t.id).await.map_err(internal)? {
            Some((row, published)) => Ok((draft.clone(), p::compose(&published, &draft), Some(row))),
            None => Ok((draft.clone(), draft, None)),
        }
    }

    /// A tenant's publishing mode and draft: whether it differs from what runs, who would gain or
    /// lose which tools, and the draft replayed against the last 7 days of `tools/call` traffic.
    pub async fn policy_draft(&self, actor: &Actor, tenant: &str) -> Result<PolicyDraftView> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let mode = p::mode(&self.store, &t.id).await.map_err(store_err("publishing mode"))?;
        let (draft, running, latest) = self.draft_and_running(&t).await?;
        let (servers, users) = tokio::try_join!(self.store.list_servers(&t.id), self.store.list_users(&t.id))
            .map_err(store_err("server"))?;
        let since_ms = now_ms() - REPLAY_WINDOW_MS;
        let events = self
            .store
            .list_tool_calls_since(&t.id, since_ms, REPLAY_MAX_EVENTS)
            .await
            .map_err(store_err("audit event"))?;
        let revision = p::policy_revision(&draft);
        let published_revision = latest.as_ref().map(|l| l.revision.clone());
        let rolled_back = latest.as_ref().is_some_and(|l| l.kind == "rollback");
        let changed = published_revision.as_deref() != Some(revision.as_str());
        // The evaluation is CPU work over every user and tool: off the async threads.
        let (access, access_truncated, replay) = tokio::task::spawn_blocking(move || -> Result<_> {
            let (run_policy, draft_policy) = (policy_of(&running)?, policy_of(&draft)?);
            let tools = tools_by_server(&servers);
            let (access, truncated) = access_diff((&run_policy, &running), (&draft_policy, &draft), &tools);
            let email: HashMap<&str, &str> = users.iter().map(|u| (u.id.as_str(), u.email.as_str())).collect();
            let mut replay = ReplayView {
                since_ms,
                max_events: REPLAY_MAX_EVENTS,
                events: events.len() as i64,
                truncated: events.len() as i64 == REPLAY_MAX_EVENTS,
                now_denied: 0,
                now_allowed: 0,
                depends_on_arguments: 0,
                changes: Vec::new(),
            };
            let mut per: BTreeMap<(String, String, String, String), ReplayChangeView> = BTreeMap::new();
            for e in &events {
                let (Some(user), Some(server), Some(tool)) = (&e.user_id, &e.upstream_server, &e.tool) else {
                    continue;
                };
                let vs = e.virtual_server.as_str();
                let facts = RequestFacts::new(None, e.client_name.as_deref(), Some(e.time_ms));
                let call = (vs, user.as_str(), server.as_str(), tool.as_str());
                let before = replay_one(&run_policy, &running, &facts, call);
                let after = replay_one(&draft_policy, &draft, &facts, call);
                let shown = email.get(user.as_str()).map(|e| (*e).to_owned()).or_else(|| e.user_email.clone());
                let shown = shown.unwrap_or_else(|| user.clone());
                let key = (shown.clone(), vs.to_owned(), server.clone(), tool.clone());
                let entry = per.entry(key).or_insert_with(|| ReplayChangeView {
                    user: shown,
                    virtual_server: vs.to_owned(),
                    server: server.clone(),
                    tool: tool.clone(),
                    calls: 0,
                    now_denied: 0,
                    now_allowed: 0,
                    depends_on_arguments: 0,
                });
                entry.calls += 1;
                match (&before, &after) {
                    (Replayed::Allow, Replayed::Deny) => entry.now_denied += 1,
                    (Replayed::Deny, Replayed::Allow) => entry.now_allowed += 1,
                    (Replayed::Arguments(a), Replayed::Arguments(b)) if a.is_some() && a == b => {}
                    (Replayed::Arguments(_), _) | (_, Replayed::Arguments(_)) => entry.depends_on_arguments += 1,
                    _ => {}
                }
            }
            for c in per.into_values() {
                if c.now_denied + c.now_allowed + c.depends_on_arguments == 0 {
                    continue;
                }
                replay.now_denied += c.now_denied;
                replay.now_allowed += c.now_allowed;
                replay.depends_on_arguments += c.depends_on_arguments;
                replay.changes.push(c);
            }
            Ok((access, truncated, replay))
        })
        .await
        .map_err(internal)??;
        Ok(PolicyDraftView {
            mode,
            changed,
            revision,
            published_revision,
            published_number: latest.as_ref().map(|l| l.number),
            rolled_back,
            access,
            access_truncated,
            replay,
        })
    }

    /// A tenant's publications, newest first (`limit` 1–200, default 50).
    pub async fn list_publications(
        &self,
        actor: &Actor,
        tenant: &str,
        limit: Option<i32>,
    ) -> Result<Vec<PublicationView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let limit = match limit {
            None => 50,
            Some(l) if (1..=200).contains(&l) => i64::from(l),
            Some(_) => return Err(GatehouseError::invalid("limit", "must be between 1 and 200")),
        };
        let rows = self.store.list_publications(&t.id, limit).await.map_err(store_err("publication"))?;
        Ok(rows.iter().map(publication_view).collect())
    }

    /// Sets a tenant's publishing mode, `automatic` or `reviewed`. Switching to automatic publishes
    /// the pending draft at once, recorded as a publish by the actor.
    pub async fn set_publishing_mode(&self, actor: &Actor, tenant: &str, mode: &str) -> Result<String> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let mode = mode.trim();
        if mode != AUTOMATIC && mode != REVIEWED {
            return Err(GatehouseError::invalid("mode", "must be 'automatic' or 'reviewed'"));
        }
        // Make sure what runs now is recorded as a publication before the mode changes: the
        // baseline a reviewed tenant's changes are held against.
        self.recompile(&t).await?;
        if mode == AUTOMATIC {
            let draft = crate::bundles::compile(&self.store, &t).await.map_err(store_err("policy"))?;
            let latest = self.store.latest_publication(&t.id, false).await.map_err(store_err("publication"))?;
            let policy = p::policy_part(&draft);
            if latest.is_none_or(|l| l.revision != policy.revision()) {
                let what = NewPublication {
                    kind: "publish",
                    restores_number: None,
                    published_by: Some(&actor.email),
                    note: "publishing mode set to automatic: the draft was published",
                };
                p::record(&self.store, &t.id, &policy, what).await.map_err(store_err("publication"))?;
            }
        }
        let row = PublishingModeRow {
            tenant_id: t.id.clone(),
            mode: mode.to_owned(),
            updated_by: actor.email.clone(),
            updated_at_ms: now_ms(),
        };
        self.store.set_publishing_mode(&row).await.map_err(store_err("publishing mode"))?;
        self.recompile(&t).await?;
        Ok(mode.to_owned())
    }

    /// Publishes the tenant's draft: a new signed bundle with a higher sequence, recorded with the
    /// actor, the time and `note`. Refused with `NOTHING_TO_PUBLISH` when the draft is what runs.
    pub async fn publish_policy(&self, actor: &Actor, tenant: &str, note: &str) -> Result<PublicationView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let note = note_of(note)?;
        // Only the newest publication's revision is read (not its content), so a publication that
        // no longer parses never blocks publishing a fix.
        let draft = crate::bundles::compile(&self.store, &t).await.map_err(store_err("policy"))?;
        let latest = self.store.latest_publication(&t.id, false).await.map_err(store_err("publication"))?;
        let policy = p::policy_part(&draft);
        if latest.as_ref().is_some_and(|l| l.revision == policy.revision()) {
            return Err(GatehouseError::new(
                ErrorCode::NothingToPublish,
                "nothing to publish: the draft is the policy the gateways run (in automatic mode every change is published at once)",
            ));
        }
        let what =
            NewPublication { kind: "publish", restores_number: None, published_by: Some(&actor.email), note: &note };
        let row = p::record(&self.store, &t.id, &policy, what).await.map_err(store_err("publication"))?;
        self.recompile(&t).await?;
        tracing::info!(tenant = %t.slug, number = row.number, by = %actor.email, "policy published");
        Ok(publication_view(&row))
    }

    /// Re-publishes the policy content of an earlier publication (by its revision) under a new,
    /// higher bundle sequence, recorded like a publish. The roles, rules… as edited are left as
    /// they are: the draft then differs from what runs, until the next publish. A tenant in
    /// automatic mode is switched to reviewed mode, or its next change would publish the draft again.
    pub async fn rollback_policy(
        &self,
        actor: &Actor,
        tenant: &str,
        revision: &str,
        note: &str,
    ) -> Result<PublicationView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let revision = revision.trim().to_ascii_lowercase();
        if revision.len() != 64 || !revision.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GatehouseError::invalid("revision", "must be a revision of a publication (64 hex digits)"));
        }
        let note = note_of(note)?;
        let target = self
            .store
            .publication_by_revision(&t.id, &revision)
            .await
            .map_err(store_err("publication"))?
            .ok_or_else(|| GatehouseError::not_found(format!("publication with revision '{revision}'")))?;
        let latest = self.store.latest_publication(&t.id, false).await.map_err(store_err("publication"))?;
        if latest.as_ref().is_some_and(|l| l.revision == target.revision) {
            return Err(GatehouseError::new(
                ErrorCode::NothingToPublish,
                format!("nothing to roll back: revision {} is what the gateways run", &revision[..12]),
            ));
        }
        let content: Content = serde_json::from_str(&target.content_json).map_err(internal)?;
        if p::mode(&self.store, &t.id).await.map_err(store_err("publishing mode"))? != REVIEWED {
            let row = PublishingModeRow {
                tenant_id: t.id.clone(),
                mode: REVIEWED.to_owned(),
                updated_by: actor.email.clone(),
                updated_at_ms: now_ms(),
            };
            self.store.set_publishing_mode(&row).await.map_err(store_err("publishing mode"))?;
        }
        let what = NewPublication {
            kind: "rollback",
            restores_number: Some(target.number),
            published_by: Some(&actor.email),
            note: &note,
        };
        let row = p::record(&self.store, &t.id, &content, what).await.map_err(store_err("publication"))?;
        self.recompile(&t).await?;
        tracing::info!(tenant = %t.slug, number = row.number, restores = target.number, by = %actor.email, "policy rolled back");
        Ok(publication_view(&row))
    }
}
