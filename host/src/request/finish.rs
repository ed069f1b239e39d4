//! The end of a request: its passport turned into metrics, its permits released.

use super::{ConnInfo, Services};
use crate::core::body::ReqShared;
use crate::core::passport::{Passport, State};
use crate::shed::Permit;
use crate::upstream::client::{Held, Journal};
use http::{HeaderValue, Method};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Owns a request's passport until the request is over, then turns it into metrics. Moves
/// into the response body when the response streams, so "over" means the last byte.
pub(crate) struct Finisher {
    pub passport: Passport,
    pub(super) svc: Arc<Services>,
    pub(super) conn: Arc<ConnInfo>,
    /// The request's client: the connection's, or what a trusted proxy's `X-Forwarded-For`
    /// says (fixed at admission, `core::client`). Limits, filters and the log read this.
    pub(super) client: std::net::SocketAddr,
    pub(super) route: Option<usize>,
    pub(super) route_name: Option<Arc<str>>,
    pub(super) cluster: Option<Arc<str>>,
    pub(super) endpoint: Option<Arc<str>>,
    pub(super) status: u16,
    pub(super) method: Method,
    pub(super) uri: http::Uri,
    pub(super) request_id: Option<HeaderValue>,
    pub(super) protocol: &'static str,
    pub(super) req_body: Option<Arc<ReqShared>>,
    pub(super) permits: SmallVec<[Permit; 2]>,
    pub(super) retry_permits: Vec<crate::upstream::retry::RetryPermit>,
    /// Upstream attempts made (each pick of an endpoint).
    pub(super) attempts: u32,
    /// Request body bytes read from the client (a buffered body; a streamed one is read from
    /// `req_body` at the end).
    pub(super) bytes_in: u64,
    /// Response body bytes handed down to the client.
    pub(super) bytes_out: u64,
    /// What the WebSocket tunnel after an upgrade carried (boxed: the cold path).
    pub(super) tunnel: Option<Box<crate::telemetry::TunnelStats>>,
    pub(super) done: bool,
}

impl Finisher {
    /// Ends the request now.
    pub(crate) fn finish(mut self) {
        self.complete();
    }

    pub(super) fn complete(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(shared) = &self.req_body {
            if let Some(at) = shared.sent_at() {
                self.passport.stamp_at(State::ReqBodySent, at);
            }
            self.bytes_in = self.bytes_in.max(shared.received());
        }
        let start = self.passport.start();
        let passport = std::mem::replace(&mut self.passport, Passport::new(start));
        self.svc.metrics.finish(
            crate::telemetry::Finished {
                passport,
                route: self.route,
                route_name: self.route_name.take(),
                cluster: self.cluster.take(),
                endpoint: self.endpoint.take(),
                status: self.status,
                method: std::mem::take(&mut self.method),
                uri: std::mem::take(&mut self.uri),
                request_id: self.request_id.take(),
                protocol: self.protocol,
                client: self.client,
                attempts: self.attempts,
                bytes_in: self.bytes_in,
                bytes_out: self.bytes_out,
                tunnel: self.tunnel.take(),
            },
            &self.svc.route_metrics,
        );
        self.permits.clear();
        self.retry_permits.clear();
        self.conn.state.end();
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        if !self.done {
            // Dropped without an answer: hyper dropped the request future because the client
            // went away. 499 is the conventional "client closed request".
            self.passport.stamp(State::ClientDisconnected);
            self.passport.error.get_or_insert("client-disconnected");
            self.status = 499;
            self.complete();
        }
    }
}

impl Finisher {
    /// Moves the request's ending out (into a streaming body), leaving a spent one behind
    /// whose drop does nothing. Lets the phases borrow the exchange instead of moving it,
    /// which keeps every request's future small (each by-value move of the exchange into a
    /// nested future is another copy of it inside the state machine).
    pub(super) fn take(&mut self) -> Finisher {
        let spent = Finisher {
            passport: Passport::new(self.passport.start()),
            svc: self.svc.clone(),
            conn: self.conn.clone(),
            client: self.client,
            route: None,
            route_name: None,
            cluster: None,
            endpoint: None,
            status: 0,
            method: Method::GET,
            uri: http::Uri::default(),
            request_id: None,
            protocol: "",
            req_body: None,
            permits: SmallVec::new(),
            retry_permits: Vec::new(),
            attempts: 0,
            bytes_in: 0,
            bytes_out: 0,
            tunnel: None,
            done: true,
        };
        std::mem::replace(self, spent)
    }

    /// Keeps what a call holds (cluster slot, retry budget) until the request ends.
    pub(super) fn hold(&mut self, held: Held) {
        if let Some(p) = held.cluster {
            self.permits.push(p);
        }
        self.retry_permits.extend(held.retries);
    }
}

/// The proxy's journal of its upstream attempts is the passport.
impl Journal for Finisher {
    fn stamp_at(&mut self, state: State, at: Instant) {
        self.passport.stamp_at(state, at);
    }
    fn waited(&mut self, d: Duration) {
        self.passport.add_waiting(d);
    }
    fn attempt(&mut self, endpoint: &Arc<str>, at: Instant) -> Option<HeaderValue> {
        self.attempts += 1;
        self.endpoint = Some(endpoint.clone());
        let trace = self.passport.trace.as_mut()?;
        Some(trace.begin_attempt(endpoint, at))
    }
    fn attempt_ended(&mut self, attempt: u32, how: Result<(u16, Instant), &'static str>) {
        if let Some(t) = self.passport.trace.as_mut() {
            t.end_attempt(attempt, how);
        }
    }
    fn detail(&mut self, d: String) {
        self.passport.set_detail(d);
    }
}
