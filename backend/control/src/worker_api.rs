//! `/v1/…`: the API gateway workers call, authenticated with the worker token.
//!
//! * `GET /v1/bundles/{group}?wait=SECS` with `If-None-Match`: the group's signed bundle set; when
//!   the ETag matches, the answer waits (long-poll) until something changes or `wait` runs out (304).
//! * `POST /v1/bundles/{group}/delta?wait=SECS` with `If-None-Match` and a body `{"held":[{tenant,
//!   sequence, revision}]}`: the group's tenant list and only the bundles the worker lacks, gzip when
//!   the worker accepts it; same ETag and long poll (`docs/decisions/0017-bundle-delta-and-compression.md`).
//! * `POST /v1/audit` `{"events":[…]}`: audit ingest, idempotent by event id.
//! * `POST /v1/workers/status` ([`WorkerStatusReport`]): a worker's group, version, its own last
//!   control-plane error and, per tenant, the revision it runs and its last error about it. Stored, so
//!   every replica shows it (`docs/decisions/0014-gateway-groups.md`).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_bundle::wire::{self, DeltaRequest};
use gatehouse_core::audit::AuditEvent;
use gatehouse_core::gateways::{MAX_REPORT_TENANTS, WorkerStatusReport};
use gatehouse_core::{ErrorCode, GatehouseError};
use gatehouse_store::{AuditRow, WorkerReport, WorkerTenantReport};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::error_response;
use crate::{ControlPlane, now_ms};

const MAX_WAIT_SECS: u64 = 60;
const MAX_EVENTS_PER_BATCH: usize = 5_000;
/// Reports of workers silent for this long are deleted (a worker without a configured id reports
/// under a new one after each restart).
const REPORT_RETENTION_MS: i64 = 24 * 3600 * 1000;

