#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test
//! Zero-downtime binary upgrade with the real binary: `portcullis run --upgrade` takes the
//! listening sockets of the running gateway while clients keep connecting; not one request
//! fails and not one connection is refused, and the old process drains and exits 0.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn write_config(cfg: &Path, port: u16, admin: u16, up: SocketAddr, extra: &str) {
    std::fs::write(
        cfg,
        format!(
            r#"
[admin]
listen = "127.0.0.1:{admin}"
upgrade_socket = "upgrade.sock"
[[listener]]
name = "main"
listen = "127.0.0.1:{port}"
[[cluster]]
name = "up"
endpoints = ["{up}"]
[[route]]
name = "all"
cluster = "up"
[timeouts]
drain_ms = 3000
{extra}
"#
        ),
    )
    .unwrap();
}

fn run(cfg: &Path, upgrade: bool) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"]).arg(cfg);
    if upgrade {
        cmd.arg("--upgrade");
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A gateway started from a fresh config routing to `up`, serving already.
struct Running {
    port: u16,
    admin: u16,
    dir: Temp,
    cfg: std::path::PathBuf,
    child: Child,
    addr: SocketAddr,
}

fn first_gateway(tag: &str, up: SocketAddr) -> Running {
    let (port, admin) = (free_port(), free_port());
    let dir = temp(tag);
    let cfg = dir.join("gw.toml");
    write_config(&cfg, port, admin, up, "");
    let child = run(&cfg, false);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || get_body(addr).as_deref()
            == Some("from-a")),
        "the first gateway serves"
    );
    Running {
        port,
        admin,
        dir,
        cfg,
        child,
        addr,
    }
}

/// What the clients saw: bodies by upstream, and every failure with its reason.
#[derive(Default)]
struct Seen {
    bodies: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
    ok: AtomicU64,
}

/// One request on a new connection; a refused connection is a failure like any other.
fn fresh_request(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    if !out.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {}", out.lines().next().unwrap_or("")));
    }
    Ok(out.rsplit("\r\n\r\n").next().unwrap_or("").to_string())
}

/// Clients that each open a new connection per request, as fast as they get answers.
fn load(
    addr: SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match fresh_request(addr) {
                        Ok(body) => {
                            seen.ok.fetch_add(1, Ordering::Relaxed);
                            let mut b = seen.bodies.lock().unwrap();
                            if b.last() != Some(&body) {
                                b.push(body);
                            }
                        }
                        Err(e) => seen.failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect()
}

#[test]
fn upgrade_under_load_refuses_nothing_and_the_old_process_exits_zero() {
    let (a, b) = (named_upstream("from-a"), named_upstream("from-b"));
    let Running {
        port,
        admin,
        dir,
        cfg,
        child: mut old,
        addr,
    } = first_gateway("upgrade", a);
    assert!(
        dir.join("upgrade.sock").exists(),
        "the upgrade socket is listening"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let clients = load(addr, 4, stop.clone(), seen.clone());
    std::thread::sleep(Duration::from_millis(300));

    // The new binary serves a new config: its answers tell the two processes apart.
    write_config(&cfg, port, admin, b, "");
    let mut new = run(&cfg, true);
    let status = wait_exit(&mut old, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "the old process drained and exited 0"
    );
    assert!(
        new.try_wait().unwrap().is_none(),
        "the new process keeps running"
    );
    std::thread::sleep(Duration::from_millis(300));
    let before_second = seen.ok.load(Ordering::Relaxed);

    // Again, from the new process: it listens on the upgrade socket now.
    write_config(&cfg, port, admin, a, "");
    let mut third = run(&cfg, true);
    let status = wait_exit(&mut new, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "the second process exited 0 too");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    let failures = seen.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests failed during the upgrades: {failures:?}"
    );
    let ok = seen.ok.load(Ordering::Relaxed);
    assert!(
        before_second > 50 && ok > before_second,
        "load ran throughout: {before_second}, {ok}"
    );
    let bodies = seen.bodies.lock().unwrap().clone();
    // Each client's answers move a → b → a; interleaved, the last body is from the third.
    assert!(bodies.contains(&"from-b".to_string()), "{bodies:?}");
    assert_eq!(
        bodies.last().map(String::as_str),
        Some("from-a"),
        "{bodies:?}"
    );
    assert_eq!(get_body(addr).as_deref(), Some("from-a"));
    // The admin port moved with the sockets.
    let mut s = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    sigterm(&third);
    assert_eq!(
        wait_exit(&mut third, Duration::from_secs(30)).code(),
        Some(0)
    );
}

#[test]
fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let a = named_upstream("from-a");
    let Running {
        port,
        admin,
        dir: _dir,
        cfg,
        child: mut old,
        addr,
    } = first_gateway("upgrade-fail", a);
    // A second listener on a port something else holds: the new process takes the sockets,
    // fails to bind, and exits 1 without saying `ready`.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    write_config(
        &cfg,
        port,
        admin,
        a,
        &format!("[[listener]]\nname = \"extra\"\nlisten = \"127.0.0.1:{taken_port}\"\n"),
    );
    let mut failed = run(&cfg, true);
    let status = wait_exit(&mut failed, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(1),
        "the new process reports its failure"
    );
    assert!(
        old.try_wait().unwrap().is_none(),
        "the old process keeps running"
    );
    assert_eq!(get_body(addr).as_deref(), Some("from-a"));

    // It can still be upgraded once the config is fixed.
    write_config(&cfg, port, admin, a, "");
    let mut next = run(&cfg, true);
    assert_eq!(wait_exit(&mut old, Duration::from_secs(30)).code(), Some(0));
    assert_eq!(get_body(addr).as_deref(), Some("from-a"));
    sigterm(&next);
    assert_eq!(
        wait_exit(&mut next, Duration::from_secs(30)).code(),
        Some(0)
    );
}

#[test]
fn upgrade_without_a_running_gateway_says_so() {
    let a = named_upstream("from-a");
    let (port, admin) = (free_port(), free_port());
    let dir = temp("upgrade-none");
    let cfg = dir.join("gw.toml");
    write_config(&cfg, port, admin, a, "");
    let out = Command::new(BIN)
        .args(["run", "--upgrade", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.upgrade_socket") && err.contains("no running gateway"),
        "{err}"
    );
}
