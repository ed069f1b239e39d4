//! The chaos report (`bash bench/chaos.sh`): every upstream fault and client abuse case run
//! once against a gateway, each row with what was expected, what was observed, the requests
//! lost and the gateway's resident memory before, at its peak during, and after the case.
//!
//! The gateway is either a separate process (`Target::Process`: the release binary, so the
//! RSS is the gateway's own) or in this process (`Target::InProcess`: the CI subset in
//! `tests/tests/chaos.rs`, where the RSS is this whole process, fault upstreams and clients
//! included). Everything binds 127.0.0.1; every case and every wait in it is bounded.
//!
//! A case is a function that starts its gateway(s) with [`Ctx::gateway`], marks the baseline
//! with [`Gw::baseline`] once its setup is done, runs the fault and returns an [`Outcome`]
//! (built by [`Gw::outcome`], which also reads the memory after and stops the gateway).

mod client;
mod upstream;

use crate::TempDir;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What serves the cases.
#[derive(Clone, Debug)]
pub enum Target {
    /// The `portcullis` binary at this path, one process per gateway.
    Process(PathBuf),
    /// `portcullis::Gateway` in this process.
    InProcess,
}

/// A case's verdict.
pub struct Outcome {
    pub observed: String,
    /// Client requests that should have been answered and were not (or were answered wrong).
    pub lost: u64,
    pub pass: bool,
    pub mem: Mem,
}

/// Resident memory of the gateway (bytes): at the baseline, the peak while the case ran, and
/// after it (its connections closed).
#[derive(Clone, Copy, Default)]
pub struct Mem {
    pub before: u64,
    pub peak: u64,
    pub after: u64,
}

type CaseFn = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One chaos case.
pub struct Case {
    pub name: &'static str,
    pub expected: &'static str,
    /// Part of the bounded subset CI runs (`tests/tests/chaos.rs`).
    pub ci: bool,
    run: CaseFn,
}

/// One row of the report.
pub struct Row {
    pub name: &'static str,
    pub expected: &'static str,
    pub outcome: Outcome,
    pub took: Duration,
}

/// Every case, in report order.
pub fn cases() -> Vec<Case> {
    let mut all = upstream::cases();
    all.extend(client::cases());
    all
}

macro_rules! case {
    ($name:expr, $expected:expr, ci = $ci:expr, $f:path) => {
        $crate::chaos::Case::new($name, $expected, $ci, |c| Box::pin($f(c)))
    };
}
pub(crate) use case;

impl Case {
    pub(crate) fn new(name: &'static str, expected: &'static str, ci: bool, run: CaseFn) -> Case {
        Case {
            name,
            expected,
            ci,
            run,
        }
    }
}

/// The cases' shared context: where gateways come from and a scratch directory.
pub struct Ctx {
    target: Target,
    dir: TempDir,
}

/// Runs `cases` one after another; a case that runs past `limit` is a failed row.
pub async fn run(target: Target, cases: &[Case], limit: Duration) -> Vec<Row> {
    let mut rows = Vec::new();
    for case in cases {
        let ctx = Ctx {
            target: target.clone(),
            dir: crate::temp_dir("chaos"),
        };
        eprintln!("[chaos] {}", case.name);
        let t = Instant::now();
        let outcome = match tokio::time::timeout(limit, (case.run)(&ctx)).await {
            Ok(o) => o,
            Err(_) => Outcome {
                observed: format!("still running after {limit:?}"),
                lost: 0,
                pass: false,
                mem: Mem::default(),
            },
        };
        rows.push(Row {
            name: case.name,
            expected: case.expected,
            outcome,
            took: t.elapsed(),
        });
    }
    rows
}

/// The report as a markdown table.
pub fn table(rows: &[Row]) -> String {
    let mib = |b: u64| format!("{:.1}", b as f64 / (1024.0 * 1024.0));
    let mut s = String::from(
        "| case | expected | observed | lost | RSS before / peak / after (MiB) | time | result |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let o = &r.outcome;
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} / {} / {} | {:.1} s | {} |\n",
            r.name,
            r.expected,
            o.observed.replace('|', "\\|"),
            o.lost,
            mib(o.mem.before),
            mib(o.mem.peak),
            mib(o.mem.after),
            r.took.as_secs_f64(),
            if o.pass { "pass" } else { "**FAIL**" }
        ));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Gateways
// ---------------------------------------------------------------------------------------------

enum Serving {
    Process(std::process::Child),
    InProcess(portcullis::Gateway),
}

/// A gateway under test: its listener `main`, its admin address and a memory sampler.
pub struct Gw {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    serving: Option<Serving>,
    pid: u32,
    peak: Arc<AtomicU64>,
    before: u64,
    stop: Arc<AtomicBool>,
}

