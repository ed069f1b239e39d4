//! Semantic checks that serde cannot express. Collects every problem; never stops at the first.

use super::{Config, DnsEndpoints, EndpointSpec, Endpoints, Problem};
use std::collections::HashSet;
use std::net::SocketAddr;

/// Longest epoch tick: a looping guest holds its worker for up to one tick between yields,
/// and a CPU budget can overrun by up to two ticks.
const MAX_EPOCH_TICK_MS: u64 = 10;

pub(super) fn validate(cfg: &Config, out: &mut Vec<Problem>) {
    let mut p = |key: String, reason: String| out.push(Problem::new(key, reason));
    admin(cfg, &mut p);
    listeners(cfg, &mut p);
    let names = clusters(cfg, &mut p);
    routes(cfg, &names, &mut p);
    globals(cfg, &mut p);
    rate_limits(cfg, &mut p);
    dns(cfg, &mut p);
    if let Some(pl) = &cfg.plugins {
        plugins(pl, &mut p);
        plugin_store(pl, cfg.redis.is_some(), &mut p);
    }
}

/// `[plugins] store`, `kv` and their keys.
fn plugin_store(pl: &super::Plugins, has_redis: bool, p: &mut impl FnMut(String, String)) {
    if pl.store == super::PluginStoreKind::Redis && !has_redis {
        p(
            "plugins.store".into(),
            "`redis` needs a [redis] section (the fleet store's url)".into(),
        );
    }
    if pl.kv == super::KvStore::Redis && !has_redis {
        p(
            "plugins.kv".into(),
            "`redis` needs a [redis] section".into(),
        );
    }
    if !(100..=60_000).contains(&pl.store_poll_ms) {
        p(
            "plugins.store_poll_ms".into(),
            "must be between 100 and 60000".into(),
        );
    }
    if !(2..=100).contains(&pl.store_history) {
        p(
            "plugins.store_history".into(),
            "must be between 2 and 100 (rollback needs a previous version)".into(),
        );
    }
    if !(100..=120_000).contains(&pl.store_timeout_ms) {
        p(
            "plugins.store_timeout_ms".into(),
            "must be between 100 and 120000".into(),
        );
    }
}

/// `[admin]`, `[access_log]` and `[tracing]`.
fn admin(cfg: &Config, p: &mut impl FnMut(String, String)) {
    if cfg.admin.listen.parse::<SocketAddr>().is_err() {
        p(
            "admin.listen".into(),
            format!("`{}` is not an ip:port socket address", cfg.admin.listen),
        );
    }
    if cfg.admin.passport_ring == 0 || cfg.admin.passport_ring > 1_000_000 {
        p(
            "admin.passport_ring".into(),
            "must be between 1 and 1000000".into(),
        );
    }

    if cfg
        .admin
        .upgrade_socket
        .as_ref()
        .is_some_and(|s| s.as_os_str().is_empty() || s.as_os_str().len() > 107)
    {
        p(
            "admin.upgrade_socket".into(),
            "must be a path of 1 to 107 bytes (the longest Unix socket path)".into(),
        );
    }
    if !(1_000..=3_600_000).contains(&cfg.admin.upgrade_timeout_ms) {
        p(
            "admin.upgrade_timeout_ms".into(),
            "must be between 1000 and 3600000".into(),
        );
    }
    for (i, h) in cfg.admin.hosts.iter().enumerate() {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            p(
                format!("admin.hosts[{i}]"),
                format!("`{h}` is not a host name (no port, no scheme)"),
            );
        }
    }
    for (key, v) in [
        ("admin.token", &cfg.admin.token),
        ("admin.read_token", &cfg.admin.read_token),
    ] {
        if v.as_deref() == Some("") {
            p(key.into(), "must not be empty (omit it instead)".into());
        }
    }
    if let (Some(a), Some(b)) = (
        cfg.admin.token.as_deref(),
        cfg.plugins
            .as_ref()
            .and_then(|pl| pl.admin_token.as_deref()),
    ) {
        if a != b {
            p(
                "plugins.admin_token".into(),
                "an alias of [admin] token, and both are set to different values: keep one".into(),
            );
        }
    }
    if let Some(a) = &cfg.access_log {
        validate_access_log(a, p);
    }
    if let Some(t) = &cfg.tracing {
        validate_tracing(t, p);
    }
}

