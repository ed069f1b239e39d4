//! Header hygiene at the proxy boundary: hop-by-hop stripping, forwarding headers, request id
//! and W3C trace context.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::io::Write;
use std::net::SocketAddr;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) static PORTCULLIS_ERROR: HeaderName = HeaderName::from_static("portcullis-error");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Header pairs from config text (a route's `match.headers`, `[http] error_headers`). Config
/// validation refused invalid names and values, so none are dropped here in practice.
pub(crate) fn parse_pairs(
    pairs: &std::collections::BTreeMap<String, String>,
) -> Vec<(HeaderName, HeaderValue)> {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect()
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including any named in `Connection`.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none: one pass over the names is cheaper than nine hashed removals.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
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

/// [`strip_hop_by_hop`] for a request going up, which keeps `te: trailers`: the one `TE` value
/// HTTP/2 allows (RFC 9113 §8.2.2), and the one gRPC servers require (they reset a call
/// without it). Any other `TE` value is dropped.
pub(crate) fn strip_hop_by_hop_request(h: &mut HeaderMap) {
    let trailers = h.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|l| {
            l.split(',').any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        })
    });
    strip_hop_by_hop(h);
    if trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
        || n == header::TE
        || n == header::TRAILER
        || n == header::TRANSFER_ENCODING
        || n == header::UPGRADE
        || n == header::PROXY_AUTHORIZATION
        || n == header::PROXY_AUTHENTICATE
}

/// Keeps a well-formed incoming `x-request-id`, or makes a new one. Returns it.
pub(crate) fn ensure_request_id(h: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let mut buf = [0u8; 32];
    hex_into(fastrand::u128(..), &mut buf);
    let v = HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"));
    h.insert(X_REQUEST_ID.clone(), v.clone());
    v
}

/// Writes the low `out.len() / 2` bytes of `n` as lowercase hex, most significant first.
/// Ids are made on every request: no formatting machinery, no allocation.
fn hex_into(mut n: u128, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// Propagates W3C trace context: a valid `traceparent` keeps its trace id and flags with the
/// gateway as the new parent span; a missing or invalid one starts a new sampled-off trace.
pub(crate) fn propagate_traceparent(h: &mut HeaderMap) {
    // "00-" trace(32) "-" span(16) "-" flags(2): 55 bytes, built on the stack.
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
    match h
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
    {
        Some((trace, _, flags)) => {
            buf[3..35].copy_from_slice(trace.as_bytes());
            buf[53..55].copy_from_slice(flags.as_bytes());
        }
        None => hex_into(fastrand::u128(1..), &mut buf[3..35]),
    }
    hex_into(u128::from(fastrand::u64(1..)), &mut buf[36..52]);
    if let Ok(v) = HeaderValue::from_bytes(&buf) {
        h.insert(TRACEPARENT.clone(), v);
    }
}

/// The `traceparent` `00-<trace>-<span>-<flags>`, sampled flag as given. Built on the stack.
pub(crate) fn traceparent(trace: u128, span: u64, sampled: bool) -> HeaderValue {
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(trace, &mut buf[3..35]);
    hex_into(u128::from(span), &mut buf[36..52]);
    if sampled {
        buf[54] = b'1';
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("00"))
}

/// The client's W3C trace context, if its `traceparent` is valid: trace id, parent span id,
/// and whether the client sampled it (flag bit 0).
pub(crate) fn incoming_trace(h: &HeaderMap) -> Option<(u128, u64, bool)> {
    let (trace, parent, flags) = h
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)?;
    let trace = u128::from_str_radix(trace, 16).ok()?;
    let parent = u64::from_str_radix(parent, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace, parent, flags & 1 == 1))
}

/// `(trace, parent, flags)` of a valid `traceparent`, each still hex.
fn parse_traceparent(s: &str) -> Option<(&str, &str, &str)> {
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
    Some((trace, parent, flags))
}

/// The client's IP address as a header value, formatted once per connection (formatting it
/// per request was ~1,000 instructions, 2% of a proxied request under callgrind).
pub(crate) fn client_ip(client: SocketAddr) -> HeaderValue {
    // An IPv6 address is at most 45 characters: format it on the stack.
    let mut ip = [0u8; 64];
    let len = {
        let mut w = &mut ip[..];
        let _ = write!(w, "{}", client.ip());
        64 - w.len()
    };
    HeaderValue::from_bytes(&ip[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto` and `X-Forwarded-Host` (set: the
/// gateway is the edge and does not trust a client's claims about its own scheme or host).
pub(crate) fn add_forwarded(
    h: &mut HeaderMap,
    client_ip: &HeaderValue,
    tls: bool,
    host: Option<HeaderValue>,
) {
    let ip = client_ip.as_bytes();
    let v = match h.get(&X_FORWARDED_FOR).map(|v| v.as_bytes()) {
        Some(prev) if !prev.trim_ascii().is_empty() => {
            let mut joined = Vec::with_capacity(prev.len() + 2 + ip.len());
            joined.extend_from_slice(prev);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(ip);
            HeaderValue::from_bytes(&joined)
        }
        _ => Ok(client_ip.clone()),
    };
    if let Ok(v) = v {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    h.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(v) = host {
        h.insert(X_FORWARDED_HOST.clone(), v);
    }
}

/// Appends this hop to `Via`.
pub(crate) fn add_via(h: &mut HeaderMap, version: http::Version) {
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
        // Each hop-by-hop header alone is found by the first pass.
        for name in [
            "te",
            "trailer",
            "upgrade",
            "proxy-authorization",
            "proxy-connection",
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert("x-keep", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} kept");
            assert!(h.contains_key("x-keep"));
        }
    }

    #[test]
    fn requests_keep_te_trailers_only() {
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("deflate;q=0.5, Trailers"));
        h.insert("connection", HeaderValue::from_static("te"));
        strip_hop_by_hop_request(&mut h);
        assert_eq!(h["te"], "trailers");
        assert!(!h.contains_key("connection"));
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop_request(&mut h);
        assert!(h.is_empty());
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
    fn trace_context_is_read_and_written() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let (t, p, sampled) = incoming_trace(&h).unwrap();
        assert_eq!(t, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p, 0x00f067aa0ba902b7);
        assert!(sampled);
        assert_eq!(
            traceparent(t, p, true),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            traceparent(1, 2, false),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02"),
        );
        assert_eq!(incoming_trace(&h).map(|x| x.2), Some(false));
        h.insert("traceparent", HeaderValue::from_static("garbage"));
        assert_eq!(incoming_trace(&h), None);
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

    #[test]
    fn hex_ids_are_fixed_width_lowercase() {
        let mut b = [0u8; 8];
        hex_into(0xdead_beef, &mut b);
        assert_eq!(&b, b"deadbeef");
        let mut b = [0u8; 16];
        hex_into(0xab, &mut b);
        assert_eq!(&b, b"00000000000000ab");
        let mut b = [0u8; 4];
        hex_into(0x12345, &mut b);
        assert_eq!(&b, b"2345", "only the low digits fit");
    }

    #[test]
    fn forwarded_for_appends_the_client_ip() {
        let v4: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let mut h = HeaderMap::new();
        add_forwarded(
            &mut h,
            &client_ip(v4),
            false,
            Some(HeaderValue::from_static("example.com")),
        );
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.7"));
        add_forwarded(&mut h, &client_ip(v6), true, None);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7, 2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
