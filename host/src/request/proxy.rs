//! The upstream phase of a proxied request: the head and body that go up, handed to the one
//! upstream client.

use super::{Answer, Exchange, Payload};
use crate::core::body::{ReqBody, ReqShared};
use crate::core::headers;
use crate::upstream::client::{self, Body, Head, Policy};
use crate::upstream::Cluster;
use bytes::Bytes;
use http_body::Body as _;
use std::sync::Arc;

impl Exchange<'_> {
    /// Sends the request to `cluster` through [`client::send`] and returns its answer.
    ///
    /// Runs after routing chose a cluster. The head goes up origin-form with the admitted
    /// path, hop-by-hop headers stripped and forwarding headers added. The body goes up
    /// replayable (empty, already buffered, or buffered here when retries are possible and
    /// it fits `retry.max_buffered_body_bytes`) or streamed once.
    pub(crate) async fn proxy(&mut self, cluster: Arc<Cluster>, payload: Payload) -> Answer {
        let Some(route) = self.route else {
            return Answer::Failed(crate::core::failure::Failure::NoRoute);
        };
        let t = route.timeouts;
        let deadline = self.deadline();
        let priority = self.filters.priority.unwrap_or(route.priority);
        self.f.cluster = Some(cluster.name.clone());
        let policy = Policy::for_request(
            &self.parts.method,
            &route.retry,
            t.connect,
            t.upstream_headers,
            deadline,
            priority,
        );
        let body = match self.upstream_body(payload, &policy, route).await {
            Ok(b) => b,
            Err(why) => return Answer::Failed(why),
        };
        let head = self.upstream_head(deadline);
        match client::send(&cluster, head, body, &policy, &mut self.f).await {
            Ok(answered) => Answer::Upstream(answered),
            Err(why) => Answer::Failed(why),
        }
    }

    /// The head that goes up.
    pub(super) fn upstream_head(&mut self, deadline: std::time::Instant) -> Head {
        let parts = &mut self.parts;
        // Outbound filters read the request head after the send: keep it only for them.
        let mut h = if self.chain.as_ref().is_some_and(|c| c.has_outbound()) {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        headers::strip_hop_by_hop_request(&mut h);
        if self.grpc.is_some() {
            // The upstream learns what is left of the smaller of the call's and the route's
            // deadlines, so it stops working when the gateway stops waiting.
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            h.insert(
                super::grpc::GRPC_TIMEOUT.clone(),
                super::grpc::encode_timeout(left),
            );
        }
        // A `HeaderValue` clone shares the parsed head's bytes: no copy.
        let fwd_host = h.get(http::header::HOST).cloned();
        headers::add_forwarded(&mut h, &self.conn.client_ip, self.conn.tls, fwd_host);
        headers::add_via(&mut h, parts.version);
        // A traced request's attempts each carry their own span as the parent
        // (`Journal::attempt`); otherwise the gateway passes the trace on as before.
        if self.f.passport.trace.is_none() {
            headers::propagate_traceparent(&mut h);
        }
        Head {
            method: parts.method.clone(),
            // Admission made the URI origin-form: its path is the normalized one.
            path_and_query: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            headers: h,
        }
    }

    /// The body that goes up: replayable when it can be, streamed once otherwise.
    async fn upstream_body(
        &mut self,
        payload: Payload,
        policy: &Policy<'_>,
        route: &crate::routing::Route,
    ) -> Result<Body, crate::core::failure::Failure> {
        let t = route.timeouts;
        let payload = match payload {
            Payload::Stream(b) if b.is_end_stream() => Payload::Buffered(Bytes::new()),
            Payload::Stream(b)
                if policy.max_attempts > 1
                    && super::payload::content_length(&self.parts.headers)
                        .is_some_and(|n| n <= route.retry.max_buffered_body_bytes as u64) =>
            {
                self.buffer(
                    Payload::Stream(b),
                    route.max_body_bytes,
                    t.client_body_idle,
                    policy.deadline,
                )
                .await?
            }
            p => p,
        };
        Ok(match payload {
            Payload::Buffered(b) => Body::Replayable(b),
            Payload::Stream(b) => {
                let shared = ReqShared::new(self.f.passport.start());
                self.f.req_body = Some(shared.clone());
                Body::Once(
                    ReqBody::new(b, route.max_body_bytes, t.client_body_idle, shared.clone()),
                    shared,
                )
            }
        })
    }
}