/// Resident set size of process `pid` in bytes (0 if it cannot be read).
pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A free port on 127.0.0.1 (bound and released: the gateway binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Ctx {
    /// Starts a gateway from `body` (clusters, routes, limits, timeouts: every part starting
    /// with a table header), with a listener `main` and the admin API prepended.
    pub async fn gateway(&self, body: &str) -> Gw {
        let (listen, admin) = match self.target {
            Target::Process(_) => (
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
            ),
            Target::InProcess => ("127.0.0.1:0".into(), "127.0.0.1:0".into()),
        };
        let toml = format!(
            "[admin]\nlisten = \"{admin}\"\n[[listener]]\nname = \"main\"\nlisten = \"{listen}\"\n{body}"
        );
        let (serving, addr, admin, pid) =
            match &self.target {
                Target::InProcess => {
                    let gw = crate::gateway(&toml, &self.dir).await;
                    let (a, m) = (gw.listener_addr("main").expect("main"), gw.admin_addr());
                    (Serving::InProcess(gw), a, m, std::process::id())
                }
                Target::Process(bin) => {
                    let cfg = self.dir.join("gateway.toml");
                    std::fs::write(&cfg, &toml).expect("write config");
                    let log = std::fs::File::create(self.dir.join("gateway.log")).expect("log");
                    let child = std::process::Command::new(bin)
                        .args(["run", "--config"])
                        .arg(&cfg)
                        .env("RUST_LOG", "warn")
                        .stdout(std::process::Stdio::null())
                        .stderr(log)
                        .spawn()
                        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
                    let (a, m): (SocketAddr, SocketAddr) = (
                        listen.parse().expect("listen"),
                        admin.parse().expect("admin"),
                    );
                    let pid = child.id();
                    let ready = crate::eventually_async(Duration::from_secs(20), || async move {
                        healthz(m).await
                    })
                    .await;
                    assert!(
                        ready,
                        "the gateway did not come up: {}",
                        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
                    );
                    (Serving::Process(child), a, m, pid)
                }
            };
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Gw {
            addr,
            admin,
            serving: Some(serving),
            pid,
            before: rss(pid),
            peak,
            stop,
        }
    }
}

async fn healthz(admin: SocketAddr) -> bool {
    let Ok(Ok(s)) = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(admin),
    )
    .await
    else {
        return false;
    };
    let Ok((mut tx, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await else {
        return false;
    };
    tokio::spawn(conn);
    let req = Request::get("/healthz")
        .header("host", "localhost")
        .body(crate::body(""))
        .expect("request");
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tx.send_request(req)).await,
        Ok(Ok(r)) if r.status() == 200
    )
}

impl Gw {
    /// The case's setup is done: memory from here on is the case's.
    pub fn baseline(&mut self) {
        self.before = rss(self.pid);
        self.peak.store(self.before, Ordering::Relaxed);
    }

    /// A counter or gauge from the gateway's `/metrics` (NaN if absent).
    pub async fn metric(&self, series: &str) -> f64 {
        crate::sample(&crate::metrics(self.admin).await, series).unwrap_or(f64::NAN)
    }

    /// The verdict: reads the memory after the case (its connections given 300 ms to close),
    /// then stops the gateway.
    pub async fn outcome(mut self, observed: String, lost: u64, pass: bool) -> Outcome {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = rss(self.pid);
        let mem = Mem {
            before: self.before,
            peak: self.peak.load(Ordering::Relaxed).max(after),
            after,
        };
        self.stop().await;
        Outcome {
            observed,
            lost,
            pass,
            mem,
        }
    }

    async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        match self.serving.take() {
            Some(Serving::InProcess(gw)) => gw.shutdown().await,
            Some(Serving::Process(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {}
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(Serving::Process(mut child)) = self.serving.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// What a client saw of one request.
#[derive(Debug)]
pub struct Seen {
    pub status: u16,
    pub error_code: String,
    pub attempts: String,
    /// The body, or the error that cut it.
    pub body: Result<Bytes, String>,
}

/// `method path` on a fresh HTTP/1.1 connection, head and body each bounded by 10 s; a
/// failure before the head is status 0 with the error in `body`.
pub async fn call(addr: SocketAddr, method: &str, path: &str, body: &'static [u8]) -> Seen {
    let failed = |e: String| Seen {
        status: 0,
        error_code: String::new(),
        attempts: String::new(),
        body: Err(e),
    };
    let s = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return failed(format!("connect: {e}")),
    };
    let (mut tx, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(s)).await {
        Ok(x) => x,
        Err(e) => return failed(format!("handshake: {e}")),
    };
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(crate::body(Bytes::from_static(body)))
        .expect("request");
    let resp = match tokio::time::timeout(Duration::from_secs(10), tx.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return failed(e.to_string()),
        Err(_) => return failed("no head within 10 s".into()),
    };
    let (p, b) = resp.into_parts();
    let body = match tokio::time::timeout(Duration::from_secs(10), b.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("body not complete within 10 s".into()),
    };
    Seen {
        status: p.status.as_u16(),
        error_code: crate::header(&p, "portcullis-error"),
        attempts: crate::header(&p, "x-portcullis-attempts"),
        body,
    }
}

/// A normal client's requests, one after another on a keep-alive connection, while a case's
/// abuse runs: how many were answered 200 and the slowest answer.
#[derive(Default)]
pub struct Normal {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub slowest_us: AtomicU64,
}

impl Normal {
    /// Sends `GET path` every 20 ms until `stop` is set.
    pub fn start(addr: SocketAddr, path: &'static str, stop: Arc<AtomicBool>) -> Arc<Normal> {
        let n = Arc::new(Normal::default());
        let me = n.clone();
        tokio::spawn(async move {
            let client = crate::h1_client();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let req = crate::get(addr, path);
                let ok = matches!(
                    tokio::time::timeout(Duration::from_secs(2), async {
                        let r = client.request(req).await.ok()?;
                        let status = r.status();
                        r.into_body().collect().await.ok()?;
                        Some(status)
                    })
                    .await,
                    Ok(Some(s)) if s == 200
                );
                if ok {
                    me.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    me.failed.fetch_add(1, Ordering::Relaxed);
                }
                me.slowest_us
                    .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        n
    }

    /// "n ok, slowest m ms" and the failures.
    pub fn summary(&self) -> (String, u64) {
        let failed = self.failed.load(Ordering::Relaxed);
        (
            format!(
                "normal client {} ok / {} failed, slowest {:.1} ms",
                self.ok.load(Ordering::Relaxed),
                failed,
                self.slowest_us.load(Ordering::Relaxed) as f64 / 1000.0
            ),
            failed,
        )
    }
}
