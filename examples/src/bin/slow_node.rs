//! `cargo run --release -p portcullis-examples --bin slow_node`: the slow-node experiment.
//!
//! Four loopback upstreams answer in about 5 ms. For each balancer in turn an in-process
//! gateway fronts them while an open-loop client sends a fixed rate of GETs through it:
//!
//! 1. healthy;
//! 2. endpoint 0 answers 300 ms slower;
//! 3. endpoint 0 is still slow and endpoint 1 also fails fast (instant `500`).
//!
//! Open loop: request k is launched at `start + k / rate` whatever is still outstanding, and
//! its latency runs from that *scheduled* time, so a stalled client cannot hide a stall
//! (no coordinated omission). Outstanding requests are capped; a request that would exceed
//! the cap counts as an error.
//!
//! Each balancer runs twice: with the route defaults, and with hedging
//! (`retry = { per_try_timeout_ms = 25, hedge = true }`: a request without a response head
//! after 25 ms, five times a healthy answer, races a second attempt on another endpoint). The
//! `upstream load` column is what the upstreams received per client request: above 1.00 is
//! retries and hedges.
//!
//! Prints markdown tables (whole run and per phase) on stdout; progress on stderr.
//! `SLOW_NODE_RATE` (req/s) and `SLOW_NODE_PHASE_SECS` (three numbers, e.g. `6,7,7`) tune it.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const BALANCERS: [&str; 4] = [
    "round_robin",
    "least_in_flight",
    "least_in_flight_ewma",
    "p2c_peak_ewma",
];
/// The hedged runs' route retry policy.
const HEDGE: &str = "retry = { per_try_timeout_ms = 25, hedge = true }";
const BASE_LATENCY: Duration = Duration::from_millis(5);
const SLOW_EXTRA: Duration = Duration::from_millis(300);
const MAX_OUTSTANDING: usize = 2_000;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One upstream's switches and counter.
#[derive(Default)]
struct Node {
    slow: AtomicBool,
    failing: AtomicBool,
    requests: AtomicU64,
}

