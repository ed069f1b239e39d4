//! Why a request (or one of an endpoint's calls) could not be served: the one failure
//! vocabulary of the gateway.
//!
//! Every failure has a stable machine-readable code (the `portcullis-error` header), a status,
//! a one-line reason and a passport state, so clients, dashboards and the passport ring all
//! agree. The request path turns one into a response in exactly one place
//! (`request::respond::error_response`); fan-out maps it onto the WIT's `call-error`.

use super::identity::BadHead;
use super::passport::State;
use http::StatusCode;
use std::borrow::Cow;
use std::sync::Arc;

/// A plugin that failed under `fail_closed` (or an endpoint, which has nothing to skip to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    pub plugin: Arc<str>,
    /// `plugin-trap`, `plugin-cpu-exceeded`, …: the `portcullis-error` code.
    pub code: &'static str,
    pub status: StatusCode,
}

/// Which `[[rate_limit]]` denied a request, and the headers of its 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitDenial {
    pub limit: Arc<str>,
    /// `Retry-After`, `RateLimit-Policy`, `RateLimit`.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The request head was refused at admission (identity, framing).
    BadHead(BadHead),
    /// The client went away while its body was being sent up.
    ClientGone,
    /// A plugin failed; its state (trap, CPU, memory) was stamped when it happened.
    Plugin(PluginFailure),
    NoRoute,
    Overloaded,
    BodyTooLarge,
    ClientBodyTimeout,
    BadRequest,
    NoHealthyUpstream,
    ConnectTimeout,
    ConnectFailed,
    UpstreamTimeout,
    UpstreamReset,
    DeadlineExceeded,
    UnknownCluster,
    EndpointUnavailable,
    UpstreamTls,
    /// A WebSocket upgrade on a route with `websocket = false`.
    WebsocketRefused,
    /// A WebSocket upgrade to a cluster that cannot take one (HTTP/2 upstreams).
    UpgradeUnsupported,
    /// The listener's `max_tunnels` are open.
    TunnelLimit,
    /// A `[[rate_limit]]` denied the request: its name and the `Retry-After`,
    /// `RateLimit-Policy` and `RateLimit` headers of the 429.
    RateLimited(Box<RateLimitDenial>),
}

impl Failure {
    pub fn status(&self) -> StatusCode {
        use Failure::*;
        match self {
            BadHead(_) | ClientGone => StatusCode::BAD_REQUEST,
            Plugin(p) => p.status,
            NoRoute => StatusCode::NOT_FOUND,
            WebsocketRefused => StatusCode::FORBIDDEN,
            RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            UpgradeUnsupported => StatusCode::NOT_IMPLEMENTED,
            Overloaded | NoHealthyUpstream | EndpointUnavailable | TunnelLimit => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            BadRequest => StatusCode::BAD_REQUEST,
            ConnectFailed | UpstreamReset | UnknownCluster | UpstreamTls => StatusCode::BAD_GATEWAY,
            ConnectTimeout | UpstreamTimeout | DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(&self) -> &'static str {
        use Failure::*;
        match self {
            BadHead(_) => "bad-request",
            ClientGone => "client-disconnected",
            Plugin(p) => p.code,
            NoRoute => "no-route",
            Overloaded => "overloaded",
            BodyTooLarge => "body-too-large",
            ClientBodyTimeout => "client-body-timeout",
            BadRequest => "bad-request",
            NoHealthyUpstream => "no-healthy-upstream",
            ConnectTimeout => "connect-timeout",
            ConnectFailed => "connect-failed",
            UpstreamTimeout => "upstream-timeout",
            UpstreamReset => "upstream-reset",
            DeadlineExceeded => "deadline-exceeded",
            UnknownCluster => "unknown-cluster",
            EndpointUnavailable => "endpoint-unavailable",
            UpstreamTls => "upstream-tls-failed",
            WebsocketRefused => "websocket-refused",
            UpgradeUnsupported => "upgrade-unsupported",
            TunnelLimit => "tunnel-limit",
            RateLimited(_) => "rate-limited",
        }
    }

    /// The passport state for this failure; `None` when it was stamped where it happened.
    pub fn state(&self) -> Option<State> {
        use Failure::*;
        Some(match self {
            BadHead(_) => State::BadRequest,
            ClientGone => State::ClientDisconnected,
            Plugin(_) => return None,
            NoRoute => State::NoRoute,
            Overloaded => State::Shed,
            BodyTooLarge => State::BodyTooLarge,
            ClientBodyTimeout => State::ClientBodyTimeout,
            BadRequest => State::BadRequest,
            NoHealthyUpstream => State::NoHealthyUpstream,
            ConnectTimeout => State::ConnectTimeout,
            ConnectFailed => State::ConnectFailed,
            UpstreamTimeout => State::UpstreamTimeout,
            UpstreamReset => State::UpstreamReset,
            DeadlineExceeded => State::DeadlineExceeded,
            UnknownCluster => State::NoRoute,
            EndpointUnavailable => State::NoRoute,
            UpstreamTls => State::ConnectFailed,
            WebsocketRefused | UpgradeUnsupported => State::UpgradeRefused,
            TunnelLimit => State::Shed,
            RateLimited(_) => State::RateLimited,
        })
    }

    /// One line for the client.
    pub fn reason(&self) -> Cow<'static, str> {
        use Failure::*;
        Cow::Borrowed(match self {
            BadHead(b) => b.reason(),
            ClientGone => "the client went away while sending the body",
            Plugin(p) => {
                let what = p.code.strip_prefix("plugin-").unwrap_or(p.code);
                return Cow::Owned(format!("plugin `{}` failed: {what}", p.plugin));
            }
            NoRoute => "no route matches this request",
            Overloaded => "the gateway is overloaded; retry later",
            BodyTooLarge => "request body is larger than this route allows",
            ClientBodyTimeout => "the request body stalled",
            BadRequest => "malformed request",
            NoHealthyUpstream => "no healthy upstream endpoint is available",
            ConnectTimeout => "connecting to the upstream timed out",
            ConnectFailed => "could not connect to the upstream",
            UpstreamTimeout => "the upstream did not answer in time",
            UpstreamReset => "the upstream closed the connection before answering",
            DeadlineExceeded => "the request deadline passed",
            UnknownCluster => "the target cluster does not exist",
            EndpointUnavailable => "the endpoint plugin is not loaded",
            UpstreamTls => {
                "the upstream's TLS certificate could not be verified or the handshake failed"
            }
            WebsocketRefused => "WebSocket upgrades are not allowed on this route",
            UpgradeUnsupported => "this route's cluster cannot take a WebSocket upgrade",
            TunnelLimit => "too many open WebSocket tunnels on this listener; retry later",
            RateLimited(d) => {
                return Cow::Owned(format!("rate limit `{}` exceeded; retry later", d.limit))
            }
        })
    }

    /// Whether waiting on something ran out of time (connect, response, deadline).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Failure::ConnectTimeout | Failure::UpstreamTimeout | Failure::DeadlineExceeded
        )
    }
}
