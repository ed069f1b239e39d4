//! Upstream faults end to end: every way an HTTP/1.1 upstream can break a response (resets,
//! half-closes, bad framing, garbage, a crawling body, TLS and DNS failures) checked for the
//! client's status, the passport, retries (idempotent GETs retried elsewhere when nothing was
//! answered yet, POSTs never replayed) and the metrics; and an endpoint killed under load
//! loses no GET, whatever the balancer. Real sockets on 127.0.0.1; every wait is bounded.

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use portcullis_tests::chaos::call;
use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One listener, one cluster `c` over `endpoints` with `cluster_extra`, one route `r` with
/// `route_extra`. (Failed requests' passports are kept by the admin API; the tests read those.)
fn config(endpoints: &[String], cluster_extra: &str, route_extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[[cluster]]
name = "c"
endpoints = [{}]
{cluster_extra}
[[route]]
name = "r"
match = {{ path_prefix = "/" }}
cluster = "c"
{route_extra}
"#,
        eps.join(", ")
    )
}

fn addrs(ups: &[&Faulty]) -> Vec<String> {
    ups.iter().map(|u| u.addr.to_string()).collect()
}

async fn metric(admin: SocketAddr, series: &str) -> f64 {
    sample(&metrics(admin).await, series).unwrap_or(f64::NAN)
}

/// The passport of the one request to `path`: (states, status, attempts).
async fn passport(admin: SocketAddr, path: &str) -> (Vec<String>, u64, u64) {
    // The passport is filed when the response ends; a cut body ends a moment after the client
    // saw it, so wait for it (bounded).
    let end = Instant::now() + Duration::from_secs(5);
    let last = loop {
        let (_, b) = send(admin, get(admin, "/admin/passports")).await;
        let all: serde_json::Value = serde_json::from_slice(&b).expect("passports json");
        if all
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["path"] == path))
        {
            break all;
        }
        assert!(Instant::now() < end, "a passport for {path}: {all}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let p = last
        .as_array()
        .and_then(|a| a.iter().find(|p| p["path"] == path))
        .expect("passport");
    let states = p["states"]
        .as_array()
        .expect("states")
        .iter()
        .filter_map(|s| s["state"].as_str().map(str::to_string))
        .collect();
    (
        states,
        p["status"].as_u64().unwrap_or(0),
        p["attempts"].as_u64().unwrap_or(0),
    )
}

// ---------------------------------------------------------------------------------------------
// An endpoint killed under load
// ---------------------------------------------------------------------------------------------

