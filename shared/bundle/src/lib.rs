//! The policy bundle: what the control plane compiles from one tenant's state and every gateway
//! worker enforces.
//!
//! * [`classify`]: data-classification rules (card numbers, secrets, ...) on tool parameters and
//!   responses: validation, and the scanner and redactor the gateway runs.
//! * [`conditions`]: CEL conditions on access rules: checked when saved, compiled per bundle.
//! * [`format`]: the bundle's content and manifest, and its canonical bytes.
//! * [`signing`]: Ed25519 keys, the signed envelope, and verification.
//! * [`policy`]: the runtime form a worker builds from a verified bundle, and the decisions it makes.
//! * [`rules`]: access rules checked when saved and compiled for the request path.
//! * [`shaping`]: a virtual server's naming strategy and per-tool overrides, as the worker uses them.
//! * [`wire`]: the worker API's delta answer (only changed tenants) and its gzip, bounded.
//!
//! The format is described for humans in `docs/decisions/0003-bundle-format.md`.

pub mod classify;
pub mod conditions;
pub mod format;
pub mod policy;
pub mod rules;
pub mod shaping;
pub mod signing;
pub mod wire;

pub use format::{Bundle, Content, Manifest, SCHEMA_VERSION};
pub use policy::{Decision, DenyKind, Listing, TenantPolicy};
pub use signing::{BundleError, KeyRing, SignedBundle, SigningKey};
