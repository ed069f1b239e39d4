//! The plugin runtime with real Wasm components built from `plugins/`: filter semantics,
//! every limit against a real misbehaving guest, failure policy, quarantine, hot reload,
//! upload and the admin API.

use http::Request;
use portcullis_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn config(up: std::net::SocketAddr, dir: &Path, extra: &str) -> String {
    basic_config(
        &[("up", up)],
        &format!(
            "[[cluster]]\nname = \"other\"\nendpoints = [\"{up}\"]\n[[route]]\nname = \"all\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"up\"\n[plugins]\ndir = \"{}\"\nadmin_token = \"s3cret\"\n{extra}",
            dir.display()
        ),
    )
}

fn echo(body: &bytes::Bytes) -> serde_json::Value {
    serde_json::from_slice(body).expect("echo json")
}

#[tokio::test]
async fn inbound_filters_change_requests_in_order_and_outbound_filters_see_metadata() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("plugins-basic");
    // Order 10 rewrites the path; order 20 (a second copy) sees the rewritten request.
    install_plugin(
        &dir,
        "rewrite",
        "testbed",
        "kind = \"inbound\"\norder = 10\n[match]\npath_prefix = \"/old\"\n[config]\nmode = \"first\"\nrewrite_to = \"/up/new\"\n",
    );
    install_plugin(
        &dir,
        "second",
        "testbed",
        "kind = \"inbound\"\norder = 20\n[match]\npath_prefix = \"/up/new\"\n[config]\nmode = \"second\"\n",
    );
    install_plugin(
        &dir,
        "out",
        "testbed",
        "kind = \"outbound\"\n[match]\npath_prefix = \"/up\"\n[config]\nmode = \"ok\"\n",
    );
    install_plugin(
        &dir,
        "headers",
        "add-header",
        "kind = \"outbound\"\n[config]\nset = { \"x-frame-options\" = \"DENY\" }\nremove = [\"x-upstream\"]\n",
    );
    // Every request keeps its passport (checked at the end).
    let cfg = config(up.addr, &dir, "").replacen("[admin]\n", "[admin]\nslow_request_ms = 0\n", 1);
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    let (p, b) = send(addr, get(addr, "/old/thing?q=1")).await;
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&b));
    let e = echo(&b);
    assert_eq!(e["path"], "/up/new?q=1", "path rewritten, query kept");
    // The later filter overwrote the earlier one's header: it ran second.
    assert_eq!(e["headers"]["x-testbed"], "second");
    // Outbound: metadata from the inbound filters is visible, the status too.
    assert_eq!(header(&p, "x-testbed-meta"), "second");
    assert_eq!(header(&p, "x-testbed-out"), "200");
    assert_eq!(header(&p, "x-frame-options"), "DENY");
    assert_eq!(
        header(&p, "x-upstream"),
        "",
        "removed by the outbound filter"
    );

    // A filter whose match does not apply is skipped without entering Wasm.
    let m = metrics(gw.admin_addr()).await;
    let calls = sample(&m, "portcullis_plugin_calls_total{plugin=\"rewrite\"}").unwrap_or(-1.0);
    let (p, b) = send(addr, get(addr, "/up/plain")).await;
    assert_eq!(echo(&b)["path"], "/up/plain");
    // No inbound filter applied, but the outbound ones still ran on the response.
    assert_eq!(header(&p, "x-frame-options"), "DENY");
    assert_eq!(header(&p, "x-testbed-out"), "200");
    let m = metrics(gw.admin_addr()).await;
    assert_eq!(
        sample(&m, "portcullis_plugin_calls_total{plugin=\"rewrite\"}"),
        Some(calls)
    );
    // The passport records the inbound phase only where a filter ran: the request that no
    // inbound filter applies to skips the phase whole (it costs one index lookup).
    let (_, passports) = send(gw.admin_addr(), get(gw.admin_addr(), "/admin/passports")).await;
    let all: serde_json::Value = serde_json::from_slice(&passports).expect("passports json");
    // The filtered request is listed under the path it came with or the one it was given.
    let states = |paths: &[&str]| -> Vec<String> {
        let mine: Vec<&serde_json::Value> = all
            .as_array()
            .expect("passports array")
            .iter()
            .filter(|p| {
                p["path"]
                    .as_str()
                    .is_some_and(|x| paths.iter().any(|want| x.starts_with(want)))
            })
            .collect();
        assert_eq!(mine.len(), 1, "one passport for {paths:?}: {all}");
        mine[0]["states"]
            .as_array()
            .expect("states")
            .iter()
            .filter_map(|s| s["state"].as_str().map(str::to_string))
            .collect()
    };
    let filtered = states(&["/old/thing", "/up/new"]);
    let skipped = states(&["/up/plain"]);
    for s in ["INBOUND_FILTERS_START", "INBOUND_FILTERS_END"] {
        assert!(filtered.iter().any(|x| x == s), "{s} in {filtered:?}");
        assert!(!skipped.iter().any(|x| x == s), "no {s} in {skipped:?}");
    }
}

