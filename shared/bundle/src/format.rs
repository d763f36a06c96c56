//! Bundle content and manifest.
//!
//! Canonical bytes are the compact `serde_json` encoding of these structs. That encoding is
//! deterministic here because every struct serialises its fields in declaration order, maps are
//! `BTreeMap`s, and the compiler sorts every list by its key before building the bundle
//! ([`Content::normalize`]). The revision is the SHA-256 of the content's canonical bytes, so every
//! control-plane replica that compiles the same state gets the same revision.

use std::collections::BTreeMap;

use gatehouse_core::limits::LimitScope;
use gatehouse_core::rules::{AnnotationMatch, Effect, ParamConstraint, PolicyMode};
use gatehouse_core::shaping::{ConflictStrategy, ToolOverride, UpstreamPrefix};

pub use crate::classify::ClassificationRule;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the bundle schema; a worker refuses bundles of a schema it does not know.
///
/// 2 added [`Content::session_keys`] (issue 3). A worker of schema 1 would parse such content without
/// the keys and then find that its revision does not match, so the number says it plainly instead.
/// 3 added [`Role::rules`], [`VirtualServer::mode`], [`Server::labels`],
/// [`Content::classification`], [`Content::kill`] and [`Content::rate_limits`] (issue 4).
pub const SCHEMA_VERSION: u32 = 3;

/// A whole bundle: manifest plus content. This is what gets signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    /// Identity and ordering of this bundle.
    pub manifest: Manifest,
    /// The tenant's compiled state.
    pub content: Content,
}

/// Identity and ordering of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SCHEMA_VERSION`] at compile time.
    pub schema_version: u32,
    /// Tenant slug.
    pub tenant: String,
    /// Gateway group the bundle is for.
    pub group: String,
    /// Hex SHA-256 of the content's canonical bytes.
    pub revision: String,
    /// Monotonic per tenant (across gateway groups, so a tenant that moves never goes back): a worker
    /// refuses a sequence lower than the one it holds.
    pub sequence: u64,
    /// Unix milliseconds when this revision was first compiled (informational).
    pub compiled_at_ms: i64,
    /// Id of the key that signed it.
    pub key_id: String,
}

/// One tenant's compiled state. Every list is sorted by its key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// Tenant slug.
    pub tenant: String,
    /// Users who may call the gateway.
    pub users: Vec<User>,
    /// API tokens, by the hex SHA-256 of the token (the token itself never leaves the control plane).
    pub tokens: Vec<Token>,
    /// Upstream MCP servers.
    pub servers: Vec<Server>,
    /// Access roles and their grants.
    pub roles: Vec<Role>,
    /// Virtual servers: the endpoints clients connect to.
    pub virtual_servers: Vec<VirtualServer>,
    /// Keys that seal and open the client-facing `Mcp-Session-Id` (stateless sessions), sorted by id.
    /// The newest (highest `created_at_ms`, then id) seals; every listed key opens. The bundle is
    /// signed, not encrypted: these keys are as secret as the channel and the disk copy that carry it.
    pub session_keys: Vec<SessionKey>,
    /// Data-classification rules, sorted by id, each naming the server slugs it applies to (labels
    /// already resolved; an empty list means every server).
    pub classification: Vec<ClassificationRule>,
    /// The kill switch: suspended users, servers and tools.
    pub kill: KillList,
    /// Rate limits on `tools/call`, sorted by id.
    pub rate_limits: Vec<RateLimit>,
}

/// A rate limit (token bucket) on `tools/call`; see `gatehouse_core::limits` for the scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Stable id, named by a refusal.
    pub id: String,
    /// Whose bucket: the tenant's, each holder's of `role`, or each user's (or `user`'s only).
    pub scope: LimitScope,
    /// Role slug (scope `role`).
    pub role: Option<String>,
    /// One user's id (scope `user`), or every user.
    pub user: Option<String>,
    /// Server slug, or every server.
    pub server: Option<String>,
    /// Tool name or glob, or every tool.
    pub tool: Option<String>,
    /// Requests per window.
    pub requests: u32,
    /// Window, seconds.
    pub per_seconds: u32,
    /// Bucket size (`None`: `requests`).
    pub burst: Option<u32>,
}

