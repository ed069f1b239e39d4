//! A sampled request's trace, as the request path records it: ids fixed at admission, and one
//! plain record per child span (plugin call, upstream attempt). Fan-out calls keep theirs in
//! the passport's `CallRecord`s.
//!
//! Why records and not live spans: the request path only notes instants and names it already
//! has; `telemetry::trace` turns a finished request's records into OpenTelemetry spans on its
//! exporter thread. An unsampled request has no `Trace` at all (`Passport::trace` is `None`),
//! so it pays one `is_some` per phase and nothing else.

use super::headers;
use http::HeaderValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Child spans kept per kind and request: a runaway retry or filter loop must not grow the
/// record without end (the same reason the passport caps its stamps).
pub(crate) const MAX_CHILD_SPANS: usize = 64;

/// The ids and child-span records of one sampled request.
#[derive(Debug)]
pub struct Trace {
    pub trace_id: u128,
    /// The client's span, when the request continued a sampled `traceparent` (remote parent).
    pub parent: Option<u64>,
    /// The request's own (server) span.
    pub span_id: u64,
    pub plugins: Vec<PluginSpan>,
    pub attempts: Vec<AttemptSpan>,
}

/// One plugin call.
#[derive(Debug)]
pub struct PluginSpan {
    pub span_id: u64,
    pub plugin: Arc<str>,
    pub version: String,
    /// `inbound`, `outbound` or `endpoint`.
    pub phase: &'static str,
    /// `continue`, `modify`, `respond`, `reject`, or the failure kind (`trap`, `timeout`, …).
    pub outcome: &'static str,
    pub start: Instant,
    pub end: Instant,
    /// Time in the call less time suspended on fan-out calls (what `/admin/plugins` calls CPU).
    pub cpu: Duration,
}

/// One upstream attempt of a proxied request.
#[derive(Debug)]
pub struct AttemptSpan {
    pub span_id: u64,
    pub endpoint: Arc<str>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub start: Instant,
    /// When the response head arrived or the attempt failed; `None` while it runs.
    pub end: Option<Instant>,
    pub status: Option<u16>,
    /// The failure code (`connect-failed`, `upstream-reset`, …) when it got no answer.
    pub failure: Option<&'static str>,
}

/// A non-zero random span id (zero is the invalid id in W3C trace context).
pub(crate) fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

impl Trace {
    /// A trace continuing the client's sampled span `parent`, or a new one (`None`).
    pub(crate) fn new(trace_id: u128, parent: Option<u64>) -> Box<Trace> {
        Box::new(Trace {
            trace_id,
            parent,
            span_id: new_span_id(),
            plugins: Vec::new(),
            attempts: Vec::new(),
        })
    }

    /// The `traceparent` naming `span` of this (sampled) trace as the parent.
    pub(crate) fn traceparent(&self, span: u64) -> HeaderValue {
        headers::traceparent(self.trace_id, span, true)
    }

    pub(crate) fn push_plugin(&mut self, s: PluginSpan) {
        if self.plugins.len() < MAX_CHILD_SPANS {
            self.plugins.push(s);
        }
    }

    /// Opens the span of the next upstream attempt and returns the `traceparent` it carries.
    /// Past the bound the attempt still gets its own span id upstream, unrecorded.
    pub(crate) fn begin_attempt(&mut self, endpoint: &Arc<str>, at: Instant) -> HeaderValue {
        let span_id = new_span_id();
        if self.attempts.len() < MAX_CHILD_SPANS {
            self.attempts.push(AttemptSpan {
                span_id,
                endpoint: endpoint.clone(),
                attempt: self.attempts.len() as u32 + 1,
                start: at,
                end: None,
                status: None,
                failure: None,
            });
        }
        self.traceparent(span_id)
    }

    /// Closes attempt number `attempt` (1 for the first): answered with `status` at an
    /// instant, or failed with a code.
    pub(crate) fn end_attempt(&mut self, attempt: u32, how: Result<(u16, Instant), &'static str>) {
        let i = (attempt as usize).wrapping_sub(1);
        let Some(a) = self.attempts.get_mut(i).filter(|a| a.end.is_none()) else {
            return;
        };
        match how {
            Ok((status, at)) => {
                a.status = Some(status);
                a.end = Some(at);
            }
            Err(code) => {
                a.failure = Some(code);
                a.end = Some(Instant::now());
            }
        }
    }
}

/// What a fan-out call records for its span: its id (the parent the upstream sees) and path.
#[derive(Debug, Clone)]
pub struct CallSpan {
    pub span_id: u64,
    /// The endpoint plugin call's span: the parent of this one.
    pub parent: u64,
    pub path: String,
}
