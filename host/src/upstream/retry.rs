//! Retry budget per cluster, and retry counters by reason.
//!
//! Retries in flight may not exceed `max(min_concurrency, percent% of active requests)`.
//! Retries multiply load exactly when an upstream is struggling; the budget caps that
//! amplification at `percent` while `min_concurrency` keeps retries possible at low traffic.
//! A permit is held until the request ends and gives its slot back on drop, so the budget
//! counts retries *in flight*, not a rate.

use crate::config;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a request was retried (the `reason` label of `portcullis_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connection could not be opened.
    ConnectFailed,
    /// The upstream closed or reset the connection before answering.
    Reset,
    /// The upstream answered a status listed in the route's `retry.on_status`.
    Status,
    /// An attempt waited its route's `retry.per_try_timeout_ms` for a response head.
    PerTryTimeout,
    /// A hedge: a second attempt raced against a first one past `per_try_timeout_ms`.
    Hedge,
}

impl RetryReason {
    pub const ALL: [RetryReason; 5] = [
        RetryReason::ConnectFailed,
        RetryReason::Reset,
        RetryReason::Status,
        RetryReason::PerTryTimeout,
        RetryReason::Hedge,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::ConnectFailed => "connect_failed",
            RetryReason::Reset => "reset",
            RetryReason::Status => "status",
            RetryReason::PerTryTimeout => "per_try_timeout",
            RetryReason::Hedge => "hedge",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

pub struct RetryBudget {
    percent: usize,
    min_concurrency: usize,
    in_flight: Arc<AtomicUsize>,
    exhausted: AtomicU64,
    retries: [AtomicU64; RetryReason::ALL.len()],
}

/// Held while a retry is in flight; dropping it returns the budget.
#[derive(Debug)]
pub struct RetryPermit {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RetryBudget {
    pub fn new(cfg: &config::RetryBudget) -> Self {
        RetryBudget {
            percent: cfg.percent as usize,
            min_concurrency: cfg.min_concurrency as usize,
            in_flight: Arc::new(AtomicUsize::new(0)),
            exhausted: AtomicU64::new(0),
            retries: Default::default(),
        }
    }

    /// Retries allowed in flight when the cluster has `active` requests in flight.
    pub fn limit(&self, active: usize) -> usize {
        (active.saturating_mul(self.percent) / 100).max(self.min_concurrency)
    }

    /// `active` is the cluster's current in-flight request count.
    pub fn try_acquire(&self, active: usize) -> Option<RetryPermit> {
        let limit = self.limit(active);
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(RetryPermit {
                in_flight: self.in_flight.clone(),
            })
        } else {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Retries refused because the budget was spent.
    pub fn exhausted_total(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Retries holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a retry that went ahead.
    pub fn record_retry(&self, why: RetryReason) {
        self.retries[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn retries_total(&self, why: RetryReason) -> u64 {
        self.retries[why.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(percent: u32, min_concurrency: u32) -> RetryBudget {
        RetryBudget::new(&config::RetryBudget {
            percent,
            min_concurrency,
        })
    }

    #[test]
    fn min_concurrency_applies_at_low_traffic() {
        let b = budget(20, 3);
        let held: Vec<_> = (0..3)
            .map(|_| b.try_acquire(1).expect("within min"))
            .collect();
        assert!(b.try_acquire(1).is_none());
        assert_eq!(b.exhausted_total(), 1);
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn percent_of_active_applies_at_high_traffic() {
        let b = budget(20, 3);
        assert_eq!(b.limit(100), 20);
        let held: Vec<_> = (0..20).filter_map(|_| b.try_acquire(100)).collect();
        assert_eq!(held.len(), 20);
        assert!(b.try_acquire(100).is_none());
        assert_eq!(b.in_flight(), 20);
    }

    #[test]
    fn dropping_a_permit_returns_the_budget() {
        let b = budget(0, 1);
        let p = b.try_acquire(0).expect("one allowed");
        assert!(b.try_acquire(0).is_none());
        drop(p);
        assert_eq!(b.in_flight(), 0);
        assert!(b.try_acquire(0).is_some());
        assert_eq!(b.exhausted_total(), 1);
    }

    #[test]
    fn zero_budget_never_retries() {
        let b = budget(0, 0);
        assert!(b.try_acquire(1000).is_none());
        assert_eq!(b.exhausted_total(), 1);
    }

    #[test]
    fn retries_are_counted_by_reason() {
        let b = budget(20, 3);
        b.record_retry(RetryReason::Reset);
        b.record_retry(RetryReason::Reset);
        b.record_retry(RetryReason::Status);
        assert_eq!(b.retries_total(RetryReason::Reset), 2);
        assert_eq!(b.retries_total(RetryReason::Status), 1);
        assert_eq!(b.retries_total(RetryReason::ConnectFailed), 0);
    }
}
