//! JavaScript plugins, built from source by `plugins/build_js_py.rs` (componentize-js from
//! `sdk/js/package-lock.json`): the demo's `home` endpoint in JavaScript answers exactly like
//! the Rust one through a real gateway (also when every call it makes is malformed: WIT
//! 0.2.0's `invalid-call`), a trivial JavaScript filter acts (a 0.2.0 rejection with a
//! header) and is measured, and the instance limits (`max_instances`,
//! `[plugins] memory_budget_mb`) hold for them.

mod jspy;

use jspy::*;
use portcullis_examples::{spawn, Behavior};
use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

fn service(name: &'static str, latency_ms: u64, failure_rate: f64) -> Behavior {
    Behavior {
        name,
        latency: Duration::from_millis(latency_ms),
        failure_rate,
    }
}

/// The four demo services, `(name, addr)`.
async fn demo_services(ratings_fail: f64, artwork_ms: u64) -> Vec<(&'static str, SocketAddr)> {
    let mut out = Vec::new();
    for b in [
        service("profile", 0, 0.0),
        service("recommendations", 0, 0.0),
        service("ratings", 0, ratings_fail),
        service("artwork", artwork_ms, 0.0),
    ] {
        let name = b.name;
        out.push((name, spawn("127.0.0.1:0", b).await.expect("demo service")));
    }
    out
}

/// A gateway with the Rust `home` at /api/home and the JavaScript one at /api/home-js.
fn home_config(ups: &[(&str, SocketAddr)], dir: &Path, plugins_extra: &str) -> String {
    let mut s = basic_config(ups, "");
    // File order: the first match wins, and /api/home is a prefix of /api/home-js.
    s.push_str(&format!(
        "[[route]]\nname = \"home-js\"\nmatch = {{ path_prefix = \"/api/home-js\" }}\nendpoint = \"home-js\"\n\
         [[route]]\nname = \"home\"\nmatch = {{ path_prefix = \"/api/home\" }}\nendpoint = \"home\"\n\
         {}",
        plugins_section(dir, plugins_extra)
    ));
    s
}

const HOME_MANIFEST: &str =
    "kind = \"endpoint\"\n[limits]\ncpu_ms = 2000\n[config]\ntimeout_ms = 200\n";

/// Puts `home_js` into the compile cache once, before the tests that serve it boot their
/// gateways: tests run two at a time, and two gateways booting at once on a cold cache would
/// each compile the same component (measured: a minute or more each on this 2-core machine).
async fn home_js_compiled() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let dir = temp_dir("js-home-warm");
        install_jspy_plugin(&dir, "home-js", "home_js", HOME_MANIFEST);
        let gw = gateway(
            &basic_config(&[], &plugins_section(&dir, "")),
            Path::new("."),
        )
        .await;
        gw.shutdown().await;
    })
    .await;
}

async fn get_with_context(addr: SocketAddr, path: &str) -> (http::response::Parts, bytes::Bytes) {
    let mut req = get(addr, path);
    for (k, v) in [
        ("authorization", "Bearer tok-1"),
        ("x-request-id", "req-home-js"),
    ] {
        req.headers_mut()
            .insert(k, http::HeaderValue::from_static(v));
    }
    send(addr, req).await
}

