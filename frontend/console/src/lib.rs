//! The Gatehouse web console: a Leptos app rendered on the server and hydrated in the browser.
//!
//! One crate, two halves (as in the Leptos `todo_app_sqlite_axum` example):
//! * `ssr`: [`router`] gives the `gatehouse` binary the console's routes (pages, the server functions
//!   under `/api/console/…`, and the browser bundle under `/pkg/…`);
//! * `hydrate`: [`hydrate`] is what `/pkg/gatehouse_console.js` calls once the wasm is loaded.
//!
//! The browser half is built without cargo-leptos by `scripts/build-console.sh`.
//!
//! * [`api`]: the server functions; each calls `gatehouse_control::Services` as the signed-in user.
//! * [`app`]: the shell, the router and the header.
//! * [`pages`]: one module per page.
//! * `rule_form`: the access-rule form's fields turned into a rule, and a rule in words.

pub mod api;
pub mod app;
mod components;
mod error;
mod pages;
mod rule_form;
#[cfg(feature = "ssr")]
mod server;

pub use error::ConsoleError;
#[cfg(feature = "ssr")]
pub use server::router;

/// The name wasm-bindgen gives the browser bundle (`--out-name`): `/pkg/gatehouse_console.js` and
/// `/pkg/gatehouse_console_bg.wasm`.
pub const OUTPUT_NAME: &str = "gatehouse_console";

/// Entry point of the browser half: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
