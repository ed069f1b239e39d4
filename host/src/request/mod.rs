//! The request state machine and its passport.
//!
//! `handle` reads top to bottom in the order a request lives:
//!
//! ```text
//! ACCEPTED → HEADERS_RECEIVED → (shed?) → INBOUND_FILTERS → ROUTED → UPSTREAM_PICKED
//!   → CONN_ACQUIRE_START → CONN_ACQUIRED → REQ_HEADERS_SENT → RESP_HEADERS_RECEIVED
//!   → OUTBOUND_FILTERS → RESP_HEADERS_SENT → (body streams) → RESP_BODY_SENT → DONE
//! ```
//!
//! Every early exit is a failure state with its own status and `portcullis-error` code (see
//! `error::Failure`). Every wait is bounded: connect and response-head waits by their
//! timeouts and by the request deadline; bodies by their idle timeouts and the deadline.

pub mod body;
pub mod error;
pub mod headers;
pub mod passport;

use crate::config::Priority;
use crate::gateway::Ctx;
use crate::plugin::{EndpointOutcome, FilterState, InboundOutcome, OutboundOutcome};
use crate::routing::{self, Target};
use crate::shed::Permit;
use crate::upstream::retry::RetryReason;
use crate::upstream::stats::Outcome;
use body::{ClientBody, ReqBody, ReqBodyFault, ReqShared, RespBody, UpBody};
use bytes::Bytes;
use error::{error_response, Failure};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use passport::{Passport, State};
use smallvec::SmallVec;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the request path knows about the client connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub tls: bool,
    pub listener: usize,
    pub state: Arc<ConnState>,
    /// `Alt-Svc` advertised on h1/h2 responses when the listener also serves HTTP/3.
    pub alt_svc: Option<HeaderValue>,
}

/// Shared with the connection's IO wrapper so it can tell "waiting for a request head" from
/// "busy serving one" (the client header and idle timeouts only run in the former).
#[derive(Debug, Default)]
pub struct ConnState {
    busy: AtomicUsize,
    started: AtomicU64,
    /// Woken when the connection becomes idle, so a read that went pending while a request
    /// was in flight re-arms the idle timer.
    idle_waker: atomic_waker::AtomicWaker,
}

impl ConnState {
    fn begin(&self) {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.busy.fetch_add(1, Ordering::AcqRel);
    }
    fn end(&self) {
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_waker.wake();
        }
    }
    pub fn wake_when_idle(&self, w: &std::task::Waker) {
        self.idle_waker.register(w);
    }
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }
}

/// Owns a request's passport until the request is over, then turns it into metrics. Moves
/// into the response body when the response streams, so "over" means the last byte.
pub struct Finisher {
    pub passport: Passport,
    ctx: Arc<Ctx>,
    conn: Arc<ConnInfo>,
    route: Option<usize>,
    route_name: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    endpoint: Option<Arc<str>>,
    status: u16,
    method: Method,
    uri: http::Uri,
    request_id: Option<HeaderValue>,
    protocol: &'static str,
    req_body: Option<Arc<ReqShared>>,
    permits: SmallVec<[Permit; 2]>,
    retry_permits: Vec<crate::upstream::retry::RetryPermit>,
    done: bool,
}

impl Finisher {
    /// Ends the request now.
    pub fn finish(mut self) {
        self.complete();
    }

    fn complete(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(at) = self.req_body.as_ref().and_then(|s| s.sent_at()) {
            self.passport.stamp_at(State::ReqBodySent, at);
        }
        let start = self.passport.start();
        let passport = std::mem::replace(&mut self.passport, Passport::new(start));
        self.ctx.metrics.finish(crate::telemetry::Finished {
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
        });
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
            self.status = 499;
            self.complete();
        }
    }
}

fn protocol_label(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "h2",
        http::Version::HTTP_3 => "h3",
        http::Version::HTTP_10 => "http/1.0",
        _ => "http/1.1",
    }
}

/// hyper's service entry point for one request on an HTTP/1.1 or HTTP/2 connection.
pub async fn handle(
    ctx: Arc<Ctx>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let mut resp = handle_any(ctx, conn.clone(), req.map(ClientBody::Hyper)).await;
    if let Some(alt) = &conn.alt_svc {
        resp.headers_mut()
            .insert(http::header::ALT_SVC, alt.clone());
    }
    Ok(resp)
}

