//! Policy bundles in the worker: verification, ordering and activation, the long poll against the
//! control plane, and the last good set on disk.
//!
//! Everything here runs off the request path. The request path only reads [`PolicyStore::tenant`], a
//! lock-free load of an `ArcSwap`ed map that is replaced whole on every activation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use gatehouse_bundle::wire::{self, DeltaAnswer, DeltaRequest, Held};
use gatehouse_bundle::{Bundle, KeyRing, SignedBundle, TenantPolicy, signing::check_sequence};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::{Backoff, GatewayConfig};

/// File name of the last good bundle set inside the data directory.
const BUNDLES_FILE: &str = "bundles.json";

/// Extra time, beyond the requested wait, before a long poll is considered lost.
const POLL_SLACK: Duration = Duration::from_secs(10);

/// The largest bundle (canonical bytes) a worker takes: a larger one is refused for its tenant and
/// the tenant keeps its current bundle. The scale tenant of `docs/performance.md` is 2.2 MiB.
pub(crate) const DEFAULT_MAX_BUNDLE_BYTES: usize = 64 << 20;

/// The largest bundle answer a worker reads, compressed or once decompressed: a larger one (a gzip
/// bomb, a runaway set) is refused whole and the active set keeps serving.
pub(crate) const DEFAULT_MAX_ANSWER_BYTES: usize = 256 << 20;

/// After the control plane answered the delta endpoint with 404 (an older control plane), how long
/// the worker uses the whole-set `GET` before it tries the delta endpoint again.
const LEGACY_RETRY: Duration = Duration::from_secs(600);

/// The active policies, by tenant slug.
pub(crate) type TenantMap = HashMap<String, Arc<TenantPolicy>>;

/// The wire (and disk) form of a set of bundles: `{"bundles":[SignedBundle, ...]}`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct BundleSet {
    /// One signed bundle per tenant.
    pub bundles: Vec<SignedBundle>,
}

/// What the request path reads, and what status calls report.
pub(crate) struct PolicyStore {
    tenants: ArcSwap<TenantMap>,
    ready: AtomicBool,
    errors: Mutex<ErrorSlots>,
    /// The latest refusal per tenant (from the latest offered set), for the status report: each
    /// tenant's admin sees only their own.
    tenant_errors: Mutex<BTreeMap<String, String>>,
    /// Wakes the status reporter (a bundle set was applied, or the control-plane contact changed).
    pub(crate) report_due: tokio::sync::Notify,
    /// Activations and refusals, for `/metrics`.
    pub(crate) counters: crate::metrics::BundleCounters,
}

/// The latest problem of each kind. Kept apart so that, say, a successful long poll clears a
/// connection error but not the report of a bundle that is still refused.
#[derive(Default)]
struct ErrorSlots {
    poll: Option<String>,
    bundles: Option<String>,
    disk: Option<String>,
}

impl Default for PolicyStore {
    fn default() -> Self {
        Self {
            tenants: ArcSwap::from_pointee(TenantMap::new()),
            ready: AtomicBool::new(false),
            errors: Mutex::new(ErrorSlots::default()),
            tenant_errors: Mutex::new(BTreeMap::new()),
            report_due: tokio::sync::Notify::new(),
            counters: Default::default(),
        }
    }
}

impl PolicyStore {
    /// The active policy of `tenant`.
    pub(crate) fn tenant(&self, tenant: &str) -> Option<Arc<TenantPolicy>> {
        self.tenants.load().get(tenant).cloned()
    }

    /// Every active policy, by tenant.
    pub(crate) fn snapshot(&self) -> Arc<TenantMap> {
        self.tenants.load_full()
    }

    /// True once a bundle set was activated.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The current problems, joined, or `None`.
    pub(crate) fn last_error(&self) -> Option<String> {
        let slots = self.slots();
        let all: Vec<&str> =
            [&slots.poll, &slots.bundles, &slots.disk].into_iter().flatten().map(String::as_str).collect();
        if all.is_empty() { None } else { Some(all.join("; ")) }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, ErrorSlots> {
        // A poisoned lock only means a panic elsewhere while setting a string; the data is still usable.
        self.errors.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_poll_error(&self, error: Option<String>) {
        let mut slots = self.slots();
        if slots.poll != error {
            slots.poll = error;
            drop(slots);
            self.report_due.notify_one();
        }
    }

    /// The latest error talking to the control plane (the bundle poll), if the last poll failed.
    pub(crate) fn contact_error(&self) -> Option<String> {
        self.slots().poll.clone()
    }

    /// The latest refusal of each tenant's bundle, by tenant.
    pub(crate) fn tenant_errors(&self) -> BTreeMap<String, String> {
        self.tenant_errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Where a bundle set came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    ControlPlane,
    Disk,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::ControlPlane => "the control plane",
            Source::Disk => "the disk copy",
        })
    }
}

/// The result of offering a bundle set.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// The active map changed (a tenant was added, removed or got another bundle).
    pub changed: bool,
    /// One message per refused bundle.
    pub refused: Vec<String>,
    /// The refusals that name a tenant (a bundle whose signature failed names the tenant it
    /// claims), by tenant: what that tenant's status report shows.
    pub by_tenant: BTreeMap<String, String>,
    /// A delta answer named a tenant at a bundle this worker neither got nor holds: the next poll
    /// must not present the answer's ETag (`Activator::apply_delta`).
    pub incomplete: bool,
}

/// Turns offered bundle sets into the active map. Owned by the poller task, so activations are
/// serialised without a lock.
pub(crate) struct Activator {
    keyring: KeyRing,
    group: String,
    file: PathBuf,
    store: Arc<PolicyStore>,
    /// The envelopes of the active bundles, by tenant: what gets written to disk.
    envelopes: HashMap<String, SignedBundle>,
    /// Fronts the stdio and SSE servers of the bundles as local Streamable HTTP endpoints.
    bridge: Option<gatehouse_bridge::Bridge>,
    /// Replaced maps, and the policies they held that no newer map holds: the poller frees them
    /// itself once no request holds them (freeing a large policy takes a good part of a second, so
    /// it must not land on the request that happens to drop the last `Arc`).
    retired_maps: Vec<Arc<TenantMap>>,
    retired: Vec<Arc<TenantPolicy>>,
    /// Bundles with more canonical bytes than this are refused ([`DEFAULT_MAX_BUNDLE_BYTES`]).
    max_bundle_bytes: usize,
}

