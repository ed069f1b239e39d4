//! OpenTelemetry traces: one server span per sampled request, with child spans for its plugin
//! calls, upstream attempts and fan-out calls, exported over OTLP/HTTP protobuf.
//!
//! Why this shape (the access log's): the request path must never wait on a collector. The
//! sampling decision is made once, at admission ([`Tracer::sample`]): parent-based, so a
//! client's sampled `traceparent` is always followed, an unsampled one never is, and a new
//! trace is sampled with `sample_ratio`. An unsampled request carries no trace at all and
//! costs a header lookup and a random number. A sampled one records plain instants and names
//! into its passport (`core::trace`) while it runs; at its end [`Tracer::record`] moves those
//! records into a bounded queue with one `try_send` (a full queue drops and counts them).
//!
//! The exporter thread (`export`) turns records into `opentelemetry_sdk` span data
//! (`spans`), batches them, and posts each batch with the `opentelemetry-otlp` exporter
//! through a small hyper client of its own (`client`) on a current-thread runtime it owns: no
//! export ever runs on a request's worker. Shutdown flushes what is queued, bounded
//! ([`Tracer::flush`]).

mod client;
mod export;
mod spans;

use super::prom::{Kind, Writer};
use super::Finished;
use crate::config;
use crate::core::passport::CallRecord;
use crate::core::trace::Trace;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A finished sampled request, moved out of it: what its spans are made of.
pub(crate) struct Entry {
    trace: Box<Trace>,
    /// The request's start on the wall clock, and the same moment on the monotonic clock
    /// every record uses: span times are `wall + (instant - start)`.
    wall: SystemTime,
    start: Instant,
    end: Instant,
    method: ::http::Method,
    uri: ::http::Uri,
    status: u16,
    protocol: &'static str,
    route: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    request_id: Option<::http::HeaderValue>,
    error: Option<&'static str>,
    /// An endpoint's fan-out calls (those with a span).
    calls: Vec<CallRecord>,
}

impl Entry {
    /// Spans this entry becomes.
    fn spans(&self) -> u64 {
        let calls = self.calls.iter().filter(|c| c.span.is_some()).count();
        (1 + self.trace.plugins.len() + self.trace.attempts.len() + calls) as u64
    }
}

/// Counters shared by the request path, the exporter thread and `/metrics`.
#[derive(Debug, Default)]
struct Shared {
    /// Spans handed to the exporter and accepted by the receiver.
    exported: AtomicU64,
    /// Spans lost because the queue was full.
    dropped: AtomicU64,
    /// Spans in exports that failed (refused, timed out, unreachable).
    failed: AtomicU64,
    /// Requests sampled (spans are made of each).
    sampled: AtomicU64,
    flush: crate::telemetry::flush::FlushTickets,
}

/// The gateway's tracer. Dropping it lets the exporter export what is queued and stop.
#[derive(Debug)]
pub(crate) struct Tracer {
    tx: SyncSender<Box<Entry>>,
    shared: Arc<Shared>,
    /// `sample_ratio` as a threshold on a random `u64`: sampled when below it.
    threshold: u64,
    exporter: std::thread::Thread,
}

impl Tracer {
    /// Builds the OTLP exporter and starts its thread. Fails only on a config the exporter
    /// refuses (validation already checked the URL and headers) or a thread that cannot start.
    pub(crate) fn start(cfg: &config::Tracing) -> anyhow::Result<Tracer> {
        let (tx, rx) = sync_channel(cfg.queue.max(1));
        let shared = Arc::new(Shared::default());
        let exporter = export::Exporter::new(cfg, rx, shared.clone())?;
        let handle = std::thread::Builder::new()
            .name("portcullis-tracing".into())
            .spawn(move || exporter.run())?;
        Ok(Tracer {
            tx,
            shared,
            threshold: ratio_threshold(cfg.sample_ratio),
            exporter: handle.thread().clone(),
        })
    }

    /// The sampling decision, once per request at admission: `Some` when it is traced.
    pub(crate) fn sample(&self, headers: &::http::HeaderMap) -> Option<Box<Trace>> {
        let trace = match crate::core::headers::incoming_trace(headers) {
            Some((trace_id, parent, true)) => Trace::new(trace_id, Some(parent)),
            Some((_, _, false)) => return None,
            None if fastrand::u64(..) < self.threshold => Trace::new(fastrand::u128(1..), None),
            None => return None,
        };
        self.shared.sampled.fetch_add(1, Ordering::Relaxed);
        Some(trace)
    }