/// The state machine's entry point, for a request from any protocol.
pub async fn handle_any(
    ctx: Arc<Ctx>,
    conn: Arc<ConnInfo>,
    req: Request<ClientBody>,
) -> Response<RespBody> {
    let start = Instant::now();
    conn.state.begin();
    let (mut parts, body) = req.into_parts();
    let request_id = headers::ensure_request_id(&mut parts.headers);
    let mut passport = Passport::new(start);
    passport.stamp_at(State::HeadersReceived, start);
    let f = Finisher {
        passport,
        ctx: ctx.clone(),
        conn: conn.clone(),
        route: None,
        route_name: None,
        cluster: None,
        endpoint: None,
        status: 0,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        request_id: Some(request_id),
        protocol: protocol_label(parts.version),
        req_body: None,
        permits: SmallVec::new(),
        retry_permits: Vec::new(),
        done: false,
    };
    // Boxed: the state machine's future is ~12 KiB. hyper keeps a connection's request
    // future in one box from accept to close and moves each request's future into it, so
    // unboxed this would be ~12 KiB per idle keep-alive connection and a 12 KiB copy per
    // request; boxed it is one allocation per request, freed when the request ends.
    Box::pin(proxy(&ctx, &conn, f, parts, body)).await
}

/// Sends a gateway-made response and ends the request.
fn local(mut f: Finisher, mut resp: Response<RespBody>) -> Response<RespBody> {
    f.status = resp.status().as_u16();
    if let Some(id) = &f.request_id {
        resp.headers_mut()
            .entry(&headers::X_REQUEST_ID)
            .or_insert_with(|| id.clone());
    }
    f.passport.stamp(State::RespHeadersSent);
    f.finish();
    resp
}

fn fail(mut f: Finisher, why: Failure) -> Response<RespBody> {
    f.passport.stamp(why.state());
    let resp = error_response(
        why.status(),
        why.code(),
        why.reason(),
        f.request_id.as_ref(),
    );
    local(f, resp)
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Reads a whole body into memory, bounded by `limit` bytes, the idle timeout and the deadline.
async fn buffer_body(
    mut body: ClientBody,
    limit: u64,
    idle: Duration,
    deadline: Instant,
) -> Result<Bytes, Failure> {
    let mut buf = bytes::BytesMut::new();
    loop {
        let until = (Instant::now() + idle).min(deadline);
        let frame = match tokio::time::timeout_at(
            until.into(),
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)),
        )
        .await
        {
            Err(_) if Instant::now() >= deadline => return Err(Failure::DeadlineExceeded),
            Err(_) => return Err(Failure::ClientBodyTimeout),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => return Err(Failure::BadRequest),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Some(d) = frame.data_ref() {
            if (buf.len() + d.len()) as u64 > limit {
                return Err(Failure::BodyTooLarge);
            }
            buf.extend_from_slice(d);
        }
    }
}

