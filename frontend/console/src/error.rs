//! The error every server function returns.

use gatehouse_core::{ErrorCode, GatehouseError};
use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// An error shown to the user next to the form (or list) that caused it.
///
/// It keeps the stable code of a [`GatehouseError`] so the page can react to it (for example, offer to
/// sign in again on `UNAUTHENTICATED`); transport failures have no code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleError {
    /// The stable code, when the error came from the control plane.
    pub code: Option<ErrorCode>,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl ConsoleError {
    /// The user is not signed in (or the session expired).
    pub fn unauthenticated() -> Self {
        GatehouseError::new(
            ErrorCode::Unauthenticated,
            "you are not signed in (or your session expired); sign in again",
        )
        .into()
    }

    /// Invalid input in `field`.
    pub fn invalid(field: &str, why: &str) -> Self {
        GatehouseError::invalid(field, why).into()
    }

    /// Whether signing in again would help.
    pub fn is_unauthenticated(&self) -> bool {
        self.code == Some(ErrorCode::Unauthenticated)
    }
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConsoleError {}

impl From<GatehouseError> for ConsoleError {
    fn from(e: GatehouseError) -> Self {
        Self { code: Some(e.code), message: e.message }
    }
}

impl FromServerFnError for ConsoleError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        let message = match value {
            ServerFnErrorErr::Request(e) => format!("the console could not reach the server ({e}); try again"),
            other => other.to_string(),
        };
        Self { code: None, message }
    }
}
