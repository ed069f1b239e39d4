//! Portcullis host: a bounded, transparent, WebAssembly-extensible HTTP gateway.
//!
//! Tenets, in order: **transparent** (every request carries a passport; metrics derive from
//! it), **stable** (every wait and every buffer has a bound; plugins cannot take the process
//! down), **fast** (low and predictable overhead), **extensible** (Wasm plugins, never at the
//! cost of the first three).
//!
//! Modules, one concern each: `config` (parse, validate, defaults), `server` (listeners, TLS,
//! client IO timeouts), `request` (state machine, passport, bodies, errors), `routing` (route
//! table), `upstream` (clusters, pools, balancers, outlier detection, retries, health),
//! `shed` (priority load shedding), `plugin` (Wasm runtime), `admin` (health, metrics,
//! passports, plugin API), `telemetry` (metrics, logging), `gateway` (assembly, shutdown).
// One `unsafe` is allowed, in `plugin::cache::deserialize_verified` (loading a verified
// compiled component); everything else is denied.
#![deny(unsafe_code)]

//!
//! The public facade is small, in the way wasmtime keeps its internals private: a
//! [`Config`] (the whole config model, since operators and tests build it), a running
//! [`Gateway`] (with its [`AccessLog`]), [`init_logging`], [`check_dir`] for `portcullis check`, and the [`bench`]
//! handles the filter micro-benchmark drives. Every module is `pub(crate)`.

pub(crate) mod admin;
pub mod config;
pub(crate) mod core;
#[cfg(test)]
mod fuzz;
pub(crate) mod gateway;
pub(crate) mod h1;
pub(crate) mod plugin;
pub(crate) mod ratelimit;
pub(crate) mod redis_client;
pub mod reload;
pub(crate) mod request;
pub(crate) mod routing;
pub(crate) mod server;
pub(crate) mod shed;
pub(crate) mod telemetry;
pub(crate) mod toolkit;
pub(crate) mod upgrade;
pub(crate) mod upstream;

pub use config::Config;
pub use gateway::Gateway;
pub use plugin::check_dir;
pub use reload::check;
pub use telemetry::access_log::AccessLog;
pub use telemetry::init_logging;
pub use toolkit::{run as plugin_command, PluginArgs};

/// What `examples/src/bin/filter_micro.rs` needs to call the filter chain directly, without
/// sockets: the plugin runtime, its chain, and a passport to stamp.
pub mod bench {
    pub use crate::core::passport::Passport;
    pub use crate::plugin::{Chain, FilterState, InboundOutcome, PluginRuntime};
}
