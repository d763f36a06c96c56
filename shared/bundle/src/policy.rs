//! The runtime form of a verified bundle and the decisions the gateway makes with it.
//!
//! Everything here is built once, when a bundle is activated, so that a decision on the request
//! path is a few hash look-ups.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use gatehouse_core::limits::LimitScope;
use gatehouse_core::rules::{Effect, PolicyMode};
use serde_json::{Map, Value};

use crate::classify::Classifier;
use crate::conditions::RequestFacts;
use crate::format::{Bundle, Manifest};
use crate::rules::CompiledRule;

/// A principal: the user a token authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub user_id: String,
    /// User e-mail.
    pub email: String,
    /// Token id that authenticated.
    pub token_id: String,
}

/// What one role grants on one upstream server.
///
/// Built once per role and shared by every user who holds the role: a user holds only the indices
/// of their roles (a tenant of 5,000 users with three roles each would otherwise copy each role's
/// grants and rules three times per user).
#[derive(Debug, Default)]
struct RoleServer {
    /// Every tool is granted (by a plain `*` grant): the rule id of that grant.
    all: Option<Box<str>>,
    /// Tools granted by name, sorted by interned tool id: (tool id, rule id).
    tools: Vec<(u32, Box<str>)>,
    /// The role's allow rules on this server, in id order.
    allow: Vec<Arc<CompiledRule>>,
    /// The role's deny rules on this server.
    deny: Vec<Arc<CompiledRule>>,
}

/// A role that grants nothing on a server (fills unused slots).
static NOTHING: RoleServer = RoleServer { all: None, tools: Vec::new(), allow: Vec::new(), deny: Vec::new() };

impl RoleServer {
    /// The rule id of the grant of the tool with this interned id.
    fn named(&self, tool: u32) -> Option<&str> {
        self.tools.binary_search_by_key(&tool, |(t, _)| *t).ok().map(|i| &*self.tools[i].1)
    }
}

/// One access role, compiled.
#[derive(Debug)]
struct CompiledRole {
    /// Its slug.
    slug: String,
    /// What it grants, sorted by interned server id.
    servers: Vec<(u32, RoleServer)>,
}

impl CompiledRole {
    /// What the role grants on the server with this interned id.
    fn on(&self, server: u32) -> Option<&RoleServer> {
        self.servers.binary_search_by_key(&server, |(s, _)| *s).ok().map(|i| &self.servers[i].1)
    }
}

/// Interns a name: its id, a new one if it is not known yet.
fn intern(ids: &mut HashMap<String, u32>, name: &str) -> u32 {
    if let Some(id) = ids.get(name) {
        return *id;
    }
    let id = u32::try_from(ids.len()).expect("fewer than 2^32 names");
    ids.insert(name.to_owned(), id);
    id
}

/// A virtual server's routing.
#[derive(Debug, Clone)]
pub struct VirtualServerRoute {
    /// Slug.
    pub slug: String,
    /// Upstreams: (server slug, URL), in configured order; suspended servers are left out.
    pub upstreams: Vec<(String, String)>,
    /// Upstreams left out because they are suspended: (server slug, reason).
    pub suspended: Vec<(String, String)>,
    /// Whether refusals are enforced or only audited.
    pub mode: PolicyMode,
    /// Naming strategy and per-tool overrides (virtual-server shaping), built at load.
    pub shaping: crate::shaping::Shaping,
}

/// Names the decision of a plain grant: `grant:{role}:{server}:{tool}` (`tool` may be `*`).
pub fn grant_rule_id(role: &str, server: &str, tool: &str) -> String {
    format!("grant:{role}:{server}:{tool}")
}

/// The rule id of a refusal that no rule made: nothing granted the tool.
pub const DEFAULT_DENY: &str = "default-deny";

/// A policy decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow {
        /// The role that granted it.
        role: String,
        /// The grant or rule that decided.
        rule: String,
        /// Allowed with parameter constraints: a call may still be refused for its arguments
        /// (only [`TenantPolicy::authorize_tool`] says so; a call decision has checked them).
        constrained: bool,
    },
    /// Denied, with a reason the user can act on.
    Deny {
        /// Why.
        reason: String,
        /// The rule that decided ([`DEFAULT_DENY`] when nothing granted it).
        rule: String,
        /// What kind of refusal it is.
        kind: DenyKind,
    },
}

/// What kind of refusal a [`Decision::Deny`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// Nothing grants the tool, or a deny rule refuses it.
    NotGranted,
    /// A rule allows the tool, but not with these arguments.
    Arguments,
    /// The kill switch: the tool or its server is suspended. Never relaxed by monitor mode.
    Suspended,
}

impl Decision {
    /// Whether it allows.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The id of the rule that decided.
    pub fn rule(&self) -> &str {
        match self {
            Decision::Allow { rule, .. } | Decision::Deny { rule, .. } => rule,
        }
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No such token.
    Unknown,
    /// The token has expired.
    Expired,
    /// A tenant admin suspended the user (the reason).
    Suspended(String),
}

/// One tenant's policy, ready for the request path.
#[derive(Debug)]
pub struct TenantPolicy {
    /// The manifest of the bundle it was built from.
    pub manifest: Manifest,
    tokens: HashMap<String, (String, String, Option<i64>)>,
    /// Each user's e-mail and roles (indices into `roles`, in the bundle's order, without repeats).
    users: HashMap<String, (String, Box<[u32]>)>,
    /// The roles, compiled once each.
    roles: Vec<CompiledRole>,
    /// Interned server slugs and tool names of the roles' grants and rules.
    server_ids: HashMap<String, u32>,
    tool_ids: HashMap<String, u32>,
    /// Every rule by id, for explanations.
    rules: HashMap<String, Arc<CompiledRule>>,
    virtual_servers: HashMap<String, Arc<VirtualServerRoute>>,
    /// Decoded session keys, newest first (see [`TenantPolicy::session_keys`]).
    session_keys: Vec<SessionKeyMaterial>,
    /// The tenant's data-classification rules, compiled.
    classifier: Classifier,
    /// Suspended users (id → reason), servers (slug → reason) and tools ((server, tool) → reason).
    killed_users: HashMap<String, String>,
    killed_servers: HashMap<String, String>,
    killed_tools: HashMap<String, HashMap<String, String>>,
    /// Ended sessions: user id (`""` for every user) → sessions initialized before this are refused.
    session_cutoffs: HashMap<String, i64>,
    /// Rate limits, and each user's role slugs (for role-scoped limits).
    rate_limits: Vec<CompiledLimit>,
    user_roles: HashMap<String, Vec<String>>,
    /// Each user's `user` variable for conditions; empty when no rule has a condition.
    user_values: HashMap<String, cel::Value>,
}

/// A rate limit, ready to match calls.
#[derive(Debug, Clone)]
pub struct CompiledLimit {
    /// The limit as the bundle carries it.
    pub limit: crate::format::RateLimit,
    glob: Option<crate::rules::Glob>,
}

impl CompiledLimit {
    /// Whether the limit counts a call of `tool` on `server` by `user_id` holding `roles`.
    fn applies(&self, user_id: &str, roles: &[String], server: &str, tool: &str) -> bool {
        let l = &self.limit;
        l.server.as_deref().is_none_or(|s| s == server)
            && self.glob.as_ref().is_none_or(|g| g.matches(tool))
            && match l.scope {
                LimitScope::Tenant => true,
                LimitScope::Role => l.role.as_ref().is_some_and(|r| roles.contains(r)),
                LimitScope::User => l.user.as_deref().is_none_or(|u| u == user_id),
            }
    }
}

/// A bundle the worker cannot turn into a policy (the compiler never makes one): it is refused and
/// the tenant's previous bundle keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// A decoded session sealing key of the tenant.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeyMaterial {
    /// Its id, carried in each token it seals.
    pub id: String,
    /// The 256-bit key.
    pub key: [u8; 32],
    /// When the control plane created it.
    pub created_at_ms: i64,
}

