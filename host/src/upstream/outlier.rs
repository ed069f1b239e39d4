//! Passive outlier detection: endpoints that fail `consecutive_failures` times in a row are
//! ejected (taken out of balancing) for a while, with exponential backoff.
//!
//! - The n-th ejection in a row lasts `base_ejection_ms × 2^(n-1)`, capped at
//!   `max_ejection_ms`.
//! - When the ejection ends the endpoint is available again, on probation: its next outcome
//!   decides. A failure ejects it again at once with the doubled time (a breaker's half-open
//!   probe, as in linkerd); a success ends probation and resets the backoff.
//! - A success always resets the consecutive-failure count.
//! - At most `max_ejected_percent` of the cluster (rounded down, but at least one endpoint if
//!   the percent is non-zero) is ejected at once, and the last endpoint not ejected never is:
//!   sending to a bad endpoint beats answering 503 for a whole cluster. `0` turns ejection off.
//!
//! The hot-path read (`is_available`) is one atomic load; failures and successes take a small
//! per-cluster mutex, since ejection must see the whole cluster to respect the limits.

use super::stats::millis;
use crate::config;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, Copy)]
struct State {
    consecutive: u32,
    /// Ejections in a row without a success in between; sets the backoff.
    streak: u32,
    /// Back from an ejection and not yet answered successfully.
    probation: bool,
}

pub struct OutlierDetector {
    consecutive_failures: u32,
    base: Duration,
    max: Duration,
    /// Most endpoints ejected at once.
    max_ejected: usize,
    /// Per endpoint: ejected until this [`millis`] time; 0 when never ejected.
    until: Vec<AtomicU64>,
    ejections: Vec<AtomicU64>,
    state: Mutex<Vec<State>>,
}

impl OutlierDetector {
    pub fn new(cfg: &config::Outlier, endpoints: usize) -> Self {
        let pct = cfg.max_ejected_percent.min(100) as usize;
        let max_ejected = if pct == 0 {
            0
        } else {
            (endpoints * pct / 100).max(1)
        };
        OutlierDetector {
            consecutive_failures: cfg.consecutive_failures.max(1),
            base: Duration::from_millis(cfg.base_ejection_ms),
            max: Duration::from_millis(cfg.max_ejection_ms.max(cfg.base_ejection_ms)),
            max_ejected,
            until: (0..endpoints).map(|_| AtomicU64::new(0)).collect(),
            ejections: (0..endpoints).map(|_| AtomicU64::new(0)).collect(),
            state: Mutex::new(vec![State::default(); endpoints]),
        }
    }

    /// A detector for a changed endpoint set that keeps what `old` knew of the endpoints kept:
    /// `from[i]` is endpoint `i`'s index in the old set, `None` for a new endpoint (which
    /// starts clean). An ejected endpoint stays ejected, its backoff and counts go on.
    pub fn carried(cfg: &config::Outlier, old: &OutlierDetector, from: &[Option<usize>]) -> Self {
        let new = OutlierDetector::new(cfg, from.len());
        {
            let old_state = old.state.lock();
            let mut st = new.state.lock();
            for (i, o) in from.iter().enumerate() {
                let Some(o) = *o else { continue };
                let (Some(u), Some(e), Some(s)) =
                    (old.until.get(o), old.ejections.get(o), old_state.get(o))
                else {
                    continue;
                };
                new.until[i].store(u.load(Ordering::Acquire), Ordering::Release);
                new.ejections[i].store(e.load(Ordering::Relaxed), Ordering::Relaxed);
                st[i] = *s;
            }
        }
        new
    }

    /// False while endpoint `i` is ejected.
    pub fn is_available(&self, i: usize, now: Instant) -> bool {
        self.until
            .get(i)
            .is_none_or(|u| u.load(Ordering::Acquire) <= millis(now))
    }

    pub fn on_success(&self, i: usize) {
        let mut st = self.state.lock();
        if let Some(s) = st.get_mut(i) {
            *s = State::default();
        }
    }

