//! Priority load shedding: a concurrency limit that turns away low-priority work first.
//!
//! With `limit` requests allowed in flight, a request is admitted only while fewer than its
//! priority's threshold are in flight:
//!
//! | priority    | admitted while in flight < |
//! |-------------|----------------------------|
//! | `sheddable` | 80 % of the limit          |
//! | `normal`    | 95 % of the limit          |
//! | `critical`  | 100 % of the limit         |
//!
//! Thresholds round down but are at least 1, so a tiny limit still admits something. The
//! headroom above each threshold is reserved for the classes above it: when load rises,
//! sheddable work is refused while critical work still gets through.
//!
//! Decisions are immediate. Nothing queues: a queued request holds a client connection and
//! memory while it ages past its usefulness, and the client can retry elsewhere sooner. The
//! caller answers a shed request with `503`, `Retry-After` and `portcullis-error: overloaded`.
//! The same type backs the gateway-wide `[limits] max_in_flight` and each cluster's
//! `max_concurrency`.

use crate::config::Priority;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A concurrency limit that sheds by priority as utilisation rises.
#[derive(Debug)]
pub struct Shedder {
    limit: AtomicUsize,
    /// Admission thresholds, indexed like `Priority` (sheddable, normal, critical). Atomic so
    /// a config reload can change the limit while the in-flight count carries on.
    caps: [AtomicUsize; 3],
    in_flight: Arc<AtomicUsize>,
    shed: [AtomicU64; 3],
}

/// Held for the life of an admitted request.
#[derive(Debug)]
pub struct Permit {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn index(p: Priority) -> usize {
    match p {
        Priority::Sheddable => 0,
        Priority::Normal => 1,
        Priority::Critical => 2,
    }
}

/// Share of the limit each priority may fill, in percent.
pub(crate) const THRESHOLD_PERCENT: [usize; 3] = [80, 95, 100];

/// The admission threshold of each priority for `limit`.
fn caps(limit: usize) -> [usize; 3] {
    THRESHOLD_PERCENT.map(|pct| {
        if limit == 0 {
            0
        } else {
            (limit.saturating_mul(pct) / 100).max(1)
        }
    })
}

impl Shedder {
    pub fn new(limit: usize) -> Self {
        Shedder {
            limit: AtomicUsize::new(limit),
            caps: caps(limit).map(AtomicUsize::new),
            in_flight: Arc::new(AtomicUsize::new(0)),
            shed: Default::default(),
        }
    }

    /// Changes the limit (a config reload); requests in flight keep counting against it.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        for (c, v) in self.caps.iter().zip(caps(limit)) {
            c.store(v, Ordering::Relaxed);
        }
    }

    /// Admits or sheds at once; never queues.
    pub fn try_acquire(&self, priority: Priority) -> Option<Permit> {
        let cap = self.caps[index(priority)].load(Ordering::Relaxed);
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(Permit {
                in_flight: self.in_flight.clone(),
            })
        } else {
            self.shed[index(priority)].fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The in-flight count below which `p` is admitted.
    pub fn threshold(&self, p: Priority) -> usize {
        self.caps[index(p)].load(Ordering::Relaxed)
    }

    /// Requests of priority `p` refused so far.
    pub fn shed_total(&self, p: Priority) -> u64 {
        self.shed[index(p)].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(s: &Shedder, p: Priority) -> Vec<Permit> {
        std::iter::from_fn(|| s.try_acquire(p))
            .take(10_000)
            .collect()
    }

    #[test]
    fn thresholds_by_priority() {
        let s = Shedder::new(100);
        assert_eq!(s.threshold(Priority::Sheddable), 80);
        assert_eq!(s.threshold(Priority::Normal), 95);
        assert_eq!(s.threshold(Priority::Critical), 100);
        let a = fill(&s, Priority::Sheddable);
        assert_eq!(a.len(), 80);
        assert_eq!(s.shed_total(Priority::Sheddable), 1);
        let b = fill(&s, Priority::Normal);
        assert_eq!(b.len(), 15);
        let c = fill(&s, Priority::Critical);
        assert_eq!(c.len(), 5);
        assert_eq!(s.in_flight(), 100);
        for p in [Priority::Sheddable, Priority::Normal, Priority::Critical] {
            assert!(s.try_acquire(p).is_none());
        }
        assert_eq!(s.shed_total(Priority::Sheddable), 2);
        assert_eq!(s.shed_total(Priority::Normal), 2);
        assert_eq!(s.shed_total(Priority::Critical), 2);
    }

    #[test]
    fn critical_is_admitted_where_sheddable_is_not() {
        let s = Shedder::new(10);
        let _held = fill(&s, Priority::Normal); // 9
        assert!(s.try_acquire(Priority::Sheddable).is_none());
        assert!(s.try_acquire(Priority::Normal).is_none());
        let c = s.try_acquire(Priority::Critical);
        assert!(c.is_some());
        assert!(
            s.try_acquire(Priority::Critical).is_none(),
            "never past the limit"
        );
    }

    #[test]
    fn permits_return_capacity() {
        let s = Shedder::new(2);
        let a = s.try_acquire(Priority::Critical).expect("first");
        let _b = s.try_acquire(Priority::Critical).expect("second");
        assert!(s.try_acquire(Priority::Critical).is_none());
        drop(a);
        assert_eq!(s.in_flight(), 1);
        assert!(s.try_acquire(Priority::Critical).is_some());
        // A shed attempt leaves no trace in the count.
        assert_eq!(s.in_flight(), 1);
    }

    #[test]
    fn tiny_limits_still_admit_every_class() {
        let s = Shedder::new(1);
        for p in [Priority::Sheddable, Priority::Normal, Priority::Critical] {
            assert_eq!(s.threshold(p), 1);
        }
        let z = Shedder::new(0);
        assert!(z.try_acquire(Priority::Critical).is_none());
    }
}
