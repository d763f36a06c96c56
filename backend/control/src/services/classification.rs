//! Data-classification rules and server labels: saved only when valid, compiled into the next
//! bundle (labels resolved to the servers that carry them).

use std::collections::BTreeSet;

use gatehouse_bundle::classify::{self, ClassificationRule};
use gatehouse_core::GatehouseError;
use gatehouse_core::classification::{Action, ClassificationRuleInput, ClassificationRuleView, Detector, Scope};
use gatehouse_core::views::ServerView;
use gatehouse_store::{ClassificationRuleRow, Server, StoreError};

use super::{Actor, Need, Result, Services, new_id, server_view, store_err};
use crate::now_ms;

/// Most labels on one server, and most servers or labels one rule names.
const MAX_LABELS: usize = 32;

/// A label: 1–32 characters of letters, digits, `-` and `_` (`PCI`, `PHI`, `eu-west`).
fn validate_label(field: &str, label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 32
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(GatehouseError::invalid(field, format!("'{label}' is not a label: use 1-32 letters, digits, - or _")))
    }
}

fn labels_of(s: &Server) -> Vec<String> {
    serde_json::from_str(&s.labels_json).unwrap_or_default()
}

/// Reads a stored rule back. A row that does not decode stops the compile (dropping a blocking rule
/// would let data through).
pub(crate) fn classification_view(
    row: &ClassificationRuleRow,
) -> std::result::Result<ClassificationRuleView, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("classification rule {}: {what}", row.id));
    Ok(ClassificationRuleView {
        id: row.id.clone(),
        name: row.name.clone(),
        detector: Detector::from_wire(&row.detector).ok_or_else(|| corrupt("detector"))?,
        pattern: row.pattern.clone(),
        action: Action::from_wire(&row.action).ok_or_else(|| corrupt("action"))?,
        scope: Scope::from_wire(&row.scope).ok_or_else(|| corrupt("scope"))?,
        servers: serde_json::from_str(&row.servers_json).map_err(|_| corrupt("servers"))?,
        labels: serde_json::from_str(&row.labels_json).map_err(|_| corrupt("labels"))?,
        created_at_ms: row.created_at_ms,
    })
}

/// The bundle form of a rule: the servers it names plus every server carrying one of its labels.
/// `None` when it names servers or labels but none exists now (it applies nowhere; an empty list
/// in the bundle would mean "every server").
pub(crate) fn compiled_rule(view: &ClassificationRuleView, servers: &[Server]) -> Option<ClassificationRule> {
    let mut targets: BTreeSet<String> = view.servers.iter().cloned().collect();
    for s in servers {
        if labels_of(s).iter().any(|l| view.labels.contains(l)) {
            targets.insert(s.slug.clone());
        }
    }
    targets.retain(|slug| servers.iter().any(|s| &s.slug == slug));
    let selective = !view.servers.is_empty() || !view.labels.is_empty();
    if selective && targets.is_empty() {
        return None;
    }
    Some(ClassificationRule {
        id: view.id.clone(),
        name: view.name.clone(),
        detector: view.detector,
        pattern: view.pattern.clone(),
        action: view.action,
        scope: view.scope,
        servers: targets.into_iter().collect(),
    })
}

impl Services {
    /// A tenant's data-classification rules, oldest first.
    pub async fn list_classification_rules(&self, actor: &Actor, tenant: &str) -> Result<Vec<ClassificationRuleView>> {
        let t = self.tenant_for(actor, tenant, Need::Read).await?;
        let rows = self.store.list_classification_rules(&t.id).await.map_err(store_err("classification rule"))?;
        rows.iter().map(|r| classification_view(r).map_err(store_err("classification rule"))).collect()
    }

    /// Adds a data-classification rule. Errors name the field (`pattern`, `servers[1]`, ...).
    pub async fn add_classification_rule(
        &self,
        actor: &Actor,
        tenant: &str,
        input: &ClassificationRuleInput,
    ) -> Result<ClassificationRuleView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        let name = super::trimmed("name", &input.name, 100)?;
        if input.servers.len() > MAX_LABELS || input.labels.len() > MAX_LABELS {
            return Err(GatehouseError::invalid("servers", format!("name at most {MAX_LABELS} servers and labels")));
        }
        let known = self.store.list_servers(&t.id).await.map_err(store_err("server"))?;
        for (i, slug) in input.servers.iter().enumerate() {
            if !known.iter().any(|s| &s.slug == slug) {
                return Err(GatehouseError::invalid(
                    &format!("servers[{i}]"),
                    format!("no server '{slug}' in this tenant"),
                ));
            }
        }
        for (i, label) in input.labels.iter().enumerate() {
            validate_label(&format!("labels[{i}]"), label)?;
        }
        let pattern = input.pattern.as_deref().map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned);
        let id = new_id();
        let candidate = ClassificationRule {
            id: id.clone(),
            name: name.clone(),
            detector: input.detector,
            pattern: pattern.clone(),
            action: input.action,
            scope: input.scope,
            servers: input.servers.clone(),
        };
        classify::validate_rule(&candidate).map_err(|e| GatehouseError::invalid(e.field, e.message))?;
        let row = ClassificationRuleRow {
            tenant_id: t.id.clone(),
            id,
            name,
            detector: input.detector.wire(),
            pattern,
            action: input.action.wire(),
            scope: input.scope.wire(),
            servers_json: serde_json::to_string(&input.servers).expect("a list of strings serialises"),
            labels_json: serde_json::to_string(&input.labels).expect("a list of strings serialises"),
            created_at_ms: now_ms(),
        };
        self.store.insert_classification_rule(&row).await.map_err(store_err("classification rule"))?;
        self.recompile(&t).await?;
        classification_view(&row).map_err(store_err("classification rule"))
    }

    /// Deletes a data-classification rule by id.
    pub async fn delete_classification_rule(&self, actor: &Actor, tenant: &str, id: &str) -> Result<bool> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        if !self.store.delete_classification_rule(&t.id, id).await.map_err(store_err("classification rule"))? {
            return Err(GatehouseError::not_found(format!("classification rule '{id}'")));
        }
        self.recompile(&t).await?;
        Ok(true)
    }

    /// Replaces a server's labels (PCI, PHI, PII, a region ...); rules that name a label apply to it
    /// from the next bundle on.
    pub async fn set_server_labels(
        &self,
        actor: &Actor,
        tenant: &str,
        server: &str,
        labels: &[String],
    ) -> Result<ServerView> {
        let t = self.tenant_for(actor, tenant, Need::Admin).await?;
        if labels.len() > MAX_LABELS {
            return Err(GatehouseError::invalid("labels", format!("at most {MAX_LABELS} labels")));
        }
        let mut set = BTreeSet::new();
        for (i, label) in labels.iter().enumerate() {
            let label = label.trim();
            validate_label(&format!("labels[{i}]"), label)?;
            set.insert(label.to_owned());
        }
        let s = self
            .store
            .server_by_slug(&t.id, server)
            .await
            .map_err(store_err("server"))?
            .ok_or_else(|| GatehouseError::not_found(format!("server '{server}'")))?;
        let labels: Vec<String> = set.into_iter().collect();
        let json = serde_json::to_string(&labels).expect("a list of strings serialises");
        self.store.set_server_labels(&t.id, &s.id, &json).await.map_err(store_err("server"))?;
        self.recompile(&t).await?;
        Ok(server_view(&Server { labels_json: json, ..s }))
    }
}

pub(crate) fn server_labels(s: &Server) -> Vec<String> {
    labels_of(s)
}