impl Activator {
    /// An activator for `group` that trusts `keyring` and keeps its disk copy in `data_dir`.
    pub(crate) fn new(keyring: KeyRing, group: String, data_dir: &Path, store: Arc<PolicyStore>) -> Self {
        Self {
            keyring,
            group,
            file: data_dir.join(BUNDLES_FILE),
            store,
            envelopes: HashMap::new(),
            bridge: None,
            retired_maps: Vec::new(),
            retired: Vec::new(),
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
        }
    }

    /// Refuses bundles with more canonical bytes than `limit`.
    #[cfg(test)]
    pub(crate) fn set_max_bundle_bytes(&mut self, limit: usize) {
        self.max_bundle_bytes = limit;
    }

    /// What this worker holds, for the delta request: the active bundle of each tenant.
    pub(crate) fn held(&self) -> Vec<Held> {
        let mut held: Vec<Held> = self
            .store
            .tenants
            .load()
            .iter()
            .map(|(tenant, p)| Held {
                tenant: tenant.clone(),
                sequence: p.manifest.sequence,
                revision: p.manifest.revision.clone(),
            })
            .collect();
        held.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        held
    }

    /// Routes the bundles' stdio and SSE servers through `bridge`.
    pub(crate) fn set_bridge(&mut self, bridge: gatehouse_bridge::Bridge) {
        self.bridge = Some(bridge);
    }

    /// The policy of `bundle`, its stdio and SSE servers mapped to their local bridge endpoints (a
    /// worker without a bridge cannot reach them: their URL is left empty, so they fail closed).
    fn build_policy(&self, bundle: &Bundle) -> Result<TenantPolicy, gatehouse_bundle::policy::PolicyError> {
        if bundle.content.servers.iter().all(|s| s.transport.is_streamable_http()) {
            return TenantPolicy::build(bundle);
        }
        let mut local = bundle.clone();
        match &self.bridge {
            Some(bridge) => bridge.localize(&mut local.content.servers),
            None => local.content.servers.iter_mut().filter(|s| !s.transport.is_streamable_http()).for_each(|s| {
                s.url.clear();
            }),
        }
        TenantPolicy::build(&local)
    }

    /// Offers a delta answer: `listed` is the group's complete tenant list, `offered` the bundles
    /// of the listed tenants whose newest bundle this worker does not hold. A listed tenant without
    /// an offered bundle keeps its active one as it is (not verified or built again); a tenant not
    /// listed is removed; an offered bundle goes through every check of [`Activator::apply`].
    /// [`Applied::incomplete`] is set when a listed tenant was neither offered nor held at the
    /// listed sequence and revision (the answer was computed for another state than ours).
    pub(crate) fn apply_delta(&mut self, listed: &[Held], offered: Vec<SignedBundle>, source: Source) -> Applied {
        self.apply_inner(offered, Some(listed), source)
    }

    /// Offers a complete set (one bundle per tenant of the group) and swaps in the result.
    ///
    /// A bundle is refused when it does not verify, is for another group, or is older than the one
    /// active for its tenant; that tenant keeps its current bundle. A tenant absent from the set is
    /// removed, except when a refused bundle could not be attributed to a tenant (its signature did not
    /// verify, so its claimed tenant is not trusted): then nothing is removed in this round, because the
    /// unreadable bundle may be the one for a tenant we would otherwise drop.
    pub(crate) fn apply(&mut self, offered: Vec<SignedBundle>, source: Source) -> Applied {
        self.apply_inner(offered, None, source)
    }

