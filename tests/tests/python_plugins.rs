//! Python plugins, built from source by `plugins/build_js_py.rs` (componentize-py, pinned in
//! `sdk/python/requirements.txt`, in a virtualenv): the first-party A/B filter buckets and
//! routes requests through a real gateway, and a trivial Python filter acts (a WIT 0.2.0
//! rejection with a header) and is measured.

mod jspy;

use jspy::*;
use portcullis_tests::*;
use std::path::Path;

/// The A/B filter's documented sticky hash: FNV-1a, 32 bits.
fn fnv1a(key: &str) -> u32 {
    key.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[tokio::test]
async fn ab_filter_buckets_sticks_forces_and_routes() {
    let control = Upstream::start("control").await;
    let treatment = Upstream::start("treatment").await;
    let dir = temp_dir("py-ab");
    install_jspy_plugin(
        &dir,
        "ab",
        "ab_py",
        "kind = \"inbound\"\n[limits]\ncpu_ms = 2000\n[match]\npath_prefix = \"/control\"\n\
         [config]\nclusters = { treatment = \"treatment\" }\n",
    );
    let config = basic_config(
        &[("control", control.addr), ("treatment", treatment.addr)],
        &plugins_section(&dir, ""),
    );
    let gw = gateway(&config, Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());

    // Sends /control/x with `headers`; returns (upstream that answered, bucket header it saw).
    let ask = |headers: Vec<(&'static str, String)>| async move {
        let mut req = get(addr, "/control/x");
        for (k, v) in headers {
            req.headers_mut()
                .insert(k, http::HeaderValue::from_str(&v).expect("value"));
        }
        let (p, b) = send(addr, req).await;
        assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&b));
        let seen = json(&b)["headers"]["x-ab-bucket"]
            .as_str()
            .unwrap_or("")
            .to_string();
        (header(&p, "x-upstream"), seen)
    };

    // Sticky by x-user-id: the bucket is fnv1a(key) % 2, on the upstream the bucket names.
    let mut seen_buckets = std::collections::BTreeSet::new();
    for user in ["1", "2", "3", "4", "alice", "bob"] {
        let want = ["control", "treatment"][(fnv1a(user) % 2) as usize];
        for _ in 0..2 {
            let got = ask(vec![("x-user-id", user.to_string())]).await;
            assert_eq!(got, (want.to_string(), want.to_string()), "user {user}");
        }
        seen_buckets.insert(want);
    }
    assert_eq!(seen_buckets.len(), 2, "both buckets are exercised");
    // Forced by header or cookie (a known bucket only); no key: the control.
    let user = ["1", "2"]
        .into_iter()
        .find(|u| fnv1a(u).is_multiple_of(2))
        .expect("a control user");
    let forced = ask(vec![
        ("x-user-id", user.to_string()),
        ("x-ab-force", "treatment".into()),
    ])
    .await;
    assert_eq!(forced.0, "treatment");
    let cookie = ask(vec![("cookie", "theme=dark; ab=treatment".into())]).await;
    assert_eq!(cookie.0, "treatment");
    let unknown = ask(vec![("x-ab-force", "nonsense".into())]).await;
    assert_eq!(unknown, ("control".into(), "control".into()));
    // The client's own x-ab-bucket is replaced, never trusted.
    let spoof = ask(vec![("x-ab-bucket", "treatment".into())]).await;
    assert_eq!(spoof, ("control".into(), "control".into()));

    let text = metrics(admin).await;
    let treated = sample(
        &text,
        "portcullis_plugin_guest_counter_total{plugin=\"ab\",name=\"bucket_treatment\"}",
    )
    .unwrap_or(0.0);
    assert!(treated >= 4.0, "the guest counts its buckets: {treated}");
    let s = admin_plugin(admin, "ab").await;
    assert_eq!(s["stats"]["failures"]["trap"].as_u64(), Some(0), "{s}");
}

/// A trivial Python filter acts (both branches) and its CPU per call is what the gateway
/// reports; printed for the record (docs/plugins.md quotes it).
#[tokio::test]
async fn trivial_python_filter_acts_and_reports_its_cpu_per_call() {
    let up = Upstream::start("a").await;
    let dir = temp_dir("py-pass");
    install_jspy_plugin(
        &dir,
        "pass-py",
        "pass_py",
        "kind = \"inbound\"\n[limits]\ncpu_ms = 2000\n",
    );
    let gw = gateway(&keep_passports(&up, &dir), Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").expect("listener"), gw.admin_addr());
    assert_rejects_with_a_header(addr, admin, "pass-py", "denied by pass_py").await;

    let client = h1_client();
    let calls = 300u64;
    for _ in 0..calls {
        let resp = client.request(get(addr, "/a/x")).await.expect("request");
        assert_eq!(resp.status(), 200);
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    }
    let s = admin_plugin(admin, "pass-py").await["stats"].clone();
    assert_eq!(s["calls"].as_u64(), Some(calls + 1), "{s}");
    assert_eq!(s["failures"]["trap"].as_u64(), Some(0), "{s}");
    let per_call_us = s["cpu_seconds"].as_f64().unwrap_or(f64::NAN) * 1e6 / (calls + 1) as f64;
    eprintln!("pass_py: {per_call_us:.1} µs CPU per call (gateway's own figure, debug host)");
    assert!(per_call_us.is_finite() && per_call_us > 0.0, "{s}");
    let hw = s["memory_high_water_bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "pass-py: {:.1} MiB of linear memory per instance",
        hw as f64 / 1048576.0
    );
    assert!(
        hw > 1 << 20 && hw <= 32 << 20,
        "fits the default memory_mb = 32: {s}"
    );
}
