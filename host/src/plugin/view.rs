//! What a filter sees of the request and response: the WIT `request-view` and
//! `response-view` resources, served straight from the gateway's own `http` types.
//!
//! Why views: copying every header into the guest (and the guest's copy back into Rust
//! strings) cost more than a trivial filter's own work. The chain instead moves the request
//! head into the call's store (a few pointer-sized moves, no copies), hands the guest a
//! borrow, and answers only the accessors the guest calls. After the call the head moves
//! back, whatever the outcome.
//!
//! A store serves one call at a time and a borrow cannot outlive its call, so the resource's
//! handle needs no table entry: every accessor reads the store's current view. Between calls
//! the store holds empty views (the request's heads are swapped in and back out), so nothing
//! is ever missing and nothing can be lost.

use super::api;
use bytes::Bytes;
use http::HeaderMap;
use std::net::SocketAddr;
use wasmtime::component::Resource;

/// Marker type the WIT `request-view` resource is bound to; the data lives in [`CallView`].
pub struct RequestView;

/// Marker type the WIT `response-view` resource is bound to.
pub struct ResponseView;

/// The request head (and what filters have added to it) while a filter call runs.
pub struct ReqData {
    pub parts: http::request::Parts,
    pub client: SocketAddr,
    pub route: String,
    /// The body a `body = true` filter may read, already cut to its manifest's cap.
    pub body: Option<Bytes>,
    pub metadata: Vec<(String, String)>,
}

impl Default for ReqData {
    fn default() -> Self {
        ReqData {
            parts: empty_request_parts(),
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
            route: String::new(),
            body: None,
            metadata: Vec::new(),
        }
    }
}

impl ReqData {
    /// Takes the head out of `parts` (leaving an empty head behind until [`ReqData::restore`]).
    pub fn take(
        parts: &mut http::request::Parts,
        client: SocketAddr,
        route: Option<&str>,
        metadata: Vec<(String, String)>,
    ) -> ReqData {
        ReqData {
            parts: std::mem::replace(parts, empty_request_parts()),
            client,
            route: route.unwrap_or_default().to_string(),
            body: None,
            metadata,
        }
    }

    /// Puts the head back into `parts`; returns the metadata.
    pub fn restore(self, parts: &mut http::request::Parts) -> Vec<(String, String)> {
        *parts = self.parts;
        self.metadata
    }
}

fn empty_request_parts() -> http::request::Parts {
    http::Request::new(()).into_parts().0
}

/// The response head while an outbound filter call runs.
#[derive(Default)]
pub struct RespData {
    pub status: http::StatusCode,
    pub headers: HeaderMap,
}

/// What a store holds for the guest to read: the heads of the call in progress, or empty
/// ones between calls.
#[derive(Default)]
pub struct CallView {
    pub req: ReqData,
    pub resp: RespData,
}

pub(crate) fn first(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_string)
}

pub(crate) fn all(h: &HeaderMap) -> Vec<api::Header> {
    h.iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// The `request-view` accessors, once for every WIT version (each version's host trait
/// delegates here: `versions::common_imports!`).
impl ReqData {
    pub(crate) fn method(&self) -> String {
        self.parts.method.as_str().to_string()
    }

    pub(crate) fn path(&self) -> String {
        let pq = self.parts.uri.path_and_query();
        pq.map_or("/", |p| p.as_str()).to_string()
    }

    pub(crate) fn authority(&self) -> String {
        crate::routing::request_host(&self.parts)
            .unwrap_or_default()
            .to_string()
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        first(&self.parts.headers, name)
    }

    pub(crate) fn header_all(&self, name: &str) -> Vec<String> {
        self.parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }

    /// The latest value earlier filters set for `key`.
    pub(crate) fn meta(&self, key: &str) -> Option<String> {
        let m = &self.metadata;
        m.iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }
}

/// The borrows handed to the guest. The representation is unused (see the module docs).
pub(super) fn request_handle() -> Resource<RequestView> {
    Resource::new_borrow(0)
}

pub(super) fn response_handle() -> Resource<ResponseView> {
    Resource::new_borrow(0)
}