    fn apply_inner(&mut self, offered: Vec<SignedBundle>, listed: Option<&[Held]>, source: Source) -> Applied {
        let current = self.store.tenants.load_full();
        let mut next = TenantMap::new();
        let mut envelopes = HashMap::new();
        let mut accepted = HashSet::new();
        let mut refused = Vec::new();
        let mut by_tenant = BTreeMap::new();
        let mut keep_unlisted = false;
        // The tenants the offered bundles name (verified or merely claimed), for `incomplete`.
        let mut named = HashSet::new();
        let mut unnamed = false;
        for signed in &offered {
            match claimed_tenant_of_large(signed) {
                Some(t) => named.insert(t),
                None => {
                    unnamed = true;
                    false
                }
            };
        }

        for signed in offered {
            // Base64 length × 3/4 is the canonical size (within two bytes); checked before decoding.
            if signed.payload.len() / 4 * 3 > self.max_bundle_bytes {
                // Not parsed, so not attributed for decisions: like a bad signature, nothing is removed.
                keep_unlisted = true;
                let claim = claimed_tenant_of_large(&signed);
                let message = format!(
                    "refused a bundle from {source} claiming tenant '{}': it has about {} bytes, over this worker's \
                     limit of {} bytes; the tenant's previous bundle keeps serving",
                    claim.as_deref().unwrap_or("?"),
                    signed.payload.len() / 4 * 3,
                    self.max_bundle_bytes
                );
                if let Some(t) = claim {
                    by_tenant.entry(t).or_insert_with(|| message.clone());
                }
                refused.push(message);
                continue;
            }
            let bundle = match self.keyring.verify(&signed) {
                Ok(bundle) => bundle,
                Err(e) => {
                    keep_unlisted = true;
                    let claim = match claimed_tenant(&signed) {
                        Some(t) => format!("claiming tenant '{t}'"),
                        None => "naming no readable tenant".to_owned(),
                    };
                    let message = format!(
                        "refused a bundle from {source} {claim}: {e}; the tenant's previous bundle keeps serving"
                    );
                    if let Some(t) = claimed_tenant(&signed) {
                        by_tenant.entry(t).or_insert_with(|| message.clone());
                    }
                    refused.push(message);
                    continue;
                }
            };
            let tenant = bundle.manifest.tenant.clone();
            let active = current.get(&tenant);
            match self.admissible(&bundle, active.map(|p| p.as_ref()), accepted.contains(&tenant)) {
                Ok(()) => {
                    // Same manifest as the active one: keep the built policy instead of rebuilding it.
                    let policy = match active {
                        Some(p) if p.manifest == bundle.manifest => Arc::clone(p),
                        _ => match self.build_policy(&bundle) {
                            Ok(policy) => Arc::new(policy),
                            Err(e) => {
                                let keeps = match active {
                                    Some(p) => format!("revision {} keeps serving", short(&p.manifest.revision)),
                                    None => "the tenant stays unavailable".to_owned(),
                                };
                                let message =
                                    format!("refused the bundle for tenant '{tenant}' from {source}: {e}; {keeps}");
                                by_tenant.entry(tenant.clone()).or_insert_with(|| message.clone());
                                refused.push(message);
                                self.keep(&current, &tenant, &mut next, &mut envelopes);
                                continue;
                            }
                        },
                    };
                    accepted.insert(tenant.clone());
                    next.insert(tenant.clone(), policy);
                    envelopes.insert(tenant, signed);
                }
                Err(reason) => {
                    let keeps = match active {
                        Some(p) => format!("revision {} keeps serving", short(&p.manifest.revision)),
                        None => "the tenant stays unavailable".to_owned(),
                    };
                    let message = format!("refused the bundle for tenant '{tenant}' from {source}: {reason}; {keeps}");
                    by_tenant.entry(tenant.clone()).or_insert_with(|| message.clone());
                    refused.push(message);
                    self.keep(&current, &tenant, &mut next, &mut envelopes);
                }
            }
        }
        if keep_unlisted {
            for tenant in current.keys() {
                self.keep(&current, tenant, &mut next, &mut envelopes);
            }
        }
        // A delta answer: the listed tenants not offered keep what they run.
        for h in listed.unwrap_or_default() {
            self.keep(&current, &h.tenant, &mut next, &mut envelopes);
        }

        let changed = !same_revisions(&current, &next);
        if changed {
            for (tenant, policy) in &next {
                if current.get(tenant).is_none_or(|old| old.manifest != policy.manifest) {
                    self.store.counters.activated(source);
                    info!(
                        tenant = %tenant,
                        revision = %policy.manifest.revision,
                        sequence = policy.manifest.sequence,
                        source = %source,
                        "activated policy bundle"
                    );
                }
            }
            for tenant in current.keys().filter(|t| !next.contains_key(*t)) {
                info!(tenant = %tenant, source = %source, "tenant removed from this gateway group");
            }
            for (tenant, old) in current.iter() {
                if next.get(tenant).is_none_or(|p| !Arc::ptr_eq(p, old)) {
                    self.retired.push(Arc::clone(old));
                }
            }
            self.store.tenants.store(Arc::new(next));
            self.retired_maps.push(current);
        }
        self.envelopes = envelopes;
        let now = self.store.tenants.load();
        let incomplete = !unnamed
            && listed.unwrap_or_default().iter().any(|h| {
                !named.contains(&h.tenant)
                    && now
                        .get(&h.tenant)
                        .is_none_or(|p| p.manifest.sequence != h.sequence || p.manifest.revision != h.revision)
            });
        Applied { changed, refused, by_tenant, incomplete }
    }

    /// Takes the retired policies that nothing but this activator holds any more, for the caller to
    /// free off the request path. A policy stays retired while a request holds it, or while a
    /// request holds a replaced map (which could still hand it out).
    fn release_retired(&mut self) -> Vec<Arc<TenantPolicy>> {
        self.retired_maps.retain(|m| Arc::strong_count(m) > 1);
        if !self.retired_maps.is_empty() {
            return Vec::new();
        }
        let (free, held) = std::mem::take(&mut self.retired).into_iter().partition(|p| Arc::strong_count(p) == 1);
        self.retired = held;
        free
    }

    /// Frees what [`Activator::release_retired`] released, on a blocking thread.
    fn free_retired(&mut self) {
        let free = self.release_retired();
        if !free.is_empty() {
            tokio::task::spawn_blocking(move || drop(free));
        }
    }

    /// Why `bundle` may not replace `active`, if it may not.
    fn admissible(&self, bundle: &Bundle, active: Option<&TenantPolicy>, duplicate: bool) -> Result<(), String> {
        let m = &bundle.manifest;
        if m.group != self.group {
            return Err(format!("it is for gateway group '{}', this worker serves '{}'", m.group, self.group));
        }
        if m.tenant != bundle.content.tenant {
            return Err(format!(
                "its manifest names tenant '{}' but its content '{}'",
                m.tenant, bundle.content.tenant
            ));
        }
        if duplicate {
            return Err("the set holds two bundles for this tenant; the first one is used".to_owned());
        }
        check_sequence(m, active.map(|p| &p.manifest)).map_err(|e| e.to_string())
    }

    /// Carries the active bundle of `tenant`, if any, into the next map (unless already there).
    fn keep(
        &self,
        current: &TenantMap,
        tenant: &str,
        next: &mut TenantMap,
        envelopes: &mut HashMap<String, SignedBundle>,
    ) {
        if let (Some(policy), Some(envelope)) = (current.get(tenant), self.envelopes.get(tenant)) {
            next.entry(tenant.to_owned()).or_insert_with(|| Arc::clone(policy));
            envelopes.entry(tenant.to_owned()).or_insert_with(|| envelope.clone());
        }
    }

