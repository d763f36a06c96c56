//! Client sessions (2025-11-25 era). The source of truth is the sealed `Mcp-Session-Id` itself
//! (`seal.rs`): any worker can serve any request of a session. What is here is a bounded local cache
//! of the sessions this worker served lately, with what only a worker can have: upstream sessions
//! re-established here, name and URI routes, and requests in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use gatehouse_bundle::policy::VirtualServerRoute;
use gatehouse_core::headers::ParamHeader;
use gatehouse_core::jsonrpc::Id;
use serde_json::Value;
use tracing::debug;

use crate::now_ms;
use crate::seal::{self, SessionClaims};
use crate::upstream::{UpstreamSession, Upstreams};

/// A cached session idle this long is forgotten here (its token still works: it is opened again).
const IDLE_TIMEOUT_MS: i64 = 60 * 60 * 1000;
/// At most this many sessions are cached; the least recently used go first.
const MAX_CACHED_SESSIONS: usize = 10_000;
/// At most this many ended (DELETEd) sessions are remembered.
const MAX_ENDED_SESSIONS: usize = 100_000;
/// How often idle sessions are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Where an exposed tool or prompt name leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolRoute {
    /// Upstream server slug.
    pub server: String,
    /// The tool's name at the upstream.
    pub name: String,
}

/// The upstream session of one upstream server, established lazily. The async lock is held across
/// the upstream `initialize` on purpose: concurrent first requests of one client session then share
/// one handshake instead of each opening an upstream session.
pub(crate) type UpstreamSlot = tokio::sync::Mutex<Option<Arc<UpstreamSession>>>;

/// One client session, as this worker knows it: what its sealed token says, plus local state (upstream
/// sessions re-established here, name and URI routes, requests in flight) that any worker can rebuild.
pub(crate) struct Session {
    /// The `Mcp-Session-Id` handed to the client: the sealed token.
    pub id: String,
    /// The short id audit events and logs carry ([`seal::audit_id`]).
    pub audit_id: String,
    /// The id of the session key that sealed it; when a bundle drops that key, the session ends.
    pub key_id: String,
    pub tenant: String,
    pub virtual_server: String,
    /// The user who initialized it; only that user may use it.
    pub user_id: String,
    /// `clientInfo` from `initialize`, for audit.
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    /// The protocol version negotiated with the client.
    pub protocol_version: String,
    /// The client's `initialize` capabilities, declared to every upstream.
    pub capabilities: Value,
    /// When `initialize` happened; the session expires [`seal::SESSION_LIFETIME_MS`] later.
    pub issued_at_ms: i64,
    /// A pooled session serving 2026-07-28 clients (which have no session): it holds this
    /// worker's upstream sessions for one tenant, virtual server, user and client application, is
    /// never handed to a client, and is never usable as an `Mcp-Session-Id`
    /// (`docs/decisions/0018-protocol-2026-07-28.md`).
    pub pooled: bool,
    last_used_ms: AtomicI64,
    /// Upstream session ids sealed in the token, by server: other workers use these too, so this one
    /// never ends them when it merely forgets the session.
    sealed: HashMap<String, Option<String>>,
    /// Per upstream server slug. A std lock: only held to find or add a slot, never across an await.
    upstreams: Mutex<HashMap<String, Arc<UpstreamSlot>>>,
    /// Exposed tool name → upstream tool, as of the latest `tools/list` of this session.
    tools: ArcSwap<HashMap<String, ToolRoute>>,
    /// Exposed tool name → its `Mcp-Param-{X}` parameters (from the schema the client sees), as of
    /// the latest `tools/list`; kept for pooled sessions only, whose clients mirror them in headers.
    tool_headers: ArcSwap<HashMap<String, Vec<ParamHeader>>>,
    /// Exposed prompt name → upstream prompt, as of the latest `prompts/list`.
    prompts: ArcSwap<HashMap<String, ToolRoute>>,
    /// Resource URI → upstream server slug, as of the latest `resources/list`.
    resources: ArcSwap<HashMap<String, String>>,
    /// Client request id → upstream server slug, for requests in flight (so that
    /// `notifications/cancelled` reaches the right upstream). A std lock, never held across an await.
    in_flight: Mutex<HashMap<Id, String>>,
}

