//! The dashboard's live feed: one snapshot a second, computed once whatever the number of
//! viewers, and only while someone watches.
//!
//! A ticker task starts with the first viewer and ends with the last; it keeps a ring of the
//! last [`HISTORY`] one-second points (request and error rates, overhead quantiles, in-flight)
//! so a page opened now can draw the recent past, and forgets it when nobody watches. Each
//! tick is serialized once and handed to every viewer through a `watch` channel, so a slow
//! viewer skips ticks instead of queueing them. Rates and quantiles are deltas between two
//! ticks of the same cumulative counters `/metrics` renders: the request path pays nothing.

use crate::reload::Live;
use crate::request::Services;
use crate::telemetry::histogram::Histogram;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Seconds of history a newly opened page receives.
pub(crate) const HISTORY: usize = 300;
/// Concurrent viewers; more get 503 (each holds an admin connection open).
pub(crate) const MAX_VIEWERS: usize = 16;
/// Passports sent with each tick (newest first).
const PASSPORTS: usize = 25;
const TICK: Duration = Duration::from_secs(1);

/// One second of the gateway, as the charts draw it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
    t_ms: u64,
    /// Requests per second by status class (1xx..5xx).
    rps: [f64; 5],
    /// Gateway overhead quantiles over the second, microseconds (bucket upper bounds).
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    p999_us: Option<f64>,
    in_flight: usize,
}

/// Cumulative counters of the previous tick, to take deltas from.
#[derive(Default)]
struct Prev {
    status: [u64; 5],
    overhead: Vec<u64>,
    routes: HashMap<Arc<str>, ([u64; 5], Vec<u64>)>,
}

pub(crate) struct Feed {
    latest: watch::Sender<Option<Bytes>>,
    viewers: AtomicUsize,
    history: Mutex<VecDeque<Point>>,
    ticking: Mutex<bool>,
}