/// Every `[[listener]]`: unique names and addresses, TLS files, HTTP/3 settings.
fn listeners(cfg: &Config, p: &mut impl FnMut(String, String)) {
    if cfg.listeners.is_empty() {
        p(
            "listener".into(),
            "at least one [[listener]] is required".into(),
        );
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let k = |f: &str| format!("listener[{i}].{f}");
        if l.name.is_empty() || !names.insert(l.name.clone()) {
            p(k("name"), format!("`{}` is empty or used twice", l.name));
        }
        match l.listen.parse::<SocketAddr>() {
            Ok(a) => {
                // Port 0 (pick any free port) can be repeated.
                if a.port() != 0 && !addrs.insert(a) {
                    p(k("listen"), format!("`{a}` is used by another listener"));
                }
            }
            Err(_) => p(
                k("listen"),
                format!("`{}` is not an ip:port socket address", l.listen),
            ),
        }
        if l.max_connections == 0 {
            p(k("max_connections"), "must be at least 1".into());
        }
        if l.max_tunnels == 0 {
            p(
                k("max_tunnels"),
                "must be at least 1 (set `websocket = false` on routes to refuse upgrades)".into(),
            );
        }
        if let Some(tls) = &l.tls {
            for (f, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                if !path.is_file() {
                    p(k(f), format!("file `{}` does not exist", path.display()));
                }
            }
            for (j, s) in tls.sni.iter().enumerate() {
                if s.names.is_empty() {
                    p(
                        k(&format!("tls.sni[{j}].names")),
                        "must not be empty".into(),
                    );
                }
                for (f, path) in [("cert", &s.cert), ("key", &s.key)] {
                    if !path.is_file() {
                        p(
                            k(&format!("tls.sni[{j}].{f}")),
                            format!("file `{}` does not exist", path.display()),
                        );
                    }
                }
            }
        } else if l.http3 {
            p(k("http3"), "HTTP/3 needs `tls` on the listener".into());
        }
    }
}

/// Every `[[cluster]]`; returns the cluster names routes may refer to.
fn clusters<'a>(cfg: &'a Config, p: &mut impl FnMut(String, String)) -> HashSet<&'a str> {
    let mut clusters = HashSet::new();
    for (i, c) in cfg.clusters.iter().enumerate() {
        let k = |f: &str| format!("cluster[{i}].{f}");
        if c.name.is_empty() || !clusters.insert(c.name.as_str()) {
            p(k("name"), format!("`{}` is empty or used twice", c.name));
        }
        match &c.endpoints {
            Endpoints::Static(list) => static_endpoints(list, &k, p),
            Endpoints::Dns(d) => dns_endpoints(d, &k, p),
        }
        if c.pool.max_connections_per_endpoint == 0 {
            p(
                k("pool.max_connections_per_endpoint"),
                "must be at least 1".into(),
            );
        }
        if c.pool.max_requests_per_connection == 0 {
            p(
                k("pool.max_requests_per_connection"),
                "must be at least 1".into(),
            );
        }
        if let Some(ca) = c.tls.as_ref().and_then(|t| t.ca.as_ref()) {
            if !ca.is_file() {
                p(
                    k("tls.ca"),
                    format!("file `{}` does not exist", ca.display()),
                );
            }
        }
        if let Some(why) = c.max_concurrency.problem() {
            p(k("max_concurrency"), why);
        }
        for (f, v) in [
            ("timeouts.connect_ms", c.timeouts.connect_ms),
            (
                "timeouts.upstream_headers_ms",
                c.timeouts.upstream_headers_ms,
            ),
            (
                "timeouts.upstream_body_idle_ms",
                c.timeouts.upstream_body_idle_ms,
            ),
        ] {
            if v == Some(0) {
                p(k(f), "a timeout must be greater than 0".into());
            }
        }
    }

    clusters
}

