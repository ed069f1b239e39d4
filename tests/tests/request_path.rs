//! The request path's contracts, end to end: one request identity for matching and
//! forwarding, strict framing and host on HTTP/1.1 and HTTP/2, outbound filters on every
//! answer (but not on a shed 503), and one upstream client for proxy and fan-out.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AUTH: &str = "kind = \"inbound\"\norder = 10\nfailure = \"fail_closed\"\n\
                    [match]\npath_prefix = \"/admin-api\"\n\
                    [config]\nmode = \"api_key\"\nheader = \"x-api-key\"\nkeys = { ops = \"k1\" }\n";
const SECURITY: &str = "kind = \"outbound\"\norder = 20\nfailure = \"fail_open\"\n\
                        [config]\nset = { \"x-frame-options\" = \"DENY\" }\n";

/// A gateway with the auth filter on `/admin-api`, a security-headers filter on every
/// response, a catch-all route to an echo upstream, and `extra` TOML.
async fn guarded(up: SocketAddr, extra: &str) -> (portcullis::Gateway, TempDir) {
    let dir = temp_dir("request-path");
    install_plugin(&dir, "auth", "auth", AUTH);
    install_plugin(&dir, "security", "add-header", SECURITY);
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n\
         [[cluster]]\nname = \"echo\"\nendpoints = [\"{up}\"]\n\
         [[route]]\nname = \"all\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"echo\"\n\
         [plugins]\ndir = \"{}\"\n{extra}",
        dir.display()
    );
    (gateway(&cfg, Path::new(".")).await, dir)
}

/// Writes raw bytes, reads until the gateway closes or answers one response; fails the test
/// on a hang rather than passing with an empty reply.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert!(
        r.is_ok() || text.contains("\r\n\r\n"),
        "no answer in {:?} to {:?}",
        t0.elapsed(),
        String::from_utf8_lossy(bytes)
    );
    text
}

fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn no_spelling_of_a_guarded_path_walks_around_its_filter() {
    let up = Upstream::start("echo").await;
    let (gw, _dir) = guarded(up.addr, "").await;
    let addr = gw.listener_addr("main").expect("listener");

    let bypasses = [
        "/admin-api/ping",
        "/public/../admin-api/ping",
        "/./admin-api/ping",
        "/public/%2e%2e/admin-api/ping",
        "/public/%2E%2e/admin-api/ping",
        "/%61dmin-api/ping",
        "/admin%2Dapi/ping",
        "/admin%2dapi/ping",
        "//admin-api/ping",
        "/admin-api//ping",
        "///admin-api/./ping",
        "/x/y/../../admin-api/ping",
        "/%2e/admin-api/ping",
        "/admin-api/ping/.",
        "/admin-api/x/..",
    ];
    for path in bypasses {
        let before = up.requests();
        let (p, body) = send(addr, get(addr, path)).await;
        assert_eq!(p.status, 401, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(
            up.requests(),
            before,
            "{path} reached the upstream unauthenticated"
        );

        // With the key, the upstream sees the one normalized path.
        let mut req = get(addr, &format!("{path}?q=%2e%2e/a//b"));
        req.headers_mut()
            .insert("x-api-key", "k1".parse().expect("value"));
        let (p, body) = send(addr, req).await;
        assert_eq!(p.status, 200, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("echo json");
        let seen = v["path"].as_str().expect("path");
        let want = if path.ends_with("/x/..") {
            "/admin-api/?q=%2e%2e/a//b"
        } else if path.ends_with("/.") {
            "/admin-api/ping/?q=%2e%2e/a//b"
        } else {
            "/admin-api/ping?q=%2e%2e/a//b"
        };
        assert_eq!(seen, want, "{path}: the query must be untouched");
    }

    // Refused outright: above the root, dot segments with parameters, bad escapes.
    for path in [
        "/..",
        "/../admin-api/ping",
        "/a/../../admin-api/ping",
        "/%2e%2e/admin-api/ping",
        "/..;x/admin-api/ping",
        "/public/..;jsessionid=1/admin-api/ping",
        "/public/.;x/admin-api/ping",
        "/bad%zzescape",
    ] {
        let before = up.requests();
        let r = raw(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&r), 400, "{path}: {r}");
        assert!(r.contains("portcullis-error: bad-request"), "{path}: {r}");
        assert_eq!(up.requests(), before, "{path}");
    }

    // Encoded slashes are kept by default: one segment, so not the guarded prefix's `/`.
    let (p, body) = send(addr, get(addr, "/admin-api%2Fping")).await;
    assert_eq!(p.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("echo json");
    assert_eq!(v["path"], "/admin-api%2Fping");
    gw.shutdown().await;
}

/// A filter that rewrites a request into a guarded path hands it to the guard: later filters
/// match the path as changed (the filter index is looked up again), not the client's.
#[tokio::test]
async fn a_path_rewritten_into_a_guarded_prefix_meets_its_filter() {
    let up = Upstream::start("echo").await;
    let (gw, dir) = guarded(up.addr, "").await;
    install_plugin(
        &dir,
        "rewrite",
        "testbed",
        "kind = \"inbound\"\norder = 5\nfailure = \"fail_closed\"\n\
         [match]\npath_prefix = \"/public\"\n[config]\nrewrite_to = \"/admin-api/ping\"\n",
    );
    let addr = gw.listener_addr("main").expect("listener");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = up.requests();
        let (p, _) = send(addr, get(addr, "/public/x")).await;
        if p.status == 401 {
            assert_eq!(
                up.requests(),
                before,
                "the rewritten request reached the upstream"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rewrite filter never loaded ({})",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut req = get(addr, "/public/x?k=1");
    req.headers_mut()
        .insert("x-api-key", "k1".parse().expect("value"));
    let (p, body) = send(addr, req).await;
    assert_eq!(p.status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains("/admin-api/ping?k=1"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn escaped_slash_policies_and_merge_slashes_switch() {
    let up = Upstream::start("echo").await;
    let (gw, _dir) = guarded(
        up.addr,
        "[http]\nescaped_slashes = \"unescape\"\nmerge_slashes = true\n",
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    // Unescaped, `%2F` is a separator: the guard sees it.
    let (p, _) = send(addr, get(addr, "/public%2F..%2Fadmin-api/ping")).await;
    assert_eq!(p.status, 401);
    gw.shutdown().await;

    let (gw, _dir) = guarded(up.addr, "[http]\nescaped_slashes = \"reject\"\n").await;
    let addr = gw.listener_addr("main").expect("listener");
    let r = raw(addr, b"GET /a%2fb HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&r), 400, "{r}");
    assert!(r.contains("encoded slash"), "{r}");
    gw.shutdown().await;

    // Without merging, `//admin-api` is not `/admin-api` to anyone: the filter does not
    // match, and the upstream receives exactly `//admin-api/ping` too.
    let (gw, _dir) = guarded(up.addr, "[http]\nmerge_slashes = false\n").await;
    let addr = gw.listener_addr("main").expect("listener");
    let (p, body) = send(addr, get(addr, "//admin-api/ping")).await;
    assert_eq!(p.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("echo json");
    assert_eq!(v["path"], "//admin-api/ping");
    gw.shutdown().await;
}

#[tokio::test]
async fn ambiguous_http1_heads_get_400_with_a_reason() {
    let up = Upstream::start("a").await;
    let gw = gateway(&basic_config(&[("a", up.addr)], ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    for (head, reason) in [
        (
            &b"GET /a/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
            "more than one Host",
        ),
        (b"GET /a/x HTTP/1.1\r\n\r\n", "must have a Host"),
        (
            b"POST /a/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "both Content-Length and Transfer-Encoding",
        ),
        (b"GET /a/../../x HTTP/1.1\r\nHost: a\r\n\r\n", "above the root"),
    ] {
        let before = up.requests();
        let t0 = Instant::now();
        let r = raw(addr, head).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{:?} -> {r}", String::from_utf8_lossy(head));
        assert!(r.contains("portcullis-error: bad-request"), "{r}");
        assert!(r.contains(reason), "{r}");
        assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
        assert!(t0.elapsed() < Duration::from_secs(3), "answered late: {:?}", t0.elapsed());
        assert_eq!(up.requests(), before);
    }
    // HTTP/1.0 may omit Host.
    let r = raw(addr, b"GET /a/x HTTP/1.0\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"),
        "{r}"
    );

    // An absolute-form target's authority replaces Host (RFC 9112 §3.2.2): routing and
    // the upstream see `real.example`.
    let r = raw(
        addr,
        b"GET http://real.example:8080/a/x HTTP/1.1\r\nHost: spoofed.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("real.example:8080"), "{r}");
    assert!(!r.contains("spoofed.example"), "{r}");
    gw.shutdown().await;
}

async fn h2_send(
    addr: SocketAddr,
    req: http::Request<http_body_util::Full<Bytes>>,
) -> (http::response::Parts, Bytes) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req))
        .await
        .expect("answer in time")
        .expect("response");
    let (p, b) = resp.into_parts();
    (p, b.collect().await.expect("body").to_bytes())
}

#[tokio::test]
async fn http2_gets_the_same_identity_rules() {
    let up = Upstream::start("a").await;
    let gw = gateway(&basic_config(&[("a", up.addr)], ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let req = |uri: &str, hosts: &[&str]| {
        let mut b = http::Request::builder().uri(uri);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(http_body_util::Full::new(Bytes::new()))
            .expect("request")
    };
    let before = up.requests();
    for (r, reason) in [
        (
            req(&format!("http://{addr}/a/x"), &["a.example", "b.example"]),
            "more than one Host",
        ),
        (req("http://a.example/a/x", &["b.example"]), "disagrees"),
        (req("http://a.example/a/../../x", &[]), "above the root"),
        (req("http://a.example/a/..;x/y", &[]), "parameters"),
    ] {
        let (p, body) = h2_send(addr, r).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(p.status, 400, "{text}");
        assert_eq!(p.headers["portcullis-error"], "bad-request");
        assert!(text.contains(reason), "{text}");
    }
    assert_eq!(up.requests(), before);
    // The normalized path and the authority go up.
    let (p, body) = h2_send(addr, req("http://a.example/x/../a/%7Eecho", &[])).await;
    assert_eq!(p.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("echo json");
    assert_eq!(v["path"], "/a/~echo");
    assert_eq!(v["headers"]["host"], "a.example");
    gw.shutdown().await;
}

#[tokio::test]
async fn outbound_filters_see_gateway_errors_but_not_a_shed_503() {
    let up = Upstream::start("echo").await;
    let slow = Upstream::start_fixed("slow", 200, 3000).await;
    let dead = dead_addr().await;
    let dir = temp_dir("outbound-all");
    install_plugin(&dir, "auth", "auth", AUTH);
    install_plugin(&dir, "security", "add-header", SECURITY);
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n\
         [limits]\nmax_in_flight = 1\n\
         [http]\nerror_headers = {{ \"x-static\" = \"yes\" }}\n\
         [[cluster]]\nname = \"echo\"\nendpoints = [\"{}\"]\n\
         [[cluster]]\nname = \"slow\"\nendpoints = [\"{}\"]\n\
         [[cluster]]\nname = \"dead\"\nendpoints = [\"{dead}\"]\n\
         [[route]]\nname = \"slow\"\nmatch = {{ path_prefix = \"/slow\" }}\ncluster = \"slow\"\npriority = \"critical\"\ntimeouts = {{ upstream_headers_ms = 200 }}\n\
         [[route]]\nname = \"hold\"\nmatch = {{ path_prefix = \"/hold\" }}\ncluster = \"slow\"\npriority = \"critical\"\n\
         [[route]]\nname = \"dead\"\nmatch = {{ path_prefix = \"/dead\" }}\ncluster = \"dead\"\npriority = \"critical\"\n\
         [[route]]\nname = \"echo\"\nmatch = {{ path_prefix = \"/echo\" }}\ncluster = \"echo\"\npriority = \"critical\"\n\
         [[route]]\nname = \"admin\"\nmatch = {{ path_prefix = \"/admin-api\" }}\ncluster = \"echo\"\npriority = \"critical\"\n\
         [[route]]\nname = \"cheap\"\nmatch = {{ path_prefix = \"/cheap\" }}\ncluster = \"echo\"\npriority = \"sheddable\"\n\
         [plugins]\ndir = \"{}\"\n",
        up.addr,
        slow.addr,
        dir.display()
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    for (path, status, code) in [
        ("/echo/x", 200, ""),
        ("/nothing", 404, "no-route"),
        ("/admin-api/ping", 401, "plugin-rejected"),
        ("/dead/x", 502, "connect-failed"),
        ("/slow/x", 504, "upstream-timeout"),
    ] {
        let (p, _) = send(addr, get(addr, path)).await;
        assert_eq!(p.status, status, "{path}");
        assert_eq!(
            header(&p, "x-frame-options"),
            "DENY",
            "{path}: outbound filter skipped"
        );
        assert_eq!(header(&p, "portcullis-error"), code, "{path}");
        if status >= 500 || status == 404 {
            assert_eq!(header(&p, "x-static"), "yes", "{path}: error_headers");
        }
    }

    // Hold the one in-flight slot, then a sheddable request is shed: no Wasm on it, but
    // the static error headers and Retry-After are there.
    let hold = tokio::spawn(async move { send(addr, get(addr, "/hold/x")).await });
    let admin = gw.admin_addr();
    let t0 = Instant::now();
    while sample(
        &metrics(admin).await,
        "portcullis_in_flight{scope=\"global\"}",
    ) != Some(1.0)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the holding request never became in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (p, _) = send(addr, get(addr, "/cheap/x")).await;
    assert_eq!(p.status, 503);
    assert_eq!(header(&p, "portcullis-error"), "overloaded");
    assert_eq!(header(&p, "x-static"), "yes");
    assert!(!header(&p, "retry-after").is_empty());
    assert_eq!(
        header(&p, "x-frame-options"),
        "",
        "a shed 503 must not enter Wasm"
    );
    hold.abort();
    gw.shutdown().await;
}

#[tokio::test]
async fn a_filter_that_opts_out_skips_gateway_responses() {
    let up = Upstream::start("echo").await;
    let dir = temp_dir("outbound-optout");
    install_plugin(
        &dir,
        "security",
        "add-header",
        &SECURITY.replace("[config]", "gateway_responses = false\n[config]"),
    );
    let cfg = format!(
        "{}[plugins]\ndir = \"{}\"\n",
        basic_config(&[("echo", up.addr)], ""),
        dir.display()
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let (p, _) = send(addr, get(addr, "/echo/x")).await;
    assert_eq!(header(&p, "x-frame-options"), "DENY");
    let (p, _) = send(addr, get(addr, "/nothing")).await;
    assert_eq!(p.status, 404);
    assert_eq!(header(&p, "x-frame-options"), "");
    gw.shutdown().await;
}

fn retries(m: &str, cluster: &str) -> f64 {
    let prefix = format!("portcullis_retries_total{{cluster=\"{cluster}\"");
    m.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Proxy and fan-out share one client: both record retries, both use the cluster's connect
/// timeout (not the global one).
#[tokio::test]
async fn proxy_and_fanout_retry_and_time_out_the_same_way() {
    let good = Upstream::start("good").await;
    let dead = dead_addr().await;
    let busy = Upstream::start_fixed("busy", 200, 4000).await;
    let dir = temp_dir("one-client");
    install_plugin(
        &dir,
        "fan",
        "fanout",
        "kind = \"endpoint\"\n[config]\nclusters = \"flaky\"\npath = \"/x\"\ntimeout_ms = 5000\n",
    );
    install_plugin(
        &dir,
        "fanbusy",
        "fanout",
        "kind = \"endpoint\"\n[config]\nclusters = \"busy\"\npath = \"/x\"\ntimeout_ms = 5000\n",
    );
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n\
         [timeouts]\nconnect_ms = 4000\n\
         [[cluster]]\nname = \"flaky\"\nbalancer = \"round_robin\"\nendpoints = [\"{dead}\", \"{}\"]\noutlier = {{ max_ejected_percent = 0 }}\n\
         [[cluster]]\nname = \"busy\"\nendpoints = [\"{}\"]\npool = {{ max_connections_per_endpoint = 1 }}\ntimeouts = {{ connect_ms = 150 }}\n\
         [[route]]\nname = \"fan\"\nmatch = {{ path_prefix = \"/fan\" }}\nendpoint = \"fan\"\n\
         [[route]]\nname = \"fanbusy\"\nmatch = {{ path_prefix = \"/fanbusy\" }}\nendpoint = \"fanbusy\"\n\
         [[route]]\nname = \"flaky\"\nmatch = {{ path_prefix = \"/flaky\" }}\ncluster = \"flaky\"\n\
         [[route]]\nname = \"busy\"\nmatch = {{ path_prefix = \"/busy\" }}\ncluster = \"busy\"\n\
         [plugins]\ndir = \"{}\"\n",
        good.addr,
        busy.addr,
        dir.display()
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let admin = gw.admin_addr();

    // Round robin over a dead and a good endpoint: every other attempt is retried.
    for _ in 0..4 {
        let (p, _) = send(addr, get(addr, "/flaky/x")).await;
        assert_eq!(p.status, 200);
    }
    let after_proxy = retries(&metrics(admin).await, "flaky");
    assert!(
        after_proxy >= 1.0,
        "proxy retries not recorded: {after_proxy}"
    );
    for _ in 0..4 {
        let (p, body) = send(addr, get(addr, "/fan")).await;
        assert_eq!(p.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["results"][0]["status"], 200, "{v}");
    }
    let after_fanout = retries(&metrics(admin).await, "flaky");
    assert!(
        after_fanout >= after_proxy + 1.0,
        "fan-out retries not recorded: {after_proxy} -> {after_fanout}"
    );

    // The one connection to `busy` is taken by a slow request; the next waits for the
    // cluster's 150 ms connect timeout, not the global 4 s, through either caller.
    let holder = tokio::spawn(async move { send(addr, get(addr, "/busy/hold")).await });
    let taken = eventually(Duration::from_secs(5), || busy.requests() >= 1).await;
    assert!(taken, "the holding request never reached the upstream");
    let t0 = Instant::now();
    let (p, _) = send(addr, get(addr, "/busy/x")).await;
    let proxy_wait = t0.elapsed();
    assert_eq!(p.status, 504);
    assert_eq!(header(&p, "portcullis-error"), "connect-timeout");
    let t0 = Instant::now();
    let (p, body) = send(addr, get(addr, "/fanbusy")).await;
    let fan_wait = t0.elapsed();
    assert_eq!(p.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(v["results"][0]["error"].is_string(), "{v}");
    for (who, waited) in [("proxy", proxy_wait), ("fan-out", fan_wait)] {
        assert!(
            waited < Duration::from_millis(3000),
            "{who} waited {waited:?}: the global connect timeout, not the cluster's"
        );
    }
    holder.abort();
    gw.shutdown().await;
}