    /// Applies a set and does the bookkeeping around it: readiness, the error report, and the disk copy
    /// (only for sets from the control plane, and only when something changed).
    pub(crate) async fn activate(&mut self, offered: Vec<SignedBundle>, source: Source) {
        let applied = self.apply(offered, source);
        self.settle(applied, source).await;
    }

    /// [`Activator::activate`] for a delta answer ([`Activator::apply_delta`]); true when the answer
    /// was incomplete for this worker's state.
    pub(crate) async fn activate_delta(&mut self, listed: &[Held], offered: Vec<SignedBundle>) -> bool {
        let applied = self.apply_delta(listed, offered, Source::ControlPlane);
        let incomplete = applied.incomplete;
        self.settle(applied, Source::ControlPlane).await;
        incomplete
    }

    async fn settle(&mut self, applied: Applied, source: Source) {
        self.free_retired();
        self.store.counters.refused(source, applied.refused.len());
        for message in &applied.refused {
            warn!("{message}");
        }
        // Ready once something serves, or once a set was taken whole (an empty set is a valid answer).
        if applied.refused.is_empty() || !self.envelopes.is_empty() {
            self.store.ready.store(true, Ordering::Release);
        }
        self.store.slots().bundles = if applied.refused.is_empty() { None } else { Some(applied.refused.join("; ")) };
        // Each set is complete (a delta answer offers again every bundle this worker does not run,
        // refused ones included), so its refusals replace the previous ones: a tenant whose bundle
        // is now accepted (or who left the group) has no error any more.
        *self.store.tenant_errors.lock().unwrap_or_else(|e| e.into_inner()) = applied.by_tenant.clone();
        self.store.report_due.notify_one();
        if applied.changed && source == Source::ControlPlane {
            let result = self.persist().await;
            if let Err(e) = &result {
                error!("{e:#}");
            }
            self.store.slots().disk = result.err().map(|e| format!("{e:#}"));
        }
    }

    /// Loads and activates `{data_dir}/bundles.json`, verifying it like any other set. A missing file
    /// is normal on a first start; an unreadable one is reported and ignored.
    pub(crate) async fn load_from_disk(&mut self) {
        let bytes = match tokio::fs::read(&self.file).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                let message = format!("could not read the bundle copy {}: {e}", self.file.display());
                error!("{message}");
                self.store.slots().disk = Some(message);
                return;
            }
        };
        match serde_json::from_slice::<BundleSet>(&bytes) {
            Ok(set) => {
                let count = set.bundles.len();
                self.activate(set.bundles, Source::Disk).await;
                info!(bundles = count, file = %self.file.display(), "loaded the last good bundle set from disk");
            }
            Err(e) => {
                let message = format!(
                    "the bundle copy {} is not readable ({e}); waiting for the control plane",
                    self.file.display()
                );
                error!("{message}");
                self.store.slots().disk = Some(message);
            }
        }
    }

    /// Writes the active envelopes to disk atomically (temporary file, fsync, rename), so a crash
    /// leaves either the old or the new set, never a torn one.
    async fn persist(&self) -> anyhow::Result<()> {
        let mut bundles: Vec<(&String, &SignedBundle)> = self.envelopes.iter().collect();
        bundles.sort_by(|a, b| a.0.cmp(b.0));
        let set = BundleSet { bundles: bundles.into_iter().map(|(_, b)| b.clone()).collect() };
        let bytes = serde_json::to_vec_pretty(&set)?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || write_atomically(&file, &bytes))
            .await?
            .map_err(|e| anyhow::anyhow!("could not save the bundle copy {}: {e}", self.file.display()))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // Make the rename itself durable; not every platform lets a directory be opened, so best effort.
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Same tenants with the same manifests?
fn same_revisions(a: &TenantMap, b: &TenantMap) -> bool {
    a.len() == b.len() && a.iter().all(|(t, p)| b.get(t).is_some_and(|q| q.manifest == p.manifest))
}

/// The tenant an unverified bundle claims to be for. Used only in messages, never for decisions.
fn claimed_tenant(signed: &SignedBundle) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        manifest: PeekManifest,
    }
    #[derive(Deserialize)]
    struct PeekManifest {
        tenant: String,
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(&signed.payload).ok()?;
    let peek: Peek = serde_json::from_slice(&bytes).ok()?;
    // Printed in logs: keep it short and printable.
    Some(peek.manifest.tenant.chars().filter(|c| !c.is_control()).take(64).collect())
}

/// The tenant an oversized, unverified bundle claims, from the first bytes of its payload only.
fn claimed_tenant_of_large(signed: &SignedBundle) -> Option<String> {
    let head = signed.payload.get(..signed.payload.len().min(1024))?;
    let head = &head[..head.len() / 4 * 4];
    let bytes = base64::engine::general_purpose::STANDARD.decode(head).ok()?;
    wire::peek_tenant(&String::from_utf8_lossy(&bytes))
}

/// The first 12 hex digits of a revision, enough to tell them apart in a message.
fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// Where and how the poller asks for bundles.
pub(crate) struct PollTarget {
    url: String,
    token: String,
    wait_secs: u64,
    /// The largest answer read, compressed or decompressed ([`DEFAULT_MAX_ANSWER_BYTES`]).
    max_answer_bytes: usize,
}