// Hand-written so the key never reaches a log line.
impl std::fmt::Debug for SessionKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeyMaterial").field("id", &self.id).field("created_at_ms", &self.created_at_ms).finish()
    }
}

/// Decodes the bundle's session keys, newest first; a key whose id is empty or longer than 255
/// bytes, or whose bytes are not 32 in base64, is left out (the compiler never makes one).
fn decode_session_keys(keys: &[crate::format::SessionKey]) -> Vec<SessionKeyMaterial> {
    use base64::Engine as _;
    let mut decoded: Vec<SessionKeyMaterial> = keys
        .iter()
        .filter(|k| !k.id.is_empty() && k.id.len() <= 255)
        .filter_map(|k| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(&k.key_b64).ok()?;
            let key: [u8; 32] = bytes.try_into().ok()?;
            Some(SessionKeyMaterial { id: k.id.clone(), key, created_at_ms: k.created_at_ms })
        })
        .collect();
    decoded.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.id.cmp(&a.id)));
    decoded
}

impl TenantPolicy {
    /// Builds the runtime policy from a verified bundle.
    pub fn build(bundle: &Bundle) -> Result<Self, PolicyError> {
        let c = &bundle.content;
        // A slug names one role (the compiler never repeats one; were it to, the last would count).
        let role_index: HashMap<&str, u32> = c
            .roles
            .iter()
            .enumerate()
            .map(|(i, r)| (r.slug.as_str(), u32::try_from(i).expect("fewer than 2^32 roles")))
            .collect();
        // Each role is compiled once; users share it (see `RoleServer`).
        let mut server_ids: HashMap<String, u32> = HashMap::new();
        let mut tool_ids: HashMap<String, u32> = HashMap::new();
        let mut roles = Vec::with_capacity(c.roles.len());
        let mut rules: HashMap<String, Arc<CompiledRule>> = HashMap::new();
        for (i, r) in c.roles.iter().enumerate() {
            if role_index[r.slug.as_str()] as usize != i {
                roles.push(CompiledRole { slug: r.slug.clone(), servers: Vec::new() });
                continue;
            }
            let mut servers: std::collections::BTreeMap<u32, RoleServer> = std::collections::BTreeMap::new();
            for (server, tools) in &r.grants {
                let rs = servers.entry(intern(&mut server_ids, server)).or_default();
                for tool in tools {
                    if tool == "*" {
                        rs.all.get_or_insert_with(|| grant_rule_id(&r.slug, server, tool).into());
                    } else {
                        rs.tools.push((intern(&mut tool_ids, tool), grant_rule_id(&r.slug, server, tool).into()));
                    }
                }
                // Sorted for look-up; a tool named twice is granted by its first grant.
                rs.tools.sort_by_key(|(t, _)| *t);
                rs.tools.dedup_by_key(|(t, _)| *t);
                rs.tools.shrink_to_fit();
            }
            for rule in &r.rules {
                let compiled = Arc::new(CompiledRule::new(&r.slug, rule));
                let rs = servers.entry(intern(&mut server_ids, &rule.server)).or_default();
                match compiled.effect {
                    Effect::Allow => rs.allow.push(compiled.clone()),
                    Effect::Deny => rs.deny.push(compiled.clone()),
                }
                rules.insert(compiled.id.clone(), compiled);
            }
            roles.push(CompiledRole { slug: r.slug.clone(), servers: servers.into_iter().collect() });
        }
        // A condition that does not compile refuses the bundle (the previous one keeps serving):
        // dropping it would widen an allow's reach or lift a deny.
        if let Some(r) = rules.values().find(|r| r.condition_error().is_some()) {
            return Err(PolicyError(format!(
                "access rule {}: condition: {}",
                r.id,
                r.condition_error().unwrap_or_default()
            )));
        }
        let user_values = if rules.values().any(|r| r.is_conditional()) {
            c.users
                .iter()
                .map(|u| (u.id.clone(), crate::conditions::user_value(&u.id, &u.email, &u.groups, &u.attributes)))
                .collect()
        } else {
            HashMap::new()
        };
        // A user holds the indices of their roles, in the bundle's order; a role named twice (or
        // not in the bundle) adds nothing.
        let users = c
            .users
            .iter()
            .map(|u| {
                let mut held: Vec<u32> = Vec::with_capacity(u.roles.len());
                for i in u.roles.iter().filter_map(|slug| role_index.get(slug.as_str())) {
                    if !held.contains(i) {
                        held.push(*i);
                    }
                }
                (u.id.clone(), (u.email.clone(), held.into_boxed_slice()))
            })
            .collect();
        let tokens =
            c.tokens.iter().map(|t| (t.sha256.clone(), (t.id.clone(), t.user_id.clone(), t.expires_at_ms))).collect();
        let urls: HashMap<&str, &str> = c.servers.iter().map(|s| (s.slug.as_str(), s.url.as_str())).collect();
        let killed_users: HashMap<String, String> =
            c.kill.users.iter().map(|k| (k.id.clone(), k.reason.clone())).collect();
        let killed_servers: HashMap<String, String> =
            c.kill.servers.iter().map(|k| (k.id.clone(), k.reason.clone())).collect();
        let mut killed_tools: HashMap<String, HashMap<String, String>> = HashMap::new();
        for k in &c.kill.tools {
            killed_tools.entry(k.server.clone()).or_default().insert(k.tool.clone(), k.reason.clone());
        }
        let virtual_servers = c
            .virtual_servers
            .iter()
            .map(|vs| {
                let (suspended, live): (Vec<&String>, Vec<&String>) =
                    vs.upstreams.iter().partition(|s| killed_servers.contains_key(s.as_str()));
                let upstreams = live
                    .into_iter()
                    .filter_map(|s| urls.get(s.as_str()).map(|u| (s.clone(), (*u).to_owned())))
                    .collect();
                let suspended =
                    suspended.into_iter().map(|s| (s.clone(), killed_servers[s.as_str()].clone())).collect();
                let shaping = crate::shaping::Shaping::new(vs);
                let route = VirtualServerRoute { slug: vs.slug.clone(), upstreams, suspended, mode: vs.mode, shaping };
                (vs.slug.clone(), Arc::new(route))
            })
            .collect();
        let session_keys = decode_session_keys(&c.session_keys);
        let classifier = Classifier::new(&c.classification)
            .map_err(|e| PolicyError(format!("data-classification rule {}: {}: {}", e.rule_id, e.field, e.message)))?;
        let rate_limits = c
            .rate_limits
            .iter()
            .map(|l| CompiledLimit {
                limit: l.clone(),
                glob: l.tool.as_deref().filter(|t| *t != "*").map(crate::rules::Glob::new),
            })
            .collect();
        let user_roles = c.users.iter().map(|u| (u.id.clone(), u.roles.clone())).collect();
        Ok(Self {
            manifest: bundle.manifest.clone(),
            tokens,
            users,
            roles,
            server_ids,
            tool_ids,
            rules,
            virtual_servers,
            session_keys,
            classifier,
            killed_users,
            killed_servers,
            killed_tools,
            session_cutoffs: c.kill.sessions.iter().map(|s| (s.user_id.clone(), s.not_before_ms)).collect(),
            rate_limits,
            user_roles,
            user_values,
        })
    }

