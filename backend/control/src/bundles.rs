//! The policy compiler and bundle distribution.
//!
//! [`compile`] is a pure function of one tenant's rows: the same state gives the same bytes, so
//! every replica computes the same revision. (Its one write: a tenant without a session key gets
//! one first, see [`ensure_session_key`].) [`Bundles::recompile`] stores and signs a new bundle
//! only when the revision changed, with the next sequence number, and wakes the long-polling
//! workers: an in-process channel, and PostgreSQL `LISTEN/NOTIFY` between control-plane replicas.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use gatehouse_bundle::format::{self, Content};
use gatehouse_bundle::rules::select_by_annotation;
use gatehouse_bundle::wire::{DeltaAnswer, Held, WireBundle};
use gatehouse_bundle::{KeyRing, SignedBundle, SigningKey, TenantPolicy};
use gatehouse_core::rules::PolicyMode;
use gatehouse_store::{BundleRow, SessionKeyRow, Store, StoreError, Tenant};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, watch};

use crate::now_ms;

/// Compiles one tenant's state into bundle content (normalized).
pub async fn compile(store: &Store, tenant: &Tenant) -> Result<Content, StoreError> {
    let t = &tenant.id;
    ensure_session_key(store, t).await?;
    let (users, roles, grants, rules, bindings, servers, vss, links, tokens, session_keys, classification) = tokio::try_join!(
        store.list_users(t),
        store.list_roles(t),
        store.list_grants(t),
        store.list_rules(t),
        store.list_bindings(t),
        store.list_servers(t),
        store.list_virtual_servers(t),
        store.list_virtual_server_upstreams(t),
        store.list_tokens(t),
        store.list_session_keys(t),
        store.list_classification_rules(t),
    )?;
    let server_slug: HashMap<_, _> = servers.iter().map(|s| (s.id.as_str(), s.slug.as_str())).collect();
    let role_slug: HashMap<_, _> = roles.iter().map(|r| (r.id.as_str(), r.slug.as_str())).collect();

    let mut user_roles: HashMap<&str, Vec<String>> = HashMap::new();
    for b in &bindings {
        if let Some(slug) = role_slug.get(b.role_id.as_str()) {
            user_roles.entry(b.user_id.as_str()).or_default().push(slug.to_string());
        }
    }
    // Local groups (docs/decisions/0012-groups-and-conditions.md): a user holds the roles bound to
    // each of their groups as well as their own; conditions see the group slugs and attributes.
    let (groups, members, group_roles, attributes) = tokio::try_join!(
        store.list_groups(t),
        store.list_group_members(t),
        store.list_group_roles(t),
        store.list_user_attributes(t),
    )?;
    let group_slug: HashMap<_, _> = groups.iter().map(|g| (g.id.as_str(), g.slug.as_str())).collect();
    let mut roles_of_group: HashMap<&str, Vec<String>> = HashMap::new();
    for gr in &group_roles {
        if let Some(slug) = role_slug.get(gr.role_id.as_str()) {
            roles_of_group.entry(gr.group_id.as_str()).or_default().push(slug.to_string());
        }
    }
    let mut user_groups: HashMap<&str, Vec<String>> = HashMap::new();
    for m in &members {
        let Some(slug) = group_slug.get(m.group_id.as_str()) else { continue };
        user_groups.entry(m.user_id.as_str()).or_default().push(slug.to_string());
        let via_group = roles_of_group.get(m.group_id.as_str()).into_iter().flatten().cloned();
        user_roles.entry(m.user_id.as_str()).or_default().extend(via_group);
    }
    let mut user_attributes: HashMap<&str, BTreeMap<String, String>> = HashMap::new();
    for a in &attributes {
        user_attributes.entry(a.user_id.as_str()).or_default().insert(a.attr_key.clone(), a.attr_value.clone());
    }
    let mut role_grants: HashMap<&str, BTreeMap<String, Vec<String>>> = HashMap::new();
    for g in &grants {
        if let Some(server) = server_slug.get(g.server_id.as_str()) {
            role_grants
                .entry(g.role_id.as_str())
                .or_default()
                .entry(server.to_string())
                .or_default()
                .push(g.tool.clone());
        }
    }
    // Annotation selectors become tool names here, from the definitions the control plane fetched
    // (and an administrator saw), never from what an upstream claims at call time.
    let tool_defs: HashMap<&str, Vec<serde_json::Value>> =
        servers.iter().map(|s| (s.id.as_str(), serde_json::from_str(&s.tools_json).unwrap_or_default())).collect();
    let mut role_rules: HashMap<&str, Vec<format::Rule>> = HashMap::new();
    for row in &rules {
        let Some(server) = server_slug.get(row.server_id.as_str()) else { continue };
        let view = crate::services::rule_view(row, server)?;
        let only = view.annotation.as_ref().map(|a| {
            let defs = tool_defs.get(row.server_id.as_str()).map(Vec::as_slice).unwrap_or_default();
            select_by_annotation(defs, &view.tools, a)
        });
        role_rules.entry(row.role_id.as_str()).or_default().push(format::Rule {
            id: view.id,
            server: view.server,
            effect: view.effect,
            tools: view.tools,
            only,
            annotation: view.annotation,
            params: view.params,
            description: view.description,
            condition: view.condition,
        });
    }
    let mut classification_rules = Vec::new();
    for row in &classification {
        let view = crate::services::classification_view(row)?;
        classification_rules.extend(crate::services::compiled_rule(&view, &servers));
    }
    let mut kill = crate::services::kill_list(store, t, &servers).await?;
    kill.sessions = crate::services::session_cutoffs(store, t, &users).await?;
    let rate_limits = crate::services::compiled_limits(store, t, &roles, &servers).await?;
    let mut content = Content {
        tenant: tenant.slug.clone(),
        users: users
            .iter()
            .map(|u| format::User {
                id: u.id.clone(),
                email: u.email.clone(),
                roles: user_roles.remove(u.id.as_str()).unwrap_or_default(),
                groups: user_groups.remove(u.id.as_str()).unwrap_or_default(),
                attributes: user_attributes.remove(u.id.as_str()).unwrap_or_default(),
            })
            .collect(),
        tokens: tokens
            .iter()
            .filter(|k| k.revoked_at_ms.is_none())
            .map(|k| format::Token {
                sha256: k.sha256.clone(),
                id: k.id.clone(),
                user_id: k.user_id.clone(),
                expires_at_ms: k.expires_at_ms,
            })
            .collect(),
        servers: servers
            .iter()
            .map(|s| format::Server {
                slug: s.slug.clone(),
                url: s.url.clone(),
                labels: serde_json::from_str(&s.labels_json).unwrap_or_default(),
                transport: crate::services::bundle_transport(s),
            })
            .collect(),
        roles: roles
            .iter()
            .map(|r| format::Role {
                slug: r.slug.clone(),
                grants: role_grants.remove(r.id.as_str()).unwrap_or_default(),
                rules: role_rules.remove(r.id.as_str()).unwrap_or_default(),
            })
            .collect(),
        virtual_servers: vss
            .iter()
            .map(|vs| format::VirtualServer {
                slug: vs.slug.clone(),
                upstreams: links
                    .iter()
                    .filter(|l| l.virtual_server_id == vs.id)
                    .filter_map(|l| server_slug.get(l.server_id.as_str()).map(|s| s.to_string()))
                    .collect(),
                // A mode this build does not know is enforced: fail closed.
                mode: PolicyMode::parse(&vs.policy_mode).unwrap_or(PolicyMode::Enforce),
                // Filled in below, by `compile_shaping`.
                conflict_strategy: Default::default(),
                prefixes: Vec::new(),
                overrides: Vec::new(),
            })
            .collect(),
        session_keys: session_keys
            .iter()
            .map(|k| format::SessionKey {
                id: k.id.clone(),
                key_b64: k.key_b64.clone(),
                created_at_ms: k.created_at_ms,
            })
            .collect(),
        classification: classification_rules,
        kill,
        rate_limits,
    };
    crate::services::compile_shaping(store, t, &servers, &vss, &mut content.virtual_servers).await?;
    content.normalize();
    Ok(content)
}

