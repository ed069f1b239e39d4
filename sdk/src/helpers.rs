//! Small conveniences over the generated types and host imports.

use crate::types::{Header, InboundAction, Rejection, Request, RequestView, Response};

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

/// Rejects the request with `status` (400-599) and `reason`: the gateway answers `reason` as
/// a `text/plain` body with `portcullis-error: plugin-rejected`, and records the request as
/// rejected by this plugin.
pub fn reject(status: u16, reason: &str) -> InboundAction {
    reject_with(status, reason, &[])
}

/// [`reject`] with headers on the answer (new in WIT 0.2.0), e.g. `www-authenticate` on a
/// 401 or `retry-after` on a 429:
///
/// ```text
/// reject_with(401, "missing API key", &[("www-authenticate", "Bearer")])
/// ```
///
/// `portcullis-error`, `content-type` and framing headers are the gateway's: naming one counts
/// as the plugin's `bad-output`, and the request is still rejected, without the headers.
pub fn reject_with(status: u16, reason: &str, headers: &[(&str, &str)]) -> InboundAction {
    InboundAction::Reject(Rejection {
        status,
        reason: reason.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
    })
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
