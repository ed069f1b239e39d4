#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test
//! The `portcullis` binary: `check` reports every config problem; `run` drains on SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn check_lists_every_problem_with_file_key_and_reason() {
    let dir = temp("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[admin]
listen = "not-an-address"
[[listener]]
name = "main"
listen = "127.0.0.1:8080"
[[cluster]]
name = "users"
endpoints = ["nohost"]
[[route]]
name = "r1"
cluster = "missing"
[[route]]
name = "r2"
match = { path_prefix = "api" }
cluster = "users"
[timeouts]
connect_ms = 0
[plugins]
dir = "plugins"
epoch_tick_ms = 50
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    for (key, reason) in [
        ("admin.listen", "not an ip:port"),
        ("cluster[0].endpoints[0]", "not host:port"),
        ("route[0].cluster", "no [[cluster]] is named `missing`"),
        ("route[1].match.path_prefix", "must start with `/`"),
        ("timeouts.connect_ms", "greater than 0"),
        ("plugins.epoch_tick_ms", "between 1 and 10"),
    ] {
        let line = format!("{file}: {key}: ");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&line) && l.contains(reason)),
            "missing `{line}…{reason}` in:\n{err}"
        );
    }

    // A typo in a key is an error too, naming the line and the key.
    let typo = dir.join("typo.toml");
    std::fs::write(
        &typo,
        "[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n[timeouts]\nconect_ms = 5\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conect_ms") && err.contains("line 5"), "{err}");
    assert!(err.contains(&typo.display().to_string()), "{err}");

    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Plugin manifests are checked too: a typo and a limit over the ceiling, naming the file.
    let pdir = dir.join("plugins");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(pdir.join("auth.toml"), "kind = \"inbound\"\nordr = 1\n").unwrap();
    std::fs::write(pdir.join("auth.wasm"), b"\0asm").unwrap();
    std::fs::write(
        pdir.join("slow.toml"),
        "kind = \"inbound\"\n[limits]\ncpu_ms = 100000\n",
    )
    .unwrap();
    let with_plugins = dir.join("plugins.toml");
    std::fs::write(
        &with_plugins,
        "[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n[plugins]\ndir = \"plugins\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&with_plugins)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.toml") && err.contains("ordr"), "{err}");
    assert!(
        err.contains("slow.toml") && err.contains("limits.cpu_ms"),
        "{err}"
    );
    assert!(err.contains("slow.wasm: missing"), "{err}");

    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("run") && help.contains("check"), "{help}");
}

/// A one-route upstream that answers `GET /slow` after `delay`, on plain threads; counts the
/// requests that arrived.
fn slow_upstream(delay: Duration) -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let arrived = Arc::new(AtomicU64::new(0));
    let counter = arrived.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        seen.clear();
                        counter.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(delay);
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\nslow\n",
                        );
                    }
                }
            });
        }
    });
    (addr, arrived)
}

/// Starts `portcullis run` with a one-route config to `up` and the given `drain_ms`; returns
/// the child, a connection with `GET /slow` sent on it, and the listener's address.
fn run_with_slow_request(
    dir: &Temp,
    up: SocketAddr,
    arrived: &AtomicU64,
    drain_ms: u64,
) -> (std::process::Child, TcpStream, SocketAddr) {
    let (port, admin) = (free_port(), free_port());
    let cfg = dir.join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[admin]
listen = "127.0.0.1:{admin}"
[[listener]]
name = "main"
listen = "127.0.0.1:{port}"
[[cluster]]
name = "slow"
endpoints = ["{up}"]
[[route]]
name = "slow"
cluster = "slow"
[timeouts]
drain_ms = {drain_ms}
upstream_headers_ms = 60000
"#
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(_) if t0.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("gateway did not start: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The request is in flight once the upstream has it.
    assert!(
        wait_until(Duration::from_secs(10), || arrived.load(Ordering::SeqCst)
            == 1),
        "the request reached the upstream"
    );
    (child, s, addr)
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let (up, arrived) = slow_upstream(Duration::from_millis(1500));
    let dir = temp("drain");
    let (mut child, mut s, addr) = run_with_slow_request(&dir, up, &arrived, 5000);
    sigterm(&child);
    // New connections are refused once draining started…
    assert!(
        wait_until(Duration::from_secs(5), || TcpStream::connect(addr).is_err()),
        "still accepting while draining"
    );
    // …but the in-flight request completes.
    let mut resp = Vec::new();
    let mut buf = [0u8; 1024];
    while !resp.ends_with(b"slow\n") {
        let n = s.read(&mut buf).expect("in-flight response");
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("slow\n"), "{text}");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn drain_ms_cuts_off_requests_that_outlive_it() {
    // The upstream answers after 8 s; drain_ms is 500 ms.
    let (up, arrived) = slow_upstream(Duration::from_secs(8));
    let dir = temp("drain-cut");
    let (mut child, mut s, _) = run_with_slow_request(&dir, up, &arrived, 500);
    let t0 = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(4));
    let took = t0.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "a drain that timed out still exits 0"
    );
    assert!(
        took >= Duration::from_millis(500),
        "in-flight requests get drain_ms: exited after {took:?}"
    );
    // The request that outlived the drain got no (complete) answer: its connection is closed.
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    assert!(
        !text.contains("slow\n"),
        "the upstream's answer arrived: {text}"
    );
}

/// An upstream that answers every request `200` with `body`, keep-alive.
#[test]
fn sighup_reloads_the_config_and_an_invalid_file_changes_nothing() {
    let (a, b) = (named_upstream("from-a"), named_upstream("from-b"));
    let (port, admin) = (free_port(), free_port());
    let dir = temp("sighup");
    let cfg = dir.join("gw.toml");
    let write = |to: &str, extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:{port}\"\n[[cluster]]\nname = \"a\"\nendpoints = [\"{a}\"]\n[[cluster]]\nname = \"b\"\nendpoints = [\"{b}\"]\n[[route]]\nname = \"all\"\ncluster = \"{to}\"\n{extra}"
            ),
        )
        .unwrap()
    };
    write("a", "");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || get_body(addr).as_deref()
            == Some("from-a")),
        "gateway serves the first config"
    );
    write("b", "");
    signal(&child, "-HUP");
    assert!(
        wait_until(Duration::from_secs(10), || get_body(addr).as_deref()
            == Some("from-b")),
        "SIGHUP applied the new route"
    );
    // An invalid file: the process keeps running on the old config.
    write("a", "[timeouts]\nconnect_ms = 0\n");
    signal(&child, "-HUP");
    let metrics = |admin: u16| {
        let mut s = TcpStream::connect(("127.0.0.1", admin)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    assert!(
        wait_until(Duration::from_secs(10), || metrics(admin).is_some_and(
            |m| m.contains("portcullis_config_reloads_total{result=\"invalid\"} 1")
        )),
        "the invalid reload is counted"
    );
    assert!(child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(get_body(addr).as_deref(), Some("from-b"));
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(40));
    assert_eq!(status.code(), Some(0));
}
