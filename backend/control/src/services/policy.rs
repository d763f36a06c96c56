//! Access rules and policy modes: saved only when valid, compiled into the next bundle.

use std::collections::HashMap;

use gatehouse_bundle::Decision;
use gatehouse_bundle::rules::validate_rule;
use gatehouse_core::rules::{AnnotationMatch, Effect, ParamConstraint, PolicyMode, RuleInput, RuleView};
use gatehouse_core::views::{ToolAccessView, VirtualServerView};
use gatehouse_core::{ErrorCode, GatehouseError};
use gatehouse_store::{AccessRule, StoreError};
use serde_json::{Map, Value};

use super::{Actor, Need, Result, Services, new_id, store_err};
use crate::now_ms;

/// Reads a stored rule back into its view. A column that does not parse is a database fault, and
/// the compiler refuses to build a bundle from it (it could be a deny rule: dropping it would open
/// access).
pub(crate) fn rule_view(row: &AccessRule, server_slug: &str) -> std::result::Result<RuleView, StoreError> {
    let decode = |e: serde_json::Error| StoreError::Corrupt(format!("rule {}: {e}", row.id));
    let effect = Effect::parse(&row.effect)
        .ok_or_else(|| StoreError::Corrupt(format!("rule {}: effect '{}'", row.id, row.effect)))?;
    let annotation: Option<AnnotationMatch> =
        row.annotation_json.as_deref().map(serde_json::from_str).transpose().map_err(decode)?;
    let params: Vec<ParamConstraint> = serde_json::from_str(&row.params_json).map_err(decode)?;
    Ok(RuleView {
        id: row.id.clone(),
        server: server_slug.to_owned(),
        effect,
        tools: row.tools.clone(),
        annotation,
        params,
        description: row.description.clone(),
        condition: row.condition_cel.clone(),
        created_at_ms: row.created_at_ms,
    })
}

fn internal(what: &str) -> impl FnOnce(String) -> GatehouseError + '_ {
    move |e| {
        let reference = uuid::Uuid::now_v7();
        tracing::error!(%reference, error = %e, "{what}");
        GatehouseError::internal(reference)
    }
}

