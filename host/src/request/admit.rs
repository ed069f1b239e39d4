//! Admission: fix the request's identity, then shed before spending anything on it.

use super::{Exchange, RespBody};
use crate::config::Priority;
use crate::core::failure::Failure;
use crate::core::identity::{self, BadHead};
use http::Response;

impl Exchange<'_> {
    /// Fixes the identity every later phase reads: framing checked, exactly one `Host`
    /// (the authority of an absolute-form or HTTP/2 target wins), and the path normalized
    /// once under `[http]`, the URI rewritten to origin-form with the query untouched.
    ///
    /// Runs first, before shedding, routing and filters. `Err` is a 400 `bad-request` whose
    /// body says what is wrong; it skips outbound filters (their matches read the identity
    /// that could not be fixed) and carries `[http] error_headers`.
    pub(super) fn admit(&mut self) -> Result<(), Failure> {
        self.grpc = super::grpc::detect(&self.parts.headers);
        let r = self.fix_identity();
        self.f.uri = self.parts.uri.clone();
        self.f.client = self
            .svc
            .http
            .trusted_proxies
            .client(self.conn.client, &self.parts.headers);
        r.map_err(Failure::BadHead)
    }

    fn fix_identity(&mut self) -> Result<(), BadHead> {
        if self.conn.state.take_ambiguous_framing() {
            return Err(BadHead::LengthWithChunked);
        }
        let parts = &mut self.parts;
        identity::check_framing(&parts.headers)?;
        let host = identity::resolve_host(parts)?;
        let origin_form = parts.uri.scheme().is_none() && parts.uri.authority().is_none();
        let path = identity::normalize_path(parts.uri.path(), &self.svc.http.path)?;
        if let std::borrow::Cow::Owned(p) = &path {
            tracing::trace!(from = parts.uri.path(), to = %p, "path normalized");
        }
        if matches!(path, std::borrow::Cow::Owned(_)) || !origin_form {
            let pq = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            };
            let pq = http::uri::PathAndQuery::try_from(pq).map_err(|_| BadHead::InvalidPath)?;
            parts.uri = http::Uri::from(pq);
        }
        // Only an authority in the target (absolute-form, HTTP/2, HTTP/3) changes `Host`: it
        // replaces whatever the client sent. Origin-form keeps its one `Host` as is, without
        // a second hash and insert per request.
        if !origin_form {
            if let Some(h) = host {
                parts.headers.insert(http::header::HOST, h);
            }
        }
        Ok(())
    }

    /// Sheds on the priority of the route the request would take, before any work:
    /// `Err(Overloaded)` is a 503 with `Retry-After`, made without Wasm.
    pub(super) fn shed(&mut self) -> Result<(), Failure> {
        self.route = self.svc.routes.find(&self.parts);
        let priority = self.route.map(|r| r.priority).unwrap_or(Priority::Normal);
        match self.svc.shedder.try_acquire(priority) {
            Some(p) => {
                self.f.permits.push(p);
                Ok(())
            }
            None => Err(Failure::Overloaded),
        }
    }

    /// The answer to a request refused by admission or shedding: cheap, static, no Wasm.
    pub(super) fn respond_static(&mut self, why: Failure) -> Response<RespBody> {
        if let Some(s) = why.state() {
            self.f.passport.stamp(s);
        }
        let mut resp = self.error_response(&why);
        if matches!(why, Failure::BadHead(_)) && self.parts.version < http::Version::HTTP_2 {
            // The framing or target could not be trusted: don't read another request from
            // this connection.
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        self.local(resp)
    }
}