/// Gives a tenant its first session key if it has none. Two replicas compiling a new tenant at the
/// same moment may each add one: both keys are valid, the newer seals, nothing breaks.
pub async fn ensure_session_key(store: &Store, tenant_id: &str) -> Result<(), StoreError> {
    if store.list_session_keys(tenant_id).await?.is_empty() {
        add_session_key(store, tenant_id).await?;
    }
    Ok(())
}

/// Adds a new random session key to a tenant: the start of a rotation. The new key seals from the
/// next bundle on; older keys keep opening tokens until they are deleted (after an overlap at least
/// as long as a session's lifetime, 24 h). The caller recompiles the tenant.
pub async fn add_session_key(store: &Store, tenant_id: &str) -> Result<SessionKeyRow, StoreError> {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut id = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let row = SessionKeyRow {
        tenant_id: tenant_id.to_owned(),
        id: hex::encode(id),
        key_b64: base64::engine::general_purpose::STANDARD.encode(key),
        created_at_ms: now_ms(),
    };
    store.insert_session_key(&row).await?;
    Ok(row)
}

/// Compiles, signs, stores and announces bundles.
#[derive(Clone)]
pub struct Bundles {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    key: SigningKey,
    group: String,
    changed: watch::Sender<u64>,
    /// Serialises recompilation in this process so sequence numbers stay monotonic.
    compiling: Mutex<()>,
}

