//! Virtual-server shaping (`docs/decisions/0013-virtual-server-shaping.md`): the conflict strategy,
//! upstream prefixes and per-tool overrides of a virtual server. Saved only when valid against the
//! tool definitions the control plane last fetched (`ToolView`), compiled into the bundle with
//! servers named by slug. The naming itself is `gatehouse_core::shaping`'s, the same code the
//! gateway runs, so the effective tool list shown here is what clients get.

use std::collections::{BTreeMap, HashMap};

use gatehouse_core::GatehouseError;
use gatehouse_core::shaping::{
    ConflictStrategy, ExposedToolView, ToolOverride, UpstreamPrefix, conflicts, expose, rename_clashes,
    shape_definition, validate_override, validate_prefix,
};
use gatehouse_core::views::VirtualServerView;
use gatehouse_store::{Server, ShapingRow, Store, StoreError, Tenant, ToolOverrideRow, VirtualServer};
use serde_json::{Value, json};

use super::{Actor, Need, Result, Services, store_err, tools_of};
use crate::now_ms;

/// One virtual server's shaping, servers named by slug.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VsShaping {
    pub strategy: ConflictStrategy,
    /// Prefixes set by an admin, in upstream order.
    pub prefixes: Vec<UpstreamPrefix>,
    /// Overrides, sorted by server then tool.
    pub overrides: Vec<ToolOverride>,
}

/// Every virtual server's shaping in a tenant, by virtual server id. Rows whose server is gone have
/// cascaded away; a prefix of a server that left the virtual server is ignored.
pub(crate) async fn load_shaping(
    store: &Store,
    tenant_id: &str,
    servers: &[Server],
) -> std::result::Result<HashMap<String, VsShaping>, StoreError> {
    let slug: HashMap<&str, &str> = servers.iter().map(|s| (s.id.as_str(), s.slug.as_str())).collect();
    let mut out: HashMap<String, VsShaping> = HashMap::new();
    for row in store.list_shaping(tenant_id).await? {
        let strategy = ConflictStrategy::parse(&row.conflict_strategy).ok_or_else(|| {
            StoreError::Corrupt(format!("virtual server {}: conflict strategy", row.virtual_server_id))
        })?;
        let prefixes: BTreeMap<String, String> = serde_json::from_str(&row.prefixes_json)
            .map_err(|e| StoreError::Corrupt(format!("virtual server {}: prefixes: {e}", row.virtual_server_id)))?;
        let entry = out.entry(row.virtual_server_id.clone()).or_default();
        entry.strategy = strategy;
        entry.prefixes = prefixes
            .into_iter()
            .filter_map(|(id, prefix)| {
                slug.get(id.as_str()).map(|s| UpstreamPrefix { server: (*s).to_owned(), prefix })
            })
            .collect();
    }
    for row in store.list_tool_overrides(tenant_id).await? {
        let Some(server) = slug.get(row.server_id.as_str()) else { continue };
        let mut o: ToolOverride = serde_json::from_str(&row.override_json)
            .map_err(|e| StoreError::Corrupt(format!("tool override {}/{}: {e}", row.server_id, row.tool)))?;
        o.server = (*server).to_owned();
        o.tool = row.tool.clone();
        o.normalize();
        out.entry(row.virtual_server_id.clone()).or_default().overrides.push(o);
    }
    for s in out.values_mut() {
        s.overrides.sort_by(|a, b| (&a.server, &a.tool).cmp(&(&b.server, &b.tool)));
    }
    Ok(out)
}

/// Fills the compiled virtual servers' shaping (the bundle compiler calls this).
pub(crate) async fn compile_shaping(
    store: &Store,
    tenant_id: &str,
    servers: &[Server],
    vss: &[VirtualServer],
    compiled: &mut [gatehouse_bundle::format::VirtualServer],
) -> std::result::Result<(), StoreError> {
    let mut shaping = load_shaping(store, tenant_id, servers).await?;
    for vs in vss {
        let Some(s) = shaping.remove(&vs.id) else { continue };
        let Some(c) = compiled.iter_mut().find(|c| c.slug == vs.slug) else { continue };
        c.conflict_strategy = s.strategy;
        // Only prefixes of current upstreams travel.
        c.prefixes = s.prefixes.into_iter().filter(|p| c.upstreams.contains(&p.server)).collect();
        c.overrides = s.overrides.into_iter().filter(|o| c.upstreams.contains(&o.server)).collect();
    }
    Ok(())
}

