//! The Gatehouse control plane.
//!
//! * [`services`]: the domain services. The GraphQL API and the console both call these, so every
//!   check (validation, tenant access, console role) lives in one place.
//! * [`auth`]: console accounts (argon2), sessions and the CSRF guard.
//! * [`bundles`]: the policy compiler and the bundle distribution the workers long-poll.
//! * [`graphql`]: the GraphQL schema over the services.
//! * [`worker_api`]: `/v1/…`, the API gateway workers call.
//! * [`gateways`]: gateway groups as an operator manages them (`gatehouse groups …`).
//! * [`upstream`]: the small MCP client the control plane uses to fetch a server's tools.

pub mod auth;
pub mod bundles;
pub mod gateways;
pub mod graphql;
pub mod publishing;
pub mod services;
pub mod upstream;
pub mod worker_api;

use std::sync::Arc;

use axum::Router;
use gatehouse_bundle::SigningKey;
use gatehouse_store::Store;

pub use services::{Actor, Services};

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The gateway's public base URL, shown to users as where MCP clients connect
    /// (e.g. `http://127.0.0.1:8090`).
    pub gateway_public_url: String,
    /// The control plane's own public base URL (e.g. `http://127.0.0.1:8080`), for the CSRF origin
    /// check and links.
    pub public_url: String,
    /// Bearer token gateway workers present on `/v1/…`.
    pub worker_token: String,
    /// Gateway group bundles are compiled for.
    pub group: String,
    /// Whether console cookies get the `Secure` attribute (true behind HTTPS).
    pub secure_cookies: bool,
}

/// A running control plane: the shared state behind every request.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

struct Inner {
    config: ControlConfig,
    store: Store,
    services: Services,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").field("store", &self.inner.store.kind()).finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Builds the control plane over an opened store and the platform signing key, and compiles a
    /// bundle for every tenant whose state changed while no control plane was running.
    pub async fn new(config: ControlConfig, store: Store, key: SigningKey) -> anyhow::Result<ControlPlane> {
        // The configured group always exists: it holds every tenant not assigned elsewhere.
        store.ensure_gateway_group(&config.group, now_ms()).await?;
        let bundles = bundles::Bundles::new(store.clone(), key, config.group.clone());
        let services = Services::new(store.clone(), bundles, config.gateway_public_url.clone());
        services.recompile_all().await?;
        services.bundles().relay_replica_notices().await?;
        Ok(ControlPlane { inner: Arc::new(Inner { config, store, services }) })
    }

    /// The domain services.
    pub fn services(&self) -> &Services {
        &self.inner.services
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.inner.config
    }

    /// The control plane's routes: `/graphql`, `/auth/…`, `/v1/…`, `/healthz`, `/readyz`. The
    /// console's routes are merged in by the binary, inside the same session and CSRF layers
    /// ([`auth::layers`]).
    pub fn router(&self) -> Router {
        Router::new()
            .merge(graphql::routes(self.clone()))
            .merge(auth::routes(self.clone()))
            .merge(worker_api::routes(self.clone()))
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route("/readyz", axum::routing::get(|| async { "ok" }))
    }
}

/// Unix time now, in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
