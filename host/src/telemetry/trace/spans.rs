//! A finished request's records as OpenTelemetry span data. Runs on the exporter thread.
//!
//! Span names are low-cardinality (`GET <route>`, `plugin <name>`, `upstream <cluster>`,
//! `fanout <cluster>`); everything variable is an attribute. Attributes follow the HTTP
//! semantic conventions where one fits (`http.request.method`, `url.path`,
//! `http.response.status_code`, `error.type`) and are `portcullis.*` otherwise.

use super::Entry;
use crate::core::passport::CallRecord;
use crate::core::trace::{AttemptSpan, PluginSpan};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::time::{Instant, SystemTime};

/// Appends the spans of `e` to `out`: the request's first, then its children.
pub(super) fn build(e: &Entry, scope: &InstrumentationScope, out: &mut Vec<SpanData>) {
    let b = Builder { e, scope };
    out.push(b.request());
    out.extend(e.trace.plugins.iter().map(|p| b.plugin(p)));
    let last = e.trace.attempts.len();
    out.extend(
        e.trace
            .attempts
            .iter()
            .enumerate()
            .map(|(i, a)| b.attempt(a, i + 1 == last)),
    );
    out.extend(e.calls.iter().filter_map(|c| b.call(c)));
}

struct Builder<'a> {
    e: &'a Entry,
    scope: &'a InstrumentationScope,
}

impl Builder<'_> {
    fn time(&self, at: Instant) -> SystemTime {
        self.e.wall + at.saturating_duration_since(self.e.start)
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        span_id: u64,
        parent: u64,
        remote_parent: bool,
        kind: SpanKind,
        name: String,
        (start, end): (Instant, Instant),
        attributes: Vec<KeyValue>,
        error: Option<&'static str>,
    ) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(self.e.trace.trace_id),
                SpanId::from(span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: remote_parent,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: self.time(start),
            end_time: self.time(end.max(start)),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match error {
                Some(code) => Status::error(code),
                None => Status::Unset,
            },
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// The request's server span: its parent is the client's span, if it sent one.
    fn request(&self) -> SpanData {
        let e = self.e;
        let name = match &e.route {
            Some(r) => format!("{} {r}", e.method),
            None => e.method.to_string(),
        };
        let mut attrs = vec![
            KeyValue::new("http.request.method", e.method.to_string()),
            KeyValue::new("url.path", e.uri.path().to_string()),
            KeyValue::new("http.response.status_code", i64::from(e.status)),
            KeyValue::new("network.protocol.name", e.protocol),
        ];
        let opt = [
            ("portcullis.route", e.route.as_deref()),
            ("portcullis.cluster", e.cluster.as_deref()),
            (
                "portcullis.request_id",
                e.request_id.as_ref().and_then(|v| v.to_str().ok()),
            ),
            ("error.type", e.error),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                attrs.push(KeyValue::new(k, v.to_string()));
            }
        }
        // A server span is an error when the gateway failed or answered 5xx (4xx are the
        // client's).
        let error = e.error.or((e.status >= 500).then_some("5xx"));
        self.span(
            e.trace.span_id,
            e.trace.parent.unwrap_or(0),
            e.trace.parent.is_some(),
            SpanKind::Server,
            name,
            (e.start, e.end),
            attrs,
            error,
        )
    }

    fn plugin(&self, p: &PluginSpan) -> SpanData {
        let failed = !matches!(p.outcome, "continue" | "modify" | "respond" | "reject");
        let attrs = vec![
            KeyValue::new("portcullis.plugin.name", p.plugin.to_string()),
            KeyValue::new("portcullis.plugin.version", p.version.clone()),
            KeyValue::new("portcullis.plugin.phase", p.phase),
            KeyValue::new("portcullis.plugin.outcome", p.outcome),
            KeyValue::new("portcullis.plugin.cpu_us", p.cpu.as_micros() as i64),
        ];
        self.span(
            p.span_id,
            self.e.trace.span_id,
            false,
            SpanKind::Internal,
            format!("plugin {}", p.plugin),
            (p.start, p.end),
            attrs,
            failed.then_some(p.outcome),
        )
    }

    /// An upstream attempt. The answered last one lasts until the response body was relayed
    /// (the request's end); a retried or failed one ends at its head or failure.
    fn attempt(&self, a: &AttemptSpan, last: bool) -> SpanData {
        let e = self.e;
        let end = match (a.end, a.status) {
            (Some(_), Some(_)) if last => e.end,
            (Some(t), _) => t,
            (None, _) => e.end,
        };
        let cluster = e.cluster.as_deref().unwrap_or("");
        let mut attrs = vec![
            KeyValue::new("portcullis.cluster", cluster.to_string()),
            KeyValue::new("server.address", a.endpoint.to_string()),
            KeyValue::new("portcullis.upstream.attempt", i64::from(a.attempt)),
        ];
        if let Some(s) = a.status {
            attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if let Some(f) = a.failure {
            attrs.push(KeyValue::new("error.type", f));
        }
        let error = a.failure.or(a.status.filter(|s| *s >= 500).map(|_| "5xx"));
        self.span(
            a.span_id,
            e.trace.span_id,
            false,
            SpanKind::Client,
            format!("upstream {cluster}"),
            (a.start, end),
            attrs,
            error,
        )
    }

    /// A fan-out call of an endpoint plugin: a child of that plugin's call.
    fn call(&self, c: &CallRecord) -> Option<SpanData> {
        let s = c.span.as_ref()?;
        let outcome = match (c.status, c.error) {
            (_, Some(err)) => err.to_string(),
            (Some(status), None) => status.to_string(),
            (None, None) => "unknown".to_string(),
        };
        let mut attrs = vec![
            KeyValue::new("portcullis.cluster", c.cluster.clone()),
            KeyValue::new("url.path", s.path.clone()),
            KeyValue::new("portcullis.fanout.outcome", outcome),
            KeyValue::new("portcullis.upstream.attempts", i64::from(c.attempts)),
        ];
        if let Some(ep) = &c.endpoint {
            attrs.push(KeyValue::new("server.address", ep.clone()));
        }
        if let Some(st) = c.status {
            attrs.push(KeyValue::new("http.response.status_code", i64::from(st)));
        }
        if let Some(err) = c.error {
            attrs.push(KeyValue::new("error.type", err));
        }
        Some(self.span(
            s.span_id,
            s.parent,
            false,
            SpanKind::Client,
            format!("fanout {}", c.cluster),
            (c.start, c.end),
            attrs,
            c.error,
        ))
    }
}
