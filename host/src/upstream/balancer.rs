//! Load balancers. PLACEHOLDER: round robin only; the signatures are the contract.

use super::stats::EndpointStats;
use crate::config::BalancerKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub trait Balancer: Send + Sync {
    /// Picks the index of an endpoint in `eps` for which `eligible(i)` is true, or `None` if
    /// there is none. `eligible` folds in outlier ejection and endpoints already tried by this
    /// request (retries go elsewhere).
    fn pick(&self, eps: &[Arc<EndpointStats>], eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
}

/// Builds the balancer named in the config. `seed` makes random choices reproducible in tests.
pub fn new_balancer(kind: BalancerKind, seed: u64) -> Box<dyn Balancer> {
    let _ = (kind, seed);
    Box::new(RoundRobin::default())
}

#[derive(Default)]
struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(&self, eps: &[Arc<EndpointStats>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = eps.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))
    }
}
