//! Small conveniences over the generated types and host imports.

use crate::types::{
    Header, InboundAction, Priority, Rejection, Request, RequestChanges, RequestView, Response,
    ResponseChanges,
};

pub(crate) fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Splits `path` (path and query) into the path alone.
fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or("")
}

/// Value of query parameter `name` in `path` (no percent-decoding).
fn query<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if kv == name => Some(""),
        _ => None,
    })
}

/// Value of cookie `name` among `cookie` header values.
fn cookie<'a>(values: impl Iterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    values.flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

impl Request {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    /// Path without the query.
    pub fn path_only(&self) -> &str {
        path_only(&self.path)
    }
    /// Value of query parameter `name` (no percent-decoding).
    pub fn query(&self, name: &str) -> Option<&str> {
        query(&self.path, name)
    }
    /// Value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        let values = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
            .map(|(_, v)| v.as_str());
        cookie(values, name)
    }
    /// Metadata value set by an inbound filter (the latest, if set twice).
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Conveniences over the view's accessors. Each one is a host call (or two): cheap, but not
/// free, so a filter that needs a value twice keeps it in a local.
impl RequestView {
    /// Path without the query.
    pub fn path_only(&self) -> String {
        path_only(&self.path()).to_string()
    }
    /// Value of query parameter `name` (no percent-decoding).
    pub fn query(&self, name: &str) -> Option<String> {
        query(&self.path(), name).map(str::to_string)
    }
    /// Value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let lines = self.header_all("cookie");
        cookie(lines.iter().map(String::as_str), name).map(str::to_string)
    }
    /// Metadata value set by an earlier inbound filter (the latest, if set twice).
    pub fn meta(&self, key: &str) -> Option<String> {
        self.metadata(key)
    }
}

/// A direct answer from an inbound filter, as `text/plain`.
pub fn respond(status: u16, body: &str) -> InboundAction {
    InboundAction::Respond(Response {
        status,
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        body: body.as_bytes().to_vec(),
    })
}

/// Rejects the request with `status` and `reason` (the gateway adds
/// `portcullis-error: plugin-rejected`).
pub fn reject(status: u16, reason: &str) -> InboundAction {
    InboundAction::Reject(Rejection {
        status,
        reason: reason.to_string(),
    })
}

/// Builder for request or response changes.
///
/// ```text
/// Changes::new().set_header("x-canary", "1").cluster("api-canary").inbound()
/// ```
#[derive(Debug, Default, Clone)]
pub struct Changes {
    set: Vec<Header>,
    remove: Vec<String>,
    path: Option<String>,
    cluster: Option<String>,
    priority: Option<Priority>,
    metadata: Vec<(String, String)>,
    status: Option<u16>,
}

impl Changes {
    /// No changes yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets a header, replacing any value it had.
    pub fn set_header(mut self, name: &str, value: &str) -> Self {
        self.set
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
    /// Removes a header.
    pub fn remove_header(mut self, name: &str) -> Self {
        self.remove.push(name.to_ascii_lowercase());
        self
    }
    /// Rewrites the path and query (normalized by the gateway before routing).
    pub fn path(mut self, path_and_query: &str) -> Self {
        self.path = Some(path_and_query.to_string());
        self
    }
    /// Sends the request to this cluster instead of the route's.
    pub fn cluster(mut self, name: &str) -> Self {
        self.cluster = Some(name.to_string());
        self
    }
    /// Sets the shedding class.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = Some(p);
        self
    }
    /// Sets metadata later filters and the endpoint can read.
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }
    /// Outbound only: replace the response status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
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
            && self.status.is_none()
    }
    /// As an inbound action (`Continue` when empty).
    pub fn inbound(self) -> InboundAction {
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
    /// As an outbound action (`Continue` when empty).
    pub fn outbound(self) -> crate::OutboundAction {
        if self.is_empty() {
            return crate::OutboundAction::Continue;
        }
        crate::OutboundAction::Modify(ResponseChanges {
            status: self.status,
            set_headers: self.set,
            remove_headers: self.remove,
        })
    }
}

/// The manifest's `[config]` table.
///
/// The table is fetched from the host once per instance and kept: it cannot change while an
/// instance lives (a new manifest is a new plugin version with new instances), and the
/// gateway reuses instances across calls, so later calls read it without a host call.
pub mod config {
    use crate::filter::bindings::portcullis::plugin::config as wit;
    use serde_json::{Map, Value};
    use std::sync::OnceLock;

    static TABLE: OnceLock<Map<String, Value>> = OnceLock::new();

    fn table() -> &'static Map<String, Value> {
        TABLE.get_or_init(|| match serde_json::from_str(&wit::all()) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        })
    }

    /// String value of `key` (non-strings as JSON text).
    pub fn get(key: &str) -> Option<String> {
        table().get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
    /// String value of `key`, or `default`.
    pub fn get_or(key: &str, default: &str) -> String {
        get(key).unwrap_or_else(|| default.to_string())
    }
    /// `key` as `T`: tables, arrays, numbers and booleans as they are; a string is first
    /// read as JSON text (so `"5"` parses as a number), then as a plain string.
    pub fn parse<T: serde::de::DeserializeOwned>(key: &str) -> Option<T> {
        match table().get(key)? {
            Value::String(s) => serde_json::from_str(s)
                .ok()
                .or_else(|| T::deserialize(&Value::String(s.clone())).ok()),
            v => T::deserialize(v).ok(),
        }
    }
    /// The whole table as JSON.
    pub fn all() -> Value {
        Value::Object(table().clone())
    }
}

/// Logging into the gateway's log (tagged with the plugin's name, rate-limited).
pub mod log {
    use crate::filter::bindings::portcullis::plugin::log::{log, Level};
    /// Logs at debug level, under the plugin's name.
    pub fn debug(msg: &str) {
        log(Level::Debug, msg)
    }
    /// Logs at info level.
    pub fn info(msg: &str) {
        log(Level::Info, msg)
    }
    /// Logs at warn level.
    pub fn warn(msg: &str) {
        log(Level::Warn, msg)
    }
    /// Logs at error level.
    pub fn error(msg: &str) {
        log(Level::Error, msg)
    }
}

/// Plugin-scoped metrics.
pub mod metrics {
    use crate::filter::bindings::portcullis::plugin::metrics as wit;
    /// Adds `value` to the plugin-scoped counter `name`.
    pub fn count(name: &str, value: u64) {
        wit::counter_add(name, value)
    }
    /// Records `value` in the plugin-scoped histogram `name`.
    pub fn observe(name: &str, value: f64) {
        wit::histogram_observe(name, value)
    }
}
