//! The last phases: outbound filters on every answer, then the response.

use super::{Answer, Exchange, RespBody};
use crate::core::failure::Failure;
use crate::core::headers::{self, PORTCULLIS_ERROR, X_REQUEST_ID};
use crate::core::passport::State;
use crate::plugin::OutboundOutcome;
use crate::upstream::client::Answered;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use std::time::Instant;

static ATTEMPTS: http::HeaderName = http::HeaderName::from_static("x-portcullis-attempts");

impl Exchange<'_> {
    /// Sends an answer: outbound filters run on its head (upstream and endpoint answers
    /// always; the gateway's own errors and inbound filters' answers unless a filter's
    /// manifest says `gateway_responses = false`), then the head goes down and the body
    /// streams. The passport ends with the last body byte.
    pub(crate) async fn respond(&mut self, answer: Answer) -> Response<RespBody> {
        match answer {
            Answer::Upstream(a) => self.respond_upstream(a).await,
            Answer::Endpoint(r) => {
                self.observe_latency(Instant::now());
                self.respond_local(r, false).await
            }
            Answer::Upgraded(u) => Box::pin(self.respond_upgraded(*u)).await,
            Answer::Filter(r) => {
                let r = match self.grpc {
                    Some(_) => super::grpc::filter_answer(r),
                    None => r,
                };
                self.respond_local(r, true).await
            }
            Answer::Failed(why) => {
                if why.is_timeout() {
                    self.observe_latency(Instant::now());
                }
                if let Some(s) = why.state() {
                    self.f.passport.stamp(s);
                }
                let r = self.error_response(&why);
                self.respond_local(r, true).await
            }
        }
    }

    /// Tells an adaptive `[limits] max_in_flight` how long the request took to an answer.
    /// Only answers that went somewhere count: a gateway's own instant answer (a 404, a
    /// filter's reject) would teach it a latency no backend has.
    fn observe_latency(&self, at: Instant) {
        let s = &self.svc.shedder;
        if s.is_adaptive() {
            s.observe(at.saturating_duration_since(self.f.passport.start()), at);
        }
    }

    async fn respond_upstream(&mut self, a: Box<Answered>) -> Response<RespBody> {
        let (mut rparts, rbody) = a.response.into_parts();
        self.observe_latency(a.at);
        self.f.passport.stamp_at(State::RespHeadersReceived, a.at);
        self.f.hold(a.permits);
        headers::strip_hop_by_hop(&mut rparts.headers);
        headers::add_via(&mut rparts.headers, http::Version::HTTP_11);
        if let Some(id) = &self.f.request_id {
            rparts.headers.insert(X_REQUEST_ID.clone(), id.clone());
        }
        rparts
            .headers
            .insert(ATTEMPTS.clone(), HeaderValue::from(a.attempts));
        let filtered = self.outbound(&mut rparts, false).await;
        if let Err(why) = filtered {
            // The upstream's body is dropped with its connection, which is not pooled.
            return self.respond_unfiltered(why);
        }
        let idle = match self.route {
            Some(r) => r.timeouts.upstream_body_idle,
            None => std::time::Duration::from_millis(self.svc.timeouts.upstream_body_idle_ms),
        };
        let deadline = self.deadline();
        self.f.status = rparts.status.as_u16();
        let head_done = if self.f.passport.has(State::OutboundFiltersStart) {
            Instant::now()
        } else {
            a.at
        };
        self.f.passport.stamp_at(State::RespHeadersSent, head_done);
        let body = RespBody::stream(
            rbody,
            idle,
            deadline,
            (a.conn, a.endpoint),
            self.f.take(),
            head_done,
            self.grpc.is_some(),
        );
        Response::from_parts(rparts, body)
    }

    /// A complete answer made here: an endpoint's, a filter's, or an error.
    async fn respond_local(
        &mut self,
        resp: Response<Bytes>,
        gateway_made: bool,
    ) -> Response<RespBody> {
        let (mut parts, body) = resp.into_parts();
        if let Err(why) = self.outbound(&mut parts, gateway_made).await {
            return self.respond_unfiltered(why);
        }
        self.local(Response::from_parts(parts, body))
    }

    /// An outbound filter failed `fail_closed`: answer with its failure, without running
    /// outbound filters again.
    pub(super) fn respond_unfiltered(&mut self, why: Failure) -> Response<RespBody> {
        let resp = self.error_response(&why);
        self.local(resp)
    }

    /// Runs the outbound filters on a response head. Skipped without a loaded outbound
    /// filter (the request head need not be kept then).
    pub(super) async fn outbound(
        &mut self,
        head: &mut http::response::Parts,
        gateway_made: bool,
    ) -> Result<(), Failure> {
        let Some(chain) = self.chain.as_ref().filter(|c| c.has_outbound()).cloned() else {
            return Ok(());
        };
        self.f.passport.stamp(State::OutboundFiltersStart);
        let outcome = Box::pin(chain.outbound(
            &mut self.parts,
            self.f.client,
            self.route.map(|r| &*r.name),
            head,
            gateway_made,
            &mut self.filters,
            &mut self.f.passport,
        ))
        .await;
        match outcome {
            OutboundOutcome::Continue => {
                self.f.passport.stamp(State::OutboundFiltersEnd);
                Ok(())
            }
            OutboundOutcome::Failed(why) => Err(why),
        }
    }

    /// Sends a complete response and ends the request.
    pub(super) fn local(&mut self, resp: Response<Bytes>) -> Response<RespBody> {
        let (mut parts, body) = resp.into_parts();
        self.f.status = parts.status.as_u16();
        self.f.bytes_out = body.len() as u64;
        if let Some(id) = &self.f.request_id {
            parts
                .headers
                .entry(&X_REQUEST_ID)
                .or_insert_with(|| id.clone());
        }
        self.f.passport.stamp(State::RespHeadersSent);
        self.f.complete();
        // An empty body ends with the head (HTTP/2: HEADERS with END_STREAM, which is what
        // makes a gRPC Trailers-Only response).
        let body = if body.is_empty() {
            RespBody::Full(None)
        } else {
            RespBody::full(body)
        };
        Response::from_parts(parts, body)
    }

    /// The gateway's error response for `why`, with `[http] error_headers`; Trailers-Only
    /// (HTTP 200 with `grpc-status`) when the request is a gRPC call.
    /// The code is the request's `error` in the access log.
    pub(super) fn error_response(&mut self, why: &Failure) -> Response<Bytes> {
        self.f.passport.error = Some(why.code());
        let resp = error_response(
            why,
            self.f.request_id.as_ref(),
            &self.svc.http.error_headers,
        );
        match self.grpc {
            Some(_) => {
                super::grpc::trailers_only(resp, super::grpc::code_for_failure(why), &why.reason())
            }
            None => resp,
        }
    }
}

/// The one builder of gateway error responses: status, `portcullis-error: <code>`, a
/// one-line reason as the body, `Retry-After` on 503s, the request id, and the operator's
/// static `[http] error_headers` (set first: outbound filters may still change them).
pub(crate) fn error_response(
    why: &Failure,
    request_id: Option<&HeaderValue>,
    extra: &[(http::HeaderName, HeaderValue)],
) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(format!("{}\n", why.reason())));
    let status = why.status();
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    for (k, v) in extra {
        h.insert(k.clone(), v.clone());
    }
    h.insert(
        PORTCULLIS_ERROR.clone(),
        HeaderValue::from_static(why.code()),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Failure::RateLimited(d) = why {
        for (k, v) in &d.headers {
            h.append(k.clone(), v.clone());
        }
    }
    if let Some(id) = request_id {
        h.insert(X_REQUEST_ID.clone(), id.clone());
    }
    resp
}
