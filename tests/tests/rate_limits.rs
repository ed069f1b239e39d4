//! `[[rate_limit]]` end to end: local limits per key and on filter metadata, and a global
//! limit shared by three gateways through a real `redis-server` that is killed and restarted
//! mid-test.

use http::Request;
use portcullis_tests::redis::Redis;
use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

fn with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Request<BoxBody> {
    let mut b = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body("")).expect("request")
}

async fn status(addr: SocketAddr, path: &str, key: &str) -> u16 {
    send(addr, with(addr, path, &[("x-client", key)]))
        .await
        .0
        .status
        .as_u16()
}

#[tokio::test]
async fn a_local_limit_allows_exactly_n_per_key_then_429_with_the_headers() {
    let up = Upstream::start("up").await;
    let cfg = basic_config(
        &[("up", up.addr)],
        "[[rate_limit]]\nname = \"per-client\"\nkey = \"header:x-client\"\nlimit = 3\nwindow_ms = 60000\nheaders = true\n",
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    for i in 0..3 {
        let (p, _) = send(addr, with(addr, "/up/x", &[("x-client", "a")])).await;
        assert_eq!(p.status, 200, "request {i} of client a");
        assert_eq!(
            header(&p, "ratelimit"),
            format!("\"per-client\";r={};t={}", 2 - i, 20 * (i + 1))
        );
    }
    let (p, b) = send(addr, with(addr, "/up/x", &[("x-client", "a")])).await;
    assert_eq!(p.status, 429);
    assert_eq!(header(&p, "portcullis-error"), "rate-limited");
    assert_eq!(header(&p, "retry-after"), "20");
    assert_eq!(header(&p, "ratelimit-policy"), "\"per-client\";q=3;w=60");
    assert_eq!(header(&p, "ratelimit"), "\"per-client\";r=0;t=60");
    assert!(String::from_utf8_lossy(&b).contains("per-client"));
    // Another key has its own budget.
    for _ in 0..3 {
        assert_eq!(status(addr, "/up/x", "b").await, 200);
    }
    assert_eq!(status(addr, "/up/x", "b").await, 429);
    assert_eq!(up.requests(), 6, "denied requests never reach the upstream");
    let m = metrics(gw.admin_addr()).await;
    assert_eq!(
        sample(&m, "portcullis_rate_limited_total{limit=\"per-client\"}"),
        Some(2.0)
    );
}

#[tokio::test]
async fn a_meta_key_counts_what_an_inbound_filter_set() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("rl-meta");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    // testbed in `ok` mode sets the metadata `testbed = ok` on requests under /up/tagged.
    install_plugin(
        &plugins,
        "tag",
        "testbed",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/up/tagged\"\n[config]\nmode = \"ok\"\n",
    );
    let cfg = basic_config(
        &[("up", up.addr)],
        &format!(
            "[plugins]\ndir = \"{}\"\n[[rate_limit]]\nname = \"by-meta\"\nkey = \"meta:testbed\"\nlimit = 2\nwindow_ms = 60000\n",
            plugins.display()
        ),
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    for _ in 0..2 {
        assert_eq!(status(addr, "/up/tagged", "x").await, 200);
    }
    assert_eq!(status(addr, "/up/tagged", "x").await, 429);
    // Without the metadata (the filter does not run there) the limit does not apply.
    for _ in 0..4 {
        assert_eq!(status(addr, "/up/plain", "x").await, 200);
    }
}

fn global_config(up: SocketAddr, redis: &str) -> String {
    basic_config(
        &[("up", up)],
        &format!(
            "[redis]\nurl = \"{redis}\"\ncommand_timeout_ms = 50\n\
             [[rate_limit]]\nname = \"g-allow\"\nmatch = {{ path_prefix = \"/up/allow\" }}\nkey = \"header:x-client\"\nlimit = 5\nwindow_ms = 60000\nscope = \"global\"\non_backend_error = \"allow\"\n\
             [[rate_limit]]\nname = \"g-deny\"\nmatch = {{ path_prefix = \"/up/deny\" }}\nkey = \"header:x-client\"\nlimit = 5\nwindow_ms = 60000\nscope = \"global\"\non_backend_error = \"deny\"\n\
             [[rate_limit]]\nname = \"local\"\nmatch = {{ path_prefix = \"/up/local\" }}\nkey = \"header:x-client\"\nlimit = 2\nwindow_ms = 60000\n"
        ),
    )
}

/// Sends 3 × limit requests for `key` round-robin over the gateways; returns how many got 200.
async fn allowed_across(addrs: &[SocketAddr], path: &str, key: &str, n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        let a = addrs[i % addrs.len()];
        match status(a, path, key).await {
            200 => ok += 1,
            429 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    ok
}

#[tokio::test]
async fn a_global_limit_holds_across_three_gateways_and_survives_redis_dying() {
    let mut redis = Redis::start();
    let up = Upstream::start("up").await;
    let cfg = global_config(up.addr, &redis.url());
    let g1 = gateway(&cfg, Path::new(".")).await;
    let g2 = gateway(&cfg, Path::new(".")).await;
    let g3 = gateway(&cfg, Path::new(".")).await;
    let addrs: Vec<SocketAddr> = [&g1, &g2, &g3]
        .iter()
        .map(|g| g.listener_addr("main").expect("listener"))
        .collect();

    // Shared: 5 in all, not 5 per instance (the script is atomic: the stated error is 0).
    assert_eq!(allowed_across(&addrs, "/up/allow/x", "c1", 15).await, 5);
    assert_eq!(allowed_across(&addrs, "/up/deny/x", "c1", 15).await, 5);

    // Redis dies: nobody waits past the bound, and each limit's policy answers.
    redis.kill();
    for (i, a) in addrs.iter().enumerate() {
        for (path, want) in [("/up/allow/y", 200), ("/up/deny/y", 429)] {
            let t = Instant::now();
            let (p, _) = send(*a, with(*a, path, &[("x-client", "c2")])).await;
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{path} on instance {i} took {:?} with Redis down",
                t.elapsed()
            );
            assert_eq!(p.status.as_u16(), want, "{path} on instance {i}");
            if want == 429 {
                assert_eq!(header(&p, "portcullis-error"), "rate-limited");
            }
        }
        // The local limiter keeps working meanwhile.
        let key = format!("local-{i}");
        assert_eq!(status(*a, "/up/local", &key).await, 200);
        assert_eq!(status(*a, "/up/local", &key).await, 200);
        assert_eq!(status(*a, "/up/local", &key).await, 429);
    }
    let m = metrics(g1.admin_addr()).await;
    for l in ["g-allow", "g-deny"] {
        let n = sample(
            &m,
            &format!("portcullis_rate_limit_backend_errors_total{{limit=\"{l}\"}}"),
        );
        assert!(n.is_some_and(|n| n >= 1.0), "{l}: {n:?}");
    }

    // Redis comes back (empty): once each instance has reconnected, limits are global again.
    redis.restart();
    for a in &addrs {
        let mut probe = 0;
        let back = eventually_async(Duration::from_secs(10), || {
            probe += 1;
            let key = format!("probe-{probe}");
            let a = *a;
            async move { status(a, "/up/deny/p", &key).await == 200 }
        })
        .await;
        assert!(back, "instance {a} did not reconnect to Redis within 10 s");
    }
    assert_eq!(allowed_across(&addrs, "/up/allow/z", "c3", 15).await, 5);
    assert_eq!(allowed_across(&addrs, "/up/deny/z", "c3", 15).await, 5);
}

/// One request to the `kvbox` filter mounted at `/box`: its answer's text, and how long it
/// took.
async fn kv(addr: SocketAddr, query: &str) -> (String, Duration) {
    let t = Instant::now();
    let (p, b) = send(addr, with(addr, &format!("/box?{query}"), &[])).await;
    let text = String::from_utf8_lossy(&b).trim_end().to_string();
    assert_eq!(p.status, 200, "{query}: {text}");
    (text, t.elapsed())
}

/// `[plugins] kv = "redis"`: two gateways share one plugin's values, counters and key
/// count through a real Redis; a plugin's global `rate-limit.check` is shared too; with Redis
/// killed, kv calls answer `unavailable` within the command timeout and the check falls back
/// to the limit's policy.
#[tokio::test]
async fn kv_in_redis_is_shared_by_two_gateways_and_unavailable_when_redis_dies() {
    let mut redis = Redis::start();
    let dir = temp_dir("kv-redis");
    install_plugin(
        &dir,
        "box",
        "kvbox",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/box\"\n[kv]\nmax_keys = 3\n",
    );
    let cfg = basic_config(
        &[],
        &format!(
            "[plugins]\ndir = \"{}\"\nkv = \"redis\"\n[redis]\nurl = \"{}\"\ncommand_timeout_ms = 50\n\
             [[rate_limit]]\nname = \"tenant\"\nmatch = {{ path_prefix = \"/none\" }}\nlimit = 4\nwindow_ms = 60000\nscope = \"global\"\non_backend_error = \"deny\"\n",
            dir.display(),
            redis.url()
        ),
    );
    let (g1, g2) = (
        gateway(&cfg, Path::new(".")).await,
        gateway(&cfg, Path::new(".")).await,
    );
    let a = g1.listener_addr("main").expect("listener");
    let b = g2.listener_addr("main").expect("listener");

    assert_eq!(kv(a, "op=set&k=flag&v=on").await.0, "ok");
    assert_eq!(
        kv(b, "op=get&k=flag").await.0,
        "some:on",
        "seen by the other gateway"
    );
    for (i, addr) in [a, b, a, b].iter().enumerate() {
        assert_eq!(kv(*addr, "op=incr&k=n&d=1").await.0, (i + 1).to_string());
    }
    assert_eq!(kv(b, "op=set&k=third&v=1").await.0, "ok");
    assert_eq!(
        kv(a, "op=set&k=fourth&v=1").await.0,
        "err:limit-exceeded",
        "3 keys in all"
    );
    assert_eq!(kv(a, "op=del&k=third").await.0, "true");
    assert_eq!(kv(b, "op=set&k=fourth&v=1&ttl=50").await.0, "ok");
    let expired = eventually_async(Duration::from_secs(3), || async move {
        kv(a, "op=get&k=fourth").await.0 == "none"
    })
    .await;
    assert!(expired, "a 50 ms TTL expires in Redis");

    // A global plugin check: 4 across both gateways.
    let mut n = 0;
    for addr in [a, b, a, b, a, b] {
        if kv(addr, "op=rl&name=tenant&k=acme")
            .await
            .0
            .starts_with("allowed=true")
        {
            n += 1;
        }
    }
    assert_eq!(n, 4, "the limit holds across gateways");

    redis.kill();
    for addr in [a, b] {
        let (text, took) = kv(addr, "op=get&k=flag").await;
        assert!(text.starts_with("err:unavailable"), "{text}");
        assert!(
            took < Duration::from_millis(500),
            "took {took:?} with Redis down"
        );
        let (text, _) = kv(addr, "op=set&k=flag&v=off").await;
        assert!(text.starts_with("err:unavailable"), "{text}");
        let (text, took) = kv(addr, "op=rl&name=tenant&k=other").await;
        assert!(
            text.starts_with("allowed=false") && text.ends_with("fallback=true"),
            "{text}"
        );
        assert!(
            took < Duration::from_millis(500),
            "took {took:?} with Redis down"
        );
    }
}

/// A config with the global limits against `url`, trusting `ca` when given.
fn global_config_ca(up: SocketAddr, url: &str, ca: Option<&Path>) -> String {
    let mut cfg = global_config(up, url);
    if let Some(ca) = ca {
        cfg = cfg.replace(
            "command_timeout_ms = 50\n",
            &format!("command_timeout_ms = 50\nca = \"{}\"\n", ca.display()),
        );
    }
    cfg
}

async fn backend_errors(gw: &portcullis::Gateway, limit: &str) -> f64 {
    let m = metrics(gw.admin_addr()).await;
    sample(
        &m,
        &format!("portcullis_rate_limit_backend_errors_total{{limit=\"{limit}\"}}"),
    )
    .unwrap_or(0.0)
}

/// `[redis]` with AUTH (a password in the URL) and with TLS (`rediss://` verified against
/// `[redis] ca`, a private CA): the global limit is counted in Redis (5 of 8 allowed, no
/// backend error). A wrong password, or a server the gateway does not trust, is a backend
/// error, and the limit's policy answers.
#[tokio::test]
async fn global_limits_reach_redis_through_auth_and_tls_with_a_private_ca() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("redis-tls");
    write_cert(&dir, "redis", &["localhost", "127.0.0.1"]);
    let (crt, key) = (dir.join("redis.crt"), dir.join("redis.key"));
    let plain = Redis::start_with(&["--requirepass", "s3cret"], None);
    let tls = Redis::start_with(&["--requirepass", "s3cret"], Some((&crt, &key)));
    let good = [
        (format!("redis://:s3cret@{}", plain.addr), None),
        (
            format!("rediss://:s3cret@{}", tls.addr),
            Some(crt.as_path()),
        ),
    ];
    for (url, ca) in &good {
        let gw = gateway(&global_config_ca(up.addr, url, *ca), Path::new(".")).await;
        let a = gw.listener_addr("main").expect("listener");
        assert_eq!(
            allowed_across(&[a], "/up/deny/x", "auth", 8).await,
            5,
            "{url}"
        );
        assert_eq!(
            backend_errors(&gw, "g-deny").await,
            0.0,
            "{url}: counted in Redis"
        );
        gw.shutdown().await;
    }
    let bad = [
        (
            format!("redis://:wrong@{}", plain.addr),
            None,
            "wrong password",
        ),
        (format!("redis://{}", plain.addr), None, "no password"),
        (
            format!("rediss://:s3cret@{}", tls.addr),
            None,
            "untrusted certificate",
        ),
    ];
    for (url, ca, why) in &bad {
        let gw = gateway(&global_config_ca(up.addr, url, *ca), Path::new(".")).await;
        let a = gw.listener_addr("main").expect("listener");
        let t = Instant::now();
        assert_eq!(
            status(a, "/up/deny/y", "k").await,
            429,
            "{why}: deny policy"
        );
        assert_eq!(
            status(a, "/up/allow/y", "k").await,
            200,
            "{why}: allow policy"
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{why}: bounded");
        assert!(backend_errors(&gw, "g-deny").await >= 1.0, "{why}: counted");
        gw.shutdown().await;
    }
    // A CA is for TLS only; an unreadable one is named.
    for (url, ca, want) in [
        (
            format!("redis://{}", plain.addr),
            crt.clone(),
            "only used with `rediss://`",
        ),
        (
            format!("rediss://{}", tls.addr),
            dir.join("missing.pem"),
            "cannot read",
        ),
    ] {
        let toml = global_config_ca(up.addr, &url, Some(&ca));
        let problems = portcullis::Config::parse(&toml, Path::new("."))
            .err()
            .map(|p| format!("{p:?}"))
            .unwrap_or_default();
        assert!(
            problems.contains("redis.ca") && problems.contains(want),
            "{problems}"
        );
    }
}

/// Checks that arrive while Redis is busy queue in their gateway and go to Redis together,
/// one script call for many of them (`global.rs`, batching). Batching must not change what
/// is counted: one hot key shared by three gateways still admits exactly its limit, and
/// keys with room are never refused.
#[tokio::test]
async fn concurrent_global_checks_share_script_calls_and_still_count_exactly() {
    let redis = Redis::start_with(&["--enable-debug-command", "yes"], None);
    let up = Upstream::start("up").await;
    let cfg = basic_config(
        &[("up", up.addr)],
        &format!(
            "[redis]\nurl = \"{}\"\ncommand_timeout_ms = 1000\n\
             [[rate_limit]]\nname = \"g\"\nmatch = {{ path_prefix = \"/up\" }}\nkey = \"header:x-client\"\nlimit = 5\nwindow_ms = 60000\nscope = \"global\"\non_backend_error = \"deny\"\n",
            redis.url()
        ),
    );
    let gws = [
        gateway(&cfg, Path::new(".")).await,
        gateway(&cfg, Path::new(".")).await,
        gateway(&cfg, Path::new(".")).await,
    ];
    let addrs: Vec<SocketAddr> = gws
        .iter()
        .map(|g| g.listener_addr("main").expect("listener"))
        .collect();
    // Each gateway connects and loads the script before the measured part.
    for (i, a) in addrs.iter().enumerate() {
        assert_eq!(status(*a, "/up/warm", &format!("warm-{i}")).await, 200);
    }
    let before = redis.script_calls();

    // Redis is busy for 300 ms: the 90 checks made meanwhile wait in their gateways.
    let addr = redis.addr;
    let sleeper = std::thread::spawn(move || {
        portcullis_tests::redis::command_at(addr, &[b"DEBUG", b"SLEEP", b"0.3"])
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let keys: Vec<String> = (0..30)
        .map(|_| "hot".to_string())
        .chain((0..60).map(|i| format!("k{}", i % 20)))
        .collect();
    let answers = futures_util::future::join_all(
        keys.iter()
            .enumerate()
            .map(|(i, k)| status(addrs[i % 3], "/up/x", k)),
    )
    .await;
    assert_eq!(sleeper.join().expect("DEBUG SLEEP"), "+OK");

    let allowed = |key: &str| {
        keys.iter()
            .zip(&answers)
            .filter(|(k, s)| k.as_str() == key && **s == 200)
            .count()
    };
    assert!(
        answers.iter().all(|s| *s == 200 || *s == 429),
        "{answers:?}"
    );
    assert_eq!(allowed("hot"), 5, "the hot key admits exactly its limit");
    for i in 0..20 {
        assert_eq!(allowed(&format!("k{i}")), 3, "k{i} has room for all 3");
    }
    // The denial's headers come from the script's answer: limit 5 per 60 s is one request
    // per 12 s, so the hot key's next slot is ~12 s away and its burst is full in ~60 s.
    let (p, _) = send(addrs[0], with(addrs[0], "/up/x", &[("x-client", "hot")])).await;
    assert_eq!(p.status.as_u16(), 429);
    let retry: u64 = header(&p, "retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!((11..=12).contains(&retry), "Retry-After {retry}");
    let rl = header(&p, "ratelimit");
    assert!(
        rl == "\"g\";r=0;t=60" || rl == "\"g\";r=0;t=59",
        "RateLimit {rl:?}"
    );

    let calls = redis.script_calls() - before;
    assert!(
        calls <= 30,
        "90 checks queued behind a busy Redis took {calls} script calls: not batched"
    );
}
