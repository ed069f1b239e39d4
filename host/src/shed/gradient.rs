//! The adaptive concurrency limit: how many requests a backend can take at once, learned
//! from its latency instead of set by hand.
//!
//! Each window (100 ms and at least `MIN_SAMPLES` answers) gives one sample, the window's
//! average latency. The *baseline* is the lowest window average of the last
//! `BASELINE_WINDOWS` (30 s): what the backend answers in when nothing queues. Then, as
//! Envoy's adaptive concurrency filter and Netflix's Gradient limiters do:
//!
//! ```text
//! gradient  = clamp(tolerance × baseline / average, 0.5, 1.0)
//! new limit = limit × gradient + √limit      (√limit: room for the queue to show itself)
//! limit     = 0.8 × limit + 0.2 × new limit, within [min, max]
//! ```
//!
//! While the average stays within `tolerance` of the baseline the limit grows by √limit per
//! window (doubling per window until the first cut, like TCP's slow start), but only while the
//! traffic used at least half of it: an idle cluster teaches nothing. Once the backend queues,
//! the average rises and the limit is cut, up to halved per window. It settles where the
//! backend's queue is about `tolerance` − 1 of its capacity: in a model with capacity C
//! (servers × 1 / latency) the limit settles near 1.25 C with the default tolerance 1.2, and
//! follows C down when it halves (`tests` below, and `tests/tests/adaptive.rs` end to end).
//!
//! Why a windowed minimum rather than the long-term average Gradient2 uses: with a long-term
//! average the baseline follows the queue up, and the limit drifts up without end under
//! sustained overload (simulated: 50 → 80 in 4 s after the capacity halved). A minimum
//! drifts too, only slower: once a busy backend has been queued at the settled limit for a
//! whole horizon, no uncongested window is left in it. So every `PROBE_EVERY` windows
//! (about 10 s, staggered) the limit is *probed*: halved for two windows, the first to drain
//! the queue and the second to measure the latency without one, then restored (Envoy pins
//! the limit to its minimum for this; half is gentler). About 2 % of the time runs at half
//! the limit, which costs a saturated backend ~1 % of its throughput.
//!
//! One case a minimum gets wrong: a backend whose own latency rises (a slower dependency,
//! not a queue) looks congested, and the limit is cut. If it is cut to half of where the
//! cutting began and the average did not fall by a fifth, the latency is not a queue: the
//! baseline is re-learned from the current average.

use std::collections::VecDeque;

/// Answers a window needs before it counts: fewer give a noisy average.
pub(crate) const MIN_SAMPLES: u64 = 10;
/// Windows whose averages the baseline is the minimum of (30 s of 100 ms windows): three
/// probes' worth.
const BASELINE_WINDOWS: usize = 300;
/// Windows between probes (about 10 s).
const PROBE_EVERY: u32 = 100;
/// The share of the new limit taken each window.
const SMOOTHING: f64 = 0.2;

/// The limit's state between windows; one per adaptive limit, updated once per window.
#[derive(Debug)]
pub(crate) struct Gradient {
    min: f64,
    max: f64,
    tolerance: f64,
    limit: f64,
    averages: VecDeque<f64>,
    /// Doubling until the first cut.
    slow_start: bool,
    /// Where the current run of cuts began: (limit, average) then.
    cutting_from: Option<(f64, f64)>,
    /// Windows since the last probe, and the limit a probe in progress restores with the
    /// windows it has left.
    since_probe: u32,
    probe: Option<(f64, u8)>,
}

impl Gradient {
    pub(crate) fn new(min: usize, max: usize, tolerance: f64) -> Self {
        Gradient {
            min: min as f64,
            max: max as f64,
            tolerance,
            limit: min as f64,
            averages: VecDeque::with_capacity(BASELINE_WINDOWS),
            slow_start: true,
            cutting_from: None,
            // Staggered by the bounds, so limits made at once do not probe in step.
            since_probe: ((min * 31 + max * 17) % PROBE_EVERY as usize) as u32,
            probe: None,
        }
    }

    /// The same state under a reloaded config: what was learned is kept, within the new
    /// bounds.
    pub(crate) fn reconfigure(mut self, min: usize, max: usize, tolerance: f64) -> Self {
        self.min = min as f64;
        self.max = max as f64;
        self.tolerance = tolerance;
        self.limit = self.limit.clamp(self.min, self.max);
        self.probe = None;
        self
    }

    /// The limit in force: halved while a probe runs.
    pub(crate) fn limit(&self) -> usize {
        match self.probe {
            Some((restore, _)) => (restore / 2.0).max(self.min) as usize,
            None => self.limit as usize,
        }
    }

    /// The lowest recent window average, the latency with no queue.
    pub(crate) fn baseline(&self) -> Option<f64> {
        self.averages.iter().copied().reduce(f64::min)
    }

