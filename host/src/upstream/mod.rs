//! Upstreams: clusters of endpoints, each with a pool, live stats, a balancer, outlier
//! detection, a retry budget and a concurrency limit.

pub(crate) mod balancer;
pub(crate) mod client;
pub(crate) mod connect;
pub(crate) mod health;
pub(crate) mod outlier;
pub(crate) mod pool;
pub(crate) mod retry;
pub(crate) mod stats;

use crate::config;
use crate::shed::Shedder;
use crate::telemetry::prom::{Kind, Num, Writer};
use balancer::Balancer;
use outlier::OutlierDetector;
use pool::{Pool, PoolConfig};
use retry::RetryBudget;
use stats::EndpointStats;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub struct Endpoint {
    pub addr: Arc<str>,
    pub pool: Pool,
}

pub struct Cluster {
    pub name: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    pub stats: Vec<Arc<EndpointStats>>,
    balancer: Box<dyn Balancer>,
    pub outlier: OutlierDetector,
    pub outlier_cfg: config::Outlier,
    pub health: Option<Arc<health::HealthChecker>>,
    pub retry_budget: RetryBudget,
    /// Per-cluster concurrency limit, shedding by priority. Kept by a reload that redefines
    /// the cluster, so its in-flight count carries over.
    pub limit: Arc<Shedder>,
    /// The cluster's timeouts over the global ones: what a call without a route (fan-out)
    /// gets. Swapped by a reload that changes only the global `[timeouts]`.
    pub timeouts: arc_swap::ArcSwap<CallTimeouts>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(h) = &self.health {
            h.stop();
        }
    }
}

/// Per-attempt waits of a call to a cluster.
#[derive(Debug, Clone, Copy)]
pub struct CallTimeouts {
    pub connect: std::time::Duration,
    pub upstream_headers: std::time::Duration,
}

impl CallTimeouts {
    fn resolve(cfg: &config::Cluster, global: &config::Timeouts) -> Self {
        let ms = std::time::Duration::from_millis;
        CallTimeouts {
            connect: ms(cfg.timeouts.connect_ms.unwrap_or(global.connect_ms)),
            upstream_headers: ms(cfg
                .timeouts
                .upstream_headers_ms
                .unwrap_or(global.upstream_headers_ms)),
        }
    }
}

impl Cluster {
    fn new(cfg: &config::Cluster, global: &config::Timeouts, seed: u64) -> anyhow::Result<Self> {
        let timeouts = CallTimeouts::resolve(cfg, global);
        let pool_cfg = PoolConfig::from(&cfg.pool);
        let connector = connect::Connector::new(cfg)
            .map_err(|e| anyhow::anyhow!("cluster `{}`: {e:#}", cfg.name))?;
        let endpoints: Vec<Endpoint> = cfg
            .endpoints
            .iter()
            .map(|e| {
                let addr: Arc<str> = Arc::from(e.addr());
                Endpoint {
                    pool: Pool::new(addr.clone(), pool_cfg, connector.clone()),
                    addr,
                }
            })
            .collect();
        Ok(Cluster {
            name: Arc::from(cfg.name.as_str()),
            stats: cfg
                .endpoints
                .iter()
                .map(|e| Arc::new(EndpointStats::new(e.weight())))
                .collect(),
            balancer: balancer::new_balancer(cfg.balancer, seed),
            outlier: OutlierDetector::new(&cfg.outlier, endpoints.len()),
            outlier_cfg: cfg.outlier.clone(),
            health: None,
            retry_budget: RetryBudget::new(&cfg.retry_budget),
            limit: Arc::new(Shedder::new(cfg.max_concurrency)),
            timeouts: arc_swap::ArcSwap::from_pointee(timeouts),
            endpoints,
        })
    }

    fn eligible(&self, i: usize, tried: &[usize], now: Instant) -> bool {
        !tried.contains(&i)
            && self.outlier.is_available(i, now)
            && self.health.as_ref().is_none_or(|h| h.is_healthy(i))
    }

