//! The client address behind an L4 balancer or a trusted proxy, end to end: a listener with
//! `proxy_protocol = true` takes the client from the PROXY v1/v2 header (and closes a
//! connection without a valid one within the header timeout), and `[http] trusted_proxies`
//! decides when `X-Forwarded-For` is believed. Whichever it is, the same address is what the
//! upstream's `X-Forwarded-For` ends with and what a `client_ip` rate limit counts.

use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request per client address: the second from the same client gets 429.
const ONE_PER_CLIENT: &str =
    "[[rate_limit]]\nname = \"per-client\"\nkey = \"client_ip\"\nlimit = 1\nwindow_ms = 60000\n";

/// Sends `preamble` then one `GET /up/x` on a fresh connection; returns the status and the
/// `X-Forwarded-For` the upstream saw (empty when the request did not reach it), or `None`
/// when the gateway closed the connection without answering.
async fn raw_get(addr: SocketAddr, preamble: &[u8], xff: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = preamble.to_vec();
    req.extend_from_slice(b"GET /up/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(x) = xff {
        req.extend_from_slice(format!("X-Forwarded-For: {x}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the gateway answers or closes within 5 s")
        .ok()?;
    if out.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let seen = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|j| j["headers"]["x-forwarded-for"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Some((status, seen))
}

fn proxy_v2_ipv4(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(src);
    h.extend([127, 0, 0, 1]);
    h.extend(port.to_be_bytes());
    h.extend(80u16.to_be_bytes());
    h
}

#[tokio::test]
async fn a_proxy_protocol_listener_takes_the_client_from_the_header() {
    let up = Upstream::start("up").await;
    let cfg = basic_config(&[("up", up.addr)], ONE_PER_CLIENT).replacen(
        "name = \"main\"\n",
        "name = \"main\"\nproxy_protocol = true\n",
        1,
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n";
    assert_eq!(
        raw_get(addr, v1, None).await,
        Some((200, "203.0.113.7".into())),
        "the declared source is the client the upstream is told of"
    );
    assert_eq!(
        raw_get(addr, v1, None).await.map(|r| r.0),
        Some(429),
        "and the client the rate limit counts: same source, second request"
    );
    // Another source (v2 binary header) is another client, though the socket is the same.
    let v2 = proxy_v2_ipv4([198, 51, 100, 9], 4000);
    assert_eq!(
        raw_get(addr, &v2, None).await,
        Some((200, "198.51.100.9".into()))
    );
    // A client's own X-Forwarded-For is appended to, not believed (no trusted proxies).
    let v1b = b"PROXY TCP6 2001:db8::5 ::1 5555 80\r\n";
    assert_eq!(
        raw_get(addr, v1b, Some("192.0.2.1")).await,
        Some((200, "192.0.2.1, 2001:db8::5".into()))
    );
    assert_eq!(
        up.requests(),
        3,
        "the limited request never reached the upstream"
    );
}

#[tokio::test]
async fn a_connection_without_a_valid_proxy_header_is_closed_and_counted() {
    let up = Upstream::start("up").await;
    let cfg = basic_config(&[("up", up.addr)], "[timeouts]\nclient_header_ms = 300\n").replacen(
        "name = \"main\"\n",
        "name = \"main\"\nproxy_protocol = true\n",
        1,
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    // Plain HTTP where the header should be: closed, nothing served.
    assert_eq!(raw_get(addr, b"", None).await, None);
    // Garbage that is no header.
    assert_eq!(raw_get(addr, b"PROXY TCP4 nonsense\r\n", None).await, None);
    // A v2 header declaring more than the 1 KiB bound: closed as soon as 1 KiB is seen.
    let mut big = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    big.extend([0x21, 0x11]);
    big.extend(2000u16.to_be_bytes());
    big.resize(1100, 0);
    let t = Instant::now();
    assert_eq!(raw_get(addr, &big, None).await, None);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "before the header timeout"
    );
    // Half a header, then silence: closed at the header timeout, not held.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"PROXY TCP4 203.0.113.7 ")
        .await
        .expect("write");
    let t = Instant::now();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "closed within 5 s");
    let waited = t.elapsed();
    assert!(out.is_empty(), "no bytes answered");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed at client_header_ms (300 ms), after {waited:?}"
    );
    assert_eq!(up.requests(), 0);
    let m = metrics(gw.admin_addr()).await;
    assert_eq!(
        sample(
            &m,
            "portcullis_proxy_protocol_failures_total{listener=\"main\"}"
        ),
        Some(4.0)
    );
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let up = Upstream::start("up").await;
    // The test client is 127.0.0.1: as a trusted proxy, its X-Forwarded-For is believed.
    let trusted = basic_config(
        &[("up", up.addr)],
        &format!("{ONE_PER_CLIENT}[http]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n"),
    );
    let gw = gateway(&trusted, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let get = |xff: &'static str| raw_get(addr, b"", Some(xff));
    assert_eq!(
        get("198.51.100.1").await,
        Some((200, "198.51.100.1, 127.0.0.1".into())),
        "the chain goes up with this hop appended"
    );
    // A different client behind the same proxy has its own budget; the rightmost
    // untrusted hop is the client (10.1.1.1 is a trusted hop, 1.1.1.1 the client's claim).
    assert_eq!(
        get("1.1.1.1, 198.51.100.2, 10.1.1.1").await.map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        get("198.51.100.1").await.map(|r| r.0),
        Some(429),
        "same client again"
    );
    assert_eq!(
        get("9.9.9.9, 198.51.100.2").await.map(|r| r.0),
        Some(429),
        "same client again"
    );
    drop(gw);

    // Without trusted proxies every request is the socket's client, whatever it claims.
    let plain = basic_config(&[("up", up.addr)], ONE_PER_CLIENT);
    let gw = gateway(&plain, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    assert_eq!(
        raw_get(addr, b"", Some("198.51.100.1")).await.map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        raw_get(addr, b"", Some("198.51.100.3")).await.map(|r| r.0),
        Some(429),
        "an untrusted peer's X-Forwarded-For changes nothing"
    );
}