async fn proxy(
    ctx: &Arc<Ctx>,
    conn: &Arc<ConnInfo>,
    mut f: Finisher,
    mut parts: http::request::Parts,
    body: ClientBody,
) -> Response<RespBody> {
    let start = f.passport.start();

    // Shed first, on the route's priority, before spending anything on the request.
    let mut route = ctx.routes.find(&parts, routing::request_host(&parts));
    let priority = route.map(|r| r.priority).unwrap_or(Priority::Normal);
    match ctx.shedder.try_acquire(priority) {
        Some(p) => f.permits.push(p),
        None => return fail(f, Failure::Overloaded),
    }
    let body_limit = route
        .map(|r| r.max_body_bytes)
        .unwrap_or(ctx.limits.max_body_bytes);
    if content_length(&parts.headers).is_some_and(|n| n > body_limit) {
        return fail(f, Failure::BodyTooLarge);
    }
    let client_idle = route
        .map(|r| r.timeouts.client_body_idle)
        .unwrap_or(Duration::from_millis(ctx.timeouts.client_body_idle_ms));
    let early_deadline = start
        + route
            .map(|r| r.timeouts.request_deadline)
            .unwrap_or(Duration::from_millis(ctx.timeouts.request_deadline_ms));

    // Inbound filters: may rewrite the head, pick a cluster, answer or reject.
    let mut fstate = FilterState::default();
    let mut body = Some(body);
    let mut buffered: Option<Bytes> = None;
    let chain = ctx.plugins.as_ref().map(|p| p.chain());
    if let Some(chain) = &chain {
        f.passport.stamp(State::InboundFiltersStart);
        if let Some(cap) = chain.inbound_body_cap(&parts) {
            if let Some(b) = body.take() {
                let t0 = Instant::now();
                let r =
                    buffer_body(b, (cap as u64).min(body_limit), client_idle, early_deadline).await;
                f.passport.add_waiting(t0.elapsed());
                match r {
                    Ok(b) => buffered = Some(b),
                    Err(why) => return fail(f, why),
                }
            }
        }
        // Boxed, like every plugin phase below: a Wasm call's future is large, and inlined
        // it would grow every request's future (kept per connection by hyper) with or
        // without plugins.
        match Box::pin(chain.inbound(
            &mut parts,
            conn.client,
            route.map(|r| &*r.name),
            buffered.as_ref(),
            &mut fstate,
            &mut f.passport,
        ))
        .await
        {
            InboundOutcome::Continue => {}
            InboundOutcome::Respond(resp) => {
                return local(f, resp.map(RespBody::full));
            }
            InboundOutcome::Failed(pf) => {
                let resp = error_response(pf.status, &pf.code, &pf.reason, f.request_id.as_ref());
                return local(f, resp);
            }
        }
        f.passport.stamp(State::InboundFiltersEnd);
        route = ctx.routes.find(&parts, routing::request_host(&parts));
    }

    let Some(route) = route else {
        return fail(f, Failure::NoRoute);
    };
    f.route = Some(route.index);
    f.route_name = Some(route.name.clone());
    f.passport.stamp(State::Routed);
    let priority = fstate.priority.unwrap_or(route.priority);
    let t = route.timeouts;
    let deadline = start + t.request_deadline;
    let body_limit = route.max_body_bytes;

    let cluster = match (&fstate.cluster, &route.target) {
        (Some(name), _) => match ctx.upstreams.get(name) {
            Some(c) => c.clone(),
            None => return fail(f, Failure::UnknownCluster),
        },
        (None, Target::Cluster(ci)) => ctx.upstreams.clusters[*ci].clone(),
        (None, Target::Endpoint(name)) => {
            let job = EndpointJob {
                name,
                route: &route.name,
                body_limit,
                client_idle: t.client_body_idle,
                deadline,
                priority,
            };
            return Box::pin(endpoint(
                ctx, conn, f, parts, body, buffered, fstate, chain, job,
            ))
            .await;
        }
    };
    f.cluster = Some(cluster.name.clone());
    match cluster.limit.try_acquire(priority) {
        Some(p) => f.permits.push(p),
        None => return fail(f, Failure::Overloaded),
    }

    // The head that goes up.
    if !parts.headers.contains_key(http::header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(http::header::HOST, v);
        }
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    // A `HeaderValue` clone shares the parsed head's bytes: no copy.
    let fwd_host = parts.headers.get(http::header::HOST).cloned();
    headers::add_forwarded(&mut parts.headers, conn.client, conn.tls, fwd_host);
    headers::add_via(&mut parts.headers, parts.version);
    headers::propagate_traceparent(&mut parts.headers);
    // Origin-form (every HTTP/1.1 request without a proxy in front) goes up as it came;
    // other forms keep only their path and query, without re-parsing.
    let path_q: http::Uri = if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
        parts.uri.clone()
    } else {
        let mut up = http::uri::Parts::default();
        up.path_and_query = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        match http::Uri::from_parts(up) {
            Ok(u) => u,
            Err(_) => return fail(f, Failure::BadRequest),
        }
    };

    // The body that goes up: replayable (empty or buffered) or streamed once.
    let retry = &route.retry;
    let safe_method = idempotent(&parts.method) || retry.idempotent;
    let mut max_attempts = if safe_method {
        retry.attempts.max(1)
    } else {
        1
    };
    let body_source: Option<Bytes> = match (buffered, body.as_ref()) {
        (Some(b), _) => Some(b),
        (None, Some(b)) if b.is_end_stream() => Some(Bytes::new()),
        (None, Some(_))
            if max_attempts > 1
                && content_length(&parts.headers)
                    .is_some_and(|n| n <= retry.max_buffered_body_bytes as u64) =>
        {
            let t0 = Instant::now();
            let r = match body.take() {
                Some(b) => buffer_body(b, body_limit, t.client_body_idle, deadline).await,
                None => Ok(Bytes::new()),
            };
            f.passport.add_waiting(t0.elapsed());
            match r {
                Ok(b) => Some(b),
                Err(why) => return fail(f, why),
            }
        }
        _ => None,
    };
    if body_source.is_none() {
        max_attempts = 1;
    }
    let mut stream_body = body.take();

    let mut tried: SmallVec<[usize; 4]> = SmallVec::new();
    let mut last_failure = Failure::NoHealthyUpstream;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if Instant::now() >= deadline {
            return fail(f, Failure::DeadlineExceeded);
        }
        let Some(ei) = cluster.pick(&tried) else {
            return fail(
                f,
                if attempt > 1 {
                    last_failure
                } else {
                    Failure::NoHealthyUpstream
                },
            );
        };
        tried.push(ei);
        let ep = &cluster.endpoints[ei];
        f.endpoint = Some(ep.addr.clone());
        // One clock reading per step: the stamps and bookkeeping below happen back to back.
        let picked = Instant::now();
        f.passport.stamp_at(State::UpstreamPicked, picked);
        let can_retry = attempt < max_attempts;
        f.passport.stamp_at(State::ConnAcquireStart, picked);
        let inflight = cluster.stats[ei].begin_at(picked);
        let acquired = ep.pool.acquire((picked + t.connect).min(deadline)).await;
        let mut up = match acquired {
            Ok(c) => c,
            Err(e) => {
                inflight.finish(Outcome {
                    latency: Duration::ZERO,
                    failed: true,
                });
                cluster.outlier.on_failure(ei, Instant::now());
                tracing::debug!(cluster = %cluster.name, error = %e, "upstream connect failed");
                if e.is_tls() {
                    tracing::warn!(cluster = %cluster.name, error = %e, "upstream TLS handshake failed");
                    f.passport.set_detail(e.to_string());
                }
                last_failure = if Instant::now() >= deadline {
                    Failure::DeadlineExceeded
                } else if e.is_tls() {
                    Failure::UpstreamTls
                } else if e.is_timeout() {
                    Failure::ConnectTimeout
                } else {
                    Failure::ConnectFailed
                };
                if can_retry
                    && last_failure != Failure::DeadlineExceeded
                    && may_retry(&mut f, &cluster, &tried, RetryReason::ConnectFailed)
                {
                    continue;
                }
                return fail(f, last_failure);
            }
        };
        f.passport.add_waiting(up.connect_time);
        let acquired_at = Instant::now();
        f.passport.stamp_at(State::ConnAcquired, acquired_at);

        let up_body = match (&body_source, stream_body.take()) {
            (Some(b), _) if b.is_empty() => UpBody::Empty,
            (Some(b), _) => UpBody::Full(Some(b.clone())),
            (None, Some(b)) => {
                let shared = ReqShared::new(start);
                f.req_body = Some(shared.clone());
                UpBody::Stream(ReqBody::new(b, body_limit, t.client_body_idle, shared))
            }
            (None, None) => UpBody::Empty,
        };
        let mut req = Request::new(up_body);
        *req.method_mut() = parts.method.clone();
        // Outbound filters read the request as sent, so its head must outlive the send.
        *req.headers_mut() = if can_retry || chain.as_ref().is_some_and(|c| c.has_outbound()) {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        *req.uri_mut() = if up.sender.is_h2() {
            // HTTP/2 carries scheme and authority as pseudo-headers, taken from the URI.
            let authority = req
                .headers_mut()
                .remove(http::header::HOST)
                .and_then(|h| h.to_str().ok().map(str::to_owned))
                .unwrap_or_else(|| ep.addr.to_string());
            let scheme = ep.pool.connector().scheme();
            match format!("{scheme}://{authority}{path_q}").parse() {
                Ok(u) => u,
                Err(_) => {
                    inflight.finish(Outcome {
                        latency: Duration::ZERO,
                        failed: false,
                    });
                    return fail(f, Failure::BadRequest);
                }
            }
        } else {
            path_q.clone()
        };

        let sent = acquired_at;
        f.passport.stamp_at(State::ReqHeadersSent, sent);
        let res = tokio::time::timeout_at(
            (sent + t.upstream_headers).min(deadline).into(),
            up.sender.send(req),
        )
        .await;
        let got = Instant::now();
        let latency = got.saturating_duration_since(sent);
        f.passport.add_waiting(latency);

        let resp = match res {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                let fault = f.req_body.as_ref().map(|s| s.fault());
                match fault {
                    Some(ReqBodyFault::TooLarge) => {
                        inflight.finish(Outcome {
                            latency,
                            failed: false,
                        });
                        return fail(f, Failure::BodyTooLarge);
                    }
                    Some(ReqBodyFault::IdleTimeout) => {
                        inflight.finish(Outcome {
                            latency,
                            failed: false,
                        });
                        return fail(f, Failure::ClientBodyTimeout);
                    }
                    Some(ReqBodyFault::ClientError) => {
                        inflight.finish(Outcome {
                            latency,
                            failed: false,
                        });
                        f.passport.stamp(State::ClientDisconnected);
                        return fail(f, Failure::BadRequest);
                    }
                    _ => {}
                }
                tracing::debug!(cluster = %cluster.name, endpoint = %ep.addr, error = %e, "upstream request failed");
                inflight.finish(Outcome {
                    latency,
                    failed: true,
                });
                cluster.outlier.on_failure(ei, Instant::now());
                last_failure = Failure::UpstreamReset;
                // A reused connection the upstream closed while idle is the classic benign
                // race; replay once more even when retries are off, if the body allows it.
                let benign_race = up.reused && body_source.is_some() && attempt == 1;
                if (can_retry || benign_race)
                    && may_retry(&mut f, &cluster, &tried, RetryReason::Reset)
                {
                    max_attempts = max_attempts.max(2);
                    f.passport.stamp(State::UpstreamReset);
                    continue;
                }
                return fail(f, Failure::UpstreamReset);
            }
            Err(_) => {
                inflight.finish(Outcome {
                    latency,
                    failed: true,
                });
                cluster.outlier.on_failure(ei, Instant::now());
                let why = if Instant::now() >= deadline {
                    Failure::DeadlineExceeded
                } else {
                    Failure::UpstreamTimeout
                };
                return fail(f, why);
            }
        };

        let status = resp.status();
        // The balancer's failure rate always counts a 5xx (an endpoint answering 500s fast
        // must not look attractive); outlier ejection only when the cluster opts in.
        inflight.finish_at(
            Outcome {
                latency,
                failed: status.is_server_error(),
            },
            got,
        );
        if status.is_server_error() && cluster.outlier_cfg.eject_on_5xx {
            cluster.outlier.on_failure(ei, got);
        } else {
            cluster.outlier.on_success(ei);
        }
        if can_retry
            && retry.on_status.contains(&status.as_u16())
            && may_retry(&mut f, &cluster, &tried, RetryReason::Status)
        {
            f.passport.stamp(State::RespHeadersReceived);
            // The connection carries an unread body: drop it rather than pool it.
            drop(resp);
            drop(up);
            continue;
        }
        f.passport.stamp_at(State::RespHeadersReceived, got);
        let (mut rparts, rbody) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rparts.headers);
        headers::add_via(&mut rparts.headers, http::Version::HTTP_11);
        if let Some(id) = &f.request_id {
            rparts
                .headers
                .insert(headers::X_REQUEST_ID.clone(), id.clone());
        }
        rparts
            .headers
            .insert(ATTEMPTS.clone(), HeaderValue::from(attempt));
        let outbound = chain.as_ref().filter(|c| c.has_outbound());
        if let Some(chain) = outbound {
            f.passport.stamp(State::OutboundFiltersStart);
            match Box::pin(chain.outbound(
                &mut parts,
                conn.client,
                Some(&route.name),
                &mut rparts,
                &mut fstate,
                &mut f.passport,
            ))
            .await
            {
                OutboundOutcome::Continue => {}
                OutboundOutcome::Failed(pf) => {
                    let resp =
                        error_response(pf.status, &pf.code, &pf.reason, f.request_id.as_ref());
                    return local(f, resp);
                }
            }
            f.passport.stamp(State::OutboundFiltersEnd);
        }
        f.status = rparts.status.as_u16();
        let head_done = if outbound.is_some() {
            Instant::now()
        } else {
            got
        };
        f.passport.stamp_at(State::RespHeadersSent, head_done);
        let body = RespBody::stream(
            rbody,
            t.upstream_body_idle,
            deadline,
            (up, cluster, ei),
            f,
            head_done,
        );
        return Response::from_parts(rparts, body);
    }
}

