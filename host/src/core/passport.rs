//! The passport: the ordered list of states a request went through, each with a timestamp.
//!
//! Why a passport instead of ad-hoc timers: metrics, the slow-request ring and the
//! `overhead` figure are all derived from one record, so they can never disagree, and a
//! slow request can be explained after the fact state by state.

use serde::Serialize;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every state a request can pass through. Failure edges are states of their own so that a
/// passport alone says how a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Accepted,
    HeadersReceived,
    InboundFiltersStart,
    InboundFiltersEnd,
    Routed,
    EndpointStart,
    FanoutCallStart,
    FanoutCallEnd,
    EndpointEnd,
    UpstreamPicked,
    ConnAcquireStart,
    ConnAcquired,
    ReqHeadersSent,
    ReqBodySent,
    RespHeadersReceived,
    OutboundFiltersStart,
    OutboundFiltersEnd,
    RespHeadersSent,
    RespBodySent,
    Done,
    // failure edges
    ClientHeaderTimeout,
    ClientBodyTimeout,
    ClientDisconnected,
    BadRequest,
    BodyTooLarge,
    Shed,
    NoRoute,
    NoHealthyUpstream,
    ConnectTimeout,
    ConnectFailed,
    UpstreamTimeout,
    UpstreamBodyTimeout,
    UpstreamReset,
    Retry,
    PluginTrap,
    PluginCpuExceeded,
    PluginMemoryExceeded,
    PluginRejected,
    PluginResponded,
    DeadlineExceeded,
    /// A `[[rate_limit]]` denied the request (429).
    RateLimited,
    /// The upstream switched protocols and the client got its 101 (or HTTP/2 200): the
    /// request is over, a tunnel carries the bytes. Request timing ends here.
    Upgraded,
    /// A WebSocket upgrade was refused (route forbids it, cluster cannot take it).
    UpgradeRefused,
    /// How a tunnel ended: both sides closed, idle past `tunnel_idle_ms`, closed by drain,
    /// or an I/O error on either side.
    TunnelClosed,
    TunnelIdleTimeout,
    TunnelDrained,
    TunnelError,
}

impl State {
    pub fn name(self) -> &'static str {
        use State::*;
        match self {
            Accepted => "ACCEPTED",
            HeadersReceived => "HEADERS_RECEIVED",
            InboundFiltersStart => "INBOUND_FILTERS_START",
            InboundFiltersEnd => "INBOUND_FILTERS_END",
            Routed => "ROUTED",
            EndpointStart => "ENDPOINT_START",
            FanoutCallStart => "FANOUT_CALL_START",
            FanoutCallEnd => "FANOUT_CALL_END",
            EndpointEnd => "ENDPOINT_END",
            UpstreamPicked => "UPSTREAM_PICKED",
            ConnAcquireStart => "CONN_ACQUIRE_START",
            ConnAcquired => "CONN_ACQUIRED",
            ReqHeadersSent => "REQ_HEADERS_SENT",
            ReqBodySent => "REQ_BODY_SENT",
            RespHeadersReceived => "RESP_HEADERS_RECEIVED",
            OutboundFiltersStart => "OUTBOUND_FILTERS_START",
            OutboundFiltersEnd => "OUTBOUND_FILTERS_END",
            RespHeadersSent => "RESP_HEADERS_SENT",
            RespBodySent => "RESP_BODY_SENT",
            Done => "DONE",
            ClientHeaderTimeout => "CLIENT_HEADER_TIMEOUT",
            ClientBodyTimeout => "CLIENT_BODY_TIMEOUT",
            ClientDisconnected => "CLIENT_DISCONNECTED",
            BadRequest => "BAD_REQUEST",
            BodyTooLarge => "BODY_TOO_LARGE",
            Shed => "SHED",
            RateLimited => "RATE_LIMITED",
            NoRoute => "NO_ROUTE",
            NoHealthyUpstream => "NO_HEALTHY_UPSTREAM",
            ConnectTimeout => "CONNECT_TIMEOUT",
            ConnectFailed => "CONNECT_FAILED",
            UpstreamTimeout => "UPSTREAM_TIMEOUT",
            UpstreamBodyTimeout => "UPSTREAM_BODY_TIMEOUT",
            UpstreamReset => "UPSTREAM_RESET",
            Retry => "RETRY",
            PluginTrap => "PLUGIN_TRAP",
            PluginCpuExceeded => "PLUGIN_CPU_EXCEEDED",
            PluginMemoryExceeded => "PLUGIN_MEMORY_EXCEEDED",
            PluginRejected => "PLUGIN_REJECTED",
            PluginResponded => "PLUGIN_RESPONDED",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            Upgraded => "UPGRADED",
            UpgradeRefused => "UPGRADE_REFUSED",
            TunnelClosed => "TUNNEL_CLOSED",
            TunnelIdleTimeout => "TUNNEL_IDLE_TIMEOUT",
            TunnelDrained => "TUNNEL_DRAINED",
            TunnelError => "TUNNEL_ERROR",
        }
    }

    /// Failure edges make a passport worth keeping in the admin ring.
    pub fn is_failure(self) -> bool {
        use State::*;
        matches!(
            self,
            ClientHeaderTimeout
                | ClientBodyTimeout
                | ClientDisconnected
                | BadRequest
                | BodyTooLarge
                | Shed
                | RateLimited
                | NoRoute
                | NoHealthyUpstream
                | ConnectTimeout
                | ConnectFailed
                | UpstreamTimeout
                | UpstreamBodyTimeout
                | UpstreamReset
                | Retry
                | PluginTrap
                | PluginCpuExceeded
                | PluginMemoryExceeded
                | DeadlineExceeded
                | UpgradeRefused
        )
    }
}

