//! `[plugins] store = "redis"`: uploads that reach every gateway. A real `redis-server`, real
//! gateways on loopback each with its own plugin directory, the real `testbed` component
//! uploaded through the admin API.

use http::Request;
use portcullis_tests::redis::Redis;
use portcullis_tests::*;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret";

struct Node {
    gw: portcullis::Gateway,
    dir: TempDir,
}

impl Node {
    async fn start(up: SocketAddr, redis: &Redis) -> Node {
        let dir = temp_dir("fleet");
        let extra = format!(
            "[plugins]\ndir = \"{}\"\nadmin_token = \"{TOKEN}\"\nstore = \"redis\"\nstore_timeout_ms = 1000\n[redis]\nurl = \"{}\"\nconnect_timeout_ms = 500\n",
            dir.display(),
            redis.url()
        );
        let gw = gateway(&basic_config(&[("up", up)], &extra), Path::new(".")).await;
        Node { gw, dir }
    }

    fn addr(&self) -> SocketAddr {
        self.gw.listener_addr("main").expect("listener")
    }

    fn admin(&self) -> SocketAddr {
        self.gw.admin_addr()
    }

    /// The `x-testbed` header a request to `path` came to the upstream with ("" if none).
    async fn mark(&self, path: &str) -> String {
        let (_, b) = send(self.addr(), get(self.addr(), path)).await;
        let v: serde_json::Value = serde_json::from_slice(&b).expect("echo json");
        v["headers"]["x-testbed"].as_str().unwrap_or("").to_string()
    }

    async fn request(&self, method: &str, path: &str, ct: &str, b: Vec<u8>) -> (u16, String) {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin()))
            .header("host", "localhost")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", ct)
            .body(body(b))
            .expect("request");
        let (p, b) = send(self.admin(), req).await;
        (p.status.as_u16(), String::from_utf8_lossy(&b).into_owned())
    }

    async fn put(&self, name: &str, wasm: &[u8], manifest: &str) -> (u16, String) {
        let (ct, b) = multipart(&[("manifest", manifest.as_bytes()), ("wasm", wasm)]);
        self.request("PUT", &format!("/admin/plugins/{name}"), &ct, b)
            .await
    }
}

fn testbed() -> Vec<u8> {
    std::fs::read(guest("testbed")).expect("guest built")
}

/// A testbed filter on `/up/<name>` that marks requests with `x-testbed: <mode>`.
fn manifest(name: &str, mode: &str) -> String {
    format!(
        "kind = \"inbound\"\n[match]\npath_prefix = \"/up/{name}\"\n[config]\nmode = \"{mode}\"\n"
    )
}

/// Waits until every node marks `/up/<name>` with `want`; returns how long that took.
async fn all_serve(nodes: &[&Node], name: &str, want: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    for n in nodes {
        let ok = eventually_async(within.saturating_sub(t0.elapsed()), || async {
            n.mark(&format!("/up/{name}/x")).await == want
        })
        .await;
        assert!(ok, "{} did not serve `{want}` within {within:?}", n.addr());
    }
    t0.elapsed()
}

/// Requests to `node` in a loop until stopped; counts the ones that were not 200.
fn load(node: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (mut ok, mut bad) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let (p, _) = send(node, get(node, "/up/app/x")).await;
            if p.status == 200 {
                ok += 1;
            } else {
                bad += 1;
            }
        }
        (ok, bad)
    })
}

#[tokio::test]
async fn an_upload_to_one_gateway_reaches_all_three_and_rollback_and_delete_do_too() {
    let redis = Redis::start();
    let up = Upstream::start("up").await;
    let (a, b, c) = (
        Node::start(up.addr, &redis).await,
        Node::start(up.addr, &redis).await,
        Node::start(up.addr, &redis).await,
    );
    let wasm = testbed();

    let t0 = Instant::now();
    let (s, r) = a.put("app", &wasm, &manifest("app", "v1")).await;
    let put_took = t0.elapsed();
    assert_eq!(s, 200, "{r}");
    // Within 2 s plus the compile time (the uploading gateway's own validation is a fair
    // measure of one compile on this machine).
    let took = all_serve(&[&b, &c], "app", "v1", Duration::from_secs(2) + put_took).await;
    println!("v1 on B and C {took:?} after the PUT returned (PUT took {put_took:?})");

    // The listing shows the fleet version beside the loaded one.
    let v = admin_plugin(c.admin(), "app").await;
    assert_eq!(v["state"], "loaded");
    assert_eq!(v["fleet_version"], v["version"], "{v}");

    // A broken upload is refused where it is made and replaces nothing anywhere.
    let (s, r) = b.put("app", b"not wasm", &manifest("app", "v9")).await;
    assert_eq!(s, 422, "{r}");
    let v2 = admin_plugin(a.admin(), "app").await;
    assert_eq!(v2["fleet_version"], v["version"], "the store kept v1: {v2}");
    for n in [&a, &b, &c] {
        assert_eq!(n.mark("/up/app/x").await, "v1");
    }

    // v2 from C while B is under load: no request fails across the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(b.addr(), stop.clone());
    let (s, r) = c.put("app", &wasm, &manifest("app", "v2")).await;
    assert_eq!(s, 200, "{r}");
    all_serve(&[&a, &b], "app", "v2", Duration::from_secs(2) + put_took).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, bad) = loader.await.expect("load task");
    assert!(ok > 0 && bad == 0, "{ok} ok, {bad} failed under the swap");

    // Rollback on B: v1 again everywhere; then there is nothing left to roll back to.
    let (s, r) = b
        .request("POST", "/admin/plugins/app/rollback", "text/plain", vec![])
        .await;
    assert_eq!(s, 200, "{r}");
    all_serve(&[&a, &b, &c], "app", "v1", Duration::from_secs(3)).await;
    let (s, r) = a
        .request("POST", "/admin/plugins/app/rollback", "text/plain", vec![])
        .await;
    assert_eq!(s, 409, "{r}");
    assert!(r.contains("no previous version"), "{r}");

    // Delete on C: unloaded everywhere, files gone.
    let (s, r) = c
        .request("DELETE", "/admin/plugins/app", "text/plain", vec![])
        .await;
    assert_eq!(s, 200, "{r}");
    all_serve(&[&a, &b, &c], "app", "", Duration::from_secs(3)).await;
    assert!(!a.dir.join("app.wasm").exists() && !b.dir.join("app.toml").exists());
    let m = metrics(b.admin()).await;
    assert!(
        sample(&m, "portcullis_plugin_store_sync_total{result=\"applied\"}") >= Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "portcullis_plugin_store_sync_total{result=\"removed\"}"),
        Some(1.0)
    );
}

