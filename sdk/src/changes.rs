//! Builders for what a filter changes: [`RequestEdit`] for an inbound filter, [`ResponseEdit`]
//! for an outbound one. Two types, so that a change the phase cannot apply (a status on a
//! request, a cluster on a response) does not compile instead of being dropped.

use crate::types::{
    Header, InboundAction, OutboundAction, Priority, RequestChanges, ResponseChanges,
};

/// An inbound filter's changes to the request, applied all or nothing before the next filter
/// and routing.
///
/// ```text
/// RequestEdit::new().set_header("x-canary", "1").cluster("api-canary").action()
/// ```
#[derive(Debug, Default, Clone)]
pub struct RequestEdit {
    set: Vec<Header>,
    remove: Vec<String>,
    path: Option<String>,
    cluster: Option<String>,
    priority: Option<Priority>,
    metadata: Vec<(String, String)>,
}

impl RequestEdit {
    /// No changes yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets a header, replacing every value it had.
    pub fn set_header(mut self, name: &str, value: &str) -> Self {
        self.set
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
    /// Removes a header (removals apply before sets).
    pub fn remove_header(mut self, name: &str) -> Self {
        self.remove.push(name.to_ascii_lowercase());
        self
    }
    /// Rewrites the path and query; must start with `/` (normalized by the gateway before
    /// the next filter and routing).
    pub fn path(mut self, path_and_query: &str) -> Self {
        self.path = Some(path_and_query.to_string());
        self
    }
    /// Sends the request to this cluster instead of the route's.
    pub fn cluster(mut self, name: &str) -> Self {
        self.cluster = Some(name.to_string());
        self
    }
    /// Sheds the request as this class instead of the route's.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = Some(p);
        self
    }
    /// Adds metadata later filters, outbound filters and the endpoint can read.
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }
    /// Whether no change was asked for.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.remove.is_empty()
            && self.path.is_none()
            && self.cluster.is_none()
            && self.priority.is_none()
            && self.metadata.is_empty()
    }
    /// As the filter's answer: [`InboundAction::Modify`], or `Continue` when empty.
    pub fn action(self) -> InboundAction {
        if self.is_empty() {
            return InboundAction::Continue;
        }
        InboundAction::Modify(RequestChanges {
            set_headers: self.set,
            remove_headers: self.remove,
            path: self.path,
            cluster: self.cluster,
            priority: self.priority,
            metadata: self.metadata,
        })
    }
}

/// An outbound filter's changes to the response head (the body streams past untouched).
///
/// ```text
/// ResponseEdit::new().set_header("x-frame-options", "DENY").status(503).action()
/// ```
#[derive(Debug, Default, Clone)]
pub struct ResponseEdit {
    status: Option<u16>,
    set: Vec<Header>,
    remove: Vec<String>,
}

impl ResponseEdit {
    /// No changes yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Replaces the status (200-599).
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    /// Sets a header, replacing every value it had.
    pub fn set_header(mut self, name: &str, value: &str) -> Self {
        self.set
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
    /// Removes a header (removals apply before sets).
    pub fn remove_header(mut self, name: &str) -> Self {
        self.remove.push(name.to_ascii_lowercase());
        self
    }
    /// Whether no change was asked for.
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.set.is_empty() && self.remove.is_empty()
    }
    /// As the filter's answer: [`OutboundAction::Modify`], or `Continue` when empty.
    pub fn action(self) -> OutboundAction {
        if self.is_empty() {
            return OutboundAction::Continue;
        }
        OutboundAction::Modify(ResponseChanges {
            status: self.status,
            set_headers: self.set,
            remove_headers: self.remove,
        })
    }
}
