//! `upstream.fetch` / `fetch-all`: an endpoint's calls to the gateway's clusters.
//!
//! Each call goes through the one upstream client (`upstream::client::send`), exactly like
//! proxied traffic: cluster concurrency limit, balancer, outlier detection, pool, the
//! cluster's connect timeout, retries on another endpoint for replayable methods under the
//! cluster's retry budget (counted in `portcullis_retries_total`). It is bounded by its own
//! `timeout-ms`, the request deadline and the manifest's per-request caps. A fan-out runs concurrently on the host while the guest is
//! suspended on its fiber; no worker thread blocks.

use super::api::{self, CallError};
use super::engine::StoreData;
use super::manifest::FanoutLimits;
use crate::config::{self, Priority};
use crate::core::failure::Failure;
use crate::core::passport::{CallRecord, State};
use crate::core::trace::CallSpan;
use crate::upstream::client::{self, Body, Head, Journal, Policy};
use crate::upstream::connect::UpstreamBody;
use crate::upstream::Upstreams;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state of an endpoint's calls; lives in the call's store.
pub struct FanoutCtx {
    upstreams: Arc<Upstreams>,
    max_headers: usize,
    deadline: Instant,
    limits: FanoutLimits,
    priority: Priority,
    calls_made: u32,
    waited: Duration,
    /// `(trace id, endpoint call's span id)` when the request is traced: each call gets a
    /// span of its own, and the upstream sees it as the parent.
    trace: Option<(u128, u64)>,
    /// One record per call, for the passport.
    pub records: Vec<CallRecord>,
}

impl FanoutCtx {
    pub fn new(
        upstreams: Arc<Upstreams>,
        deadline: Instant,
        limits: FanoutLimits,
        priority: Priority,
        max_headers: usize,
        trace: Option<(u128, u64)>,
    ) -> Self {
        FanoutCtx {
            upstreams,
            max_headers,
            deadline,
            limits,
            priority,
            calls_made: 0,
            waited: Duration::ZERO,
            trace,
            records: Vec::new(),
        }
    }

    /// Time the guest spent suspended on upstream calls (waiting, not overhead or CPU).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    async fn run(&mut self, calls: Vec<api::Call>) -> Vec<Result<api::Reply, CallError>> {
        if calls.len() > self.limits.max_fanout as usize {
            let why = format!(
                "max_fanout: {} calls at once, the manifest allows {}",
                calls.len(),
                self.limits.max_fanout
            );
            return calls
                .iter()
                .map(|_| Err(CallError::LimitExceeded(why.clone())))
                .collect();
        }
        let t0 = Instant::now();
        let mut futs = Vec::with_capacity(calls.len());
        let mut refused = Vec::with_capacity(calls.len());
        for c in calls {
            if self.calls_made >= self.limits.max_calls {
                refused.push(Some(format!(
                    "max_calls: the manifest allows {} calls per request",
                    self.limits.max_calls
                )));
                continue;
            }
            self.calls_made += 1;
            refused.push(None);
            futs.push(one_call(
                self.upstreams.clone(),
                c,
                self.deadline,
                self.limits.max_response_bytes,
                self.max_headers,
                self.priority,
                self.trace,
            ));
        }
        let mut done = futures_util::future::join_all(futs).await.into_iter();
        self.waited += t0.elapsed();
        let mut out = Vec::with_capacity(refused.len());
        for r in refused {
            match r {
                Some(why) => out.push(Err(CallError::LimitExceeded(why))),
                None => match done.next() {
                    Some((res, rec)) => {
                        self.records.push(rec);
                        out.push(res);
                    }
                    None => out.push(Err(CallError::UpstreamReset)),
                },
            }
        }
        out
    }
}

/// `upstream.fetch` / `fetch-all` for every WIT version (each version's host trait converts
/// and delegates here: `versions::common_imports!`).
impl StoreData {
    pub(crate) async fn upstream_fetch(
        &mut self,
        call: api::Call,
    ) -> Result<api::Reply, CallError> {
        match self.fanout.as_mut() {
            Some(f) => f
                .run(vec![call])
                .await
                .pop()
                .unwrap_or(Err(CallError::UpstreamReset)),
            None => Err(not_endpoint()),
        }
    }

    pub(crate) async fn upstream_fetch_all(
        &mut self,
        calls: Vec<api::Call>,
    ) -> Vec<Result<api::Reply, CallError>> {
        match self.fanout.as_mut() {
            Some(f) => f.run(calls).await,
            None => calls.iter().map(|_| Err(not_endpoint())).collect(),
        }
    }
}

fn not_endpoint() -> CallError {
    CallError::InvalidCall("upstream calls are only available to endpoints".into())
}