/// What `endpoint` needs to know about the route.
struct EndpointJob<'a> {
    name: &'a Arc<str>,
    route: &'a Arc<str>,
    body_limit: u64,
    client_idle: Duration,
    deadline: Instant,
    priority: Priority,
}

/// Serves a route mounted on an endpoint plugin: buffer the body (bounded by the manifest),
/// run the plugin with the fan-out context, then outbound filters on its response.
#[allow(clippy::too_many_arguments)]
async fn endpoint(
    ctx: &Arc<Ctx>,
    conn: &Arc<ConnInfo>,
    mut f: Finisher,
    mut parts: http::request::Parts,
    mut body: Option<ClientBody>,
    buffered: Option<Bytes>,
    mut fstate: FilterState,
    chain: Option<Arc<crate::plugin::Chain>>,
    job: EndpointJob<'_>,
) -> Response<RespBody> {
    let Some(chain) = chain else {
        return fail(f, Failure::EndpointUnavailable);
    };
    let Some(plugin) = chain.endpoint(job.name).cloned() else {
        return fail(f, Failure::EndpointUnavailable);
    };
    let body = match (buffered, body.take()) {
        (Some(b), _) => b,
        (None, Some(b)) => {
            let cap = (plugin.manifest.max_body_bytes as u64).min(job.body_limit);
            let t0 = Instant::now();
            let r = buffer_body(b, cap, job.client_idle, job.deadline).await;
            f.passport.add_waiting(t0.elapsed());
            match r {
                Ok(b) => b,
                Err(why) => return fail(f, why),
            }
        }
        (None, None) => Bytes::new(),
    };
    let outcome = chain
        .run_endpoint(
            &plugin,
            ctx.clone(),
            &parts,
            conn.client,
            Some(job.route),
            Some(&body),
            &fstate,
            job.deadline,
            job.priority,
            &mut f.passport,
        )
        .await;
    let resp = match outcome {
        EndpointOutcome::Respond(r) => r,
        EndpointOutcome::Failed(pf) => {
            let resp = error_response(pf.status, &pf.code, &pf.reason, f.request_id.as_ref());
            return local(f, resp);
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    f.passport.stamp(State::OutboundFiltersStart);
    match chain
        .outbound(
            &mut parts,
            conn.client,
            Some(job.route),
            &mut rparts,
            &mut fstate,
            &mut f.passport,
        )
        .await
    {
        OutboundOutcome::Continue => {}
        OutboundOutcome::Failed(pf) => {
            let resp = error_response(pf.status, &pf.code, &pf.reason, f.request_id.as_ref());
            return local(f, resp);
        }
    }
    f.passport.stamp(State::OutboundFiltersEnd);
    local(f, Response::from_parts(rparts, RespBody::full(rbody)))
}

/// A retry goes ahead only if another endpoint is eligible and the cluster's retry budget
/// allows it; the budget permit is held until the request ends.
fn may_retry(
    f: &mut Finisher,
    cluster: &crate::upstream::Cluster,
    tried: &[usize],
    why: RetryReason,
) -> bool {
    if !cluster.has_eligible(tried) {
        return false;
    }
    match cluster.retry_budget.try_acquire(cluster.limit.in_flight()) {
        Some(p) => {
            cluster.retry_budget.record_retry(why);
            f.retry_permits.push(p);
            f.passport.stamp(State::Retry);
            true
        }
        None => false,
    }
}

static ATTEMPTS: http::HeaderName = http::HeaderName::from_static("x-portcullis-attempts");

/// Used by tests and the admin page: the status a failure maps to.
pub fn failure_status(f: Failure) -> StatusCode {
    f.status()
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    fn future_size<A, B, C, F: Future>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper keeps one request future per connection in a box sized for it, from accept to
    /// close, and moves each request's future into it: its size is memory per idle
    /// keep-alive connection and bytes copied per request.
    fn future_size5<A, B, C, D, E, F: Future>(_: impl Fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// `handle_any` boxes the state machine once per request, which copies it from the
    /// stack into the box: its size is bytes copied per request. Cold paths (opening a
    /// connection, plugin phases, endpoints) are boxed inside it to keep it small.
    #[test]
    fn the_state_machine_future_stays_small() {
        let size = future_size5(super::proxy);
        eprintln!("request::proxy future: {size} bytes");
        assert!(size <= 5120, "request::proxy future is {size} bytes");
    }

    #[test]
    fn the_request_future_stays_small() {
        let size = future_size(super::handle);
        eprintln!("request::handle future: {size} bytes");
        assert!(size <= 2048, "request::handle future is {size} bytes");
    }
}