impl std::fmt::Debug for Bundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundles").field("group", &self.inner.group).field("key_id", &self.inner.key.key_id()).finish()
    }
}

/// A group's current bundle set, as served to workers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BundleSet {
    /// One signed bundle per tenant of the group.
    pub bundles: Vec<SignedBundle>,
}

impl Bundles {
    /// Bundles for `group`, signed with `key`.
    pub fn new(store: Store, key: SigningKey, group: String) -> Self {
        let (changed, _) = watch::channel(0);
        Self { inner: Arc::new(Inner { store, key, group, changed, compiling: Mutex::new(()) }) }
    }

    /// The public key workers must trust, base64.
    pub fn public_key_base64(&self) -> String {
        self.inner.key.public_base64()
    }

    /// The configured (default) gateway group: where a tenant without an assignment goes.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// The key id bundles are signed with now.
    pub fn key_id(&self) -> &str {
        self.inner.key.key_id()
    }

    /// The gateway group a tenant's bundles go to: its assignment, or the configured group.
    pub async fn group_of(&self, tenant_id: &str) -> Result<String, StoreError> {
        Ok(self.inner.store.tenant_gateway_group(tenant_id).await?.unwrap_or_else(|| self.inner.group.clone()))
    }

    /// Recompiles a tenant; stores and announces a new bundle if its revision changed.
    ///
    /// The bundle goes to the tenant's gateway group ([`Bundles::group_of`]). A new bundle is also
    /// issued, with the same content, when the tenant moved to another group (its sequence continues
    /// from the old group's, so it never goes back) or when the newest one was signed with another
    /// key (after a signing-key rotation, `docs/decisions/0014-gateway-groups.md`).
    ///
    /// Two replicas may compile the same tenant at once: the one whose insert loses the race on
    /// (tenant, group, sequence) compiles again against the winner's row.
    pub async fn recompile(&self, tenant: &Tenant) -> anyhow::Result<()> {
        let _guard = self.inner.compiling.lock().await;
        for _ in 0..5 {
            // What the workers get: the draft, or in reviewed mode the published policy with the
            // draft's immediate parts (decision 0015).
            let draft = compile(&self.inner.store, tenant).await?;
            let content = crate::publishing::content_to_sign(&self.inner.store, tenant, draft).await?;
            let revision = content.revision();
            let group = self.group_of(&tenant.id).await?;
            let latest = self.inner.store.latest_bundle_any_group(&tenant.id).await?;
            if latest.as_ref().is_some_and(|b| {
                b.revision == revision && b.group_name == group && signed_key_id(&b.signed_json) == self.key_id()
            }) {
                return Ok(());
            }
            let sequence = latest.map_or(1, |b| b.sequence + 1);
            let now = now_ms();
            let signed = self.inner.key.sign(&group, sequence as u64, now, content);
            let row = BundleRow {
                tenant_id: tenant.id.clone(),
                group_name: group.clone(),
                sequence,
                revision: revision.clone(),
                signed_json: serde_json::to_string(&signed)?,
                created_at_ms: now,
            };
            match self.inner.store.insert_bundle(&row).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            tracing::info!(tenant = %tenant.slug, %group, sequence, %revision, "compiled a new policy bundle");
            self.announce();
            if let Err(e) = self.inner.store.notify_bundle_change(&tenant.id).await {
                // The bundle is stored; replicas that missed the notice still serve it on their
                // workers' next poll.
                tracing::warn!(error = %e, "could not notify other control-plane replicas");
            }
            return Ok(());
        }
        anyhow::bail!("bundle for tenant {} kept conflicting with other replicas", tenant.slug)
    }