#[tokio::test]
async fn respond_reject_and_cluster_override() {
    let up = Upstream::start("up").await;
    let other = Upstream::start("other-up").await;
    let dir = temp_dir("plugins-respond");
    install_plugin(
        &dir,
        "answer",
        "testbed",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/answer\"\n[config]\nmode = \"respond\"\n",
    );
    install_plugin(
        &dir,
        "deny",
        "testbed",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/deny\"\n[config]\nmode = \"reject\"\n",
    );
    install_plugin(&dir, "move", "testbed", "kind = \"inbound\"\n[match]\npath_prefix = \"/move\"\n[config]\nmode = \"ok\"\ncluster = \"elsewhere\"\n");
    let cfg = config(up.addr, &dir, "").replace(
        "[plugins]",
        &format!(
            "[[cluster]]\nname = \"elsewhere\"\nendpoints = [\"{}\"]\n[plugins]",
            other.addr
        ),
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    let (p, b) = send(addr, get(addr, "/answer")).await;
    assert_eq!(p.status, 200);
    assert_eq!(&b[..], b"answered by testbed\n");
    assert_eq!(up.requests(), 0, "no upstream call for a direct answer");

    let (p, b) = send(addr, get(addr, "/deny")).await;
    assert_eq!(p.status, 403);
    assert_eq!(header(&p, "portcullis-error"), "plugin-rejected");
    assert!(String::from_utf8_lossy(&b).contains("testbed says no"));

    let (p, b) = send(addr, get(addr, "/move")).await;
    assert_eq!(p.status, 200);
    assert_eq!(echo(&b)["upstream"], "other-up");
}

/// Waits until a request is in flight at the gateway, or the task sending it has finished
/// (a guest that never yields holds this thread until it is stopped: the caller's order
/// check then reports it).
async fn arrived_or_done<T>(
    admin: std::net::SocketAddr,
    task: &tokio::task::JoinHandle<T>,
) -> bool {
    eventually_async(Duration::from_secs(5), || async {
        task.is_finished()
            || sample(
                &metrics(admin).await,
                "portcullis_in_flight{scope=\"global\"}",
            )
            .is_some_and(|v| v >= 1.0)
    })
    .await
}

/// The epoch ticker parks while no plugin call runs (an idle gateway does not wake a thread
/// 1000 times a second). The first call after an idle spell must still be bounded by its CPU
/// budget and still yield: if the ticker stayed parked, the loop would never stop and the good
/// request would never be served. Such a guest holds the test's only thread, so no timeout in
/// the test could fire: a watchdog thread fails the test binary instead of letting it hang.
#[tokio::test]
async fn cpu_budget_and_yielding_hold_after_the_gateway_was_idle() {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        if !watch.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("cpu_budget_and_yielding_hold_after_the_gateway_was_idle: the spinning guest was never stopped after an idle spell (epoch ticker left parked?)");
            std::process::exit(101);
        }
    });
    let up = Upstream::start("up").await;
    let dir = temp_dir("plugins-idle-ticker");
    install_plugin(
        &dir,
        "spin",
        "testbed",
        "kind = \"inbound\"\nfailure = \"fail_closed\"\n[match]\npath_prefix = \"/spin\"\n[limits]\ncpu_ms = 50\ntimeout_ms = 2000\n[config]\nmode = \"loop\"\n",
    );
    let gw = gateway(&config(up.addr, &dir, ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    for round in 0..2 {
        // Well past the ticker's 100 ms idle threshold.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let bad = tokio::spawn(async move {
            let t0 = Instant::now();
            let r =
                tokio::time::timeout(Duration::from_secs(10), send(addr, get(addr, "/spin"))).await;
            (r, t0.elapsed())
        });
        // The spinning request is in the gateway (its guest runs or is about to)...
        assert!(
            arrived_or_done(gw.admin_addr(), &bad).await,
            "round {round}: the spinning request never arrived"
        );
        // ...and the good one is served before the spinning one ends: on this one-thread
        // runtime, that is only possible if the guest yields.
        let good = tokio::time::timeout(Duration::from_secs(10), send(addr, get(addr, "/up/ok")))
            .await
            .expect("the good request is served while the guest spins");
        assert_eq!(good.0.status, 200);
        assert!(
            !bad.is_finished(),
            "round {round}: the good request had to wait for the spinning guest to stop"
        );
        let (r, took) = bad.await.expect("bad request task");
        let (p, _) = r.expect("the spinning guest is stopped");
        assert_eq!(header(&p, "portcullis-error"), "plugin-cpu-exceeded");
        assert!(
            took >= Duration::from_millis(40) && took < Duration::from_millis(1000),
            "round {round}: stopped after {took:?}, budget 50 ms"
        );
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Every limit, against a real misbehaving guest; each time a concurrent well-behaved request
/// is served promptly. `#[tokio::test]` is single-threaded: if a guest did not yield, the good
/// request could not be served until it stopped.
#[tokio::test]
async fn misbehaving_guests_are_contained_and_do_not_stall_other_requests() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("plugins-limits");
    let cases = [
        ("loop", "plugin-cpu-exceeded", "PLUGIN_CPU_EXCEEDED"),
        ("memory", "plugin-memory-exceeded", "PLUGIN_MEMORY_EXCEEDED"),
        ("recursion", "plugin-trap", "PLUGIN_TRAP"),
        ("trap", "plugin-trap", "PLUGIN_TRAP"),
        ("panic", "plugin-trap", "PLUGIN_TRAP"),
        ("huge-headers", "plugin-bad-output", "PLUGIN_TRAP"),
        ("bad-header", "plugin-bad-output", "PLUGIN_TRAP"),
    ];
    for (mode, _, _) in cases {
        install_plugin(
            &dir,
            &format!("bad-{mode}"),
            "testbed",
            &format!("kind = \"inbound\"\nfailure = \"fail_closed\"\n[match]\npath_prefix = \"/bad/{mode}\"\n[limits]\ncpu_ms = 200\nmemory_mb = 16\ntimeout_ms = 2000\n[config]\nmode = \"{mode}\"\n"),
        );
    }
    let gw = gateway(
        &config(up.addr, &dir, "quarantine_after = 1000\nmax_cpu_ms = 500\n"),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    let admin = gw.admin_addr();

    for (mode, code, state) in cases {
        let bad = tokio::spawn(async move {
            let t0 = Instant::now();
            let r = send(addr, get(addr, &format!("/bad/{mode}"))).await;
            (r, t0.elapsed())
        });
        if mode == "loop" {
            // Wait until the looping request is in the gateway, then prove the order: the
            // good request is served while the loop still runs (its guest yields).
            assert!(
                arrived_or_done(admin, &bad).await,
                "the looping request arrived"
            );
        } else {
            tokio::task::yield_now().await;
        }
        let (p, _) = send(addr, get(addr, "/up/good")).await;
        assert_eq!(p.status, 200, "{mode}: the good request is served");
        if mode == "loop" {
            assert!(
                !bad.is_finished(),
                "the good request waited for the looping guest to be stopped"
            );
        }
        let ((p, b), bad_took) = bad.await.expect("bad request task");
        assert!(p.status.is_server_error(), "{mode}: {}", p.status);
        assert_eq!(
            header(&p, "portcullis-error"),
            code,
            "{mode}: {}",
            String::from_utf8_lossy(&b)
        );
        assert!(
            bad_took < Duration::from_millis(1500),
            "{mode}: stopped in time ({bad_took:?})"
        );
        if mode == "loop" {
            // The loop ran its whole 200 ms budget (CPU time: wall time is at least that).
            assert!(bad_took >= Duration::from_millis(150), "{bad_took:?}");
        }
        // This request's own passport shows the state, not any earlier one's.
        let (_, passports) = send(admin, get(admin, "/admin/passports")).await;
        let all: serde_json::Value = serde_json::from_slice(&passports).expect("passports json");
        let path = format!("/bad/{mode}");
        let mine: Vec<&serde_json::Value> = all
            .as_array()
            .expect("passports array")
            .iter()
            .filter(|p| p["path"] == path.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{mode}: one passport for {path}: {all}");
        let states: Vec<&str> = mine[0]["states"]
            .as_array()
            .expect("states")
            .iter()
            .filter_map(|s| s["state"].as_str())
            .collect();
        assert!(
            states.contains(&state),
            "{mode}: passport shows {state}: {states:?}"
        );
        let m = metrics(admin).await;
        let kind = code.trim_start_matches("plugin-");
        assert!(
            sample(
                &m,
                &format!(
                    "portcullis_plugin_failures_total{{plugin=\"bad-{mode}\",kind=\"{kind}\"}}"
                )
            ) >= Some(1.0),
            "{mode}: failure metric"
        );
    }
    // Memory high-water is reported and bounded by the limit.
    let m = metrics(admin).await;
    let hw = sample(
        &m,
        "portcullis_plugin_memory_high_water_bytes{plugin=\"bad-memory\"}",
    )
    .expect("hw");
    assert!(hw > 1e6 && hw <= 16.0 * 1024.0 * 1024.0, "{hw}");
}

#[tokio::test]
async fn fail_open_skips_a_broken_filter_and_fail_closed_refuses() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("plugins-policy");
    install_plugin(&dir, "open", "testbed", "kind = \"inbound\"\nfailure = \"fail_open\"\n[match]\npath_prefix = \"/up/open\"\n[config]\nmode = \"trap\"\n");
    install_plugin(&dir, "closed", "testbed", "kind = \"inbound\"\nfailure = \"fail_closed\"\n[match]\npath_prefix = \"/up/closed\"\n[config]\nmode = \"trap\"\n");
    let gw = gateway(&config(up.addr, &dir, ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    let (p, b) = send(addr, get(addr, "/up/open")).await;
    assert_eq!(p.status, 200);
    assert_eq!(echo(&b)["upstream"], "up");
    let (p, _) = send(addr, get(addr, "/up/closed")).await;
    assert_eq!(p.status, 500);
    assert_eq!(header(&p, "portcullis-error"), "plugin-trap");
    assert_eq!(
        up.requests(),
        1,
        "only the fail_open request reached the upstream"
    );
    let m = metrics(gw.admin_addr()).await;
    assert_eq!(
        sample(
            &m,
            "portcullis_plugin_failures_total{plugin=\"open\",kind=\"trap\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn repeated_traps_quarantine_with_backoff_then_probe_again() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("plugins-quarantine");
    install_plugin(
        &dir,
        "flaky",
        "testbed",
        "kind = \"inbound\"\n[config]\nmode = \"trap\"\n",
    );
    let gw = gateway(
        &config(
            up.addr,
            &dir,
            "quarantine_after = 2\nquarantine_base_ms = 400\n",
        ),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    for _ in 0..2 {
        let (p, _) = send(addr, get(addr, "/up/x")).await;
        assert_eq!(header(&p, "portcullis-error"), "plugin-trap");
    }
    let (p, _) = send(addr, get(addr, "/up/x")).await;
    assert_eq!(p.status, 503);
    assert_eq!(header(&p, "portcullis-error"), "plugin-quarantined");
    let (_, b) = send(
        gw.admin_addr(),
        get(gw.admin_addr(), "/admin/plugins/flaky"),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
    assert_eq!(v["state"], "quarantined", "{v}");
    tokio::time::sleep(Duration::from_millis(450)).await;
    // The quarantine ended: the next request probes the plugin again (and it traps again).
    let (p, _) = send(addr, get(addr, "/up/x")).await;
    assert_eq!(header(&p, "portcullis-error"), "plugin-trap");
}

#[tokio::test]
async fn hot_reload_under_load_swaps_versions_without_failures_and_unloads_deleted() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("plugins-reload");
    let manifest = |v: &str| format!("kind = \"inbound\"\n[config]\nmode = \"{v}\"\n");
    install_plugin(&dir, "ver", "testbed", &manifest("v1"));
    let gw = gateway(
        &config(up.addr, &dir, "reload_debounce_ms = 50\n"),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let client = h1_client();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = client
                    .request(get(addr, "/up/load"))
                    .await
                    .expect("response");
                let status = resp.status().as_u16();
                let b = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .expect("body")
                    .to_bytes();
                let v = if status == 200 {
                    echo(&b)["headers"]["x-testbed"]
                        .as_str()
                        .unwrap_or("none")
                        .to_string()
                } else {
                    format!("status {status}")
                };
                seen.push(v);
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    install_plugin(&dir, "ver", "testbed", &manifest("v2"));
    let mut switched = None;
    while t0.elapsed() < Duration::from_secs(10) {
        let (_, b) = send(addr, get(addr, "/up/probe")).await;
        if echo(&b)["headers"]["x-testbed"] == "v2" {
            switched = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let switched = switched.expect("v2 served within 10 s");
    eprintln!("v2 served after {switched:?}");

    // A broken version never replaces the working one.
    install_plugin_bytes(&dir, "ver", b"\0asm garbage", &manifest("v3"));
    assert!(
        wait_for_metric(
            gw.admin_addr(),
            "portcullis_plugin_reloads_total{result=\"failed\"}",
            Duration::from_secs(10),
            |v| v >= 1.0
        )
        .await,
        "the broken version was tried"
    );
    let (_, b) = send(addr, get(addr, "/up/probe")).await;
    assert_eq!(echo(&b)["headers"]["x-testbed"], "v2");
    let (_, b) = send(gw.admin_addr(), get(gw.admin_addr(), "/admin/plugins/ver")).await;
    let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
    assert_eq!(v["state"], "loaded-with-failed-update", "{v}");
    assert!(
        v["last_error"].as_str().unwrap_or("").contains("ver.wasm"),
        "{v}"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for h in load {
        let seen = h.await.expect("load task");
        total += seen.len();
        assert!(
            seen.iter().all(|s| s == "v1" || s == "v2"),
            "every request served by one version or the other: {:?}",
            seen.iter()
                .filter(|s| *s != "v1" && *s != "v2")
                .take(3)
                .collect::<Vec<_>>()
        );
    }
    assert!(total > 20, "load ran ({total} requests)");

    // Delete: the filter is unloaded.
    std::fs::remove_file(dir.join("ver.wasm")).expect("rm");
    std::fs::remove_file(dir.join("ver.toml")).expect("rm");
    assert!(
        eventually_async(Duration::from_secs(3), || async {
            let (_, b) = send(addr, get(addr, "/up/probe")).await;
            echo(&b)["headers"].get("x-testbed").is_none()
        })
        .await,
        "deleted plugin unloaded"
    );
}

#[tokio::test]
async fn admin_upload_needs_the_token_validates_and_deletes() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("plugins-admin");
    let gw = gateway(
        &config(up.addr, &dir, "max_upload_bytes = 8388608\n"),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    let admin = gw.admin_addr();
    let wasm = std::fs::read(guest("testbed")).expect("guest");
    let manifest = b"kind = \"inbound\"\n[config]\nmode = \"uploaded\"\n";

    let put = |token: Option<&str>, parts: &[(&str, &[u8])]| {
        let (ct, body_bytes) = multipart(parts);
        let mut b = Request::builder()
            .method("PUT")
            .uri(format!("http://{admin}/admin/plugins/up1"))
            .header("host", "localhost")
            .header("content-type", ct);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(body(body_bytes)).expect("request")
    };
    let (p, _) = send(admin, put(None, &[("manifest", manifest), ("wasm", &wasm)])).await;
    assert_eq!(p.status, 401);
    let (p, _) = send(
        admin,
        put(Some("wrong"), &[("manifest", manifest), ("wasm", &wasm)]),
    )
    .await;
    assert_eq!(p.status, 401);
    assert!(!dir.join("up1.wasm").exists());

    let (p, b) = send(
        admin,
        put(Some("s3cret"), &[("manifest", manifest), ("wasm", &wasm)]),
    )
    .await;
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&b));
    let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
    assert_eq!(v["state"], "loaded");
    assert_eq!(v["kind"], "inbound");
    assert!(dir.join("up1.wasm").exists() && dir.join("up1.toml").exists());
    let (_, b) = send(addr, get(addr, "/up/x")).await;
    assert_eq!(echo(&b)["headers"]["x-testbed"], "uploaded");

    // A broken upload is refused and the working version keeps serving.
    let (p, b) = send(
        admin,
        put(
            Some("s3cret"),
            &[("manifest", manifest), ("wasm", b"not wasm")],
        ),
    )
    .await;
    assert_eq!(p.status, 422, "{}", String::from_utf8_lossy(&b));
    let (p, _) = send(
        admin,
        put(
            Some("s3cret"),
            &[
                (
                    "manifest",
                    b"kind = \"inbound\"\n[limits]\ncpu_ms = 999999\n",
                ),
                ("wasm", &wasm),
            ],
        ),
    )
    .await;
    assert_eq!(p.status, 422);
    let (_, b) = send(addr, get(addr, "/up/x")).await;
    assert_eq!(echo(&b)["headers"]["x-testbed"], "uploaded");
    let (_, b) = send(admin, get(admin, "/admin/plugins")).await;
    let list: serde_json::Value = serde_json::from_slice(&b).expect("json");
    assert!(
        list[0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("cpu_ms"),
        "{list}"
    );

    // Delete needs the token too.
    let del = |token: Option<&str>| {
        let mut b = Request::builder()
            .method("DELETE")
            .uri(format!("http://{admin}/admin/plugins/up1"))
            .header("host", "localhost");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(body("")).expect("request")
    };
    let (p, _) = send(admin, del(None)).await;
    assert_eq!(p.status, 401);
    let (p, _) = send(admin, del(Some("s3cret"))).await;
    assert_eq!(p.status, 200);
    let (_, b) = send(addr, get(addr, "/up/x")).await;
    assert!(echo(&b)["headers"].get("x-testbed").is_none());
    assert!(!dir.join("up1.wasm").exists());
}

#[tokio::test]
async fn a_bad_plugin_at_boot_refuses_to_start_naming_the_file_and_key() {
    let dir = temp_dir("plugins-boot");
    install_plugin(&dir, "typo", "testbed", "kind = \"inbound\"\nordr = 3\n");
    let cfg = portcullis::Config::parse(
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n[plugins]\ndir = \"{}\"\n", dir.display()),
        Path::new("."),
    )
    .expect("config");
    let err = match portcullis::Gateway::start(cfg).await {
        Ok(_) => panic!("must not start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("typo.toml") && err.contains("ordr"), "{err}");
}

/// Collects everything the gateway logs (on this thread) into a buffer.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

#[tokio::test]
async fn guest_logs_stdout_and_metrics_are_exported() {
    // The test runtime has one thread: the gateway's tasks, and so its guests, log here.
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let up = Upstream::start("up").await;
    let dir = temp_dir("plugins-metrics");
    install_plugin(
        &dir,
        "printer",
        "testbed",
        "kind = \"inbound\"\n[config]\nmode = \"print\"\n",
    );
    let gw = gateway(&config(up.addr, &dir, ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    for _ in 0..3 {
        let (p, _) = send(addr, get(addr, "/up/x")).await;
        assert_eq!(p.status, 200);
    }
    let m = metrics(gw.admin_addr()).await;
    // Strictly valid exposition text: one HELP/TYPE per family, samples under it.
    assert_valid_exposition(&m);
    assert_eq!(
        sample(
            &m,
            "portcullis_plugin_guest_counter_total{plugin=\"printer\",name=\"prints\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "portcullis_plugin_calls_total{plugin=\"printer\"}"),
        Some(3.0)
    );
    assert!(
        sample(
            &m,
            "portcullis_plugin_cpu_seconds_total{plugin=\"printer\"}"
        ) > Some(0.0)
    );
    // What the guest printed and logged is in the gateway's log, once per call, named by
    // plugin (and for stdout, by stream).
    let text = logs.text();
    let stdout: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("hello from testbed stdout"))
        .collect();
    assert_eq!(stdout.len(), 3, "stdout lines: {text}");
    assert!(
        stdout
            .iter()
            .all(|l| l.contains("plugin=printer") && l.contains("stream=\"stdout\"")),
        "{stdout:?}"
    );
    let logged: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("hello from testbed log"))
        .collect();
    assert_eq!(logged.len(), 3, "log lines: {text}");
    assert!(
        logged
            .iter()
            .all(|l| l.contains("INFO") && l.contains("printer")),
        "{logged:?}"
    );
}

#[tokio::test]
async fn wall_clock_instance_upload_and_body_bounds() {
    let up = Upstream::start("up").await;
    let slow = Upstream::start_fixed("slow", 200, 2000).await;
    let dir = temp_dir("plugins-bounds");
    // timeout_ms bounds a call even while the guest is only waiting (on an upstream call).
    install_plugin(
        &dir,
        "waits",
        "fanout",
        "kind = \"endpoint\"\n[limits]\ntimeout_ms = 150\n[config]\nclusters = \"slow\"\npath = \"/\"\ntimeout_ms = 5000\n",
    );
    // One instance slot: a second concurrent call finds none and is refused, not queued.
    install_plugin(
        &dir,
        "busy",
        "testbed",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/up/busy\"\n[limits]\ncpu_ms = 400\ntimeout_ms = 2000\n[config]\nmode = \"slow\"\nspin_ms = 300\n",
    );
    // A filter that takes the body bounds it.
    install_plugin(
        &dir,
        "reads",
        "testbed",
        "kind = \"inbound\"\nbody = true\n[match]\npath_prefix = \"/up/body\"\n[limits]\nmax_body_bytes = 10\n[config]\nmode = \"ok\"\n",
    );
    let cfg = config(
        up.addr,
        &dir,
        "max_instances = 1\nmax_cpu_ms = 500\nmax_upload_bytes = 3000000\n",
    )
    .replace(
        "[plugins]",
        &format!(
            "[[cluster]]\nname = \"slow\"\nendpoints = [\"{}\"]\n[plugins]",
            slow.addr
        ),
    );
    // The endpoint route must come before the catch-all: put it first.
    let cfg = cfg.replacen("[[route]]\nname = \"all\"", "[[route]]\nname = \"waits\"\nmatch = { path_prefix = \"/waits\" }\nendpoint = \"waits\"\n[[route]]\nname = \"all\"", 1);
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    let t0 = Instant::now();
    let (p, _) = send(addr, get(addr, "/waits")).await;
    assert_eq!(p.status, 504);
    assert_eq!(header(&p, "portcullis-error"), "plugin-timeout");
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );

    let first = tokio::spawn(async move { send(addr, get(addr, "/up/busy")).await });
    // Wait until the first call is in the gateway (it takes the slot and spins 300 ms).
    assert!(
        wait_for_metric(
            gw.admin_addr(),
            "portcullis_in_flight{scope=\"global\"}",
            Duration::from_secs(5),
            |v| v >= 1.0
        )
        .await,
        "the first call arrived"
    );
    let (second, _) = send(addr, get(addr, "/up/busy")).await;
    let (first, _) = first.await.expect("first");
    // Whichever got the slot finishes normally; the other found none and was refused.
    let mut outcomes = [
        (first.status.as_u16(), header(&first, "portcullis-error")),
        (second.status.as_u16(), header(&second, "portcullis-error")),
    ];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [(200, String::new()), (503, "plugin-overloaded".to_string())],
        "one call holds the slot, the concurrent one is refused"
    );

    let post = |n: usize| {
        Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/up/body"))
            .header("host", "localhost")
            .body(body(vec![b'x'; n]))
            .expect("request")
    };
    let (p, _) = send(addr, post(8)).await;
    assert_eq!(p.status, 200);
    let (p, _) = send(addr, post(100)).await;
    assert_eq!(p.status, 413);

    // Uploads over max_upload_bytes are refused before anything is parsed.
    let admin = gw.admin_addr();
    let (ct, b) = multipart(&[
        ("manifest", b"kind = \"inbound\"\n"),
        ("wasm", &vec![0u8; 4_000_000]),
    ]);
    let req = Request::builder()
        .method("PUT")
        .uri(format!("http://{admin}/admin/plugins/big"))
        .header("host", "localhost")
        .header("authorization", "Bearer s3cret")
        .header("content-type", ct)
        .body(body(b))
        .expect("request");
    let (p, _) = send(admin, req).await;
    assert_eq!(p.status, 413);
}

#[tokio::test]
async fn instances_are_reused_within_bounds_and_dropped_after_a_failure() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("plugins-reuse");
    install_plugin(
        &dir,
        "counted",
        "testbed",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/up/count\"\n[config]\nmode = \"count\"\n",
    );
    install_plugin(
        &dir,
        "fresh",
        "testbed",
        "kind = \"inbound\"\nreuse_instance = false\n[match]\npath_prefix = \"/up/fresh\"\n[config]\nmode = \"count\"\n",
    );
    let gw = gateway(
        &config(up.addr, &dir, "instance_reuse_calls = 3\n"),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    let count = |path: &'static str, trap: bool| async move {
        let mut req = get(addr, path);
        if trap {
            req.headers_mut()
                .insert("x-testbed-trap", http::HeaderValue::from_static("1"));
        }
        let (p, b) = send(addr, req).await;
        if p.status != 200 {
            let code = p.status.as_u16();
            return format!("status {code} {}", header(&p, "portcullis-error"));
        }
        echo(&b)["headers"]["x-testbed-count"]
            .as_str()
            .unwrap_or("missing")
            .to_string()
    };
    // Sequential calls share one instance (its static counter grows) until it has served
    // instance_reuse_calls, then a new one starts from scratch.
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(count("/up/count", false).await);
    }
    assert_eq!(seen, ["1", "2", "3", "1", "2", "3", "1"]);
    // A failed call discards its instance: the next call starts on a fresh one.
    assert_eq!(count("/up/count", true).await, "status 500 plugin-trap");
    assert_eq!(count("/up/count", false).await, "1");
    assert_eq!(count("/up/count", false).await, "2");
    // reuse_instance = false: every call sees a fresh instance.
    for _ in 0..4 {
        assert_eq!(count("/up/fresh", false).await, "1");
    }
    drop(gw);

    // Idle instances may hold at most half of max_instances: with one slot, none is kept,
    // so the slot stays free for live calls and every call starts fresh.
    let gw = gateway(
        &config(up.addr, &dir, "max_instances = 1\n"),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    for _ in 0..3 {
        let (p, b) = send(addr, get(addr, "/up/count")).await;
        assert_eq!(p.status, 200);
        assert_eq!(echo(&b)["headers"]["x-testbed-count"], "1");
    }
}