    /// One window: its average latency (any unit) and the most requests it had in flight.
    /// Returns the new limit.
    pub(crate) fn update(&mut self, average: f64, peak_in_flight: usize) -> usize {
        if !(average.is_finite() && average > 0.0) {
            return self.limit();
        }
        if let Some(done) = self.probing(average) {
            return done;
        }
        self.remember(average);
        let baseline = self.baseline().unwrap_or(average);
        let mut gradient = (self.tolerance * baseline / average).clamp(0.5, 1.0);
        let new = if gradient < 1.0 {
            self.slow_start = false;
            if self.relearn_if_not_a_queue(average) {
                gradient = 1.0;
            }
            self.limit * gradient + self.limit.sqrt()
        } else {
            self.cutting_from = None;
            if (peak_in_flight as f64) < self.limit / 2.0 {
                self.limit
            } else if self.slow_start {
                self.limit * 2.0
            } else {
                self.limit + self.limit.sqrt()
            }
        };
        self.limit = ((1.0 - SMOOTHING) * self.limit + SMOOTHING * new).clamp(self.min, self.max);
        self.since_probe += 1;
        if self.since_probe >= PROBE_EVERY && !self.slow_start {
            self.since_probe = 0;
            self.probe = Some((self.limit, 2));
        }
        self.limit()
    }

    fn remember(&mut self, average: f64) {
        if self.averages.len() == BASELINE_WINDOWS {
            self.averages.pop_front();
        }
        self.averages.push_back(average);
    }

    /// A probe's window: the first drains the queue (its average is not kept), the second is
    /// the measurement; then the limit from before the probe returns. `None`: no probe.
    fn probing(&mut self, average: f64) -> Option<usize> {
        let (restore, left) = self.probe?;
        if left > 1 {
            self.probe = Some((restore, left - 1));
            return Some(self.limit());
        }
        self.remember(average);
        self.probe = None;
        self.limit = restore;
        Some(self.limit())
    }

    /// During a run of cuts: when the limit has halved since the run began and the average did
    /// not follow, the backend got slower rather than queued. Forget the old baseline.
    fn relearn_if_not_a_queue(&mut self, average: f64) -> bool {
        let Some((limit0, average0)) = self.cutting_from else {
            self.cutting_from = Some((self.limit, average));
            return false;
        };
        if self.limit <= limit0 / 2.0 && average >= 0.8 * average0 {
            self.averages.clear();
            self.averages.push_back(average);
            self.cutting_from = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend of `servers` each taking `service` ms, FIFO queue in front, fed `limit`
    /// requests at a time by clients that always have more: each window's average latency
    /// is what Little's law gives, the queue's share on top of the service time.
    fn window_latency(limit: usize, servers: usize, service: f64) -> f64 {
        if limit <= servers {
            service
        } else {
            service * limit as f64 / servers as f64
        }
    }

    fn run(g: &mut Gradient, windows: usize, servers: usize, service: f64) -> Vec<usize> {
        (0..windows)
            .map(|_| {
                let l = g.limit();
                g.update(window_latency(l, servers, service), l)
            })
            .collect()
    }

    #[test]
    fn finds_the_capacity_and_follows_it_down() {
        let mut g = Gradient::new(8, 1024, 1.2);
        let up = run(&mut g, 100, 40, 20.0);
        let settled = *up.last().unwrap();
        assert!(
            (40..=60).contains(&settled),
            "settles a little above 40 servers: {up:?}"
        );
        let down = run(&mut g, 100, 20, 20.0);
        let settled = *down.last().unwrap();
        assert!(
            (20..=30).contains(&settled),
            "follows the capacity down to ~20: {down:?}"
        );
        let back = run(&mut g, 200, 40, 20.0);
        assert!(
            (40..=60).contains(back.last().unwrap()),
            "and back up: {back:?}"
        );
    }

    #[test]
    fn probes_keep_the_baseline_under_sustained_overload() {
        let mut g = Gradient::new(8, 1024, 1.2);
        // Two minutes at a capacity of 40: six baseline horizons, no drift.
        let all = run(&mut g, 1200, 40, 20.0);
        let late = &all[600..];
        assert!(
            late.iter().all(|l| (20..=60).contains(l)),
            "stays near 40 (probes halve it briefly): {late:?}"
        );
        let probes = late.iter().filter(|l| **l < 35).count();
        assert!(
            (6..=20).contains(&probes),
            "a probe about every 100 windows, 2 windows each: {probes}"
        );
    }

    #[test]
    fn a_slower_backend_is_relearned_not_starved() {
        let mut g = Gradient::new(8, 1024, 1.2);
        run(&mut g, 100, 40, 20.0);
        // Same servers, twice the service time: no queue, a new baseline.
        let after = run(&mut g, 150, 40, 40.0);
        assert!(
            (40..=60).contains(after.last().unwrap()),
            "back near the capacity once relearned: {after:?}"
        );
    }

    #[test]
    fn an_idle_cluster_does_not_grow_and_bounds_hold() {
        let mut g = Gradient::new(8, 64, 1.2);
        for _ in 0..100 {
            g.update(5.0, 1);
        }
        assert_eq!(g.limit(), 8, "nothing used more than one slot");
        run(&mut g, 200, 1000, 5.0);
        assert_eq!(g.limit(), 64, "capped at max");
        let down = run(&mut g, 400, 1, 5.0);
        assert!(
            down.iter().all(|l| *l >= 8),
            "never below min, probes included: {down:?}"
        );
        assert!(
            g.limit() <= 16,
            "a backend of one worker: near min: {down:?}"
        );
        let now = g.limit();
        assert_eq!(
            g.update(f64::NAN, 8),
            now,
            "a window without a usable average changes nothing"
        );
        assert_eq!(g.update(0.0, 8), now);
    }
}
