//! Header hygiene at the proxy boundary: hop-by-hop stripping, forwarding headers, request id
//! and W3C trace context.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::fmt::Write;
use std::net::SocketAddr;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static PORTCULLIS_ERROR: HeaderName = HeaderName::from_static("portcullis-error");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including any named in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if let Some(conn) = h.get(header::CONNECTION).cloned() {
        if let Ok(list) = conn.to_str() {
            for name in list.split(',') {
                let name = name.trim();
                if !name.is_empty() {
                    h.remove(name);
                }
            }
        }
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
        &header::PROXY_AUTHENTICATE,
    ] {
        h.remove(name);
    }
}

/// Keeps a well-formed incoming `x-request-id`, or makes a new one. Returns it.
pub fn ensure_request_id(h: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let id = hex_id(fastrand::u128(..), 32);
    let v = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"));
    h.insert(X_REQUEST_ID.clone(), v.clone());
    v
}

fn hex_id(n: u128, digits: usize) -> String {
    let mut s = String::with_capacity(digits);
    let _ = write!(s, "{:0width$x}", n, width = digits);
    s.truncate(digits);
    s
}

/// Propagates W3C trace context: a valid `traceparent` keeps its trace id and flags with the
/// gateway as the new parent span; a missing or invalid one starts a new sampled-off trace.
pub fn propagate_traceparent(h: &mut HeaderMap) {
    let span = hex_id(fastrand::u64(1..) as u128, 16);
    let next = h
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
        .map(|(trace, flags)| format!("00-{trace}-{span}-{flags}"))
        .unwrap_or_else(|| format!("00-{}-{span}-00", hex_id(fastrand::u128(1..), 32)));
    if let Ok(v) = HeaderValue::from_str(&next) {
        h.insert(TRACEPARENT.clone(), v);
    }
}

fn parse_traceparent(s: &str) -> Option<(&str, &str)> {
    let mut it = s.trim().split('-');
    let (ver, trace, parent, flags) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let hex = |x: &str, n: usize| {
        x.len() == n
            && x.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    if !hex(ver, 2) || ver == "ff" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if trace.bytes().all(|c| c == b'0') || parent.bytes().all(|c| c == b'0') {
        return None;
    }
    if ver == "00" && it.next().is_some() {
        return None;
    }
    Some((trace, flags))
}

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto` and `X-Forwarded-Host` (set: the
/// gateway is the edge and does not trust a client's claims about its own scheme or host).
pub fn add_forwarded(h: &mut HeaderMap, client: SocketAddr, tls: bool, host: Option<&str>) {
    let ip = client.ip().to_string();
    let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    h.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(v) = host.and_then(|x| HeaderValue::from_str(x).ok()) {
        h.insert(X_FORWARDED_HOST.clone(), v);
    }
}

/// Appends this hop to `Via`.
pub fn add_via(h: &mut HeaderMap, version: http::Version) {
    let hop = match version {
        http::Version::HTTP_2 => "2 portcullis",
        http::Version::HTTP_3 => "3 portcullis",
        http::Version::HTTP_10 => "1.0 portcullis",
        _ => "1.1 portcullis",
    };
    h.append(header::VIA, HeaderValue::from_static(hop));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn traceparent_keeps_trace_and_replaces_parent() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        propagate_traceparent(&mut h);
        let v = h["traceparent"].to_str().unwrap();
        assert!(v.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{v}");
        assert!(v.ends_with("-01"));
        assert!(!v.contains("00f067aa0ba902b7"));
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("garbage"));
        propagate_traceparent(&mut h);
        let v = h["traceparent"].to_str().unwrap();
        assert!(parse_traceparent(v).is_some(), "{v}");
    }

    #[test]
    fn request_id_is_kept_or_made() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(ensure_request_id(&mut h), "abc-123");
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 32);
        assert_eq!(h["x-request-id"], id);
    }
}