async fn start_node(node: Arc<Node>) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let node = node.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let node = node.clone();
                    async move {
                        node.requests.fetch_add(1, Ordering::Relaxed);
                        if node.failing.load(Ordering::Relaxed) {
                            let mut r = Response::new(Full::new(Bytes::from_static(b"failing\n")));
                            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            return Ok::<_, Infallible>(r);
                        }
                        let mut d = BASE_LATENCY;
                        if node.slow.load(Ordering::Relaxed) {
                            d += SLOW_EXTRA;
                        }
                        tokio::time::sleep(d).await;
                        Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// One finished (or failed) request.
#[derive(Clone, Copy)]
struct Sample {
    phase: usize,
    latency: Duration,
    ok: bool,
}

#[derive(Default)]
struct Row {
    latencies: Vec<Duration>,
    errors: usize,
    shares: [u64; 4],
}

impl Row {
    fn cells(&self, balancer: &str, label: &str) -> String {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        let q = |p: f64| -> String {
            if l.is_empty() {
                return "-".into();
            }
            let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
            format!("{:.1}", l[i].as_secs_f64() * 1000.0)
        };
        let total: u64 = self.shares.iter().sum();
        let share = |n: u64| {
            if total == 0 {
                "-".to_string()
            } else {
                format!("{:.0}%", n as f64 * 100.0 / total as f64)
            }
        };
        format!(
            "| {balancer} | {label}{} | {} | {} | {} | {:.2}% | {:.3} | {} / {} / {} / {} |",
            l.len(),
            q(0.50),
            q(0.99),
            q(0.999),
            self.errors as f64 * 100.0 / l.len().max(1) as f64,
            total as f64 / l.len().max(1) as f64,
            share(self.shares[0]),
            share(self.shares[1]),
            share(self.shares[2]),
            share(self.shares[3]),
        )
    }
}

fn config(addrs: &[SocketAddr], balancer: &str, route_extra: &str) -> String {
    let eps: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[timeouts]
drain_ms = 1000
[[cluster]]
name = "nodes"
endpoints = [{}]
balancer = "{balancer}"
[[route]]
name = "all"
cluster = "nodes"
{route_extra}
"#,
        eps.join(", ")
    )
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn one_request(client: &HttpClient, uri: &http::Uri) -> bool {
    let req = match Request::get(uri.clone()).body(Empty::new()) {
        Ok(r) => r,
        Err(_) => return false,
    };
    let fut = async {
        let resp = client.request(req).await.ok()?;
        let ok = resp.status().is_success();
        resp.into_body().collect().await.ok()?;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(CLIENT_TIMEOUT, fut).await,
        Ok(Some(true))
    )
}

/// Runs one balancer through the three phases; returns per-phase rows.
async fn run(
    (balancer, route_extra): (&str, &str),
    nodes: &[Arc<Node>],
    addrs: &[SocketAddr],
    rate: f64,
    phases: [Duration; 3],
) -> anyhow::Result<[Row; 3]> {
    for n in nodes {
        n.slow.store(false, Ordering::Relaxed);
        n.failing.store(false, Ordering::Relaxed);
        n.requests.store(0, Ordering::Relaxed);
    }
    let cfg = portcullis::Config::parse(
        &config(addrs, balancer, route_extra),
        std::path::Path::new("."),
    )
    .map_err(|p| anyhow::anyhow!("bench config invalid: {p:?}"))?;
    let gw = portcullis::Gateway::start(cfg)
        .await
        .context("starting the gateway")?;
    let gw_addr = gw.listener_addr("main").context("listener")?;
    let uri: http::Uri = format!("http://{gw_addr}/work").parse()?;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_OUTSTANDING)
        .build_http();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let outstanding = Arc::new(tokio::sync::Semaphore::new(MAX_OUTSTANDING));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let bounds = [
        phases[0],
        phases[0] + phases[1],
        phases[0] + phases[1] + phases[2],
    ];
    let mut shares = [[0u64; 4]; 3];
    let start = Instant::now();
    let mut phase = 0;
    let mut k: u32 = 0;
    loop {
        let at = start + interval * k;
        let since = at - start;
        while phase < 3 && since >= bounds[phase] {
            for (i, n) in nodes.iter().enumerate() {
                shares[phase][i] = n.requests.swap(0, Ordering::Relaxed);
            }
            phase += 1;
            match phase {
                1 => nodes[0].slow.store(true, Ordering::Relaxed),
                2 => nodes[1].failing.store(true, Ordering::Relaxed),
                _ => {}
            }
            if phase < 3 {
                eprintln!("  {balancer}: phase {}", phase + 1);
            }
        }
        if phase == 3 {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        k += 1;
        let tx = tx.clone();
        match outstanding.clone().try_acquire_owned() {
            Ok(permit) => {
                let (client, uri) = (client.clone(), uri.clone());
                tokio::spawn(async move {
                    let ok = one_request(&client, &uri).await;
                    let _ = tx.send(Sample {
                        phase,
                        latency: at.elapsed(),
                        ok,
                    });
                    drop(permit);
                });
            }
            Err(_) => {
                let _ = tx.send(Sample {
                    phase,
                    latency: at.elapsed(),
                    ok: false,
                });
            }
        }
    }
    drop(tx);
    let mut rows: [Row; 3] = Default::default();
    while let Some(s) = rx.recv().await {
        let row = &mut rows[s.phase];
        row.latencies.push(s.latency);
        if !s.ok {
            row.errors += 1;
        }
    }
    for (row, sh) in rows.iter_mut().zip(shares) {
        row.shares = sh;
    }
    gw.shutdown().await;
    Ok(rows)
}

fn env_phases() -> [Duration; 3] {
    let default = [6.0, 7.0, 7.0];
    let v: Vec<f64> = std::env::var("SLOW_NODE_PHASE_SECS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    let p = if v.len() == 3 {
        [v[0], v[1], v[2]]
    } else {
        default
    };
    p.map(Duration::from_secs_f64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rate: f64 = std::env::var("SLOW_NODE_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300.0);
    let phases = env_phases();
    let nodes: Vec<Arc<Node>> = (0..4).map(|_| Arc::new(Node::default())).collect();
    let mut addrs = Vec::new();
    for n in &nodes {
        addrs.push(start_node(n.clone()).await?);
    }
    let mut whole = String::new();
    let mut by_phase = String::new();
    let header = "| balancer | requests | p50 ms | p99 ms | p99.9 ms | error rate | upstream load | share ep0 / ep1 / ep2 / ep3 |\n|---|---|---|---|---|---|---|---|\n";
    whole.push_str(header);
    by_phase.push_str(&header.replace("| requests |", "| phase: requests |"));
    let names = ["1 healthy", "2 ep0 +300 ms", "3 ep0 slow, ep1 500s"];
    let variants = BALANCERS.iter().map(|b| (b.to_string(), *b, "")).chain(
        BALANCERS
            .iter()
            .map(|b| (format!("{b} + hedge"), *b, HEDGE)),
    );
    for (name, balancer, extra) in variants {
        let b = name.as_str();
        eprintln!("{b}: phase 1");
        let rows = run((balancer, extra), &nodes, &addrs, rate, phases).await?;
        let mut all = Row::default();
        for (row, name) in rows.iter().zip(names) {
            let _ = writeln!(by_phase, "{}", row.cells(b, &format!("{name}: ")));
            all.latencies.extend_from_slice(&row.latencies);
            all.errors += row.errors;
            for (a, r) in all.shares.iter_mut().zip(row.shares) {
                *a += r;
            }
        }
        let _ = writeln!(whole, "{}", all.cells(b, ""));
    }
    let secs: f64 = phases.iter().map(Duration::as_secs_f64).sum();
    println!(
        "Open loop at {rate} req/s for {secs} s per balancer (phases {:?} s); healthy nodes answer in {} ms; \
         latency from the scheduled send time; shares are of requests the upstreams received (retries included).\n",
        phases.map(|d| d.as_secs_f64()),
        BASE_LATENCY.as_millis()
    );
    println!("### Whole run\n\n{whole}\n### By phase\n\n{by_phase}");
    Ok(())
}