#[tokio::test]
async fn home_js_returns_the_same_json_as_the_rust_home() {
    home_js_compiled().await;
    // Ratings always fail and artwork is slower than the 200 ms call timeout, so both the
    // happy sections and both ways of degrading are compared.
    let ups = demo_services(1.0, 1_000).await;
    let dir = temp_dir("js-home");
    install_plugin(&dir, "home", "home", HOME_MANIFEST);
    install_jspy_plugin(&dir, "home-js", "home_js", HOME_MANIFEST);
    let gw = gateway(&home_config(&ups, &dir, ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    for user in ["2", "7"] {
        let (rp, rb) = get_with_context(addr, &format!("/api/home?user={user}")).await;
        let (jp, jb) = get_with_context(addr, &format!("/api/home-js?user={user}")).await;
        assert_eq!(rp.status, 200, "{}", String::from_utf8_lossy(&rb));
        assert_eq!(jp.status, rp.status, "{}", String::from_utf8_lossy(&jb));
        assert_eq!(header(&jp, "content-type"), "application/json");
        let (rust, js) = (json(&rb), json(&jb));
        assert_eq!(js, rust, "user {user}: JavaScript and Rust disagree");
        // Not two equal empty documents: the sections are really there.
        assert_eq!(
            js["profile"]["user"],
            user.parse::<u64>().expect("n"),
            "{js}"
        );
        assert_eq!(
            js["recommendations"]["items"].as_array().map(Vec::len),
            Some(5)
        );
        let degraded: Vec<(&str, &str)> = js["degraded"]
            .as_array()
            .expect("degraded")
            .iter()
            .map(|d| {
                (
                    d["section"].as_str().unwrap_or(""),
                    d["reason"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            degraded,
            [("ratings", "status 503"), ("artwork", "timeout")]
        );
    }
    for bad in ["abc", "", "1234567890123"] {
        let (rp, rb) = send(addr, get(addr, &format!("/api/home?user={bad}"))).await;
        let (jp, jb) = send(addr, get(addr, &format!("/api/home-js?user={bad}"))).await;
        assert_eq!(
            (jp.status.as_u16(), rp.status.as_u16()),
            (400, 400),
            "user={bad}"
        );
        assert_eq!(json(&jb), json(&rb), "user={bad}");
    }
    // The guest's own metric, through the SDK's `metrics.count`.
    let text = metrics(gw.admin_addr()).await;
    let degraded = sample(
        &text,
        "portcullis_plugin_guest_counter_total{plugin=\"home-js\",name=\"degraded_ratings\"}",
    );
    assert_eq!(degraded, Some(2.0), "two requests degraded ratings");
}

/// A malformed fan-out call (`timeout-ms` 0, from the manifest's config) fails as WIT
/// 0.2.0's `invalid-call`, with its own kind and the host's reason, in JavaScript as in Rust;
/// no call leaves the gateway.
#[tokio::test]
async fn home_js_gets_invalid_call_for_a_malformed_call_like_rust() {
    home_js_compiled().await;
    let ups = demo_services(0.0, 0).await;
    let dir = temp_dir("js-home-invalid");
    let manifest = "kind = \"endpoint\"\n[limits]\ncpu_ms = 2000\n[config]\ntimeout_ms = 0\n";
    install_plugin(&dir, "home", "home", manifest);
    install_jspy_plugin(&dir, "home-js", "home_js", manifest);
    let gw = gateway(&home_config(&ups, &dir, ""), Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());
    let (rp, rb) = send(addr, get(addr, "/api/home?user=4")).await;
    let (jp, jb) = send(addr, get(addr, "/api/home-js?user=4")).await;
    assert_eq!((jp.status.as_u16(), rp.status.as_u16()), (502, 502));
    let js = json(&jb);
    assert_eq!(js, json(&rb), "JavaScript and Rust disagree");
    let reasons: Vec<&str> = js["degraded"]
        .as_array()
        .expect("degraded")
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        reasons, ["invalid call: timeout-ms must be greater than 0"; 4],
        "every section failed as invalid-call (not limit-exceeded, as in 0.1.0): {js}"
    );
    let listed = admin_plugin(admin, "home-js").await;
    assert_eq!(
        listed["wit"], "0.2.0",
        "the SDK targets WIT 0.2.0: {listed}"
    );
    let s = &listed["stats"];
    assert_eq!(s["failures"]["trap"].as_u64(), Some(0), "{s}");
}

#[tokio::test]
async fn home_js_answers_502_without_a_profile_like_rust() {
    home_js_compiled().await;
    let mut ups = demo_services(0.0, 0).await;
    ups[0].1 = dead_addr().await;
    let dir = temp_dir("js-home-502");
    install_plugin(&dir, "home", "home", HOME_MANIFEST);
    install_jspy_plugin(&dir, "home-js", "home_js", HOME_MANIFEST);
    let gw = gateway(&home_config(&ups, &dir, ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let (rp, rb) = send(addr, get(addr, "/api/home?user=3")).await;
    let (jp, jb) = send(addr, get(addr, "/api/home-js?user=3")).await;
    assert_eq!((jp.status.as_u16(), rp.status.as_u16()), (502, 502));
    let js = json(&jb);
    assert_eq!(js, json(&rb));
    assert_eq!(js["error"], "profile unavailable", "{js}");
    assert_eq!(js["degraded"][0]["reason"], "connect failed", "{js}");
}

/// A trivial JavaScript filter acts and reports its CPU per call (`jspy::assert_trivial_filter`).
#[tokio::test]
async fn trivial_js_filter_acts_and_reports_its_cpu_per_call() {
    assert_trivial_filter("pass-js", "pass_js", "js-pass").await;
}

/// The demo services, with artwork replaced by a counting upstream that answers after
/// `artwork_ms` (its body is not JSON: the section degrades, the request still succeeds).
async fn services_with_slow_artwork(
    artwork_ms: u64,
) -> (Vec<(&'static str, SocketAddr)>, Upstream) {
    let mut ups = demo_services(0.0, 0).await;
    let artwork = Upstream::start_fixed("artwork", 200, artwork_ms).await;
    ups[3].1 = artwork.addr;
    (ups, artwork)
}

/// Starts a call that holds an instance of `home-js` while artwork answers, and returns once
/// the call is inside the plugin (its artwork call arrived).
async fn hold_an_instance(
    addr: SocketAddr,
    artwork: &Upstream,
) -> tokio::task::JoinHandle<(http::response::Parts, bytes::Bytes)> {
    let slow = tokio::spawn(async move { send(addr, get(addr, "/api/home-js?user=1")).await });
    let arrived = eventually(Duration::from_secs(10), || artwork.requests() > 0).await;
    assert!(arrived, "the first call reached its upstreams");
    slow
}

/// `max_instances = 1`: while one call holds the only instance, a second call at once fails
/// with 503 `plugin-overloaded`, counted; once the first is done, calls succeed again.
#[tokio::test]
async fn max_instances_caps_a_plugins_live_instances() {
    home_js_compiled().await;
    let (ups, artwork) = services_with_slow_artwork(800).await;
    let dir = temp_dir("js-cap");
    install_jspy_plugin(
        &dir,
        "home-js",
        "home_js",
        "kind = \"endpoint\"\n[limits]\nmax_instances = 1\ncpu_ms = 2000\n[config]\ntimeout_ms = 3000\n",
    );
    let gw = gateway(&home_config(&ups, &dir, ""), Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());
    let slow = hold_an_instance(addr, &artwork).await;
    let (p, b) = send(addr, get(addr, "/api/home-js?user=1")).await;
    assert_eq!(p.status, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(header(&p, "portcullis-error"), "plugin-overloaded");
    let (p1, b1) = slow.await.expect("slow call");
    assert_eq!(
        p1.status, 200,
        "the call holding the instance finished: {b1:?}"
    );
    let (p, _) = send(addr, get(addr, "/api/home-js?user=1")).await;
    assert_eq!(p.status, 200, "the instance is free again");
    let s = admin_plugin(admin, "home-js").await;
    assert_eq!(
        s["stats"]["failures"]["overloaded"].as_u64(),
        Some(1),
        "{s}"
    );
    assert_eq!(
        s["stats"]["quarantines"].as_u64(),
        Some(0),
        "a full plugin is not a broken one"
    );
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("max_instances = 1"),
        "the reason names the limit: {s}"
    );
}

/// `[plugins] memory_budget_mb`: two JavaScript instances (9+ MiB each) don't fit in 16 MiB,
/// so a second concurrent call fails as `plugin-overloaded` with the budget named, while a
/// small Rust plugin keeps working next to it.
#[tokio::test]
async fn the_memory_budget_bounds_all_instances_together() {
    let (ups, artwork) = services_with_slow_artwork(800).await;
    let dir = temp_dir("js-budget");
    install_jspy_plugin(
        &dir,
        "home-js",
        "home_js",
        "kind = \"endpoint\"\n[limits]\nmemory_mb = 16\ncpu_ms = 2000\n[config]\ntimeout_ms = 3000\n",
    );
    install_plugin(
        &dir,
        "hdr",
        "add-header",
        "kind = \"outbound\"\n[config]\nset = { \"x-hdr\" = \"1\" }\n",
    );
    let extra = "max_memory_mb = 16\nmemory_budget_mb = 16\n";
    let gw = gateway(&home_config(&ups, &dir, extra), Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());
    let slow = hold_an_instance(addr, &artwork).await;
    let (p, b) = send(addr, get(addr, "/api/home-js?user=1")).await;
    assert_eq!(p.status, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(header(&p, "portcullis-error"), "plugin-overloaded");
    let (p, _) = send(addr, get(addr, "/profile/1")).await;
    assert_eq!(p.status, 200);
    assert_eq!(header(&p, "x-hdr"), "1", "a small Rust plugin still fits");
    let (p1, _) = slow.await.expect("slow call");
    assert_eq!(p1.status, 200, "the call holding the memory finished");
    let (p, _) = send(addr, get(addr, "/api/home-js?user=1")).await;
    assert_eq!(p.status, 200, "the memory is free again");
    let s = admin_plugin(admin, "home-js").await;
    assert!(
        s["stats"]["failures"]["overloaded"].as_u64() >= Some(1),
        "{s}"
    );
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("memory_budget_mb = 16"),
        "the reason names the budget: {s}"
    );
}