/// What a tenant admin has suspended. Enforced before any grant or rule, in every policy mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillList {
    /// Suspended users, by user id, sorted.
    pub users: Vec<Killed>,
    /// Suspended servers, by slug, sorted.
    pub servers: Vec<Killed>,
    /// Suspended tools, sorted by server then tool.
    pub tools: Vec<KilledTool>,
    /// Ended sessions: sessions initialized before a cutoff are refused, sorted by user id (`""`,
    /// every user of the tenant, first). Left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionCutoff>,
}

/// Sessions of `user_id` (or, for `""`, of every user) initialized before `not_before_ms` are ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCutoff {
    /// User id, or `""` for the whole tenant.
    pub user_id: String,
    /// Unix milliseconds: sessions sealed earlier are refused.
    pub not_before_ms: i64,
}

/// A suspended user (id) or server (slug), with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Killed {
    /// User id or server slug.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// A suspended tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KilledTool {
    /// Server slug.
    pub server: String,
    /// Tool name as the upstream names it.
    pub tool: String,
    /// Why.
    pub reason: String,
}

/// How long a sealed MCP session lives after `initialize` (workers refuse it afterwards); the
/// overlap a retired session key needs so that no live session loses its key.
pub const SESSION_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;

/// A session sealing key (XChaCha20-Poly1305, 256 bits).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionKey {
    /// Short id, carried in every token it seals (at most 255 bytes; the control plane uses 8 hex digits).
    pub id: String,
    /// The 32 key bytes, standard base64.
    pub key_b64: String,
    /// Unix milliseconds when the control plane created it: the newest key seals.
    pub created_at_ms: i64,
}

// Hand-written so the key never reaches a log line.
impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey")
            .field("id", &self.id)
            .field("key_b64", &"<redacted>")
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// A user the gateway can authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id.
    pub id: String,
    /// E-mail, for audit.
    pub email: String,
    /// Slugs of the access roles bound to this user, directly or through a group, sorted.
    pub roles: Vec<String>,
    /// Slugs of the user's groups, sorted (`user.groups` in conditions). Left out when empty, so
    /// the bytes of a tenant without groups are what they were before groups existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The user's attributes (`user.attributes` in conditions). Left out when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// An API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Hex SHA-256 of the token string.
    pub sha256: String,
    /// Token id (for audit and revocation).
    pub id: String,
    /// The user it authenticates.
    pub user_id: String,
    /// Unix milliseconds after which it is refused; `None` never expires.
    pub expires_at_ms: Option<i64>,
}

/// An upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// Slug, unique in the tenant.
    pub slug: String,
    /// The Streamable HTTP endpoint, or the SSE URL of a legacy HTTP+SSE server; empty for a stdio
    /// server.
    pub url: String,
    /// Labels (e.g. `PCI`, `PII`, `eu`), sorted.
    pub labels: Vec<String>,
    /// How the worker reaches it. Left out of the canonical bytes when it is Streamable HTTP, so
    /// bundles (and revisions) of HTTP-only tenants are unchanged and old bundles still parse
    /// (`docs/decisions/0016-stdio-and-sse-upstreams.md`).
    #[serde(default, skip_serializing_if = "Transport::is_streamable_http")]
    pub transport: Transport,
}

/// The transport of an upstream server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Transport {
    /// Streamable HTTP at [`Server::url`] (2025-03-26 and later).
    #[default]
    StreamableHttp,
    /// The legacy HTTP+SSE transport (2024-11-05): [`Server::url`] is the SSE URL.
    Sse,
    /// A local process the worker launches, speaking newline-delimited JSON-RPC on stdin/stdout.
    /// Only commands on the worker's `stdio_commands` allow-list are ever launched.
    Stdio(StdioCommand),
}

impl Transport {
    /// True for the default transport.
    pub fn is_streamable_http(&self) -> bool {
        matches!(self, Transport::StreamableHttp)
    }

    /// `streamableHttp`, `sse` or `stdio`.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::StreamableHttp => "streamableHttp",
            Transport::Sse => "sse",
            Transport::Stdio(_) => "stdio",
        }
    }
}