/// Every `[[route]]`: unique names, a known cluster or endpoint, a well-formed match.
fn routes(cfg: &Config, clusters: &HashSet<&str>, p: &mut impl FnMut(String, String)) {
    let mut routes = HashSet::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let k = |f: &str| format!("route[{i}].{f}");
        if r.name.is_empty() || !routes.insert(r.name.as_str()) {
            p(k("name"), format!("`{}` is empty or used twice", r.name));
        }
        match (&r.cluster, &r.endpoint) {
            (Some(c), None) => {
                if !clusters.contains(c.as_str()) {
                    p(k("cluster"), format!("no [[cluster]] is named `{c}`"));
                }
            }
            (None, Some(_)) => {
                if cfg.plugins.is_none() {
                    p(
                        k("endpoint"),
                        "endpoint routes need a [plugins] section".into(),
                    );
                }
            }
            (Some(_), Some(_)) => p(
                k("cluster"),
                "set either `cluster` or `endpoint`, not both".into(),
            ),
            (None, None) => p(
                k("cluster"),
                "one of `cluster` or `endpoint` is required".into(),
            ),
        }
        for (key, reason) in match_problems(&r.matcher) {
            p(k(&format!("match.{key}")), reason);
        }
        let t = &r.timeouts;
        for (f, v) in [
            ("timeouts.client_body_idle_ms", t.client_body_idle_ms),
            ("timeouts.connect_ms", t.connect_ms),
            ("timeouts.upstream_headers_ms", t.upstream_headers_ms),
            ("timeouts.upstream_body_idle_ms", t.upstream_body_idle_ms),
            ("timeouts.request_deadline_ms", t.request_deadline_ms),
            ("timeouts.tunnel_idle_ms", t.tunnel_idle_ms),
            ("retry.per_try_timeout_ms", r.retry.per_try_timeout_ms),
        ] {
            if v == Some(0) {
                p(k(f), "a timeout must be greater than 0".into());
            }
        }
        if r.retry.hedge && r.retry.per_try_timeout_ms.is_none() {
            p(
                k("retry.hedge"),
                "needs `retry.per_try_timeout_ms`: how long the first attempt runs alone".into(),
            );
        }
        if r.retry.hedge && r.retry.attempts < 2 {
            p(
                k("retry.hedge"),
                "needs `retry.attempts` of at least 2: the hedge is the second attempt".into(),
            );
        }
    }
}

/// `[[rate_limit]]` and `[redis]`.
fn rate_limits(cfg: &Config, p: &mut impl FnMut(String, String)) {
    let mut names = HashSet::new();
    for (i, r) in cfg.rate_limits.iter().enumerate() {
        let k = |f: &str| format!("rate_limit[{i}].{f}");
        let name_ok = !r.name.is_empty()
            && r.name.len() <= 64
            && r.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok || !names.insert(r.name.as_str()) {
            p(
                k("name"),
                format!(
                    "`{}` is empty, used twice, or not 1 to 64 of [A-Za-z0-9._-]",
                    r.name
                ),
            );
        }
        for (key, reason) in match_problems(&r.matcher) {
            p(k(&format!("match.{key}")), reason);
        }
        if let Err(why) = crate::ratelimit::KeySource::parse(&r.key) {
            p(k("key"), why);
        }
        if !(1..=1_000_000_000).contains(&r.limit) {
            p(k("limit"), "must be between 1 and 1000000000".into());
        }
        if !(1..=86_400_000).contains(&r.window_ms) {
            p(
                k("window_ms"),
                "must be between 1 and 86400000 (a day)".into(),
            );
        }
        if !(1..=10_000_000).contains(&r.max_keys) {
            p(k("max_keys"), "must be between 1 and 10000000".into());
        }
        if r.scope == super::RateLimitScope::Global && cfg.redis.is_none() {
            p(k("scope"), "`global` limits need a [redis] section".into());
        }
    }
    if let Some(r) = &cfg.redis {
        if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
            p(
                "redis.url".into(),
                "must start with `redis://` or `rediss://`".into(),
            );
        } else if let Some(ca) = r.ca.as_ref().filter(|_| !r.url.starts_with("rediss://")) {
            p(
                "redis.ca".into(),
                format!(
                    "`{}`: a CA is only used with `rediss://` (TLS) URLs",
                    ca.display()
                ),
            );
        } else if let Err(e) = crate::redis_client::client(r) {
            let key = if r.ca.is_some() && !e.to_string().starts_with("not a Redis URL") {
                "redis.ca"
            } else {
                "redis.url"
            };
            p(key.into(), format!("{e:#}"));
        }
        if !(1..=10_000).contains(&r.connect_timeout_ms) {
            p(
                "redis.connect_timeout_ms".into(),
                "must be between 1 and 10000".into(),
            );
        }
        if !(1..=1_000).contains(&r.command_timeout_ms) {
            p(
                "redis.command_timeout_ms".into(),
                "must be between 1 and 1000".into(),
            );
        }
    }
}

