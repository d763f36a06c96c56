//! Resources, resource templates, prompts, completions and logging across a virtual server's
//! upstreams. Lists are merged in upstream order; requests about one resource or prompt are routed
//! to the upstream that has it. For now every authenticated user of the virtual server may use them
//! (no resource or prompt policy yet).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use futures::future::join_all;
use gatehouse_bundle::TenantPolicy;
use gatehouse_bundle::policy::VirtualServerRoute;
use gatehouse_core::audit::Outcome;
use gatehouse_core::jsonrpc::{Id, result_response};
use serde_json::{Value, json};
use tracing::warn;

use crate::Gateway;
use crate::mcp::{
    Record, UpstreamFailure, forward, forward_screened, invalid_params, list_all, merge, rpc, upstream_failed,
};
use crate::screen::{self, Screen, Subject};
use crate::session::Session;
use crate::upstream::Target;

/// `resources/list`: every upstream's resources, in upstream order; remembers URI → upstream. A URI
/// offered by two upstreams is shown (and routed) once, for the first in the virtual server's order,
/// whatever the conflict strategy (a URI is an identity the gateway cannot rename without rewriting
/// every answer that mentions it); the clash is logged as a warning.
pub(crate) async fn resources_list(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    id: &Id,
    record: &mut Record,
) -> Value {
    list_answer(id, "resources", list_resources(gw, route, session).await, record)
}

/// The answer to a merged list request: `{key: items}`, or the upstream failure.
fn list_answer(id: &Id, key: &str, items: Result<Vec<Value>, UpstreamFailure>, record: &mut Record) -> Value {
    match items {
        Ok(items) => {
            record.outcome(Outcome::Allowed, None);
            result_response(id, json!({ key: items }))
        }
        Err(failure) => upstream_failed(id, failure, record),
    }
}

async fn list_resources(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
) -> Result<Vec<Value>, UpstreamFailure> {
    let lists = list_all(gw, route, session, "resources", "resources/list", "resources").await?;
    let mut owners = HashMap::new();
    let mut merged = Vec::new();
    for (server, resources) in lists {
        for resource in resources {
            let Some(uri) = resource.get("uri").and_then(Value::as_str) else { continue };
            match owners.entry(uri.to_owned()) {
                Entry::Occupied(_) => warn!(server = %server, uri, "another upstream already offers this resource"),
                Entry::Vacant(slot) => {
                    slot.insert(server.clone());
                    merged.push(resource);
                }
            }
        }
    }
    session.set_resources(owners);
    Ok(merged)
}

/// `resources/templates/list`: every upstream's templates, in upstream order.
pub(crate) async fn templates_list(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    id: &Id,
    record: &mut Record,
) -> Value {
    let templates = list_all(gw, route, session, "resources", "resources/templates/list", "resourceTemplates")
        .await
        .map(|lists| lists.into_iter().flat_map(|(_, t)| t).collect());
    list_answer(id, "resourceTemplates", templates, record)
}

/// `prompts/list`: every upstream's prompts, named like tools by the virtual server's conflict
/// strategy and prefixes (by default a name used by several upstreams becomes `{server}__{name}`
/// for each); tool overrides do not apply to prompts.
pub(crate) async fn prompts_list(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    id: &Id,
    record: &mut Record,
) -> Value {
    list_answer(id, "prompts", catalog(gw, route, session).await, record)
}

async fn catalog(gw: &Gateway, route: &VirtualServerRoute, session: &Session) -> Result<Vec<Value>, UpstreamFailure> {
    let lists = list_all(gw, route, session, "prompts", "prompts/list", "prompts").await?;
    let listed = merge(&route.shaping, lists, false);
    session.set_prompts(listed.iter().map(|l| (l.exposed.clone(), l.route.clone())).collect());
    Ok(listed.into_iter().map(|l| l.tool).collect())
}

