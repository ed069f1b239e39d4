//! A cluster's endpoint set: the endpoints with their pools and stats, the balancer, the
//! outlier detector and the health checker, all indexed alike. Swapped whole when DNS
//! discovery brings a changed answer, so a request reads it with one atomic load and keeps
//! its snapshot to the end (indices stay valid across its retries, a removed endpoint's
//! in-flight requests finish on it).

use super::balancer::{self, Balancer};
use super::connect::Connector;
use super::health::HealthChecker;
use super::outlier::OutlierDetector;
use super::pool::{Pool, PoolConfig};
use super::stats::EndpointStats;
use crate::config;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;

pub struct Endpoint {
    pub addr: Arc<str>,
    pub pool: Pool,
}

/// One version of a cluster's endpoints. Never changed once built: a change is a new set.
pub struct EndpointSet {
    pub endpoints: Vec<Arc<Endpoint>>,
    pub stats: Vec<Arc<EndpointStats>>,
    balancer: Box<dyn Balancer>,
    pub outlier: OutlierDetector,
    pub health: Option<Arc<HealthChecker>>,
}

impl Drop for EndpointSet {
    fn drop(&mut self) {
        if let Some(h) = &self.health {
            h.stop();
        }
    }
}

impl EndpointSet {
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

    fn position(&self, addr: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| &*e.addr == addr)
    }

    fn same(&self, wanted: &[(Arc<str>, u32)]) -> bool {
        self.endpoints.len() == wanted.len()
            && wanted
                .iter()
                .zip(self.endpoints.iter().zip(&self.stats))
                .all(|((a, w), (e, s))| e.addr == *a && s.weight() == *w)
    }
}

/// What a cluster's sets are made of, fixed by its config.
pub(crate) struct SetBuilder {
    pub connector: Connector,
    pub pool: PoolConfig,
    pub outlier: config::Outlier,
    pub balancer: config::BalancerKind,
    pub seed: u64,
    pub health: Option<config::HealthCheck>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// What a replacement changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub added: usize,
    pub removed: usize,
}

/// The current set of a cluster, swappable at run time.
pub struct Endpoints {
    current: ArcSwap<EndpointSet>,
    builder: SetBuilder,
    /// Replacements one at a time (the old set is read to build the new one).
    replacing: Mutex<()>,
}

impl Endpoints {
    /// Starts with `initial` (address, weight) endpoints, all fresh.
    pub(crate) fn new(builder: SetBuilder, initial: &[(Arc<str>, u32)]) -> Self {
        let set = build(&builder, initial, None);
        Endpoints {
            current: ArcSwap::from_pointee(set),
            builder,
            replacing: Mutex::new(()),
        }
    }

    /// The set serving now. One atomic load; the caller keeps the snapshot for its request.
    pub fn load(&self) -> Arc<EndpointSet> {
        self.current.load_full()
    }

    pub fn protocol(&self) -> config::UpstreamProtocol {
        self.builder.connector.protocol()
    }

    /// Makes `wanted` the set. Endpoints already present (by address) keep their pool,
    /// stats, outlier and health state; new ones start fresh; removed ones drain: they get no
    /// new requests, their in-flight ones finish on the old snapshot, and their idle
    /// connections are closed now. An unchanged answer changes nothing.
    pub(crate) fn replace(&self, wanted: &[(Arc<str>, u32)]) -> Change {
        let _one = self.replacing.lock();
        let old = self.current.load_full();
        if old.same(wanted) {
            return Change::default();
        }
        let new = build(&self.builder, wanted, Some(&old));
        let kept = new
            .endpoints
            .iter()
            .filter(|e| old.position(&e.addr).is_some())
            .count();
        self.current.store(Arc::new(new));
        if let Some(h) = &old.health {
            h.stop();
        }
        for e in &old.endpoints {
            if !wanted.iter().any(|(a, _)| *a == e.addr) {
                e.pool.retire();
            }
        }
        Change {
            added: wanted.len() - kept,
            removed: old.endpoints.len() - kept,
        }
    }
}

/// A set of `wanted`, carrying over from `old` what it knew of the endpoints kept.
fn build(b: &SetBuilder, wanted: &[(Arc<str>, u32)], old: Option<&EndpointSet>) -> EndpointSet {
    let from: Vec<Option<usize>> = wanted
        .iter()
        .map(|(a, _)| old.and_then(|o| o.position(a)))
        .collect();
    let mut endpoints = Vec::with_capacity(wanted.len());
    let mut stats = Vec::with_capacity(wanted.len());
    for ((addr, weight), f) in wanted.iter().zip(&from) {
        match (old, f) {
            (Some(o), Some(j)) => {
                o.stats[*j].set_weight(*weight);
                endpoints.push(o.endpoints[*j].clone());
                stats.push(o.stats[*j].clone());
            }
            _ => {
                endpoints.push(Arc::new(Endpoint {
                    pool: Pool::new(addr.clone(), b.pool, b.connector.clone()),
                    addr: addr.clone(),
                }));
                stats.push(Arc::new(EndpointStats::new(*weight)));
            }
        }
    }
    let outlier = match old {
        Some(o) => OutlierDetector::carried(&b.outlier, &o.outlier, &from),
        None => OutlierDetector::new(&b.outlier, wanted.len()),
    };
    let health = b.health.as_ref().map(|hc| {
        let healthy: Vec<bool> = from
            .iter()
            .map(|f| match (old.and_then(|o| o.health.as_ref()), f) {
                (Some(h), Some(j)) => h.is_healthy(*j),
                _ => true,
            })
            .collect();
        let addrs = wanted.iter().map(|(a, _)| a.to_string()).collect();
        HealthChecker::spawn_from(hc.clone(), addrs, &healthy, b.shutdown.clone())
    });
    EndpointSet {
        endpoints,
        stats,
        balancer: balancer::new_balancer(b.balancer, b.seed),
        outlier,
        health,
    }
}
