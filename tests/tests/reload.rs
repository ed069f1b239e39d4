//! Config reload without a restart (`POST /admin/config/reload`; SIGHUP is in host/tests/cli.rs),
//! under continuous load: a moved route takes effect, an invalid file and a change to a key that
//! cannot change at runtime are refused while the old config keeps serving, an unchanged
//! cluster keeps its state, and the admin token model guards it all.

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use portcullis_tests::*;
use sha2::Digest;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "adm1n-t0ken";

fn config(a: SocketAddr, b: SocketAddr, main_to: &str, b_idle: usize, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[[cluster]]
name = "a"
endpoints = ["{a}"]
[[cluster]]
name = "b"
endpoints = ["{b}"]
pool = {{ max_idle_per_endpoint = {b_idle} }}
[[route]]
name = "pinned"
match = {{ path_prefix = "/pinned" }}
cluster = "a"
[[route]]
name = "main"
match = {{ path_prefix = "/" }}
cluster = "{main_to}"
{extra}
"#
    )
}

fn reload_req(admin: SocketAddr, token: Option<&str>) -> Request<BoxBody> {
    let mut r = Request::builder()
        .method("POST")
        .uri(format!("http://{admin}/admin/config/reload"))
        .header("host", "localhost");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(body(Bytes::new())).expect("request")
}

fn json(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e}): {b:?}"))
}

/// Clients hammering the gateway until stopped, counting answers by upstream and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<parking_lot_free::Log>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A tiny failure log without extra dependencies.
mod parking_lot_free {
    #[derive(Default)]
    pub struct Log(pub std::sync::Mutex<Vec<String>>);
    impl Log {
        pub fn push(&self, s: String) {
            if let Ok(mut v) = self.0.lock() {
                if v.len() < 20 {
                    v.push(s);
                }
            }
        }
        pub fn all(&self) -> Vec<String> {
            self.0.lock().map(|v| v.clone()).unwrap_or_default()
        }
    }
}

impl Load {
    fn start(addr: SocketAddr, paths: &[&'static str]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(parking_lot_free::Log::default());
        let client = h1_client();
        let mut tasks = Vec::new();
        for (i, path) in paths.iter().cycle().take(4).enumerate() {
            let (stop, ok, failed, failures) =
                (stop.clone(), ok.clone(), failed.clone(), failures.clone());
            let client = client.clone();
            let path = *path;
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let req = get(addr, &format!("{path}/{i}/{n}"));
                    let res = tokio::time::timeout(Duration::from_secs(10), async {
                        let resp = client.request(req).await.map_err(|e| e.to_string())?;
                        let status = resp.status();
                        resp.into_body()
                            .collect()
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>(status)
                    })
                    .await;
                    match res {
                        Ok(Ok(s)) if s == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.push(format!("{path}: {other:?}"));
                        }
                    }
                }
            }));
        }
        Load {
            stop,
            ok,
            failed,
            failures,
            tasks,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns (ok, failed).
    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.failures.all(),
        )
    }
}

async fn served_by(addr: SocketAddr, path: &str) -> String {
    let (p, _) = send(addr, get(addr, path)).await;
    assert_eq!(p.status, 200);
    header(&p, "x-upstream")
}

