//! Documented limits and error codes that had no end-to-end test: a listener's
//! `max_connections`, the TLS handshake bound, a route's `max_body_bytes`, HTTP/2
//! `max_concurrent_streams`, `eject_on_5xx`, `no-healthy-upstream`, `unknown-cluster`,
//! `endpoint-unavailable`, and uploads without an `admin_token`.

use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_AND_LISTENER: &str =
    "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n";

/// Sends one request on an open HTTP/1.1 connection and reads its (small) answer.
async fn request_on(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_full_listener_closes_new_connections_at_accept_and_counts_them() {
    let a = Upstream::start("a").await;
    let cfg = basic_config(&[("a", a.addr)], "").replacen(
        "name = \"main\"\nlisten = \"127.0.0.1:0\"\n",
        "name = \"main\"\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\n",
        1,
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());
    let rejected = "portcullis_connections_rejected_total{listener=\"main\"}";
    let active = "portcullis_connections_active{listener=\"main\"}";

    // Two open keep-alive connections fill the listener.
    let mut c1 = TcpStream::connect(addr).await.expect("connect");
    let mut c2 = TcpStream::connect(addr).await.expect("connect");
    assert!(request_on(&mut c1, "/a/echo")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(request_on(&mut c2, "/a/echo")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(wait_for_metric(admin, active, Duration::from_secs(5), |v| v == 2.0).await);
    assert_eq!(sample(&metrics(admin).await, rejected), Some(0.0));

    // A third is closed at accept: no answer, and counted.
    let mut c3 = TcpStream::connect(addr).await.expect("connect");
    let _ = c3
        .write_all(b"GET /a/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c3.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the extra connection is closed, not left hanging"
    );
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    assert!(
        wait_for_metric(admin, rejected, Duration::from_secs(5), |v| v == 1.0).await,
        "the rejection is counted"
    );
    assert_eq!(a.requests(), 2);

    // Closing one frees its slot for a new connection.
    drop(c1);
    assert!(wait_for_metric(admin, active, Duration::from_secs(5), |v| v == 1.0).await);
    let mut c4 = TcpStream::connect(addr).await.expect("connect");
    assert!(request_on(&mut c4, "/a/echo")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(request_on(&mut c2, "/a/echo")
        .await
        .starts_with("HTTP/1.1 200"));
    gw.shutdown().await;
}

#[tokio::test]
async fn the_tls_handshake_is_bounded_by_client_header_ms() {
    let a = Upstream::start("a").await;
    let dir = temp_dir("tls-handshake");
    let der = write_cert(&dir, "site", &["localhost"]);
    let extra = "[timeouts]\nclient_header_ms = 300\n[[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\ntls = { cert = \"site.crt\", key = \"site.key\" }\n";
    let gw = gateway(&basic_config(&[("a", a.addr)], extra), &dir).await;
    let addr = gw.listener_addr("tls").expect("tls listener");

    // A client that connects and never sends its ClientHello is cut off.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let took = t0.elapsed();
    assert!(r.is_ok(), "the silent handshake was not cut off within 5 s");
    assert!(
        took >= Duration::from_millis(300),
        "cut off before client_header_ms: {took:?}"
    );
    // Half a ClientHello (a TLS record header promising more) is cut off too.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "the stalled handshake was not cut off within 5 s"
    );

    // A prompt client is served.
    let cfg = tls_client(std::slice::from_ref(&der), &[b"http/1.1"]);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("handshake");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let resp = tx
        .send_request(get(addr, "/a/echo"))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_routes_max_body_bytes_overrides_the_global_limit() {
    let a = Upstream::start("a").await;
    let extra = "[limits]\nmax_body_bytes = 1000\n[[route]]\nname = \"tight\"\nmatch = { path_prefix = \"/tight\" }\ncluster = \"a\"\nmax_body_bytes = 100\n";
    let gw = gateway(&basic_config(&[("a", a.addr)], extra), Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let post = |path: &str, n: usize| {
        Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "x")
            .body(body(vec![b'b'; n]))
            .expect("request")
    };
    let (p, b) = send(addr, post("/tight/upload", 100)).await;
    assert_eq!(p.status, 200);
    assert_eq!(&b[..], b"100");
    let (p, _) = send(addr, post("/tight/upload", 101)).await;
    assert_eq!(p.status, 413);
    assert_eq!(header(&p, "portcullis-error"), "body-too-large");
    // Counted while streaming too (no content-length).
    let mut chunked =
        b"POST /tight/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"40\r\n");
        chunked.extend(std::iter::repeat_n(b'z', 0x40));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&chunked).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // Elsewhere the global 1000 bytes apply.
    let (p, b) = send(addr, post("/a/upload", 500)).await;
    assert_eq!(p.status, 200);
    assert_eq!(&b[..], b"500");
    let (p, _) = send(addr, post("/a/upload", 1001)).await;
    assert_eq!(p.status, 413);
    gw.shutdown().await;
}

#[tokio::test]
async fn max_concurrent_streams_bounds_http2_streams_per_connection() {
    let a = Upstream::start("a").await;
    let gw = gateway(
        &basic_config(&[("a", a.addr)], "[limits]\nmax_concurrent_streams = 2\n"),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2c");
    tokio::spawn(conn);
    let req = |path: &str| {
        Request::builder()
            .uri(format!("http://localhost{path}"))
            .body(body(""))
            .expect("request")
    };
    // One request first, so that the gateway's SETTINGS have arrived.
    let resp = tx.send_request(req("/a/echo")).await.expect("response");
    assert_eq!(resp.status(), 200);
    // Five slow requests at once on the connection: the client may open only two streams at
    // a time, so the upstream never sees more than two of them at once.
    let mut futs = Vec::new();
    for _ in 0..5 {
        futs.push(tx.send_request(req("/a/sleep/200")));
    }
    for f in futs {
        let resp = tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(a.requests(), 6);
    assert_eq!(a.peak(), 2, "at most max_concurrent_streams at once");
    gw.shutdown().await;
}

#[tokio::test]
async fn eject_on_5xx_counts_upstream_5xx_answers_for_ejection() {
    let bad = Upstream::start_fixed("bad", 500, 0).await;
    let good = Upstream::start("good").await;
    let outlier = |eject: bool| {
        format!("outlier = {{ consecutive_failures = 2, base_ejection_ms = 30000, max_ejected_percent = 50, eject_on_5xx = {eject} }}")
    };
    let cfg = format!(
        "{ADMIN_AND_LISTENER}[[cluster]]\nname = \"on\"\nendpoints = [\"{b}\", \"{g}\"]\n{}\n[[cluster]]\nname = \"off\"\nendpoints = [\"{b}\", \"{g}\"]\n{}\n[[route]]\nname = \"on\"\nmatch = {{ path_prefix = \"/on\" }}\ncluster = \"on\"\nretry = {{ attempts = 1 }}\n[[route]]\nname = \"off\"\nmatch = {{ path_prefix = \"/off\" }}\ncluster = \"off\"\nretry = {{ attempts = 1 }}\n",
        outlier(true),
        outlier(false),
        b = bad.addr,
        g = good.addr
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());
    let ejected = |cluster: &str| {
        format!(
            "portcullis_upstream_ejected{{cluster=\"{cluster}\",endpoint=\"{}\"}}",
            bad.addr
        )
    };
    // Round robin: 8 requests put 4 on the 500 endpoint in each cluster, unless ejected.
    let (mut on_500s, mut off_500s) = (0, 0);
    for _ in 0..8 {
        let (p, _) = send(addr, get(addr, "/on/x")).await;
        on_500s += usize::from(p.status == 500);
        let (p, _) = send(addr, get(addr, "/off/x")).await;
        off_500s += usize::from(p.status == 500);
    }
    let m = metrics(admin).await;
    assert_eq!(
        sample(&m, &ejected("on")),
        Some(1.0),
        "ejected after two 500s"
    );
    assert_eq!(on_500s, 2, "nothing went to it once ejected");
    assert_eq!(
        sample(&m, &ejected("off")),
        Some(0.0),
        "without eject_on_5xx a 500 is an answer, not a failure"
    );
    assert_eq!(off_500s, 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn every_endpoint_down_is_503_no_healthy_upstream() {
    let a = Controlled::start("a").await;
    let b = Controlled::start("b").await;
    let cfg = format!(
        "{ADMIN_AND_LISTENER}[[cluster]]\nname = \"c\"\nendpoints = [\"{}\", \"{}\"]\nhealth_check = {{ path = \"/healthz\", interval_ms = 30, timeout_ms = 500, healthy_threshold = 1, unhealthy_threshold = 1 }}\n[[route]]\nname = \"r\"\ncluster = \"c\"\n",
        a.addr, b.addr
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());
    let (p, _) = send(addr, get(addr, "/x")).await;
    assert_eq!(p.status, 200);
    a.set_health_status(503);
    b.set_health_status(503);
    for ep in [a.addr, b.addr] {
        let series = format!("portcullis_upstream_healthy{{cluster=\"c\",endpoint=\"{ep}\"}}");
        assert!(
            wait_for_metric(admin, &series, Duration::from_secs(5), |v| v == 0.0).await,
            "{ep} marked down"
        );
    }
    let before = a.requests() + b.requests();
    let (p, _) = send(addr, get(addr, "/x")).await;
    assert_eq!(p.status, 503);
    assert_eq!(header(&p, "portcullis-error"), "no-healthy-upstream");
    assert_eq!(a.requests() + b.requests(), before, "no endpoint was tried");
    let (_, pp) = send(admin, get(admin, "/admin/passports?limit=1")).await;
    assert!(
        String::from_utf8_lossy(&pp).contains("NO_HEALTHY_UPSTREAM"),
        "{}",
        String::from_utf8_lossy(&pp)
    );
    gw.shutdown().await;
}

fn plugin_config(up: SocketAddr, dir: &Path, extra_plugins: &str) -> String {
    format!(
        "{ADMIN_AND_LISTENER}[[cluster]]\nname = \"up\"\nendpoints = [\"{up}\"]\n[[route]]\nname = \"ghost\"\nmatch = {{ path_prefix = \"/ghost\" }}\nendpoint = \"ghost\"\n[[route]]\nname = \"all\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"up\"\n[plugins]\ndir = \"{}\"\n{extra_plugins}",
        dir.display()
    )
}

#[tokio::test]
async fn unknown_cluster_and_endpoint_unavailable_codes() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("limits-codes");
    install_plugin(
        &dir,
        "lost",
        "testbed",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/lost\"\n[config]\nmode = \"ok\"\ncluster = \"nowhere\"\n",
    );
    let gw = gateway(&plugin_config(up.addr, &dir, ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    let (p, _) = send(addr, get(addr, "/lost")).await;
    assert_eq!(p.status, 502);
    assert_eq!(header(&p, "portcullis-error"), "unknown-cluster");
    // A route to an endpoint plugin that is not loaded.
    let (p, _) = send(addr, get(addr, "/ghost")).await;
    assert_eq!(p.status, 503);
    assert_eq!(header(&p, "portcullis-error"), "endpoint-unavailable");
    // Once it is installed, the same route is served.
    install_plugin(
        &dir,
        "ghost",
        "fanout",
        "kind = \"endpoint\"\n[config]\nclusters = \"up\"\npath = \"/x\"\n",
    );
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            send(addr, get(addr, "/ghost")).await.0.status == 200
        })
        .await,
        "the endpoint is served once loaded"
    );
    assert_eq!(
        up.requests(),
        1,
        "only the endpoint's call reached the upstream"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn without_an_admin_token_uploads_and_deletes_are_forbidden() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("limits-no-token");
    install_plugin(
        &dir,
        "kept",
        "testbed",
        "kind = \"inbound\"\n[config]\nmode = \"kept\"\n",
    );
    let gw = gateway(&plugin_config(up.addr, &dir, ""), Path::new(".")).await;
    let admin = gw.admin_addr();
    let wasm = std::fs::read(guest("testbed")).expect("guest built");
    for token in [None, Some("anything"), Some("")] {
        let (ct, b) = multipart(&[("manifest", b"kind = \"inbound\"\n"), ("wasm", &wasm)]);
        let mut req = Request::builder()
            .method("PUT")
            .uri(format!("http://{admin}/admin/plugins/new1"))
            .header("host", "localhost")
            .header("content-type", ct);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let (p, _) = send(admin, req.body(body(b)).expect("request")).await;
        assert_eq!(p.status, 403, "upload with token {token:?}");
        let mut del = Request::builder()
            .method("DELETE")
            .uri(format!("http://{admin}/admin/plugins/kept"))
            .header("host", "localhost");
        if let Some(t) = token {
            del = del.header("authorization", format!("Bearer {t}"));
        }
        let (p, _) = send(admin, del.body(body("")).expect("request")).await;
        assert_eq!(p.status, 403, "delete with token {token:?}");
    }
    assert!(!dir.join("new1.wasm").exists() && !dir.join("new1.toml").exists());
    assert!(dir.join("kept.wasm").exists(), "nothing was deleted");
    // Reading is still allowed.
    let (p, _) = send(admin, get(admin, "/admin/plugins")).await;
    assert_eq!(p.status, 200);
    gw.shutdown().await;
}
