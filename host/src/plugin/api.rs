//! What a plugin call means to the host, whatever WIT version the plugin targets.
//!
//! Each served version (`versions::v0_1`, `v0_2`, `v0_3`) converts its generated types into
//! these and back, by moving fields (no copies, no allocation): the chain, `convert` and the
//! fan-out code are written once, against this module, and a new WIT version is a new
//! conversion, not a second chain. A type grows here only when a version adds a capability
//! (0.2.0: `Rejection::headers`, `CallError::InvalidCall`; 0.3.0: the `kv` and `rate-limit`
//! types); older versions fill the new field with its neutral default (an empty `Vec`, which
//! allocates nothing).

use crate::config::Priority;

/// One header field, name lower-case.
pub(crate) type Header = (String, String);

/// The request as an endpoint sees it (WIT `request`).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<Header>,
    pub client_addr: String,
    pub body: Option<Vec<u8>>,
    pub metadata: Vec<(String, String)>,
    pub route: String,
}

/// A complete response a plugin produced (WIT `response`).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

/// An inbound filter's changes (WIT `request-changes`).
#[derive(Debug, Clone, Default)]
pub struct RequestChanges {
    pub set_headers: Vec<Header>,
    pub remove_headers: Vec<String>,
    pub path: Option<String>,
    pub cluster: Option<String>,
    pub priority: Option<Priority>,
    pub metadata: Vec<(String, String)>,
}

/// A refusal (WIT `rejection`). `headers` is empty for a 0.1.0 plugin.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<Header>,
}

/// An inbound filter's decision (WIT `inbound-action`).
#[derive(Debug, Clone)]
pub enum InboundAction {
    Continue,
    Modify(RequestChanges),
    Respond(Response),
    Reject(Rejection),
}

/// An outbound filter's changes (WIT `response-changes`).
#[derive(Debug, Clone, Default)]
pub struct ResponseChanges {
    pub status: Option<u16>,
    pub set_headers: Vec<Header>,
    pub remove_headers: Vec<String>,
}

/// An outbound filter's decision (WIT `outbound-action`).
#[derive(Debug, Clone)]
pub enum OutboundAction {
    Continue,
    Modify(ResponseChanges),
}

/// A guest log line's level (WIT `log.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// One upstream call of an endpoint (WIT `upstream.call`).
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub cluster: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

/// An upstream's answer (WIT `upstream.reply`).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

/// Why a call produced no reply (WIT `upstream.call-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    Timeout,
    ConnectFailed,
    Overloaded,
    UnknownCluster,
    LimitExceeded(String),
    UpstreamReset,
    /// The call is malformed. 0.2.0 names it; a 0.1.0 plugin sees `limit-exceeded`, as
    /// before.
    InvalidCall(String),
}

impl CallError {
    /// The WIT case name, for the passport's call records.
    pub fn name(&self) -> &'static str {
        match self {
            CallError::Timeout => "timeout",
            CallError::ConnectFailed => "connect-failed",
            CallError::Overloaded => "overloaded",
            CallError::UnknownCluster => "unknown-cluster",
            CallError::LimitExceeded(_) => "limit-exceeded",
            CallError::UpstreamReset => "upstream-reset",
            CallError::InvalidCall(_) => "invalid-call",
        }
    }
}

/// Why a `kv` call did nothing (WIT 0.3 `kv.kv-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    TooLarge(String),
    LimitExceeded(String),
    Unavailable(String),
    NotANumber,
}

/// A plugin's rate-limit check (WIT 0.3 `rate-limit.decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub allowed: bool,
    pub remaining: u64,
    pub retry_after_ms: u64,
    pub reset_ms: u64,
    pub limit: u64,
    pub window_ms: u64,
    pub fallback: bool,
}

/// Why a rate-limit check made no decision (WIT 0.3 `rate-limit.check-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckError {
    UnknownLimit(String),
    InvalidKey,
}
