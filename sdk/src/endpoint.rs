//! The `endpoint` world: aggregate APIs that fan out to the gateway's clusters.

use crate::types::{Header, Request, Response};
use std::fmt;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.3",
        world: "portcullis:plugin/endpoint",
        pub_export_macro: true,
        export_macro_name: "__export_endpoint_world",
        default_bindings_module: "portcullis_sdk::endpoint::bindings",
        runtime_path: "portcullis_sdk::__private::wit_bindgen::rt",
        type_section_suffix: "endpoint",
        with: {
            "portcullis:plugin/types@0.3.0": crate::filter::bindings::portcullis::plugin::types,
            "portcullis:plugin/log@0.3.0": crate::filter::bindings::portcullis::plugin::log,
            "portcullis:plugin/metrics@0.3.0": crate::filter::bindings::portcullis::plugin::metrics,
            "portcullis:plugin/config@0.3.0": crate::filter::bindings::portcullis::plugin::config,
            "portcullis:plugin/kv@0.3.0": crate::filter::bindings::portcullis::plugin::kv,
            "portcullis:plugin/rate-limit@0.3.0": crate::filter::bindings::portcullis::plugin::rate_limit,
        },
        additional_derives: [Clone, PartialEq],
    });
}

use bindings::portcullis::plugin::upstream as wit;

/// An endpoint: one request in, one response out, with [`fetch`] / [`fetch_all`] in between.
pub trait Endpoint {
    /// Runs once per request routed here. `req.body` holds the body (up to the manifest's
    /// `max_body_bytes`). Whatever is returned is sent; a panic or trap becomes a 5xx
    /// (`fail_closed`) per the manifest.
    fn handle(req: Request) -> Response;
}

/// Registers an [`Endpoint`] implementation as the component's exports.
#[macro_export]
macro_rules! export_endpoint {
    ($t:ty) => {
        const _: () = {
            struct __PortcullisEndpoint;
            impl $crate::endpoint::bindings::Guest for __PortcullisEndpoint {
                fn handle(req: $crate::Request) -> $crate::Response {
                    <$t as $crate::Endpoint>::handle(req)
                }
            }
            $crate::endpoint::bindings::__export_endpoint_world!(__PortcullisEndpoint);
        };
    };
}

/// One upstream call. Build with [`Call::get`] or [`Call::new`]; the timeout is mandatory and
/// defaults to 1 s if never set.
#[derive(Debug, Clone)]
pub struct Call {
    /// The cluster to call, by its `[[cluster]] name`.
    pub cluster: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Request headers (hop-by-hop ones are dropped by the gateway).
    pub headers: Vec<Header>,
    /// Request body; empty for none.
    pub body: Vec<u8>,
    /// Mandatory bound on this call, capped by the request's deadline.
    pub timeout_ms: u32,
}

impl Call {
    /// A call with `method` to `cluster` at `path`, with the default timeout.
    pub fn new(method: &str, cluster: &str, path: &str) -> Self {
        Call {
            cluster: cluster.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: 1000,
        }
    }
    /// A `GET` call.
    pub fn get(cluster: &str, path: &str) -> Self {
        Call::new("GET", cluster, path)
    }
    /// Sets the call's timeout.
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = ms;
        self
    }
    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
    /// Sets the request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    /// Copies the named headers (if present) from the incoming request: the one-liner for
    /// passing auth, `traceparent` and the request id on to fan-out calls.
    pub fn forward(mut self, from: &Request, names: &[&str]) -> Self {
        for n in names {
            for (k, v) in &from.headers {
                if k.eq_ignore_ascii_case(n) {
                    self.headers.push((k.clone(), v.clone()));
                }
            }
        }
        self
    }
    /// [`Call::forward`] with the usual context: `authorization`, `cookie`, `traceparent`,
    /// `tracestate`, `x-request-id`.
    pub fn forward_context(self, from: &Request) -> Self {
        self.forward(
            from,
            &[
                "authorization",
                "cookie",
                "traceparent",
                "tracestate",
                "x-request-id",
            ],
        )
    }
    fn into_wit(self) -> wit::Call {
        wit::Call {
            cluster: self.cluster,
            method: self.method,
            path: self.path,
            headers: self.headers,
            body: self.body,
            timeout_ms: self.timeout_ms,
        }
    }
}

