//! The one catalogue of stable error codes.
//!
//! Every error Gatehouse reports to a user carries one of these codes: in GraphQL `extensions.code`,
//! in the JSON body of REST answers, and in `error.data.code` of JSON-RPC errors from the gateway.
//! Codes are part of the public contract (see `docs/errors.md`); add new ones, never rename.

use serde::{Deserialize, Serialize};

/// A stable, documented error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Input failed validation; the message names the field.
    InvalidInput,
    /// No session or token, or one that is not valid.
    Unauthenticated,
    /// Signed in, but not allowed to do this.
    Forbidden,
    /// The named object does not exist (or belongs to another tenant).
    NotFound,
    /// An object with that name already exists.
    Conflict,
    /// A state-changing request without a valid same-origin proof.
    CsrfRejected,
    /// Email or password is wrong.
    InvalidCredentials,
    /// An upstream MCP server could not be reached or answered badly.
    UpstreamUnavailable,
    /// The gateway has no policy bundle for this tenant yet.
    NoBundle,
    /// The policy refuses this tool call.
    ToolNotGranted,
    /// The policy allows this tool, but not with these arguments.
    ArgumentsNotAllowed,
    /// A data-classification rule blocked the arguments or the response.
    DataBlocked,
    /// A tenant admin suspended this user, server or tool (the kill switch).
    Suspended,
    /// A rate limit refuses the call for now; retry after the time given.
    RateLimited,
    /// A bundle failed signature or integrity checks.
    BundleRejected,
    /// Publishing (or rolling back) would change nothing: the draft, or the chosen revision, is
    /// what runs already.
    NothingToPublish,
    /// Something went wrong on our side; the message carries a reference, never internals.
    Internal,
}

impl ErrorCode {
    /// Every code, in catalogue order (used by the docs drift test).
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::InvalidInput,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::CsrfRejected,
        ErrorCode::InvalidCredentials,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::NoBundle,
        ErrorCode::ToolNotGranted,
        ErrorCode::ArgumentsNotAllowed,
        ErrorCode::DataBlocked,
        ErrorCode::Suspended,
        ErrorCode::RateLimited,
        ErrorCode::BundleRejected,
        ErrorCode::NothingToPublish,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::CsrfRejected => "CSRF_REJECTED",
            ErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
            ErrorCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ErrorCode::NoBundle => "NO_BUNDLE",
            ErrorCode::ToolNotGranted => "TOOL_NOT_GRANTED",
            ErrorCode::ArgumentsNotAllowed => "ARGUMENTS_NOT_ALLOWED",
            ErrorCode::DataBlocked => "DATA_BLOCKED",
            ErrorCode::Suspended => "SUSPENDED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::BundleRejected => "BUNDLE_REJECTED",
            ErrorCode::NothingToPublish => "NOTHING_TO_PUBLISH",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The HTTP status a REST answer with this code gets. Exhaustive on purpose: a new code must
    /// choose its status.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidInput => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::InvalidCredentials => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::CsrfRejected => 403,
            ErrorCode::ToolNotGranted => 403,
            ErrorCode::ArgumentsNotAllowed => 403,
            ErrorCode::DataBlocked => 403,
            ErrorCode::Suspended => 403,
            ErrorCode::RateLimited => 429,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::BundleRejected => 422,
            ErrorCode::NothingToPublish => 409,
            ErrorCode::UpstreamUnavailable => 502,
            ErrorCode::NoBundle => 503,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a stable code and a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct GatehouseError {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl GatehouseError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// Input validation failed on `field`.
    pub fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidInput, format!("{field}: {why}"))
    }

    /// `what` does not exist in this tenant.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// An internal failure; logs the cause, shows the user only a reference.
    pub fn internal(reference: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::Internal,
            format!("internal error (reference {reference}); the operator can find details in the server log"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
        }
    }

    #[test]
    fn client_errors_are_4xx() {
        for code in ErrorCode::ALL {
            let status = code.http_status();
            let server_side =
                matches!(code, ErrorCode::Internal | ErrorCode::UpstreamUnavailable | ErrorCode::NoBundle);
            assert_eq!(status >= 500, server_side, "{code} has status {status}");
        }
    }
}
