//! `upstream.fetch` / `fetch-all`: an endpoint's calls to the gateway's clusters.
//!
//! Each call takes the same path as proxied traffic (cluster concurrency limit, balancer,
//! outlier detection, pool, one retry on another endpoint for idempotent calls under the
//! cluster's retry budget) and is bounded by its own `timeout-ms`, the request deadline and
//! the manifest's per-request caps. A fan-out runs concurrently on the host while the guest is
//! suspended on its fiber; no worker thread blocks.

use super::bindings::upstream::{self as wit, CallError};
use super::engine::StoreData;
use super::manifest::FanoutLimits;
use crate::config::Priority;
use crate::gateway::Ctx;
use crate::request::body::UpBody;
use crate::upstream::stats::Outcome;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use serde::Serialize;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state of an endpoint's calls; lives in the call's store.
pub struct FanoutCtx {
    ctx: Arc<Ctx>,
    deadline: Instant,
    limits: FanoutLimits,
    priority: Priority,
    calls_made: u32,
    waited: Duration,
    /// One record per call, for the passport.
    pub records: Vec<CallRecord>,
}

/// One upstream call as the passport shows it.
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
}

impl FanoutCtx {
    pub fn new(ctx: Arc<Ctx>, deadline: Instant, limits: FanoutLimits, priority: Priority) -> Self {
        FanoutCtx {
            ctx,
            deadline,
            limits,
            priority,
            calls_made: 0,
            waited: Duration::ZERO,
            records: Vec::new(),
        }
    }

    /// Time the guest spent suspended on upstream calls (waiting, not overhead or CPU).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    async fn run(&mut self, calls: Vec<wit::Call>) -> Vec<Result<wit::Reply, CallError>> {
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
                self.ctx.clone(),
                c,
                self.deadline,
                self.limits.max_response_bytes,
                self.priority,
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

impl wit::Host for StoreData {
    async fn fetch(&mut self, call: wit::Call) -> Result<wit::Reply, CallError> {
        match self.fanout.as_mut() {
            Some(f) => f
                .run(vec![call])
                .await
                .pop()
                .unwrap_or(Err(CallError::UpstreamReset)),
            None => Err(not_endpoint()),
        }
    }

    async fn fetch_all(&mut self, calls: Vec<wit::Call>) -> Vec<Result<wit::Reply, CallError>> {
        match self.fanout.as_mut() {
            Some(f) => f.run(calls).await,
            None => calls.iter().map(|_| Err(not_endpoint())).collect(),
        }
    }
}

fn not_endpoint() -> CallError {
    CallError::LimitExceeded("upstream calls are only available to endpoints".into())
}

fn error_name(e: &CallError) -> &'static str {
    match e {
        CallError::Timeout => "timeout",
        CallError::ConnectFailed => "connect-failed",
        CallError::Overloaded => "overloaded",
        CallError::UnknownCluster => "unknown-cluster",
        CallError::LimitExceeded(_) => "limit-exceeded",
        CallError::UpstreamReset => "upstream-reset",
    }
}

async fn one_call(
    ctx: Arc<Ctx>,
    call: wit::Call,
    request_deadline: Instant,
    max_response_bytes: usize,
    priority: Priority,
) -> (Result<wit::Reply, CallError>, CallRecord) {
    let start = Instant::now();
    let mut rec = CallRecord {
        cluster: call.cluster.clone(),
        endpoint: None,
        status: None,
        error: None,
        attempts: 0,
        start,
        end: start,
    };
    let res = dispatch(
        &ctx,
        call,
        request_deadline,
        max_response_bytes,
        priority,
        &mut rec,
    )
    .await;
    rec.end = Instant::now();
    match &res {
        Ok(r) => rec.status = Some(r.status),
        Err(e) => rec.error = Some(error_name(e)),
    }
    (res, rec)
}

