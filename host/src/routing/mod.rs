//! The route table: first matching route in config order wins.
//!
//! Why first-match rather than "most specific": an operator reads the file top to bottom and
//! can tell which route a request takes without computing specificity in their head.

use crate::config::{self, EffectiveTimeouts, Priority};
use http::{HeaderName, HeaderValue, Method};
use std::sync::Arc;

mod index;
pub(crate) use index::{Candidates, MatchIndex};

#[derive(Debug)]
pub enum Target {
    Cluster(usize),
    Endpoint(Arc<str>),
}

#[derive(Debug)]
pub struct Route {
    pub index: usize,
    pub name: Arc<str>,
    pub target: Target,
    pub priority: Priority,
    pub timeouts: EffectiveTimeouts,
    pub max_body_bytes: u64,
    pub retry: config::Retry,
    /// WebSocket upgrades allowed.
    pub websocket: bool,
    matcher: Matcher,
}

/// A request-head predicate: path prefix, host, method and exact header values, all of which
/// must hold. Shared by routes and plugin manifests so both match the same way.
#[derive(Debug, Default)]
pub struct Matcher {
    path_prefix: Option<String>,
    host: Option<HostMatch>,
    method: Option<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Matcher {
    /// Builds a matcher; values that cannot be valid HTTP were rejected by config validation
    /// and are dropped here.
    pub fn new(m: &config::RouteMatch) -> Self {
        Matcher {
            path_prefix: m.path_prefix.clone(),
            host: m.host.as_ref().map(|h| match h.strip_prefix('*') {
                Some(s) => HostMatch::Suffix(s.to_ascii_lowercase()),
                None => HostMatch::Exact(h.to_ascii_lowercase()),
            }),
            method: m
                .method
                .as_ref()
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok()),
            headers: crate::core::headers::parse_pairs(&m.headers),
        }
    }

    /// `host` is the authority without port (see [`request_host`]).
    pub fn matches(&self, parts: &http::request::Parts, host: Option<&str>) -> bool {
        self.path_prefix
            .as_deref()
            .is_none_or(|p| prefix_matches(parts.uri.path(), p))
            && self
                .host
                .as_ref()
                .is_none_or(|h| host.is_some_and(|x| h.matches(x)))
            && self.method.as_ref().is_none_or(|m| m == parts.method)
            && self
                .headers
                .iter()
                .all(|(k, v)| parts.headers.get_all(k).iter().any(|x| x == v))
    }
}

#[derive(Debug)]
enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
                    && !host[..host.len() - s.len()].contains('.')
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    index: MatchIndex,
}

impl RouteTable {
    /// Builds the table; `cluster_index` maps a cluster name to its index in `Upstreams`.
    /// The config was validated, so names resolve.
    pub fn build(cfg: &config::Config, cluster_index: impl Fn(&str) -> Option<usize>) -> Self {
        let mut routes = Vec::with_capacity(cfg.routes.len());
        for (i, r) in cfg.routes.iter().enumerate() {
            let target = match (&r.cluster, &r.endpoint) {
                (Some(c), _) => match cluster_index(c) {
                    Some(ci) => Target::Cluster(ci),
                    None => continue,
                },
                (None, Some(e)) => Target::Endpoint(Arc::from(e.as_str())),
                (None, None) => continue,
            };
            let cluster_timeouts = r
                .cluster
                .as_ref()
                .and_then(|c| cfg.clusters.iter().find(|x| &x.name == c))
                .map(|c| &c.timeouts);
            routes.push(Route {
                index: i,
                name: Arc::from(r.name.as_str()),
                target,
                priority: r.priority,
                timeouts: EffectiveTimeouts::resolve(&cfg.timeouts, cluster_timeouts, &r.timeouts),
                max_body_bytes: r.max_body_bytes.unwrap_or(cfg.limits.max_body_bytes),
                retry: r.retry.clone(),
                websocket: r.websocket,
                matcher: Matcher::new(&r.matcher),
            });
        }
        let index = MatchIndex::build(routes.iter().map(|r| &r.matcher));
        RouteTable { routes, index }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route for a request head: the first in file order that matches. Only the
    /// index's candidates are checked, in order. The host (the authority without port, see
    /// [`request_host`]) is only looked up when some route has a host condition.
    pub fn find(&self, parts: &http::request::Parts) -> Option<&Route> {
        let host = if self.index.uses_host() {
            request_host(parts)
        } else {
            None
        };
        self.index
            .candidates(parts.uri.path(), host)
            .into_iter()
            .filter_map(|i| self.routes.get(i as usize))
            .find(|r| r.matcher.matches(parts, host))
    }
}

/// `/api` matches `/api`, `/api/x` and `/api?x`, but not `/apix` — unless the prefix itself
/// ends with `/`, in which case plain string prefix applies.
fn prefix_matches(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// The request's host without port: `:authority`/URI host first (h2, absolute-form), then
/// the `Host` header.
pub(crate) fn request_host(parts: &http::request::Parts) -> Option<&str> {
    if let Some(h) = parts.uri.host() {
        return Some(h);
    }
    let h = parts.headers.get(http::header::HOST)?.to_str().ok()?;
    Some(crate::core::identity::host_without_port(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(toml: &str) -> RouteTable {
        let cfg = config::Config::parse(toml, Path::new(".")).expect("config");
        RouteTable::build(&cfg, |n| cfg.clusters.iter().position(|c| c.name == n))
    }

    fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    const CFG: &str = r#"
        [[listener]]
        name = "l"
        listen = "127.0.0.1:0"
        [[cluster]]
        name = "a"
        endpoints = ["127.0.0.1:1"]
        [[cluster]]
        name = "b"
        endpoints = ["127.0.0.1:2"]
        [[route]]
        name = "canary"
        match = { path_prefix = "/api", headers = { "x-canary" = "1" } }
        cluster = "b"
        [[route]]
        name = "api-post"
        match = { path_prefix = "/api", method = "POST", host = "*.example.com" }
        cluster = "b"
        [[route]]
        name = "api"
        match = { path_prefix = "/api" }
        cluster = "a"
    "#;

    fn pick(t: &RouteTable, p: &http::request::Parts) -> Option<String> {
        t.find(p).map(|r| r.name.to_string())
    }

    #[test]
    fn first_match_by_prefix_host_method_header() {
        let t = table(CFG);
        let p = head("GET", "/api/users", &[("x-canary", "1")]);
        assert_eq!(pick(&t, &p).as_deref(), Some("canary"));
        let p = head("POST", "/api/users", &[("host", "shop.example.com:8080")]);
        assert_eq!(pick(&t, &p).as_deref(), Some("api-post"));
        let p = head("POST", "/api/users", &[("host", "a.b.example.com")]);
        assert_eq!(pick(&t, &p).as_deref(), Some("api"));
        let p = head("GET", "/api", &[]);
        assert_eq!(pick(&t, &p).as_deref(), Some("api"));
        let p = head("GET", "/apix", &[]);
        assert_eq!(pick(&t, &p), None);
        let p = head("GET", "/other", &[]);
        assert_eq!(pick(&t, &p), None);
    }
}