/// `[timeouts]`, `[limits]` and `[http]`.
fn globals(cfg: &Config, p: &mut impl FnMut(String, String)) {
    let t = &cfg.timeouts;
    for (f, v) in [
        ("timeouts.client_header_ms", t.client_header_ms),
        ("timeouts.client_body_idle_ms", t.client_body_idle_ms),
        ("timeouts.client_idle_ms", t.client_idle_ms),
        ("timeouts.client_write_idle_ms", t.client_write_idle_ms),
        ("timeouts.connect_ms", t.connect_ms),
        ("timeouts.upstream_headers_ms", t.upstream_headers_ms),
        ("timeouts.upstream_body_idle_ms", t.upstream_body_idle_ms),
        ("timeouts.request_deadline_ms", t.request_deadline_ms),
        ("timeouts.drain_ms", t.drain_ms),
        ("timeouts.tunnel_idle_ms", t.tunnel_idle_ms),
    ] {
        if v == 0 {
            p(f.into(), "a timeout must be greater than 0".into());
        }
    }
    let l = &cfg.limits;
    if l.max_header_bytes < 8192 {
        p(
            "limits.max_header_bytes".into(),
            "must be at least 8192".into(),
        );
    }
    if l.max_headers == 0 {
        p("limits.max_headers".into(), "must be at least 1".into());
    }
    if let Some(why) = l.max_in_flight.problem() {
        p("limits.max_in_flight".into(), why);
    }
    if l.max_concurrent_streams == 0 {
        p(
            "limits.max_concurrent_streams".into(),
            "must be at least 1".into(),
        );
    }
    if l.h2_max_control_frames_per_sec == 0 {
        p(
            "limits.h2_max_control_frames_per_sec".into(),
            "must be at least 1".into(),
        );
    }
    for (k, v) in &cfg.http.error_headers {
        let key = format!("http.error_headers.{k}");
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            p(key, "not a valid header name".into());
        } else if http::HeaderValue::from_str(v).is_err() {
            p(key, "not a valid header value".into());
        }
    }
    for (i, e) in cfg.http.trusted_proxies.iter().enumerate() {
        if crate::core::client::parse_entry(e).is_none() {
            p(
                format!("http.trusted_proxies[{i}]"),
                format!("`{e}` is not an IP address or a CIDR (e.g. 10.0.0.0/8)"),
            );
        }
    }
    if cfg.http.trusted_proxies.len() > 1024 {
        p(
            "http.trusted_proxies".into(),
            "at most 1024 entries: each is checked against every request's peer".into(),
        );
    }
    if cfg.http.error_headers.len() > 32 {
        p(
            "http.error_headers".into(),
            "at most 32 headers: they go on every error response".into(),
        );
    }
}

