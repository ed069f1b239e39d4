//! Routing, header hygiene, pooling and error responses through a real gateway.

use http::Request;
use portcullis_tests::*;
use std::path::Path;
use std::time::Duration;

#[tokio::test]
async fn routes_by_prefix_host_method_and_header() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let cfg = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[[cluster]]
name = "a"
endpoints = ["{a}"]
[[cluster]]
name = "b"
endpoints = ["{b}"]
[[route]]
name = "canary"
match = {{ path_prefix = "/api", headers = {{ "x-canary" = "yes" }} }}
cluster = "b"
[[route]]
name = "writes"
match = {{ path_prefix = "/api", method = "POST", host = "*.example.com" }}
cluster = "b"
[[route]]
name = "api"
match = {{ path_prefix = "/api" }}
cluster = "a"
"#,
        a = a.addr,
        b = b.addr
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    let up = |parts: &http::response::Parts| {
        parts
            .headers
            .get("x-upstream")
            .map(|v| v.to_str().unwrap_or("").to_string())
    };
    let (p, _) = send(addr, get(addr, "/api/users")).await;
    assert_eq!(p.status, 200);
    assert_eq!(up(&p).as_deref(), Some("a"));

    let req = Request::builder()
        .uri("/api/users")
        .header("host", "x")
        .header("x-canary", "yes")
        .body(body(""))
        .unwrap();
    let (p, _) = send(addr, req).await;
    assert_eq!(up(&p).as_deref(), Some("b"));

    let req = Request::builder()
        .method("POST")
        .uri("/api/users")
        .header("host", "shop.example.com")
        .body(body("x"))
        .unwrap();
    let (p, _) = send(addr, req).await;
    assert_eq!(up(&p).as_deref(), Some("b"));

    let req = Request::builder()
        .method("POST")
        .uri("/api/users")
        .header("host", "other.test")
        .body(body("x"))
        .unwrap();
    let (p, _) = send(addr, req).await;
    assert_eq!(up(&p).as_deref(), Some("a"));

    let (p, b) = send(addr, get(addr, "/nothing-here")).await;
    assert_eq!(p.status, 404);
    assert_eq!(p.headers["portcullis-error"], "no-route");
    assert!(String::from_utf8_lossy(&b).contains("no route"));
    gw.shutdown().await;
}

