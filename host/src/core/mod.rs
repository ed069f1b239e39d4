//! Leaf types every part of the gateway shares. Nothing here imports anything above it.
//!
//! - `identity`: the request's one normalized path, host and framing, fixed at admission;
//! - `client`: the request's one client address (`[http] trusted_proxies`);
//! - `passport`: the ordered record of a request's states;
//! - `failure`: the one vocabulary of why something could not be served;
//! - `body`: request bodies on their way up;
//! - `headers`: header hygiene at the proxy boundary;
//! - `trace`: a sampled request's trace ids and child-span records.

pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod failure;
pub(crate) mod headers;
pub(crate) mod identity;
pub(crate) mod passport;
pub(crate) mod trace;
