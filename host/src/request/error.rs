//! Why a request could not be served, and the response the client gets for it.
//!
//! Every failure has a stable machine-readable code (the `portcullis-error` header), a status,
//! and a passport state, so clients, dashboards and the passport ring all agree.

use super::body::RespBody;
use super::headers::{PORTCULLIS_ERROR, X_REQUEST_ID};
use super::passport::State;
use http::{HeaderValue, Response, StatusCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
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
}

impl Failure {
    pub fn status(self) -> StatusCode {
        use Failure::*;
        match self {
            NoRoute => StatusCode::NOT_FOUND,
            Overloaded | NoHealthyUpstream | EndpointUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            BadRequest => StatusCode::BAD_REQUEST,
            ConnectFailed | UpstreamReset | UnknownCluster | UpstreamTls => StatusCode::BAD_GATEWAY,
            ConnectTimeout | UpstreamTimeout | DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(self) -> &'static str {
        use Failure::*;
        match self {
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
        }
    }

    pub fn state(self) -> State {
        use Failure::*;
        match self {
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
        }
    }

    pub fn reason(self) -> &'static str {
        use Failure::*;
        match self {
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
        }
    }
}

/// A gateway-generated error response: status, `portcullis-error`, a short text reason.
pub fn error_response(
    status: StatusCode,
    code: &str,
    reason: &str,
    request_id: Option<&HeaderValue>,
) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::full(format!("{reason}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(code) {
        h.insert(PORTCULLIS_ERROR.clone(), v);
    }
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Some(id) = request_id {
        h.insert(X_REQUEST_ID.clone(), id.clone());
    }
    resp
}