#[tokio::test]
async fn forwarding_headers_request_id_and_trace_context() {
    let a = Upstream::start("a").await;
    let gw = gateway(&basic_config(&[("a", a.addr)], ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let req = Request::builder()
        .uri("/a/echo")
        .header("host", "shop.test:8080")
        .header("x-forwarded-for", "10.1.2.3")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-request-id", "req-42")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(body(""))
        .unwrap();
    let (p, b) = send(addr, req).await;
    assert_eq!(p.status, 200);
    assert_eq!(p.headers["x-request-id"], "req-42");
    assert!(p.headers["via"].to_str().unwrap().contains("portcullis"));
    let echo: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.test:8080");
    assert_eq!(h["host"], "shop.test:8080");
    assert_eq!(h["via"], "1.1 portcullis");
    assert_eq!(h["x-request-id"], "req-42");
    assert!(
        h.get("x-hop").is_none(),
        "connection-listed header leaked: {h}"
    );
    assert!(h.get("keep-alive").is_none());
    assert!(h.get("proxy-authorization").is_none());
    let tp = h["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "gateway must be the new parent: {tp}"
    );

    // Without an incoming id, one is made and sent both ways.
    let (p, b) = send(addr, get(addr, "/a/echo")).await;
    let echo: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let id = p.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(echo["headers"]["x-request-id"], id);
    assert!(echo["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .starts_with("00-"));
    gw.shutdown().await;
}

#[tokio::test]
async fn keep_alive_pool_reuses_upstream_connections_under_load() {
    let a = Upstream::start("a").await;
    let gw = gateway(&basic_config(&[("a", a.addr)], ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let client = h1_client();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                let resp = client
                    .request(get(addr, "/a/echo"))
                    .await
                    .expect("response");
                assert_eq!(resp.status(), 200);
                http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .expect("body");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(a.requests(), 800);
    let accepted = a.accepted();
    let reuse = 1.0 - accepted as f64 / 800.0;
    assert!(
        accepted <= 16 && reuse >= 0.98,
        "upstream accepted {accepted} connections for 800 requests (reuse {reuse:.3})"
    );
    let m = metrics(gw.admin_addr()).await;
    let series = format!(
        "portcullis_upstream_connections_reused_total{{cluster=\"a\",endpoint=\"{}\"}}",
        a.addr
    );
    let reused = sample(&m, &series).expect("reuse counter");
    assert_eq!(reused as u64 + accepted, 800, "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_get_distinct_codes() {
    // A port with nothing listening: bind, note the port, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let a = Upstream::start("a").await;
    let extra = format!(
        r#"
[[cluster]]
name = "dead"
endpoints = ["{dead}"]
[[route]]
name = "dead"
match = {{ path_prefix = "/dead" }}
cluster = "dead"
"#
    );
    let gw = gateway(&basic_config(&[("a", a.addr)], &extra), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let (p, b) = send(addr, get(addr, "/dead/x")).await;
    assert_eq!(p.status, 502);
    assert_eq!(p.headers["portcullis-error"], "connect-failed");
    assert!(!b.is_empty());
    // A 503 is retryable by default, but with no other endpoint the upstream's own answer
    // passes through untouched.
    let (p, _) = send(addr, get(addr, "/a/status/503")).await;
    assert_eq!(p.status, 503);
    assert_eq!(p.headers["x-upstream"], "a");
    assert!(p.headers.get("portcullis-error").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_serves_health_metrics_and_failed_passports() {
    let a = Upstream::start("a").await;
    let gw = gateway(&basic_config(&[("a", a.addr)], ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();
    let (p, b) = send(admin, get(admin, "/healthz")).await;
    assert_eq!(p.status, 200);
    assert_eq!(&b[..], b"ok\n");
    for _ in 0..3 {
        let (p, _) = send(addr, get(addr, "/a/echo")).await;
        assert_eq!(p.status, 200);
    }
    let (p, _) = send(addr, get(addr, "/missing")).await;
    assert_eq!(p.status, 404);
    let m = metrics(admin).await;
    // Strictly valid exposition text: one HELP/TYPE per family, samples under it.
    assert_valid_exposition(&m);
    assert_eq!(
        sample(
            &m,
            "portcullis_requests_total{route=\"a\",status_class=\"2xx\"}"
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "portcullis_requests_total{route=\"\",status_class=\"4xx\"}"
        ),
        Some(1.0)
    );
    assert!(m.contains("portcullis_overhead_seconds_bucket{le=\"0.00002\"}"));
    assert_eq!(sample(&m, "portcullis_overhead_seconds_count"), Some(4.0));
    assert!(m.contains("portcullis_request_duration_seconds_bucket{route=\"a\""));
    assert!(m.contains(&format!(
        "portcullis_upstream_in_flight{{cluster=\"a\",endpoint=\"{}\"}} 0",
        a.addr
    )));
    assert!(m.contains("portcullis_connections_accepted_total{listener=\"main\"}"));

    let (p, b) = send(admin, get(admin, "/admin/passports")).await;
    assert_eq!(p.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let first = &v.as_array().expect("array")[0];
    assert_eq!(first["status"], 404);
    assert_eq!(first["path"], "/missing");
    let states: Vec<&str> = first["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"ACCEPTED"));
    assert!(states.contains(&"NO_ROUTE"), "{states:?}");
    assert_eq!(states.last(), Some(&"DONE"));
    assert!(first["overhead_us"].is_u64());
    tokio::time::sleep(Duration::from_millis(1)).await;
    gw.shutdown().await;
}