/// A reply from an upstream (any status: 4xx/5xx are replies, not errors).
pub type Reply = wit::Reply;

impl Reply {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The first value of a response header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::helpers::find_header(&self.headers, name)
    }
    /// Parses the body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, CallError> {
        serde_json::from_slice(&self.body).map_err(|e| CallError::BadBody(e.to_string()))
    }
}

/// Why a call gave no usable reply.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The call's `timeout_ms` or the request deadline passed.
    Timeout,
    /// No connection could be made to any endpoint of the cluster.
    ConnectFailed,
    /// The cluster shed the call.
    Overloaded,
    /// The gateway has no cluster of that name.
    UnknownCluster,
    /// A per-request cap (calls, fan-out width, response bytes) was hit.
    LimitExceeded(String),
    /// The upstream closed the connection before answering.
    UpstreamReset,
    /// The call itself is malformed (bad method, a path not starting with `/`, an invalid
    /// header, `timeout_ms` 0); the string says what. Retrying it unchanged fails again.
    InvalidCall(String),
    /// The upstream answered with a non-2xx status (only from [`CallResultExt::ok_2xx`]).
    Status(u16),
    /// The body could not be decoded (only from [`Reply::json`]).
    BadBody(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("timeout"),
            CallError::ConnectFailed => f.write_str("connect failed"),
            CallError::Overloaded => f.write_str("overloaded"),
            CallError::UnknownCluster => f.write_str("unknown cluster"),
            CallError::LimitExceeded(what) => write!(f, "limit exceeded: {what}"),
            CallError::UpstreamReset => f.write_str("upstream reset"),
            CallError::InvalidCall(what) => write!(f, "invalid call: {what}"),
            CallError::Status(s) => write!(f, "status {s}"),
            CallError::BadBody(e) => write!(f, "bad body: {e}"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<wit::CallError> for CallError {
    fn from(e: wit::CallError) -> Self {
        match e {
            wit::CallError::Timeout => CallError::Timeout,
            wit::CallError::ConnectFailed => CallError::ConnectFailed,
            wit::CallError::Overloaded => CallError::Overloaded,
            wit::CallError::UnknownCluster => CallError::UnknownCluster,
            wit::CallError::LimitExceeded(s) => CallError::LimitExceeded(s),
            wit::CallError::UpstreamReset => CallError::UpstreamReset,
            wit::CallError::InvalidCall(s) => CallError::InvalidCall(s),
        }
    }
}

/// Helpers on call results.
pub trait CallResultExt {
    /// Turns a non-2xx reply into [`CallError::Status`].
    fn ok_2xx(self) -> Result<Reply, CallError>;
}

impl CallResultExt for Result<Reply, CallError> {
    fn ok_2xx(self) -> Result<Reply, CallError> {
        match self {
            Ok(r) if r.is_success() => Ok(r),
            Ok(r) => Err(CallError::Status(r.status)),
            Err(e) => Err(e),
        }
    }
}

/// Makes one call; the guest is suspended until the reply (the worker thread is not).
pub fn fetch(call: Call) -> Result<Reply, CallError> {
    wit::fetch(&call.into_wit()).map_err(CallError::from)
}

/// Makes all calls concurrently on the host; results come back in order.
pub fn fetch_all(calls: Vec<Call>) -> Vec<Result<Reply, CallError>> {
    let calls: Vec<wit::Call> = calls.into_iter().map(Call::into_wit).collect();
    wit::fetch_all(&calls)
        .into_iter()
        .map(|r| r.map_err(CallError::from))
        .collect()
}
