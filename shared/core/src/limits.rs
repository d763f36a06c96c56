//! Rate limits: how many tool calls a tenant, the holders of a role, or a user may make in a window.
//!
//! A limit is a token bucket. `requests` per `perSeconds` is the rate at which the bucket refills;
//! `burst` (default: `requests`) is its size, i.e. how many calls may come back to back after a
//! quiet spell. A call that finds the bucket empty is refused with the time after which a retry
//! can succeed (HTTP `Retry-After`, in whole seconds).
//!
//! What an administrator reads, per [`LimitScope`]:
//! - **Tenant**: one bucket for the whole tenant. "All users of acme together may call `search`
//!   100 times a minute."
//! - **Role**: one bucket *per user*, for every user who holds the named role. "Each contractor may
//!   call `deploy` 10 times an hour." It is a per-person allowance that follows the role, not a
//!   pool the role's holders share (for a shared pool, use a tenant limit on the same tools).
//! - **User**: one bucket per user. Without `user` the limit applies to every user of the tenant,
//!   each on their own ("everyone may make 600 calls a minute"); with `user` (an e-mail) it applies
//!   to that one user only.
//!
//! Which calls count: `tools/call` of a tool the limit selects (`server`, `tool`; unset means every
//! server, every tool). One bucket serves every tool a limit selects: `tool: "read_*"` with 100 per
//! minute means 100 read calls a minute in total, not 100 for each read tool.
//!
//! How limits combine: every limit that applies to a call is checked, and the call goes through
//! only if each of them has room. A limit therefore only ever restricts; a named-user limit does
//! not raise an every-user limit. A refused call takes nothing from the limits that had room.
//!
//! The shapes travel through GraphQL, the console and the bundle; [`validate_limit`] is the one
//! check every path runs before a limit is stored. Counting lives in the gateway worker.

use serde::{Deserialize, Serialize};

#[cfg(feature = "graphql")]
use async_graphql::{Enum, InputObject, SimpleObject};

use crate::error::GatehouseError;
use crate::ids::{validate_email, validate_slug};

/// Most calls a limit may allow per window.
pub const MAX_REQUESTS: u32 = 1_000_000;
/// Longest window, in seconds (one day).
pub const MAX_PER_SECONDS: u32 = 86_400;
/// The burst may be at most this many times `requests`.
pub const MAX_BURST_FACTOR: u32 = 10;
/// Longest tool selector accepted (the same bound as access rules).
pub const MAX_TOOL_SELECTOR_LEN: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// Whom a limit's bucket counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// One bucket for the whole tenant: every user's calls count against it together.
    Tenant,
    /// One bucket per user, for each user holding the limit's `role`.
    Role,
    /// One bucket per user: every user of the tenant, or only the limit's `user`.
    User,
}

impl LimitScope {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Tenant => "tenant",
            LimitScope::Role => "role",
            LimitScope::User => "user",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(LimitScope::Tenant),
            "role" => Some(LimitScope::Role),
            "user" => Some(LimitScope::User),
            _ => None,
        }
    }

    /// Whether each user gets a bucket of their own (`Role`, `User`) rather than sharing the
    /// tenant's one (`Tenant`).
    pub fn per_user(self) -> bool {
        !matches!(self, LimitScope::Tenant)
    }
}

/// A rate limit as an administrator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(InputObject))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitInput {
    /// Whom the bucket counts for.
    pub scope: LimitScope,
    /// The role slug whose holders the limit applies to (required for, and only for, `role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// For `user` scope: the e-mail of the one user it applies to; unset applies it to every user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The server slug whose tools it counts; unset counts every server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Tool name, or a glob (`*` any run of characters, `?` one character); unset counts every tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Calls allowed per window: with `perSeconds`, the rate at which the bucket refills.
    pub requests: u32,
    /// The window, in seconds.
    pub per_seconds: u32,
    /// The bucket's size: calls that may come back to back after a quiet spell. Default `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Why the limit exists; shown with every refusal it causes.
    #[serde(default)]
    #[cfg_attr(feature = "graphql", graphql(default))]
    pub description: String,
}

impl RateLimitInput {
    /// The bucket's size: `burst`, or `requests` when unset.
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests)
    }
}

/// A stored rate limit of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitView {
    /// Stable id; every refusal names it.
    pub id: String,
    /// Whom the bucket counts for.
    pub scope: LimitScope,
    /// The role slug (`role` scope).
    pub role: Option<String>,
    /// The one user's e-mail (`user` scope), or unset for every user.
    pub user: Option<String>,
    /// The server slug, or unset for every server.
    pub server: Option<String>,
    /// Tool name or glob, or unset for every tool.
    pub tool: Option<String>,
    /// Calls allowed per window.
    pub requests: u32,
    /// The window, in seconds.
    pub per_seconds: u32,
    /// The bucket's size as written (unset means `requests`).
    pub burst: Option<u32>,
    /// Why the limit exists.
    pub description: String,
    /// Created at.
    pub created_at_ms: i64,
}

impl RateLimitView {
    /// The bucket's size: `burst`, or `requests` when unset.
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests)
    }
}

