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
//! Fixed shares are not enough under heavy overload: the sheddable work admitted below its
//! 80 % keeps those slots, and when critical demand alone fills the limit critical requests
//! are refused while sheddable ones hold slots (measured: 40 critical and 80 sheddable
//! closed-loop clients on a limit of 40, critical succeeded 93–96 %). So the lower shares
//! *yield* (`pressure`): a refusal of a higher priority halves the shares of the priorities
//! below it (at most once per 10 ms), down to nothing; a share grows back by a twentieth per
//! 100 ms once no higher priority was refused for 500 ms.
//!
//! The limit itself is fixed, or adaptive (`gradient`): learned from the latency of the
//! answers, reported by the caller through [`Shedder::observe`].
//!
//! Decisions are immediate. Nothing queues: a queued request holds a client connection and
//! memory while it ages past its usefulness, and the client can retry elsewhere sooner. The
//! caller answers a shed request with `503`, `Retry-After` and `portcullis-error: overloaded`.
//! The same type backs the gateway-wide `[limits] max_in_flight` and each cluster's
//! `max_concurrency`.

pub(crate) mod gradient;
mod pressure;

use crate::config::{ConcurrencyLimit, Priority};
use gradient::Gradient;
use pressure::Pressure;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A concurrency limit that sheds by priority as utilisation rises.
#[derive(Debug)]
pub struct Shedder {
    limit: AtomicUsize,
    /// Admission thresholds, indexed like `Priority` (sheddable, normal, critical). Atomic so
    /// a config reload, the adaptive limit and the pressure from above can change them while
    /// the in-flight count carries on.
    caps: [AtomicUsize; 3],
    in_flight: Arc<AtomicUsize>,
    shed: [AtomicU64; 3],
    /// Read on every admission, so the fixed case pays one relaxed load and nothing else.
    adaptive: AtomicBool,
    /// After an adaptive cut, the limit before it: critical's threshold for one window.
    critical_lag: AtomicUsize,
    /// While some share is yielded: the most requests in flight since the pressure last
    /// looked, the room a share may grow back into.
    yielding: AtomicBool,
    yield_peak: AtomicUsize,
    samples: Samples,
    /// Taken with `try_lock` on refusals and at a window's end only: never waited for.
    control: Mutex<Control>,
}

/// One window's answers, summed lock-free; taken and reset at the window's end.
#[derive(Debug, Default)]
struct Samples {
    sum_us: AtomicU64,
    count: AtomicU64,
    peak_in_flight: AtomicUsize,
    /// Microseconds after `Control::born` when the current window ends.
    window_end_us: AtomicU64,
}

#[derive(Debug)]
struct Control {
    born: Instant,
    pressure: Pressure,
    gradient: Option<Gradient>,
}

/// An adaptive limit's window: long enough for a stable average at moderate rates.
const WINDOW: Duration = Duration::from_millis(100);

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

/// The admission threshold of each priority for `limit`, each share scaled by how much of
/// it the priority keeps under pressure (per mille; critical always keeps all of it). A full
/// share is at least 1; a yielded one may be 0.
fn caps(limit: usize, kept: [u32; 3]) -> [usize; 3] {
    let mut out = [0; 3];
    for (i, o) in out.iter_mut().enumerate() {
        if limit == 0 {
            continue;
        }
        let share = limit.saturating_mul(THRESHOLD_PERCENT[i]) / 100;
        *o = if kept[i] >= pressure::FULL {
            share.max(1)
        } else {
            share.saturating_mul(kept[i] as usize) / pressure::FULL as usize
        };
    }
    out
}