/// The command line and environment of a stdio server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioCommand {
    /// The program: a bare name looked up on the child's `PATH`, or an absolute path.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables set for the child, on top of a minimal `PATH` and `HOME` (never the
    /// worker's own environment). Not secret: bundles are readable by tenant administrators.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// An access role and what it grants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    /// Slug, unique in the tenant.
    pub slug: String,
    /// Tools granted, by server slug. `"*"` in the list grants every tool of that server.
    pub grants: BTreeMap<String, Vec<String>>,
    /// Rules beyond plain grants, sorted by id.
    pub rules: Vec<Rule>,
}

/// An access rule, compiled: annotation selectors are resolved to tool names against the tool
/// definitions the control plane last fetched (so an upstream cannot grant itself access by
/// changing its annotations), globs stay globs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Stable id (named by every decision the rule makes).
    pub id: String,
    /// Server slug.
    pub server: String,
    /// Allow or deny.
    pub effect: Effect,
    /// Tool name or glob.
    pub tools: String,
    /// When the rule selects by annotation: the tool names that had it at compile time (sorted);
    /// the rule then selects a tool only if it is listed here and matches `tools`.
    pub only: Option<Vec<String>>,
    /// The annotation selector as written (for explanations; `only` is what decides).
    pub annotation: Option<AnnotationMatch>,
    /// Parameter constraints (allow rules).
    pub params: Vec<ParamConstraint>,
    /// Why the rule exists.
    pub description: String,
    /// CEL condition: the rule applies only when it is true (`crate::conditions`). Left out when
    /// absent; a worker that does not know the field refuses a bundle that has one (its revision
    /// would not match), so it never drops a condition silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A virtual server: one client-facing endpoint over one or more upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualServer {
    /// Slug, unique in the tenant: the last path segment of `/mcp/{tenant}/{slug}`.
    pub slug: String,
    /// Upstream server slugs, in the order the virtual server lists them.
    pub upstreams: Vec<String>,
    /// Whether refusals are enforced or only audited as `would_deny`.
    pub mode: PolicyMode,
    /// How a tool or prompt name several upstreams use is resolved (`auto`, the default, is left out).
    /// The shaping fields are left out when unset, so unshaped virtual servers keep their bytes; a
    /// worker that does not know them refuses a bundle that has them (its revision would not
    /// match), so it never serves a shaped server unshaped (a fixed parameter not injected).
    #[serde(default, skip_serializing_if = "ConflictStrategy::is_default")]
    pub conflict_strategy: ConflictStrategy,
    /// Upstream prefixes other than the slug, sorted by server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<UpstreamPrefix>,
    /// Per-tool overrides, sorted by server then tool, each normalized.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<ToolOverride>,
}

impl Content {
    /// Sorts every list by its key, so equal states give equal bytes.
    pub fn normalize(&mut self) {
        self.users.sort_by(|a, b| a.id.cmp(&b.id));
        for u in &mut self.users {
            u.roles.sort();
            u.roles.dedup();
            u.groups.sort();
            u.groups.dedup();
        }
        self.tokens.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        self.servers.sort_by(|a, b| a.slug.cmp(&b.slug));
        self.roles.sort_by(|a, b| a.slug.cmp(&b.slug));
        for r in &mut self.roles {
            for tools in r.grants.values_mut() {
                tools.sort();
                tools.dedup();
            }
            r.rules.sort_by(|a, b| a.id.cmp(&b.id));
            for rule in &mut r.rules {
                if let Some(only) = &mut rule.only {
                    only.sort();
                    only.dedup();
                }
            }
        }
        self.virtual_servers.sort_by(|a, b| a.slug.cmp(&b.slug));
        for vs in &mut self.virtual_servers {
            vs.prefixes.sort_by(|a, b| a.server.cmp(&b.server));
            for o in &mut vs.overrides {
                o.normalize();
            }
            vs.overrides.sort_by(|a, b| (&a.server, &a.tool).cmp(&(&b.server, &b.tool)));
        }
        self.session_keys.sort_by(|a, b| a.id.cmp(&b.id));
        for s in &mut self.servers {
            s.labels.sort();
            s.labels.dedup();
        }
        self.classification.sort_by(|a, b| a.id.cmp(&b.id));
        self.kill.users.sort_by(|a, b| a.id.cmp(&b.id));
        self.kill.servers.sort_by(|a, b| a.id.cmp(&b.id));
        self.kill.tools.sort_by(|a, b| (&a.server, &a.tool).cmp(&(&b.server, &b.tool)));
        self.kill.sessions.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        self.rate_limits.sort_by(|a, b| a.id.cmp(&b.id));
        for c in &mut self.classification {
            c.servers.sort();
            c.servers.dedup();
        }
    }

