//! gRPC at the gateway's edges: telling a gRPC call from other requests, its deadline
//! (`grpc-timeout`), and the gateway's own errors as gRPC clients read them.
//!
//! gRPC runs over ordinary HTTP/2 requests, so calls are proxied like any other request (with
//! `te: trailers` kept, see `core::headers::strip_hop_by_hop_request`, and the response's
//! trailers streamed through). Only two things differ:
//!
//! - A gateway-made error is answered *Trailers-Only*: HTTP 200, `content-type:
//!   application/grpc`, `grpc-status` and `grpc-message` in the head, no body. A gRPC client
//!   reads the HTTP status only to guess (`UNAVAILABLE`, `UNKNOWN`), and loses the reason.
//! - The call's `grpc-timeout` bounds the request like the route's deadline does; the
//!   smaller wins, and the upstream is told what is left of it.

use crate::core::failure::Failure;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use std::time::Duration;

pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub(crate) static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub(crate) static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRPC status codes the gateway answers with (`google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Code {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// What admission learned about a gRPC call.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Call {
    /// The client's `grpc-timeout`, if it sent a valid one.
    pub timeout: Option<Duration>,
}

/// `Some` when the request is a gRPC call: `content-type: application/grpc` or
/// `application/grpc+<codec>` / `application/grpc;…` (gRPC-Web is not: it has its own framing
/// of trailers).
pub(crate) fn detect(h: &HeaderMap) -> Option<Call> {
    let ct = h.get(http::header::CONTENT_TYPE)?.as_bytes();
    let rest = ct.strip_prefix(b"application/grpc")?;
    if !(rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";")) {
        return None;
    }
    Some(Call {
        timeout: h
            .get(&GRPC_TIMEOUT)
            .and_then(|v| parse_timeout(v.as_bytes())),
    })
}

/// Parses `grpc-timeout`: 1 to 8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub(crate) fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-timeout` for what is left of a deadline: milliseconds (rounded up, so a call is never
/// told it has 0 left while it still has some), or seconds past 8 digits of them.
pub(crate) fn encode_timeout(left: Duration) -> HeaderValue {
    let ms = left.as_nanos().div_ceil(1_000_000).max(1);
    let s = if ms <= 99_999_999 {
        format!("{ms}m")
    } else {
        format!("{}S", (left.as_secs() + 1).min(99_999_999))
    };
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("1m"))
}

/// The gRPC status for a gateway failure: the cause where the gateway knows it (a deadline is
/// `DEADLINE_EXCEEDED`, an oversized message `RESOURCE_EXHAUSTED`, a failed connect or a shed
/// request `UNAVAILABLE`, which clients may retry), else the HTTP mapping.
pub(crate) fn code_for_failure(why: &Failure) -> Code {
    match why {
        Failure::DeadlineExceeded | Failure::UpstreamTimeout => Code::DeadlineExceeded,
        Failure::BodyTooLarge => Code::ResourceExhausted,
        Failure::Overloaded
        | Failure::NoHealthyUpstream
        | Failure::ConnectTimeout
        | Failure::ConnectFailed
        | Failure::UpstreamReset
        | Failure::UpstreamTls => Code::Unavailable,
        other => code_for_http(other.status()),
    }
}

/// gRPC's "HTTP to gRPC Status Code Mapping" (doc/http-grpc-status-mapping.md): what a client
/// infers from an HTTP status without `grpc-status`. Used for statuses the gateway did not
/// pick by cause (a filter's rejection, a 404 route miss). The document maps 429 and 504 to
/// `UNAVAILABLE`, not `RESOURCE_EXHAUSTED` / `DEADLINE_EXCEEDED`.
pub(crate) fn code_for_http(s: StatusCode) -> Code {
    match s.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// Turns a gateway-made answer into Trailers-Only: HTTP 200, `content-type: application/grpc`,
/// `grpc-status`, `grpc-message` (percent-encoded), no body. Every other header stays
/// (`portcullis-error`, `x-request-id`, `[http] error_headers`, a filter's own).
pub(crate) fn trailers_only(resp: Response<Bytes>, code: Code, message: &str) -> Response<Bytes> {
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::OK;
    let h = &mut parts.headers;
    h.remove(http::header::CONTENT_LENGTH);
    h.remove(http::header::RETRY_AFTER);
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(GRPC_STATUS.clone(), HeaderValue::from(code as u16));
    h.insert(GRPC_MESSAGE.clone(), encode_message(message));
    Response::from_parts(parts, Bytes::new())
}

/// A filter's answer to a gRPC call: an error status (and no `grpc-status` of its own) becomes
/// Trailers-Only, with the body's first line (up to 256 bytes) as the message.
pub(crate) fn filter_answer(resp: Response<Bytes>) -> Response<Bytes> {
    let status = resp.status();
    if status.is_success() || resp.headers().contains_key(&GRPC_STATUS) {
        return resp;
    }
    let body = resp.body();
    let text = std::str::from_utf8(&body[..body.len().min(256)])
        .ok()
        .and_then(|t| t.lines().next())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    trailers_only(resp, code_for_http(status), &text)
}

/// `grpc-message` is percent-encoded UTF-8: everything outside printable ASCII, and `%`.
fn encode_message(m: &str) -> HeaderValue {
    let mut out = String::with_capacity(m.len());
    for b in m.trim_end().bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static(""))
}

/// The trailers that end a streamed gRPC response the gateway had to cut (deadline, idle
/// upstream, reset): without them the client sees a broken stream instead of a status.
pub(crate) fn end_trailers(code: Code, message: &str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(2);
    h.insert(GRPC_STATUS.clone(), HeaderValue::from(code as u16));
    h.insert(GRPC_MESSAGE.clone(), encode_message(message));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_calls_are_told_by_content_type() {
        let mut h = HeaderMap::new();
        assert!(detect(&h).is_none());
        for (ct, is) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert("content-type", HeaderValue::from_static(ct));
            assert_eq!(detect(&h).is_some(), is, "{ct}");
        }
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("grpc-timeout", HeaderValue::from_static("250m"));
        assert_eq!(
            detect(&h).unwrap().timeout,
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn grpc_timeout_parses_every_unit_and_refuses_junk() {
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout(b"1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_timeout(b"7n"), Some(Duration::from_nanos(7)));
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{:?}", std::str::from_utf8(bad));
        }
        assert_eq!(encode_timeout(Duration::from_micros(1500)), "2m");
        assert_eq!(encode_timeout(Duration::ZERO), "1m");
        assert_eq!(
            parse_timeout(encode_timeout(Duration::from_secs(200_000)).as_bytes()),
            Some(Duration::from_secs(200_001))
        );
    }

    #[test]
    fn http_statuses_map_as_grpc_documents() {
        let c = |s: u16| code_for_http(StatusCode::from_u16(s).unwrap()) as u8;
        assert_eq!(
            [
                c(400),
                c(401),
                c(403),
                c(404),
                c(429),
                c(502),
                c(503),
                c(504),
                c(500),
                c(418)
            ],
            [13, 16, 7, 12, 14, 14, 14, 14, 2, 2]
        );
        assert_eq!(code_for_failure(&Failure::DeadlineExceeded) as u8, 4);
        assert_eq!(code_for_failure(&Failure::UpstreamReset) as u8, 14);
        assert_eq!(code_for_failure(&Failure::NoRoute) as u8, 12);
    }

    #[test]
    fn trailers_only_keeps_headers_and_encodes_the_message() {
        let mut r = Response::new(Bytes::from_static(b"denied\n"));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut()
            .insert("x-keep", HeaderValue::from_static("1"));
        let r = filter_answer(r);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "16");
        assert_eq!(r.headers()["grpc-message"], "denied");
        assert_eq!(r.headers()["x-keep"], "1");
        assert!(r.body().is_empty());
        assert_eq!(encode_message("50% ü\n"), "50%25 %C3%BC");
    }
}