    /// Picks an endpoint that is healthy, not ejected and not in `tried`.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        self.balancer
            .pick(&self.stats, &|i| self.eligible(i, tried, now))
    }

    /// Whether `pick` could find an endpoint, without asking the balancer (which may advance
    /// its rotation or claim a probe).
    pub fn has_eligible(&self, tried: &[usize]) -> bool {
        let now = Instant::now();
        (0..self.endpoints.len()).any(|i| self.eligible(i, tried, now))
    }

    pub fn in_flight(&self) -> usize {
        self.stats.iter().map(|s| s.in_flight()).sum()
    }
}

pub struct Upstreams {
    pub clusters: Vec<Arc<Cluster>>,
    by_name: HashMap<Arc<str>, usize>,
}

impl Upstreams {
    /// Builds the clusters of `cfg` and starts their health checks.
    pub fn new(
        cfg: &config::Config,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        Self::rebuild(cfg, None, shutdown).map(|(u, _)| u)
    }

    /// Builds the clusters of `cfg` for a config reload. A cluster whose definition is the
    /// same in `old` (the config and clusters serving now) is kept as it is — pools, balancer,
    /// stats, outlier, health and retry-budget state — with only its call timeouts refreshed
    /// from the new global `[timeouts]`. A redefined cluster is built anew but keeps its
    /// concurrency limit's in-flight count. Returns the names of the clusters kept.
    pub fn rebuild(
        cfg: &config::Config,
        old: Option<(&config::Config, &Upstreams)>,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<(Self, Vec<Arc<str>>)> {
        // First everything that can fail, so a failed reload changes nothing that serves.
        let mut built = Vec::with_capacity(cfg.clusters.len());
        for (i, c) in cfg.clusters.iter().enumerate() {
            let before = old.and_then(|(oc, ou)| {
                let def = oc.clusters.iter().find(|o| o.name == c.name)?;
                Some((def == c, ou.get(&c.name)?.clone()))
            });
            match before {
                Some((true, existing)) => built.push((c, Err(existing))),
                before => {
                    let mut cl = Cluster::new(c, &cfg.timeouts, 0x5eed_0000 + i as u64)?;
                    if let Some(hc) = &c.health_check {
                        let addrs = c.endpoints.iter().map(|e| e.addr().to_string()).collect();
                        cl.health = Some(health::HealthChecker::spawn(
                            hc.clone(),
                            addrs,
                            shutdown.clone(),
                        ));
                    }
                    built.push((c, Ok((cl, before.map(|(_, e)| e)))));
                }
            }
        }
        let mut clusters = Vec::with_capacity(built.len());
        let mut kept = Vec::new();
        for (c, b) in built {
            match b {
                Err(existing) => {
                    existing
                        .timeouts
                        .store(Arc::new(CallTimeouts::resolve(c, &cfg.timeouts)));
                    kept.push(existing.name.clone());
                    clusters.push(existing);
                }
                Ok((mut cl, previous)) => {
                    if let Some(p) = previous {
                        p.limit.configure(c.max_concurrency);
                        cl.limit = p.limit.clone();
                    }
                    clusters.push(Arc::new(cl));
                }
            }
        }
        let by_name = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Ok((Upstreams { clusters, by_name }, kept))
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.index(name).and_then(|i| self.clusters.get(i))
    }

    pub fn reap_idle(&self) {
        let now = Instant::now();
        for c in &self.clusters {
            for e in &c.endpoints {
                e.pool.reap(now);
            }
        }
    }

    /// Writes the per-endpoint, retry and ejection families.
    pub(crate) fn render(&self, w: &mut Writer) {
        type Getter = fn(&Cluster, usize) -> Num;
        let series: [(&'static str, Kind, &str, Getter); 12] = [
            (
                "portcullis_upstream_requests_total",
                Kind::Counter,
                "Requests to an endpoint that got an answer or failed upstream.",
                |c, i| c.stats[i].requests_total().into(),
            ),
            (
                "portcullis_upstream_failures_total",
                Kind::Counter,
                "Requests to an endpoint that failed: connect error, reset, timeout or 5xx.",
                |c, i| c.stats[i].failures_total().into(),
            ),
            (
                "portcullis_upstream_healthy",
                Kind::Gauge,
                "1 unless active health checks mark the endpoint down.",
                |c, i| c.health.as_ref().is_none_or(|h| h.is_healthy(i)).into(),
            ),
            (
                "portcullis_upstream_in_flight",
                Kind::Gauge,
                "Requests in flight to an endpoint.",
                |c, i| c.stats[i].in_flight().into(),
            ),
            (
                "portcullis_upstream_connections_new_total",
                Kind::Counter,
                "Upstream connections opened.",
                |c, i| {
                    c.endpoints[i]
                        .pool
                        .new_connections
                        .load(Ordering::Relaxed)
                        .into()
                },
            ),
            (
                "portcullis_upstream_connections_reused_total",
                Kind::Counter,
                "Requests sent on a pooled keep-alive connection.",
                |c, i| c.endpoints[i].pool.reused.load(Ordering::Relaxed).into(),
            ),
            (
                "portcullis_upstream_connections_open",
                Kind::Gauge,
                "Upstream connections open (idle and busy).",
                |c, i| c.endpoints[i].pool.open().into(),
            ),
            (
                "portcullis_upstream_connections_idle",
                Kind::Gauge,
                "Idle pooled upstream connections.",
                |c, i| c.endpoints[i].pool.idle_count().into(),
            ),
            (
                "portcullis_upstream_connect_failures_total",
                Kind::Counter,
                "Failed or timed-out upstream connects.",
                |c, i| {
                    c.endpoints[i]
                        .pool
                        .connect_failures
                        .load(Ordering::Relaxed)
                        .into()
                },
            ),
            (
                "portcullis_upstream_failure_rate_ewma",
                Kind::Gauge,
                "Exponentially weighted failure rate (about the last minute).",
                |c, i| c.stats[i].failure_rate().into(),
            ),
            (
                "portcullis_upstream_latency_peak_ewma_seconds",
                Kind::Gauge,
                "Peak-EWMA response latency.",
                |c, i| c.stats[i].peak_ewma_latency().as_secs_f64().into(),
            ),
            (
                "portcullis_upstream_ejections_total",
                Kind::Counter,
                "Outlier ejections.",
                |c, i| c.outlier.ejections_total(i).into(),
            ),
        ];
        for (name, kind, help, get) in series {
            let mut f = w.family(name, help, kind);
            for c in &self.clusters {
                for (i, e) in c.endpoints.iter().enumerate() {
                    f.sample(&[("cluster", &c.name), ("endpoint", &e.addr)], get(c, i));
                }
            }
        }
        let mut f = w.family(
            "portcullis_retries_total",
            "Retries that went ahead, by reason: connect_failed, reset, status, per_try_timeout or hedge.",
            Kind::Counter,
        );
        for c in &self.clusters {
            for why in retry::RetryReason::ALL {
                f.sample(
                    &[("cluster", &c.name), ("reason", why.as_str())],
                    c.retry_budget.retries_total(why),
                );
            }
        }
        let mut f = w.family(
            "portcullis_retry_budget_exhausted_total",
            "Retries refused because the cluster's retry budget was spent.",
            Kind::Counter,
        );
        for c in &self.clusters {
            f.sample(&[("cluster", &c.name)], c.retry_budget.exhausted_total());
        }
        let mut f = w.family(
            "portcullis_upstream_ejected",
            "1 while the endpoint is ejected by outlier detection.",
            Kind::Gauge,
        );
        let now = Instant::now();
        for c in &self.clusters {
            for (i, e) in c.endpoints.iter().enumerate() {
                f.sample(
                    &[("cluster", &c.name), ("endpoint", &e.addr)],
                    c.outlier.is_ejected(i, now),
                );
            }
        }
    }
}
