//! Telemetry: metrics derived from passports, the slow/failed passport ring, logging, the
//! access log and OpenTelemetry traces (`trace`).
//!
//! Why metrics come from passports: the request path stamps states and nothing else; one
//! `finish` call turns the passport into every counter and histogram, so metrics cannot drift
//! from what the request actually did.

pub(crate) mod access_log;
pub(crate) mod flush;
pub(crate) mod histogram;
pub(crate) mod prom;
pub(crate) mod trace;

use crate::core::passport::{Passport, State};
use histogram::{Histogram, DURATION_BUCKETS, OVERHEAD_BUCKETS};
use parking_lot::Mutex;
use prom::{Kind, Num, Writer};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Per-route counters, pre-allocated when the route table is built so the request path only
/// touches atomics. A config reload keeps the counters of every route whose name it keeps.
#[derive(Debug)]
pub struct RouteMetrics {
    pub name: Arc<str>,
    /// Index 0 = 1xx … 4 = 5xx.
    status: [AtomicU64; 5],
    duration: Histogram,
}

impl RouteMetrics {
    /// One set per route name, in order: the counters of `old` for names it has, fresh ones
    /// for new names. Routes no longer configured leave `/metrics` with the reload.
    pub fn for_routes(names: &[Arc<str>], old: &[Arc<RouteMetrics>]) -> Vec<Arc<RouteMetrics>> {
        names
            .iter()
            .map(|n| match old.iter().find(|o| o.name == *n) {
                Some(o) => o.clone(),
                None => Arc::new(RouteMetrics::new(n.clone())),
            })
            .collect()
    }

    /// Responses by status class, 1xx..5xx.
    pub(crate) fn status_counts(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.status[i].load(Ordering::Relaxed))
    }

    /// Whole-request durations.
    pub(crate) fn duration(&self) -> &Histogram {
        &self.duration
    }

    fn new(name: Arc<str>) -> Self {
        RouteMetrics {
            name,
            status: Default::default(),
            duration: Histogram::new(DURATION_BUCKETS),
        }
    }
}

#[derive(Debug, Default)]
pub struct ListenerMetrics {
    pub name: Arc<str>,
    pub accepted: AtomicU64,
    pub active: AtomicI64,
    pub rejected: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub tls_failures: AtomicU64,
    /// Connections closed because their PROXY protocol header was missing, late or invalid.
    pub proxy_header_failures: AtomicU64,
    pub tls_reloads: Arc<AtomicU64>,
    /// WebSocket tunnels open now (checked against the listener's `max_tunnels`).
    pub tunnels_active: AtomicI64,
    /// HTTP/2 connections ended with an error (and streams the gateway cut), by reason:
    /// index into `H2_ERROR_REASONS`.
    pub h2_errors: [AtomicU64; H2_ERROR_REASONS.len()],
}

/// `portcullis_h2_connection_errors_total{reason}` label values. The first fourteen are the
/// RFC 9113 §7 error codes of a GOAWAY (sent by h2 or received from the client); then the
/// gateway's own bounds (`server::h2`, `server::io`) and what is left.
pub(crate) const H2_ERROR_REASONS: [&str; 21] = [
    "no_error",
    "protocol_error",
    "internal_error",
    "flow_control_error",
    "settings_timeout",
    "stream_closed",
    "frame_size_error",
    "refused_stream",
    "cancel",
    "compression_error",
    "connect_error",
    "enhance_your_calm",
    "inadequate_security",
    "http_1_1_required",
    // Connection: more PING/SETTINGS than `[limits] h2_max_control_frames_per_sec`.
    "control_frame_flood",
    // Connection: no byte could be written to the client for `client_write_idle_ms`.
    "write_idle_timeout",
    // Connection: the client did not answer the keep-alive PING in time.
    "keep_alive_timeout",
    // Stream: its response made no progress for `client_write_idle_ms`; reset.
    "stream_write_idle",
    // Stream: more header fields than `max_headers`; answered 431.
    "too_many_headers",
    // Connection: any other I/O error (reset by the client, broken pipe, ...).
    "io",
    "other",
];