/// `resources/read`, `resources/subscribe`, `resources/unsubscribe`, `prompts/get` and
/// `completion/complete`: to the upstream that owns the URI or prompt, with the prompt's upstream
/// name. `prompts/get` and `resources/read` are screened by the tenant's data rules on the way in and
/// out (`screen.rs`, decision 0009).
#[allow(clippy::too_many_arguments)] // the request's whole context
pub(crate) async fn routed(
    gw: &Gateway,
    policy: &Arc<TenantPolicy>,
    route: &VirtualServerRoute,
    session: &Arc<Session>,
    id: &Id,
    method: &str,
    params: Option<Value>,
    record: &mut Record,
) -> Response {
    let ok = |body| rpc(StatusCode::OK, body);
    let Some(mut params) = params.filter(Value::is_object) else {
        return ok(invalid_params(id, &format!("{method} needs params"), record));
    };
    let is_prompt =
        method == "prompts/get" || params.pointer("/ref/type").and_then(Value::as_str) == Some("ref/prompt");
    let name_at = if method == "prompts/get" { "/name" } else { "/ref/name" };
    let uri_at = if method == "completion/complete" { "/ref/uri" } else { "/uri" };
    // The prompt's name as the client knows it, for data-rule refusals (it is renamed below).
    let mut prompt = None;
    let found = if is_prompt {
        let Some(name) = params.pointer(name_at).and_then(Value::as_str).map(str::to_owned) else {
            return ok(invalid_params(id, &format!("{method} needs the prompt's name"), record));
        };
        let found = match prompt_route(gw, route, session, &name).await {
            Ok(Some(target)) => {
                if let Some(slot) = params.pointer_mut(name_at) {
                    *slot = Value::String(target.name);
                }
                Ok(Some(target.server))
            }
            Ok(None) => {
                let why = format!("unknown prompt '{name}'; call prompts/list to see the prompts");
                return ok(invalid_params(id, &why, record));
            }
            Err(failure) => Err(failure),
        };
        prompt = Some(name);
        found
    } else {
        let Some(uri) = params.pointer(uri_at).and_then(Value::as_str).map(str::to_owned) else {
            return ok(invalid_params(id, &format!("{method} needs a resource URI"), record));
        };
        uri_route(gw, route, session, &uri).await
    };
    match found {
        Ok(Some(server)) => {
            // Data rules (0009): `prompts/get` and `resources/read` are screened like `tools/call`.
            let screen = Subject::of(method, prompt.as_deref())
                .and_then(|subject| Screen::for_server(policy, &server).map(|s| (s, subject)));
            let Some((screen, subject)) = screen else {
                return forward(gw, route, session, &server, id, method, Some(&params), record).await;
            };
            record.set_upstream(&server);
            if let Err((reason, rule)) = screen.arguments(&subject, &mut params, record) {
                let body = screen::refusal(&json!(id), &reason, &subject, &rule);
                record.blocked(reason, rule);
                return ok(body);
            }
            let screen = Some((screen, subject));
            forward_screened(gw, route, session, &server, id, method, Some(&params), record, screen).await
        }
        Ok(None) => {
            let why = "no upstream of this virtual server offers resources".to_owned();
            ok(invalid_params(id, &why, record))
        }
        Err(failure) => ok(upstream_failed(id, failure, record)),
    }
}

async fn prompt_route(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    name: &str,
) -> Result<Option<crate::session::ToolRoute>, UpstreamFailure> {
    let known = |target: &crate::session::ToolRoute| route.upstreams.iter().any(|(s, _)| *s == target.server);
    if let Some(target) = session.prompt(name).filter(known) {
        return Ok(Some(target));
    }
    catalog(gw, route, session).await?;
    Ok(session.prompt(name).filter(known))
}

/// The upstream for resource `uri` (or URI template): the one that listed it; else the one whose
/// resource template has the longest literal prefix of it; else the first upstream that offers
/// resources.
async fn uri_route(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    uri: &str,
) -> Result<Option<String>, UpstreamFailure> {
    let known = |server: &String| route.upstreams.iter().any(|(s, _)| s == server);
    if let Some(server) = session.resource(uri).filter(known) {
        return Ok(Some(server));
    }
    list_resources(gw, route, session).await?;
    if let Some(server) = session.resource(uri).filter(known) {
        return Ok(Some(server));
    }
    let templates = list_all(gw, route, session, "resources", "resources/templates/list", "resourceTemplates").await?;
    let mut best: Option<(usize, &String)> = None;
    for (server, list) in &templates {
        for template in list {
            let Some(pattern) = template.get("uriTemplate").and_then(Value::as_str) else { continue };
            let literal = pattern.split('{').next().unwrap_or("");
            let matches = pattern == uri || (!literal.is_empty() && uri.starts_with(literal));
            if matches && best.is_none_or(|(len, _)| literal.len() > len) {
                best = Some((literal.len(), server));
            }
        }
    }
    if let Some((_, server)) = best {
        return Ok(Some(server.clone()));
    }
    Ok(first_offering(gw, route, session, "resources").await)
}

async fn first_offering(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    capability: &str,
) -> Option<String> {
    for (server, url) in &route.upstreams {
        let slot = session.upstream_slot(server);
        let target = Target { slot: &slot, url, capabilities: &session.capabilities };
        if gw.inner().upstreams.established(target).await.is_ok_and(|u| u.offers(capability)) {
            return Some(server.clone());
        }
    }
    None
}

/// `logging/setLevel`: to every upstream that offers logging, in parallel.
pub(crate) async fn set_level(
    gw: &Gateway,
    route: &VirtualServerRoute,
    session: &Session,
    id: &Id,
    params: Option<Value>,
    record: &mut Record,
) -> Value {
    let params = params.unwrap_or_else(|| json!({}));
    let params = &params;
    let results = join_all(route.upstreams.iter().map(|(server, url)| async move {
        let slot = session.upstream_slot(server);
        let target = Target { slot: &slot, url, capabilities: &session.capabilities };
        let upstreams = &gw.inner().upstreams;
        let result = match upstreams.established(target).await {
            Ok(upstream) if !upstream.offers("logging") => return None,
            Ok(_) => upstreams.request(target, "logging/setLevel", params).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(response) => response
                .pointer("/error/message")
                .map(|m| format!("upstream server '{server}' refused: {}", m.as_str().unwrap_or("no message"))),
            Err(e) => Some(format!("upstream server '{server}' is unavailable: {e}")),
        }
    }))
    .await;
    let failures: Vec<String> = results.into_iter().flatten().collect();
    if failures.is_empty() {
        record.outcome(Outcome::Allowed, None);
    } else {
        let why = failures.join("; ");
        warn!("logging/setLevel: {why}");
        record.outcome(Outcome::UpstreamError, why);
    }
    result_response(id, json!({}))
}
