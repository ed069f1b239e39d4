//! Active HTTP health checks: one tokio task per cluster GETs `path` on every endpoint each
//! `interval_ms`, each check bounded by `timeout_ms`.
//!
//! A 2xx answer is a success; anything else (another status, refused or reset connection,
//! timeout) is a failure. Endpoints start healthy, so a gateway serves at once after start;
//! `unhealthy_threshold` failures in a row mark one down, `healthy_threshold` successes in a
//! row mark it up again. A down endpoint gets no traffic from any balancer; if every endpoint
//! is down, requests fail fast with `503 no-healthy-upstream`.
//!
//! Checks use a fresh plain-TCP HTTP/1.1 connection each time (`connection: close`), so they
//! also notice an endpoint that stopped accepting connections while pooled ones linger.

use crate::config::HealthCheck;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub struct HealthChecker {
    /// The checking task, aborted by [`HealthChecker::stop`] when its cluster goes away (a
    /// config reload removed or redefined it).
    task: std::sync::OnceLock<tokio::task::AbortHandle>,
    healthy: Vec<AtomicBool>,
    checks: AtomicU64,
    failures: Vec<AtomicU64>,
}

/// Consecutive results of one endpoint.
#[derive(Default, Clone, Copy)]
struct Streak {
    ok: u32,
    bad: u32,
}

impl HealthChecker {
    pub fn spawn(
        cfg: HealthCheck,
        addrs: Vec<String>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<HealthChecker> {
        let healthy = vec![true; addrs.len()];
        Self::spawn_from(cfg, addrs, &healthy, shutdown)
    }

    /// As [`HealthChecker::spawn`], each endpoint starting as `healthy[i]` says: a changed
    /// DNS answer's checker keeps what the previous one knew of the endpoints kept.
    pub fn spawn_from(
        cfg: HealthCheck,
        addrs: Vec<String>,
        healthy: &[bool],
        shutdown: watch::Receiver<bool>,
    ) -> Arc<HealthChecker> {
        let hc = Arc::new(HealthChecker {
            task: std::sync::OnceLock::new(),
            healthy: (0..addrs.len())
                .map(|i| AtomicBool::new(healthy.get(i).copied().unwrap_or(true)))
                .collect(),
            checks: AtomicU64::new(0),
            failures: addrs.iter().map(|_| AtomicU64::new(0)).collect(),
        });
        let task = tokio::spawn(run(hc.clone(), cfg, addrs, shutdown));
        let _ = hc.task.set(task.abort_handle());
        hc
    }

    /// Stops checking.
    pub fn stop(&self) {
        if let Some(t) = self.task.get() {
            t.abort();
        }
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        self.healthy
            .get(i)
            .is_none_or(|h| h.load(Ordering::Acquire))
    }

    /// Rounds of checks completed (all endpoints checked once per round).
    pub fn rounds(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Failed checks of endpoint `i`.
    pub fn failures_total(&self, i: usize) -> u64 {
        self.failures
            .get(i)
            .map_or(0, |f| f.load(Ordering::Relaxed))
    }

    fn apply(&self, i: usize, ok: bool, s: &mut Streak, cfg: &HealthCheck) {
        if ok {
            s.ok = s.ok.saturating_add(1);
            s.bad = 0;
            if s.ok >= cfg.healthy_threshold.max(1) && !self.healthy[i].swap(true, Ordering::AcqRel)
            {
                tracing::info!(endpoint = i, "health check: endpoint is healthy again");
            }
        } else {
            self.failures[i].fetch_add(1, Ordering::Relaxed);
            s.bad = s.bad.saturating_add(1);
            s.ok = 0;
            if s.bad >= cfg.unhealthy_threshold.max(1)
                && self.healthy[i].swap(false, Ordering::AcqRel)
            {
                tracing::warn!(endpoint = i, "health check: endpoint marked unhealthy");
            }
        }
    }
}

async fn run(
    hc: Arc<HealthChecker>,
    cfg: HealthCheck,
    addrs: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut streaks = vec![Streak::default(); addrs.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
    let path: Arc<str> = Arc::from(cfg.path.as_str());
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        let mut round = tokio::task::JoinSet::new();
        for (i, addr) in addrs.iter().enumerate() {
            let (addr, path) = (addr.clone(), path.clone());
            round.spawn(async move {
                let ok = matches!(
                    tokio::time::timeout(timeout, check(&addr, &path)).await,
                    Ok(Ok(true))
                );
                (i, ok)
            });
        }
        loop {
            tokio::select! {
                next = round.join_next() => match next {
                    Some(Ok((i, ok))) => hc.apply(i, ok, &mut streaks[i], &cfg),
                    Some(Err(_)) => {}
                    None => break,
                },
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
        hc.checks.fetch_add(1, Ordering::Relaxed);
    }
}

/// One check: true on a 2xx answer.
async fn check(addr: &str, path: &str) -> anyhow::Result<bool> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr)
        .header(http::header::USER_AGENT, "portcullis-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::new())?;
    let resp = tx.send_request(req).await;
    driver.abort();
    Ok(resp?.status().is_success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-line HTTP server whose answer status can be switched.
    async fn server(status: Arc<std::sync::atomic::AtomicU16>) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let code = status.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .as_bytes(),
                        )
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn marks_down_and_up_by_thresholds_and_stops_on_shutdown() {
        let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
        let addr = server(status.clone()).await;
        let (stop, rx) = watch::channel(false);
        let cfg = HealthCheck {
            path: "/healthz".into(),
            interval_ms: 20,
            timeout_ms: 500,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        };
        let hc = HealthChecker::spawn(cfg, vec![addr.to_string()], rx);
        assert!(hc.is_healthy(0), "starts healthy");
        let wait = |want: bool| {
            let hc = hc.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), async {
                    while hc.is_healthy(0) != want {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await
                .is_ok()
            }
        };
        status.store(503, Ordering::Relaxed);
        assert!(wait(false).await, "marked down");
        assert!(hc.failures_total(0) >= 2);
        status.store(204, Ordering::Relaxed);
        assert!(wait(true).await, "marked up again");
        let _ = stop.send(true);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let rounds = hc.rounds();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(hc.rounds(), rounds, "no checks after shutdown");
    }
}