impl ListenerMetrics {
    /// Counts one HTTP/2 error under `reason` (one of `H2_ERROR_REASONS`; unknown ones count
    /// as `other`).
    pub(crate) fn count_h2_error(&self, reason: &str) {
        let i = H2_ERROR_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(H2_ERROR_REASONS.len() - 1);
        self.h2_errors[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// How tunnels ended: index into `TUNNEL_ENDS`.
pub(crate) const TUNNEL_ENDS: [&str; 4] = ["closed", "idle_timeout", "drained", "error"];

/// Tunnel bucket bounds: a WebSocket lives seconds to hours.
const TUNNEL_BUCKETS: &[f64] = &[
    0.1,
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    4.0 * 3600.0,
    24.0 * 3600.0,
];

/// What WebSocket tunnels did after their upgrade; fed once per tunnel when it ends, so long
/// tunnels never distort request durations or fill the slow-request ring.
#[derive(Debug)]
pub struct TunnelMetrics {
    ends: [AtomicU64; TUNNEL_ENDS.len()],
    /// Client to upstream, and upstream to client.
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    duration: Histogram,
}

impl Default for TunnelMetrics {
    fn default() -> Self {
        TunnelMetrics {
            ends: Default::default(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            duration: Histogram::new(TUNNEL_BUCKETS),
        }
    }
}

impl TunnelMetrics {
    /// One tunnel ended: `end` indexes `TUNNEL_ENDS`.
    pub(crate) fn record(&self, end: usize, up: u64, down: u64, lived: Duration) {
        if let Some(c) = self.ends.get(end) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_up.fetch_add(up, Ordering::Relaxed);
        self.bytes_down.fetch_add(down, Ordering::Relaxed);
        self.duration.observe(lived);
    }

    fn render(&self, w: &mut Writer, listeners: &[Arc<ListenerMetrics>]) {
        let mut f = w.family(
            "portcullis_tunnels_active",
            "WebSocket tunnels open now.",
            Kind::Gauge,
        );
        for l in listeners {
            f.sample(
                &[("listener", &l.name)],
                l.tunnels_active.load(Ordering::Relaxed),
            );
        }
        let mut f = w.family(
            "portcullis_tunnels_total",
            "WebSocket tunnels ended, by how they ended.",
            Kind::Counter,
        );
        for (end, c) in TUNNEL_ENDS.iter().zip(&self.ends) {
            f.sample(&[("end", end)], c.load(Ordering::Relaxed));
        }
        let mut f = w.family(
            "portcullis_tunnel_bytes_total",
            "Bytes carried by ended WebSocket tunnels, by direction.",
            Kind::Counter,
        );
        f.sample(
            &[("direction", "up")],
            self.bytes_up.load(Ordering::Relaxed),
        );
        f.sample(
            &[("direction", "down")],
            self.bytes_down.load(Ordering::Relaxed),
        );
        w.family(
            "portcullis_tunnel_duration_seconds",
            "WebSocket tunnel lifetime, from the upgrade to the tunnel's end.",
            Kind::Histogram,
        )
        .histogram(&[], &self.duration);
    }
}

/// One `[[rate_limit]]`'s counters, kept by name across reloads.
#[derive(Debug, Default)]
pub(crate) struct RateLimitCounters {
    limited: AtomicU64,
    backend_errors: AtomicU64,
}

impl RateLimitCounters {
    pub(crate) fn limited(&self) {
        self.limited.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn backend_error(&self) {
        self.backend_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the gateway counts. One instance per gateway, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    /// Requests that matched no route.
    pub unrouted: RouteMetrics,
    /// One entry per listener name ever served: a reload may add listeners, and a removed
    /// one keeps its counters (its gauges fall to 0), so series never go backwards.
    listeners: parking_lot::RwLock<Vec<Arc<ListenerMetrics>>>,
    pub overhead: Histogram,
    pub ring: PassportRing,
    pub tunnels: TunnelMetrics,
    /// `[admin] slow_request_ms`, in microseconds (reloadable).
    slow_us: AtomicU64,
    /// Config reloads by result: index into `RELOAD_RESULTS`.
    reloads: [AtomicU64; RELOAD_RESULTS.len()],
    /// Requests by client protocol: index into `PROTOCOLS`.
    by_protocol: [AtomicU64; PROTOCOLS.len()],
    /// Per `[[rate_limit]]` name ever configured.
    rate_limits: parking_lot::Mutex<Vec<(Arc<str>, Arc<RateLimitCounters>)>>,
    /// `[access_log]`: every finished request is offered to it.
    pub access_log: Option<access_log::AccessLog>,
    /// `[tracing]`: samples requests at admission, exports the sampled ones' spans.
    pub(crate) tracer: Option<trace::Tracer>,
}

/// Client protocol labels; the protocol is a label, never a different code path.
pub(crate) const PROTOCOLS: [&str; 4] = ["http/1.0", "http/1.1", "h2", "h3"];

/// What a WebSocket tunnel carried, for the access log line written when it ends.
#[derive(Debug, Clone)]
pub struct TunnelStats {
    /// From the upgrade to the tunnel's end.
    pub lived: Duration,
    /// Client to upstream.
    pub bytes_in: u64,
    /// Upstream to client.
    pub bytes_out: u64,
    /// How it ended: one of `TUNNEL_ENDS`.
    pub end: &'static str,
}

/// What a finished request leaves behind: its passport and the facts needed to label it.
pub struct Finished {
    pub passport: Passport,
    pub route: Option<usize>,
    pub route_name: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub endpoint: Option<Arc<str>>,
    pub status: u16,
    pub method: http::Method,
    pub uri: http::Uri,
    pub request_id: Option<http::HeaderValue>,
    pub protocol: &'static str,
    pub client: std::net::SocketAddr,
    /// Upstream attempts (0 when no upstream was tried).
    pub attempts: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub tunnel: Option<Box<TunnelStats>>,
}

/// `result` label values of `portcullis_config_reloads_total`: applied; refused because the
/// file is invalid; refused because it changes a key that cannot change at runtime; failed
/// while applying (e.g. a new listener's port is taken), nothing changed.
pub(crate) const RELOAD_RESULTS: [&str; 4] = ["ok", "invalid", "refused", "error"];

impl Metrics {
    /// The counters of the rate limit named `name`, made on first use.
    pub(crate) fn rate_limit(&self, name: &str) -> Arc<RateLimitCounters> {
        let mut all = self.rate_limits.lock();
        if let Some((_, c)) = all.iter().find(|(n, _)| &**n == name) {
            return c.clone();
        }
        let c = Arc::new(RateLimitCounters::default());
        all.push((Arc::from(name), c.clone()));
        c
    }

    fn render_rate_limits(&self, w: &mut Writer) {
        let all = self.rate_limits.lock().clone();
        for (name, help, get) in [
            (
                "portcullis_rate_limited_total",
                "Requests answered 429 by a rate limit, by limit.",
                (|c: &RateLimitCounters| c.limited.load(Ordering::Relaxed))
                    as fn(&RateLimitCounters) -> u64,
            ),
            (
                "portcullis_rate_limit_backend_errors_total",
                "Global rate-limit checks that failed or timed out in Redis (on_backend_error applied), by limit.",
                |c: &RateLimitCounters| c.backend_errors.load(Ordering::Relaxed),
            ),
        ] {
            let mut f = w.family(name, help, Kind::Counter);
            for (n, c) in &all {
                f.sample(&[("limit", n)], get(c));
            }
        }
    }

    pub fn new(listeners: &[Arc<str>], ring_size: usize, slow: Duration) -> Self {
        Metrics {
            unrouted: RouteMetrics::new(Arc::from("")),
            listeners: parking_lot::RwLock::new(
                listeners
                    .iter()
                    .map(|n| {
                        Arc::new(ListenerMetrics {
                            name: n.clone(),
                            ..Default::default()
                        })
                    })
                    .collect(),
            ),
            overhead: Histogram::new(OVERHEAD_BUCKETS),
            ring: PassportRing::new(ring_size),
            tunnels: TunnelMetrics::default(),
            slow_us: AtomicU64::new(slow.as_micros() as u64),
            reloads: Default::default(),
            by_protocol: Default::default(),
            rate_limits: Default::default(),
            access_log: None,
            tracer: None,
        }
    }

    /// The counters of listener `name`, created on first use (a listener added by a reload).
    /// Taken once per listener start, never per request: connections hold the `Arc`.
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        if let Some(l) = self.listeners.read().iter().find(|l| &*l.name == name) {
            return l.clone();
        }
        let mut all = self.listeners.write();
        if let Some(l) = all.iter().find(|l| &*l.name == name) {
            return l.clone();
        }
        let l = Arc::new(ListenerMetrics {
            name: Arc::from(name),
            ..Default::default()
        });
        all.push(l.clone());
        l
    }

    pub fn set_slow(&self, slow: Duration) {
        self.slow_us
            .store(slow.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts one config reload; `result` is one of `RELOAD_RESULTS`.
    pub fn count_reload(&self, result: &str) {
        if let Some(i) = RELOAD_RESULTS.iter().position(|r| *r == result) {
            self.reloads[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Feeds finished requests to `log` too.
    pub fn with_access_log(mut self, log: Option<access_log::AccessLog>) -> Self {
        self.access_log = log;
        self
    }

    /// Samples requests and exports their spans with `tracer` too.
    pub(crate) fn with_tracer(mut self, tracer: Option<trace::Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// Turns a finished request's passport into metrics, and keeps it if slow or failed.
    /// `routes` are the per-route counters of the config the request ran under.
    pub fn finish(&self, mut f: Finished, routes: &[Arc<RouteMetrics>]) {
        if !f.passport.has(State::Done) {
            f.passport.stamp(State::Done);
        }
        // An upgraded request ends at its 101: the tunnel after it is not request time.
        let end = f
            .passport
            .at(State::Upgraded)
            .unwrap_or_else(|| f.passport.last_at());
        let total = end.saturating_duration_since(f.passport.start());
        let overhead = total.saturating_sub(f.passport.waiting());
        let rm = f
            .route
            .and_then(|i| routes.get(i))
            .map_or(&self.unrouted, |r| &**r);
        let class = (f.status / 100).clamp(1, 5) as usize - 1;
        rm.status[class].fetch_add(1, Ordering::Relaxed);
        rm.duration.observe(total);
        self.overhead.observe(overhead);
        if let Some(i) = PROTOCOLS.iter().position(|p| *p == f.protocol) {
            self.by_protocol[i].fetch_add(1, Ordering::Relaxed);
        }
        let slow = Duration::from_micros(self.slow_us.load(Ordering::Relaxed));
        if total >= slow || f.passport.failed() || f.status >= 500 {
            self.ring
                .push(PassportRecord::from_finished(&f, total, overhead));
        }
        if let Some(t) = &self.tracer {
            t.record(&mut f, end);
        }
        if let Some(log) = &self.access_log {
            log.record(f, total, overhead);
        }
    }

    /// Writes the request, protocol, overhead and listener families.
    pub(crate) fn render(&self, w: &mut Writer, live: &[Arc<RouteMetrics>]) {
        let routes = || {
            live.iter()
                .map(|r| &**r)
                .chain(std::iter::once(&self.unrouted))
        };
        let mut f = w.family(
            "portcullis_requests_total",
            "Requests finished, by route and status class.",
            Kind::Counter,
        );
        for rm in routes() {
            for (class, c) in STATUS_CLASSES.iter().zip(&rm.status) {
                f.sample(
                    &[("route", &rm.name), ("status_class", class)],
                    c.load(Ordering::Relaxed),
                );
            }
        }
        let mut f = w.family(
            "portcullis_requests_by_protocol_total",
            "Requests finished, by client protocol.",
            Kind::Counter,
        );
        for (p, c) in PROTOCOLS.iter().zip(&self.by_protocol) {
            f.sample(&[("protocol", p)], c.load(Ordering::Relaxed));
        }
        let mut f = w.family(
            "portcullis_request_duration_seconds",
            "Whole-request time, head received to last body byte.",
            Kind::Histogram,
        );
        for rm in routes() {
            f.histogram(&[("route", &rm.name)], &rm.duration);
        }
        w.family(
            "portcullis_overhead_seconds",
            "Time the gateway itself added: total minus waiting on client, upstreams and fan-out calls.",
            Kind::Histogram,
        )
        .histogram(&[], &self.overhead);
        let listeners = self.listeners.read().clone();
        type Getter = fn(&ListenerMetrics) -> Num;
        let per_listener: [(&'static str, &str, Kind, Getter); 7] = [
            (
                "portcullis_connections_accepted_total",
                "Client connections accepted.",
                Kind::Counter,
                |l| l.accepted.load(Ordering::Relaxed).into(),
            ),
            (
                "portcullis_connections_active",
                "Client connections open now.",
                Kind::Gauge,
                |l| l.active.load(Ordering::Relaxed).into(),
            ),
            (
                "portcullis_connections_rejected_total",
                "Client connections closed at accept because the listener was full.",
                Kind::Counter,
                |l| l.rejected.load(Ordering::Relaxed).into(),
            ),
            (
                "portcullis_client_header_timeouts_total",
                "Connections closed with 408 because the request head did not arrive in time.",
                Kind::Counter,
                |l| l.header_timeouts.load(Ordering::Relaxed).into(),
            ),
            (
                "portcullis_tls_certificate_reloads_total",
                "Certificate sets reloaded from disk.",
                Kind::Counter,
                |l| l.tls_reloads.load(Ordering::Relaxed).into(),
            ),
            (
                "portcullis_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
                Kind::Counter,
                |l| l.tls_failures.load(Ordering::Relaxed).into(),
            ),
            (
                "portcullis_proxy_protocol_failures_total",
                "Connections closed because their PROXY protocol header was missing, late or invalid.",
                Kind::Counter,
                |l| l.proxy_header_failures.load(Ordering::Relaxed).into(),
            ),
        ];
        for (name, help, kind, get) in per_listener {
            let mut f = w.family(name, help, kind);
            for l in &listeners {
                f.sample(&[("listener", &l.name)], get(l));
            }
        }
        let mut f = w.family(
            "portcullis_h2_connection_errors_total",
            "HTTP/2 client connections ended with an error, and streams the gateway cut itself, by reason.",
            Kind::Counter,
        );
        for l in &listeners {
            for (r, c) in H2_ERROR_REASONS.iter().zip(&l.h2_errors) {
                f.sample(
                    &[("listener", &l.name), ("reason", r)],
                    c.load(Ordering::Relaxed),
                );
            }
        }
        self.tunnels.render(w, &listeners);
        self.render_rate_limits(w);
        let mut f = w.family(
            "portcullis_config_reloads_total",
            "Config reloads (SIGHUP or POST /admin/config/reload), by result: ok, invalid, refused (a key that cannot change at runtime), error.",
            Kind::Counter,
        );
        for (r, c) in RELOAD_RESULTS.iter().zip(&self.reloads) {
            f.sample(&[("result", r)], c.load(Ordering::Relaxed));
        }
        if let Some(log) = &self.access_log {
            log.render(w);
        }
        if let Some(t) = &self.tracer {
            t.render(w);
        }
    }
}

/// `status_class` label values; index = status / 100 - 1.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, Clone, Serialize)]
pub struct StampRecord {
    pub state: &'static str,
    /// Microseconds since the request head was received.
    pub at_us: u64,
}

/// A passport as served by `GET /admin/passports`.
#[derive(Debug, Clone, Serialize)]
pub struct PassportRecord {
    pub request_id: Option<String>,
    pub protocol: &'static str,
    pub method: String,
    pub path: String,
    pub route: Option<String>,
    pub cluster: Option<String>,
    pub endpoint: Option<String>,
    pub status: u16,
    pub total_us: u64,
    pub overhead_us: u64,
    pub states: Vec<StampRecord>,
    pub detail: Option<String>,
    /// Upstream attempts (0 when none was tried).
    pub attempts: u32,
    /// The plugins that changed or answered the request, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
    /// An endpoint's upstream calls, in completion order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallView>,
}

/// One fan-out call in a passport.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    pub cluster: String,
    pub endpoint: Option<String>,
    pub status: Option<u16>,
    pub error: Option<&'static str>,
    pub attempts: u32,
    pub start_us: u64,
    pub end_us: u64,
}

impl PassportRecord {
    fn from_finished(f: &Finished, total: Duration, overhead: Duration) -> Self {
        let start = f.passport.start();
        let mut path = f
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        path.truncate(256);
        PassportRecord {
            request_id: f
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            protocol: f.protocol,
            method: f.method.to_string(),
            path,
            route: f.route_name.as_deref().map(str::to_string),
            cluster: f.cluster.as_deref().map(str::to_string),
            endpoint: f.endpoint.as_deref().map(str::to_string),
            status: f.status,
            total_us: total.as_micros() as u64,
            overhead_us: overhead.as_micros() as u64,
            states: f
                .passport
                .stamps()
                .iter()
                .map(|s| StampRecord {
                    state: s.state.name(),
                    at_us: s.at.saturating_duration_since(start).as_micros() as u64,
                })
                .collect(),
            detail: f.passport.detail.clone(),
            attempts: f.attempts,
            plugins: f.passport.plugins.iter().map(|p| p.to_string()).collect(),
            calls: f
                .passport
                .calls
                .iter()
                .map(|c| CallView {
                    cluster: c.cluster.clone(),
                    endpoint: c.endpoint.clone(),
                    status: c.status,
                    error: c.error,
                    attempts: c.attempts,
                    start_us: c.start.saturating_duration_since(start).as_micros() as u64,
                    end_us: c.end.saturating_duration_since(start).as_micros() as u64,
                })
                .collect(),
        }
    }
}

/// Bounded ring of recent slow or failed passports. Only slow/failed requests take the lock.
#[derive(Debug)]
pub struct PassportRing {
    cap: usize,
    inner: Mutex<VecDeque<PassportRecord>>,
    dropped: AtomicU64,
}

impl PassportRing {
    pub fn new(cap: usize) -> Self {
        PassportRing {
            cap: cap.max(1),
            inner: Mutex::new(VecDeque::with_capacity(cap.clamp(1, 4096))),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn push(&self, rec: PassportRecord) {
        let mut q = self.inner.lock();
        if q.len() >= self.cap {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(rec);
    }

    /// Newest first.
    pub fn snapshot(&self) -> Vec<PassportRecord> {
        self.inner.lock().iter().rev().cloned().collect()
    }
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filter, `PORTCULLIS_LOG_FORMAT=json`
/// for structured output.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("PORTCULLIS_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colours only for a person at a terminal: a file, a pipe or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