/// A stamped state. `note` carries a short static detail (e.g. which plugin trapped) without
/// allocating on the hot path; dynamic detail goes in `Passport::detail`.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub state: State,
    pub at: Instant,
}

/// The per-request record. Owned by exactly one task at a time (moved, never shared), so it
/// needs no lock.
#[derive(Debug)]
pub struct Passport {
    start: Instant,
    /// Inline room for 16: a proxied request stamps 11 or 12 states, 16 with inbound and
    /// outbound filters; a retry or a fan-out spills to the heap. The passport moves with the
    /// request (into its state machine, the response body, the metrics), so every inline
    /// slot is copied each time: 24 were 576 bytes.
    stamps: SmallVec<[Stamp; 16]>,
    /// Time spent waiting on someone else (client, upstream, fan-out calls): the "blue"
    /// transitions. Overhead is total minus this.
    waiting: Duration,
    /// Free-form detail about failures (plugin name, error text), bounded in length.
    pub detail: Option<String>,
    /// An endpoint's upstream calls (bounded by the manifest's `max_calls`).
    pub calls: Vec<CallRecord>,
    /// Plugins that changed or answered the request, in the order they first did (the
    /// access log's `plugins`). Only touched when a plugin acts.
    pub plugins: SmallVec<[Arc<str>; 2]>,
    /// The failure code the client was answered with (`portcullis-error`), or of the failure
    /// that cut the response short: the access log's `error`.
    pub error: Option<&'static str>,
    /// The request's trace when `[tracing]` sampled it (set at admission); `None` otherwise,
    /// and then no phase records anything for traces.
    pub trace: Option<Box<super::trace::Trace>>,
}

const MAX_STAMPS: usize = 128;
const MAX_DETAIL: usize = 512;
const MAX_PLUGINS: usize = 32;

impl Passport {
    pub fn new(start: Instant) -> Self {
        let mut stamps = SmallVec::new();
        stamps.push(Stamp {
            state: State::Accepted,
            at: start,
        });
        Passport {
            start,
            stamps,
            waiting: Duration::ZERO,
            detail: None,
            calls: Vec::new(),
            plugins: SmallVec::new(),
            error: None,
            trace: None,
        }
    }

