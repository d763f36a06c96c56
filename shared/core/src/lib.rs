//! Types that the control plane, the gateway worker and the console share.
//!
//! Nothing here depends on a database, a web framework or a runtime, so every side can use it.

pub mod audit;
pub mod classification;
pub mod error;
pub mod gateways;
pub mod groups;
pub mod headers;
pub mod ids;
pub mod jsonrpc;
pub mod limits;
pub mod rules;
pub mod shaping;
pub mod views;

pub use error::{ErrorCode, GatehouseError};