impl Shedder {
    pub fn new(cfg: ConcurrencyLimit) -> Self {
        let s = Shedder {
            limit: AtomicUsize::new(0),
            caps: Default::default(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            shed: Default::default(),
            adaptive: AtomicBool::new(false),
            critical_lag: AtomicUsize::new(0),
            yielding: AtomicBool::new(false),
            yield_peak: AtomicUsize::new(0),
            samples: Samples::default(),
            control: Mutex::new(Control {
                born: Instant::now(),
                pressure: Pressure::default(),
                gradient: None,
            }),
        };
        s.configure(cfg);
        s
    }

    /// Applies a config (at start and on reload); requests in flight keep counting against
    /// it. An adaptive limit that stays adaptive keeps what it learned.
    pub fn configure(&self, cfg: ConcurrencyLimit) {
        let mut c = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let limit = match cfg {
            ConcurrencyLimit::Fixed(n) => {
                c.gradient = None;
                n
            }
            ConcurrencyLimit::Adaptive(a) => {
                let g = c
                    .gradient
                    .take()
                    .map(|g| g.reconfigure(a.min, a.max, a.tolerance))
                    .unwrap_or_else(|| Gradient::new(a.min, a.max, a.tolerance));
                let l = g.limit();
                c.gradient = Some(g);
                l
            }
        };
        self.adaptive.store(c.gradient.is_some(), Ordering::Relaxed);
        self.critical_lag.store(0, Ordering::Relaxed);
        self.apply(limit, c.pressure.kept());
    }

    fn apply(&self, limit: usize, kept: [u32; 3]) {
        self.limit.store(limit, Ordering::Relaxed);
        let mut caps = caps(limit, kept);
        caps[2] = caps[2].max(self.critical_lag.load(Ordering::Relaxed));
        for (c, v) in self.caps.iter().zip(caps) {
            c.store(v, Ordering::Relaxed);
        }
    }

    /// Admits or sheds at once; never queues.
    pub fn try_acquire(&self, priority: Priority) -> Option<Permit> {
        let cap = self.caps[index(priority)].load(Ordering::Relaxed);
        match self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            }) {
            Ok(n) => {
                if self.adaptive.load(Ordering::Relaxed) {
                    self.samples
                        .peak_in_flight
                        .fetch_max(n + 1, Ordering::Relaxed);
                }
                if self.yielding.load(Ordering::Relaxed) {
                    self.yield_peak.fetch_max(n + 1, Ordering::Relaxed);
                }
                Some(Permit {
                    in_flight: self.in_flight.clone(),
                })
            }
            Err(_) => {
                self.shed[index(priority)].fetch_add(1, Ordering::Relaxed);
                self.refused(priority);
                None
            }
        }
    }

    /// A refusal moves the shares: the priorities below `p` yield, `p`'s own share may
    /// grow back. The clock is read here, on the refusal path only.
    fn refused(&self, p: Priority) {
        let Ok(mut c) = self.control.try_lock() else {
            return; // another refusal is updating the shares right now
        };
        let now = Instant::now();
        let i = index(p);
        // Room: the most in flight since the last look stayed below the next priority's whole
        // share (not what it keeps now: a priority with no traffic of its own never grows
        // back, and must not hold the ones below it down). The peak, not the count now: a
        // limit that critical work fills still has instants with a few slots free, between
        // one request's end and the next one's start.
        let room = || {
            let peak = self.yield_peak.swap(self.in_flight(), Ordering::Relaxed);
            i + 1 < THRESHOLD_PERCENT.len() && peak < self.limit() * THRESHOLD_PERCENT[i + 1] / 100
        };
        if c.pressure.refused(i, now, room) {
            let kept = c.pressure.kept();
            self.yielding
                .store(kept.iter().any(|k| *k < pressure::FULL), Ordering::Relaxed);
            self.apply(self.limit(), kept);
        }
    }

    /// Whether [`observe`](Self::observe) is worth a clock read.
    pub fn is_adaptive(&self) -> bool {
        self.adaptive.load(Ordering::Relaxed)
    }

    /// Reports one answer's latency (request sent to response head) to an adaptive limit;
    /// does nothing for a fixed one. `now` is when the answer came.
    pub fn observe(&self, latency: Duration, now: Instant) {
        if !self.is_adaptive() {
            return;
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.samples.sum_us.fetch_add(us, Ordering::Relaxed);
        let n = self.samples.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n < gradient::MIN_SAMPLES {
            return;
        }
        let Ok(mut c) = self.control.try_lock() else {
            return;
        };
        let at = u64::try_from(now.saturating_duration_since(c.born).as_micros()).unwrap_or(0);
        if at < self.samples.window_end_us.load(Ordering::Relaxed) {
            return;
        }
        self.end_window(&mut c, at);
    }

    fn end_window(&self, c: &mut Control, at_us: u64) {
        let s = &self.samples;
        let count = s.count.swap(0, Ordering::Relaxed).max(1);
        let sum = s.sum_us.swap(0, Ordering::Relaxed);
        let peak = s
            .peak_in_flight
            .swap(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        s.window_end_us
            .store(at_us + WINDOW.as_micros() as u64, Ordering::Relaxed);
        let kept = c.pressure.kept();
        if let Some(g) = c.gradient.as_mut() {
            let before = self.limit();
            let limit = g.update(sum as f64 / count as f64, peak);
            // A cut reaches critical requests one window late. The work in flight above the
            // new limit then drains through the lower priorities' refusals, instead of
            // refusing the critical requests that arrive while it does.
            self.critical_lag
                .store(if limit < before { before } else { 0 }, Ordering::Relaxed);
            self.apply(limit, kept);
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
        let s = Shedder::new(ConcurrencyLimit::Fixed(100));
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
        let s = Shedder::new(ConcurrencyLimit::Fixed(10));
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
        let s = Shedder::new(ConcurrencyLimit::Fixed(2));
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
        let s = Shedder::new(ConcurrencyLimit::Fixed(1));
        for p in [Priority::Sheddable, Priority::Normal, Priority::Critical] {
            assert_eq!(s.threshold(p), 1);
        }
        let z = Shedder::new(ConcurrencyLimit::Fixed(0));
        assert!(z.try_acquire(Priority::Critical).is_none());
    }
}
