//! The inbound filter phase, and routing on its result.

use super::{Answer, Destination, Exchange, Payload};
use crate::core::failure::Failure;
use crate::core::passport::State;
use crate::plugin::InboundOutcome;
use crate::routing::Target;
use std::time::{Duration, Instant};

impl Exchange<'_> {
    /// Runs the matching inbound filters on the head (and on the body, buffered up to the
    /// largest cap a matching filter asks for). A filter may change the head (its path is
    /// normalized again, like the client's), pick a cluster or priority, set metadata,
    /// answer, or reject.
    ///
    /// Runs after admission. Without plugins it only checks the declared body size. `Ok` is
    /// the body to send on; `Err` is the answer (413, a filter's response, a `fail_closed`
    /// failure), which still goes through outbound filters.
    pub(crate) async fn inbound(
        &mut self,
        body: crate::core::body::ClientBody,
    ) -> Result<Payload, Answer> {
        let body_limit = self
            .route
            .map(|r| r.max_body_bytes)
            .unwrap_or(self.svc.limits.max_body_bytes);
        if super::payload::content_length(&self.parts.headers).is_some_and(|n| n > body_limit) {
            return Err(Answer::Failed(Failure::BodyTooLarge));
        }
        let mut payload = Payload::Stream(body);
        let Some(chain) = self.svc.plugins.as_ref().map(|p| p.chain()) else {
            return Ok(payload);
        };
        self.chain = Some(chain.clone());
        // No loaded filter applies to this head: nothing to buffer, call or stamp.
        let Some(todo) = chain.inbound_todo(&self.parts) else {
            return Ok(payload);
        };
        self.f.passport.stamp(State::InboundFiltersStart);
        if let Some(cap) = chain.inbound_body_cap(&self.parts) {
            let (idle, deadline) = self.early_bounds();
            payload = self
                .buffer(payload, (cap as u64).min(body_limit), idle, deadline)
                .await
                .map_err(Answer::Failed)?;
        }
        let buffered = match &payload {
            Payload::Buffered(b) => Some(b),
            Payload::Stream(_) => None,
        };
        // Boxed, like every plugin phase: a Wasm call's future is large, and inlined it would
        // grow every request's future (kept per connection by hyper) with or without plugins.
        let outcome = Box::pin(chain.inbound_from(
            todo,
            &mut self.parts,
            self.f.client,
            self.route.map(|r| &*r.name),
            buffered,
            &mut self.filters,
            &mut self.f.passport,
        ))
        .await;
        match outcome {
            InboundOutcome::Continue => {}
            InboundOutcome::Respond(resp) => return Err(Answer::Filter(resp)),
            InboundOutcome::Failed(why) => return Err(Answer::Failed(why)),
        }
        self.f.passport.stamp(State::InboundFiltersEnd);
        // Filters may have changed what routing reads (path, host, headers); when none
        // changed the head, the route found at admission stands.
        if self.filters.head_changed {
            self.route = self.svc.routes.find(&self.parts);
        }
        Ok(payload)
    }

    /// The body idle timeout and deadline before routing is final.
    fn early_bounds(&self) -> (Duration, Instant) {
        let idle = match self.route {
            Some(r) => r.timeouts.client_body_idle,
            None => Duration::from_millis(self.svc.timeouts.client_body_idle_ms),
        };
        (idle, self.deadline())
    }

    /// Settles where the request goes: the route that matches the (possibly filtered) head,
    /// and a cluster a filter picked over the route's target.
    ///
    /// `Err` is `no-route` (404) or `unknown-cluster` (502).
    pub(super) fn route(&mut self) -> Result<Destination, Failure> {
        let route = self.route.ok_or(Failure::NoRoute)?;
        self.f.route = Some(route.index);
        self.f.route_name = Some(route.name.clone());
        self.f.passport.stamp(State::Routed);
        let upstreams = &self.svc.upstreams;
        match (&self.filters.cluster, &route.target) {
            (Some(name), _) => upstreams
                .get(name)
                .cloned()
                .map(Destination::Cluster)
                .ok_or(Failure::UnknownCluster),
            (None, Target::Cluster(ci)) => upstreams
                .clusters
                .get(*ci)
                .cloned()
                .map(Destination::Cluster)
                .ok_or(Failure::UnknownCluster),
            (None, Target::Endpoint(name)) => Ok(Destination::Endpoint(name.clone())),
        }
    }
}
