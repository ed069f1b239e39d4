//! What the JavaScript and Python plugin tests share (`mod jspy;` in `js_plugins.rs` and
//! `python_plugins.rs`): the compile cache, the `[plugins]` section, and the check of a WIT
//! 0.2.0 rejection with a header.

use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;

/// The compile cache every JS/Python test binary shares (`js_plugins`, `python_plugins`,
/// `toolkit`), under the target dir: a 12–19 MiB JavaScript/Python component takes Cranelift
/// 10–100 s on a busy 2-core machine, so each is compiled once, not once per test or binary.
pub fn compile_cache() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("jspy-compile-cache")
}

/// `[plugins]` for a test's plugin directory, with the shared compile cache.
pub fn plugins_section(dir: &Path, extra: &str) -> String {
    let cache = compile_cache();
    format!(
        // A fresh JS or Python instance's first calls cost 13–30 ms of CPU in a release build
        // and more in a debug one on a loaded machine: the ceiling is raised so these tests
        // check behaviour, not this machine's speed (the default ceiling, 50 ms, is the demo's
        // and the docs').
        "[plugins]\ndir = \"{}\"\ncache_dir = \"{}\"\nmax_cpu_ms = 2000\n{extra}\n",
        dir.display(),
        cache.display()
    )
}

pub fn json(b: &bytes::Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("json: {}", String::from_utf8_lossy(b)))
}

/// A gateway in front of `up` with the plugins of `dir`, keeping every request's passport
/// (a rejection is neither slow nor a failure) so its states can be read.
pub fn keep_passports(up: &Upstream, dir: &Path) -> String {
    basic_config(&[("a", up.addr)], &plugins_section(dir, "")).replacen(
        "[admin]\n",
        "[admin]\nslow_request_ms = 0\n",
        1,
    )
}

/// `x-pass-deny` makes the `pass` filter reject with 401 and `www-authenticate` (WIT 0.2.0):
/// on the wire as the gateway's rejection, in the passport as `PLUGIN_REJECTED`, in the
/// plugin's stats as a call with no failure (a refused header would be `bad-output`), and
/// the upstream never sees it.
pub async fn assert_rejects_with_a_header(
    addr: SocketAddr,
    admin: SocketAddr,
    plugin: &str,
    reason: &str,
) {
    let mut req = get(addr, "/a/deny");
    req.headers_mut()
        .insert("x-pass-deny", http::HeaderValue::from_static("1"));
    let (p, b) = send(addr, req).await;
    assert_eq!(p.status, 401, "{}", String::from_utf8_lossy(&b));
    assert_eq!(header(&p, "www-authenticate"), "Bearer realm=\"pass\"");
    assert_eq!(header(&p, "portcullis-error"), "plugin-rejected");
    assert_eq!(header(&p, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(String::from_utf8_lossy(&b).trim_end(), reason);
    let (_, b) = send(admin, get(admin, "/admin/passports")).await;
    let all = json(&b);
    let mine: Vec<&serde_json::Value> = all
        .as_array()
        .expect("passports")
        .iter()
        .filter(|p| p["path"] == "/a/deny")
        .collect();
    assert_eq!(mine.len(), 1, "one passport for /a/deny: {all}");
    let states: Vec<&str> = mine[0]["states"]
        .as_array()
        .expect("states")
        .iter()
        .filter_map(|s| s["state"].as_str())
        .collect();
    assert!(states.contains(&"PLUGIN_REJECTED"), "{states:?}");
    assert!(!states.contains(&"REQ_HEADERS_SENT"), "{states:?}");
    let listed = admin_plugin(admin, plugin).await;
    assert_eq!(
        listed["wit"], "0.2.0",
        "the SDK targets WIT 0.2.0: {listed}"
    );
    let s = &listed["stats"];
    assert_eq!(s["calls"].as_u64(), Some(1), "{s}");
    let failed: u64 = s["failures"]
        .as_object()
        .expect("failures")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(failed, 0, "a rejection is not a failure: {s}");
}

/// A trivial filter (`pass_js` / `pass_py`, installed as `name`) acts on both branches (its
/// 0.2.0 rejection with a header, then 300 requests through), never traps, reports its CPU
/// per call (printed for the record: docs/plugins.md quotes it) and fits the default
/// `memory_mb = 32`.
pub async fn assert_trivial_filter(name: &str, wasm: &str, tag: &str) {
    let up = Upstream::start("a").await;
    let dir = temp_dir(tag);
    install_jspy_plugin(
        &dir,
        name,
        wasm,
        "kind = \"inbound\"\n[limits]\ncpu_ms = 2000\n",
    );
    let gw = gateway(&keep_passports(&up, &dir), Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());
    assert_rejects_with_a_header(addr, admin, name, &format!("denied by {wasm}")).await;

    let client = h1_client();
    let calls = 300u64;
    for _ in 0..calls {
        let resp = client.request(get(addr, "/a/x")).await.expect("request");
        assert_eq!(resp.status(), 200);
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    }
    let s = admin_plugin(admin, name).await["stats"].clone();
    assert_eq!(s["calls"].as_u64(), Some(calls + 1), "{s}");
    assert_eq!(s["failures"]["trap"].as_u64(), Some(0), "{s}");
    let per_call_us = s["cpu_seconds"].as_f64().unwrap_or(f64::NAN) * 1e6 / (calls + 1) as f64;
    eprintln!("{wasm}: {per_call_us:.1} µs CPU per call (gateway's own figure, debug host)");
    assert!(per_call_us.is_finite() && per_call_us > 0.0, "{s}");
    let hw = s["memory_high_water_bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "{name}: {:.1} MiB of linear memory per instance",
        hw as f64 / 1048576.0
    );
    assert!(
        hw > 1 << 20 && hw <= 32 << 20,
        "fits the default memory_mb = 32: {s}"
    );
}