/// What a change is checked against: the virtual server, its upstreams in order, its shaping.
struct Ctx {
    tenant: Tenant,
    vs: VirtualServer,
    upstreams: Vec<Server>,
    shaping: VsShaping,
}

impl Ctx {
    /// Upstream slugs with their tool names, in order.
    fn lists(&self) -> Vec<(String, Vec<String>)> {
        self.upstreams.iter().map(|s| (s.slug.clone(), tools_of(s).into_iter().map(|t| t.name).collect())).collect()
    }
}

fn prefix_of(shaping: &VsShaping) -> impl Fn(&str) -> String + '_ {
    move |s: &str| {
        shaping.prefixes.iter().find(|p| p.server == s).map(|p| p.prefix.clone()).unwrap_or_else(|| s.to_owned())
    }
}

fn rename_of(shaping: &VsShaping) -> impl Fn(&str, &str) -> Option<String> + '_ {
    move |s: &str, t: &str| {
        shaping.overrides.iter().find(|o| o.server == s && o.tool == t).and_then(|o| o.rename.clone())
    }
}

fn who(tools: &[String]) -> String {
    tools.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(" and ")
}

/// Refuses a shaping that leaves a name two tools would take: two renames to one name (under every
/// strategy), or under `explicit` any conflict no rename resolves. `field` is the field blamed.
fn check_names(field: &str, shaping: &VsShaping, lists: &[(String, Vec<String>)]) -> Result<()> {
    let rename = rename_of(shaping);
    if let Some((name, tools)) = rename_clashes(&rename, lists).into_iter().next() {
        return Err(GatehouseError::invalid(
            field,
            format!("{} would both be renamed to '{name}'; choose another name", who(&tools)),
        ));
    }
    if shaping.strategy == ConflictStrategy::Explicit {
        let found = conflicts(&rename, lists);
        if !found.is_empty() {
            let each: Vec<String> =
                found.iter().map(|(name, tools)| format!("{} would all be exposed as '{name}'", who(tools))).collect();
            return Err(GatehouseError::invalid(
                field,
                format!("the explicit strategy needs a rename for every conflict: {}", each.join("; ")),
            ));
        }
    }
    Ok(())
}

impl Services {
    async fn shaping_ctx(&self, actor: &Actor, tenant: &str, vs: &str, need: Need) -> Result<Ctx> {
        let t = self.tenant_for(actor, tenant, need).await?;
        let vss = self.store.list_virtual_servers(&t.id).await.map_err(store_err("virtual server"))?;
        let v = vss
            .into_iter()
            .find(|v| v.slug == vs)
            .ok_or_else(|| GatehouseError::not_found(format!("virtual server '{vs}'")))?;
        let links = self.store.list_virtual_server_upstreams(&t.id).await.map_err(store_err("virtual server"))?;
        let servers = self.store.list_servers(&t.id).await.map_err(store_err("server"))?;
        let upstreams = links
            .iter()
            .filter(|l| l.virtual_server_id == v.id)
            .filter_map(|l| servers.iter().find(|s| s.id == l.server_id).cloned())
            .collect();
        let shaping = load_shaping(&self.store, &t.id, &servers)
            .await
            .map_err(store_err("shaping"))?
            .remove(&v.id)
            .unwrap_or_default();
        Ok(Ctx { tenant: t, vs: v, upstreams, shaping })
    }

    async fn vs_view(&self, actor: &Actor, tenant: &str, vs: &str) -> Result<VirtualServerView> {
        self.list_virtual_servers(actor, tenant)
            .await?
            .into_iter()
            .find(|v| v.slug == vs)
            .ok_or_else(|| GatehouseError::not_found(format!("virtual server '{vs}'")))
    }

    async fn save_shaping_row(&self, ctx: &Ctx, shaping: &VsShaping) -> Result<()> {
        let prefixes: BTreeMap<&str, &str> = shaping
            .prefixes
            .iter()
            .filter_map(|p| {
                let id = ctx.upstreams.iter().find(|s| s.slug == p.server)?.id.as_str();
                Some((id, p.prefix.as_str()))
            })
            .collect();
        let row = ShapingRow {
            tenant_id: ctx.tenant.id.clone(),
            virtual_server_id: ctx.vs.id.clone(),
            conflict_strategy: shaping.strategy.as_str().to_owned(),
            prefixes_json: serde_json::to_string(&prefixes).unwrap_or_else(|_| "{}".into()),
            updated_at_ms: now_ms(),
        };
        self.store.set_shaping(&row).await.map_err(store_err("shaping"))
    }