/// `clients` closed-loop keep-alive clients send GETs for `run`; one of three endpoints is
/// killed (listener and every connection closed at once) after `kill_after`. Returns (ok, failed
/// descriptions, requests sent).
async fn kill_under_load(
    balancer: &str,
    cluster_extra: &str,
    clients: usize,
    run: Duration,
    kill_after: Duration,
) -> (
    u64,
    Vec<String>,
    Arc<Faulty>,
    SocketAddr,
    portcullis::Gateway,
) {
    // `a` closes every connection it is asked to reuse (the keep-alive race, each time), as
    // upstreams with idle or per-connection limits do now and then: so a retry that lands on
    // `a` meets a stale pooled connection.
    let a = Faulty::start_one_shot("a").await;
    let b = Arc::new(Faulty::start("b").await);
    let c = Faulty::start("c").await;
    let gw = gateway(
        &config(
            &addrs(&[&a, &b, &c]),
            &format!(
                "balancer = \"{balancer}\"\nretry_budget = {{ percent = 100, min_concurrency = 1000 }}\n{cluster_extra}"
            ),
            "",
        ),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let end = Instant::now() + run;
    let mut tasks = Vec::new();
    for n in 0..clients {
        let (ok, failed) = (ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut tx = None;
            while Instant::now() < end {
                if tx.is_none() {
                    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                    let (t, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                        .await
                        .expect("handshake");
                    tokio::spawn(conn);
                    tx = Some(t);
                }
                let Some(t) = tx.as_mut() else { continue };
                i += 1;
                let path = format!("/load/{n}/{i}");
                let req = Request::builder()
                    .uri(&path)
                    .header("host", "localhost")
                    .body(portcullis_tests::body(Bytes::new()))
                    .expect("request");
                let res = tokio::time::timeout(Duration::from_secs(10), async {
                    let r = t.send_request(req).await?;
                    let status = r.status().as_u16();
                    let code = r
                        .headers()
                        .get("portcullis-error")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let body = r.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>((status, code, body))
                })
                .await;
                match res {
                    Ok(Ok((200, _, body))) if body.ends_with(format!("{path}\n").as_bytes()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok((status, code, _))) => {
                        failed
                            .lock()
                            .expect("failed")
                            .push(format!("{path}: {status} {code}"));
                    }
                    Ok(Err(e)) => {
                        failed.lock().expect("failed").push(format!("{path}: {e}"));
                        tx = None;
                    }
                    Err(_) => {
                        failed
                            .lock()
                            .expect("failed")
                            .push(format!("{path}: timeout"));
                        tx = None;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(kill_after).await;
    b.kill();
    for t in tasks {
        t.await.expect("client task");
    }
    let _ = admin;
    let failed = std::mem::take(&mut *failed.lock().expect("failed"));
    drop((a, c));
    (ok.load(Ordering::Relaxed), failed, b, admin, gw)
}

async fn passports_of(admin: SocketAddr, failed: &[String]) -> String {
    let (_, b) = send(admin, get(admin, "/admin/passports")).await;
    let all: serde_json::Value = serde_json::from_slice(&b).expect("passports");
    let mut out = String::new();
    for f in failed.iter().take(5) {
        let path = f.split(':').next().unwrap_or("");
        if let Some(p) = all
            .as_array()
            .and_then(|a| a.iter().find(|p| p["path"] == path))
        {
            out.push_str(&format!("{p}\n"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_killed_under_load_loses_no_get_whatever_the_balancer() {
    for balancer in [
        "round_robin",
        "least_in_flight",
        "least_in_flight_ewma",
        "p2c_peak_ewma",
    ] {
        for extra in ["", "outlier = { max_ejected_percent = 0 }"] {
            let (ok, failed, dead, admin, gw) = kill_under_load(
                balancer,
                extra,
                16,
                Duration::from_millis(2500),
                Duration::from_millis(800),
            )
            .await;
            let pp = passports_of(admin, &failed).await;
            let retries = metric(
                admin,
                "portcullis_retries_total{cluster=\"c\",reason=\"reset\"}",
            )
            .await
                + metric(
                    admin,
                    "portcullis_retries_total{cluster=\"c\",reason=\"connect_failed\"}",
                )
                .await;
            eprintln!(
                "{balancer} [{extra}]: {ok} ok, {} failed, dead endpoint served {}, retries {retries}",
                failed.len(),
                dead.total()
            );
            assert!(
                failed.is_empty(),
                "{balancer} [{extra}]: {} of {} GETs failed: {:?}\n{pp}",
                failed.len(),
                ok + failed.len() as u64,
                &failed[..failed.len().min(10)]
            );
            assert!(ok > 200, "{balancer}: load ran ({ok} requests)");
            assert!(
                retries >= 1.0,
                "{balancer}: the kill's failures were retried"
            );
            assert_eq!(
                metric(
                    admin,
                    "portcullis_retry_budget_exhausted_total{cluster=\"c\"}"
                )
                .await,
                0.0,
                "{balancer}: the budget never refused a retry"
            );
            assert!(
                dead.total() > 0,
                "{balancer}: the killed endpoint had traffic"
            );
            gw.shutdown().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One fault at a time
// ---------------------------------------------------------------------------------------------

/// A gateway over `[faulty, good]` (round robin: the first request goes to `faulty`).
struct Rig {
    faulty: Faulty,
    /// A well-behaved endpoint (the faults are chosen by path, so it is not a `Faulty`).
    good: Controlled,
    gw: portcullis::Gateway,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Rig {
    async fn start(with_good: bool, cluster_extra: &str, route_extra: &str) -> Rig {
        let faulty = Faulty::start("faulty").await;
        let good = Controlled::start("good").await;
        let mut eps = addrs(&[&faulty]);
        if with_good {
            eps.push(good.addr.to_string());
        }
        let gw = gateway(&config(&eps, cluster_extra, route_extra), Path::new(".")).await;
        let addr = gw.listener_addr("main").unwrap();
        let admin = gw.admin_addr();
        Rig {
            faulty,
            good,
            gw,
            addr,
            admin,
        }
    }

    async fn retries(&self, reason: &str) -> f64 {
        metric(
            self.admin,
            &format!("portcullis_retries_total{{cluster=\"c\",reason=\"{reason}\"}}"),
        )
        .await
    }

    async fn endpoint_metric(&self, name: &str, ep: &Faulty) -> f64 {
        metric(
            self.admin,
            &format!("{name}{{cluster=\"c\",endpoint=\"{}\"}}", ep.addr),
        )
        .await
    }
}

/// A fault before any response byte: a GET is answered by the other endpoint (one retry,
/// counted as `reset`), a POST is never replayed (502 `upstream-reset`, one request upstream).
async fn before_first_byte_is_retried_for_get_only(fault: &str) {
    let rig = Rig::start(true, "", "").await;
    let path = format!("/{fault}/get");
    let seen = call(rig.addr, "GET", &path, b"").await;
    assert_eq!(
        seen.status, 200,
        "{fault}: GET answered by the good endpoint: {seen:?}"
    );
    assert_eq!(seen.attempts, "2", "{fault}: {seen:?}");
    let body = seen.body.expect("complete body");
    assert_eq!(&body[..], b"good answered\n");
    assert_eq!(rig.faulty.requests(&format!("/{fault}")), 1);
    assert_eq!(rig.good.requests(), 1);
    let (states, status, attempts) = passport(rig.admin, &path).await;
    assert_eq!((status, attempts), (200, 2), "{fault}: {states:?}");
    for s in ["UPSTREAM_RESET", "RETRY", "RESP_HEADERS_RECEIVED", "DONE"] {
        assert!(states.iter().any(|x| x == s), "{fault}: {s} in {states:?}");
    }
    assert_eq!(rig.retries("reset").await, 1.0, "{fault}");
    assert_eq!(
        rig.endpoint_metric("portcullis_upstream_failures_total", &rig.faulty)
            .await,
        1.0,
        "{fault}: the faulty endpoint's failure is counted"
    );
    rig.gw.shutdown().await;

    // A POST: the same fault, no replay.
    let rig = Rig::start(true, "", "").await;
    let path = format!("/{fault}/post");
    let seen = call(rig.addr, "POST", &path, b"payload").await;
    assert_eq!(
        (seen.status, seen.error_code.as_str()),
        (502, "upstream-reset"),
        "{fault}: POST not replayed: {seen:?}"
    );
    assert_eq!(rig.faulty.requests(&format!("/{fault}")), 1);
    assert_eq!(
        rig.good.requests(),
        0,
        "{fault}: a POST never reaches a second endpoint"
    );
    let (states, status, attempts) = passport(rig.admin, &path).await;
    assert_eq!((status, attempts), (502, 1));
    assert!(states.iter().any(|s| s == "UPSTREAM_RESET"), "{states:?}");
    assert!(!states.iter().any(|s| s == "RETRY"), "{states:?}");
    assert_eq!(rig.retries("reset").await, 0.0);
    rig.gw.shutdown().await;
}

#[tokio::test]
async fn reset_before_the_head_is_retried_for_get_and_never_for_post() {
    before_first_byte_is_retried_for_get_only("reset-before-head").await;
}

#[tokio::test]
async fn half_close_before_the_head_is_retried_for_get_and_never_for_post() {
    before_first_byte_is_retried_for_get_only("half-close-before-head").await;
}

#[tokio::test]
async fn a_garbage_status_line_is_retried_for_get_and_never_for_post() {
    // Not a response: nothing reached the client, so it is a failed attempt like a reset.
    before_first_byte_is_retried_for_get_only("garbage-status").await;
}

#[tokio::test]
async fn a_garbage_status_line_alone_is_a_502() {
    let rig = Rig::start(false, "", "").await;
    let seen = call(rig.addr, "GET", "/garbage-status/x", b"").await;
    assert_eq!(
        (seen.status, seen.error_code.as_str()),
        (502, "upstream-reset")
    );
    assert_eq!(
        rig.faulty.total(),
        1,
        "no endpoint to retry on: one request"
    );
    rig.gw.shutdown().await;
}

/// A fault after the head went to the client: the client has a 200 head and a body that does
/// not complete (an error, never a clean short body); no retry; the passport records the cut.
async fn after_the_head_the_body_is_cut(fault: &str, state: &str) {
    let rig = Rig::start(true, "", "").await;
    let path = format!("/{fault}/x");
    let seen = call(rig.addr, "GET", &path, b"").await;
    assert_eq!(
        seen.status, 200,
        "{fault}: the head was already sent: {seen:?}"
    );
    assert_eq!(seen.attempts, "1", "{fault}: never retried after the head");
    assert!(
        seen.body.is_err(),
        "{fault}: the client must see the body cut, not a complete response: {seen:?}"
    );
    assert_eq!(rig.good.requests(), 0, "{fault}: not replayed");
    let (states, status, _) = passport(rig.admin, &path).await;
    assert_eq!(status, 200);
    assert!(
        states.iter().any(|s| s == state),
        "{fault}: {state} in {states:?}"
    );
    assert!(!states.iter().any(|s| s == "RETRY"), "{states:?}");
    let sent = states.iter().position(|s| s == "RESP_HEADERS_SENT");
    let cut = states.iter().position(|s| s == state);
    assert!(
        sent < cut,
        "{fault}: cut after the head went down: {states:?}"
    );
    assert_eq!(rig.retries("reset").await, 0.0);
    assert_eq!(
        rig.endpoint_metric("portcullis_upstream_failures_total", &rig.faulty)
            .await,
        0.0,
        "{fault}: a body cut after the head is not an endpoint failure (documented)"
    );
    // The connection is not pooled: the next request gets a sound answer on a new one.
    let next = call(rig.addr, "GET", "/after", b"").await;
    assert_eq!(next.status, 200, "{fault}: {next:?}");
    assert!(next.body.is_ok(), "{fault}: {next:?}");
    rig.gw.shutdown().await;
}

#[tokio::test]
async fn a_reset_after_the_head_cuts_the_body() {
    after_the_head_the_body_is_cut("reset-after-head", "UPSTREAM_RESET").await;
}

#[tokio::test]
async fn a_reset_mid_body_cuts_the_body() {
    after_the_head_the_body_is_cut("reset-mid-body", "UPSTREAM_RESET").await;
}

#[tokio::test]
async fn a_half_close_after_the_head_cuts_the_body() {
    after_the_head_the_body_is_cut("half-close-after-head", "UPSTREAM_RESET").await;
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_cuts_the_body() {
    after_the_head_the_body_is_cut("short-body", "UPSTREAM_RESET").await;
}

#[tokio::test]
async fn chunked_encoding_errors_cut_the_body() {
    for fault in [
        "chunked-bad-size",
        "chunked-missing-crlf",
        "chunked-truncated",
    ] {
        after_the_head_the_body_is_cut(fault, "UPSTREAM_RESET").await;
    }
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_is_cut_at_the_length() {
    let rig = Rig::start(false, "", "").await;
    let seen = call(rig.addr, "GET", "/long-body", b"").await;
    assert_eq!(seen.status, 200);
    assert_eq!(
        &seen.body.expect("complete")[..],
        b"0123456789",
        "exactly Content-Length bytes reach the client"
    );
    // The surplus bytes poison that connection; the next request must not read them as its
    // answer (the connection is dropped, or its stale reuse is replayed on a fresh one).
    for i in 0..3 {
        let path = format!("/after/{i}");
        let next = call(rig.addr, "GET", &path, b"").await;
        assert_eq!(next.status, 200, "{next:?}");
        assert_eq!(
            &next.body.expect("complete")[..],
            format!("faulty ok {path}\n").as_bytes()
        );
    }
    rig.gw.shutdown().await;
}

#[tokio::test]
async fn a_crawling_body_is_cut_by_the_body_idle_timeout_or_the_deadline() {
    // 1 byte every 300 ms against a 100 ms idle timeout: cut at the first gap.
    let rig = Rig::start(false, "timeouts.upstream_body_idle_ms = 100", "").await;
    let t = Instant::now();
    let seen = call(rig.addr, "GET", "/slow-body/300", b"").await;
    assert_eq!(seen.status, 200);
    assert!(seen.body.is_err(), "cut: {seen:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let (states, _, _) = passport(rig.admin, "/slow-body/300").await;
    assert!(
        states.iter().any(|s| s == "UPSTREAM_BODY_TIMEOUT"),
        "{states:?}"
    );
    rig.gw.shutdown().await;

    // 1 byte every 40 ms never trips the idle timeout, but the 400 ms deadline cuts it
    // (the whole body would take 800 ms).
    let rig = Rig::start(
        false,
        "timeouts.upstream_body_idle_ms = 1000",
        "timeouts.request_deadline_ms = 400",
    )
    .await;
    let t = Instant::now();
    let seen = call(rig.addr, "GET", "/slow-body/40", b"").await;
    assert_eq!(seen.status, 200);
    assert!(seen.body.is_err(), "cut by the deadline: {seen:?}");
    assert!(
        t.elapsed() < Duration::from_millis(750),
        "{:?}",
        t.elapsed()
    );
    let (states, _, _) = passport(rig.admin, "/slow-body/40").await;
    assert!(
        states.iter().any(|s| s == "DEADLINE_EXCEEDED"),
        "{states:?}"
    );

    // Slow but within both: the whole body arrives.
    let seen = call(rig.addr, "GET", "/slow-body/5", b"").await;
    assert_eq!(&seen.body.expect("complete")[..], &[b's'; 20][..]);
    rig.gw.shutdown().await;
}

/// A passport's detail for `path`.
async fn detail(admin: SocketAddr, path: &str) -> String {
    let (_, b) = send(admin, get(admin, "/admin/passports")).await;
    let all: serde_json::Value = serde_json::from_slice(&b).expect("passports");
    all.as_array()
        .and_then(|a| a.iter().find(|p| p["path"] == path))
        .and_then(|p| p["detail"].as_str())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn tls_handshake_failures_are_502_upstream_tls_failed_with_the_reason() {
    let dir = temp_dir("faults-tls");
    write_cert(&dir, "server", &["localhost"]);
    write_cert(&dir, "other", &["localhost"]);
    let tls_up = Upstream::start_tls("tls", &dir, "server").await;
    let plain = Faulty::start("plain").await;
    // The gateway trusts only `other`: the server's certificate is not trusted. And a TLS
    // cluster pointed at a plain-HTTP server gets plain bytes back.
    for (ep, case) in [
        (tls_up.addr.to_string(), "untrusted"),
        (plain.addr.to_string(), "plain"),
    ] {
        let cfg = config(
            std::slice::from_ref(&ep),
            &format!(
                "tls = {{ ca = \"{}\", sni = \"localhost\" }}",
                dir.join("other.crt").display()
            ),
            "",
        );
        let gw = gateway(&cfg, Path::new(".")).await;
        let addr = gw.listener_addr("main").unwrap();
        let admin = gw.admin_addr();
        let path = format!("/tls/{case}");
        let t = Instant::now();
        let seen = call(addr, "GET", &path, b"").await;
        assert_eq!(
            (seen.status, seen.error_code.as_str()),
            (502, "upstream-tls-failed"),
            "{case}: {seen:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{case}: bounded");
        let (states, status, _) = passport(admin, &path).await;
        assert_eq!(status, 502);
        assert!(states.iter().any(|s| s == "CONNECT_FAILED"), "{states:?}");
        let why = detail(admin, &path).await;
        assert!(why.contains("TLS handshake"), "{case}: reason kept: {why}");
        let failures = metric(
            admin,
            &format!(
                "portcullis_upstream_connect_failures_total{{cluster=\"c\",endpoint=\"{}\"}}",
                ep
            ),
        )
        .await;
        assert!(failures >= 1.0, "{case}: {failures}");
        gw.shutdown().await;
    }
    assert_eq!(plain.total(), 0, "a TLS hello is not an HTTP request");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_bounded_502_connect_failed_with_the_reason() {
    let cfg = config(
        &["nonexistent.invalid:80".to_string()],
        "timeouts.connect_ms = 2000",
        "",
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();
    let t = Instant::now();
    let seen = call(addr, "GET", "/dns", b"").await;
    let took = t.elapsed();
    // Resolved on connect by the system resolver: `.invalid` never resolves (RFC 6761), so
    // the answer is a refusal with the resolver's reason, or, with no resolver reachable, the
    // connect timeout; never a hang.
    assert!(
        took < Duration::from_millis(2500),
        "bounded by connect_ms: {took:?}"
    );
    let why = detail(admin, "/dns").await;
    match seen.error_code.as_str() {
        "connect-failed" => {
            assert_eq!(seen.status, 502);
            assert!(
                why.contains("nonexistent.invalid"),
                "the reason names the host: {why}"
            );
        }
        "connect-timeout" => assert_eq!(seen.status, 504),
        other => panic!("unexpected answer {other}: {seen:?}"),
    }
    eprintln!(
        "dns: {} {} in {took:?}: {why}",
        seen.status, seen.error_code
    );
    gw.shutdown().await;
}

/// DNS failure (DNS discovery): a cluster whose name has never resolved boots with no
/// endpoints; its requests are a fast 503 `no-healthy-upstream`, the failed lookups are
/// counted, and it serves once the name appears (lookups go on while it has no endpoints).
#[tokio::test]
async fn a_dns_cluster_whose_name_never_resolved_is_a_503_no_healthy_upstream_until_it_does() {
    let dns = portcullis_tests::dns::DnsServer::start().await;
    let up = Faulty::start("up").await;
    let cfg = config(&["x:1".to_string()], "", "").replace(
        "endpoints = [\"x:1\"]",
        &format!(
            "endpoints = {{ dns = \"svc.test:{}\", refresh_ms = 200 }}",
            up.addr.port()
        ),
    ) + &format!("[dns]\nnameservers = [\"{}\"]\n", dns.addr);
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();
    let nx = "portcullis_dns_lookups_total{cluster=\"c\",result=\"nxdomain\"}";
    assert!(
        wait_for_metric(admin, nx, Duration::from_secs(5), |v| v >= 1.0).await,
        "the failed lookup is counted"
    );
    let t = Instant::now();
    let seen = call(addr, "GET", "/never", b"").await;
    assert_eq!(
        (seen.status, seen.error_code.as_str()),
        (503, "no-healthy-upstream"),
        "{seen:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "fast: {:?}",
        t.elapsed()
    );
    let (states, status, _) = passport(admin, "/never").await;
    assert_eq!(status, 503);
    assert!(
        states.iter().any(|s| s == "NO_HEALTHY_UPSTREAM"),
        "{states:?}"
    );
    let gauge = "portcullis_upstream_endpoints{cluster=\"c\"}";
    assert_eq!(metric(admin, gauge).await, 0.0);
    assert_eq!(up.total(), 0);
    // The name appears: the retrying lookups find it.
    dns.set_ips("svc.test", &[up.addr.ip()]);
    assert!(
        wait_for_metric(admin, gauge, Duration::from_secs(4), |v| v == 1.0).await,
        "found once it resolves"
    );
    let seen = call(addr, "GET", "/later", b"").await;
    assert_eq!(seen.status, 200, "{seen:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stale_pooled_connection_is_replayed_fresh_on_any_attempt_whatever_the_balancer() {
    // Every pooled connection the one-shot upstream holds is closed when reused: each request
    // that reuses one meets the keep-alive race. With the other endpoint dead (and never
    // ejected), a GET's first attempt often fails there, so its second attempt is the one
    // that meets the race: it must be replayed on a fresh connection, not lost.
    for balancer in [
        "round_robin",
        "least_in_flight",
        "least_in_flight_ewma",
        "p2c_peak_ewma",
    ] {
        let one_shot = Faulty::start_one_shot("oneshot").await;
        let dead = dead_addr().await;
        let gw = gateway(
            &config(
                &[dead.to_string(), one_shot.addr.to_string()],
                &format!("balancer = \"{balancer}\"\noutlier = {{ max_ejected_percent = 0 }}"),
                "",
            ),
            Path::new("."),
        )
        .await;
        let addr = gw.listener_addr("main").unwrap();
        let admin = gw.admin_addr();
        for i in 0..20 {
            let path = format!("/stale/{i}");
            let seen = call(addr, "GET", &path, b"").await;
            assert_eq!(seen.status, 200, "{balancer}: {path}: {seen:?}");
        }
        assert!(
            one_shot.stale_closes() > 0,
            "{balancer}: the race was provoked"
        );
        let resets = metric(
            admin,
            "portcullis_retries_total{cluster=\"c\",reason=\"reset\"}",
        )
        .await;
        assert_eq!(
            resets,
            one_shot.stale_closes() as f64,
            "{balancer}: each stale connection was replayed once"
        );
        gw.shutdown().await;
    }
}