/// The store's key for an artifact (docs/plugins.md, "Fleet store").
fn artifact_key(name: &str, wasm: &[u8], manifest: &str) -> String {
    let mut h = Sha256::new();
    h.update(wasm);
    h.update([0u8]);
    h.update(manifest.as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("portcullis:plugins:artifact:{name}:{hex}")
}

#[tokio::test]
async fn a_late_gateway_catches_up_at_boot_and_refuses_a_tampered_artifact() {
    let redis = Redis::start();
    let up = Upstream::start("up").await;
    let a = Node::start(up.addr, &redis).await;
    let wasm = testbed();
    let (good, bad) = (manifest("good", "good"), manifest("bad", "bad"));
    assert_eq!(a.put("good", &wasm, &good).await.0, 200);
    assert_eq!(a.put("bad", &wasm, &bad).await.0, 200);
    // Someone with write access to Redis swaps the bytes under `bad`'s hash.
    let reply = redis.command(&[
        b"HSET",
        artifact_key("bad", &wasm, &bad).as_bytes(),
        b"wasm",
        b"\0asm garbage",
    ]);
    assert_eq!(reply, ":0", "the artifact existed and was overwritten");

    // A gateway that starts now serves `good` as soon as it is up, and never loads `bad`.
    let d = Node::start(up.addr, &redis).await;
    assert_eq!(d.mark("/up/good/x").await, "good");
    assert_eq!(d.mark("/up/bad/x").await, "");
    assert!(
        !d.dir.join("bad.wasm").exists(),
        "a tampered artifact never reaches the directory"
    );
    let v = admin_plugin(d.admin(), "bad").await;
    assert_eq!(v["state"], "not-mirrored", "{v}");
    let m = metrics(d.admin()).await;
    assert_eq!(
        sample(
            &m,
            "portcullis_plugin_store_sync_total{result=\"hash_mismatch\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // The gateway that had it loaded before the tampering keeps serving it.
    assert_eq!(a.mark("/up/bad/x").await, "bad");
}

#[tokio::test]
async fn with_redis_down_uploads_fail_fast_plugins_keep_serving_and_the_mirror_catches_up() {
    let mut redis = Redis::start();
    let up = Upstream::start("up").await;
    let (a, b) = (
        Node::start(up.addr, &redis).await,
        Node::start(up.addr, &redis).await,
    );
    let wasm = testbed();
    assert_eq!(a.put("app", &wasm, &manifest("app", "v1")).await.0, 200);
    all_serve(&[&b], "app", "v1", Duration::from_secs(5)).await;

    redis.kill();
    let t0 = Instant::now();
    let (s, r) = a.put("app", &wasm, &manifest("app", "v2")).await;
    let took = t0.elapsed();
    assert_eq!(s, 503, "{r}");
    assert!(r.contains("fleet store unavailable"), "{r}");
    // Validation (a compile from the memory cache) plus at most store_timeout_ms.
    assert!(took < Duration::from_secs(3), "a 503 after {took:?}");
    for n in [&a, &b] {
        assert_eq!(
            n.mark("/up/app/x").await,
            "v1",
            "loaded plugins keep serving"
        );
    }
    let counted = wait_for_metric(
        b.admin(),
        "portcullis_plugin_store_sync_total{result=\"error\"}",
        Duration::from_secs(5),
        |v| v >= 1.0,
    )
    .await;
    assert!(counted, "the mirror counts its failed syncs");

    // Redis comes back (empty): the next upload reaches B again.
    redis.restart();
    let ok = eventually_async(Duration::from_secs(5), || async {
        a.put("app", &wasm, &manifest("app", "v2")).await.0 == 200
    })
    .await;
    assert!(ok, "uploads work again once Redis is back");
    all_serve(&[&a, &b], "app", "v2", Duration::from_secs(4)).await;
}
