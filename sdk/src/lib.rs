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
//! struct Hello;
//! impl Filter for Hello {
//!     fn on_request(req: &RequestView) -> InboundAction {
//!         if req.header("x-hello").is_some() {
//!             return respond(200, "hi\n");
//!         }
//!         InboundAction::Continue
//!     }
//! }
//! export_filter!(Hello);
//! ```
//!
//! The full contract (when each function runs, what it may do, what its return means) is in
//! the WIT files under `wit/`; the plugin-author guide is `docs/plugins.md`.

#![warn(missing_docs)]

extern crate self as portcullis_sdk;

pub mod endpoint;
pub mod filter;
mod helpers;
pub mod json;

pub use endpoint::{fetch, fetch_all, Call, CallError, Endpoint, Reply};
pub use filter::Filter;
pub use helpers::{config, log, metrics, reject, respond, Changes};
pub use types::*;

/// The shared WIT types (`portcullis:plugin/types`), generated once and used by both worlds.
pub mod types {
    pub use crate::filter::bindings::portcullis::plugin::types::*;
}

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        config, export_endpoint, export_filter, fetch, fetch_all, log, metrics, reject, respond,
        Call, CallError, Changes, Endpoint, Filter, Header, InboundAction, OutboundAction,
        Priority, Reply, Request, RequestChanges, RequestView, Response, ResponseChanges,
        ResponseView,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}
