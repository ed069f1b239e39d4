//! The access log end to end: a real gateway on loopback, real requests (proxied, no route,
//! answered and rejected by filters, changed by one), every JSON line parsed with serde_json
//! and checked field by field; reopening after a rename (SIGUSR1), sampling, the shutdown
//! flush and the config checks.

use bytes::Bytes;
use http::Request;
use portcullis_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every line has exactly these keys (a tunnel's line has four more).
const KEYS: [&str; 17] = [
    "time",
    "request_id",
    "client",
    "protocol",
    "method",
    "path",
    "status",
    "route",
    "cluster",
    "endpoint",
    "attempts",
    "bytes_in",
    "bytes_out",
    "total_us",
    "overhead_us",
    "plugins",
    "error",
];

/// The lines of the log at `path`, each parsed (a line that is not JSON fails the test).
fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "partial line: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Polls until the log at `path` has at least `n` lines.
async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    let ok = eventually(Duration::from_secs(10), || read_lines(path).len() >= n).await;
    let lines = read_lines(path);
    assert!(
        ok,
        "expected {n} lines in {}, got {lines:#?}",
        path.display()
    );
    lines
}

fn by_id<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    let found: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == id).collect();
    assert_eq!(found.len(), 1, "one line for {id}: {lines:#?}");
    found[0]
}

/// Days since 1970-01-01 of a civil date (H. Hinnant), to check `time` independently.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2025-01-31T12:00:00.123456Z` to microseconds since the epoch.
fn parse_time(t: &str) -> i64 {
    let b = t.as_bytes();
    assert_eq!(b.len(), 27, "time {t}");
    assert_eq!(
        (b[4], b[7], b[10], b[13], b[16], b[19], b[26]),
        (b'-', b'-', b'T', b':', b':', b'.', b'Z'),
        "time {t}"
    );
    let n = |r: std::ops::Range<usize>| -> i64 { t[r].parse().expect("digits") };
    let days = days_from_civil(n(0..4), n(5..7), n(8..10));
    ((days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) * 1_000_000) + n(20..26)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// Checks one line: exactly the keys of `KEYS`, `expected`'s values, and the fields whose
/// values vary (time, durations) for sanity against the test's own clock.
fn check(line: &Value, expected: Value, started_us: i64) {
    let obj = line.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "keys of {line}");
    for (k, v) in expected.as_object().expect("expected object") {
        assert_eq!(&line[k], v, "`{k}` of {line}");
    }
    let t = parse_time(line["time"].as_str().expect("time string"));
    // Request start, as the gateway saw it: after the test began, before now (slack for the
    // two clocks' rounding).
    assert!(
        t >= started_us - 1_000 && t <= now_us() + 1_000,
        "time {t} outside [{started_us}, now]: {line}"
    );
    let total = line["total_us"].as_u64().expect("total_us");
    let overhead = line["overhead_us"].as_u64().expect("overhead_us");
    assert!(total < 10_000_000, "total_us {total}: {line}");
    assert!(
        overhead <= total,
        "overhead {overhead} > total {total}: {line}"
    );
}

fn with_id(mut req: Request<BoxBody>, id: &str) -> Request<BoxBody> {
    req.headers_mut()
        .insert("x-request-id", id.parse().expect("header"));
    req
}

fn post(addr: std::net::SocketAddr, path: &str, body: Vec<u8>) -> Request<BoxBody> {
    Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("host", "localhost")
        .header("content-length", body.len())
        .body(portcullis_tests::body(Bytes::from(body)))
        .expect("request")
}

fn config(up: std::net::SocketAddr, plugins: &Path, log: &Path, access: &str) -> String {
    basic_config(
        &[("up", up)],
        &format!(
            "[plugins]\ndir = \"{}\"\n[access_log]\npath = \"{}\"\n{access}",
            plugins.display(),
            log.display()
        ),
    )
}

