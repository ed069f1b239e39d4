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

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(initial: &[(&str, u32)]) -> Endpoints {
        let cfg = config::Config::parse(
            "[[cluster]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n",
            std::path::Path::new("."),
        )
        .expect("config");
        let c = &cfg.clusters[0];
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let builder = SetBuilder {
            connector: Connector::new(c).expect("connector"),
            pool: PoolConfig::from(&c.pool),
            outlier: c.outlier.clone(),
            balancer: c.balancer,
            seed: 1,
            health: None,
            shutdown: rx,
        };
        Endpoints::new(builder, &wanted(initial))
    }

    fn wanted(list: &[(&str, u32)]) -> Vec<(Arc<str>, u32)> {
        list.iter().map(|(a, w)| (Arc::from(*a), *w)).collect()
    }

    #[test]
    fn a_changed_answer_keeps_the_kept_and_drains_the_removed() {
        let eps = endpoints(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1)]);
        let old = eps.load();
        let kept_stats = old.stats[0].clone();
        let _busy = kept_stats.begin();
        let unchanged = eps.replace(&wanted(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1)]));
        assert_eq!(unchanged, Change::default());
        assert!(
            Arc::ptr_eq(&old, &eps.load()),
            "an unchanged answer swaps nothing"
        );

        let change = eps.replace(&wanted(&[("10.0.0.1:80", 5), ("10.0.0.3:80", 1)]));
        assert_eq!(
            change,
            Change {
                added: 1,
                removed: 1
            }
        );
        let new = eps.load();
        assert!(Arc::ptr_eq(&new.stats[0], &kept_stats), "stats kept");
        assert!(
            Arc::ptr_eq(&new.endpoints[0], &old.endpoints[0]),
            "pool kept"
        );
        assert_eq!(new.stats[0].weight(), 5, "the new weight applies");
        assert_eq!(
            new.in_flight(),
            1,
            "the kept endpoint's in-flight count goes on"
        );
        assert_eq!(
            new.stats[1].requests_total(),
            0,
            "the added one starts fresh"
        );
        // The old snapshot, which in-flight requests hold, still reaches the removed endpoint.
        assert_eq!(&*old.endpoints[1].addr, "10.0.0.2:80");
        let picks: Vec<_> = (0..4).filter_map(|_| new.pick(&[])).collect();
        assert!(picks.iter().all(|&i| i < 2), "{picks:?}");
    }

    #[test]
    fn an_empty_set_picks_nothing() {
        let eps = endpoints(&[]);
        assert_eq!(eps.load().pick(&[]), None);
        assert!(!eps.load().has_eligible(&[]));
    }
}