    /// Wakes the workers long-polling this replica.
    pub fn announce(&self) {
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// On PostgreSQL, relays other replicas' bundle notices to this replica's long-polling workers,
    /// for as long as the process runs. On SQLite there is one process and nothing to relay.
    pub async fn relay_replica_notices(&self) -> anyhow::Result<()> {
        let Some(mut listener) = self.inner.store.bundle_change_listener().await? else { return Ok(()) };
        let bundles = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(_) => bundles.announce(),
                    Err(e) => {
                        // The listener reconnects on the next `recv`; notices sent meanwhile are
                        // lost, so wake the pollers anyway: they recompute their ETag and answer
                        // only if something changed.
                        tracing::warn!(error = %e, "bundle notice listener lost its connection; reconnecting");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        bundles.announce();
                    }
                }
            }
        });
        Ok(())
    }

    /// The runtime policy of a tenant's newest bundle, verified with our own key: the very object a
    /// worker would build from it, so explanations match enforcement.
    pub async fn active_policy(&self, tenant_id: &str) -> anyhow::Result<Option<TenantPolicy>> {
        let Some(row) = self.latest(tenant_id).await? else { return Ok(None) };
        let signed: SignedBundle = serde_json::from_str(&row.signed_json)?;
        let mut ring = KeyRing::default();
        ring.add_base64(&self.inner.key.public_base64()).map_err(|e| anyhow::anyhow!(e))?;
        let bundle = ring.verify(&signed)?;
        Ok(Some(TenantPolicy::build(&bundle)?))
    }

    /// The newest bundle row of a tenant in its gateway group.
    pub async fn latest(&self, tenant_id: &str) -> Result<Option<BundleRow>, StoreError> {
        let group = self.group_of(tenant_id).await?;
        self.inner.store.latest_bundle(tenant_id, &group).await
    }

    /// Wakes whenever any bundle changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// The group's bundle set (the tenants assigned to it) and its ETag (a hash of every tenant's
    /// sequence and revision, so a tenant joining or leaving the group changes it).
    pub async fn current_set(&self, group: &str) -> anyhow::Result<(String, BundleSet)> {
        let rows = self.inner.store.assigned_bundles_for_group(group, &self.inner.group).await?;
        let mut h = Sha256::new();
        let mut bundles = Vec::with_capacity(rows.len());
        for r in &rows {
            h.update(format!("{}:{}:{}\n", r.tenant_id, r.sequence, r.revision));
            bundles.push(serde_json::from_str::<SignedBundle>(&r.signed_json)?);
        }
        Ok((hex::encode(h.finalize())[..32].to_owned(), BundleSet { bundles }))
    }

    /// The group's tenant list and the bundles a worker that holds `held` lacks, with the same ETag
    /// as [`Bundles::current_set`] (`docs/decisions/0017-bundle-delta-and-compression.md`). A
    /// tenant's bundle is left out when the worker holds its newest sequence and revision. When the
    /// ETag equals `known`, no answer is built (`None`): the caller long-polls.
    pub async fn delta(
        &self,
        group: &str,
        held: &[Held],
        known: Option<&str>,
    ) -> anyhow::Result<(String, Option<DeltaAnswer>)> {
        // Sequences and revisions only: the signed bundles are read below, for the changed tenants.
        let rows = self.inner.store.assigned_bundle_heads_for_group(group, &self.inner.group).await?;
        let mut h = Sha256::new();
        for r in &rows {
            h.update(format!("{}:{}:{}\n", r.tenant_id, r.sequence, r.revision));
        }
        let etag = hex::encode(h.finalize())[..32].to_owned();
        if known == Some(etag.as_str()) {
            return Ok((etag, None));
        }
        let slugs: HashMap<String, String> =
            self.inner.store.list_tenants().await?.into_iter().map(|t| (t.id, t.slug)).collect();
        let held: HashMap<&str, (u64, &str)> =
            held.iter().map(|h| (h.tenant.as_str(), (h.sequence, h.revision.as_str()))).collect();
        // A tenant deleted between the two reads has no slug: it is not in the group any more.
        let mut rows: Vec<(&String, &BundleRow)> =
            rows.iter().filter_map(|r| slugs.get(&r.tenant_id).map(|slug| (slug, r))).collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let mut answer = DeltaAnswer::default();
        for (slug, r) in rows {
            let sequence = r.sequence.max(0) as u64;
            if held.get(slug.as_str()) == Some(&(sequence, r.revision.as_str())) {
                answer.tenants.push(Held { tenant: slug.clone(), sequence, revision: r.revision.clone() });
                continue;
            }
            // Bundles are never deleted, so the row read above is there; should it not be, the
            // tenant's newest one is served and listed (the worker then asks again: new ETag).
            let full = match self.inner.store.bundle_at(&r.tenant_id, group, r.sequence).await? {
                Some(full) => full,
                None => match self.inner.store.latest_bundle(&r.tenant_id, group).await? {
                    Some(full) => full,
                    None => continue,
                },
            };
            let signed: SignedBundle = serde_json::from_str(&full.signed_json)?;
            answer.bundles.push(WireBundle::from_signed(&signed)?);
            answer.tenants.push(Held {
                tenant: slug.clone(),
                sequence: full.sequence.max(0) as u64,
                revision: full.revision,
            });
        }
        Ok((etag, Some(answer)))
    }
}

/// The key id of a stored signed bundle (empty when unreadable, which makes it "another key").
fn signed_key_id(signed_json: &str) -> String {
    #[derive(serde::Deserialize)]
    struct KeyOnly {
        key_id: String,
    }
    serde_json::from_str::<KeyOnly>(signed_json).map(|k| k.key_id).unwrap_or_default()
}
