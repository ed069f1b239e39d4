//! Upstreams: clusters of endpoints, each with a pool, live stats, a balancer, outlier
//! detection, a retry budget and a concurrency limit.

pub(crate) mod balancer;
pub(crate) mod client;
pub(crate) mod connect;
pub(crate) mod discovery;
pub(crate) mod endpoints;
pub(crate) mod health;
pub(crate) mod outlier;
pub(crate) mod pool;
pub(crate) mod retry;
pub(crate) mod stats;

use crate::config;
use crate::shed::Shedder;
use crate::telemetry::prom::{Kind, Num, Writer};
use pool::PoolConfig;
use retry::RetryBudget;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub(crate) use endpoints::{Endpoint, EndpointSet, Endpoints};

pub struct Cluster {
    pub name: Arc<str>,
    /// The endpoint set serving now: fixed for a listed cluster, swapped by DNS discovery.
    pub endpoints: Arc<Endpoints>,
    /// Present for `endpoints = { dns = ... }`.
    pub discovery: Option<Arc<discovery::Discovery>>,
    pub outlier_cfg: config::Outlier,
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
        if let Some(d) = &self.discovery {
            d.stop();
        }
        if let Some(h) = &self.endpoints.load().health {
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

/// What a new cluster starts from besides its config.
struct Start<'a> {
    seed: u64,
    shutdown: &'a tokio::sync::watch::Receiver<bool>,
    /// The resolver, for a DNS cluster.
    resolver: Option<&'a hickory_resolver::TokioResolver>,
    /// A DNS cluster redefined by a reload starts from the old one's discovered endpoints
    /// (looked up again at once) rather than from none.
    previous: Option<&'a Cluster>,
}

impl Cluster {
    fn new(
        cfg: &config::Cluster,
        global: &config::Timeouts,
        st: Start<'_>,
    ) -> anyhow::Result<Self> {
        let timeouts = CallTimeouts::resolve(cfg, global);
        let connector = connect::Connector::new(cfg)
            .map_err(|e| anyhow::anyhow!("cluster `{}`: {e:#}", cfg.name))?;
        let builder = endpoints::SetBuilder {
            connector,
            pool: PoolConfig::from(&cfg.pool),
            outlier: cfg.outlier.clone(),
            balancer: cfg.balancer,
            seed: st.seed,
            health: cfg.health_check.clone(),
            shutdown: st.shutdown.clone(),
        };
        let initial = initial_endpoints(cfg, st.previous);
        let endpoints = Arc::new(Endpoints::new(builder, &initial));
        let name: Arc<str> = Arc::from(cfg.name.as_str());
        let discovery = match (cfg.endpoints.dns(), st.resolver) {
            (Some(spec), Some(r)) => Some(discovery::spawn(
                name.clone(),
                spec.clone(),
                r.clone(),
                endpoints.clone(),
                st.shutdown.clone(),
            )),
            _ => None,
        };
        Ok(Cluster {
            name,
            endpoints,
            discovery,
            outlier_cfg: cfg.outlier.clone(),
            retry_budget: RetryBudget::new(&cfg.retry_budget),
            limit: Arc::new(Shedder::new(cfg.max_concurrency)),
            timeouts: arc_swap::ArcSwap::from_pointee(timeouts),
        })
    }

