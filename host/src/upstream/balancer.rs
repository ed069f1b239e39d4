//! Load balancers: which endpoint of a cluster gets the next request.
//!
//! - `round_robin`: smooth weighted round robin (nginx's algorithm). Spreads request *counts*
//!   by weight and ignores how endpoints are doing, so a slow endpoint keeps its share and
//!   builds a backlog.
//! - `least_in_flight`: the endpoint with the fewest requests in flight (divided by weight),
//!   ties broken at random. Routes around a slow endpoint on its own, but pours traffic into
//!   one that fails *fast*, since a fast failure frees its slot at once.
//! - `least_in_flight_ewma`: as above, with the load scaled up by the endpoint's recent
//!   failure rate (see [`LeastInFlightEwma`] for the exact score and the probe rule).
//! - `p2c_peak_ewma`: power of two choices on `peak_ewma_latency × (in_flight + 1)`.
//!
//! Every balancer only returns indices for which `eligible(i)` holds.

use super::stats::{millis, EndpointStats};
use crate::config::BalancerKind;
use parking_lot::Mutex;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) trait Balancer: Send + Sync {
    /// Picks the index of an endpoint in `eps` for which `eligible(i)` is true, or `None` if
    /// there is none. `eligible` folds in outlier ejection and endpoints already tried by this
    /// request (retries go elsewhere).
    fn pick(&self, eps: &[Arc<EndpointStats>], eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
}

/// Builds the balancer named in the config. `seed` makes random choices reproducible in tests.
pub(crate) fn new_balancer(kind: BalancerKind, seed: u64) -> Box<dyn Balancer> {
    match kind {
        BalancerKind::RoundRobin => Box::new(RoundRobin::default()),
        BalancerKind::LeastInFlight => Box::new(LeastInFlight::new(seed)),
        BalancerKind::LeastInFlightEwma => Box::new(LeastInFlightEwma::new(seed)),
        BalancerKind::P2cPeakEwma => Box::new(P2cPeakEwma::new(seed)),
    }
}

/// Smooth weighted round robin: each pick adds every eligible endpoint's weight to its
/// running score, takes the highest, and subtracts the total weight from the winner. Weights
/// 5:1:1 give `a a b a c a a`, interleaved rather than in bursts.
#[derive(Default)]
struct RoundRobin {
    current: Mutex<Vec<i64>>,
}

impl Balancer for RoundRobin {
    fn pick(&self, eps: &[Arc<EndpointStats>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut cur = self.current.lock();
        cur.resize(eps.len(), 0);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, e) in eps.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let w = i64::from(e.weight().max(1));
            cur[i] += w;
            total += w;
            if best.is_none_or(|b| cur[i] > cur[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        cur[b] -= total;
        Some(b)
    }
}

/// Picks the lowest score among eligible endpoints; ties go to a uniformly random one
/// (reservoir sampling over the tied set, so no endpoint is favoured by its position).
fn pick_lowest(
    rng: &Mutex<fastrand::Rng>,
    eps: &[Arc<EndpointStats>],
    eligible: &dyn Fn(usize) -> bool,
    score: impl Fn(&EndpointStats) -> f64,
) -> Option<usize> {
    let mut rng = rng.lock();
    let mut best: Option<(usize, f64)> = None;
    let mut ties = 0u32;
    for (i, e) in eps.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let s = score(e);
        match best {
            Some((_, b)) if s > b => {}
            Some((_, b)) if s == b => {
                ties += 1;
                if rng.u32(0..ties + 1) == 0 {
                    best = Some((i, s));
                }
            }
            _ => {
                best = Some((i, s));
                ties = 0;
            }
        }
    }
    best.map(|(i, _)| i)
}

fn load(e: &EndpointStats) -> f64 {
    (e.in_flight() as f64 + 1.0) / f64::from(e.weight().max(1))
}

/// Fewest requests in flight per unit of weight; random among equals.
struct LeastInFlight {
    rng: Mutex<fastrand::Rng>,
}

impl LeastInFlight {
    fn new(seed: u64) -> Self {
        LeastInFlight {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }
}

impl Balancer for LeastInFlight {
    fn pick(&self, eps: &[Arc<EndpointStats>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        pick_lowest(&self.rng, eps, eligible, load)
    }
}

/// How often an endpoint that the score avoids is sent one request anyway.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Failure rates are capped here so that every score stays finite.
const MAX_FAILURE_RATE: f64 = 0.99;

/// Least in flight, weighted by recent failures (the seed's Fitbit balancer).
///
/// Score: `(in_flight + 1) / weight / (1 - min(failure_rate, 0.99))`, lowest wins, ties
/// random. An endpoint failing half its requests counts as twice as loaded; one failing all
/// of them as a hundred times. So a fast-failing endpoint no longer soaks up traffic just
/// because its failures free their slots at once.
///
/// Never banned for life: the score alone could starve a bad endpoint indefinitely at light
/// load, and with no traffic its failure rate would never improve. So before scoring, any
/// eligible endpoint that has **nothing in flight** and has **not started a request for
/// [`PROBE_INTERVAL`]** gets the request as a probe. The claim is a compare-and-swap on the
/// endpoint's last-start time, so concurrent picks send it one probe at a time, and a failing
/// endpoint sees at most about one probe per second beyond what its score earns it. A healthy
/// idle endpoint passing the same test would have had the lowest score anyway.
struct LeastInFlightEwma {
    rng: Mutex<fastrand::Rng>,
}

impl LeastInFlightEwma {
    fn new(seed: u64) -> Self {
        LeastInFlightEwma {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }

    fn pick_at(
        &self,
        eps: &[Arc<EndpointStats>],
        eligible: &dyn Fn(usize) -> bool,
        now: Instant,
    ) -> Option<usize> {
        let due = millis(now).saturating_sub(PROBE_INTERVAL.as_millis() as u64);
        for (i, e) in eps.iter().enumerate() {
            let last = e.last_start_millis();
            if last != 0
                && last <= due
                && e.in_flight() == 0
                && eligible(i)
                && e.claim_probe(last, now)
            {
                return Some(i);
            }
        }
        pick_lowest(&self.rng, eps, eligible, |e| {
            load(e) / (1.0 - e.failure_rate().min(MAX_FAILURE_RATE))
        })
    }
}

impl Balancer for LeastInFlightEwma {
    fn pick(&self, eps: &[Arc<EndpointStats>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.pick_at(eps, eligible, Instant::now())
    }
}

/// Latency assumed for an endpoint that has never answered: high enough that a new endpoint
/// is not piled on before it has shown its speed, low enough that it is tried promptly.
pub(crate) const DEFAULT_LATENCY: Duration = Duration::from_millis(25);

/// Power of two choices over peak-EWMA cost (linkerd/Finagle): draw two distinct eligible
/// endpoints at random, send to the cheaper. `cost = peak_ewma_latency × (in_flight + 1) /
/// weight`. Random pairs keep many gateways from herding onto the same "best" endpoint, and
/// the worst endpoint only ever wins against nobody.
struct P2cPeakEwma {
    rng: Mutex<fastrand::Rng>,
}

impl P2cPeakEwma {
    fn new(seed: u64) -> Self {
        P2cPeakEwma {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }
    fn cost(e: &EndpointStats, now: Instant) -> f64 {
        let lat = e.peak_ewma_latency_at(now).unwrap_or(DEFAULT_LATENCY);
        // A 1 µs floor keeps in-flight counts meaningful when the estimate has decayed to ~0.
        lat.as_secs_f64().max(1e-6) * load(e)
    }
}

impl Balancer for P2cPeakEwma {
    fn pick(&self, eps: &[Arc<EndpointStats>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let cands: SmallVec<[usize; 16]> = (0..eps.len()).filter(|&i| eligible(i)).collect();
        let (a, b) = {
            let mut rng = self.rng.lock();
            match cands.len() {
                0 => return None,
                1 => return Some(cands[0]),
                n => {
                    let a = rng.usize(0..n);
                    let b = (a + 1 + rng.usize(0..n - 1)) % n;
                    (cands[a], cands[b])
                }
            }
        };
        let now = Instant::now();
        if Self::cost(&eps[b], now) < Self::cost(&eps[a], now) {
            Some(b)
        } else {
            Some(a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::stats::{InFlight, Outcome};

    fn eps(weights: &[u32]) -> Vec<Arc<EndpointStats>> {
        weights
            .iter()
            .map(|&w| Arc::new(EndpointStats::new(w)))
            .collect()
    }
    fn all(_: usize) -> bool {
        true
    }
    fn counts(b: &dyn Balancer, e: &[Arc<EndpointStats>], n: usize) -> Vec<usize> {
        let mut c = vec![0; e.len()];
        for _ in 0..n {
            c[b.pick(e, &all).unwrap()] += 1;
        }
        c
    }
    fn busy(e: &Arc<EndpointStats>, n: usize) -> Vec<InFlight> {
        (0..n).map(|_| e.begin()).collect()
    }
    fn record(e: &EndpointStats, n: usize, failed: bool, ms: u64) {
        let now = Instant::now();
        for _ in 0..n {
            e.record(
                Outcome {
                    latency: Duration::from_millis(ms),
                    failed,
                },
                now,
            );
        }
    }

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        let e = eps(&[5, 1, 1]);
        let b = new_balancer(BalancerKind::RoundRobin, 1);
        let seq: Vec<usize> = (0..7).map(|_| b.pick(&e, &all).unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0], "nginx's smooth sequence");
        assert_eq!(counts(&*b, &e, 700), vec![500, 100, 100]);
    }

    #[test]
    fn round_robin_skips_ineligible_and_returns_none_when_empty() {
        let e = eps(&[1, 1, 1]);
        let b = new_balancer(BalancerKind::RoundRobin, 1);
        for _ in 0..10 {
            assert_ne!(b.pick(&e, &|i| i != 1), Some(1));
        }
        assert_eq!(b.pick(&e, &|_| false), None);
        let even = counts(&*b, &e, 300);
        assert_eq!(even, vec![100, 100, 100]);
    }

    #[test]
    fn least_in_flight_picks_the_idlest_and_breaks_ties_at_random() {
        let e = eps(&[1, 1, 1]);
        let _g0 = busy(&e[0], 3);
        let _g1 = busy(&e[1], 1);
        let _g2 = busy(&e[2], 2);
        let b = new_balancer(BalancerKind::LeastInFlight, 7);
        assert_eq!(counts(&*b, &e, 20), vec![0, 20, 0]);
        assert_eq!(b.pick(&e, &|i| i != 1), Some(2));
        // All equal: every endpoint gets a fair share, reproducibly for a given seed.
        let f = eps(&[1, 1, 1]);
        let c = counts(&*b, &f, 3000);
        assert!(c.iter().all(|&n| (900..1100).contains(&n)), "{c:?}");
        let again = new_balancer(BalancerKind::LeastInFlight, 7);
        let _ = counts(&*again, &e, 20);
        assert_eq!(counts(&*again, &f, 3000), c, "same seed, same choices");
    }

    #[test]
    fn least_in_flight_divides_by_weight() {
        let e = eps(&[4, 1]);
        let _g0 = busy(&e[0], 2); // (2+1)/4 < (0+1)/1
        let b = new_balancer(BalancerKind::LeastInFlight, 1);
        assert_eq!(b.pick(&e, &all), Some(0));
    }

    #[test]
    fn least_in_flight_ewma_avoids_a_failing_endpoint() {
        let e = eps(&[1, 1]);
        record(&e[0], 100, true, 1);
        record(&e[1], 100, false, 1);
        let b = LeastInFlightEwma::new(3);
        // Endpoint 0 fails ~95 %: its score is ~20x, so it loses even against 5 in flight.
        let _g1 = busy(&e[1], 5);
        let now = Instant::now();
        for _ in 0..50 {
            assert_eq!(b.pick_at(&e, &all, now), Some(1));
        }
        // Against 30 in flight it wins: never infinitely bad.
        let _more = busy(&e[1], 25);
        assert_eq!(b.pick_at(&e, &all, now), Some(0));
    }

    #[test]
    fn least_in_flight_ewma_probes_an_idle_avoided_endpoint_once_per_interval() {
        let e = eps(&[1, 1]);
        record(&e[0], 100, true, 1);
        let b = LeastInFlightEwma::new(3);
        let t0 = Instant::now();
        // Endpoint 0 last started a request now-ish (begin sets it); let it go quiet.
        drop(e[0].begin());
        let probe_at = t0 + PROBE_INTERVAL + Duration::from_millis(50);
        assert_eq!(b.pick_at(&e, &all, probe_at), Some(0), "due: probed");
        assert_eq!(
            b.pick_at(&e, &all, probe_at),
            Some(1),
            "one probe per interval"
        );
        // A probe in flight blocks further probes even after the interval.
        let probe = e[0].begin();
        let later = probe_at + 2 * PROBE_INTERVAL;
        assert_eq!(b.pick_at(&e, &all, later), Some(1));
        // Ineligible endpoints are never probed.
        drop(probe);
        assert_eq!(
            b.pick_at(&e, &|i| i == 1, later + 2 * PROBE_INTERVAL),
            Some(1)
        );
    }

    #[test]
    fn least_in_flight_ewma_equals_least_in_flight_when_healthy() {
        let e = eps(&[1, 1, 1]);
        let _g0 = busy(&e[0], 2);
        let _g2 = busy(&e[2], 1);
        let b = new_balancer(BalancerKind::LeastInFlightEwma, 9);
        assert_eq!(counts(&*b, &e, 10), vec![0, 10, 0]);
    }

    #[test]
    fn p2c_prefers_the_cheaper_of_two() {
        let e = eps(&[1, 1]);
        record(&e[0], 1, false, 300);
        record(&e[1], 1, false, 5);
        let b = new_balancer(BalancerKind::P2cPeakEwma, 11);
        // With two endpoints both are always drawn, so the cheaper always wins.
        assert_eq!(counts(&*b, &e, 50), vec![0, 50]);
        // Load counts too: 5 ms × 100 in flight is dearer than 300 ms idle.
        let _g = busy(&e[1], 99);
        assert_eq!(b.pick(&e, &all), Some(0));
    }

    #[test]
    fn p2c_never_picks_the_worst_of_three_and_uses_a_default_for_unseen() {
        let e = eps(&[1, 1, 1]);
        record(&e[0], 1, false, 500);
        record(&e[1], 1, false, 5);
        // e[2] unseen: DEFAULT_LATENCY (25 ms), between the two.
        let b = new_balancer(BalancerKind::P2cPeakEwma, 13);
        let c = counts(&*b, &e, 300);
        assert_eq!(c[0], 0, "the slowest loses every pair: {c:?}");
        assert!(c[1] > c[2] && c[2] > 0, "{c:?}");
        assert_eq!(b.pick(&e, &|i| i == 0), Some(0), "sole eligible");
        assert_eq!(b.pick(&e, &|_| false), None);
    }
}