/// `[plugins]`: its tokens, limits and directories.
fn plugins(pl: &super::Plugins, p: &mut impl FnMut(String, String)) {
    if pl.admin_token.as_deref() == Some("") {
        p(
            "plugins.admin_token".into(),
            "must not be empty (omit it to refuse uploads)".into(),
        );
    }
    if pl.max_instances == 0 {
        p("plugins.max_instances".into(), "must be at least 1".into());
    }
    if pl.memory_budget_mb < pl.max_memory_mb {
        p(
            "plugins.memory_budget_mb".into(),
            format!(
                "must be at least max_memory_mb ({}): a plugin at the ceiling could never grow to it",
                pl.max_memory_mb
            ),
        );
    }
    if !(1..=MAX_EPOCH_TICK_MS).contains(&pl.epoch_tick_ms) {
        p(
            "plugins.epoch_tick_ms".into(),
            format!(
                "must be between 1 and {MAX_EPOCH_TICK_MS}: it bounds how long a running \
                 guest can hold its worker before it yields"
            ),
        );
    } else if pl.max_cpu_ms < pl.epoch_tick_ms {
        p(
            "plugins.max_cpu_ms".into(),
            format!(
                "must be at least epoch_tick_ms ({}): CPU is counted in whole ticks",
                pl.epoch_tick_ms
            ),
        );
    }
    if pl.cache_max_mb == 0 {
        p(
            "plugins.cache_max_mb".into(),
            "must be at least 1 (use `cache = false` to turn the compile cache off)".into(),
        );
    }
    if pl.kv_max_keys == 0
        || pl.kv_max_key_bytes == 0
        || pl.kv_max_value_bytes == 0
        || pl.kv_max_ttl_ms == 0
    {
        p(
            "plugins".into(),
            "kv_max_keys, kv_max_key_bytes, kv_max_value_bytes and kv_max_ttl_ms must be greater than 0".into(),
        );
    }
    if pl.max_cpu_ms == 0 || pl.max_memory_mb == 0 || pl.max_timeout_ms == 0 {
        p(
            "plugins".into(),
            "max_cpu_ms, max_memory_mb and max_timeout_ms must be greater than 0".into(),
        );
    }
}

fn static_endpoints(
    list: &[EndpointSpec],
    k: &dyn Fn(&str) -> String,
    p: &mut impl FnMut(String, String),
) {
    if list.is_empty() {
        p(k("endpoints"), "at least one endpoint is required".into());
    }
    for (j, e) in list.iter().enumerate() {
        if !valid_host_port(e.addr()) {
            p(
                k(&format!("endpoints[{j}]")),
                format!("`{}` is not host:port", e.addr()),
            );
        }
        if e.weight() == 0 || e.weight() > 1000 {
            p(
                k(&format!("endpoints[{j}].weight")),
                "must be between 1 and 1000".into(),
            );
        }
    }
}

/// Most endpoints one DNS answer may give a cluster (`max_endpoints`' ceiling).
const MAX_DNS_ENDPOINTS: usize = 4096;

fn dns_endpoints(d: &DnsEndpoints, k: &dyn Fn(&str) -> String, p: &mut impl FnMut(String, String)) {
    let name_ok = match d.target() {
        Some((name, None)) => valid_dns_name(name.trim_end_matches('.')),
        Some((host, Some(_))) => valid_dns_name(host.trim_end_matches('.')),
        None => false,
    };
    if !name_ok {
        let why = if d.is_srv() {
            format!(
                "`{}` is not a DNS name (an SRV name carries no port)",
                d.dns
            )
        } else if d.target().is_none() {
            format!(
                "`{}` needs a port: `name:port` (or an `_http._tcp.` SRV name)",
                d.dns
            )
        } else {
            format!("`{}` is not a DNS name with a port", d.dns)
        };
        p(k("endpoints.dns"), why);
    }
    if !(100..=86_400_000).contains(&d.refresh_ms) {
        p(
            k("endpoints.refresh_ms"),
            "must be between 100 and 86400000".into(),
        );
    }
    if !(1..=60_000).contains(&d.timeout_ms) {
        p(
            k("endpoints.timeout_ms"),
            "must be between 1 and 60000".into(),
        );
    }
    if !(1..=MAX_DNS_ENDPOINTS).contains(&d.max_endpoints) {
        p(
            k("endpoints.max_endpoints"),
            format!("must be between 1 and {MAX_DNS_ENDPOINTS}"),
        );
    }
}