    /// Notes that plugin `name` changed or answered the request (once per plugin, bounded).
    pub fn plugin_acted(&mut self, name: &Arc<str>) {
        if self.plugins.len() < MAX_PLUGINS && !self.plugins.iter().any(|p| p == name) {
            self.plugins.push(name.clone());
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records a state now. Bounded: past `MAX_STAMPS` only the final states are kept
    /// (a runaway retry or fan-out loop must not grow the record without end).
    pub fn stamp(&mut self, state: State) {
        self.stamp_at(state, Instant::now());
    }

    /// Records a state at a given instant, keeping stamps in time order (a state observed
    /// by another task, like the request body finishing, may be recorded late).
    pub fn stamp_at(&mut self, state: State, at: Instant) {
        if self.stamps.len() >= MAX_STAMPS && state != State::Done {
            return;
        }
        // Almost every stamp comes in time order: append without the search and the shift
        // (~10 stamps a request at ~100 instructions each through `insert`, under callgrind).
        if self.stamps.last().is_none_or(|s| s.at <= at) {
            self.stamps.push(Stamp { state, at });
            return;
        }
        let pos = self.stamps.partition_point(|s| s.at <= at);
        self.stamps.insert(pos, Stamp { state, at });
    }

    /// Adds a span of time during which the gateway was waiting on someone else.
    pub fn add_waiting(&mut self, d: Duration) {
        self.waiting += d;
    }

    pub fn waiting(&self) -> Duration {
        self.waiting
    }

    pub fn set_detail(&mut self, detail: impl Into<String>) {
        let mut d: String = detail.into();
        if d.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !d.is_char_boundary(cut) {
                cut -= 1;
            }
            d.truncate(cut);
        }
        self.detail = Some(d);
    }

    pub fn stamps(&self) -> &[Stamp] {
        &self.stamps
    }

    pub fn has(&self, state: State) -> bool {
        self.stamps.iter().any(|s| s.state == state)
    }

    pub fn failed(&self) -> bool {
        self.stamps.iter().any(|s| s.state.is_failure())
    }

    /// When `state` was first stamped.
    pub fn at(&self, state: State) -> Option<Instant> {
        self.stamps.iter().find(|s| s.state == state).map(|s| s.at)
    }

    pub fn last_at(&self) -> Instant {
        self.stamps.last().map(|s| s.at).unwrap_or(self.start)
    }
}

/// One upstream call of an endpoint plugin, as the passport shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub cluster: String,
    pub endpoint: Option<String>,
    pub status: Option<u16>,
    pub error: Option<&'static str>,
    pub attempts: u32,
    #[serde(skip)]
    pub start: Instant,
    #[serde(skip)]
    pub end: Instant,
    /// The call's span, when the request is traced.
    #[serde(skip)]
    pub span: Option<super::trace::CallSpan>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state observed late (the request body finishing on another task) goes where its
    /// time puts it, before later ones; in-order stamps append; equal times keep their
    /// arrival order.
    #[test]
    fn stamps_stay_in_time_order_whatever_order_they_come_in() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Passport::new(t0);
        p.stamp_at(State::HeadersReceived, ms(1));
        p.stamp_at(State::ReqHeadersSent, ms(5));
        p.stamp_at(State::ReqBodySent, ms(3));
        p.stamp_at(State::RespHeadersReceived, ms(5));
        p.stamp_at(State::Done, ms(9));
        let got: Vec<State> = p.stamps().iter().map(|s| s.state).collect();
        assert_eq!(
            got,
            [
                State::Accepted,
                State::HeadersReceived,
                State::ReqBodySent,
                State::ReqHeadersSent,
                State::RespHeadersReceived,
                State::Done,
            ]
        );
        assert!(p.stamps().windows(2).all(|w| w[0].at <= w[1].at));
    }

    /// A runaway loop cannot grow the record: past the bound only `Done` is still kept.
    #[test]
    fn stamps_are_bounded_but_done_is_always_kept() {
        let t0 = Instant::now();
        let mut p = Passport::new(t0);
        for i in 0..(MAX_STAMPS as u64 * 2) {
            p.stamp_at(State::Retry, t0 + Duration::from_micros(i));
        }
        assert_eq!(p.stamps().len(), MAX_STAMPS);
        p.stamp_at(State::Done, t0 + Duration::from_secs(1));
        assert_eq!(p.stamps().len(), MAX_STAMPS + 1);
        assert_eq!(p.last_at(), t0 + Duration::from_secs(1));
    }
}
