//! Per-endpoint live statistics, shared lock-free by balancers, outlier detection and metrics.
//! PLACEHOLDER: the resilience work replaces the internals; the signatures are the contract.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct EndpointStats {
    weight: u32,
    in_flight: AtomicUsize,
}

/// How one request to an endpoint ended, as the balancer and outlier detector see it.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Time from dispatch to response head (or to the failure).
    pub latency: Duration,
    /// Connect failure, reset, timeout, or a 5xx the cluster counts as failure.
    pub failed: bool,
}

impl EndpointStats {
    pub fn new(weight: u32) -> Self {
        EndpointStats {
            weight,
            in_flight: AtomicUsize::new(0),
        }
    }
    pub fn weight(&self) -> u32 {
        self.weight
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// Marks a request as started; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats: self.clone(),
            done: false,
        }
    }
    fn finish(&self, _outcome: Outcome) {}
}

/// One request in flight to an endpoint. Dropping it without `finish` (client went away)
/// decrements in-flight without recording an outcome.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<EndpointStats>,
    done: bool,
}

impl InFlight {
    pub fn finish(mut self, outcome: Outcome) {
        self.stats.finish(outcome);
        self.done = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let _ = self.done;
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EndpointStats {
    /// PLACEHOLDER until the resilience work lands.
    pub fn failure_rate(&self) -> f64 {
        0.0
    }
    /// PLACEHOLDER until the resilience work lands.
    pub fn peak_ewma_latency(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}
