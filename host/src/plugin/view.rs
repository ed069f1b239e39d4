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

use super::bindings::types;
use super::engine::StoreData;
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

fn first(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_string)
}

fn all(h: &HeaderMap) -> Vec<types::Header> {
    h.iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

impl types::HostRequestView for StoreData {
    fn method(&mut self, _: Resource<RequestView>) -> String {
        self.view.req.parts.method.as_str().to_string()
    }

    fn path(&mut self, _: Resource<RequestView>) -> String {
        let pq = self.view.req.parts.uri.path_and_query();
        pq.map_or("/", |p| p.as_str()).to_string()
    }

    fn authority(&mut self, _: Resource<RequestView>) -> String {
        crate::routing::request_host(&self.view.req.parts)
            .unwrap_or_default()
            .to_string()
    }

    fn header(&mut self, _: Resource<RequestView>, name: String) -> Option<String> {
        first(&self.view.req.parts.headers, &name)
    }

    fn header_all(&mut self, _: Resource<RequestView>, name: String) -> Vec<String> {
        self.view
            .req
            .parts
            .headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }

    fn headers(&mut self, _: Resource<RequestView>) -> Vec<types::Header> {
        all(&self.view.req.parts.headers)
    }

    fn client_addr(&mut self, _: Resource<RequestView>) -> String {
        self.view.req.client.to_string()
    }

    fn body(&mut self, _: Resource<RequestView>) -> Option<Vec<u8>> {
        self.view.req.body.as_ref().map(|b| b.to_vec())
    }

    fn metadata(&mut self, _: Resource<RequestView>, key: String) -> Option<String> {
        let m = &self.view.req.metadata;
        m.iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }

    fn all_metadata(&mut self, _: Resource<RequestView>) -> Vec<(String, String)> {
        self.view.req.metadata.clone()
    }

    fn route(&mut self, _: Resource<RequestView>) -> String {
        self.view.req.route.clone()
    }

    /// Views are only ever lent to the guest (`borrow<request-view>`), never owned by it, so
    /// there is nothing to free.
    fn drop(&mut self, _: Resource<RequestView>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostResponseView for StoreData {
    fn status(&mut self, _: Resource<ResponseView>) -> u16 {
        self.view.resp.status.as_u16()
    }

    fn header(&mut self, _: Resource<ResponseView>, name: String) -> Option<String> {
        first(&self.view.resp.headers, &name)
    }

    fn headers(&mut self, _: Resource<ResponseView>) -> Vec<types::Header> {
        all(&self.view.resp.headers)
    }

    fn drop(&mut self, _: Resource<ResponseView>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// The borrows handed to the guest. The representation is unused (see the module docs).
pub(super) fn request_handle() -> Resource<RequestView> {
    Resource::new_borrow(0)
}

pub(super) fn response_handle() -> Resource<ResponseView> {
    Resource::new_borrow(0)
}
