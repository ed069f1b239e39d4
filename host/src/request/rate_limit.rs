//! The rate-limit phase: after the inbound filters (so `meta:` keys see their metadata and
//! the route is final), before routing sends the request anywhere.

use super::Exchange;
use crate::core::failure::Failure;
use crate::ratelimit::Subject;

impl Exchange<'_> {
    /// Checks the matching `[[rate_limit]]`s. `Err` is the 429 of the strictest denial.
    /// Without limits it costs one branch; with them the check is boxed, so its (Redis)
    /// future does not grow every request's.
    pub(super) async fn rate_limit(&mut self) -> Result<(), Failure> {
        // `svc` outlives the exchange: the limits are borrowed, not cloned per request.
        let svc = self.svc;
        let limits = &svc.rate_limits;
        if limits.is_empty() {
            return Ok(());
        }
        // The connection's peer is formatted once per connection; a client named by a
        // trusted proxy is formatted here.
        let named;
        let client_ip = match self.conn.client_ip.to_str() {
            Ok(ip) if self.f.client.ip() == self.conn.client.ip() => ip,
            _ => {
                named = self.f.client.ip().to_string();
                &named
            }
        };
        let subject = Subject {
            parts: &self.parts,
            host: crate::routing::request_host(&self.parts),
            client_ip,
            route: self.route.map(|r| &*r.name),
            metadata: &self.filters.metadata,
        };
        let verdict = Box::pin(limits.check(&subject)).await;
        if let Some(denied) = verdict.denied {
            return Err(Failure::RateLimited(Box::new(denied)));
        }
        if !verdict.headers.is_empty() {
            self.rate_headers = Some(verdict.headers.into_boxed_slice());
        }
        Ok(())
    }
}