    /// Requests in flight to the endpoints serving now.
    pub fn in_flight(&self) -> usize {
        self.endpoints.load().in_flight()
    }
}

/// A listed cluster's endpoints; a DNS cluster's previous answer for the same name, or none.
fn initial_endpoints(cfg: &config::Cluster, previous: Option<&Cluster>) -> Vec<(Arc<str>, u32)> {
    match cfg.endpoints.dns() {
        None => cfg
            .endpoints
            .listed()
            .iter()
            .map(|e| (Arc::from(e.addr()), e.weight()))
            .collect(),
        Some(spec) => previous
            .filter(|p| p.discovery.as_ref().is_some_and(|d| d.spec.dns == spec.dns))
            .map(|p| {
                let set = p.endpoints.load();
                set.endpoints
                    .iter()
                    .zip(&set.stats)
                    .map(|(e, s)| (e.addr.clone(), s.weight()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

pub struct Upstreams {
    pub clusters: Vec<Arc<Cluster>>,
    by_name: HashMap<Arc<str>, usize>,
}

/// How one endpoint's value of a series is read.
type Getter = fn(&EndpointSet, usize) -> Num;

/// The per-endpoint series of `/metrics`: name, kind, help and getter.
const ENDPOINT_SERIES: [(&str, Kind, &str, Getter); 12] = [
    (
        "portcullis_upstream_requests_total",
        Kind::Counter,
        "Requests to an endpoint that got an answer or failed upstream.",
        |s, i| s.stats[i].requests_total().into(),
    ),
    (
        "portcullis_upstream_failures_total",
        Kind::Counter,
        "Requests to an endpoint that failed: connect error, reset, timeout or 5xx.",
        |s, i| s.stats[i].failures_total().into(),
    ),
    (
        "portcullis_upstream_healthy",
        Kind::Gauge,
        "1 unless active health checks mark the endpoint down.",
        |s, i| s.health.as_ref().is_none_or(|h| h.is_healthy(i)).into(),
    ),
    (
        "portcullis_upstream_in_flight",
        Kind::Gauge,
        "Requests in flight to an endpoint.",
        |s, i| s.stats[i].in_flight().into(),
    ),
    (
        "portcullis_upstream_connections_new_total",
        Kind::Counter,
        "Upstream connections opened.",
        |s, i| {
            s.endpoints[i]
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
        |s, i| s.endpoints[i].pool.reused.load(Ordering::Relaxed).into(),
    ),
    (
        "portcullis_upstream_connections_open",
        Kind::Gauge,
        "Upstream connections open (idle and busy).",
        |s, i| s.endpoints[i].pool.open().into(),
    ),
    (
        "portcullis_upstream_connections_idle",
        Kind::Gauge,
        "Idle pooled upstream connections.",
        |s, i| s.endpoints[i].pool.idle_count().into(),
    ),
    (
        "portcullis_upstream_connect_failures_total",
        Kind::Counter,
        "Failed or timed-out upstream connects.",
        |s, i| {
            s.endpoints[i]
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
        |s, i| s.stats[i].failure_rate().into(),
    ),
    (
        "portcullis_upstream_latency_peak_ewma_seconds",
        Kind::Gauge,
        "Peak-EWMA response latency.",
        |s, i| s.stats[i].peak_ewma_latency().as_secs_f64().into(),
    ),
    (
        "portcullis_upstream_ejections_total",
        Kind::Counter,
        "Outlier ejections.",
        |s, i| s.outlier.ejections_total(i).into(),
    ),
];

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
        let mut resolver = None;
        // A DNS cluster is also redefined by a change of `[dns]`, which its resolver is built of.
        let dns_same = old.is_none_or(|(oc, _)| oc.dns == cfg.dns);
        for (i, c) in cfg.clusters.iter().enumerate() {
            let before = old.and_then(|(oc, ou)| {
                let def = oc.clusters.iter().find(|o| o.name == c.name)?;
                let same = def == c && (dns_same || c.endpoints.dns().is_none());
                Some((same, ou.get(&c.name)?.clone()))
            });
            match before {
                Some((true, existing)) => built.push((c, Err(existing))),
                before => {
                    if c.endpoints.dns().is_some() && resolver.is_none() {
                        resolver = Some(discovery::resolver(&cfg.dns)?);
                    }
                    let start = Start {
                        seed: 0x5eed_0000 + i as u64,
                        shutdown,
                        resolver: resolver.as_ref(),
                        previous: before.as_ref().map(|(_, e)| &**e),
                    };
                    let cl = Cluster::new(c, &cfg.timeouts, start)?;
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
            for e in &c.endpoints.load().endpoints {
                e.pool.reap(now);
            }
        }
    }

    /// Writes the per-endpoint, retry and ejection families.
    pub(crate) fn render(&self, w: &mut Writer) {
        let sets: Vec<(&Cluster, Arc<EndpointSet>)> = self
            .clusters
            .iter()
            .map(|c| (&**c, c.endpoints.load()))
            .collect();
        for (name, kind, help, get) in ENDPOINT_SERIES {
            let mut f = w.family(name, help, kind);
            for (c, s) in &sets {
                for (i, e) in s.endpoints.iter().enumerate() {
                    f.sample(&[("cluster", &c.name), ("endpoint", &e.addr)], get(s, i));
                }
            }
        }
        self.render_retries(w);
        self.render_membership(w, &sets);
        self.render_dns(w);
    }

    /// Retries by reason, and retries the budget refused, per cluster.
    fn render_retries(&self, w: &mut Writer) {
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
    }

    /// Which endpoints a cluster has now, and which of them are ejected.
    fn render_membership(&self, w: &mut Writer, sets: &[(&Cluster, Arc<EndpointSet>)]) {
        let mut f = w.family(
            "portcullis_upstream_ejected",
            "1 while the endpoint is ejected by outlier detection.",
            Kind::Gauge,
        );
        let now = Instant::now();
        for (c, s) in sets {
            for (i, e) in s.endpoints.iter().enumerate() {
                f.sample(
                    &[("cluster", &c.name), ("endpoint", &e.addr)],
                    s.outlier.is_ejected(i, now),
                );
            }
        }
        let mut f = w.family(
            "portcullis_upstream_endpoints",
            "Endpoints a cluster balances over now (listed, or the last good DNS answer).",
            Kind::Gauge,
        );
        for (c, s) in sets {
            f.sample(&[("cluster", &c.name)], s.endpoints.len());
        }
    }

    /// `portcullis_dns_lookups_total` of the DNS clusters.
    fn render_dns(&self, w: &mut Writer) {
        let mut f = w.family(
            "portcullis_dns_lookups_total",
            "DNS discovery lookups by result: ok, nxdomain, servfail, timeout, empty or error.",
            Kind::Counter,
        );
        for c in &self.clusters {
            let Some(d) = &c.discovery else { continue };
            for o in discovery::Outcome::ALL {
                f.sample(
                    &[("cluster", &c.name), ("result", o.as_str())],
                    d.lookups(o),
                );
            }
        }
    }
}
