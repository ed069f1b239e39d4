//! Plugin runtime: the only door between the fixed core and product teams' Wasm.
//!
//! CONTRACT WITH THE CORE (the request state machine calls exactly this facade):
//!
//! ```text
//! let rt: Arc<PluginRuntime> = PluginRuntime::start(&cfg.plugins, metrics)?;   // at boot
//! let chain: Arc<Chain> = rt.chain();          // once per request: a snapshot, so a request
//!                                              // finishes on the plugin versions it began with
//! chain.inbound_body_cap(&parts) -> Option<usize>   // Some: core buffers the body up to cap
//! chain.inbound(&mut parts, client, body, &mut state, &mut passport).await -> InboundOutcome
//! chain.outbound(&parts, &mut resp_parts, &state, &mut passport).await  -> OutboundOutcome
//! rt.admin(req).await -> Response<Full<Bytes>>      // GET/PUT/DELETE /admin/plugins[/{name}]
//! rt.render_metrics(&mut String)                    // appended to /metrics
//! ```
//!
//! This file is a placeholder facade until the runtime lands; with no plugins every call is a
//! no-op "continue".

use crate::config::Priority;
use crate::request::passport::Passport;
use bytes::Bytes;
use http::{Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

/// Per-request state that filters read and write. Lives for the whole request.
#[derive(Debug, Default, Clone)]
pub struct FilterState {
    /// Metadata set by inbound filters; later filters and outbound filters read it.
    pub metadata: Vec<(String, String)>,
    /// Target cluster chosen by a filter; overrides the route's cluster.
    pub cluster: Option<String>,
    /// Shedding class chosen by a filter; overrides the route's.
    pub priority: Option<Priority>,
}

/// A plugin that failed under `fail_closed`: the core answers with `status`, the header
/// `portcullis-error: <code>` and `reason` as the body.
#[derive(Debug, Clone)]
pub struct PluginFailure {
    pub status: StatusCode,
    pub code: String,
    pub reason: String,
}

pub enum InboundOutcome {
    /// Go on to routing (the head and `FilterState` may have been changed).
    Continue,
    /// A filter answered (short-circuit) or rejected; send this response as is.
    Respond(Response<Bytes>),
    /// A `fail_closed` filter trapped or exceeded a limit.
    Failed(PluginFailure),
}

pub enum OutboundOutcome {
    Continue,
    Failed(PluginFailure),
}

/// The set of loaded plugins at one instant.
#[derive(Default)]
pub struct Chain {}

impl Chain {
    pub fn inbound_body_cap(&self, _parts: &http::request::Parts) -> Option<usize> {
        None
    }

    pub async fn inbound(
        &self,
        _parts: &mut http::request::Parts,
        _client: SocketAddr,
        _body: Option<&Bytes>,
        _state: &mut FilterState,
        _passport: &mut Passport,
    ) -> InboundOutcome {
        InboundOutcome::Continue
    }

    pub async fn outbound(
        &self,
        _req: &http::request::Parts,
        _resp: &mut http::response::Parts,
        _state: &FilterState,
        _passport: &mut Passport,
    ) -> OutboundOutcome {
        OutboundOutcome::Continue
    }
}

#[derive(Default)]
pub struct PluginRuntime {
    chain: Arc<Chain>,
}

impl PluginRuntime {
    pub fn chain(&self) -> Arc<Chain> {
        self.chain.clone()
    }

    pub fn render_metrics(&self, _out: &mut String) {}

    pub fn start(_cfg: &crate::config::Plugins) -> anyhow::Result<Arc<PluginRuntime>> {
        Ok(Arc::new(PluginRuntime::default()))
    }

    pub async fn admin(
        &self,
        _req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<http_body_util::Full<Bytes>> {
        http::Response::new(http_body_util::Full::new(Bytes::from_static(b"[]")))
    }
}