/// One viewer's place; leaving it drops the count (the last one stops the ticker).
pub(crate) struct Viewer {
    feed: Arc<Feed>,
    pub(crate) rx: watch::Receiver<Option<Bytes>>,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.feed.viewers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Feed {
    pub(crate) fn new() -> Arc<Feed> {
        Arc::new(Feed {
            latest: watch::Sender::new(None),
            viewers: AtomicUsize::new(0),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            ticking: Mutex::new(false),
        })
    }

    /// A new viewer, and the history it starts from; `None` when [`MAX_VIEWERS`] watch.
    pub(crate) fn watch(self: &Arc<Feed>, live: &Arc<Live>) -> Option<(Viewer, Bytes)> {
        if self.viewers.fetch_add(1, Ordering::AcqRel) >= MAX_VIEWERS {
            self.viewers.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let viewer = Viewer {
            feed: self.clone(),
            rx: self.latest.subscribe(),
        };
        let mut ticking = self.ticking.lock();
        if !*ticking {
            *ticking = true;
            tokio::spawn(self.clone().tick(live.clone()));
        }
        drop(ticking);
        let history: Vec<Point> = self.history.lock().iter().cloned().collect();
        let first = event("history", &json!({ "points": history }));
        Some((viewer, first))
    }

    async fn tick(self: Arc<Feed>, live: Arc<Live>) {
        let mut prev: Option<Prev> = None;
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            if self.viewers.load(Ordering::Acquire) == 0 {
                let mut ticking = self.ticking.lock();
                // Checked again under the lock a new viewer takes to start a ticker.
                if self.viewers.load(Ordering::Acquire) == 0 {
                    *ticking = false;
                    self.history.lock().clear();
                    self.latest.send_replace(None);
                    return;
                }
            }
            let svc = live.load();
            let (point, state, now) = snapshot(&svc, prev.as_ref());
            prev = Some(now);
            if let Some(p) = &point {
                let mut h = self.history.lock();
                if h.len() == HISTORY {
                    h.pop_front();
                }
                h.push_back(p.clone());
            }
            self.latest.send_replace(Some(event(
                "tick",
                &json!({ "point": point, "state": state }),
            )));
        }
    }
}

/// One Server-Sent Event.
fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The upper bound (seconds) of the bucket holding quantile `q` of what `now` counted since
/// `before` (cumulative bucket counts, `+Inf` last).
fn quantile(bounds: &[f64], before: &[u64], now: &[u64], q: f64) -> Option<f64> {
    let delta = |i: usize| now[i].saturating_sub(before.get(i).copied().unwrap_or(0));
    let total = delta(now.len().checked_sub(1)?);
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil() as u64;
    (0..now.len())
        .find(|&i| delta(i) >= want)
        .map(|i| bounds.get(i).copied().unwrap_or(f64::INFINITY))
}

fn cumulative(h: &Histogram) -> Vec<u64> {
    h.cumulative().collect()
}

/// The point since `prev` (none on the first tick), the current state, and the counters to
/// take the next deltas from.
fn snapshot(svc: &Services, prev: Option<&Prev>) -> (Option<Point>, Value, Prev) {
    let secs = TICK.as_secs_f64();
    let mut now = Prev::default();
    let mut routes = Vec::new();
    let unrouted = std::iter::once(&svc.metrics.unrouted);
    for r in svc.route_metrics.iter().map(|r| &**r).chain(unrouted) {
        let status = r.status_counts();
        let buckets = cumulative(r.duration());
        for (t, s) in now.status.iter_mut().zip(status) {
            *t += s;
        }
        if !r.name.is_empty() {
            let before = prev.and_then(|p| p.routes.get(&r.name));
            let d = |i: usize| status[i].saturating_sub(before.map_or(0, |b| b.0[i]));
            let none = Vec::new();
            let b = before.map_or(&none, |b| &b.1);
            let q = |q| quantile(r.duration().bounds(), b, &buckets, q).map(|s| s * 1e3);
            routes.push(json!({
                "name": &*r.name,
                "total": status.iter().sum::<u64>(),
                "rps": (0..5).map(d).sum::<u64>() as f64 / secs,
                "errors_per_s": (d(3) + d(4)) as f64 / secs,
                "p50_ms": q(0.5),
                "p99_ms": q(0.99),
            }));
        }
        now.routes.insert(r.name.clone(), (status, buckets));
    }
    now.overhead = cumulative(&svc.metrics.overhead);
    let in_flight = svc.shedder.in_flight();
    let point = prev.map(|p| {
        let q = |q| {
            quantile(svc.metrics.overhead.bounds(), &p.overhead, &now.overhead, q).map(|s| s * 1e6)
        };
        let mut rps = [0.0; 5];
        for (i, r) in rps.iter_mut().enumerate() {
            *r = now.status[i].saturating_sub(p.status[i]) as f64 / secs;
        }
        Point {
            t_ms: unix_ms(),
            rps,
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            in_flight,
        }
    });
    let mut passports = svc.metrics.ring.snapshot();
    passports.truncate(PASSPORTS);
    let state = json!({
        "t_ms": unix_ms(),
        "requests_total": now.status.iter().sum::<u64>(),
        "status_totals": now.status,
        "in_flight": in_flight,
        "max_in_flight": svc.shedder.limit(),
        "shed": shed(svc),
        "routes": routes,
        "clusters": clusters(svc),
        "plugins": svc.plugins.as_ref().map(|p| p.plugins_json()),
        "passports": passports,
        "config_hash": svc.loaded.hash,
    });
    (point, state, now)
}

fn shed(svc: &Services) -> Value {
    use crate::config::Priority;
    let s = &svc.shedder;
    json!({
        "critical": s.shed_total(Priority::Critical),
        "normal": s.shed_total(Priority::Normal),
        "sheddable": s.shed_total(Priority::Sheddable),
    })
}

fn clusters(svc: &Services) -> Value {
    let now = std::time::Instant::now();
    svc.upstreams
        .clusters
        .iter()
        .map(|c| {
            let set = c.endpoints.load();
            let endpoints: Vec<Value> = set
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let st = &set.stats[i];
                    json!({
                        "addr": &*e.addr,
                        "healthy": set.health.as_ref().is_none_or(|h| h.is_healthy(i)),
                        "ejected": set.outlier.is_ejected(i, now),
                        "ejections": set.outlier.ejections_total(i),
                        "in_flight": st.in_flight(),
                        "failure_rate": st.failure_rate(),
                        "peak_ewma_ms": st.peak_ewma_latency().as_secs_f64() * 1e3,
                        "requests": st.requests_total(),
                        "failures": st.failures_total(),
                    })
                })
                .collect();
            json!({
                "name": &*c.name,
                "in_flight": c.limit.in_flight(),
                "endpoints": endpoints,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_come_from_the_deltas_between_ticks() {
        let bounds = [1.0, 2.0, 3.0];
        // Before: 10 fast requests. Since: 90 in (1,2], 9 in (2,3], 1 above 3.
        let before = [10, 10, 10, 10];
        let now = [10, 100, 109, 110];
        assert_eq!(quantile(&bounds, &before, &now, 0.5), Some(2.0));
        assert_eq!(quantile(&bounds, &before, &now, 0.99), Some(3.0));
        assert_eq!(quantile(&bounds, &before, &now, 0.999), Some(f64::INFINITY));
        assert_eq!(quantile(&bounds, &now, &now, 0.5), None, "nothing happened");
        assert_eq!(quantile(&bounds, &[], &[5, 5, 5, 5], 0.5), Some(1.0));
    }
}