impl Session {
    /// The session of `token`, sealed or opened as `claims` with key `key_id`. The upstream sessions
    /// in the claims fill their slots when the server is still at the URL they were opened on (a
    /// bundle that moved it leaves the slot empty, to be opened on first use); `opened` are slots
    /// already holding sessions (those `initialize` just opened).
    pub(crate) fn new(
        token: String,
        key_id: String,
        claims: SessionClaims,
        route: &VirtualServerRoute,
        opened: HashMap<String, Arc<UpstreamSlot>>,
    ) -> Self {
        let mut slots = opened;
        let mut sealed = HashMap::new();
        for upstream in claims.upstreams {
            sealed.insert(upstream.server.clone(), upstream.session_id.clone());
            if slots.contains_key(&upstream.server) {
                continue;
            }
            let Some((_, url)) = route.upstreams.iter().find(|(s, _)| *s == upstream.server) else { continue };
            if seal::url_tag(url) != upstream.url_tag {
                continue;
            }
            let session = UpstreamSession {
                url: url.clone(),
                capabilities: upstream.capabilities(),
                session_id: upstream.session_id,
                protocol_version: upstream.protocol_version,
                tool_headers: Default::default(),
            };
            slots.insert(upstream.server, Arc::new(tokio::sync::Mutex::new(Some(Arc::new(session)))));
        }
        Self {
            audit_id: seal::audit_id(&token),
            id: token,
            key_id,
            tenant: claims.tenant,
            virtual_server: claims.virtual_server,
            user_id: claims.user_id,
            client_name: claims.client_name,
            client_version: claims.client_version,
            protocol_version: claims.protocol_version,
            capabilities: claims.capabilities,
            issued_at_ms: claims.issued_at_ms,
            pooled: false,
            last_used_ms: AtomicI64::new(now_ms()),
            sealed,
            upstreams: Mutex::new(slots),
            tools: ArcSwap::from_pointee(HashMap::new()),
            tool_headers: ArcSwap::from_pointee(HashMap::new()),
            prompts: ArcSwap::from_pointee(HashMap::new()),
            resources: ArcSwap::from_pointee(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// A pooled session (see [`Session::pooled`]) under cache key `key`: no sealed upstream
    /// sessions, no relayed client capabilities (server-to-client requests cannot reach a
    /// 2026-07-28 client), everything opened on demand on this worker.
    #[allow(clippy::too_many_arguments)] // the pool key's parts, named
    pub(crate) fn new_pooled(
        key: String,
        tenant: &str,
        virtual_server: &str,
        user_id: &str,
        client_name: Option<String>,
        client_version: Option<String>,
        protocol_version: &str,
    ) -> Self {
        Self {
            audit_id: seal::audit_id(&key),
            id: key,
            key_id: String::new(),
            tenant: tenant.to_owned(),
            virtual_server: virtual_server.to_owned(),
            user_id: user_id.to_owned(),
            client_name,
            client_version,
            protocol_version: protocol_version.to_owned(),
            capabilities: Value::Object(serde_json::Map::new()),
            issued_at_ms: now_ms(),
            pooled: true,
            last_used_ms: AtomicI64::new(now_ms()),
            sealed: HashMap::new(),
            upstreams: Mutex::new(HashMap::new()),
            tools: ArcSwap::from_pointee(HashMap::new()),
            tool_headers: ArcSwap::from_pointee(HashMap::new()),
            prompts: ArcSwap::from_pointee(HashMap::new()),
            resources: ArcSwap::from_pointee(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// True once the session has lived its lifetime.
    pub(crate) fn expired(&self, now_ms: i64) -> bool {
        seal::expired(self.issued_at_ms, now_ms)
    }

    /// Where exposed prompt `name` leads, as of the latest listing.
    pub(crate) fn prompt(&self, name: &str) -> Option<ToolRoute> {
        self.prompts.load().get(name).cloned()
    }

    /// Replaces the prompt map after a listing.
    pub(crate) fn set_prompts(&self, prompts: HashMap<String, ToolRoute>) {
        self.prompts.store(Arc::new(prompts));
    }

    /// The upstream server of resource `uri`, as of the latest listing.
    pub(crate) fn resource(&self, uri: &str) -> Option<String> {
        self.resources.load().get(uri).cloned()
    }

    /// Replaces the resource map after a listing.
    pub(crate) fn set_resources(&self, resources: HashMap<String, String>) {
        self.resources.store(Arc::new(resources));
    }

    /// Records that client request `id` is being served by upstream `server`, until the returned
    /// guard is dropped.
    pub(crate) fn track(self: &Arc<Self>, id: &Id, server: &str) -> InFlight {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), server.to_owned());
        InFlight { session: Arc::clone(self), id: id.clone() }
    }

    /// The upstream serving client request `id`, if it is in flight.
    pub(crate) fn in_flight(&self, id: &Id) -> Option<String> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// The slot of upstream `server`, created on first use.
    pub(crate) fn upstream_slot(&self, server: &str) -> Arc<UpstreamSlot> {
        let mut slots = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(slots.entry(server.to_owned()).or_default())
    }

    /// Where exposed tool `name` leads, as of the latest listing.
    pub(crate) fn tool(&self, name: &str) -> Option<ToolRoute> {
        self.tools.load().get(name).cloned()
    }

    /// Replaces the tool map after a listing.
    pub(crate) fn set_tools(&self, tools: HashMap<String, ToolRoute>) {
        self.tools.store(Arc::new(tools));
    }

    /// The `Mcp-Param-{X}` parameters of exposed tool `name`, as of the latest listing (`None`: not
    /// listed, or its annotations are invalid).
    pub(crate) fn tool_headers(&self, name: &str) -> Option<Vec<ParamHeader>> {
        self.tool_headers.load().get(name).cloned()
    }

    /// Replaces the `Mcp-Param-{X}` map after a listing.
    pub(crate) fn set_tool_headers(&self, headers: HashMap<String, Vec<ParamHeader>>) {
        self.tool_headers.store(Arc::new(headers));
    }

    fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The established upstream sessions, with their servers (skipping one whose handshake is under
    /// way right now).
    pub(crate) fn established_upstreams(&self) -> Vec<(String, Arc<UpstreamSession>)> {
        let slots: Vec<(String, Arc<UpstreamSlot>)> = self
            .upstreams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(server, slot)| (server.clone(), Arc::clone(slot)))
            .collect();
        slots
            .into_iter()
            .filter_map(|(server, slot)| slot.try_lock().ok().and_then(|s| s.clone()).map(|s| (server, s)))
            .collect()
    }

    /// The upstream sessions this worker opened after the token was sealed (re-established after a
    /// 404, or first opened here): only this worker knows them.
    fn local_upstreams(&self) -> Vec<Arc<UpstreamSession>> {
        self.established_upstreams()
            .into_iter()
            .filter(|(server, upstream)| self.sealed.get(server) != Some(&upstream.session_id))
            .map(|(_, upstream)| upstream)
            .collect()
    }
}

/// Marks a client request as in flight; dropping it (answer sent, stream ended, client gone) ends that.
pub(crate) struct InFlight {
    session: Arc<Session>,
    id: Id,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.session.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// The sessions this worker has seen lately: a bounded cache in front of the sealed tokens, never
/// the source of truth. Any session it does not hold is rebuilt from its token; one it holds saves
/// opening the token again and keeps the upstream sessions re-established here.
#[derive(Clone)]
pub(crate) struct SessionStore {
    map: Arc<DashMap<String, Arc<Session>>>,
    /// Sessions ended with DELETE on this worker: audit id → the time the token would expire anyway.
    ended: Arc<Mutex<HashMap<String, i64>>>,
    upstreams: Upstreams,
}

impl SessionStore {
    /// An empty store; `upstreams` ends the upstream sessions of the sessions it forgets.
    pub(crate) fn new(upstreams: Upstreams) -> Self {
        Self { map: Arc::default(), ended: Arc::default(), upstreams }
    }

    /// Stores a session, unless a concurrent request of the same token stored one first (then that
    /// one is returned). Makes room when the cache is full.
    pub(crate) fn insert(&self, session: Session) -> Arc<Session> {
        if self.map.len() >= MAX_CACHED_SESSIONS {
            self.evict_least_recently_used();
        }
        let session = Arc::clone(self.map.entry(session.id.clone()).or_insert_with(|| Arc::new(session)).value());
        session.touch();
        session
    }

    /// The pooled session under `key` (2026-07-28 clients), made by `make` if this worker has none.
    pub(crate) fn pooled(&self, key: &str, make: impl FnOnce() -> Session) -> Arc<Session> {
        match self.get(key) {
            Some(session) if session.pooled => session,
            _ => self.insert(make()),
        }
    }

    /// The cached session of this token, marking it used.
    pub(crate) fn get(&self, token: &str) -> Option<Arc<Session>> {
        let session = self.map.get(token).map(|s| Arc::clone(s.value()))?;
        session.touch();
        Some(session)
    }

    /// True if the session with this audit id was ended on this worker.
    pub(crate) fn is_ended(&self, audit_id: &str) -> bool {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).contains_key(audit_id)
    }

    /// Ends a session (DELETE): it is forgotten, answered 404 on this worker until it would have
    /// expired, and its upstream sessions are ended in the background, the sealed ones included.
    pub(crate) fn end(&self, session: &Arc<Session>) {
        self.map.remove(&session.id);
        {
            let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
            if ended.len() >= MAX_ENDED_SESSIONS {
                let now = now_ms();
                ended.retain(|_, expires| *expires > now);
                if ended.len() >= MAX_ENDED_SESSIONS {
                    // Still full of live entries: drop the one closest to expiry.
                    if let Some(first) = ended.iter().min_by_key(|(_, e)| **e).map(|(id, _)| id.clone()) {
                        ended.remove(&first);
                    }
                }
            }
            ended.insert(session.audit_id.clone(), session.issued_at_ms.saturating_add(seal::SESSION_LIFETIME_MS));
        }
        let established = session.established_upstreams().into_iter().map(|(_, u)| u).collect();
        close_upstreams(established, &self.upstreams);
    }

    /// Forgets a cached session (idle, expired, or to make room). The session itself lives on in its
    /// token; only the upstream sessions that nobody else knows are ended.
    fn forget(&self, token: &str) {
        if let Some((_, session)) = self.map.remove(token) {
            close_upstreams(session.local_upstreams(), &self.upstreams);
        }
    }

    /// Forgets the least recently used eighth of the cache.
    fn evict_least_recently_used(&self) {
        let mut by_use: Vec<(i64, String)> =
            self.map.iter().map(|s| (s.last_used_ms.load(Ordering::Relaxed), s.key().clone())).collect();
        by_use.sort_unstable();
        let count = (by_use.len() / 8).max(1);
        debug!(count, "session cache full; forgetting the least recently used sessions");
        for (_, token) in by_use.into_iter().take(count) {
            self.forget(&token);
        }
    }
}

/// Ends upstream sessions, best effort and in the background, so the client does not wait for
/// upstreams that may be slow or gone.
fn close_upstreams(sessions: Vec<Arc<UpstreamSession>>, upstreams: &Upstreams) {
    if sessions.is_empty() {
        return;
    }
    let upstreams = upstreams.clone();
    tokio::spawn(async move {
        for upstream in sessions {
            upstreams.delete(&upstream).await;
        }
    });
}

/// Forgets cached sessions idle for longer than the idle timeout or expired, and ended sessions
/// that have expired anyway.
pub(crate) async fn sweep(store: SessionStore) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let now = now_ms();
        let cutoff = now - IDLE_TIMEOUT_MS;
        let stale: Vec<String> = store
            .map
            .iter()
            .filter(|s| s.last_used_ms.load(Ordering::Relaxed) < cutoff || s.expired(now))
            .map(|s| s.key().clone())
            .collect();
        for token in stale {
            debug!(session = %seal::audit_id(&token), "forgetting an idle or expired session");
            store.forget(&token);
        }
        store.ended.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, expires| *expires > now);
    }
}