    /// The tenant's data-classification rules, ready to scan.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// The tenant's usable session keys, newest first: the first one seals, every one opens.
    pub fn session_keys(&self) -> &[SessionKeyMaterial] {
        &self.session_keys
    }

    /// Whether a tenant admin ended the sessions of `user_id` (or every session of the tenant) after
    /// a session of that user was initialized at `issued_at_ms`.
    pub fn session_ended(&self, user_id: &str, issued_at_ms: i64) -> bool {
        if self.session_cutoffs.is_empty() {
            return false;
        }
        [user_id, ""].iter().any(|u| self.session_cutoffs.get(*u).is_some_and(|cut| issued_at_ms < *cut))
    }

    /// Authenticates a bearer token at time `now_ms`.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<Principal, AuthFailure> {
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        let (token_id, user_id, expires) = self.tokens.get(&digest).ok_or(AuthFailure::Unknown)?;
        if expires.is_some_and(|e| now_ms >= e) {
            return Err(AuthFailure::Expired);
        }
        let (email, _) = self.users.get(user_id).ok_or(AuthFailure::Unknown)?;
        if let Some(reason) = self.killed_users.get(user_id) {
            return Err(AuthFailure::Suspended(reason.clone()));
        }
        Ok(Principal { user_id: user_id.clone(), email: email.clone(), token_id: token_id.clone() })
    }

    /// The virtual server with this slug.
    pub fn virtual_server(&self, slug: &str) -> Option<Arc<VirtualServerRoute>> {
        self.virtual_servers.get(slug).cloned()
    }

    /// The rate limits that count a call of `tool` on `server` by `user_id`, in id order.
    pub fn rate_limits_for<'a>(
        &'a self,
        user_id: &'a str,
        server: &'a str,
        tool: &'a str,
    ) -> impl Iterator<Item = &'a CompiledLimit> + 'a {
        let roles = self.user_roles.get(user_id).map(Vec::as_slice).unwrap_or_default();
        self.rate_limits.iter().filter(move |l| l.applies(user_id, roles, server, tool))
    }

    /// A rule of the bundle by id.
    pub fn rule(&self, id: &str) -> Option<&CompiledRule> {
        self.rules.get(id).map(|r| &**r)
    }

    /// May `user_id` see (list) `tool` of upstream `server`? Parameter constraints are not checked
    /// here: a tool allowed only with constraints is listed, marked `constrained`.
    ///
    /// Rule conditions see only the current time ([`RequestFacts::unknown`]), so a rule conditioned
    /// on the client fails closed; the gateway uses [`TenantPolicy::authorize_tool_in`].
    pub fn authorize_tool(&self, user_id: &str, server: &str, tool: &str) -> Decision {
        self.authorize_tool_in(&RequestFacts::unknown(), user_id, server, tool)
    }

    /// [`TenantPolicy::authorize_tool`] for a request with these facts (client address and
    /// application, time), which rule conditions see.
    pub fn authorize_tool_in(&self, facts: &RequestFacts<'_>, user_id: &str, server: &str, tool: &str) -> Decision {
        self.decide(facts, user_id, server, tool, None)
    }

    /// May `user_id` call `tool` of upstream `server` with these `arguments`?
    ///
    /// Deny rules win; then a plain grant or an unconstrained allow rule allows; then the first
    /// constrained allow rule whose constraints hold allows; otherwise the call is refused with the
    /// first broken constraint (or, if no rule selects the tool, because nothing grants it).
    /// A rule with a condition counts only when its condition is true; a deny rule whose condition
    /// cannot be evaluated denies, an allow rule whose condition cannot be evaluated does not allow.
    /// Conditions see only the current time here; the gateway uses [`TenantPolicy::authorize_call_in`].
    pub fn authorize_call(
        &self,
        user_id: &str,
        server: &str,
        tool: &str,
        arguments: Option<&Map<String, Value>>,
    ) -> Decision {
        self.authorize_call_in(&RequestFacts::unknown(), user_id, server, tool, arguments)
    }

    /// [`TenantPolicy::authorize_call`] for a request with these facts.
    pub fn authorize_call_in(
        &self,
        facts: &RequestFacts<'_>,
        user_id: &str,
        server: &str,
        tool: &str,
        arguments: Option<&Map<String, Value>>,
    ) -> Decision {
        self.decide(facts, user_id, server, tool, Some(arguments))
    }

    fn decide(
        &self,
        facts: &RequestFacts<'_>,
        user_id: &str,
        server: &str,
        tool: &str,
        call: Option<Option<&Map<String, Value>>>,
    ) -> Decision {
        self.verdict(facts, user_id, server, tool, call).decision(server, tool)
    }

    /// Whether `tools/list` shows `tool` of `server` to `user_id`: [`TenantPolicy::authorize_tool`]
    /// without building the words of a refusal (a list hides most tools of a large server).
    pub fn listing(&self, user_id: &str, server: &str, tool: &str) -> Listing {
        self.listing_in(&RequestFacts::unknown(), user_id, server, tool)
    }

    /// [`TenantPolicy::listing`] for a request with these facts (the same decision as a call's).
    pub fn listing_in(&self, facts: &RequestFacts<'_>, user_id: &str, server: &str, tool: &str) -> Listing {
        match self.verdict(facts, user_id, server, tool, None) {
            Verdict::Granted(..) | Verdict::Allowed(..) => Listing::Visible,
            Verdict::KilledServer(_) | Verdict::KilledTool(_) | Verdict::KilledUser(_) => Listing::Suspended,
            Verdict::UnknownUser
            | Verdict::NotGranted
            | Verdict::Denied(..)
            | Verdict::ArgumentsRefused(..)
            | Verdict::ConditionFailed(..) => Listing::Hidden,
        }
    }

    /// The decision, as references into the policy: nothing is allocated until it is put in words.
    fn verdict<'a>(
        &'a self,
        facts: &RequestFacts<'_>,
        user_id: &str,
        server: &str,
        tool: &str,
        call: Option<Option<&Map<String, Value>>>,
    ) -> Verdict<'a> {
        if let Some(reason) = self.killed_servers.get(server) {
            return Verdict::KilledServer(reason);
        }
        if let Some(reason) = self.killed_tools.get(server).and_then(|tools| tools.get(tool)) {
            return Verdict::KilledTool(reason);
        }
        if let Some(reason) = self.killed_users.get(user_id) {
            return Verdict::KilledUser(reason);
        }
        let Some((_, held)) = self.users.get(user_id) else { return Verdict::UnknownUser };
        let Some(&server_id) = self.server_ids.get(server) else { return Verdict::NotGranted };
        // What each of the user's roles grants on this server, in the user's role order (the order
        // the rules of several roles are tried in), looked up once: on the stack for up to eight roles.
        let mut inline: [(&'a str, &'a RoleServer); 8] = [("", &NOTHING); 8];
        let (mut n, mut spill) = (0, Vec::new());
        for &r in held.iter() {
            let role = &self.roles[r as usize];
            if let Some(g) = role.on(server_id) {
                if n == inline.len() {
                    spill.extend_from_slice(&inline);
                }
                match inline.get_mut(n) {
                    Some(slot) => *slot = (role.slug.as_str(), g),
                    None => spill.push((role.slug.as_str(), g)),
                }
                n += 1;
            }
        }
        if n == 0 {
            return Verdict::NotGranted;
        }
        let held: &[(&'a str, &'a RoleServer)] = if n <= inline.len() { &inline[..n] } else { &spill };
        let on = || held.iter().copied();
        // Conditions: a rule without one costs a match on `None`; the user's CEL value is looked up
        // only when a condition is evaluated.
        let user = || self.user_values.get(user_id);
        for rule in on().flat_map(|(_, g)| &g.deny).filter(|r| r.selects(tool)) {
            match rule.condition_holds(user(), facts, server, tool) {
                Ok(true) => return Verdict::Denied(rule, None),
                Ok(false) => {}
                // Fail closed: a deny whose condition cannot be evaluated denies.
                Err(why) => return Verdict::Denied(rule, Some(why)),
            }
        }
        // A grant by name in any role wins over a `*` grant; the first role in order names it.
        let named = self.tool_ids.get(tool).and_then(|&t| on().find_map(|(role, g)| Some((role, g.named(t)?))));
        if let Some((role, rule)) = named.or_else(|| on().find_map(|(role, g)| Some((role, g.all.as_deref()?)))) {
            return Verdict::Granted(role, rule);
        }
        // An allow rule applies when it selects the tool and its condition is true; one whose
        // condition cannot be evaluated does not allow (the first such is named if nothing allows).
        let mut condition_failed: Option<Verdict<'a>> = None;
        let mut applies = |r: &'a CompiledRule| {
            if !r.selects(tool) {
                return false;
            }
            match r.condition_holds(user(), facts, server, tool) {
                Ok(holds) => holds,
                Err(why) => {
                    condition_failed.get_or_insert(Verdict::ConditionFailed(r, why));
                    false
                }
            }
        };
        if let Some(r) = on().flat_map(|(_, g)| &g.allow).find(|r| !r.is_constrained() && applies(r)) {
            return Verdict::Allowed(r, false);
        }
        let mut selecting = on().flat_map(|(_, g)| &g.allow).filter(|r| r.is_constrained() && applies(r));
        let Some(arguments) = call else {
            let first = selecting.next();
            return first
                .map_or_else(|| condition_failed.unwrap_or(Verdict::NotGranted), |r| Verdict::Allowed(r, true));
        };
        let mut first_refusal = None;
        for r in selecting {
            match r.check(arguments) {
                Ok(()) => return Verdict::Allowed(r, false),
                Err(why) => {
                    first_refusal.get_or_insert(Verdict::ArgumentsRefused(r, why));
                }
            }
        }
        first_refusal.or(condition_failed).unwrap_or(Verdict::NotGranted)
    }
}