/// A limit that cannot be saved: which field (as named in GraphQL and JSON), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    /// The offending field, e.g. `perSeconds`.
    pub field: &'static str,
    /// What is wrong, in words an administrator can act on.
    pub message: String,
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for LimitError {}

impl From<LimitError> for GatehouseError {
    fn from(e: LimitError) -> Self {
        GatehouseError::invalid(e.field, e.message)
    }
}

fn bad(field: &'static str, message: impl Into<String>) -> LimitError {
    LimitError { field, message: message.into() }
}

/// Runs one of the `ids` checks, keeping only its reason (they prefix the field name themselves).
fn check_id(
    field: &'static str,
    value: &str,
    check: fn(&str, &str) -> Result<(), GatehouseError>,
) -> Result<(), LimitError> {
    check(field, value).map_err(|e| {
        let prefix = format!("{field}: ");
        bad(field, e.message.strip_prefix(&prefix).unwrap_or(&e.message))
    })
}

/// Checks a limit before it is saved: the numbers are in range, the scope's fields are set exactly
/// when the scope uses them, and names look like names. Whether the role, user and server exist is
/// for the caller to check against the tenant.
pub fn validate_limit(limit: &RateLimitInput) -> Result<(), LimitError> {
    if !(1..=MAX_REQUESTS).contains(&limit.requests) {
        return Err(bad("requests", format!("allow 1 to {MAX_REQUESTS} calls per window")));
    }
    if !(1..=MAX_PER_SECONDS).contains(&limit.per_seconds) {
        return Err(bad("perSeconds", format!("the window is 1 to {MAX_PER_SECONDS} seconds (one day)")));
    }
    if let Some(burst) = limit.burst {
        let most = limit.requests.saturating_mul(MAX_BURST_FACTOR);
        if burst == 0 {
            return Err(bad("burst", "must be at least 1 (no call could ever pass); leave it unset for `requests`"));
        }
        if burst > most {
            return Err(bad(
                "burst",
                format!("at most {MAX_BURST_FACTOR} × requests ({most}); raise `requests` for a higher rate instead"),
            ));
        }
    }
    match (limit.scope, &limit.role) {
        (LimitScope::Role, None) => return Err(bad("role", "name the role whose holders this limit applies to")),
        (LimitScope::Role, Some(role)) => check_id("role", role, validate_slug)?,
        (scope, Some(_)) => {
            return Err(bad(
                "role",
                format!("only a `role` limit names a role (this one is `{}`); use scope `role`", scope.as_str()),
            ));
        }
        (_, None) => {}
    }
    match (limit.scope, &limit.user) {
        (LimitScope::User, Some(user)) => check_id("user", user, validate_email)?,
        (scope, Some(_)) => {
            return Err(bad(
                "user",
                format!("only a `user` limit names a user (this one is `{}`); use scope `user`", scope.as_str()),
            ));
        }
        (_, None) => {}
    }
    if let Some(server) = &limit.server {
        check_id("server", server, validate_slug)?;
    }
    if let Some(tool) = &limit.tool {
        if tool.trim().is_empty() {
            return Err(bad("tool", "name a tool or a glob such as `read_*`, or leave it unset for every tool"));
        }
        if tool.trim() != tool {
            return Err(bad("tool", "remove the spaces around the tool selector"));
        }
        if tool.len() > MAX_TOOL_SELECTOR_LEN {
            return Err(bad("tool", format!("at most {MAX_TOOL_SELECTOR_LEN} characters")));
        }
        if tool.chars().any(char::is_control) {
            return Err(bad("tool", "control characters are not allowed"));
        }
    }
    if limit.description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(bad("description", format!("at most {MAX_DESCRIPTION_CHARS} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(scope: LimitScope) -> RateLimitInput {
        RateLimitInput {
            scope,
            role: None,
            user: None,
            server: None,
            tool: None,
            requests: 60,
            per_seconds: 60,
            burst: None,
            description: String::new(),
        }
    }

    fn field_of(l: &RateLimitInput) -> &'static str {
        validate_limit(l).expect_err("should be refused").field
    }

    #[test]
    fn valid_limits_of_every_scope() {
        assert_eq!(validate_limit(&limit(LimitScope::Tenant)), Ok(()));
        assert_eq!(validate_limit(&limit(LimitScope::User)), Ok(()), "every user");
        let alice = RateLimitInput { user: Some("alice@example.com".into()), ..limit(LimitScope::User) };
        assert_eq!(validate_limit(&alice), Ok(()));
        let role = RateLimitInput {
            role: Some("contractors".into()),
            server: Some("github".into()),
            tool: Some("create_*".into()),
            requests: 10,
            per_seconds: 3600,
            burst: Some(2),
            description: "deploys are expensive".into(),
            ..limit(LimitScope::Role)
        };
        assert_eq!(validate_limit(&role), Ok(()));
        let tool_everywhere = RateLimitInput { tool: Some("search".into()), ..limit(LimitScope::Tenant) };
        assert_eq!(validate_limit(&tool_everywhere), Ok(()), "a tool selector without a server spans servers");
    }

    #[test]
    fn numbers_are_bounded() {
        let base = limit(LimitScope::Tenant);
        for (requests, ok) in [(0, false), (1, true), (MAX_REQUESTS, true), (MAX_REQUESTS + 1, false)] {
            let l = RateLimitInput { requests, ..base.clone() };
            assert_eq!(validate_limit(&l).is_ok(), ok, "requests {requests}");
            if !ok {
                assert_eq!(field_of(&l), "requests");
            }
        }
        for (per_seconds, ok) in [(0, false), (1, true), (MAX_PER_SECONDS, true), (MAX_PER_SECONDS + 1, false)] {
            let l = RateLimitInput { per_seconds, ..base.clone() };
            assert_eq!(validate_limit(&l).is_ok(), ok, "perSeconds {per_seconds}");
            if !ok {
                assert_eq!(field_of(&l), "perSeconds");
            }
        }
        // requests = 60: the burst may be 1 ..= 600, and smaller than requests (smoothing).
        for (burst, ok) in [(0, false), (1, true), (60, true), (600, true), (601, false)] {
            let l = RateLimitInput { burst: Some(burst), ..base.clone() };
            assert_eq!(validate_limit(&l).is_ok(), ok, "burst {burst}");
            if !ok {
                assert_eq!(field_of(&l), "burst");
            }
        }
        // No overflow at the top of the range.
        let top = RateLimitInput { requests: MAX_REQUESTS, burst: Some(MAX_REQUESTS * 10), ..base };
        assert_eq!(validate_limit(&top), Ok(()));
    }

    #[test]
    fn role_is_required_exactly_for_role_scope() {
        assert_eq!(field_of(&limit(LimitScope::Role)), "role");
        for scope in [LimitScope::Tenant, LimitScope::User] {
            let l = RateLimitInput { role: Some("dev".into()), ..limit(scope) };
            let err = validate_limit(&l).unwrap_err();
            assert_eq!(err.field, "role");
            assert!(err.message.contains("scope `role`"), "{err}");
        }
        let bad_slug = RateLimitInput { role: Some("Dev Team".into()), ..limit(LimitScope::Role) };
        let err = validate_limit(&bad_slug).unwrap_err();
        assert_eq!(err.field, "role");
        assert!(!err.message.starts_with("role:"), "the reason is not prefixed twice: {err}");
        assert_eq!(err.to_string(), format!("role: {}", err.message));
    }

    #[test]
    fn user_is_only_for_user_scope_and_is_an_email() {
        let tenant = RateLimitInput { user: Some("a@b.io".into()), ..limit(LimitScope::Tenant) };
        assert_eq!(field_of(&tenant), "user");
        let role = RateLimitInput { role: Some("dev".into()), user: Some("a@b.io".into()), ..limit(LimitScope::Role) };
        assert_eq!(field_of(&role), "user");
        let not_email = RateLimitInput { user: Some("alice".into()), ..limit(LimitScope::User) };
        assert_eq!(field_of(&not_email), "user");
    }

    #[test]
    fn selectors_and_description() {
        let base = limit(LimitScope::Tenant);
        assert_eq!(field_of(&RateLimitInput { server: Some("Not A Slug".into()), ..base.clone() }), "server");
        for tool in ["", "  ", " read_*", "a\u{7}b", &"x".repeat(MAX_TOOL_SELECTOR_LEN + 1)] {
            assert_eq!(field_of(&RateLimitInput { tool: Some(tool.into()), ..base.clone() }), "tool", "{tool:?}");
        }
        let long = "é".repeat(MAX_DESCRIPTION_CHARS);
        assert_eq!(validate_limit(&RateLimitInput { description: long.clone(), ..base.clone() }), Ok(()));
        let longer = format!("{long}é");
        assert_eq!(field_of(&RateLimitInput { description: longer, ..base }), "description");
    }

    #[test]
    fn errors_become_invalid_input() {
        let err: GatehouseError = validate_limit(&limit(LimitScope::Role)).unwrap_err().into();
        assert_eq!(err.code, crate::ErrorCode::InvalidInput);
        assert!(err.message.starts_with("role: "), "{}", err.message);
    }

    #[test]
    fn wire_shapes() {
        for scope in [LimitScope::Tenant, LimitScope::Role, LimitScope::User] {
            assert_eq!(serde_json::to_value(scope).unwrap(), serde_json::Value::String(scope.as_str().into()));
            assert_eq!(LimitScope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(LimitScope::parse("team"), None);
        assert!(!LimitScope::Tenant.per_user() && LimitScope::Role.per_user() && LimitScope::User.per_user());

        let l: RateLimitInput =
            serde_json::from_str(r#"{"scope":"role","role":"dev","requests":10,"perSeconds":60}"#).unwrap();
        assert_eq!(l.effective_burst(), 10);
        assert_eq!(l.tool, None);
        assert_eq!(l.description, "");
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"scope":"role","role":"dev","requests":10,"perSeconds":60,"description":""})
        );
    }
}
