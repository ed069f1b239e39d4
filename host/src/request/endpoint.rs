//! The endpoint phase: a route mounted on an endpoint plugin.

use super::{Answer, Exchange, Payload};
use crate::core::failure::Failure;
use crate::plugin::EndpointOutcome;
use bytes::Bytes;

impl Exchange<'_> {
    /// Buffers the body (bounded by the manifest and the route), runs the plugin with its
    /// fan-out context (calls go through `upstream::client`, like proxied requests), and
    /// returns its response for the outbound phase.
    ///
    /// `Err`-like answers: `endpoint-unavailable` (503) when the plugin is not loaded, the
    /// plugin's failure code when it fails.
    pub(crate) async fn endpoint(&mut self, name: &str, payload: Payload) -> Answer {
        let Some(route) = self.route else {
            return Answer::Failed(Failure::NoRoute);
        };
        let Some(chain) = self.chain.clone() else {
            return Answer::Failed(Failure::EndpointUnavailable);
        };
        let Some(plugin) = chain.endpoint(name).cloned() else {
            return Answer::Failed(Failure::EndpointUnavailable);
        };
        let t = route.timeouts;
        let deadline = self.deadline();
        let cap = (plugin.manifest.max_body_bytes as u64).min(route.max_body_bytes);
        let body = match self
            .buffer(payload, cap, t.client_body_idle, deadline)
            .await
        {
            Ok(Payload::Buffered(b)) => b,
            Ok(Payload::Stream(_)) => Bytes::new(),
            Err(why) => return Answer::Failed(why),
        };
        let priority = self.filters.priority.unwrap_or(route.priority);
        let outcome = Box::pin(chain.run_endpoint(
            &plugin,
            self.svc.upstreams.clone(),
            &self.parts,
            self.f.client,
            Some(&route.name),
            Some(&body),
            &self.filters,
            deadline,
            priority,
            &mut self.f.passport,
        ))
        .await;
        match outcome {
            EndpointOutcome::Respond(r) => Answer::Endpoint(r),
            EndpointOutcome::Failed(why) => Answer::Failed(why),
        }
    }
}
