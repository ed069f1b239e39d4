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
    // Each upstream counts how many requests it answers at once: overlap is proven by that
    // count, not by a wall-clock bound that a loaded machine would break. The 300 ms answer
    // is only how long the calls have to meet there.
    let a = Upstream::start_fixed("a", 200, 300).await;
    let s = Upstream::start_fixed("s", 200, 300).await;
    let dir = temp_dir("ep-concurrent");
    install_plugin(
        &dir,
        "fan",
        "fanout",
        &fan_manifest("clusters = \"a,a,a\"\npath = \"/x\"", ""),
    );
    install_plugin(
        &dir,
        "seq",
        "fanout",
        &fan_manifest("clusters = \"s,s,s\"\npath = \"/x\"\nsequential = true", ""),
    );
    let config = cfg(&[("a", a.addr), ("s", s.addr)], &dir, "").replacen(
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

    let (p, body) = send(addr, get(addr, "/fan")).await;
    assert_eq!(p.status, 200);
    let v = json(&body);
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r["status"] == 200), "{v}");
    assert_eq!(a.requests(), 3);
    assert_eq!(a.peak(), 3, "the three calls were at the upstream at once");
    let (p, body) = send(addr, get(addr, "/seq")).await;
    assert_eq!(p.status, 200);
    let v = json(&body);
    assert!(
        v["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|r| r["status"] == 200),
        "{v}"
    );
    assert_eq!(s.requests(), 3);
    assert_eq!(s.peak(), 1, "sequential calls never overlap");

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
    // The 300 ms at the upstream is waiting; had it been counted as overhead, this would be
    // at least 300 ms. (The bound leaves room for a loaded machine's slow Wasm start-up.)
    assert!(
        pp["overhead_us"].as_u64().expect("overhead") < 250_000,
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

    // Exactly max_fanout = 3 calls at once are allowed: all three are made.
    let (fast_before, slow_before) = (fast.requests(), slow.requests());
    let (p, b) = send(addr, get(addr, "/fan?cluster=fast")).await;
    assert_eq!(p.status, 200);
    let v = json(&b);
    let r = v["results"].as_array().expect("results");
    assert_eq!(r.len(), 3, "{v}");
    assert_eq!(r[0]["status"], 200, "{v}");
    assert_eq!(r[1]["error"], "timeout", "the slow call was made: {v}");
    assert_eq!(r[2]["status"], 200, "{v}");
    assert_eq!(
        fast.requests(),
        fast_before + 2,
        "both fast calls were made"
    );
    assert_eq!(slow.requests(), slow_before + 1, "the slow call was made");

    // Four calls at once exceed max_fanout = 3: refused, none made.
    let over = fan_manifest(
        "clusters = \"fast,fast,fast,fast\"\npath = \"/x\"",
        "[fanout]\nmax_fanout = 3\n",
    );
    let reloaded = "portcullis_plugin_reloads_total{result=\"ok\"}";
    let loads = sample(&metrics(gw.admin_addr()).await, reloaded).expect("reload metric");
    install_plugin(&dir, "fan", "fanout", &over);
    assert!(
        wait_for_metric(gw.admin_addr(), reloaded, Duration::from_secs(10), |v| v
            > loads)
        .await,
        "the new manifest was loaded"
    );
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
    // `profile` is the echo upstream: its section shows what the endpoint forwarded to it.
    let profile_up = Upstream::start("profile").await;
    let profile = profile_up.addr;
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
    let mut req = get(addr, "/api/home?user=2");
    for (k, v) in [
        ("authorization", "Bearer tok-1"),
        ("cookie", "session=abc"),
        ("x-request-id", "req-home-7"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("x-not-forwarded", "private"),
    ] {
        req.headers_mut()
            .insert(k, http::HeaderValue::from_static(v));
    }
    let (p, b) = send(addr, req).await;
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    let prof = &v["profile"];
    assert_eq!(prof["path"], "/profile?user=2", "{prof}");
    let h = &prof["headers"];
    assert_eq!(h["authorization"], "Bearer tok-1", "{h}");
    assert_eq!(h["cookie"], "session=abc", "{h}");
    assert_eq!(h["x-request-id"], "req-home-7", "{h}");
    assert!(
        h["traceparent"]
            .as_str()
            .unwrap_or("")
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "the trace continues: {h}"
    );
    assert!(
        h.get("x-not-forwarded").is_none(),
        "only the context headers are forwarded: {h}"
    );
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