    /// The canonical bytes of the content.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("bundle content always serialises")
    }

    /// The revision: hex SHA-256 of the canonical bytes.
    pub fn revision(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Content {
        let mut grants = BTreeMap::new();
        grants.insert("everything".to_owned(), vec!["get-sum".to_owned(), "echo".to_owned()]);
        Content {
            tenant: "acme".into(),
            users: vec![
                User {
                    id: "u2".into(),
                    email: "b@x.io".into(),
                    roles: vec!["r".into()],
                    groups: vec![],
                    attributes: BTreeMap::new(),
                },
                User {
                    id: "u1".into(),
                    email: "a@x.io".into(),
                    roles: vec![],
                    groups: vec![],
                    attributes: BTreeMap::new(),
                },
            ],
            tokens: vec![],
            servers: vec![Server {
                slug: "everything".into(),
                url: "http://127.0.0.1:1/mcp".into(),
                labels: vec![],
                transport: Transport::default(),
            }],
            roles: vec![Role { slug: "r".into(), grants, rules: vec![] }],
            virtual_servers: vec![VirtualServer {
                slug: "dev".into(),
                upstreams: vec!["everything".into()],
                mode: PolicyMode::Enforce,
                conflict_strategy: Default::default(),
                prefixes: vec![],
                overrides: vec![],
            }],
            session_keys: vec![SessionKey { id: "k1".into(), key_b64: "AA==".into(), created_at_ms: 1 }],
            classification: vec![],
            kill: KillList::default(),
            rate_limits: vec![],
        }
    }

    #[test]
    fn normalized_order_does_not_depend_on_input_order() {
        let mut a = sample();
        let mut b = sample();
        b.users.reverse();
        a.normalize();
        b.normalize();
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        assert_eq!(a.revision(), b.revision());
        assert_eq!(a.roles[0].grants["everything"], vec!["echo".to_owned(), "get-sum".to_owned()]);
    }

    #[test]
    fn streamable_http_servers_serialise_as_before_and_others_carry_their_transport() {
        let http = serde_json::to_value(&sample().servers[0]).unwrap();
        assert_eq!(http, serde_json::json!({"slug": "everything", "url": "http://127.0.0.1:1/mcp", "labels": []}));
        let old: Server = serde_json::from_value(http).unwrap();
        assert_eq!(old.transport, Transport::StreamableHttp);
        let stdio = Server {
            slug: "files".into(),
            url: String::new(),
            labels: vec![],
            transport: Transport::Stdio(StdioCommand {
                command: "node".into(),
                args: vec!["server.js".into(), "stdio".into()],
                env: BTreeMap::from([("LOG".to_owned(), "1".to_owned())]),
            }),
        };
        let json = serde_json::to_value(&stdio).unwrap();
        assert_eq!(json["transport"]["kind"], "stdio");
        assert_eq!(json["transport"]["args"][1], "stdio");
        assert_eq!(serde_json::from_value::<Server>(json).unwrap(), stdio);
        let sse: Server =
            serde_json::from_str(r#"{"slug":"s","url":"http://h/sse","labels":[],"transport":{"kind":"sse"}}"#)
                .unwrap();
        assert_eq!(sse.transport.kind(), "sse");
    }

    #[test]
    fn any_change_changes_the_revision() {
        let mut a = sample();
        a.normalize();
        let mut b = a.clone();
        b.roles[0].grants.get_mut("everything").unwrap().push("zzz".into());
        b.normalize();
        assert_ne!(a.revision(), b.revision());
    }
}
