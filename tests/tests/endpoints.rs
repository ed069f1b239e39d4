//! Aggregate-API endpoints: an endpoint plugin fanning out to real upstreams through the
//! host, with every cap, the deadline, partial failure and the passport.

use portcullis_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn cfg(ups: &[(&str, std::net::SocketAddr)], dir: &Path, extra_route: &str) -> String {
    let mut s = basic_config(ups, "");
    s.push_str(&format!(
        "[[route]]\nname = \"fan\"\nmatch = {{ path_prefix = \"/fan\" }}\nendpoint = \"fan\"\n{extra_route}\n[[route]]\nname = \"home\"\nmatch = {{ path_prefix = \"/api/home\" }}\nendpoint = \"home\"\n[plugins]\ndir = \"{}\"\n",
        dir.display()
    ));
    s
}

fn fan_manifest(config: &str, extra: &str) -> String {
    format!("kind = \"endpoint\"\n{extra}\n[config]\n{config}\n")
}

fn json(b: &bytes::Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("json: {}", String::from_utf8_lossy(b)))
}

#[tokio::test]
async fn calls_run_concurrently_and_the_passport_shows_the_fanout() {
    let a = Upstream::start_fixed("a", 200, 100).await;
    let b = Upstream::start_fixed("b", 200, 100).await;
    let c = Upstream::start_fixed("c", 200, 100).await;
    let dir = temp_dir("ep-concurrent");
    install_plugin(
        &dir,
        "fan",
        "fanout",
        &fan_manifest("clusters = \"a,b,c\"\npath = \"/x\"", ""),
    );
    install_plugin(
        &dir,
        "seq",
        "fanout",
        &fan_manifest("clusters = \"a,b,c\"\npath = \"/x\"\nsequential = true", ""),
    );
    let config = cfg(&[("a", a.addr), ("b", b.addr), ("c", c.addr)], &dir, "").replacen(
        "[admin]\n",
        "[admin]\nslow_request_ms = 50\n",
        1,
    );
    let config = config.replace(
        "[plugins]",
        "[[route]]\nname = \"seq\"\nmatch = { path_prefix = \"/seq\" }\nendpoint = \"seq\"\n[plugins]",
    );
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    // Warm the pools so connect time does not blur the comparison.
    let _ = send(addr, get(addr, "/fan")).await;
    let t0 = Instant::now();
    let (p, body) = send(addr, get(addr, "/fan")).await;
    let concurrent = t0.elapsed();
    assert_eq!(p.status, 200);
    let v = json(&body);
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r["status"] == 200), "{v}");
    let t0 = Instant::now();
    let (p, _) = send(addr, get(addr, "/seq")).await;
    let sequential = t0.elapsed();
    assert_eq!(p.status, 200);
    assert!(
        concurrent < Duration::from_millis(250),
        "three 100 ms calls at once: {concurrent:?}"
    );
    assert!(
        sequential >= Duration::from_millis(300),
        "one after another: {sequential:?}"
    );

    // The passport lists each call and counts the waiting as waiting, not overhead.
    let admin = gw.admin_addr();
    let (_, b) = send(admin, get(admin, "/admin/passports")).await;
    let all = json(&b);
    let pp = all
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["route"] == "fan")
        .expect("fan passport (slow > 50 ms)");
    let calls = pp["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 3, "{pp}");
    assert!(calls
        .iter()
        .all(|c| c["status"] == 200 && c["endpoint"].is_string()));
    let states: Vec<&str> = pp["states"]
        .as_array()
        .expect("states")
        .iter()
        .filter_map(|s| s["state"].as_str())
        .collect();
    assert!(
        states.contains(&"ENDPOINT_START") && states.contains(&"FANOUT_CALL_END"),
        "{states:?}"
    );
    assert!(
        pp["overhead_us"].as_u64().expect("overhead") < 50_000,
        "{pp}"
    );
}