impl PollTarget {
    /// From the worker's configuration.
    pub(crate) fn new(config: &GatewayConfig) -> Self {
        Self {
            url: format!("{}/v1/bundles/{}", config.control_url, config.group),
            token: config.worker_token.clone(),
            // At least a second: a zero wait would turn the long poll into a busy loop.
            wait_secs: config.poll_wait.as_secs().max(1),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

/// The bundle poller: long-polls the control plane forever and activates every new set.
///
/// It asks `POST {url}/delta` with what it holds, so only changed tenants travel, gzip-compressed
/// (`docs/decisions/0017-bundle-delta-and-compression.md`). A control plane without that endpoint
/// (404 without an error body, or 405: an older version) is asked the whole set with `GET {url}`
/// instead, and the delta endpoint is tried again after [`LEGACY_RETRY`].
pub(crate) async fn poll(mut activator: Activator, http: reqwest::Client, target: PollTarget) {
    let store = Arc::clone(&activator.store);
    let mut etag: Option<String> = None;
    let mut legacy_until: Option<tokio::time::Instant> = None;
    let mut backoff = Backoff::standard();
    loop {
        let delta = legacy_until.is_none_or(|t| tokio::time::Instant::now() >= t);
        let failure = match delta {
            true => match poll_delta(&mut activator, &http, &target, &mut etag).await {
                Some(outcome) => {
                    legacy_until = None;
                    outcome
                }
                None => {
                    info!(url = %target.url, "the control plane has no delta endpoint; asking for whole bundle sets");
                    legacy_until = Some(tokio::time::Instant::now() + LEGACY_RETRY);
                    poll_whole(&mut activator, &http, &target, &mut etag).await
                }
            },
            false => poll_whole(&mut activator, &http, &target, &mut etag).await,
        };
        // Policies replaced earlier but then still held by a request.
        activator.free_retired();
        match failure {
            None => {
                store.set_poll_error(None);
                backoff.reset();
            }
            Some(message) => {
                warn!("{message}");
                store.set_poll_error(Some(message));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// The long poll's timeout: the requested wait plus some slack.
fn poll_timeout(target: &PollTarget) -> Duration {
    Duration::from_secs(target.wait_secs) + POLL_SLACK
}

/// Reads a response body of at most `limit` bytes (an answer over it is refused, not buffered).
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("it is larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("it is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// One delta poll. `None` when the control plane does not serve the delta endpoint; otherwise the
/// poll's failure, if any.
async fn poll_delta(
    activator: &mut Activator,
    http: &reqwest::Client,
    target: &PollTarget,
    etag: &mut Option<String>,
) -> Option<Option<String>> {
    let body = serde_json::to_vec(&DeltaRequest { held: activator.held() }).expect("a delta request serialises");
    let mut request = http
        .post(format!("{}/delta?wait={}", target.url, target.wait_secs))
        .bearer_auth(&target.token)
        .timeout(poll_timeout(target))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT_ENCODING, "gzip")
        .body(body);
    if let Some(tag) = etag.as_deref() {
        request = request.header(http::header::IF_NONE_MATCH, tag);
    }
    let response = match request.send().await {
        Err(e) => return Some(Some(format!("cannot reach the control plane at {}: {}", target.url, describe(&e)))),
        Ok(response) => response,
    };
    let failure = match response.status() {
        reqwest::StatusCode::NOT_MODIFIED => None,
        reqwest::StatusCode::OK => {
            let tag = response.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let gzip = response
                .headers()
                .get(http::header::CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            let limit = target.max_answer_bytes;
            let answer = read_bounded(response, limit)
                .await
                .and_then(|body| match gzip {
                    true => wire::gunzip_bounded(&body, limit).map_err(|e| e.to_string()),
                    false => Ok(body),
                })
                .and_then(|body| {
                    serde_json::from_slice::<DeltaAnswer>(&body).map_err(|e| format!("it is not a delta answer: {e}"))
                });
            match answer {
                Ok(answer) => {
                    let offered = answer.bundles.into_iter().map(wire::WireBundle::into_signed).collect();
                    if activator.activate_delta(&answer.tenants, offered).await {
                        // Ask again without the ETag, so the next answer is computed for our state.
                        *etag = None;
                        Some(
                            "the control plane's bundle answer did not match this worker's bundles; asking again"
                                .into(),
                        )
                    } else {
                        *etag = tag;
                        // Without an ETag the next poll would return at once: report it and back off.
                        etag.is_none().then(|| "the control plane answered bundles without an ETag".to_owned())
                    }
                }
                Err(e) => {
                    Some(format!("refused the control plane's bundle answer: {e}; the active bundles keep serving"))
                }
            }
        }
        reqwest::StatusCode::NOT_FOUND => {
            // Our control plane's 404 names the unknown group in an error body; an older control
            // plane's router answers an unknown path without one.
            let text = read_bounded(response, 64 << 10).await.unwrap_or_default();
            if !String::from_utf8_lossy(&text).contains("NOT_FOUND") {
                return None;
            }
            Some(format!(
                "the control plane does not know this gateway group (HTTP 404): {}",
                String::from_utf8_lossy(&text)
            ))
        }
        reqwest::StatusCode::METHOD_NOT_ALLOWED => return None,
        status => Some(status_failure(status)),
    };
    Some(failure)
}

/// One whole-set poll (`GET {url}`), for control planes without the delta endpoint.
async fn poll_whole(
    activator: &mut Activator,
    http: &reqwest::Client,
    target: &PollTarget,
    etag: &mut Option<String>,
) -> Option<String> {
    let mut request = http
        .get(format!("{}?wait={}", target.url, target.wait_secs))
        .bearer_auth(&target.token)
        .timeout(poll_timeout(target));
    if let Some(tag) = etag.as_deref() {
        request = request.header(http::header::IF_NONE_MATCH, tag);
    }
    match request.send().await {
        Err(e) => Some(format!("cannot reach the control plane at {}: {}", target.url, describe(&e))),
        Ok(response) => match response.status() {
            reqwest::StatusCode::NOT_MODIFIED => None,
            reqwest::StatusCode::OK => {
                let tag = response.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
                match read_bounded(response, target.max_answer_bytes).await.and_then(|body| {
                    serde_json::from_slice::<BundleSet>(&body).map_err(|e| format!("not a bundle set: {e}"))
                }) {
                    Ok(set) => {
                        activator.activate(set.bundles, Source::ControlPlane).await;
                        *etag = tag;
                        // Without an ETag the next poll would return at once: report it and back off.
                        etag.is_none().then(|| "the control plane answered bundles without an ETag".to_owned())
                    }
                    Err(e) => Some(format!("the control plane's bundle answer was unreadable: {e}")),
                }
            }
            status => Some(status_failure(status)),
        },
    }
}

/// The message for a poll answered with `status`.
fn status_failure(status: reqwest::StatusCode) -> String {
    match status {
        reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => format!(
            "the control plane refused the worker token (HTTP {}); check the worker token configuration",
            status.as_u16()
        ),
        status => format!("the control plane answered the bundle poll with HTTP {}", status.as_u16()),
    }
}

/// A transport error in words, without the URL (which the caller names already).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_bundle::SigningKey;
    use gatehouse_bundle::format::{Content, VirtualServer};

    use super::*;

    fn content(tenant: &str, vs: &str) -> Content {
        let mut c = Content {
            tenant: tenant.into(),
            virtual_servers: vec![VirtualServer {
                slug: vs.into(),
                upstreams: vec![],
                mode: gatehouse_core::rules::PolicyMode::Enforce,
                conflict_strategy: Default::default(),
                prefixes: vec![],
                overrides: vec![],
            }],
            ..Default::default()
        };
        c.normalize();
        c
    }

    fn activator(key: &SigningKey, dir: &Path) -> Activator {
        let mut ring = KeyRing::default();
        ring.add_base64(&key.public_base64()).unwrap();
        Activator::new(ring, "default".into(), dir, Arc::new(PolicyStore::default()))
    }

    fn revision(a: &Activator, tenant: &str) -> Option<String> {
        a.store.tenant(tenant).map(|p| p.manifest.revision.clone())
    }

    #[test]
    fn refusals_keep_the_old_bundle_and_absent_tenants_go() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut a = activator(&key, dir.path());
        let acme1 = key.sign("default", 1, 0, content("acme", "dev"));
        let beta1 = key.sign("default", 1, 0, content("beta", "dev"));
        let applied = a.apply(vec![acme1.clone(), beta1], Source::ControlPlane);
        assert!(applied.changed && applied.refused.is_empty());
        let acme_rev = revision(&a, "acme").unwrap();

        // Older sequence for acme, other group for a new tenant, beta left out.
        let acme0 = key.sign("default", 0, 0, content("acme", "older"));
        let other = key.sign("eu", 1, 0, content("gamma", "dev"));
        let applied = a.apply(vec![acme0, other], Source::ControlPlane);
        assert_eq!(applied.refused.len(), 2, "{:?}", applied.refused);
        assert!(applied.refused[0].contains("older"), "{}", applied.refused[0]);
        assert!(applied.refused[1].contains("group 'eu'"), "{}", applied.refused[1]);
        assert_eq!(revision(&a, "acme"), Some(acme_rev.clone()));
        assert!(revision(&a, "beta").is_none(), "an absent tenant is removed");
        assert!(revision(&a, "gamma").is_none());
    }

    #[test]
    fn an_unattributable_refusal_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut a = activator(&key, dir.path());
        a.apply(vec![key.sign("default", 1, 0, content("acme", "dev"))], Source::ControlPlane);
        let forged = SigningKey::generate();
        let mut bad = forged.sign("default", 2, 0, content("acme", "evil"));
        bad.key_id = key.key_id().to_owned();
        let applied = a.apply(vec![bad], Source::ControlPlane);
        assert!(!applied.changed);
        assert!(applied.refused[0].contains("claiming tenant 'acme'"), "{}", applied.refused[0]);
        assert!(applied.refused[0].contains("signature"), "{}", applied.refused[0]);
        assert!(a.store.tenant("acme").unwrap().virtual_server("dev").is_some());
    }

    #[test]
    fn refusals_are_reported_per_tenant_and_cleared_when_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut a = activator(&key, dir.path());
        let applied = a.apply(
            vec![key.sign("default", 2, 0, content("acme", "dev")), key.sign("default", 1, 0, content("beta", "dev"))],
            Source::ControlPlane,
        );
        assert!(applied.by_tenant.is_empty());
        // acme goes back a sequence; beta is fine: only acme has an error, naming the reason.
        let applied = a.apply(
            vec![key.sign("default", 1, 0, content("acme", "old")), key.sign("default", 1, 0, content("beta", "dev"))],
            Source::ControlPlane,
        );
        assert_eq!(applied.by_tenant.keys().collect::<Vec<_>>(), vec!["acme"]);
        assert!(applied.by_tenant["acme"].contains("older"), "{}", applied.by_tenant["acme"]);
        let report = crate::status::build_report("w1", "default", &a.store);
        assert!(report.tenants.iter().all(|t| t.tenant != "beta" || t.error.is_none()));
        // A newer acme bundle resolves it.
        let applied = a.apply(
            vec![key.sign("default", 3, 0, content("acme", "dev")), key.sign("default", 1, 0, content("beta", "dev"))],
            Source::ControlPlane,
        );
        assert!(applied.by_tenant.is_empty());
    }

    #[test]
    fn key_rotation_with_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let old = SigningKey::generate();
        let new = SigningKey::generate();
        // During the overlap the worker trusts both keys and takes bundles signed by either.
        let mut ring = KeyRing::default();
        ring.add_base64(&old.public_base64()).unwrap();
        ring.add_base64(&new.public_base64()).unwrap();
        let mut both = Activator::new(ring, "default".into(), dir.path(), Arc::new(PolicyStore::default()));
        let applied = both.apply(vec![old.sign("default", 1, 0, content("acme", "dev"))], Source::ControlPlane);
        assert!(applied.refused.is_empty() && revision(&both, "acme").is_some());
        let applied = both.apply(vec![new.sign("default", 2, 0, content("acme", "prod"))], Source::ControlPlane);
        assert!(applied.refused.is_empty(), "{:?}", applied.refused);
        assert_eq!(both.store.tenant("acme").unwrap().manifest.sequence, 2);
        assert!(both.store.tenant("acme").unwrap().virtual_server("prod").is_some());

        // After the old key is removed, a bundle signed with it is refused (and attributed).
        let dir2 = tempfile::tempdir().unwrap();
        let mut only_new = activator(&new, dir2.path());
        let applied = only_new.apply(vec![old.sign("default", 3, 0, content("acme", "dev"))], Source::ControlPlane);
        assert_eq!(applied.refused.len(), 1);
        assert!(applied.by_tenant["acme"].contains("key"), "{}", applied.by_tenant["acme"]);
        assert!(revision(&only_new, "acme").is_none());
        let applied = only_new.apply(vec![new.sign("default", 3, 0, content("acme", "dev"))], Source::ControlPlane);
        assert!(applied.refused.is_empty() && revision(&only_new, "acme").is_some());
    }

    #[test]
    fn a_replaced_policy_is_freed_by_the_activator_not_by_the_last_request() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut a = activator(&key, dir.path());
        a.apply(vec![key.sign("default", 1, 0, content("acme", "dev"))], Source::ControlPlane);
        // A request holds the policy, and another the whole map, while a new bundle replaces it.
        let request = a.store.tenant("acme").unwrap();
        let map_request = a.store.snapshot();
        let old = Arc::downgrade(&request);
        a.apply(vec![key.sign("default", 2, 0, content("acme", "prod"))], Source::ControlPlane);
        assert_eq!(a.store.tenant("acme").unwrap().manifest.sequence, 2);
        assert!(a.release_retired().is_empty(), "requests still hold it");
        drop(request);
        assert!(a.release_retired().is_empty(), "the old map could still hand it out");
        drop(map_request);
        // The requests are done, yet the policy is alive: the activator frees it, not them.
        assert!(old.upgrade().is_some());
        let free = a.release_retired();
        assert_eq!(free.len(), 1);
        assert_eq!(free[0].manifest.sequence, 1);
        drop(free);
        assert!(old.upgrade().is_none());
        assert!(a.release_retired().is_empty() && a.retired.is_empty() && a.retired_maps.is_empty());
        // An unchanged set retires nothing.
        a.apply(vec![key.sign("default", 2, 0, content("acme", "prod"))], Source::ControlPlane);
        assert!(a.retired.is_empty());
    }

    fn held(a: &Activator, tenant: &str) -> Held {
        let p = a.store.tenant(tenant).unwrap();
        Held { tenant: tenant.into(), sequence: p.manifest.sequence, revision: p.manifest.revision.clone() }
    }

    #[tokio::test]
    async fn a_delta_keeps_what_was_not_sent_and_drops_who_left() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut a = activator(&key, dir.path());
        a.activate(
            vec![
                key.sign("default", 1, 0, content("acme", "dev")),
                key.sign("default", 1, 0, content("beta", "dev")),
                key.sign("default", 1, 0, content("gamma", "dev")),
            ],
            Source::ControlPlane,
        )
        .await;
        assert_eq!(a.held().iter().map(|h| h.tenant.as_str()).collect::<Vec<_>>(), ["acme", "beta", "gamma"]);
        let acme = a.store.tenant("acme").unwrap();
        // beta changed, gamma left the group, acme did not change: only beta's bundle comes.
        let beta2 = key.sign("default", 2, 0, content("beta", "prod"));
        let listed = vec![
            held(&a, "acme"),
            Held { tenant: "beta".into(), sequence: 2, revision: content("beta", "prod").revision() },
        ];
        let incomplete = a.activate_delta(&listed, vec![beta2]).await;
        assert!(!incomplete);
        assert!(Arc::ptr_eq(&acme, &a.store.tenant("acme").unwrap()), "acme's policy is kept, not rebuilt");
        assert!(a.store.tenant("beta").unwrap().virtual_server("prod").is_some());
        assert!(a.store.tenant("gamma").is_none(), "a tenant that left the group is dropped");
        assert!(a.store.last_error().is_none(), "{:?}", a.store.last_error());
        // The disk copy holds every active bundle, the ones not sent this time included.
        let mut b = activator(&key, dir.path());
        b.load_from_disk().await;
        assert_eq!(b.held(), a.held());
        assert!(b.store.tenant("beta").unwrap().virtual_server("prod").is_some());
    }

    #[test]
    fn a_bad_bundle_in_a_delta_keeps_the_other_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut a = activator(&key, dir.path());
        a.apply(
            vec![key.sign("default", 1, 0, content("acme", "dev")), key.sign("default", 1, 0, content("beta", "dev"))],
            Source::ControlPlane,
        );
        let forged = SigningKey::generate();
        let mut bad = forged.sign("default", 2, 0, content("acme", "evil"));
        bad.key_id = key.key_id().to_owned();
        let listed = vec![
            Held { tenant: "acme".into(), sequence: 2, revision: content("acme", "evil").revision() },
            Held { tenant: "beta".into(), sequence: 2, revision: content("beta", "prod").revision() },
        ];
        let applied =
            a.apply_delta(&listed, vec![bad, key.sign("default", 2, 0, content("beta", "prod"))], Source::ControlPlane);
        assert_eq!(applied.refused.len(), 1, "{:?}", applied.refused);
        assert!(applied.by_tenant["acme"].contains("signature"), "{}", applied.by_tenant["acme"]);
        assert!(!applied.incomplete, "a refused tenant is not a gap in the answer");
        assert!(a.store.tenant("acme").unwrap().virtual_server("dev").is_some(), "acme keeps its bundle");
        assert!(a.store.tenant("beta").unwrap().virtual_server("prod").is_some(), "beta takes its new one");
        // An answer that lists a bundle the worker neither got nor holds is incomplete.
        let listed = vec![held(&a, "acme"), Held { tenant: "beta".into(), sequence: 9, revision: "f00".into() }];
        let applied = a.apply_delta(&listed, vec![], Source::ControlPlane);
        assert!(applied.incomplete && !applied.changed);
    }