    /// Sets how a virtual server resolves a tool name several upstreams use, and the prefixes of its
    /// upstreams (a prefix not given is the upstream's slug). Errors name the field (`strategy`,
    /// `prefixes[1].prefix`, ...).
    pub async fn set_conflict_strategy(
        &self,
        actor: &Actor,
        tenant: &str,
        vs: &str,
        strategy: ConflictStrategy,
        prefixes: &[UpstreamPrefix],
    ) -> Result<VirtualServerView> {
        let ctx = self.shaping_ctx(actor, tenant, vs, Need::Admin).await?;
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut kept = Vec::new();
        for (i, p) in prefixes.iter().enumerate() {
            let at = format!("prefixes[{i}]");
            let Some(upstream) = ctx.upstreams.iter().find(|s| s.slug == p.server) else {
                return Err(GatehouseError::invalid(
                    &format!("{at}.server"),
                    format!("'{}' is not an upstream of virtual server '{vs}'", p.server),
                ));
            };
            if seen.iter().any(|(s, _)| *s == p.server) {
                return Err(GatehouseError::invalid(
                    &format!("{at}.server"),
                    format!("'{}' is listed twice", p.server),
                ));
            }
            let prefix = p.prefix.trim();
            validate_prefix(&format!("{at}.prefix"), prefix)?;
            seen.push((upstream.slug.clone(), prefix.to_owned()));
            if prefix != upstream.slug {
                kept.push(UpstreamPrefix { server: upstream.slug.clone(), prefix: prefix.to_owned() });
            }
        }
        // Every upstream's effective prefix must be its own, or prefixed names could collide.
        let mut effective: Vec<(&str, String)> = Vec::new();
        for s in &ctx.upstreams {
            let prefix =
                seen.iter().find(|(x, _)| *x == s.slug).map(|(_, p)| p.clone()).unwrap_or_else(|| s.slug.clone());
            if let Some((other, _)) = effective.iter().find(|(_, p)| *p == prefix) {
                let i = prefixes.iter().position(|p| p.server == s.slug || p.server == *other).unwrap_or(0);
                return Err(GatehouseError::invalid(
                    &format!("prefixes[{i}].prefix"),
                    format!("'{prefix}' would be the prefix of both '{other}' and '{}'", s.slug),
                ));
            }
            effective.push((s.slug.as_str(), prefix));
        }
        let shaping = VsShaping { strategy, prefixes: kept, overrides: ctx.shaping.overrides.clone() };
        check_names("strategy", &shaping, &ctx.lists())?;
        self.save_shaping_row(&ctx, &shaping).await?;
        self.recompile(&ctx.tenant).await?;
        self.vs_view(actor, tenant, vs).await
    }

    /// Sets (adds or replaces) the override of one upstream tool of a virtual server, keyed by
    /// upstream server and the tool's upstream name. Validated against the tool's input schema as
    /// last fetched; errors name the field (`override.fixed.path: ...`).
    pub async fn set_tool_override(
        &self,
        actor: &Actor,
        tenant: &str,
        vs: &str,
        input: &ToolOverride,
    ) -> Result<VirtualServerView> {
        let ctx = self.shaping_ctx(actor, tenant, vs, Need::Admin).await?;
        let Some(server) = ctx.upstreams.iter().find(|s| s.slug == input.server) else {
            let names: Vec<&str> = ctx.upstreams.iter().map(|s| s.slug.as_str()).collect();
            return Err(GatehouseError::invalid(
                "override.server",
                format!(
                    "'{}' is not an upstream of virtual server '{vs}' (its upstreams: {})",
                    input.server,
                    names.join(", ")
                ),
            ));
        };
        let tools = tools_of(server);
        let Some(tool) = tools.iter().find(|t| t.name == input.tool) else {
            return Err(GatehouseError::invalid(
                "override.tool",
                format!(
                    "server '{}' has no tool '{}' (as last fetched; refresh the server's tools if it is new)",
                    server.slug, input.tool
                ),
            ));
        };
        let mut o = input.clone();
        o.normalize();
        if o.rename.is_none() && o.description.is_none() && !o.shapes_arguments() {
            return Err(GatehouseError::invalid(
                "override",
                "set at least one of rename, description, fixed, hidden or enums (or delete the override)",
            ));
        }
        if o.rename.as_deref() == Some(tool.name.as_str()) {
            o.rename = None;
        }
        validate_override("override", &o, tool.input_schema.as_ref())?;
        let mut shaping = ctx.shaping.clone();
        shaping.overrides.retain(|x| !(x.server == o.server && x.tool == o.tool));
        shaping.overrides.push(o.clone());
        check_names("override.rename", &shaping, &ctx.lists())?;
        let mut stored = o.clone();
        stored.server.clear();
        stored.tool.clear();
        let row = ToolOverrideRow {
            tenant_id: ctx.tenant.id.clone(),
            virtual_server_id: ctx.vs.id.clone(),
            server_id: server.id.clone(),
            tool: o.tool.clone(),
            override_json: serde_json::to_string(&stored).unwrap_or_else(|_| "{}".into()),
            updated_at_ms: now_ms(),
        };
        self.store.upsert_tool_override(&row).await.map_err(store_err("tool override"))?;
        self.recompile(&ctx.tenant).await?;
        self.vs_view(actor, tenant, vs).await
    }