fn worker_authorized(control: &ControlPlane, headers: &HeaderMap) -> Result<(), GatehouseError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare digests so the comparison time does not depend on where the strings differ.
    let ok = Sha256::digest(presented.as_bytes()) == Sha256::digest(control.config().worker_token.as_bytes());
    if ok && !presented.is_empty() {
        Ok(())
    } else {
        Err(GatehouseError::new(ErrorCode::Unauthenticated, "worker token missing or wrong"))
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    let reference = uuid::Uuid::now_v7();
    tracing::error!(%reference, error = %e, "worker API failure");
    error_response(&GatehouseError::internal(reference))
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

async fn bundles(
    State(control): State<ControlPlane>,
    Path(group): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = worker_authorized(&control, &headers) {
        return error_response(&e);
    }
    let b = control.services().bundles();
    if let Err(response) = group_exists(&control, &group).await {
        return response;
    }
    let known = if_none_match(&headers);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    // Subscribe before reading, so a change between the read and the wait is not missed.
    let mut changes = b.subscribe();
    loop {
        changes.borrow_and_update();
        let (etag, set) = match b.current_set(&group).await {
            Ok(x) => x,
            Err(e) => return internal(e),
        };
        if known.as_deref() != Some(etag.as_str()) {
            return ([(header::ETAG, format!("\"{etag}\""))], Json(set)).into_response();
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out (or the control plane is shutting down): nothing new.
            _ => return (StatusCode::NOT_MODIFIED, [(header::ETAG, format!("\"{etag}\""))]).into_response(),
        }
    }
}

/// `Err` with the answer when `group` is neither the configured group nor a created one.
async fn group_exists(control: &ControlPlane, group: &str) -> Result<(), Response> {
    if group == control.services().bundles().group() {
        return Ok(());
    }
    match control.store().list_gateway_groups().await {
        Ok(groups) if groups.iter().any(|g| g.slug == group) => Ok(()),
        Ok(_) => Err(error_response(&GatehouseError::not_found(format!("gateway group '{group}'")))),
        Err(e) => Err(internal(e)),
    }
}

fn if_none_match(headers: &HeaderMap) -> Option<String> {
    headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(|v| v.trim_matches('"').to_owned())
}

/// Field-named checks of a delta request (bounds like a status report's).
fn validate_delta(request: &DeltaRequest) -> Result<(), GatehouseError> {
    if request.held.len() > MAX_REPORT_TENANTS {
        return Err(GatehouseError::invalid("held", format!("at most {MAX_REPORT_TENANTS} entries")));
    }
    for (i, h) in request.held.iter().enumerate() {
        if h.tenant.is_empty() || h.tenant.len() > 64 {
            return Err(GatehouseError::invalid(&format!("held[{i}].tenant"), "1 to 64 characters"));
        }
        if h.revision.len() > 64 {
            return Err(GatehouseError::invalid(&format!("held[{i}].revision"), "at most 64 characters"));
        }
    }
    Ok(())
}

/// `POST /v1/bundles/{group}/delta`: like [`bundles`], but the answer carries every tenant of the
/// group with its newest sequence and revision, and a signed bundle only for the tenants whose
/// newest bundle is not the one the worker says it holds; gzip when the worker accepts it.
async fn bundles_delta(
    State(control): State<ControlPlane>,
    Path(group): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Result<Json<DeltaRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(e) = worker_authorized(&control, &headers) {
        return error_response(&e);
    }
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return error_response(&GatehouseError::invalid("body", e.body_text())),
    };
    if let Err(e) = validate_delta(&request) {
        return error_response(&e);
    }
    if let Err(response) = group_exists(&control, &group).await {
        return response;
    }
    let b = control.services().bundles();
    let known = if_none_match(&headers);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    // Subscribe before reading, so a change between the read and the wait is not missed.
    let mut changes = b.subscribe();
    let (etag, answer) = loop {
        changes.borrow_and_update();
        let (etag, answer) = match b.delta(&group, &request.held, known.as_deref()).await {
            Ok(x) => x,
            Err(e) => return internal(e),
        };
        if let Some(answer) = answer {
            break (etag, answer);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out (or the control plane is shutting down): nothing new.
            _ => return (StatusCode::NOT_MODIFIED, [(header::ETAG, format!("\"{etag}\""))]).into_response(),
        }
    };
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.split(';').next().is_some_and(|e| e.trim() == "gzip")));
    let bytes = match tokio::task::spawn_blocking(move || {
        let json = serde_json::to_vec(&answer).expect("a delta answer serialises");
        if gzip { wire::gzip(&json) } else { json }
    })
    .await
    {
        Ok(bytes) => bytes,
        Err(e) => return internal(e),
    };
    let mut response =
        ([(header::ETAG, format!("\"{etag}\"")), (header::CONTENT_TYPE, "application/json".to_owned())], bytes)
            .into_response();
    response.headers_mut().insert(header::VARY, header::HeaderValue::from_static("accept-encoding"));
    if gzip {
        response.headers_mut().insert(header::CONTENT_ENCODING, header::HeaderValue::from_static("gzip"));
    }
    response
}

#[derive(Deserialize)]
struct AuditBatch {
    events: Vec<AuditEvent>,
}