    /// Records a failure; may eject `i` (never past the max share, never the last endpoint).
    pub fn on_failure(&self, i: usize, now: Instant) {
        let mut st = self.state.lock();
        let Some(s) = st.get_mut(i) else { return };
        s.consecutive = s.consecutive.saturating_add(1);
        if !self.is_available(i, now) {
            // Already out: a request that started before the ejection finished late.
            return;
        }
        if !s.probation && s.consecutive < self.consecutive_failures {
            return;
        }
        let ejected = (0..self.until.len())
            .filter(|&j| !self.is_available(j, now))
            .count();
        let available = self.until.len() - ejected;
        if ejected >= self.max_ejected || available <= 1 {
            return;
        }
        let s = &mut st[i];
        let doublings = s.streak.min(30);
        let len = self
            .base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max);
        s.streak = s.streak.saturating_add(1);
        s.consecutive = 0;
        s.probation = true;
        self.until[i].store(millis(now + len), Ordering::Release);
        self.ejections[i].fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            endpoint = i,
            ejection_ms = len.as_millis() as u64,
            "outlier ejected"
        );
    }

    pub fn ejections_total(&self, i: usize) -> u64 {
        self.ejections
            .get(i)
            .map_or(0, |e| e.load(Ordering::Relaxed))
    }

    /// Ejections across the cluster.
    pub fn ejections_sum(&self) -> u64 {
        self.ejections
            .iter()
            .map(|e| e.load(Ordering::Relaxed))
            .sum()
    }

    pub fn is_ejected(&self, i: usize, now: Instant) -> bool {
        !self.is_available(i, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: u32, pct: u32) -> config::Outlier {
        config::Outlier {
            consecutive_failures: n,
            eject_on_5xx: false,
            base_ejection_ms: 1_000,
            max_ejection_ms: 5_000,
            max_ejected_percent: pct,
        }
    }
    fn fail(d: &OutlierDetector, i: usize, times: u32, now: Instant) {
        for _ in 0..times {
            d.on_failure(i, now);
        }
    }
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn consecutive_failures_eject_and_success_resets_the_count() {
        let d = OutlierDetector::new(&cfg(3, 50), 4);
        let t = Instant::now();
        fail(&d, 0, 2, t);
        d.on_success(0);
        fail(&d, 0, 2, t);
        assert!(
            d.is_available(0, t),
            "a success in between resets the count"
        );
        d.on_failure(0, t);
        assert!(d.is_ejected(0, t));
        assert_eq!(d.ejections_total(0), 1);
        assert!(d.is_available(1, t));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_the_endpoint_returns() {
        let d = OutlierDetector::new(&cfg(2, 50), 4);
        let mut t = Instant::now();
        fail(&d, 0, 2, t);
        for expect in [1u64, 2, 4, 5, 5] {
            let len = Duration::from_secs(expect);
            assert!(d.is_ejected(0, t + len - Duration::from_millis(10)));
            t += len + Duration::from_millis(1);
            assert!(d.is_available(0, t), "back after {expect} s");
            // On probation: one failure re-ejects at once, for twice as long.
            d.on_failure(0, t);
        }
        assert_eq!(d.ejections_total(0), 6);
    }

    #[test]
    fn a_success_after_return_resets_the_backoff() {
        let d = OutlierDetector::new(&cfg(2, 50), 4);
        let t = Instant::now();
        fail(&d, 0, 2, t);
        let t = t + 2 * S;
        assert!(d.is_available(0, t));
        d.on_success(0);
        d.on_failure(0, t);
        assert!(
            d.is_available(0, t),
            "off probation: one failure is not enough"
        );
        d.on_failure(0, t);
        assert!(d.is_ejected(0, t));
        assert!(
            d.is_available(0, t + S + Duration::from_millis(1)),
            "back to the base ejection time"
        );
    }

    #[test]
    fn at_most_max_ejected_percent_at_once() {
        let d = OutlierDetector::new(&cfg(1, 50), 4);
        let t = Instant::now();
        for i in 0..4 {
            d.on_failure(i, t);
        }
        let out = (0..4).filter(|&i| d.is_ejected(i, t)).count();
        assert_eq!(out, 2, "50 % of 4");
        // Once one returns, another may go.
        let t2 = t + S + Duration::from_millis(1);
        d.on_failure(2, t2);
        assert!(d.is_ejected(2, t2));
    }

    #[test]
    fn a_changed_set_keeps_the_kept_endpoints_state() {
        let old = OutlierDetector::new(&cfg(1, 50), 4);
        let t = Instant::now();
        old.on_failure(2, t);
        assert!(old.is_ejected(2, t));
        // Old 2 is new 0; new 1 is an added endpoint.
        let new = OutlierDetector::carried(&cfg(1, 50), &old, &[Some(2), None]);
        assert!(new.is_ejected(0, t), "still ejected");
        assert_eq!(new.ejections_total(0), 1);
        assert!(new.is_available(1, t));
        assert_eq!(new.ejections_total(1), 0);
    }

    #[test]
    fn never_the_last_endpoint_and_at_least_one_ejectable() {
        let t = Instant::now();
        let one = OutlierDetector::new(&cfg(1, 100), 1);
        fail(&one, 0, 10, t);
        assert!(one.is_available(0, t), "a single endpoint is never ejected");

        let two = OutlierDetector::new(&cfg(1, 100), 2);
        fail(&two, 0, 1, t);
        fail(&two, 1, 1, t);
        assert!(two.is_ejected(0, t));
        assert!(two.is_available(1, t), "the last available endpoint stays");

        let small = OutlierDetector::new(&cfg(1, 10), 3);
        fail(&small, 0, 1, t);
        assert!(
            small.is_ejected(0, t),
            "10 % of 3 rounds up to one endpoint"
        );

        let off = OutlierDetector::new(&cfg(1, 0), 3);
        fail(&off, 0, 5, t);
        assert!(off.is_available(0, t), "0 % disables ejection");
        assert_eq!(off.ejections_sum(), 0);
    }
}
