//! A fixed-bucket, lock-free histogram; `telemetry::prom` renders it in Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds for the gateway's own overhead: fine-grained in the tens of microseconds so
/// p99.9 can be read there.
pub(crate) const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_015, 0.000_02, 0.000_025, 0.000_03, 0.000_04, 0.000_05, 0.000_06,
    0.000_075, 0.000_1, 0.000_125, 0.000_15, 0.000_2, 0.000_25, 0.000_3, 0.000_4, 0.000_5,
    0.000_75, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Bucket bounds for whole-request durations.
pub(crate) const DURATION_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Bounds in nanoseconds, so `observe` compares integers.
    bounds_ns: Box<[u64]>,
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        let idx = self.bounds_ns.partition_point(|&b| b < ns);
        self.counts[idx].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Bucket upper bounds in seconds; the `+Inf` bucket is implicit.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Cumulative bucket counts: one per bound, then the `+Inf` bucket (the total).
    pub fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().scan(0u64, |cum, c| {
            *cum += c.load(Ordering::Relaxed);
            Some(*cum)
        })
    }

    /// Sum of observed values, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_le_inclusive() {
        let h = Histogram::new(OVERHEAD_BUCKETS);
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(11));
        h.observe(Duration::from_secs(5));
        let cum: Vec<u64> = h.cumulative().collect();
        assert_eq!(cum.len(), OVERHEAD_BUCKETS.len() + 1);
        let at = |b: f64| {
            OVERHEAD_BUCKETS
                .iter()
                .position(|x| *x == b)
                .map(|i| cum[i])
        };
        assert_eq!(at(0.000_01), Some(1));
        assert_eq!(at(0.000_015), Some(2));
        assert_eq!(at(1.0), Some(2));
        assert_eq!(cum.last(), Some(&3));
        assert_eq!(h.count(), 3);
    }
}