async fn audit(State(control): State<ControlPlane>, headers: HeaderMap, body: Json<AuditBatch>) -> Response {
    if let Err(e) = worker_authorized(&control, &headers) {
        return error_response(&e);
    }
    let events = body.0.events;
    if events.len() > MAX_EVENTS_PER_BATCH {
        return error_response(&GatehouseError::invalid("events", format!("at most {MAX_EVENTS_PER_BATCH} per batch")));
    }
    let mut tenant_ids: HashMap<String, Option<String>> = HashMap::new();
    let mut rows = Vec::with_capacity(events.len());
    let mut unknown_tenant = 0usize;
    let received = now_ms();
    for e in events {
        if !tenant_ids.contains_key(&e.tenant) {
            let id = match control.store().tenant_by_slug(&e.tenant).await {
                Ok(t) => t.map(|t| t.id),
                Err(err) => return internal(err),
            };
            tenant_ids.insert(e.tenant.clone(), id);
        }
        let Some(tenant_id) = tenant_ids[&e.tenant].clone() else {
            // The tenant was deleted after the event happened: nothing to attach it to. Logged and
            // acknowledged, so the worker does not retry forever.
            tracing::warn!(event = %e.id, tenant = %e.tenant, "audit event for an unknown tenant");
            unknown_tenant += 1;
            continue;
        };
        rows.push(AuditRow {
            tenant_id,
            id: e.id,
            time_ms: e.time_ms,
            user_id: e.user_id,
            user_email: e.user_email,
            client_name: e.client_name,
            client_version: e.client_version,
            session_id: e.session_id,
            virtual_server: e.virtual_server,
            upstream_server: e.upstream_server,
            method: e.method,
            tool: e.tool,
            exposed_tool: e.exposed_tool,
            outcome: e.outcome.as_str().to_owned(),
            reason: e.reason,
            latency_us: e.latency_us,
            bundle_revision: e.bundle_revision,
            rule_id: e.rule_id,
            findings_json: (!e.findings.is_empty())
                .then(|| serde_json::to_string(&e.findings).expect("findings serialise")),
            received_at_ms: received,
        });
    }
    match control.store().insert_audit_events(&rows).await {
        Ok(new) => Json(serde_json::json!({
            "accepted": rows.len() + unknown_tenant,
            "new": new,
            "unknownTenant": unknown_tenant,
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

async fn worker_status(
    State(control): State<ControlPlane>,
    headers: HeaderMap,
    body: Result<Json<WorkerStatusReport>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(e) = worker_authorized(&control, &headers) {
        return error_response(&e);
    }
    let report = match body {
        Ok(Json(r)) => r,
        Err(e) => return error_response(&GatehouseError::invalid("body", e.body_text())),
    };
    if let Err(e) = report.validate() {
        return error_response(&e);
    }
    let tenants = match control.store().list_tenants().await {
        Ok(t) => t,
        Err(e) => return internal(e),
    };
    let ids: HashMap<&str, &str> = tenants.iter().map(|t| (t.slug.as_str(), t.id.as_str())).collect();
    let mut rows = Vec::with_capacity(report.tenants.len());
    let mut seen = std::collections::HashSet::new();
    let mut unknown_tenant = 0usize;
    for t in &report.tenants {
        // A tenant deleted since the worker's last bundle is nothing to show anyone; a tenant
        // named twice keeps its first entry.
        let Some(id) = ids.get(t.tenant.as_str()) else {
            unknown_tenant += 1;
            continue;
        };
        if !seen.insert(*id) {
            continue;
        }
        rows.push(WorkerTenantReport {
            tenant_id: (*id).to_owned(),
            revision: t.revision.clone(),
            sequence: t.sequence.map(|s| s.min(i64::MAX as u64) as i64),
            error: t.error.clone(),
        });
    }
    let row = WorkerReport {
        worker_id: report.worker_id,
        group_slug: report.group,
        version: report.version,
        contact_error: report.contact_error,
        reported_at_ms: now_ms(),
    };
    let pruned = control.store().prune_worker_reports(row.reported_at_ms - REPORT_RETENTION_MS).await;
    if let Err(e) = pruned {
        tracing::warn!(error = %e, "could not delete old worker reports");
    }
    match control.store().put_worker_report(&row, &rows).await {
        Ok(()) => Json(serde_json::json!({ "accepted": rows.len(), "unknownTenant": unknown_tenant })).into_response(),
        Err(e) => internal(e),
    }
}

/// The worker API routes.
pub fn routes(control: ControlPlane) -> Router {
    Router::new()
        .route("/v1/bundles/{group}", get(bundles))
        .route("/v1/bundles/{group}/delta", post(bundles_delta))
        .route("/v1/audit", post(audit))
        .route("/v1/workers/status", post(worker_status))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(control)
}