    /// Deletes the override of one upstream tool. Refused under the explicit strategy when the
    /// override's rename resolves a conflict (delete would leave it unresolved).
    pub async fn delete_tool_override(
        &self,
        actor: &Actor,
        tenant: &str,
        vs: &str,
        server: &str,
        tool: &str,
    ) -> Result<VirtualServerView> {
        let ctx = self.shaping_ctx(actor, tenant, vs, Need::Admin).await?;
        let missing = || GatehouseError::not_found(format!("override of tool '{tool}' of server '{server}'"));
        let upstream = ctx.upstreams.iter().find(|s| s.slug == server).ok_or_else(missing)?;
        let mut shaping = ctx.shaping.clone();
        shaping.overrides.retain(|x| !(x.server == server && x.tool == tool));
        check_names("tool", &shaping, &ctx.lists())?;
        if !self
            .store
            .delete_tool_override(&ctx.tenant.id, &ctx.vs.id, &upstream.id, tool)
            .await
            .map_err(store_err("tool override"))?
        {
            return Err(missing());
        }
        self.recompile(&ctx.tenant).await?;
        self.vs_view(actor, tenant, vs).await
    }

    /// The tools of a virtual server as clients see them (names, descriptions and schemas after
    /// shaping), in upstream order, from the tool definitions last fetched; before access policy
    /// (each user sees the part their roles grant).
    pub async fn virtual_server_tools(&self, actor: &Actor, tenant: &str, vs: &str) -> Result<Vec<ExposedToolView>> {
        let ctx = self.shaping_ctx(actor, tenant, vs, Need::Read).await?;
        Ok(effective_tools(&ctx.upstreams, &ctx.shaping))
    }

    /// The shaping of each of a tenant's virtual servers, by id (for the views).
    pub(crate) async fn shaping_by_vs(
        &self,
        tenant_id: &str,
        servers: &[Server],
    ) -> Result<HashMap<String, VsShaping>> {
        load_shaping(&self.store, tenant_id, servers).await.map_err(store_err("shaping"))
    }
}

/// The effective tool list of upstreams `servers` (in order) under `shaping`.
pub(crate) fn effective_tools(servers: &[Server], shaping: &VsShaping) -> Vec<ExposedToolView> {
    let tools: Vec<(String, Vec<gatehouse_core::views::ToolView>)> =
        servers.iter().map(|s| (s.slug.clone(), tools_of(s))).collect();
    let lists: Vec<(String, Vec<String>)> =
        tools.iter().map(|(s, t)| (s.clone(), t.iter().map(|t| t.name.clone()).collect())).collect();
    let (names, warnings) = expose(shaping.strategy, &prefix_of(shaping), &rename_of(shaping), &lists);
    let mut out = Vec::new();
    for ((server, defs), names) in tools.into_iter().zip(names) {
        for (def, exposed) in defs.into_iter().zip(names) {
            let o = shaping.overrides.iter().find(|o| o.server == server && o.tool == def.name);
            let mut definition =
                json!({ "name": def.name, "description": def.description, "inputSchema": def.input_schema });
            if let Some(o) = o {
                shape_definition(o, &exposed, &mut definition);
            }
            let warning =
                warnings.iter().find(|w| w.starts_with(&format!("tool '{}' of '{server}'", def.name))).cloned();
            out.push(ExposedToolView {
                exposed,
                server: server.clone(),
                tool: def.name,
                description: definition.get("description").and_then(Value::as_str).map(str::to_owned),
                input_schema: definition.get("inputSchema").filter(|s| !s.is_null()).cloned(),
                overridden: o.is_some(),
                warning,
            });
        }
    }
    out
}