async fn config_view(admin: SocketAddr, token: &str) -> serde_json::Value {
    let req = Request::builder()
        .uri(format!("http://{admin}/admin/config"))
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(body(Bytes::new()))
        .expect("request");
    let (p, b) = send(admin, req).await;
    assert_eq!(p.status, 200, "{b:?}");
    json(&b)
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("config file");
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_moves_a_route_and_refuses_bad_files_without_failing_a_request() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = temp_dir("reload");
    let file = dir.join("gw.toml");
    std::fs::write(&file, config(a.addr, b.addr, "a", 64, "")).expect("write");
    let gw = portcullis::Gateway::start_file(&file)
        .await
        .expect("gateway starts");
    let addr = gw.listener_addr("main").expect("listener");
    let admin = gw.admin_addr();
    assert_eq!(served_by(addr, "/x").await, "a");

    let view = config_view(admin, TOKEN).await;
    assert_eq!(view["hash"], sha256_hex(&file));
    let first_loaded = view["loaded_at_unix_ms"].as_u64().expect("loaded_at");
    assert!(first_loaded > 0);

    let load = Load::start(addr, &["/pinned", "/moving"]);
    assert!(
        eventually(Duration::from_secs(10), || load.ok() >= 200).await,
        "load is flowing"
    );

    // The admin token guards reloads.
    for token in [None, Some("wrong")] {
        let (p, _) = send(admin, reload_req(admin, token)).await;
        assert_eq!(p.status, 401, "reload with {token:?}");
    }

    // Cluster `a` is unchanged (and keeps serving `/pinned`); `b` is redefined; `main` moves.
    let series = format!(
        "portcullis_upstream_requests_total{{cluster=\"a\",endpoint=\"{}\"}}",
        a.addr
    );
    let before = sample(&metrics(admin).await, &series).expect("a's counter");
    assert!(before > 0.0);
    std::fs::write(&file, config(a.addr, b.addr, "b", 32, "")).expect("write");
    let (p, body) = send(admin, reload_req(admin, Some(TOKEN))).await;
    assert_eq!(p.status, 200, "{body:?}");
    let r = json(&body);
    assert_eq!(r["result"], "ok");
    assert_eq!(r["kept_clusters"], serde_json::json!(["a"]));
    assert_eq!(r["hash"], sha256_hex(&file));
    // New requests take the new route at once.
    assert_eq!(served_by(addr, "/x").await, "b");
    assert_eq!(served_by(addr, "/pinned").await, "a");
    let b_before = b.requests();
    assert!(
        eventually(Duration::from_secs(10), || b.requests() >= b_before + 100).await,
        "the moved route's load reaches b"
    );
    // `a` kept its state: its counters continue instead of starting over.
    let after = sample(&metrics(admin).await, &series).expect("a's counter");
    assert!(after > before, "a's counter went on: {before} → {after}");
    let view = config_view(admin, TOKEN).await;
    assert_eq!(view["hash"], sha256_hex(&file));
    assert!(view["loaded_at_unix_ms"].as_u64().expect("loaded_at") >= first_loaded);
    let good_hash = sha256_hex(&file);

    // An invalid file: refused with every problem; nothing changes.
    std::fs::write(
        &file,
        config(
            a.addr,
            b.addr,
            "nowhere",
            32,
            "[timeouts]\nconnect_ms = 0\n",
        ),
    )
    .expect("write");
    let (p, body) = send(admin, reload_req(admin, Some(TOKEN))).await;
    assert_eq!(p.status, 400, "{body:?}");
    let r = json(&body);
    assert_eq!(r["result"], "invalid");
    let problems = r["problems"].as_array().expect("problems");
    let text = format!("{problems:?}");
    assert!(problems.len() >= 2, "{text}");
    assert!(text.contains("route[1].cluster"), "{text}");
    assert!(text.contains("timeouts.connect_ms"), "{text}");
    assert_eq!(served_by(addr, "/x").await, "b", "the old config serves on");
    let view = config_view(admin, TOKEN).await;
    assert_eq!(view["hash"], good_hash);
    assert_eq!(view["last_reload"]["result"], "invalid");

    // A key that cannot change at runtime: refused, naming it.
    std::fs::write(
        &file,
        config(a.addr, b.addr, "a", 32, "").replace(
            "listen = \"127.0.0.1:0\"\ntoken",
            "listen = \"127.0.0.1:1\"\ntoken",
        ),
    )
    .expect("write");
    let (p, body) = send(admin, reload_req(admin, Some(TOKEN))).await;
    assert_eq!(p.status, 409, "{body:?}");
    let r = json(&body);
    assert_eq!(r["result"], "refused");
    assert!(format!("{}", r["problems"]).contains("admin.listen"), "{r}");
    assert_eq!(served_by(addr, "/x").await, "b", "the old config serves on");

    let m = metrics(admin).await;
    assert_valid_exposition(&m);
    for (result, n) in [
        ("ok", 1.0),
        ("invalid", 1.0),
        ("refused", 1.0),
        ("error", 0.0),
    ] {
        let s = format!("portcullis_config_reloads_total{{result=\"{result}\"}}");
        assert_eq!(sample(&m, &s), Some(n), "{s}");
    }
    // The kept route's counters carried over; a served route appears once.
    assert!(
        sample(
            &m,
            "portcullis_requests_total{route=\"pinned\",status_class=\"2xx\"}"
        )
        .unwrap_or(0.0)
            > 0.0
    );

    let (ok, failed, failures) = load.finish().await;
    assert_eq!(failed, 0, "failed requests under reload: {failures:?}");
    assert!(ok > 300, "only {ok} requests");
    gw.shutdown().await;
}