#[tokio::test]
async fn per_call_timeout_unknown_cluster_and_fanout_cap() {
    let fast = Upstream::start_fixed("fast", 200, 0).await;
    let slow = Upstream::start_fixed("slow", 200, 2000).await;
    let dir = temp_dir("ep-errors");
    install_plugin(
        &dir,
        "fan",
        "fanout",
        &fan_manifest(
            "clusters = \"fast,slow\"\npath = \"/x\"\ntimeout_ms = 150",
            "[fanout]\nmax_fanout = 3\n",
        ),
    );
    let gw = gateway(
        &cfg(&[("fast", fast.addr), ("slow", slow.addr)], &dir, ""),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");

    let t0 = Instant::now();
    let (p, b) = send(addr, get(addr, "/fan?cluster=nope")).await;
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "bounded by the call timeout"
    );
    assert_eq!(p.status, 200);
    let v = json(&b);
    let r = v["results"].as_array().expect("results");
    assert_eq!(r[0]["status"], 200);
    assert_eq!(r[1]["error"], "timeout", "{v}");
    assert_eq!(r[2]["error"], "unknown cluster", "{v}");

    // Four calls at once exceed max_fanout = 3: refused, none made.
    let before = fast.requests();
    let (_, b) = send(addr, get(addr, "/fan?cluster=fast")).await;
    let v = json(&b);
    assert!(v["results"].as_array().expect("r").len() == 3);
    let _ = before;
    let over = fan_manifest(
        "clusters = \"fast,fast,fast,fast\"\npath = \"/x\"",
        "[fanout]\nmax_fanout = 3\n",
    );
    install_plugin(&dir, "fan", "fanout", &over);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = fast.requests();
    let (_, b) = send(addr, get(addr, "/fan")).await;
    let v = json(&b);
    let r = v["results"].as_array().expect("results");
    assert_eq!(r.len(), 4);
    assert!(
        r.iter()
            .all(|x| x["error"].as_str().unwrap_or("").contains("max_fanout")),
        "{v}"
    );
    assert_eq!(fast.requests(), before, "no call was made");
}