    #[test]
    fn an_oversized_bundle_is_refused_for_its_tenant_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut a = activator(&key, dir.path());
        a.apply(
            vec![key.sign("default", 1, 0, content("acme", "dev")), key.sign("default", 1, 0, content("beta", "dev"))],
            Source::ControlPlane,
        );
        a.set_max_bundle_bytes(4096);
        let mut big = content("acme", "big");
        big.users = (0..200)
            .map(|i| gatehouse_bundle::format::User {
                id: format!("us-{i:04}"),
                email: format!("user-{i}@example.com"),
                roles: vec![],
                groups: vec![],
                attributes: Default::default(),
            })
            .collect();
        big.normalize();
        let listed = vec![
            Held { tenant: "acme".into(), sequence: 2, revision: big.revision() },
            Held { tenant: "beta".into(), sequence: 2, revision: content("beta", "prod").revision() },
        ];
        let applied = a.apply_delta(
            &listed,
            vec![key.sign("default", 2, 0, big), key.sign("default", 2, 0, content("beta", "prod"))],
            Source::ControlPlane,
        );
        assert_eq!(applied.refused.len(), 1, "{:?}", applied.refused);
        assert!(
            applied.by_tenant["acme"].contains("over this worker's limit of 4096 bytes"),
            "{}",
            applied.by_tenant["acme"]
        );
        assert!(a.store.tenant("acme").unwrap().virtual_server("dev").is_some());
        assert!(a.store.tenant("beta").unwrap().virtual_server("prod").is_some());
    }

    /// A control plane on 127.0.0.1 that answers every delta poll with `body` (and `Content-Encoding:
    /// gzip` when `gzip`), or, with `delta: false`, has only the old whole-set `GET`.
    async fn fake_control_plane(delta: bool, body: Vec<u8>, gzip: bool, set: Vec<SignedBundle>) -> String {
        use axum::routing::{get, post};
        let whole = axum::Json(serde_json::json!({ "bundles": set }));
        let mut router = axum::Router::new()
            .route("/v1/bundles/default", get(move || async move { ([(http::header::ETAG, "\"e1\"")], whole) }));
        if delta {
            router = router.route(
                "/v1/bundles/default/delta",
                post(move || async move {
                    let mut headers = http::HeaderMap::new();
                    headers.insert(http::header::ETAG, "\"e2\"".parse().unwrap());
                    if gzip {
                        headers.insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
                    }
                    (headers, body)
                }),
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}/v1/bundles/default")
    }

    fn target(url: String, max_answer_bytes: usize) -> PollTarget {
        PollTarget { url, token: "t".into(), wait_secs: 1, max_answer_bytes }
    }

    #[tokio::test]
    async fn a_gzip_bomb_is_refused_and_the_active_set_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut a = activator(&key, dir.path());
        a.apply(vec![key.sign("default", 1, 0, content("acme", "dev"))], Source::ControlPlane);
        // 64 MiB of spaces (valid JSON whitespace) in 64 KiB of gzip, against a 1 MiB limit.
        let bomb = wire::gzip(&vec![b' '; 64 << 20]);
        let url = fake_control_plane(true, bomb, true, vec![]).await;
        let http = reqwest::Client::new();
        let mut etag = None;
        let failure = poll_delta(&mut a, &http, &target(url.clone(), 1 << 20), &mut etag).await.unwrap().unwrap();
        assert!(failure.contains("decompresses to more than 1048576 bytes"), "{failure}");
        assert!(failure.contains("the active bundles keep serving"), "{failure}");
        assert!(etag.is_none());
        assert!(a.store.tenant("acme").is_some());
        // An uncompressed answer over the limit is refused before it is read whole.
        let url = fake_control_plane(true, vec![b' '; 2 << 20], false, vec![]).await;
        let failure = poll_delta(&mut a, &http, &target(url, 1 << 20), &mut etag).await.unwrap().unwrap();
        assert!(failure.contains("larger than 1048576 bytes"), "{failure}");
        assert!(a.store.tenant("acme").is_some());
    }

    #[tokio::test]
    async fn a_gzip_delta_answer_is_applied_and_an_old_control_plane_gets_the_whole_set_get() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut a = activator(&key, dir.path());
        let acme = key.sign("default", 3, 0, content("acme", "dev"));
        let answer = DeltaAnswer {
            tenants: vec![Held { tenant: "acme".into(), sequence: 3, revision: content("acme", "dev").revision() }],
            bundles: vec![wire::WireBundle::from_signed(&acme).unwrap()],
        };
        let body = wire::gzip(&serde_json::to_vec(&answer).unwrap());
        let url = fake_control_plane(true, body, true, vec![]).await;
        let http = reqwest::Client::new();
        let mut etag = None;
        assert_eq!(poll_delta(&mut a, &http, &target(url, 1 << 20), &mut etag).await, Some(None));
        assert_eq!(etag.as_deref(), Some("\"e2\""));
        assert_eq!(a.store.tenant("acme").unwrap().manifest.sequence, 3);

        // A control plane without the delta endpoint: `None`, and the whole-set GET works.
        let beta = key.sign("default", 1, 0, content("beta", "dev"));
        let url = fake_control_plane(false, vec![], false, vec![beta]).await;
        let t = target(url, 1 << 20);
        assert_eq!(poll_delta(&mut a, &http, &t, &mut etag).await, None);
        assert_eq!(poll_whole(&mut a, &http, &t, &mut etag).await, None);
        assert_eq!(etag.as_deref(), Some("\"e1\""));
        assert!(a.store.tenant("beta").is_some() && a.store.tenant("acme").is_none());
    }

    #[tokio::test]
    async fn the_disk_copy_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let mut a = activator(&key, dir.path());
        a.activate(vec![key.sign("default", 3, 0, content("acme", "dev"))], Source::ControlPlane).await;
        assert!(a.store.is_ready());
        let mut b = activator(&key, dir.path());
        assert!(!b.store.is_ready());
        b.load_from_disk().await;
        assert!(b.store.is_ready());
        assert_eq!(revision(&a, "acme"), revision(&b, "acme"));
        assert!(b.store.last_error().is_none());
    }
}