#[tokio::test]
async fn read_token_guards_reads_and_the_admin_token_guards_mutations() {
    let a = Upstream::start("a").await;
    let dir = temp_dir("reload-tokens");
    let file = dir.join("gw.toml");
    std::fs::write(
        &file,
        config(a.addr, a.addr, "a", 64, "").replace(
            &format!("token = \"{TOKEN}\""),
            &format!("token = \"{TOKEN}\"\nread_token = \"reader\""),
        ),
    )
    .expect("write");
    let gw = portcullis::Gateway::start_file(&file)
        .await
        .expect("gateway starts");
    let admin = gw.admin_addr();
    let req = |path: &str, token: Option<&str>| {
        let mut r = Request::builder()
            .uri(format!("http://{admin}{path}"))
            .header("host", "localhost");
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(body(Bytes::new())).expect("request")
    };
    for path in ["/metrics", "/admin/config", "/admin/passports"] {
        let (p, _) = send(admin, req(path, None)).await;
        assert_eq!(p.status, 401, "{path} without a token");
        assert_eq!(header(&p, "www-authenticate"), "Bearer");
        let (p, _) = send(admin, req(path, Some("nope"))).await;
        assert_eq!(p.status, 401, "{path} with a wrong token");
        for t in ["reader", TOKEN] {
            let (p, _) = send(admin, req(path, Some(t))).await;
            assert_eq!(p.status, 200, "{path} with {t}");
        }
    }
    let (p, _) = send(admin, req("/healthz", None)).await;
    assert_eq!(p.status, 200, "health stays open for load balancers");
    // The read token cannot mutate.
    let (p, _) = send(admin, reload_req(admin, Some("reader"))).await;
    assert_eq!(p.status, 401);
    // Rotating the tokens by reload: the old admin token stops working.
    std::fs::write(
        &file,
        config(a.addr, a.addr, "a", 64, "").replace(TOKEN, "rotated"),
    )
    .expect("write");
    let (p, b) = send(admin, reload_req(admin, Some(TOKEN))).await;
    assert_eq!(p.status, 200, "{b:?}");
    let (p, _) = send(admin, reload_req(admin, Some(TOKEN))).await;
    assert_eq!(p.status, 401);
    let (p, _) = send(admin, req("/metrics", None)).await;
    assert_eq!(p.status, 200, "no read_token any more: reads are open");
    let (p, b) = send(admin, reload_req(admin, Some("rotated"))).await;
    assert_eq!(p.status, 200, "{b:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn without_an_admin_token_a_reload_is_forbidden() {
    let a = Upstream::start("a").await;
    let dir = temp_dir("reload-no-token");
    let file = dir.join("gw.toml");
    std::fs::write(
        &file,
        config(a.addr, a.addr, "a", 64, "").replace(&format!("token = \"{TOKEN}\""), ""),
    )
    .expect("write");
    let gw = portcullis::Gateway::start_file(&file)
        .await
        .expect("gateway starts");
    let admin = gw.admin_addr();
    for token in [None, Some(TOKEN)] {
        let (p, _) = send(admin, reload_req(admin, token)).await;
        assert_eq!(p.status, 403, "reload with {token:?}");
    }
    gw.shutdown().await;
}

/// A port free now (nothing listens on it when this returns).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_changes_and_removes_listeners_while_the_others_serve_on() {
    let a = Upstream::start("a").await;
    let dir = temp_dir("reload-listeners");
    let file = dir.join("gw.toml");
    let base = config(a.addr, a.addr, "a", 64, "");
    std::fs::write(&file, &base).expect("write");
    let gw = portcullis::Gateway::start_file(&file)
        .await
        .expect("gateway starts");
    let (main, admin) = (gw.listener_addr("main").expect("main"), gw.admin_addr());
    let load = Load::start(main, &["/moving"]);
    assert!(
        eventually(Duration::from_secs(10), || load.ok() >= 100).await,
        "load is flowing"
    );
    let reload = || async {
        let (p, b) = send(admin, reload_req(admin, Some(TOKEN))).await;
        (p.status, json(&b))
    };

    // Added: bound and serving once the reload answers.
    let port = free_port();
    let extra = |more: &str| {
        format!("{base}\n[[listener]]\nname = \"extra\"\nlisten = \"127.0.0.1:{port}\"\n{more}")
    };
    std::fs::write(&file, extra("")).expect("write");
    let (status, r) = reload().await;
    assert_eq!(status, 200, "{r}");
    let at: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert_eq!(gw.listener_addr("extra"), Some(at));
    assert_eq!(served_by(at, "/x").await, "a");
    assert_eq!(gw.listener_addr("main"), Some(main), "main untouched");

    // Changed at the same address: served on the same socket, so it never stops answering.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std::fs::write(&file, extra("max_connections = 5\n")).expect("write");
    let (status, r) = reload().await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(gw.listener_addr("extra"), Some(at));
    assert_eq!(served_by(at, "/x").await, "a");

    // A listener that cannot be bound: the reload fails and changes nothing.
    let bad = format!(
        "{}\n[[listener]]\nname = \"bad\"\nlisten = \"{}\"\n",
        extra("max_connections = 5\n"),
        taken.local_addr().expect("addr")
    );
    std::fs::write(&file, bad).expect("write");
    let (status, r) = reload().await;
    assert_eq!(status, 500, "{r}");
    assert_eq!(r["result"], "error");
    assert!(format!("{}", r["problems"]).contains("listener.bad"), "{r}");
    assert_eq!(gw.listener_addr("bad"), None);
    assert_eq!(served_by(at, "/x").await, "a");

    // Removed: its port closes; the listener that stays serves on.
    std::fs::write(&file, &base).expect("write");
    let (status, r) = reload().await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(gw.listener_addr("extra"), None);
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(at).await.is_err()
        })
        .await,
        "the removed listener's port is closed"
    );
    let m = metrics(admin).await;
    assert_valid_exposition(&m);
    assert!(
        sample(
            &m,
            "portcullis_connections_accepted_total{listener=\"extra\"}"
        )
        .unwrap_or(0.0)
            >= 2.0,
        "the removed listener's counters stay"
    );
    let (ok, failed, failures) = load.finish().await;
    assert_eq!(
        failed, 0,
        "failed requests on the listener that stayed: {failures:?}"
    );
    assert!(ok > 100);
    gw.shutdown().await;
}
