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

/// A trivial Python filter acts and reports its CPU per call (`jspy::assert_trivial_filter`).
#[tokio::test]
async fn trivial_python_filter_acts_and_reports_its_cpu_per_call() {
    assert_trivial_filter("pass-py", "pass_py", "py-pass").await;
}