async fn one_call(
    upstreams: Arc<Upstreams>,
    call: api::Call,
    request_deadline: Instant,
    max_response_bytes: usize,
    max_headers: usize,
    priority: Priority,
    trace: Option<(u128, u64)>,
) -> (Result<api::Reply, CallError>, CallRecord) {
    let start = Instant::now();
    let mut rec = CallRecord {
        cluster: call.cluster.clone(),
        endpoint: None,
        status: None,
        error: None,
        attempts: 0,
        start,
        end: start,
        span: trace.map(|(_, parent)| CallSpan {
            span_id: crate::core::trace::new_span_id(),
            parent,
            path: call.path.clone(),
        }),
    };
    let traceparent = trace
        .zip(rec.span.as_ref())
        .map(|((trace_id, _), s)| crate::core::headers::traceparent(trace_id, s.span_id, true));
    let res = dispatch(
        &upstreams,
        call,
        request_deadline,
        max_response_bytes,
        max_headers,
        priority,
        &mut rec,
        traceparent,
    )
    .await;
    rec.end = Instant::now();
    match &res {
        Ok(r) => rec.status = Some(r.status),
        Err(e) => rec.error = Some(e.name()),
    }
    (res, rec)
}

/// A fan-out call's journal is its call record: the passport gets one start and end per call.
impl Journal for CallRecord {
    fn stamp_at(&mut self, _: State, _: Instant) {}
    fn waited(&mut self, _: Duration) {}
    fn attempt(&mut self, endpoint: &Arc<str>, _: Instant) -> Option<HeaderValue> {
        self.attempts += 1;
        self.endpoint = Some(endpoint.to_string());
        None
    }
    fn detail(&mut self, _: String) {}
}

/// The WIT's view of a gateway failure.
fn call_error(why: Failure) -> CallError {
    match why {
        Failure::Overloaded => CallError::Overloaded,
        Failure::UnknownCluster => CallError::UnknownCluster,
        Failure::ConnectFailed | Failure::NoHealthyUpstream | Failure::UpstreamTls => {
            CallError::ConnectFailed
        }
        w if w.is_timeout() => CallError::Timeout,
        Failure::UpstreamReset => CallError::UpstreamReset,
        other => CallError::LimitExceeded(other.reason().into_owned()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    upstreams: &Upstreams,
    call: api::Call,
    request_deadline: Instant,
    max_response_bytes: usize,
    max_headers: usize,
    priority: Priority,
    rec: &mut CallRecord,
    traceparent: Option<HeaderValue>,
) -> Result<api::Reply, CallError> {
    let Some(cluster) = upstreams.get(&call.cluster) else {
        return Err(CallError::UnknownCluster);
    };
    if call.timeout_ms == 0 {
        return Err(CallError::InvalidCall(
            "timeout-ms must be greater than 0".into(),
        ));
    }
    let timeout = Duration::from_millis(u64::from(call.timeout_ms));
    let deadline = (Instant::now() + timeout).min(request_deadline);
    let method = Method::from_bytes(call.method.as_bytes())
        .map_err(|_| CallError::InvalidCall(format!("invalid method `{}`", call.method)))?;
    let path: http::uri::PathAndQuery = call
        .path
        .parse()
        .ok()
        .filter(|p: &http::uri::PathAndQuery| p.as_str().starts_with('/'))
        .ok_or_else(|| CallError::InvalidCall(format!("invalid path `{}`", call.path)))?;
    if call.headers.len() > max_headers {
        return Err(CallError::LimitExceeded("too many headers".into()));
    }
    let mut headers = http::HeaderMap::with_capacity(call.headers.len() + 1);
    for (k, v) in &call.headers {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            return Err(CallError::InvalidCall(format!("invalid header `{k}`")));
        };
        headers.append(k, v);
    }
    crate::core::headers::strip_hop_by_hop(&mut headers);
    // A traced call names its own span as the parent, whatever the plugin set.
    if let Some(tp) = traceparent {
        headers.insert(crate::core::headers::TRACEPARENT.clone(), tp);
    }
    // The route defaults (2 attempts for replayable methods, 503 retried), the cluster's
    // connect and response-head timeouts: the same policy a proxied request gets from a
    // route without overrides.
    let retry = FANOUT_RETRY.get_or_init(config::Retry::default);
    let timeouts = **cluster.timeouts.load();
    let policy = Policy::for_request(
        &method,
        retry,
        timeouts.connect,
        timeouts.upstream_headers,
        deadline,
        priority,
    );
    let head = Head {
        method,
        path_and_query: path,
        headers,
    };
    let answered = client::send(
        cluster,
        head,
        Body::Replayable(Bytes::from(call.body)),
        &policy,
        rec,
    )
    .await
    .map_err(call_error)?;
    let (parts, mut incoming) = answered.response.into_parts();
    let body = read_capped(&mut incoming, max_response_bytes, deadline).await?;
    let mut conn = answered.conn;
    conn.reclaim(&mut incoming);
    answered.endpoint.pool.release(conn);
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    Ok(api::Reply {
        status: parts.status.as_u16(),
        headers,
        body: body.to_vec(),
    })
}

static FANOUT_RETRY: std::sync::OnceLock<config::Retry> = std::sync::OnceLock::new();

/// Reads a response body up to `cap` bytes before `deadline`.
async fn read_capped(
    body: &mut UpstreamBody,
    cap: usize,
    deadline: Instant,
) -> Result<Bytes, CallError> {
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => return Err(CallError::Timeout),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => return Err(CallError::UpstreamReset),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(d) = frame.into_data() {
            if buf.len() + d.len() > cap {
                return Err(CallError::LimitExceeded(format!(
                    "max_response_bytes: reply larger than {cap} bytes"
                )));
            }
            buf.extend_from_slice(&d);
        }
    }
}