impl Services {
    /// Adds a rule to an access role. The rule is checked against the server's tool definitions as
    /// last fetched: a parameter constraint must name a parameter every selected tool has, with a
    /// type it fits. Errors name the field (`tools`, `params[1].pattern`, ...).
    pub async fn add_rule(&self, actor: &Actor, tenant: &str, role: &str, rule: &RuleInput) -> Result<RuleView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let r = self.role_by_slug(&t, role).await?;
        let server =
            self.store.server_by_slug(&t.id, &rule.server).await.map_err(store_err("server"))?.ok_or_else(|| {
                GatehouseError::invalid("server", format!("no server '{}' in this tenant", rule.server))
            })?;
        let tools: Option<Vec<Value>> =
            server.tools_fetched_at_ms.map(|_| serde_json::from_str(&server.tools_json).unwrap_or_default());
        validate_rule(rule, tools.as_deref()).map_err(|e| GatehouseError::invalid(&e.field, e.message))?;
        let description = rule.description.trim();
        let row = AccessRule {
            tenant_id: t.id.clone(),
            id: new_id(),
            role_id: r.id.clone(),
            server_id: server.id.clone(),
            effect: rule.effect.as_str().to_owned(),
            tools: rule.tools.clone(),
            annotation_json: rule.annotation.map(|a| serde_json::to_string(&a).expect("an annotation serialises")),
            params_json: serde_json::to_string(&rule.params).expect("constraints serialise"),
            description: description.to_owned(),
            created_at_ms: now_ms(),
            // Validated above (an empty condition is refused, so `None` means "always applies").
            condition_cel: rule.condition.clone(),
        };
        self.store.insert_rule(&row).await.map_err(store_err("rule"))?;
        self.recompile(&t).await?;
        rule_view(&row, &server.slug).map_err(|e| internal("reading back a rule")(e.to_string()))
    }

    /// Deletes a rule by id.
    pub async fn delete_rule(&self, actor: &Actor, tenant: &str, id: &str) -> Result<bool> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        if !self.store.delete_rule(&t.id, id).await.map_err(store_err("rule"))? {
            return Err(GatehouseError::not_found(format!("rule '{id}'")));
        }
        self.recompile(&t).await?;
        Ok(true)
    }

    /// Every rule of a tenant, by role id.
    pub(super) async fn rules_by_role(&self, tenant_id: &str) -> Result<HashMap<String, Vec<RuleView>>> {
        let rows = self.store.list_rules(tenant_id).await.map_err(store_err("rule"))?;
        let servers = self.store.list_servers(tenant_id).await.map_err(store_err("server"))?;
        let slug: HashMap<_, _> = servers.iter().map(|s| (s.id.as_str(), s.slug.as_str())).collect();
        let mut by_role: HashMap<String, Vec<RuleView>> = HashMap::new();
        for row in &rows {
            let Some(server) = slug.get(row.server_id.as_str()) else { continue };
            let view = rule_view(row, server).map_err(|e| internal("reading a rule")(e.to_string()))?;
            by_role.entry(row.role_id.clone()).or_default().push(view);
        }
        Ok(by_role)
    }

    /// Enforces a virtual server's access policy, or only observes it (`monitor`: what would be
    /// refused is allowed and audited as `would_deny`).
    pub async fn set_policy_mode(
        &self,
        actor: &Actor,
        tenant: &str,
        vs: &str,
        mode: PolicyMode,
    ) -> Result<VirtualServerView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let vss = self.store.list_virtual_servers(&t.id).await.map_err(store_err("virtual server"))?;
        let v = vss
            .iter()
            .find(|v| v.slug == vs)
            .ok_or_else(|| GatehouseError::not_found(format!("virtual server '{vs}'")))?;
        self.store.set_policy_mode(&t.id, &v.id, mode.as_str()).await.map_err(store_err("virtual server"))?;
        self.recompile(&t).await?;
        self.list_virtual_servers(actor, tenant)
            .await?
            .into_iter()
            .find(|v| v.slug == vs)
            .ok_or_else(|| GatehouseError::not_found(format!("virtual server '{vs}'")))
    }

    /// Would this call be allowed? Decided by the gateway's evaluator on the current bundle, with
    /// the call's arguments, exactly as a worker decides it (whatever the policy mode: the answer is
    /// what enforcement would do).
    #[allow(clippy::too_many_arguments)] // the call as a worker sees it: who, where, what, with what, from where
    pub async fn explain_call(
        &self,
        actor: &Actor,
        tenant: &str,
        user_email: &str,
        server: &str,
        tool: &str,
        arguments: Option<&Value>,
        context: &CallContext,
    ) -> Result<ToolAccessView> {
        let facts = context.facts()?;
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let user = self.user_by_email(&t, user_email).await?;
        self.may_explain(actor, &user)?;
        let arguments: Option<&Map<String, Value>> = match arguments {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(GatehouseError::invalid("arguments", "must be a JSON object")),
        };
        let policy = self.active_policy(&t).await?;
        let decision = policy.authorize_call_in(&facts, &user.id, server, tool, arguments);
        Ok(access_view(server, tool, decision))
    }

    pub(super) fn may_explain(&self, actor: &Actor, user: &gatehouse_store::User) -> Result<()> {
        let may_ask = actor.is_platform_admin()
            || actor.console_role == gatehouse_store::ROLE_TENANT_ADMIN
            || actor.user_id == user.id;
        if may_ask {
            Ok(())
        } else {
            Err(GatehouseError::new(ErrorCode::Forbidden, "members can only ask about their own access"))
        }
    }

    pub(super) async fn active_policy(&self, t: &gatehouse_store::Tenant) -> Result<gatehouse_bundle::TenantPolicy> {
        self.bundles
            .active_policy(&t.id)
            .await
            .map_err(|e| internal("reading the active bundle failed")(e.to_string()))?
            .ok_or_else(|| GatehouseError::new(ErrorCode::NoBundle, "this tenant has no policy bundle yet"))
    }
}

/// What "explain" assumes about the request, for rule conditions: the client's address and
/// application, and the time (RFC 3339; now when left out). Without an address or application,
/// conditions on them fail closed, as they would in the gateway.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Client IP address (`clientIp`).
    pub ip: Option<String>,
    /// Client application, `clientInfo.name` (`clientApp`).
    pub app: Option<String>,
    /// When (`at`), RFC 3339.
    pub at: Option<String>,
}

impl CallContext {
    fn facts(&self) -> Result<gatehouse_bundle::conditions::RequestFacts<'_>> {
        let ip = match self.ip.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<std::net::IpAddr>().map_err(|_| {
                GatehouseError::invalid("clientIp", format!("'{s}' is not an IP address such as 10.1.2.3"))
            })?),
        };
        let time_ms = match self.at.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => now_ms(),
            Some(s) => {
                let t =
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| {
                        GatehouseError::invalid(
                            "at",
                            format!("'{s}' is not an RFC 3339 time such as 2026-11-27T22:00:00+01:00"),
                        )
                    })?;
                i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
            }
        };
        let app = self.app.as_deref().map(str::trim).filter(|s| !s.is_empty());
        Ok(gatehouse_bundle::conditions::RequestFacts::new(ip, app, Some(time_ms)))
    }
}

/// One decision as the console and GraphQL show it.
pub(super) fn access_view(server: &str, tool: &str, decision: Decision) -> ToolAccessView {
    match decision {
        Decision::Allow { role, rule, constrained } => ToolAccessView {
            server: server.to_owned(),
            tool: tool.to_owned(),
            allowed: true,
            role: Some(role),
            rule_id: Some(rule),
            constrained,
            reason: None,
        },
        Decision::Deny { reason, rule, .. } => ToolAccessView {
            server: server.to_owned(),
            tool: tool.to_owned(),
            allowed: false,
            role: None,
            rule_id: Some(rule),
            constrained: false,
            reason: Some(reason),
        },
    }
}
