//! Per-endpoint live statistics, shared by balancers, outlier detection and metrics.
//!
//! Two estimates matter to the balancers, and both decay with *time*, not with request count,
//! so they mean the same thing at 10 req/s and at 10 000 req/s:
//!
//! - **Failure rate**: the time-weighted share of failed outcomes, each outcome weighted by
//!   `exp(-age / 60 s)`. Kept as two decayed sums (failures and outcomes) whose ratio is the
//!   rate; both decay alike, so the ratio needs no correction at read time. A few pseudo
//!   successes ([`FAILURE_PRIOR`]) keep one early failure from reading as "100 % failing".
//! - **Peak-EWMA latency** (Finagle/linkerd style): a slower sample raises the estimate to it at
//!   once; faster samples pull it down with a 10 s time constant, and with no samples it decays
//!   towards zero, so a once-slow endpoint is eventually tried again. A failed outcome counts as
//!   at least [`FAILURE_LATENCY_PENALTY`]: a fast failure is not a fast answer, and without the
//!   penalty a latency-driven balancer would pour traffic into an endpoint that fails instantly.
//!
//! The in-flight count is an atomic; the estimates share one small `parking_lot` mutex per
//! endpoint, held for a few float operations.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Time constant of the failure-rate average: the seed's "last minute or two".
pub(crate) const FAILURE_TAU: Duration = Duration::from_secs(60);
/// Time constant with which the peak-EWMA latency falls after a peak.
pub(crate) const LATENCY_TAU: Duration = Duration::from_secs(10);
/// Pseudo-successes added to the failure-rate denominator (see the module doc).
pub(crate) const FAILURE_PRIOR: f64 = 5.0;
/// The least latency a failed outcome is recorded with in the peak-EWMA estimate.
pub(crate) const FAILURE_LATENCY_PENALTY: Duration = Duration::from_millis(250);

/// A process-wide origin for timestamps kept in atomics as milliseconds.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `t` as milliseconds since [`epoch`], at least 1 so that 0 can mean "never".
pub(crate) fn millis(t: Instant) -> u64 {
    (t.saturating_duration_since(epoch()).as_millis() as u64).max(1)
}

#[derive(Debug)]
struct Estimates {
    /// Decayed sum of failures and of all outcomes, as of `failures_at`.
    failures: f64,
    outcomes: f64,
    failures_at: Option<Instant>,
    /// Peak-EWMA latency in seconds as of `latency_at`; `None` until the first sample.
    latency: f64,
    latency_at: Option<Instant>,
}

#[derive(Debug)]
pub struct EndpointStats {
    /// Set anew when a DNS answer (SRV) changes a kept endpoint's weight.
    weight: AtomicU32,
    in_flight: AtomicUsize,
    /// Last time a request started here ([`millis`]), 0 if never. Balancers use it to pace
    /// probes of endpoints they otherwise avoid.
    last_start: AtomicU64,
    requests: AtomicU64,
    failures_total: AtomicU64,
    est: Mutex<Estimates>,
}

/// How one request to an endpoint ended, as the balancer and outlier detector see it.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Time from dispatch to response head (or to the failure).
    pub latency: Duration,
    /// Connect failure, reset, timeout, or an upstream 5xx.
    pub failed: bool,
}

