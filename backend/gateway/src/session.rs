//! Client sessions (2025-11-25 era): what `initialize` established, kept in memory for now.
//!
//! A later change replaces the table with a sealed, stateless `Mcp-Session-Id` (architecture §6); the
//! rest of the crate only uses [`SessionStore::get`], [`SessionStore::insert`] and
//! [`SessionStore::remove`], so that change stays local.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use gatehouse_core::jsonrpc::Id;
use serde_json::Value;
use tracing::debug;

use crate::now_ms;
use crate::upstream::{UpstreamSession, Upstreams};

/// A session idle this long is forgotten; its client gets 404 and initializes again, as the spec
/// foresees.
const IDLE_TIMEOUT_MS: i64 = 60 * 60 * 1000;
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

/// One client session.
pub(crate) struct Session {
    /// The `Mcp-Session-Id` handed to the client.
    pub id: String,
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
    last_used_ms: AtomicI64,
    /// Per upstream server slug. A std lock: only held to find or add a slot, never across an await.
    upstreams: Mutex<HashMap<String, Arc<UpstreamSlot>>>,
    /// Exposed tool name → upstream tool, as of the latest `tools/list` of this session.
    tools: ArcSwap<HashMap<String, ToolRoute>>,
    /// Exposed prompt name → upstream prompt, as of the latest `prompts/list`.
    prompts: ArcSwap<HashMap<String, ToolRoute>>,
    /// Resource URI → upstream server slug, as of the latest `resources/list`.
    resources: ArcSwap<HashMap<String, String>>,
    /// Client request id → upstream server slug, for requests in flight (so that
    /// `notifications/cancelled` reaches the right upstream). A std lock, never held across an await.
    in_flight: Mutex<HashMap<Id, String>>,
}

impl Session {
    /// A new session with a fresh random id.
    pub(crate) fn new(
        tenant: &str,
        virtual_server: &str,
        user_id: &str,
        client_name: Option<String>,
        client_version: Option<String>,
        protocol_version: &str,
        capabilities: Value,
    ) -> Self {
        Self {
            // Two v4 UUIDs: 244 random bits from the OS generator, so ids cannot be guessed.
            id: format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
            tenant: tenant.to_owned(),
            virtual_server: virtual_server.to_owned(),
            user_id: user_id.to_owned(),
            client_name,
            client_version,
            protocol_version: protocol_version.to_owned(),
            capabilities,
            last_used_ms: AtomicI64::new(now_ms()),
            upstreams: Mutex::new(HashMap::new()),
            tools: ArcSwap::from_pointee(HashMap::new()),
            prompts: ArcSwap::from_pointee(HashMap::new()),
            resources: ArcSwap::from_pointee(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
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

    fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The established upstream sessions (skipping one whose handshake is under way right now).
    pub(crate) fn established_upstreams(&self) -> Vec<Arc<UpstreamSession>> {
        let slots: Vec<Arc<UpstreamSlot>> =
            self.upstreams.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        slots.iter().filter_map(|slot| slot.try_lock().ok().and_then(|s| s.clone())).collect()
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

/// All sessions of this worker.
#[derive(Clone, Default)]
pub(crate) struct SessionStore {
    map: Arc<DashMap<String, Arc<Session>>>,
}

impl SessionStore {
    /// Stores a session.
    pub(crate) fn insert(&self, session: Session) -> Arc<Session> {
        let session = Arc::new(session);
        self.map.insert(session.id.clone(), Arc::clone(&session));
        session
    }

    /// The live session with this id, marking it used.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        let session = self.map.get(id).map(|s| Arc::clone(s.value()))?;
        session.touch();
        Some(session)
    }

    /// Ends a session.
    pub(crate) fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map.remove(id).map(|(_, s)| s)
    }
}

/// Ends the upstream sessions of a finished client session, best effort and in the background, so the
/// client does not wait for upstreams that may be slow or gone.
pub(crate) fn close_upstreams(session: &Session, upstreams: &Upstreams) {
    let established = session.established_upstreams();
    if established.is_empty() {
        return;
    }
    let upstreams = upstreams.clone();
    tokio::spawn(async move {
        for upstream in established {
            upstreams.delete(&upstream).await;
        }
    });
}

/// Forgets sessions idle for longer than the idle timeout, ending their upstream sessions too.
pub(crate) async fn sweep(store: SessionStore, http: reqwest::Client, timeout: Duration) {
    let upstreams = Upstreams::new(http, timeout);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let cutoff = now_ms() - IDLE_TIMEOUT_MS;
        let idle: Vec<String> = store
            .map
            .iter()
            .filter(|s| s.last_used_ms.load(Ordering::Relaxed) < cutoff)
            .map(|s| s.key().clone())
            .collect();
        for id in idle {
            if let Some(session) = store.remove(&id) {
                debug!(session = %id, "idle session expired");
                close_upstreams(&session, &upstreams);
            }
        }
    }
}