/// Letters, digits, `-` and `_` (SRV labels) in dot-separated labels of 1 to 63 bytes, 253 in
/// all; or an IP address.
fn valid_dns_name(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `[dns]`.
fn dns(cfg: &Config, p: &mut impl FnMut(String, String)) {
    if cfg.dns.nameservers.len() > 16 {
        p("dns.nameservers".into(), "at most 16 name servers".into());
    }
    for (i, n) in cfg.dns.nameservers.iter().enumerate() {
        if n.parse::<SocketAddr>().is_err() {
            p(
                format!("dns.nameservers[{i}]"),
                format!("`{n}` is not an ip:port socket address"),
            );
        }
    }
}

fn valid_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }
        None => false,
    }
}

/// Problems in a request matcher as `(key under match., reason)`.
fn match_problems(m: &super::RouteMatch) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(pp) = &m.path_prefix {
        if !pp.starts_with('/') {
            out.push(("path_prefix".into(), "must start with `/`".into()));
        }
    }
    if let Some(meth) = &m.method {
        if http::Method::from_bytes(meth.as_bytes()).is_err() {
            out.push(("method".into(), format!("`{meth}` is not an HTTP method")));
        }
    }
    for (name, value) in &m.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            out.push((format!("headers.{name}"), "not a valid header name".into()));
        }
        if http::HeaderValue::from_str(value).is_err() {
            out.push((format!("headers.{name}"), "not a valid header value".into()));
        }
    }
    out
}

/// Validates a matcher outside the gateway config (plugin manifests).
pub fn route_match(m: &super::RouteMatch) -> Result<(), String> {
    let problems = match_problems(m);
    if problems.is_empty() {
        return Ok(());
    }
    Err(problems
        .into_iter()
        .map(|(k, r)| format!("{k}: {r}"))
        .collect::<Vec<_>>()
        .join("; "))
}

fn validate_access_log(a: &super::AccessLog, p: &mut impl FnMut(String, String)) {
    if a.path.as_os_str().is_empty() {
        p(
            "access_log.path".into(),
            "must be `-` (stdout) or a file".into(),
        );
    } else if !a.is_stdout() {
        if a.path.is_dir() {
            p(
                "access_log.path".into(),
                format!("`{}` is a directory", a.path.display()),
            );
        } else if !a.path.parent().is_some_and(|d| d.is_dir()) {
            p(
                "access_log.path".into(),
                format!("directory of `{}` does not exist", a.path.display()),
            );
        }
    }
    if !(0.0..=1.0).contains(&a.sample_successes) {
        p(
            "access_log.sample_successes".into(),
            "must be between 0 and 1".into(),
        );
    }
    if a.queue == 0 || a.queue > 1_048_576 {
        p(
            "access_log.queue".into(),
            "must be between 1 and 1048576".into(),
        );
    }
    if a.flush_ms == 0 || a.flush_ms > 60_000 {
        p(
            "access_log.flush_ms".into(),
            "must be between 1 and 60000".into(),
        );
    }
}

fn validate_tracing(t: &super::Tracing, p: &mut impl FnMut(String, String)) {
    match t.otlp_endpoint.parse::<http::Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.authority().is_some()
                && u.query().is_none() => {}
        _ => p(
            "tracing.otlp_endpoint".into(),
            format!(
                "`{}` is not an http:// or https:// URL without a query",
                t.otlp_endpoint
            ),
        ),
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        p(
            "tracing.sample_ratio".into(),
            "must be between 0 and 1".into(),
        );
    }
    if t.service_name.is_empty() {
        p("tracing.service_name".into(), "must not be empty".into());
    }
    let ranges: [(&str, u64, u64, u64); 4] = [
        ("tracing.queue", t.queue as u64, 1, 1_048_576),
        ("tracing.batch_size", t.batch_size as u64, 1, 65_536),
        (
            "tracing.export_interval_ms",
            t.export_interval_ms,
            1,
            60_000,
        ),
        ("tracing.export_timeout_ms", t.export_timeout_ms, 1, 300_000),
    ];
    for (key, v, lo, hi) in ranges {
        if v < lo || v > hi {
            p(key.into(), format!("must be between {lo} and {hi}"));
        }
    }
    for (k, v) in &t.headers {
        let key = format!("tracing.headers.{k}");
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            p(key, "not a valid header name".into());
        } else if http::HeaderValue::from_str(v).is_err() {
            p(key, "not a valid header value".into());
        }
    }
}