    /// Queues a finished sampled request's spans; does nothing for an unsampled one. Never
    /// blocks: a full queue drops them and counts them.
    pub(crate) fn record(&self, f: &mut Finished, end: Instant) {
        let Some(trace) = f.passport.trace.take() else {
            return;
        };
        let start = f.passport.start();
        let now = SystemTime::now();
        let wall = now.checked_sub(start.elapsed()).unwrap_or(now);
        let entry = Box::new(Entry {
            trace,
            wall,
            start,
            end,
            method: f.method.clone(),
            uri: f.uri.clone(),
            status: f.status,
            protocol: f.protocol,
            route: f.route_name.clone(),
            cluster: f.cluster.clone(),
            request_id: f.request_id.clone(),
            error: f.passport.error,
            calls: std::mem::take(&mut f.passport.calls),
        });
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(e) | TrySendError::Disconnected(e)) => {
                self.shared.dropped.fetch_add(e.spans(), Ordering::Relaxed);
            }
        }
    }

    /// Waits (at most `within`) until every span queued before this call was exported (or its
    /// export failed).
    pub(crate) async fn flush(&self, within: Duration) -> bool {
        self.shared.flush.flush(&self.exporter, within).await
    }

    pub(crate) fn render(&self, w: &mut Writer) {
        let s = &self.shared;
        let families: [(&'static str, &str, &AtomicU64); 4] = [
            (
                "portcullis_tracing_requests_sampled_total",
                "Requests traced (sampled at admission).",
                &s.sampled,
            ),
            (
                "portcullis_tracing_spans_exported_total",
                "Spans exported to the OTLP receiver.",
                &s.exported,
            ),
            (
                "portcullis_tracing_spans_dropped_total",
                "Spans dropped because the queue to the exporter was full.",
                &s.dropped,
            ),
            (
                "portcullis_tracing_spans_failed_total",
                "Spans in exports that failed (receiver unreachable, refused, timed out).",
                &s.failed,
            ),
        ];
        for (name, help, c) in families {
            w.family(name, help, Kind::Counter)
                .sample(&[], c.load(Ordering::Relaxed));
        }
    }
}

/// `ratio` of the `u64` range: 0 never samples, 1 always does.
fn ratio_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * u64::MAX as f64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::{HeaderMap, HeaderValue};

    fn tracer(ratio: f64, queue: usize) -> (Tracer, std::sync::mpsc::Receiver<Box<Entry>>) {
        let (tx, rx) = sync_channel(queue);
        let t = Tracer {
            tx,
            shared: Arc::default(),
            threshold: ratio_threshold(ratio),
            exporter: std::thread::current(),
        };
        (t, rx)
    }

    fn with_parent(flags: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = match flags {
            "01" => "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            _ => "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        };
        h.insert("traceparent", HeaderValue::from_static(v));
        h
    }

    #[test]
    fn sampling_follows_the_parent_then_the_ratio() {
        let (never, _rx) = tracer(0.0, 4);
        assert!(never.sample(&HeaderMap::new()).is_none());
        let t = never
            .sample(&with_parent("01"))
            .expect("a sampled parent is followed");
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent, Some(0x00f067aa0ba902b7));
        let (always, _rx) = tracer(1.0, 4);
        assert!(always.sample(&with_parent("00")).is_none());
        let t = always.sample(&HeaderMap::new()).expect("ratio 1");
        assert_eq!(t.parent, None);
        assert_ne!(t.trace_id, 0);
        let (tenth, _rx) = tracer(0.1, 4);
        let n = (0..20_000)
            .filter(|_| tenth.sample(&HeaderMap::new()).is_some())
            .count();
        assert!((1_500..2_500).contains(&n), "{n} of 20000 at 0.1");
    }

    fn finished(trace: Option<Box<Trace>>) -> Finished {
        let mut passport = crate::core::passport::Passport::new(Instant::now());
        passport.trace = trace;
        Finished {
            passport,
            route: None,
            route_name: None,
            cluster: None,
            endpoint: None,
            status: 200,
            method: ::http::Method::GET,
            uri: ::http::Uri::from_static("/x"),
            request_id: None,
            protocol: "http/1.1",
            client: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            attempts: 0,
            bytes_in: 0,
            bytes_out: 0,
            tunnel: None,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_spans_instead_of_blocking() {
        let (t, rx) = tracer(1.0, 1);
        t.record(&mut finished(None), Instant::now());
        assert_eq!(rx.try_iter().count(), 0, "unsampled: nothing queued");
        for _ in 0..3 {
            let mut trace = Trace::new(1, None);
            let ep: Arc<str> = Arc::from("127.0.0.1:1");
            trace.begin_attempt(&ep, Instant::now());
            t.record(&mut finished(Some(trace)), Instant::now());
        }
        assert_eq!(rx.try_iter().count(), 1);
        // Two requests of two spans each (request + attempt) did not fit.
        assert_eq!(t.shared.dropped.load(Ordering::Relaxed), 4);
    }
}