async fn dispatch(
    ctx: &Ctx,
    call: wit::Call,
    request_deadline: Instant,
    max_response_bytes: usize,
    priority: Priority,
    rec: &mut CallRecord,
) -> Result<wit::Reply, CallError> {
    let Some(cluster) = ctx.upstreams.get(&call.cluster) else {
        return Err(CallError::UnknownCluster);
    };
    if call.timeout_ms == 0 {
        return Err(CallError::LimitExceeded(
            "timeout-ms must be greater than 0".into(),
        ));
    }
    let deadline =
        (Instant::now() + Duration::from_millis(u64::from(call.timeout_ms))).min(request_deadline);
    let method = Method::from_bytes(call.method.as_bytes())
        .map_err(|_| CallError::LimitExceeded(format!("invalid method `{}`", call.method)))?;
    let path: http::uri::PathAndQuery = call
        .path
        .parse()
        .ok()
        .filter(|p: &http::uri::PathAndQuery| p.as_str().starts_with('/'))
        .ok_or_else(|| CallError::LimitExceeded(format!("invalid path `{}`", call.path)))?;
    if call.headers.len() > ctx.limits.max_headers {
        return Err(CallError::LimitExceeded("too many headers".into()));
    }
    let mut headers = http::HeaderMap::with_capacity(call.headers.len() + 1);
    for (k, v) in &call.headers {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            return Err(CallError::LimitExceeded(format!("invalid header `{k}`")));
        };
        headers.append(k, v);
    }
    crate::request::headers::strip_hop_by_hop(&mut headers);
    let body = Bytes::from(call.body);
    let _permit = cluster
        .limit
        .try_acquire(priority)
        .ok_or(CallError::Overloaded)?;

    let idempotent = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let max_attempts = if idempotent { 2 } else { 1 };
    let connect = Duration::from_millis(ctx.timeouts.connect_ms);
    let mut tried: SmallVec<[usize; 2]> = SmallVec::new();
    let mut last = CallError::ConnectFailed;
    let mut _retry_permit = None;
    while (tried.len() as u32) < max_attempts {
        if Instant::now() >= deadline {
            return Err(CallError::Timeout);
        }
        if !tried.is_empty() {
            match cluster.retry_budget.try_acquire(cluster.in_flight()) {
                Some(p) => _retry_permit = Some(p),
                None => return Err(last),
            }
        }
        let Some(ei) = cluster.pick(&tried) else {
            return Err(last);
        };
        tried.push(ei);
        rec.attempts += 1;
        let ep = &cluster.endpoints[ei];
        rec.endpoint = Some(ep.addr.to_string());
        let inflight = cluster.stats[ei].begin();
        let mut conn = match ep
            .pool
            .acquire((Instant::now() + connect).min(deadline))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                inflight.finish(Outcome {
                    latency: Duration::ZERO,
                    failed: true,
                });
                cluster.outlier.on_failure(ei, Instant::now());
                last = if Instant::now() >= deadline {
                    CallError::Timeout
                } else {
                    CallError::ConnectFailed
                };
                tracing::debug!(cluster = %cluster.name, error = %e, "fan-out connect failed");
                continue;
            }
        };
        let mut req = http::Request::new(if body.is_empty() {
            UpBody::Empty
        } else {
            UpBody::Full(Some(body.clone()))
        });
        *req.method_mut() = method.clone();
        *req.headers_mut() = headers.clone();
        let uri = if conn.sender.is_h2() {
            format!("{}://{}{}", ep.pool.connector().scheme(), ep.addr, path)
        } else {
            req.headers_mut().insert(
                http::header::HOST,
                HeaderValue::from_str(&ep.addr).unwrap_or(HeaderValue::from_static("upstream")),
            );
            path.to_string()
        };
        match uri.parse() {
            Ok(u) => *req.uri_mut() = u,
            Err(_) => return Err(CallError::LimitExceeded("invalid path".into())),
        }
        let sent = Instant::now();
        let resp = match tokio::time::timeout_at(deadline.into(), conn.sender.send(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                inflight.finish(Outcome {
                    latency: sent.elapsed(),
                    failed: true,
                });
                cluster.outlier.on_failure(ei, Instant::now());
                tracing::debug!(cluster = %cluster.name, error = %e, "fan-out call reset");
                last = CallError::UpstreamReset;
                continue;
            }
            Err(_) => {
                inflight.finish(Outcome {
                    latency: sent.elapsed(),
                    failed: true,
                });
                return Err(CallError::Timeout);
            }
        };
        let (parts, incoming) = resp.into_parts();
        let latency = sent.elapsed();
        let failed = parts.status.is_server_error();
        inflight.finish(Outcome { latency, failed });
        if failed && cluster.outlier_cfg.eject_on_5xx {
            cluster.outlier.on_failure(ei, Instant::now());
        } else {
            cluster.outlier.on_success(ei);
        }
        let body = read_capped(incoming, max_response_bytes, deadline).await?;
        ep.pool.release(conn);
        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        return Ok(wit::Reply {
            status: parts.status.as_u16(),
            headers,
            body: body.to_vec(),
        });
    }
    Err(last)
}

/// Reads a response body up to `cap` bytes before `deadline`.
async fn read_capped(
    mut body: hyper::body::Incoming,
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
