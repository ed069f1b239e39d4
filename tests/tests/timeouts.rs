//! Every timeout ends in its own status, `portcullis-error` code and passport state.

use http::Request;
use portcullis_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn last_passport_states(admin: std::net::SocketAddr) -> Vec<String> {
    let (_, b) = send(admin, get(admin, "/admin/passports?limit=1")).await;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    v[0]["states"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["state"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn client_header_timeout_is_408_and_idle_keepalive_closes_quietly() {
    let a = Upstream::start("a").await;
    let cfg = basic_config(
        &[("a", a.addr)],
        "[timeouts]\nclient_header_ms = 300\nclient_idle_ms = 600\n",
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();

    // Half a head, then silence. The clock starts before the connection, so the lower bound
    // holds for a correct gateway however slowly this machine runs.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /a/echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("connection closed in time")
        .ok();
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "got {text:?}");
    assert!(text.contains("portcullis-error: client-header-timeout"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // A served keep-alive connection that then goes idle is closed without a response.
    // The clock starts before the request: the connection goes idle only after the response,
    // so a correct gateway closes it no sooner than client_idle_ms (600 ms) from here.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /a/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Read exactly the one response (its head, then content-length bytes of body).
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let (head_end, body_len) = loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the response: {got:?}");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            break (i + 4, len);
        }
    };
    while got.len() < head_end + body_len {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-body");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let mut rest = got.split_off(head_end + body_len);
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("idle connection closed in time");
    let took = t0.elapsed();
    assert!(closed.is_ok(), "closed cleanly, not reset: {closed:?}");
    assert!(
        rest.is_empty(),
        "idle close must be quiet (no bytes at all): {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let m = metrics(gw.admin_addr()).await;
    assert_eq!(
        sample(
            &m,
            "portcullis_client_header_timeouts_total{listener=\"main\"}"
        ),
        Some(1.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn client_body_idle_timeout_is_408() {
    let a = Upstream::start("a").await;
    let cfg = basic_config(&[("a", a.addr)], "[timeouts]\nclient_body_idle_ms = 300\n");
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /a/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let t0 = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "got {text:?}");
    assert!(
        text.contains("portcullis-error: client-body-timeout"),
        "{text}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    let states = last_passport_states(gw.admin_addr()).await;
    assert!(
        states.iter().any(|s| s == "CLIENT_BODY_TIMEOUT"),
        "{states:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_header_timeout_is_504_and_route_override_applies() {
    let a = Upstream::start("a").await;
    let extra = r#"
[timeouts]
upstream_headers_ms = 5000
[[route]]
name = "impatient"
match = { path_prefix = "/impatient" }
cluster = "a"
timeouts = { upstream_headers_ms = 200 }
"#;
    let gw = gateway(&basic_config(&[("a", a.addr)], extra), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let t0 = Instant::now();
    let (p, _) = send(addr, get(addr, "/impatient/sleep/3000")).await;
    assert_eq!(p.status, 504);
    assert_eq!(p.headers["portcullis-error"], "upstream-timeout");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    let states = last_passport_states(gw.admin_addr()).await;
    assert!(states.iter().any(|s| s == "UPSTREAM_TIMEOUT"), "{states:?}");
    // The global 5 s applies elsewhere: a 300 ms upstream is fine.
    let (p, _) = send(addr, get(addr, "/a/sleep/300")).await;
    assert_eq!(p.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn request_deadline_is_504_deadline_exceeded() {
    let a = Upstream::start("a").await;
    let extra = r#"
[[route]]
name = "deadline"
match = { path_prefix = "/deadline" }
cluster = "a"
timeouts = { request_deadline_ms = 300 }
"#;
    let gw = gateway(&basic_config(&[("a", a.addr)], extra), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let t0 = Instant::now();
    let (p, _) = send(addr, get(addr, "/deadline/sleep/3000")).await;
    assert_eq!(p.status, 504);
    assert_eq!(p.headers["portcullis-error"], "deadline-exceeded");
    assert!(t0.elapsed() < Duration::from_millis(1500));
    let states = last_passport_states(gw.admin_addr()).await;
    assert!(
        states.iter().any(|s| s == "DEADLINE_EXCEEDED"),
        "{states:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_body_idle_timeout_cuts_the_stream() {
    let a = Upstream::start("a").await;
    let cfg = basic_config(
        &[("a", a.addr)],
        "[timeouts]\nupstream_body_idle_ms = 300\n",
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(get(addr, "/a/stall-body")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let t0 = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        http_body_util::BodyExt::collect(resp.into_body()),
    )
    .await
    .expect("body ends in time");
    assert!(r.is_err(), "a cut stream must not look complete");
    assert!(t0.elapsed() < Duration::from_secs(2));
    let states = last_passport_states(gw.admin_addr()).await;
    assert!(
        states.iter().any(|s| s == "UPSTREAM_BODY_TIMEOUT"),
        "{states:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn connect_timeout_bounds_waiting_for_an_upstream_connection() {
    // One connection per endpoint: while a slow request holds it, the next request waits
    // for a connection and gives up at the connect timeout.
    let a = Upstream::start("a").await;
    let cfg = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[[cluster]]
name = "a"
endpoints = ["{}"]
pool = {{ max_connections_per_endpoint = 1 }}
timeouts = {{ connect_ms = 200 }}
[[route]]
name = "a"
match = {{ path_prefix = "/a" }}
cluster = "a"
"#,
        a.addr
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let slow = tokio::spawn(async move { send(addr, get(addr, "/a/sleep/1500")).await });
    // Wait until the slow request holds the one connection (it is at the upstream).
    assert!(
        eventually(Duration::from_secs(5), || a
            .active
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1)
        .await,
        "the slow request reached the upstream"
    );
    let t0 = Instant::now();
    let (p, _) = send(addr, get(addr, "/a/echo")).await;
    assert_eq!(p.status, 504);
    assert_eq!(p.headers["portcullis-error"], "connect-timeout");
    assert!(t0.elapsed() < Duration::from_secs(1));
    let (p, _) = slow.await.unwrap();
    assert_eq!(p.status, 200);
    let req = Request::builder()
        .uri("/a/echo")
        .header("host", "x")
        .body(body(""))
        .unwrap();
    let (p, _) = send(addr, req).await;
    assert_eq!(p.status, 200, "the connection is back in the pool");
    gw.shutdown().await;
}

/// A client that asks for a large response and then reads nothing is cut off after
/// `client_write_idle_ms`: it cannot pin a connection, an upstream connection and their
/// buffers for as long as the upstream is willing to send.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_at_client_write_idle_ms() {
    let a = Upstream::start("a").await;
    let cfg = basic_config(&[("a", a.addr)], "[timeouts]\nclient_write_idle_ms = 400\n");
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let total: u64 = 256 << 20;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /a/download/{total} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Read nothing for well past the write timeout; the socket buffers fill meanwhile.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // Then read what was sent before the gateway gave up: the stream must end, far short
    // of the whole body (a gateway without the timeout would resume and send all of it).
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection stayed open ({got} bytes read)"
    );
    assert!(
        got < total / 4,
        "{got} of {total} bytes arrived: the gateway kept writing to a client that stopped reading"
    );
    // And the gateway serves on.
    let (p, _) = send(addr, get(addr, "/a/echo")).await;
    assert_eq!(p.status, 200);
    gw.shutdown().await;
}