/// What `tools/list` does with one tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Granted (possibly only with parameter constraints).
    Visible,
    /// Not granted, or denied by a rule (monitor mode lists it anyway).
    Hidden,
    /// Suspended by the kill switch (hidden in every mode).
    Suspended,
}

/// A decision before it is put in words.
enum Verdict<'a> {
    KilledServer(&'a str),
    KilledTool(&'a str),
    KilledUser(&'a str),
    UnknownUser,
    NotGranted,
    /// A deny rule; with the error when its condition could not be evaluated (fail closed).
    Denied(&'a CompiledRule, Option<String>),
    /// Nothing allowed, and an allow rule's condition could not be evaluated.
    ConditionFailed(&'a CompiledRule, String),
    /// A plain grant: role, rule id.
    Granted(&'a str, &'a str),
    /// An allow rule; `true` when allowed only with constraints (listing).
    Allowed(&'a CompiledRule, bool),
    /// The first constrained rule's first broken constraint.
    ArgumentsRefused(&'a CompiledRule, String),
}

impl Verdict<'_> {
    fn decision(self, server: &str, tool: &str) -> Decision {
        let deny = |reason: String, rule: String, kind| Decision::Deny { reason, rule, kind };
        match self {
            Verdict::KilledServer(reason) => deny(
                format!("server '{server}' is suspended by a tenant admin: {reason}"),
                format!("kill:server:{server}"),
                DenyKind::Suspended,
            ),
            Verdict::KilledTool(reason) => deny(
                format!("tool '{tool}' of server '{server}' is suspended by a tenant admin: {reason}"),
                format!("kill:tool:{server}:{tool}"),
                DenyKind::Suspended,
            ),
            Verdict::KilledUser(reason) => deny(
                format!("your access is suspended by a tenant admin: {reason}"),
                "kill:user".into(),
                DenyKind::Suspended,
            ),
            Verdict::UnknownUser => {
                deny("user is not known to this tenant's policy".into(), DEFAULT_DENY.into(), DenyKind::NotGranted)
            }
            Verdict::NotGranted => deny(
                format!(
                    "tool '{tool}' of server '{server}' is not granted to you by any of your access roles; ask a tenant admin to grant it"
                ),
                DEFAULT_DENY.into(),
                DenyKind::NotGranted,
            ),
            Verdict::Denied(rule, condition_error) => {
                let mut why =
                    if rule.description.is_empty() { String::new() } else { format!(": {}", rule.description) };
                if let Some(e) = condition_error {
                    why.push_str(&format!(" (its condition could not be evaluated, so it denies: {e})"));
                }
                deny(
                    format!(
                        "tool '{tool}' of server '{server}' is denied by rule {} of access role '{}'{why}",
                        rule.id, rule.role
                    ),
                    rule.id.clone(),
                    DenyKind::NotGranted,
                )
            }
            Verdict::Granted(role, rule) => {
                Decision::Allow { role: role.to_owned(), rule: rule.to_owned(), constrained: false }
            }
            Verdict::Allowed(r, constrained) => {
                Decision::Allow { role: r.role.clone(), rule: r.id.clone(), constrained }
            }
            Verdict::ConditionFailed(r, why) => deny(
                format!(
                    "tool '{tool}' of server '{server}' is not allowed: rule {} of access role '{}' applies only when its \
                     condition holds, and it could not be evaluated: {why}",
                    r.id, r.role
                ),
                r.id.clone(),
                DenyKind::NotGranted,
            ),
            Verdict::ArgumentsRefused(r, why) => deny(
                format!("tool '{tool}' of server '{server}': {why} (rule {} of access role '{}')", r.id, r.role),
                r.id.clone(),
                DenyKind::Arguments,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gatehouse_core::rules::{AnnotationMatch, Hint, ParamConstraint};
    use serde_json::json;

    use super::*;
    use crate::format::*;

    fn bundle() -> Bundle {
        let mut analyst = BTreeMap::new();
        analyst.insert("everything".to_owned(), vec!["echo".to_owned()]);
        let mut admin = BTreeMap::new();
        admin.insert("everything".to_owned(), vec!["*".to_owned()]);
        let content = Content {
            tenant: "acme".into(),
            users: vec![
                User {
                    id: "u1".into(),
                    email: "a@acme.io".into(),
                    roles: vec!["analyst".into()],
                    groups: vec![],
                    attributes: BTreeMap::new(),
                },
                User {
                    id: "u2".into(),
                    email: "b@acme.io".into(),
                    roles: vec!["admin".into()],
                    groups: vec![],
                    attributes: BTreeMap::new(),
                },
                User {
                    id: "u3".into(),
                    email: "c@acme.io".into(),
                    roles: vec![],
                    groups: vec![],
                    attributes: BTreeMap::new(),
                },
            ],
            tokens: vec![
                Token {
                    sha256: hex::encode(Sha256::digest(b"tok-1")),
                    id: "t1".into(),
                    user_id: "u1".into(),
                    expires_at_ms: None,
                },
                Token {
                    sha256: hex::encode(Sha256::digest(b"tok-old")),
                    id: "t2".into(),
                    user_id: "u1".into(),
                    expires_at_ms: Some(1000),
                },
            ],
            servers: vec![Server {
                slug: "everything".into(),
                url: "http://127.0.0.1:9/mcp".into(),
                labels: vec![],
                transport: Default::default(),
            }],
            roles: vec![
                Role { slug: "analyst".into(), grants: analyst, rules: vec![] },
                Role { slug: "admin".into(), grants: admin, rules: vec![] },
            ],
            virtual_servers: vec![VirtualServer {
                slug: "dev".into(),
                upstreams: vec!["everything".into()],
                mode: PolicyMode::Monitor,
                conflict_strategy: Default::default(),
                prefixes: vec![],
                overrides: vec![],
            }],
            session_keys: vec![
                SessionKey {
                    id: "a-old".into(),
                    key_b64: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into(),
                    created_at_ms: 1,
                },
                SessionKey {
                    id: "b-new".into(),
                    key_b64: "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=".into(),
                    created_at_ms: 2,
                },
                SessionKey { id: "c-short".into(), key_b64: "AAAA".into(), created_at_ms: 3 },
            ],
            classification: vec![],
            kill: KillList::default(),
            rate_limits: vec![],
        };
        Bundle {
            manifest: Manifest {
                schema_version: 1,
                tenant: "acme".into(),
                group: "default".into(),
                revision: content.revision(),
                sequence: 1,
                compiled_at_ms: 0,
                key_id: "k".into(),
            },
            content,
        }
    }

    #[test]
    fn tokens_authenticate_by_hash_and_expire() {
        let p = TenantPolicy::build(&bundle()).unwrap();
        assert_eq!(p.authenticate("tok-1", 5).unwrap().user_id, "u1");
        assert_eq!(p.authenticate("nope", 5), Err(AuthFailure::Unknown));
        assert_eq!(p.authenticate("tok-old", 999).unwrap().token_id, "t2");
        assert_eq!(p.authenticate("tok-old", 1000), Err(AuthFailure::Expired));
    }

    #[test]
    fn grants_by_name_and_wildcard() {
        let p = TenantPolicy::build(&bundle()).unwrap();
        assert_eq!(
            p.authorize_tool("u1", "everything", "echo"),
            Decision::Allow {
                role: "analyst".into(),
                rule: "grant:analyst:everything:echo".into(),
                constrained: false
            }
        );
        assert!(
            matches!(p.authorize_tool("u1", "everything", "get-sum"), Decision::Deny { reason, rule, kind: DenyKind::NotGranted } if reason.contains("get-sum") && rule == DEFAULT_DENY)
        );
        assert_eq!(p.authorize_tool("u2", "everything", "get-sum").rule(), "grant:admin:everything:*");
        assert!(matches!(p.authorize_tool("u2", "other", "echo"), Decision::Deny { .. }));
        assert!(matches!(p.authorize_tool("u3", "everything", "echo"), Decision::Deny { .. }));
        assert!(matches!(p.authorize_tool("ghost", "everything", "echo"), Decision::Deny { .. }));
    }

    /// Users share their roles' tables: which role and grant decide must not depend on that.
    #[test]
    fn several_roles_decide_in_the_users_role_order() {
        let mut b = bundle();
        // u1 holds admin (`*` on everything) before analyst (`echo` by name), a repeat and an unknown role.
        b.content.users[0].roles = vec!["admin".into(), "ghost-role".into(), "analyst".into(), "admin".into()];
        b.content.users[1].roles = vec!["analyst".into(), "admin".into()];
        b.content.roles[0].grants.insert("fs".into(), vec!["write".into(), "read".into(), "write".into()]);
        b.content.roles[1].grants.insert("fs".into(), vec!["read".into()]);
        let p = TenantPolicy::build(&b).unwrap();
        // A grant by name in any role wins over a `*` grant in an earlier one.
        assert_eq!(p.authorize_tool("u1", "everything", "echo").rule(), "grant:analyst:everything:echo");
        assert_eq!(p.authorize_tool("u1", "everything", "get-sum").rule(), "grant:admin:everything:*");
        // Between grants by name, the first role in the user's order names it.
        assert_eq!(p.authorize_tool("u1", "fs", "read").rule(), "grant:admin:fs:read");
        assert_eq!(p.authorize_tool("u2", "fs", "read").rule(), "grant:analyst:fs:read");
        assert_eq!(
            p.authorize_tool("u2", "fs", "write"),
            Decision::Allow { role: "analyst".into(), rule: "grant:analyst:fs:write".into(), constrained: false }
        );
        assert_eq!(p.authorize_tool("u1", "fs", "write").rule(), "grant:analyst:fs:write", "admin does not grant it");
        // A tool no role names, on a server no role covers.
        assert_eq!(p.authorize_tool("u2", "everything", "nope").rule(), "grant:admin:everything:*");
        assert_eq!(p.authorize_tool("u2", "nowhere", "echo").rule(), DEFAULT_DENY);
        assert_eq!(p.listing("u1", "nowhere", "echo"), Listing::Hidden);
    }

    #[test]
    fn a_user_with_many_roles_gets_every_roles_grants_and_rules_in_order() {
        let mut b = bundle();
        let mut slugs = Vec::new();
        for i in 0..12 {
            let mut grants = BTreeMap::new();
            grants.insert("fs".to_owned(), vec![format!("own-{i}"), format!("late-{}", i / 10)]);
            let rules = if i == 11 { vec![rule("r-deny-11", "fs", Effect::Deny, "own-3")] } else { vec![] };
            b.content.roles.push(Role { slug: format!("r{i:02}"), grants, rules });
            slugs.push(format!("r{i:02}"));
        }
        b.content.users[2].roles = slugs;
        let p = TenantPolicy::build(&b).unwrap();
        assert_eq!(p.authorize_tool("u3", "fs", "own-0").rule(), "grant:r00:fs:own-0");
        assert_eq!(p.authorize_tool("u3", "fs", "own-10").rule(), "grant:r10:fs:own-10", "the ninth role and on");
        assert_eq!(p.authorize_tool("u3", "fs", "late-1").rule(), "grant:r10:fs:late-1", "the first that names it");
        assert_eq!(p.authorize_tool("u3", "fs", "own-3").rule(), "r-deny-11", "the twelfth role's deny wins");
        assert_eq!(p.authorize_tool("u3", "fs", "other").rule(), DEFAULT_DENY);
    }

    #[test]
    fn session_keys_are_decoded_newest_first_and_bad_ones_left_out() {
        let p = TenantPolicy::build(&bundle()).unwrap();
        let ids: Vec<&str> = p.session_keys().iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["b-new", "a-old"]);
        assert_eq!(p.session_keys()[1].key, [1u8; 32]);
        assert!(!format!("{:?}", p.session_keys()[0]).contains("2, 2"));
    }

    #[test]
    fn ended_sessions_are_those_initialized_before_the_users_or_the_tenants_cutoff() {
        let mut b = bundle();
        let p = TenantPolicy::build(&b).unwrap();
        assert!(!p.session_ended("u1", 0), "nothing ended");
        b.content.kill.sessions = vec![SessionCutoff { user_id: "u1".into(), not_before_ms: 1_000 }];
        let p = TenantPolicy::build(&b).unwrap();
        assert!(p.session_ended("u1", 999));
        assert!(!p.session_ended("u1", 1_000), "a session initialized at the cutoff lives");
        assert!(!p.session_ended("u2", 999), "another user's sessions live");
        b.content.kill.sessions.push(SessionCutoff { user_id: String::new(), not_before_ms: 500 });
        let p = TenantPolicy::build(&b).unwrap();
        assert!(p.session_ended("u2", 499) && !p.session_ended("u2", 500), "the tenant-wide cutoff");
        assert!(p.session_ended("u1", 800), "the later of the two cutoffs counts");
    }

    #[test]
    fn virtual_servers_resolve_upstream_urls() {
        let p = TenantPolicy::build(&bundle()).unwrap();
        let vs = p.virtual_server("dev").unwrap();
        assert_eq!(vs.upstreams, vec![("everything".to_owned(), "http://127.0.0.1:9/mcp".to_owned())]);
        assert_eq!(vs.mode, PolicyMode::Monitor);
        assert!(p.virtual_server("nope").is_none());
    }

    fn rule(id: &str, server: &str, effect: Effect, tools: &str) -> Rule {
        Rule {
            id: id.into(),
            server: server.into(),
            effect,
            tools: tools.into(),
            only: None,
            annotation: None,
            params: vec![],
            description: String::new(),
            condition: None,
        }
    }

    /// analyst: plain grant of `echo`; rules: allow `get-*`, deny `get-env`, allow `*` read-only
    /// tools (resolved to `list-files`), allow `write` inside /tmp. ops: allow `write` inside /srv.
    fn ruled_bundle() -> Bundle {
        let mut b = bundle();
        let analyst = &mut b.content.roles[0];
        analyst.rules = vec![
            rule("r-glob", "everything", Effect::Allow, "get-*"),
            Rule { description: "leaks secrets".into(), ..rule("r-deny", "everything", Effect::Deny, "get-env") },
            Rule {
                only: Some(vec!["list-files".into()]),
                annotation: Some(AnnotationMatch { hint: Hint::ReadOnly, value: true }),
                ..rule("r-ro", "fs", Effect::Allow, "*")
            },
            Rule {
                params: vec![ParamConstraint {
                    param: "path".into(),
                    path_prefixes: Some(vec!["/tmp".into()]),
                    ..Default::default()
                }],
                ..rule("r-tmp", "fs", Effect::Allow, "write")
            },
        ];
        b.content.roles.push(Role {
            slug: "ops".into(),
            grants: BTreeMap::new(),
            rules: vec![Rule {
                params: vec![ParamConstraint {
                    param: "path".into(),
                    path_prefixes: Some(vec!["/srv".into()]),
                    ..Default::default()
                }],
                ..rule("r-srv", "fs", Effect::Allow, "write")
            }],
        });
        b.content.users[0].roles = vec!["analyst".into(), "ops".into()];
        b
    }

    fn args(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn deny_rules_win_over_globs_and_grants() {
        let mut b = ruled_bundle();
        // Even a plain grant of the denied tool loses to the deny rule.
        b.content.roles[0].grants.get_mut("everything").unwrap().push("get-env".into());
        let p = TenantPolicy::build(&b).unwrap();
        assert_eq!(p.authorize_tool("u1", "everything", "get-sum").rule(), "r-glob");
        let d = p.authorize_call("u1", "everything", "get-env", None);
        assert_eq!(
            d,
            Decision::Deny {
                reason: "tool 'get-env' of server 'everything' is denied by rule r-deny of access role 'analyst': leaks secrets"
                    .into(),
                rule: "r-deny".into(),
                kind: DenyKind::NotGranted,
            }
        );
        assert_eq!(p.authorize_tool("u1", "everything", "get-env").rule(), "r-deny");
        // The glob does not reach other servers or other names.
        assert_eq!(p.authorize_tool("u1", "everything", "xget-sum").rule(), DEFAULT_DENY);
        assert_eq!(p.authorize_tool("u1", "other", "get-sum").rule(), DEFAULT_DENY);
        assert_eq!(p.rule("r-deny").unwrap().role, "analyst");
    }

    /// analyst (u1, in group `oncall`, department `payments`): allow `get-*` only from 10/8; deny
    /// `get-env` outside office hours in Berlin; allow `echo2` only for the `oncall` group with
    /// the app `claude-code`; allow `get-attr` when `clearance` is `high` (u1 has none: an error).
    fn conditional_bundle() -> Bundle {
        let mut b = bundle();
        let cond = |id: &str, effect, tools: &str, c: &str| Rule {
            condition: Some(c.into()),
            ..rule(id, "everything", effect, tools)
        };
        b.content.roles[0].rules = vec![
            cond("c-net", Effect::Allow, "get-*", "inCidr(client.ip, '10.0.0.0/8')"),
            cond(
                "c-hours",
                Effect::Deny,
                "get-env",
                "!(request.time.getDayOfWeek('Europe/Berlin') in [1, 2, 3, 4, 5] && \
                  request.time.getHours('Europe/Berlin') >= 8 && request.time.getHours('Europe/Berlin') < 18)",
            ),
            cond("c-app", Effect::Allow, "echo2", "'oncall' in user.groups && client.app == 'claude-code'"),
            cond("c-attr", Effect::Allow, "get-attr", "user.attributes.clearance == 'high'"),
            cond("c-deny-err", Effect::Deny, "get-secret", "user.attributes.clearance != 'high'"),
        ];
        b.content.users[0].groups = vec!["oncall".into()];
        b.content.users[0].attributes.insert("department".into(), "payments".into());
        b
    }

    // 2026-11-27 is a Friday; 12:30 UTC = 13:30 in Berlin, 20:30 UTC = 21:30.
    const FRIDAY_NOON: i64 = 1_795_782_600_000;
    const FRIDAY_EVENING: i64 = 1_795_811_400_000;
    const SATURDAY_NOON: i64 = FRIDAY_NOON + 86_400_000;

    fn at<'a>(ip: &str, app: &'a str, time_ms: i64) -> RequestFacts<'a> {
        RequestFacts::new(ip.parse().ok(), Some(app), Some(time_ms))
    }

    #[test]
    fn conditions_decide_by_network_time_group_attribute_and_app() {
        let p = TenantPolicy::build(&conditional_bundle()).unwrap();
        let call = |f: &RequestFacts, tool: &str| p.authorize_call_in(f, "u1", "everything", tool, None);
        let office = at("10.1.2.3", "claude-code", FRIDAY_NOON);
        // Network: inside 10/8 the glob allows; outside it nothing does (default-deny).
        assert_eq!(call(&office, "get-sum").rule(), "c-net");
        assert_eq!(call(&at("192.168.1.9", "x", FRIDAY_NOON), "get-sum").rule(), DEFAULT_DENY);
        // tools/list takes the same decision.
        assert_eq!(p.listing_in(&office, "u1", "everything", "get-sum"), Listing::Visible);
        assert_eq!(p.listing_in(&at("192.168.1.9", "x", FRIDAY_NOON), "u1", "everything", "get-sum"), Listing::Hidden);
        // Time: the deny applies outside office hours (Friday 21:30, Saturday 13:30) and wins over
        // the network allow; inside them the allow decides.
        assert_eq!(call(&office, "get-env").rule(), "c-net");
        assert_eq!(call(&at("10.1.2.3", "", FRIDAY_EVENING), "get-env").rule(), "c-hours");
        assert!(!call(&at("10.1.2.3", "", FRIDAY_EVENING), "get-env").is_allow());
        assert_eq!(call(&at("10.1.2.3", "", SATURDAY_NOON), "get-env").rule(), "c-hours");
        // Group and client application together.
        assert_eq!(call(&office, "echo2").rule(), "c-app");
        assert_eq!(call(&at("10.1.2.3", "cursor", FRIDAY_NOON), "echo2").rule(), DEFAULT_DENY);
        assert_eq!(p.authorize_call_in(&office, "u2", "everything", "echo2", None).rule(), "grant:admin:everything:*");
        // A plain grant needs no condition: u1's echo is allowed from anywhere.
        assert_eq!(call(&at("192.168.1.9", "", SATURDAY_NOON), "echo").rule(), "grant:analyst:everything:echo");
    }

    #[test]
    fn conditions_that_cannot_be_evaluated_fail_closed() {
        let p = TenantPolicy::build(&conditional_bundle()).unwrap();
        let office = at("10.1.2.3", "claude-code", FRIDAY_NOON);
        // u1 has no `clearance` attribute: the allow rule does not allow, and says why.
        let d = p.authorize_call_in(&office, "u1", "everything", "get-attr", None);
        assert_eq!(d.rule(), "c-net", "the network rule still allows get-attr");
        let outside = at("192.168.1.9", "x", FRIDAY_NOON);
        let Decision::Deny { reason, rule, kind } = p.authorize_call_in(&outside, "u1", "everything", "get-attr", None)
        else {
            panic!("allowed")
        };
        assert_eq!((rule.as_str(), kind), ("c-attr", DenyKind::NotGranted));
        assert!(reason.contains("could not be evaluated: No such key: clearance"), "{reason}");
        // A deny rule whose condition errors denies, even where an allow applies.
        let Decision::Deny { reason, rule, .. } = p.authorize_call_in(&office, "u1", "everything", "get-secret", None)
        else {
            panic!("allowed")
        };
        assert_eq!(rule, "c-deny-err");
        assert!(reason.contains("its condition could not be evaluated, so it denies"), "{reason}");
        // Without a client address (authorize_call without facts), a network allow does not allow.
        assert_eq!(p.authorize_call("u1", "everything", "get-sum", None).rule(), "c-net");
        assert!(!p.authorize_call("u1", "everything", "get-sum", None).is_allow());
        // A bundle whose condition does not compile is refused.
        let mut bad = conditional_bundle();
        bad.content.roles[0].rules[0].condition = Some("user.nope".into());
        let e = TenantPolicy::build(&bad).unwrap_err();
        assert!(e.0.starts_with("access rule c-net: condition: line 1, column 5: 'user' has no field 'nope'"), "{e}");
    }

    #[test]
    fn annotation_rules_select_only_the_compiled_names() {
        let p = TenantPolicy::build(&ruled_bundle()).unwrap();
        assert!(p.authorize_tool("u1", "fs", "list-files").is_allow());
        assert_eq!(p.authorize_tool("u1", "fs", "delete-files").rule(), DEFAULT_DENY);
    }

    #[test]
    fn parameter_constraints_allow_when_any_constrained_rule_holds() {
        let p = TenantPolicy::build(&ruled_bundle()).unwrap();
        // Listing shows the tool, marked constrained.
        assert_eq!(
            p.authorize_tool("u1", "fs", "write"),
            Decision::Allow { role: "analyst".into(), rule: "r-tmp".into(), constrained: true }
        );
        let call = |path: &str| p.authorize_call("u1", "fs", "write", Some(&args(json!({ "path": path }))));
        assert_eq!(call("/tmp/a").rule(), "r-tmp");
        // ops (the user's second role) allows /srv.
        assert_eq!(call("/srv/x").rule(), "r-srv");
        assert_eq!(
            call("/etc/passwd"),
            Decision::Deny {
                reason: "tool 'write' of server 'fs': parameter 'path' must be a path inside /tmp (rule r-tmp of access role 'analyst')"
                    .into(),
                rule: "r-tmp".into(),
                kind: DenyKind::Arguments,
            }
        );
        assert_eq!(p.authorize_call("u1", "fs", "write", None).rule(), "r-tmp");
        assert!(!p.authorize_call("u1", "fs", "write", None).is_allow());
        // A user without the roles gets the plain refusal.
        assert_eq!(p.authorize_call("u3", "fs", "write", Some(&args(json!({"path": "/tmp/a"})))).rule(), DEFAULT_DENY);
    }

    #[test]
    fn the_kill_switch_wins_over_every_grant() {
        let mut b = bundle();
        b.content.servers.push(Server {
            slug: "other".into(),
            url: "http://127.0.0.1:8/mcp".into(),
            labels: vec![],
            transport: Default::default(),
        });
        b.content.virtual_servers[0].upstreams.push("other".into());
        b.content.kill = KillList {
            users: vec![Killed { id: "u1".into(), reason: "laptop stolen".into() }],
            servers: vec![Killed { id: "other".into(), reason: "CVE-2026-1234".into() }],
            tools: vec![KilledTool { server: "everything".into(), tool: "get-sum".into(), reason: "bad math".into() }],
            sessions: vec![],
        };
        let p = TenantPolicy::build(&b).unwrap();
        assert_eq!(p.authenticate("tok-1", 5), Err(AuthFailure::Suspended("laptop stolen".into())));
        // u2 is admin (every tool of everything), yet the suspended tool is refused.
        let d = p.authorize_call("u2", "everything", "get-sum", None);
        assert_eq!(
            d,
            Decision::Deny {
                reason: "tool 'get-sum' of server 'everything' is suspended by a tenant admin: bad math".into(),
                rule: "kill:tool:everything:get-sum".into(),
                kind: DenyKind::Suspended,
            }
        );
        assert!(p.authorize_tool("u2", "everything", "echo").is_allow(), "other tools stay");
        assert_eq!(p.listing("u2", "everything", "get-sum"), Listing::Suspended);
        assert_eq!(p.listing("u2", "everything", "echo"), Listing::Visible);
        assert_eq!(p.listing("u3", "everything", "echo"), Listing::Hidden, "u3 has no roles");
        assert_eq!(p.authorize_tool("u2", "other", "x").rule(), "kill:server:other");
        // A suspended server is not routed at all; the route says why.
        let vs = p.virtual_server("dev").unwrap();
        assert_eq!(vs.upstreams.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["everything"]);
        assert_eq!(vs.suspended, vec![("other".to_owned(), "CVE-2026-1234".to_owned())]);
        assert_eq!(p.authorize_tool("u1", "everything", "echo").rule(), "kill:user");
    }

    #[test]
    fn rate_limits_match_by_scope_server_and_tool_glob() {
        let mut b = bundle();
        let limit = |id: &str, scope, role: Option<&str>, user: Option<&str>, tool: Option<&str>| RateLimit {
            id: id.into(),
            scope,
            role: role.map(Into::into),
            user: user.map(Into::into),
            server: Some("everything".into()),
            tool: tool.map(Into::into),
            requests: 1,
            per_seconds: 1,
            burst: None,
        };
        b.content.rate_limits = vec![
            limit("all", LimitScope::Tenant, None, None, None),
            limit("analysts", LimitScope::Role, Some("analyst"), None, Some("get-*")),
            limit("bob", LimitScope::User, None, Some("u2"), Some("echo")),
            limit("everyone", LimitScope::User, None, None, Some("*")),
        ];
        let p = TenantPolicy::build(&b).unwrap();
        let ids = |user: &str, server: &str, tool: &str| -> Vec<String> {
            p.rate_limits_for(user, server, tool).map(|l| l.limit.id.clone()).collect()
        };
        assert_eq!(ids("u1", "everything", "get-sum"), ["all", "analysts", "everyone"], "u1 is an analyst");
        assert_eq!(ids("u1", "everything", "echo"), ["all", "everyone"], "the glob does not match echo");
        assert_eq!(ids("u2", "everything", "echo"), ["all", "bob", "everyone"], "u2 is admin, not analyst");
        assert!(ids("u1", "other", "get-sum").is_empty(), "limits name their server");
    }
}
