//! Upstream TLS (verified against a given CA) and upstream HTTP/2 multiplexing.

use portcullis_tests::*;
use std::time::Duration;

fn one_cluster(addr: std::net::SocketAddr, cluster_extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[[cluster]]
name = "c"
endpoints = ["{addr}"]
{cluster_extra}
[[route]]
name = "r"
cluster = "c"
"#
    )
}

#[tokio::test]
async fn upstream_tls_verifies_against_the_given_ca() {
    let dir = temp_dir("uptls");
    write_cert(&dir, "upstream", &["upstream.test"]);
    write_cert(&dir, "other", &["other.test"]);
    let up = Upstream::start_tls("secure", &dir, "upstream").await;

    let good = one_cluster(
        up.addr,
        "tls = { sni = \"upstream.test\", ca = \"upstream.crt\" }",
    );
    let gw = gateway(&good, &dir).await;
    let addr = gw.listener_addr("main").unwrap();
    let (p, _) = send(addr, get(addr, "/echo")).await;
    assert_eq!(p.status, 200);
    assert_eq!(p.headers["x-upstream"], "secure");
    gw.shutdown().await;

    // The same upstream, but trusting the wrong CA: refused, with a clear code and reason.
    let wrong = one_cluster(
        up.addr,
        "tls = { sni = \"upstream.test\", ca = \"other.crt\" }",
    );
    let gw = gateway(&wrong, &dir).await;
    let addr = gw.listener_addr("main").unwrap();
    let (p, b) = send(addr, get(addr, "/echo")).await;
    assert_eq!(p.status, 502);
    assert_eq!(p.headers["portcullis-error"], "upstream-tls-failed");
    assert!(String::from_utf8_lossy(&b).contains("TLS"));
    let admin = gw.admin_addr();
    let (_, b) = send(admin, get(admin, "/admin/passports?limit=1")).await;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let detail = v[0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("TLS handshake"),
        "passport explains the failure: {detail}"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn upstream_h2_multiplexes_concurrent_requests_on_one_connection() {
    let up = Upstream::start_h2("mux").await;
    let gw = gateway(
        &one_cluster(up.addr, "protocol = \"h2\""),
        std::path::Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").unwrap();
    let client = h1_client();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client.request(get(addr, "/sleep/200")).await.unwrap();
            let status = resp.status();
            http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap();
            status
        }));
    }
    let t0 = std::time::Instant::now();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // 20 concurrent 200 ms requests on one multiplexed connection take ~200 ms, not 4 s.
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(up.requests(), 20);
    assert_eq!(up.accepted(), 1, "one h2 connection carries every request");
    gw.shutdown().await;
}