impl EndpointStats {
    pub fn new(weight: u32) -> Self {
        EndpointStats {
            weight: AtomicU32::new(weight),
            in_flight: AtomicUsize::new(0),
            last_start: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures_total: AtomicU64::new(0),
            est: Mutex::new(Estimates {
                failures: 0.0,
                outcomes: 0.0,
                failures_at: None,
                latency: 0.0,
                latency_at: None,
            }),
        }
    }
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }
    pub fn set_weight(&self, w: u32) {
        self.weight.store(w, Ordering::Relaxed);
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// Marks a request as started; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.begin_at(Instant::now())
    }

    /// `begin` with the caller's clock reading (the request path reads the clock once per
    /// step, not once per bookkeeping call).
    pub fn begin_at(self: &Arc<Self>, now: Instant) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.last_start.store(millis(now), Ordering::Relaxed);
        InFlight {
            stats: self.clone(),
        }
    }

    /// Records a finished request's outcome at `now` (exposed for tests and tools; the request
    /// path records through [`InFlight::finish`]).
    pub fn record(&self, outcome: Outcome, now: Instant) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if outcome.failed {
            self.failures_total.fetch_add(1, Ordering::Relaxed);
        }
        let mut e = self.est.lock();
        let w = decay(e.failures_at, now, FAILURE_TAU);
        e.failures = e.failures * w + f64::from(u8::from(outcome.failed));
        e.outcomes = e.outcomes * w + 1.0;
        e.failures_at = Some(now);

        let sample = if outcome.failed {
            outcome.latency.max(FAILURE_LATENCY_PENALTY)
        } else {
            outcome.latency
        }
        .as_secs_f64();
        e.latency = match e.latency_at {
            None => sample,
            Some(_) => {
                let w = decay(e.latency_at, now, LATENCY_TAU);
                let decayed = e.latency * w;
                if sample > decayed {
                    sample
                } else {
                    decayed + sample * (1.0 - w)
                }
            }
        };
        e.latency_at = Some(now);
    }

    /// Time-weighted share of failed outcomes over about the last minute, in `0.0..1.0`.
    pub fn failure_rate(&self) -> f64 {
        let e = self.est.lock();
        e.failures / (e.outcomes + FAILURE_PRIOR)
    }

    /// Peak-EWMA latency as of now; zero before the first sample.
    pub fn peak_ewma_latency(&self) -> Duration {
        self.peak_ewma_latency_at(Instant::now())
            .unwrap_or(Duration::ZERO)
    }

    /// Peak-EWMA latency as of `now`, decayed since the last sample; `None` if never sampled.
    pub fn peak_ewma_latency_at(&self, now: Instant) -> Option<Duration> {
        let e = self.est.lock();
        let at = e.latency_at?;
        let v = e.latency * decay(Some(at), now, LATENCY_TAU);
        Some(Duration::from_secs_f64(v.max(0.0)))
    }

    /// Outcomes recorded (requests that got an answer or failed upstream).
    pub fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn failures_total(&self) -> u64 {
        self.failures_total.load(Ordering::Relaxed)
    }

    /// When a request last started here, or `None` if none ever did.
    pub(crate) fn last_start_millis(&self) -> u64 {
        self.last_start.load(Ordering::Relaxed)
    }

    /// Claims the right to start a probe: succeeds for one caller only when nothing is in
    /// flight and no request started here since `seen` (a value of `last_start_millis`).
    pub(crate) fn claim_probe(&self, seen: u64, now: Instant) -> bool {
        self.in_flight() == 0
            && self
                .last_start
                .compare_exchange(seen, millis(now), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

/// The weight `exp(-elapsed / tau)` an old value keeps at `now`.
fn decay(since: Option<Instant>, now: Instant, tau: Duration) -> f64 {
    match since {
        Some(t) => (-now.saturating_duration_since(t).as_secs_f64() / tau.as_secs_f64()).exp(),
        None => 1.0,
    }
}

/// One request in flight to an endpoint. Dropping it without `finish` (client went away)
/// decrements in-flight without recording an outcome: a client's impatience says nothing
/// about the endpoint.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<EndpointStats>,
}

impl InFlight {
    pub fn finish(self, outcome: Outcome) {
        self.stats.record(outcome, Instant::now());
    }

    /// `finish` with the caller's clock reading.
    pub fn finish_at(self, outcome: Outcome, now: Instant) {
        self.stats.record(outcome, now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> Outcome {
        Outcome {
            latency: Duration::from_millis(ms),
            failed: false,
        }
    }
    fn fail(ms: u64) -> Outcome {
        Outcome {
            latency: Duration::from_millis(ms),
            failed: true,
        }
    }

    #[test]
    fn in_flight_counts_guards() {
        let s = Arc::new(EndpointStats::new(1));
        let a = s.begin();
        let b = s.begin();
        assert_eq!(s.in_flight(), 2);
        a.finish(ok(1));
        drop(b);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.requests_total(), 1, "a dropped guard records no outcome");
    }

    #[test]
    fn failure_rate_is_time_weighted() {
        let s = EndpointStats::new(1);
        let t0 = Instant::now();
        for i in 0..100 {
            s.record(fail(1), t0 + Duration::from_millis(i));
        }
        let r = s.failure_rate();
        assert!(r > 0.9, "all failing reads near 1: {r}");
        // A minute of successes at 10/s: the old failures have decayed to e^-1 and are
        // outweighed.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..600 {
            s.record(ok(1), t1 + Duration::from_millis(100 * i));
        }
        let r2 = s.failure_rate();
        assert!(r2 < 0.15, "recovered: {r2}");
        assert_eq!(s.failures_total(), 100);
    }

    #[test]
    fn one_early_failure_is_not_total_failure() {
        let s = EndpointStats::new(1);
        s.record(fail(1), Instant::now());
        assert!(s.failure_rate() < 0.2);
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let s = EndpointStats::new(1);
        let t0 = Instant::now();
        assert_eq!(s.peak_ewma_latency_at(t0), None);
        s.record(ok(10), t0);
        s.record(ok(300), t0 + Duration::from_millis(10));
        let p = s
            .peak_ewma_latency_at(t0 + Duration::from_millis(10))
            .unwrap();
        assert!(p >= Duration::from_millis(299), "peak taken at once: {p:?}");
        // Ten seconds (one time constant) of fast answers pull it down past e^-1.
        let mut t = t0 + Duration::from_millis(10);
        for _ in 0..100 {
            t += Duration::from_millis(100);
            s.record(ok(10), t);
        }
        let p = s.peak_ewma_latency_at(t).unwrap();
        assert!(p < Duration::from_millis(130), "decayed: {p:?}");
        assert!(p > Duration::from_millis(10));
        // With no samples at all it keeps decaying, so a once-slow endpoint gets tried again.
        let later = s.peak_ewma_latency_at(t + Duration::from_secs(60)).unwrap();
        assert!(later < Duration::from_millis(1), "{later:?}");
    }

    #[test]
    fn a_fast_failure_is_recorded_as_slow() {
        let s = EndpointStats::new(1);
        let t0 = Instant::now();
        s.record(fail(0), t0);
        assert!(s.peak_ewma_latency_at(t0).unwrap() >= FAILURE_LATENCY_PENALTY);
    }

    #[test]
    fn a_probe_is_claimed_once() {
        let s = Arc::new(EndpointStats::new(1));
        let now = Instant::now();
        let seen = s.last_start_millis();
        assert!(s.claim_probe(seen, now));
        assert!(!s.claim_probe(seen, now), "the second claimant loses");
        let g = s.begin();
        assert!(
            !s.claim_probe(s.last_start_millis(), now),
            "busy endpoints are not probed"
        );
        drop(g);
    }
}
