//! The runtime form of a verified bundle and the decisions the gateway makes with it.
//!
//! Everything here is built once, when a bundle is activated, so that a decision on the request
//! path is a few hash look-ups.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::format::{Bundle, Manifest};

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

/// What one user may do: per upstream server, all tools or a set of tool names.
#[derive(Debug, Clone, Default)]
struct UserGrants {
    /// Servers on which every tool is granted.
    all_tools: HashSet<String>,
    /// (server, tool) pairs granted by name.
    tools: HashSet<(String, String)>,
    /// The roles that grant each (server, tool) or (server, "*"): the first one, for explanations.
    by: HashMap<(String, String), String>,
}

/// A virtual server's routing.
#[derive(Debug, Clone)]
pub struct VirtualServerRoute {
    /// Slug.
    pub slug: String,
    /// Upstreams: (server slug, URL), in configured order.
    pub upstreams: Vec<(String, String)>,
}

/// A policy decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the named role.
    Allow {
        /// The role that granted it.
        role: String,
    },
    /// Denied, with a reason the user can act on.
    Deny {
        /// Why.
        reason: String,
    },
}

/// Why authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No such token.
    Unknown,
    /// The token has expired.
    Expired,
}

/// One tenant's policy, ready for the request path.
#[derive(Debug)]
pub struct TenantPolicy {
    /// The manifest of the bundle it was built from.
    pub manifest: Manifest,
    tokens: HashMap<String, (String, String, Option<i64>)>,
    users: HashMap<String, (String, UserGrants)>,
    virtual_servers: HashMap<String, Arc<VirtualServerRoute>>,
    /// Decoded session keys, newest first (see [`TenantPolicy::session_keys`]).
    session_keys: Vec<SessionKeyMaterial>,
}

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
    pub fn build(bundle: &Bundle) -> Self {
        let c = &bundle.content;
        let roles: HashMap<&str, &crate::format::Role> = c.roles.iter().map(|r| (r.slug.as_str(), r)).collect();
        let mut users = HashMap::new();
        for u in &c.users {
            let mut g = UserGrants::default();
            for role_slug in &u.roles {
                let Some(role) = roles.get(role_slug.as_str()) else { continue };
                for (server, tools) in &role.grants {
                    for tool in tools {
                        if tool == "*" {
                            g.all_tools.insert(server.clone());
                        } else {
                            g.tools.insert((server.clone(), tool.clone()));
                        }
                        g.by.entry((server.clone(), tool.clone())).or_insert_with(|| role_slug.clone());
                    }
                }
            }
            users.insert(u.id.clone(), (u.email.clone(), g));
        }
        let tokens =
            c.tokens.iter().map(|t| (t.sha256.clone(), (t.id.clone(), t.user_id.clone(), t.expires_at_ms))).collect();
        let urls: HashMap<&str, &str> = c.servers.iter().map(|s| (s.slug.as_str(), s.url.as_str())).collect();
        let virtual_servers = c
            .virtual_servers
            .iter()
            .map(|vs| {
                let upstreams = vs
                    .upstreams
                    .iter()
                    .filter_map(|s| urls.get(s.as_str()).map(|u| (s.clone(), (*u).to_owned())))
                    .collect();
                (vs.slug.clone(), Arc::new(VirtualServerRoute { slug: vs.slug.clone(), upstreams }))
            })
            .collect();
        let session_keys = decode_session_keys(&c.session_keys);
        Self { manifest: bundle.manifest.clone(), tokens, users, virtual_servers, session_keys }
    }

    /// The tenant's usable session keys, newest first: the first one seals, every one opens.
    pub fn session_keys(&self) -> &[SessionKeyMaterial] {
        &self.session_keys
    }

    /// Authenticates a bearer token at time `now_ms`.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<Principal, AuthFailure> {
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        let (token_id, user_id, expires) = self.tokens.get(&digest).ok_or(AuthFailure::Unknown)?;
        if expires.is_some_and(|e| now_ms >= e) {
            return Err(AuthFailure::Expired);
        }
        let (email, _) = self.users.get(user_id).ok_or(AuthFailure::Unknown)?;
        Ok(Principal { user_id: user_id.clone(), email: email.clone(), token_id: token_id.clone() })
    }

    /// The virtual server with this slug.
    pub fn virtual_server(&self, slug: &str) -> Option<Arc<VirtualServerRoute>> {
        self.virtual_servers.get(slug).cloned()
    }

    /// May `user_id` call `tool` on upstream `server`?
    pub fn authorize_tool(&self, user_id: &str, server: &str, tool: &str) -> Decision {
        let Some((_, g)) = self.users.get(user_id) else {
            return Decision::Deny { reason: "user is not known to this tenant's policy".into() };
        };
        let key = (server.to_owned(), tool.to_owned());
        if g.tools.contains(&key) {
            return Decision::Allow { role: g.by[&key].clone() };
        }
        if g.all_tools.contains(server) {
            return Decision::Allow { role: g.by[&(server.to_owned(), "*".to_owned())].clone() };
        }
        Decision::Deny {
            reason: format!(
                "tool '{tool}' of server '{server}' is not granted to you by any of your access roles; ask a tenant admin to grant it"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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
                User { id: "u1".into(), email: "a@acme.io".into(), roles: vec!["analyst".into()] },
                User { id: "u2".into(), email: "b@acme.io".into(), roles: vec!["admin".into()] },
                User { id: "u3".into(), email: "c@acme.io".into(), roles: vec![] },
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
            servers: vec![Server { slug: "everything".into(), url: "http://127.0.0.1:9/mcp".into() }],
            roles: vec![Role { slug: "analyst".into(), grants: analyst }, Role { slug: "admin".into(), grants: admin }],
            virtual_servers: vec![VirtualServer { slug: "dev".into(), upstreams: vec!["everything".into()] }],
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
        let p = TenantPolicy::build(&bundle());
        assert_eq!(p.authenticate("tok-1", 5).unwrap().user_id, "u1");
        assert_eq!(p.authenticate("nope", 5), Err(AuthFailure::Unknown));
        assert_eq!(p.authenticate("tok-old", 999).unwrap().token_id, "t2");
        assert_eq!(p.authenticate("tok-old", 1000), Err(AuthFailure::Expired));
    }

    #[test]
    fn grants_by_name_and_wildcard() {
        let p = TenantPolicy::build(&bundle());
        assert_eq!(p.authorize_tool("u1", "everything", "echo"), Decision::Allow { role: "analyst".into() });
        assert!(
            matches!(p.authorize_tool("u1", "everything", "get-sum"), Decision::Deny { reason } if reason.contains("get-sum"))
        );
        assert_eq!(p.authorize_tool("u2", "everything", "get-sum"), Decision::Allow { role: "admin".into() });
        assert!(matches!(p.authorize_tool("u2", "other", "echo"), Decision::Deny { .. }));
        assert!(matches!(p.authorize_tool("u3", "everything", "echo"), Decision::Deny { .. }));
        assert!(matches!(p.authorize_tool("ghost", "everything", "echo"), Decision::Deny { .. }));
    }

    #[test]
    fn session_keys_are_decoded_newest_first_and_bad_ones_left_out() {
        let p = TenantPolicy::build(&bundle());
        let ids: Vec<&str> = p.session_keys().iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["b-new", "a-old"]);
        assert_eq!(p.session_keys()[1].key, [1u8; 32]);
        assert!(!format!("{:?}", p.session_keys()[0]).contains("2, 2"));
    }

    #[test]
    fn virtual_servers_resolve_upstream_urls() {
        let p = TenantPolicy::build(&bundle());
        let vs = p.virtual_server("dev").unwrap();
        assert_eq!(vs.upstreams, vec![("everything".to_owned(), "http://127.0.0.1:9/mcp".to_owned())]);
        assert!(p.virtual_server("nope").is_none());
    }
}