#[tokio::test]
async fn every_field_of_every_line_is_what_the_request_did() {
    let started = now_us();
    let up = Upstream::start("up").await;
    let dir = temp_dir("access-log");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    install_plugin(
        &plugins,
        "answer",
        "testbed",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/answer\"\n[config]\nmode = \"respond\"\n",
    );
    install_plugin(
        &plugins,
        "deny",
        "testbed",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/deny\"\n[config]\nmode = \"reject\"\n",
    );
    install_plugin(
        &plugins,
        "tag",
        "testbed",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/up/tagged\"\n[config]\nmode = \"ok\"\n",
    );
    let log = dir.join("access.log");
    let gw = gateway(&config(up.addr, &plugins, &log, ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let endpoint = up.addr.to_string();

    // A proxied POST: the path arrives un-normalized, with a query; the body streams up.
    let payload = vec![b'p'; 1000];
    let (p, b) = send(
        addr,
        with_id(post(addr, "/up//upload?secret=1", payload), "al-proxied"),
    )
    .await;
    assert_eq!(p.status, 200);
    assert_eq!(&b[..], b"1000");
    // No route.
    let (p, b404) = send(addr, with_id(get(addr, "/nowhere"), "al-404")).await;
    assert_eq!(p.status, 404);
    // Answered by a filter, before routing.
    let (p, banswer) = send(addr, with_id(get(addr, "/answer/x"), "al-answer")).await;
    assert_eq!(p.status, 200);
    assert_eq!(&banswer[..], b"answered by testbed\n");
    // Rejected by a filter.
    let (p, bdeny) = send(addr, with_id(get(addr, "/deny"), "al-deny")).await;
    assert_eq!(p.status, 403);
    // Changed by a filter (a header added), then proxied.
    let (p, btag) = send(addr, with_id(get(addr, "/up/tagged/./a"), "al-tagged")).await;
    assert_eq!(p.status, 200);
    assert_eq!(header(&p, "x-portcullis-attempts"), "1");

    let lines = wait_lines(&log, 5).await;
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let common = |id: &str| {
        json!({
            "request_id": id,
            "client": "127.0.0.1",
            "protocol": "http/1.1",
        })
    };
    let merge = |mut a: Value, b: Value| {
        for (k, v) in b.as_object().expect("object") {
            a[k] = v.clone();
        }
        a
    };
    check(
        by_id(&lines, "al-proxied"),
        merge(
            common("al-proxied"),
            json!({
                "method": "POST",
                "path": "/up/upload",
                "status": 200,
                "route": "up",
                "cluster": "up",
                "endpoint": endpoint,
                "attempts": 1,
                "bytes_in": 1000,
                "bytes_out": 4,
                "plugins": [],
                "error": null,
            }),
        ),
        started,
    );
    check(
        by_id(&lines, "al-404"),
        merge(
            common("al-404"),
            json!({
                "method": "GET",
                "path": "/nowhere",
                "status": 404,
                "route": null,
                "cluster": null,
                "endpoint": null,
                "attempts": 0,
                "bytes_in": 0,
                "bytes_out": b404.len(),
                "plugins": [],
                "error": "no-route",
            }),
        ),
        started,
    );
    check(
        by_id(&lines, "al-answer"),
        merge(
            common("al-answer"),
            json!({
                "method": "GET",
                "path": "/answer/x",
                "status": 200,
                "route": null,
                "cluster": null,
                "endpoint": null,
                "attempts": 0,
                "bytes_in": 0,
                "bytes_out": banswer.len(),
                "plugins": ["answer"],
                "error": null,
            }),
        ),
        started,
    );
    check(
        by_id(&lines, "al-deny"),
        merge(
            common("al-deny"),
            json!({
                "method": "GET",
                "path": "/deny",
                "status": 403,
                "route": null,
                "cluster": null,
                "endpoint": null,
                "attempts": 0,
                "bytes_in": 0,
                "bytes_out": bdeny.len(),
                "plugins": ["deny"],
                "error": "plugin-rejected",
            }),
        ),
        started,
    );
    check(
        by_id(&lines, "al-tagged"),
        merge(
            common("al-tagged"),
            json!({
                "method": "GET",
                "path": "/up/tagged/a",
                "status": 200,
                "route": "up",
                "cluster": "up",
                "endpoint": endpoint,
                "attempts": 1,
                "bytes_in": 0,
                "bytes_out": btag.len(),
                "plugins": ["tag"],
                "error": null,
            }),
        ),
        started,
    );
    // The upstream did see the filter's change.
    let echoed: Value = serde_json::from_slice(&btag).expect("echo");
    assert_eq!(echoed["headers"]["x-testbed"], "ok");

    let admin = gw.admin_addr();
    let m = metrics(admin).await;
    assert_valid_exposition(&m);
    assert_eq!(sample(&m, "portcullis_access_log_lines_total"), Some(5.0));
    assert_eq!(sample(&m, "portcullis_access_log_dropped_total"), Some(0.0));
    assert_eq!(
        sample(&m, "portcullis_access_log_write_errors_total"),
        Some(0.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn sigusr1_reopens_the_file_after_logrotate_renamed_it() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("access-log-rotate");
    let log = dir.join("access.log");
    let cfg = basic_config(
        &[("up", up.addr)],
        &format!("[access_log]\npath = \"{}\"\n", log.display()),
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let admin = gw.admin_addr();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&log)
            .expect("log created")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640 & !umask(), "mode {mode:o}");
    }

    let (p, _) = send(addr, with_id(get(addr, "/up/before"), "before")).await;
    assert_eq!(p.status, 200);
    wait_lines(&log, 1).await;

    // logrotate: rename, then signal. Lines until the reopen still reach the old file.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    let status = std::process::Command::new("kill")
        .args(["-USR1", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    assert!(
        wait_for_metric(
            admin,
            "portcullis_access_log_reopens_total",
            Duration::from_secs(10),
            |v| v >= 1.0
        )
        .await,
        "{}",
        metrics(admin).await
    );
    let (p, _) = send(addr, with_id(get(addr, "/up/after"), "after")).await;
    assert_eq!(p.status, 200);
    let new = wait_lines(&log, 1).await;
    assert_eq!(new.len(), 1);
    assert_eq!(new[0]["request_id"], "after");
    assert_eq!(new[0]["path"], "/up/after");
    let old = read_lines(&rotated);
    assert_eq!(old.len(), 1, "{old:#?}");
    assert_eq!(old[0]["request_id"], "before");

    // The same reopen through the handle.
    let again = dir.join("access.log.2");
    std::fs::rename(&log, &again).expect("rename");
    gw.access_log().expect("configured").reopen();
    assert!(
        wait_for_metric(
            admin,
            "portcullis_access_log_reopens_total",
            Duration::from_secs(10),
            |v| v >= 2.0
        )
        .await
    );
    let (p, _) = send(addr, with_id(get(addr, "/up/third"), "third")).await;
    assert_eq!(p.status, 200);
    let third = wait_lines(&log, 1).await;
    assert_eq!(third[0]["request_id"], "third");
    assert_eq!(read_lines(&again).len(), 1);
    gw.shutdown().await;
}

/// The process umask, read from `/proc` (without changing it).
fn umask() -> u32 {
    // /proc/self/status has `Umask:\t0022` on Linux.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[tokio::test]
async fn sampled_out_successes_are_counted_and_errors_always_logged() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("access-log-sample");
    let log = dir.join("access.log");
    let cfg = basic_config(
        &[("up", up.addr)],
        &format!(
            "[access_log]\npath = \"{}\"\nsample_successes = 0.0\n",
            log.display()
        ),
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    for i in 0..5 {
        let (p, _) = send(addr, get(addr, &format!("/up/ok/{i}"))).await;
        assert_eq!(p.status, 200);
    }
    let (p, _) = send(addr, with_id(get(addr, "/up/status/503"), "s503")).await;
    assert_eq!(p.status, 503);
    let (p, _) = send(addr, with_id(get(addr, "/up/status/404"), "s404")).await;
    assert_eq!(p.status, 404);
    let (p, _) = send(addr, with_id(get(addr, "/missing"), "noroute")).await;
    assert_eq!(p.status, 404);
    assert!(
        gw.access_log()
            .expect("configured")
            .flush(Duration::from_secs(5))
            .await
    );
    let lines = read_lines(&log);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["s503", "s404", "noroute"]);
    // An upstream's own error status is not a gateway failure: no `error`.
    assert_eq!(lines[0]["status"], 503);
    assert_eq!(lines[0]["error"], Value::Null);
    assert_eq!(lines[2]["error"], "no-route");
    let m = metrics(gw.admin_addr()).await;
    assert_eq!(
        sample(&m, "portcullis_access_log_sampled_out_total"),
        Some(5.0)
    );
    assert_eq!(sample(&m, "portcullis_access_log_lines_total"), Some(3.0));
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_writes_out_what_is_queued() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("access-log-shutdown");
    let log = dir.join("access.log");
    // A flush interval far longer than the test: only the shutdown flush can write the line.
    let cfg = basic_config(
        &[("up", up.addr)],
        &format!(
            "[access_log]\npath = \"{}\"\nflush_ms = 60000\n",
            log.display()
        ),
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let (p, _) = send(addr, with_id(get(addr, "/up/last"), "last")).await;
    assert_eq!(p.status, 200);
    gw.shutdown().await;
    let lines = read_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["request_id"], "last");
}

#[test]
fn access_log_config_problems_name_the_key() {
    let base = Path::new("/");
    let cfg = |extra: &str| {
        format!("[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n[access_log]\n{extra}\n")
    };
    let ok = portcullis::Config::parse(&cfg(""), base).expect("defaults are valid");
    let a = ok.access_log.expect("section present");
    assert!(a.is_stdout());
    assert_eq!(a.sample_successes, 1.0);
    assert_eq!(a.queue, 8192);
    assert_eq!(a.flush_ms, 100);
    assert!(portcullis::Config::parse(
        "[[listener]]\nname = \"m\"\nlisten = \"127.0.0.1:0\"\n",
        base
    )
    .expect("valid")
    .access_log
    .is_none());

    let problems = portcullis::Config::parse(
        &cfg("path = \"/no/such/dir/access.log\"\nsample_successes = 1.5\nqueue = 0\nflush_ms = 0"),
        base,
    )
    .expect_err("invalid");
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "access_log.path",
            "access_log.sample_successes",
            "access_log.queue",
            "access_log.flush_ms"
        ],
        "{problems:?}"
    );
    let problems =
        portcullis::Config::parse(&cfg("format = \"text\""), base).expect_err("unknown format");
    assert!(
        problems[0].reason.contains("unknown variant"),
        "{problems:?}"
    );
}