#[tokio::test]
async fn the_request_deadline_bounds_the_whole_fanout() {
    let slow = Upstream::start_fixed("slow", 200, 3000).await;
    let dir = temp_dir("ep-deadline");
    install_plugin(
        &dir,
        "fan",
        "fanout",
        &fan_manifest("clusters = \"slow\"\npath = \"/x\"\ntimeout_ms = 5000", ""),
    );
    let gw = gateway(
        &cfg(
            &[("slow", slow.addr)],
            &dir,
            "timeouts = { request_deadline_ms = 300 }",
        ),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    let t0 = Instant::now();
    let (p, b) = send(addr, get(addr, "/fan")).await;
    let took = t0.elapsed();
    assert_eq!(p.status, 200);
    assert_eq!(json(&b)["results"][0]["error"], "timeout");
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[tokio::test]
async fn cpu_and_memory_limits_apply_to_endpoints() {
    let a = Upstream::start("a").await;
    let dir = temp_dir("ep-limits");
    install_plugin(
        &dir,
        "fan",
        "fanout",
        &fan_manifest("mode = \"loop\"", "[limits]\ncpu_ms = 50\n"),
    );
    install_plugin(
        &dir,
        "mem",
        "fanout",
        &fan_manifest("mode = \"memory\"", "[limits]\nmemory_mb = 8\n"),
    );
    let config = cfg(&[("a", a.addr)], &dir, "").replace(
        "[plugins]",
        "[[route]]\nname = \"mem\"\nmatch = { path_prefix = \"/mem\" }\nendpoint = \"mem\"\n[plugins]",
    );
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let (p, _) = send(addr, get(addr, "/fan")).await;
    assert_eq!(p.status, 500);
    assert_eq!(header(&p, "portcullis-error"), "plugin-cpu-exceeded");
    let (p, _) = send(addr, get(addr, "/mem")).await;
    assert_eq!(p.status, 500);
    assert_eq!(header(&p, "portcullis-error"), "plugin-memory-exceeded");
    let (p, _) = send(addr, get(addr, "/a/ok")).await;
    assert_eq!(p.status, 200, "the gateway is fine");
}

#[tokio::test]
async fn home_degrades_failed_sections_and_forwards_context() {
    use portcullis_examples::{spawn, Behavior};
    let profile = spawn("127.0.0.1:0", Behavior::from_env("profile", 0, 0.0))
        .await
        .expect("profile");
    let recs = spawn("127.0.0.1:0", Behavior::from_env("recommendations", 0, 0.0))
        .await
        .expect("recs");
    let ratings = spawn("127.0.0.1:0", Behavior::from_env("ratings", 0, 1.0))
        .await
        .expect("ratings");
    let artwork = spawn("127.0.0.1:0", Behavior::from_env("artwork", 2000, 0.0))
        .await
        .expect("artwork");
    let dir = temp_dir("ep-home");
    install_plugin(
        &dir,
        "home",
        "home",
        "kind = \"endpoint\"\n[config]\ntimeout_ms = 200\n",
    );
    let config = cfg(
        &[
            ("profile", profile),
            ("recommendations", recs),
            ("ratings", ratings),
            ("artwork", artwork),
        ],
        &dir,
        "",
    );
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let (p, b) = send(addr, get(addr, "/api/home?user=2")).await;
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["profile"]["user"], 2);
    assert_eq!(
        v["recommendations"]["items"].as_array().map(|a| a.len()),
        Some(5)
    );
    assert_eq!(
        v["ratings"]["ratings"],
        serde_json::json!([]),
        "failed section defaulted"
    );
    assert_eq!(
        v["artwork"]["images"],
        serde_json::json!([]),
        "timed-out section defaulted"
    );
    let degraded: Vec<&str> = v["degraded"]
        .as_array()
        .expect("degraded")
        .iter()
        .filter_map(|d| d["section"].as_str())
        .collect();
    assert_eq!(degraded, ["ratings", "artwork"]);
    let (p, _) = send(addr, get(addr, "/api/home?user=abc")).await;
    assert_eq!(p.status, 400);
}

#[tokio::test]
async fn max_calls_and_max_response_bytes_caps() {
    let a = Upstream::start("a").await;
    let dir = temp_dir("ep-caps");
    // Three clusters, one call each, but only two calls per request allowed.
    install_plugin(
        &dir,
        "fan",
        "fanout",
        &fan_manifest(
            "clusters = \"a,a,a\"\npath = \"/a/x\"\nsequential = true",
            "[fanout]\nmax_calls = 2\n",
        ),
    );
    // The echo upstream answers a few hundred bytes; allow only 16.
    install_plugin(
        &dir,
        "small",
        "fanout",
        &fan_manifest(
            "clusters = \"a\"\npath = \"/a/x\"",
            "[fanout]\nmax_response_bytes = 16\n",
        ),
    );
    let config = cfg(&[("a", a.addr)], &dir, "").replace(
        "[plugins]",
        "[[route]]\nname = \"small\"\nmatch = { path_prefix = \"/small\" }\nendpoint = \"small\"\n[plugins]",
    );
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    let (p, b) = send(addr, get(addr, "/fan")).await;
    assert_eq!(p.status, 200);
    let v = json(&b);
    let r = v["results"].as_array().expect("results");
    assert_eq!(r[0]["status"], 200);
    assert_eq!(r[1]["status"], 200);
    assert!(
        r[2]["error"].as_str().unwrap_or("").contains("max_calls"),
        "{v}"
    );
    assert_eq!(a.requests(), 2, "the third call was never made");

    let (_, b) = send(addr, get(addr, "/small")).await;
    let v = json(&b);
    assert!(
        v["results"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("max_response_bytes"),
        "{v}"
    );
}
