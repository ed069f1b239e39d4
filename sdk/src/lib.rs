//! # portcullis-sdk
//!
//! Write [Portcullis](https://example.invalid/portcullis) gateway plugins in Rust.
//!
//! A plugin is a WebAssembly component built with `cargo build --target wasm32-wasip2`. It
//! implements one of two traits and registers it with one macro:
//!
//! * [`Filter`] + [`export_filter!`]: a Zuul-style inbound or outbound filter.
//! * [`Endpoint`] + [`export_endpoint!`]: an aggregate API that fans out to clusters.
//!
//! ```text
//! use portcullis_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Settings { greeting: String }
//! static CONFIG: Config<Settings> = Config::new();
//!
//! struct Hello;
//! impl Filter for Hello {
//!     fn on_request(req: &RequestView) -> InboundAction {
//!         if req.header("x-hello").is_some() {
//!             return respond(200, &CONFIG.get().greeting);
//!         }
//!         if req.header("authorization").is_none() {
//!             return reject_with(401, "who are you?", &[("www-authenticate", "Bearer")]);
//!         }
//!         RequestEdit::new().set_header("x-hello-seen", "1").action()
//!     }
//! }
//! export_filter!(Hello);
//! ```
//!
//! The pieces: [`Config`] (the manifest's `[config]`, typed, parsed once per instance),
//! [`RequestEdit`] / [`ResponseEdit`] (what an inbound / outbound filter changes),
//! [`respond`], [`reject`], [`reject_with`], [`fetch`] / [`fetch_all`] (endpoints), [`log`],
//! [`metrics`], and, new in WIT 0.3.0, [`kv`] (small state shared by every instance of the
//! plugin) and [`rate_limit`] (a gateway `[[rate_limit]]` on a key the plugin computes).
//!
//! This SDK targets `portcullis:plugin@0.3.0` (`wit/v0.3`). The full contract (when each function runs, what it may do, what its return means) is in
//! the WIT files under `wit/`; the plugin-author guide is `docs/plugins.md`.

#![warn(missing_docs)]

extern crate self as portcullis_sdk;

mod changes;
pub mod config;
pub mod endpoint;
pub mod filter;
mod helpers;
pub mod json;
pub mod kv;
pub mod rate_limit;

pub use changes::{RequestEdit, ResponseEdit};
pub use config::Config;
pub use endpoint::{fetch, fetch_all, Call, CallError, Endpoint, Reply};
pub use filter::Filter;
pub use helpers::{log, metrics, reject, reject_with, respond};
pub use types::*;

/// The shared WIT types (`portcullis:plugin/types@0.3.0`), generated once and used by both
/// worlds.
pub mod types {
    pub use crate::filter::bindings::portcullis::plugin::types::*;
}

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        config, export_endpoint, export_filter, fetch, fetch_all, kv, log, metrics, rate_limit,
        reject, reject_with, respond, Call, CallError, Config, Endpoint, Filter, Header,
        InboundAction, OutboundAction, Priority, Reply, Request, RequestEdit, RequestView,
        Response, ResponseEdit, ResponseView,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}
