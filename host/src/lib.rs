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
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod core;
pub mod gateway;
pub mod plugin;
pub mod request;
pub mod routing;
pub mod server;
pub mod shed;
pub mod telemetry;
pub mod upstream;

pub use config::Config;
pub use gateway::Gateway;
