//! The config tree. Every struct denies unknown keys; every field has a documented default
//! (see `docs/config.md`, which lists each key).

pub use crate::core::identity::{EscapedSlashes, PathPolicy};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub admin: Admin,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    #[serde(default, rename = "cluster")]
    pub clusters: Vec<Cluster>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub http: Http,
    /// Absent: no plugins are loaded and the plugin admin API answers 404.
    pub plugins: Option<Plugins>,
    /// Absent: no access log.
    pub access_log: Option<AccessLog>,
    /// Absent: no traces.
    pub tracing: Option<Tracing>,
    /// `[[rate_limit]]`: every matching entry is checked; the strictest denial answers.
    #[serde(default, rename = "rate_limit")]
    pub rate_limits: Vec<RateLimit>,
    /// `[redis]`: the store of `scope = "global"` rate limits. Absent: global limits are
    /// refused by validation.
    pub redis: Option<Redis>,
    /// `[dns]`: the resolver of clusters whose endpoints come from DNS.
    #[serde(default)]
    pub dns: Dns,
}

/// `[dns]`: how `endpoints = { dns = ... }` clusters resolve their names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// `ip:port` of the name servers to ask (UDP, then TCP for truncated answers). Empty: the
    /// system's, from `/etc/resolv.conf`. `/etc/hosts` is read either way.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

/// One `[[rate_limit]]` entry (see `crate::ratelimit`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub name: String,
    /// The requests it counts; the same shape as a route's `match` (empty: every request).
    #[serde(rename = "match", default)]
    pub matcher: RouteMatch,
    /// `client_ip`, `header:<name>`, `meta:<key>` (inbound filter metadata) or `route`.
    #[serde(default = "defaults::rate_limit_key")]
    pub key: String,
    /// Requests allowed per window (also the burst).
    pub limit: u64,
    pub window_ms: u64,
    #[serde(default)]
    pub scope: RateLimitScope,
    /// What a `global` limit does when Redis fails or is slower than `command_timeout_ms`.
    #[serde(default)]
    pub on_backend_error: OnBackendError,
    /// Put `RateLimit-Policy` / `RateLimit` on allowed responses too (429s always get them).
    #[serde(default)]
    pub headers: bool,
    /// Bound on the keys a `local` limit tracks at once.
    #[serde(default = "defaults::rate_limit_max_keys")]
    pub max_keys: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitScope {
    /// Counted in this process.
    #[default]
    Local,
    /// Counted in Redis, shared by every gateway using the same `[redis]`.
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendError {
    #[default]
    Allow,
    Deny,
}

/// `[redis]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` (TLS).
    pub url: String,
    #[serde(default = "defaults::redis_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for one command's answer; past it the command counts as a backend error.
    #[serde(default = "defaults::redis_command_timeout_ms")]
    pub command_timeout_ms: u64,
    /// PEM file of CA certificates a `rediss://` server's certificate is verified against
    /// (a private CA, as Redis deployments use). Default: the Web PKI roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// `[tracing]`: OpenTelemetry spans exported over OTLP/HTTP protobuf (see `telemetry::trace`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tracing {
    /// The OTLP/HTTP receiver's base URL (`http://` or `https://`); spans are POSTed to
    /// `<otlp_endpoint>/v1/traces`.
    pub otlp_endpoint: String,
    /// Share of new traces sampled, 0 to 1. A request whose `traceparent` is sampled is always
    /// traced, one whose `traceparent` is not sampled never is.
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Sampled requests waiting for the exporter; beyond it their spans are dropped and counted.
    pub queue: usize,
    /// Spans per export request at most.
    pub batch_size: usize,
    /// A finished span is exported within about this long.
    pub export_interval_ms: u64,
    /// One export request (connect, TLS, send, answer) takes at most this long; a failed one is
    /// not retried (its spans are counted as failed).
    pub export_timeout_ms: u64,
    /// Headers sent with every export (e.g. `authorization` for a hosted collector).
    pub headers: BTreeMap<String, String>,
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing {
            otlp_endpoint: "http://127.0.0.1:4318".into(),
            sample_ratio: 0.01,
            service_name: "portcullis".into(),
            queue: 2048,
            batch_size: 512,
            export_interval_ms: 1000,
            export_timeout_ms: 10_000,
            headers: BTreeMap::new(),
        }
    }
}

/// `[access_log]`: one line per finished request (see `telemetry::access_log`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    /// `-` is stdout; otherwise a file, opened for appending (created `0640`) and reopened
    /// on SIGUSR1.
    pub path: PathBuf,
    pub format: AccessLogFormat,
    /// Share of successes (no error, status below 400) logged, 0 to 1; others always are.
    pub sample_successes: f64,
    /// Lines waiting for the writer; beyond it lines are dropped and counted.
    pub queue: usize,
    /// A written line reaches the file within this long.
    pub flush_ms: u64,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            path: PathBuf::from("-"),
            format: AccessLogFormat::Json,
            sample_successes: 1.0,
            queue: 8192,
            flush_ms: 100,
        }
    }
}

impl AccessLog {
    pub fn is_stdout(&self) -> bool {
        self.path == Path::new("-")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One JSON object a line.
    #[default]
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    pub listen: String,
    /// Bearer token for every admin mutation (`POST /admin/config/reload`, plugin uploads and
    /// deletes). Absent: mutations are refused. `[plugins] admin_token` is an alias.
    pub token: Option<String>,
    /// Bearer token for admin reads (`GET /metrics`, `/admin/...`; not `/healthz`). Absent:
    /// reads are open. `token` is accepted for reads as well.
    pub read_token: Option<String>,
    /// Passports kept for slow or failed requests.
    pub passport_ring: usize,
    /// A request slower than this keeps its passport in the ring.
    pub slow_request_ms: u64,
    /// Unix socket on which this process hands its listening sockets to a new one started
    /// with `portcullis run --upgrade` (zero-downtime binary upgrade). Absent: no upgrades.
    pub upgrade_socket: Option<std::path::PathBuf>,
    /// How long a running gateway waits for the new process to say it is ready once it took
    /// the sockets; past it the old process keeps serving as if nothing happened.
    pub upgrade_timeout_ms: u64,
    /// Host names the admin listener answers to, besides IP addresses and `localhost`: a
    /// request with any other `Host` is refused (403), which defeats DNS rebinding against
    /// a loopback-only admin port.
    pub hosts: Vec<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: "127.0.0.1:9901".into(),
            token: None,
            read_token: None,
            passport_ring: 1024,
            slow_request_ms: 1000,
            upgrade_socket: None,
            upgrade_timeout_ms: 120_000,
            hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub listen: String,
    pub tls: Option<Tls>,
    /// Open connections beyond this are closed right after accept.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Serve HTTP/3 over QUIC on the same port, over UDP (TLS listeners only).
    #[serde(default)]
    pub http3: bool,
    /// Concurrent HTTP/3 request streams per QUIC connection.
    #[serde(default = "defaults::http3_max_streams")]
    pub http3_max_streams: u32,
    /// A QUIC connection with no traffic for this long is closed.
    #[serde(default = "defaults::http3_idle_timeout_ms")]
    pub http3_idle_timeout_ms: u64,
    /// Open WebSocket tunnels on this listener; an upgrade beyond it gets 503 `tunnel-limit`.
    /// An HTTP/1.1 tunnel also keeps counting against `max_connections`.
    #[serde(default = "defaults::max_tunnels")]
    pub max_tunnels: usize,
    /// Every connection opens with a PROXY protocol header (v1 or v2, from an L4 balancer):
    /// its source address is the client. A connection without a valid one within
    /// `client_header_ms` is closed. Not for HTTP/3 (QUIC carries no such header).
    #[serde(default)]
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Default certificate chain (PEM), used when no `sni` entry matches.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Extra certificates chosen by SNI.
    #[serde(default)]
    pub sni: Vec<SniCert>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCert {
    /// Server names this certificate answers for; `*.example.com` matches one label.
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    #[default]
    RoundRobin,
    LeastInFlight,
    LeastInFlightEwma,
    P2cPeakEwma,
}

/// `"host:port"` or `{ addr = "host:port", weight = 3 }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum EndpointSpec {
    Addr(String),
    Weighted {
        addr: String,
        #[serde(default = "defaults::weight")]
        weight: u32,
    },
}

impl EndpointSpec {
    pub fn addr(&self) -> &str {
        match self {
            EndpointSpec::Addr(a) => a,
            EndpointSpec::Weighted { addr, .. } => addr,
        }
    }
    pub fn weight(&self) -> u32 {
        match self {
            EndpointSpec::Addr(_) => 1,
            EndpointSpec::Weighted { weight, .. } => *weight,
        }
    }
}

/// A cluster's endpoints: a fixed list, or discovered through DNS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "a list of endpoints (\"host:port\" or { addr, weight }), or a table { dns = \"name:port\", refresh_ms = 5000 }"
)]
pub enum Endpoints {
    Static(Vec<EndpointSpec>),
    Dns(DnsEndpoints),
}

impl Endpoints {
    /// The configured list; empty for a DNS cluster, whose endpoints are found at run time.
    pub fn listed(&self) -> &[EndpointSpec] {
        match self {
            Endpoints::Static(v) => v,
            Endpoints::Dns(_) => &[],
        }
    }

    pub fn dns(&self) -> Option<&DnsEndpoints> {
        match self {
            Endpoints::Static(_) => None,
            Endpoints::Dns(d) => Some(d),
        }
    }
}

/// `endpoints = { dns = "users.internal:8080", refresh_ms = 5000 }`: A/AAAA lookups of the
/// name, each address with the given port; or SRV records for a `_http._tcp.` name, which
/// carry ports and weights themselves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsEndpoints {
    pub dns: String,
    /// How often the name is looked up again (the record TTLs are not used).
    #[serde(default = "defaults::dns_refresh_ms")]
    pub refresh_ms: u64,
    /// Longest wait for one lookup (all name servers and attempts included).
    #[serde(default = "defaults::dns_timeout_ms")]
    pub timeout_ms: u64,
    /// Most endpoints taken from one answer; the rest are ignored (and logged).
    #[serde(default = "defaults::dns_max_endpoints")]
    pub max_endpoints: usize,
}

/// The prefix that makes a `dns` name an SRV lookup.
pub const SRV_PREFIX: &str = "_http._tcp.";

impl DnsEndpoints {
    pub fn is_srv(&self) -> bool {
        self.dns.starts_with(SRV_PREFIX)
    }

    /// The name to look up and, for A/AAAA, the port; `None` when it is not of that shape.
    pub fn target(&self) -> Option<(&str, Option<u16>)> {
        if self.is_srv() {
            return Some((self.dns.as_str(), None));
        }
        let (host, port) = self.dns.rsplit_once(':')?;
        let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
        Some((host, Some(port)))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    pub endpoints: Endpoints,
    #[serde(default)]
    pub balancer: BalancerKind,
    #[serde(default)]
    pub pool: Pool,
    /// Overrides of the global `[timeouts]` that concern upstreams.
    #[serde(default)]
    pub timeouts: ClusterTimeouts,
    /// Requests in flight to this cluster at once (a number, or `{ adaptive = true, .. }`);
    /// beyond it requests are shed.
    #[serde(default = "defaults::cluster_max_concurrency")]
    pub max_concurrency: ConcurrencyLimit,
    #[serde(default)]
    pub outlier: Outlier,
    /// Active HTTP health checks; absent means passive outlier detection only.
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub retry_budget: RetryBudget,
    /// Speak TLS to the endpoints. Absent: plain TCP.
    pub tls: Option<UpstreamTls>,
    /// HTTP version spoken to the endpoints.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Server name sent in SNI and verified in the certificate. Default: the endpoint's host.
    pub sni: Option<String>,
    /// PEM file of CA certificates to trust. Default: the system's roots.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with a keep-alive pool.
    #[default]
    H1,
    /// HTTP/2: requests multiplexed over one pooled connection per endpoint (h2c, or ALPN h2
    /// over TLS).
    H2,
}

/// Passive outlier detection: consecutive failures eject an endpoint with exponential backoff.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outlier {
    /// Consecutive failures (connect errors, resets, and 5xx if `eject_on_5xx`) that eject.
    pub consecutive_failures: u32,
    /// Count upstream 5xx responses as failures.
    pub eject_on_5xx: bool,
    /// First ejection lasts this long; each further ejection doubles it.
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
    /// At most this share of a cluster is ejected at once; the last endpoint never is.
    pub max_ejected_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            eject_on_5xx: false,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejected_percent: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "defaults::hc_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "defaults::hc_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::hc_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "defaults::hc_threshold")]
    pub unhealthy_threshold: u32,
}

/// Retries to a cluster may not exceed `percent` of its active requests, but at least
/// `min_concurrency` retries may always be in flight.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudget {
    pub percent: u32,
    pub min_concurrency: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            percent: 20,
            min_concurrency: 3,
        }
    }
}

/// Per-route retry policy. Retries happen only where replay is safe.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Total attempts including the first; 1 disables retries.
    pub attempts: u32,
    /// Upstream statuses that trigger a retry (connect failures and resets always do).
    pub on_status: Vec<u16>,
    /// Treat non-idempotent methods on this route as safe to replay.
    pub idempotent: bool,
    /// Bodies up to this size are buffered so the request can be replayed.
    pub max_buffered_body_bytes: usize,
    /// How long one attempt may wait for its response head before another endpoint is tried
    /// (replayable requests only, under the retry budget). Absent: the whole
    /// `upstream_headers_ms`, no per-try limit.
    pub per_try_timeout_ms: Option<u64>,
    /// At `per_try_timeout_ms`, keep the first attempt and race a second ("hedge") on another
    /// endpoint instead of abandoning it: the first response head wins.
    pub hedge: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 2,
            on_status: vec![503],
            idempotent: false,
            max_buffered_body_bytes: 64 * 1024,
            per_try_timeout_ms: None,
            hedge: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pool {
    /// Idle keep-alive connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// Open connections (idle + busy) per endpoint; beyond it a request waits up to the
    /// connect timeout for a free one, then fails `connect-timeout`.
    pub max_connections_per_endpoint: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout_ms: u64,
    /// A connection is retired after this many requests.
    pub max_requests_per_connection: u64,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            max_idle_per_endpoint: 64,
            max_connections_per_endpoint: 1024,
            idle_timeout_ms: 60_000,
            max_requests_per_connection: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClusterTimeouts {
    pub connect_ms: Option<u64>,
    pub upstream_headers_ms: Option<u64>,
    pub upstream_body_idle_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Sheddable,
    #[default]
    Normal,
    Critical,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Sheddable => "sheddable",
            Priority::Normal => "normal",
            Priority::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: RouteMatch,
    /// Proxy to this cluster…
    pub cluster: Option<String>,
    /// …or hand the request to this endpoint plugin.
    pub endpoint: Option<String>,
    /// Shedding class of requests on this route.
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub timeouts: RouteTimeouts,
    /// Overrides `[limits] max_body_bytes` for this route.
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub retry: Retry,
    /// Allow WebSocket upgrades (HTTP/1.1 `Upgrade: websocket`, HTTP/2 extended CONNECT) on
    /// this route. `false`: they are refused with 403 `websocket-refused`.
    #[serde(default = "defaults::websocket")]
    pub websocket: bool,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    pub path_prefix: Option<String>,
    /// Exact host (port ignored), or `*.example.com` for one label.
    pub host: Option<String>,
    pub method: Option<String>,
    /// Header name → exact value; all must match.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    pub client_body_idle_ms: Option<u64>,
    pub connect_ms: Option<u64>,
    pub upstream_headers_ms: Option<u64>,
    pub upstream_body_idle_ms: Option<u64>,
    pub request_deadline_ms: Option<u64>,
    pub tunnel_idle_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Client must send the whole request head within this (408 otherwise).
    pub client_header_ms: u64,
    /// Longest silence while reading a request body (408).
    pub client_body_idle_ms: u64,
    /// Idle keep-alive connection from a client is closed after this.
    pub client_idle_ms: u64,
    /// A client that takes no response bytes for this long is cut off (HTTP/1.1 and HTTP/2
    /// connections; an HTTP/2 stream whose response makes no progress is reset).
    pub client_write_idle_ms: u64,
    /// TCP connect to an upstream (504 connect-timeout).
    pub connect_ms: u64,
    /// From request sent to upstream response head (504 upstream-timeout).
    pub upstream_headers_ms: u64,
    /// Longest silence while streaming an upstream response body.
    pub upstream_body_idle_ms: u64,
    /// Whole request, from head received to last body byte (504 deadline-exceeded).
    pub request_deadline_ms: u64,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish; open tunnels are closed
    /// when it ends.
    pub drain_ms: u64,
    /// A WebSocket tunnel with no bytes in either direction for this long is closed.
    pub tunnel_idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_header_ms: 10_000,
            client_body_idle_ms: 30_000,
            client_idle_ms: 60_000,
            client_write_idle_ms: 30_000,
            connect_ms: 1_000,
            upstream_headers_ms: 15_000,
            upstream_body_idle_ms: 30_000,
            request_deadline_ms: 60_000,
            drain_ms: 30_000,
            tunnel_idle_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Request head size (431 beyond).
    pub max_header_bytes: usize,
    /// Request header count (431 beyond).
    pub max_headers: usize,
    /// Request body size (413 beyond).
    pub max_body_bytes: u64,
    /// Requests in flight across the gateway (a number, or `{ adaptive = true, .. }`); beyond
    /// it requests are shed by priority.
    pub max_in_flight: ConcurrencyLimit,
    /// HTTP/2 concurrent streams per client connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2: PING and SETTINGS frames (a SETTINGS frame counts once per parameter) a client
    /// connection may send per second; beyond it the connection is closed.
    pub h2_max_control_frames_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 64 * 1024 * 1024,
            max_in_flight: ConcurrencyLimit::Fixed(10_000),
            max_concurrent_streams: 256,
            h2_max_control_frames_per_sec: 1000,
        }
    }
}

/// How every request's identity is fixed at admission (see `core::identity`), and the
/// headers on the responses that skip outbound filters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Decode percent-encoded unreserved characters and remove dot segments (RFC 3986 §6.2.2,
    /// §5.2.4) before anything matches the path.
    pub normalize_path: bool,
    /// Merge runs of `/` into one. Upstreams then see the merged path.
    pub merge_slashes: bool,
    /// `%2F` / `%5C` in a path: `keep` (forward encoded), `reject` (400) or `unescape`.
    pub escaped_slashes: crate::core::identity::EscapedSlashes,
    /// Headers set on the responses that skip outbound filters: load-shed 503s and the
    /// client-header-timeout 408 (and, below them, every gateway error), without Wasm.
    pub error_headers: BTreeMap<String, String>,
    /// Which HTTP/1.1 server serves client connections: `portcullis` (our own codec: no
    /// buffers held by idle connections) or `hyper` (kept as a fallback).
    pub http1_server: Http1Server,
    /// Peers (CIDRs or addresses) whose `X-Forwarded-For` is believed: behind them, the
    /// rightmost address that is not one of them is the client (`core::client`).
    pub trusted_proxies: Vec<String>,
}

/// `[http] http1_server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Http1Server {
    #[default]
    Portcullis,
    Hyper,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            normalize_path: true,
            merge_slashes: true,
            escaped_slashes: crate::core::identity::EscapedSlashes::Keep,
            error_headers: BTreeMap::new(),
            http1_server: Http1Server::Portcullis,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Http {
    pub fn path_policy(&self) -> crate::core::identity::PathPolicy {
        crate::core::identity::PathPolicy {
            normalize: self.normalize_path,
            merge_slashes: self.merge_slashes,
            escaped_slashes: self.escaped_slashes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    /// Directory of `<name>.wasm` + `<name>.toml` pairs, watched for changes.
    pub dir: PathBuf,
    /// Bearer token for `PUT`/`DELETE /admin/plugins/{name}`. Absent: uploads are refused.
    pub admin_token: Option<String>,
    #[serde(default = "defaults::max_upload_bytes")]
    pub max_upload_bytes: usize,
    #[serde(default = "defaults::reload_debounce_ms")]
    pub reload_debounce_ms: u64,
    /// Ceilings a manifest may ask for.
    #[serde(default = "defaults::max_cpu_ms")]
    pub max_cpu_ms: u64,
    #[serde(default = "defaults::max_memory_mb")]
    pub max_memory_mb: u64,
    #[serde(default = "defaults::max_timeout_ms")]
    pub max_timeout_ms: u64,
    #[serde(default = "defaults::max_plugin_body_bytes")]
    pub max_body_bytes: usize,
    /// Concurrent plugin instances across the gateway (pooling allocator slots).
    #[serde(default = "defaults::max_instances")]
    pub max_instances: u32,
    /// Guest linear memory all live plugin instances (running and idle) may hold together,
    /// in MiB. A growth past it fails the call as `plugin-overloaded` (503).
    #[serde(default = "defaults::memory_budget_mb")]
    pub memory_budget_mb: u64,
    /// Calls one instance may serve before it is discarded; 0: a fresh instance per call.
    /// Reused instances keep guest memory between calls of the same plugin (never across
    /// plugins); see docs/architecture.md.
    #[serde(default = "defaults::instance_reuse_calls")]
    pub instance_reuse_calls: u32,
    /// Epoch tick: how often a running guest is interrupted to yield to tokio and to count
    /// its CPU budget (`cpu_ms` is rounded up to whole ticks). See `plugin::ticker`.
    #[serde(default = "defaults::epoch_tick_ms")]
    pub epoch_tick_ms: u64,
    /// Consecutive traps before a plugin is quarantined.
    #[serde(default = "defaults::quarantine_after")]
    pub quarantine_after: u32,
    #[serde(default = "defaults::quarantine_base_ms")]
    pub quarantine_base_ms: u64,
    #[serde(default = "defaults::quarantine_max_ms")]
    pub quarantine_max_ms: u64,
    /// Keep compiled components on disk so a restart with unchanged plugins skips Cranelift.
    #[serde(default = "defaults::cache")]
    pub cache: bool,
    /// Where compiled components are kept; absent: `<dir>/.cache` (hidden, so never taken for a
    /// plugin). Created mode 0700; refused if group or others can write it.
    pub cache_dir: Option<PathBuf>,
    /// Bound on the cache's size; the least recently used artifacts are evicted beyond it.
    #[serde(default = "defaults::cache_max_mb")]
    pub cache_max_mb: u64,
    /// Where uploads go: `directory` (this gateway's `dir` only) or `redis` (the fleet store
    /// in `[redis]`, mirrored into every gateway's `dir`; see `plugin::store`).
    #[serde(default)]
    pub store: PluginStoreKind,
    /// How often the mirror polls the fleet store (pub/sub wakes it sooner).
    #[serde(default = "defaults::store_poll_ms")]
    pub store_poll_ms: u64,
    /// Versions kept per plugin in the fleet store (what rollback can go back to).
    #[serde(default = "defaults::store_history")]
    pub store_history: usize,
    /// Longest wait for one fleet store operation (an upload's transfer included).
    #[serde(default = "defaults::store_timeout_ms")]
    pub store_timeout_ms: u64,
    /// Where the WIT 0.3 `kv` import keeps plugins' values: `local` (in process, per gateway)
    /// or `redis` (in `[redis]`, shared by every gateway using it).
    #[serde(default)]
    pub kv: KvStore,
    /// Ceilings of a manifest's `[kv]` limits (see `plugin::kv`).
    #[serde(default = "defaults::kv_max_keys")]
    pub kv_max_keys: u32,
    #[serde(default = "defaults::kv_max_key_bytes")]
    pub kv_max_key_bytes: u32,
    #[serde(default = "defaults::kv_max_value_bytes")]
    pub kv_max_value_bytes: u32,
    #[serde(default = "defaults::kv_max_ttl_ms")]
    pub kv_max_ttl_ms: u64,
}

/// `[plugins] store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PluginStoreKind {
    #[default]
    Directory,
    Redis,
}

/// `[plugins] kv`: where plugin KV values live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KvStore {
    /// A bounded map per plugin in this process.
    #[default]
    Local,
    /// The `[redis]` server, keys `portcullis:kv:<plugin>:<key>`.
    Redis,
}

impl Config {
    /// The token every admin mutation needs: `[admin] token`, or its alias
    /// `[plugins] admin_token`.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin
            .token
            .as_deref()
            .or_else(|| self.plugins.as_ref()?.admin_token.as_deref())
    }
}

impl Plugins {
    /// The compile cache directory, `None` when `cache = false`.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.cache.then(|| {
            self.cache_dir
                .clone()
                .unwrap_or_else(|| self.dir.join(".cache"))
        })
    }
}

/// A concurrency limit: `max_concurrency = 64`, or one discovered from latency,
/// `max_concurrency = { adaptive = true, min = 8, max = 1024 }` (see `shed::gradient`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConcurrencyLimit {
    Fixed(usize),
    Adaptive(AdaptiveLimit),
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveLimit {
    /// Must be `true`: the key says, in the file, that this limit moves on its own.
    pub adaptive: bool,
    /// The limit never goes below this (nor starts below it).
    #[serde(default = "defaults::adaptive_min")]
    pub min: usize,
    /// Nor above this.
    #[serde(default = "defaults::adaptive_max")]
    pub max: usize,
    /// How much above the unloaded latency the average may rise before the limit is cut.
    #[serde(default = "defaults::adaptive_tolerance")]
    pub tolerance: f64,
}

impl ConcurrencyLimit {
    /// The limit a fixed config gives, or an adaptive one starts from.
    pub fn initial(&self) -> usize {
        match self {
            ConcurrencyLimit::Fixed(n) => *n,
            ConcurrencyLimit::Adaptive(a) => a.min,
        }
    }

    /// What is wrong with it, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        match *self {
            ConcurrencyLimit::Fixed(0) => Some("must be at least 1".into()),
            ConcurrencyLimit::Fixed(_) => None,
            ConcurrencyLimit::Adaptive(a) if !a.adaptive => Some(
                "a table here must say `adaptive = true` (a fixed limit is a plain number)".into(),
            ),
            ConcurrencyLimit::Adaptive(a) if a.min == 0 || a.min > a.max => Some(format!(
                "needs 1 <= min <= max (min {}, max {})",
                a.min, a.max
            )),
            ConcurrencyLimit::Adaptive(a) if !(1.0..=10.0).contains(&a.tolerance) => Some(format!(
                "tolerance {} must be between 1.0 and 10.0",
                a.tolerance
            )),
            ConcurrencyLimit::Adaptive(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for ConcurrencyLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ConcurrencyLimit;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of requests, or a table { adaptive = true, min, max }")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                usize::try_from(v)
                    .map(ConcurrencyLimit::Fixed)
                    .map_err(|_| E::custom("must be at least 1"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                usize::try_from(v)
                    .map(ConcurrencyLimit::Fixed)
                    .map_err(|_| E::custom("too large"))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<Self::Value, A::Error> {
                AdaptiveLimit::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(ConcurrencyLimit::Adaptive)
            }
        }
        d.deserialize_any(V)
    }
}

pub(crate) mod defaults {
    pub(crate) fn rate_limit_key() -> String {
        "client_ip".into()
    }
    pub(crate) fn rate_limit_max_keys() -> usize {
        100_000
    }
    pub(crate) fn redis_connect_timeout_ms() -> u64 {
        100
    }
    pub(crate) fn redis_command_timeout_ms() -> u64 {
        20
    }
    pub(crate) fn dns_refresh_ms() -> u64 {
        5_000
    }
    pub(crate) fn dns_timeout_ms() -> u64 {
        2_000
    }
    pub(crate) fn dns_max_endpoints() -> usize {
        256
    }
    pub(crate) fn weight() -> u32 {
        1
    }
    pub(crate) fn max_connections() -> usize {
        10_000
    }
    pub(crate) fn max_tunnels() -> usize {
        1_000
    }
    pub(crate) fn websocket() -> bool {
        true
    }
    pub(crate) fn http3_max_streams() -> u32 {
        100
    }
    pub(crate) fn http3_idle_timeout_ms() -> u64 {
        30_000
    }
    pub(crate) fn cluster_max_concurrency() -> super::ConcurrencyLimit {
        super::ConcurrencyLimit::Fixed(1_024)
    }
    pub(crate) fn adaptive_min() -> usize {
        8
    }
    pub(crate) fn adaptive_max() -> usize {
        1_024
    }
    pub(crate) fn adaptive_tolerance() -> f64 {
        1.2
    }
    /// A componentize-py component is 17–19 MiB (the interpreter and its standard library),
    /// a componentize-js one 11–12 MiB: 32 MiB leaves room for their dependencies.
    pub(crate) fn max_upload_bytes() -> usize {
        32 * 1024 * 1024
    }
    pub(crate) fn store_poll_ms() -> u64 {
        1_000
    }
    pub(crate) fn store_history() -> usize {
        10
    }
    pub(crate) fn store_timeout_ms() -> u64 {
        10_000
    }
    pub(crate) fn reload_debounce_ms() -> u64 {
        200
    }
    pub(crate) fn max_cpu_ms() -> u64 {
        50
    }
    pub(crate) fn max_memory_mb() -> u64 {
        64
    }
    pub(crate) fn max_timeout_ms() -> u64 {
        5_000
    }
    pub(crate) fn max_plugin_body_bytes() -> usize {
        1024 * 1024
    }
    pub(crate) fn max_instances() -> u32 {
        1_000
    }
    /// 2 GiB: ~150 JavaScript or Python instances at rest (9–13 MiB each), or thousands of
    /// Rust ones (~100 KiB–2 MiB).
    pub(crate) fn memory_budget_mb() -> u64 {
        2_048
    }
    pub(crate) fn instance_reuse_calls() -> u32 {
        1_000
    }
    pub(crate) fn epoch_tick_ms() -> u64 {
        2
    }
    pub(crate) fn quarantine_after() -> u32 {
        5
    }
    pub(crate) fn quarantine_base_ms() -> u64 {
        1_000
    }
    pub(crate) fn quarantine_max_ms() -> u64 {
        60_000
    }
    pub(crate) fn cache() -> bool {
        true
    }
    pub(crate) fn cache_max_mb() -> u64 {
        1_024
    }
    pub(crate) fn kv_max_keys() -> u32 {
        100_000
    }
    pub(crate) fn kv_max_key_bytes() -> u32 {
        1_024
    }
    pub(crate) fn kv_max_value_bytes() -> u32 {
        1 << 20
    }
    pub(crate) fn kv_max_ttl_ms() -> u64 {
        7 * 86_400_000
    }
    pub(crate) fn hc_interval_ms() -> u64 {
        5_000
    }
    pub(crate) fn hc_timeout_ms() -> u64 {
        1_000
    }
    pub(crate) fn hc_threshold() -> u32 {
        2
    }
}

/// Effective timeouts for one request: route overrides, then cluster overrides, then global.
#[derive(Debug, Clone, Copy)]
pub struct EffectiveTimeouts {
    pub client_body_idle: Duration,
    pub connect: Duration,
    pub upstream_headers: Duration,
    pub upstream_body_idle: Duration,
    pub request_deadline: Duration,
    pub tunnel_idle: Duration,
}

impl EffectiveTimeouts {
    pub fn resolve(
        global: &Timeouts,
        cluster: Option<&ClusterTimeouts>,
        route: &RouteTimeouts,
    ) -> Self {
        let c = cluster.cloned().unwrap_or_default();
        let ms = Duration::from_millis;
        EffectiveTimeouts {
            client_body_idle: ms(route
                .client_body_idle_ms
                .unwrap_or(global.client_body_idle_ms)),
            connect: ms(route
                .connect_ms
                .or(c.connect_ms)
                .unwrap_or(global.connect_ms)),
            upstream_headers: ms(route
                .upstream_headers_ms
                .or(c.upstream_headers_ms)
                .unwrap_or(global.upstream_headers_ms)),
            upstream_body_idle: ms(route
                .upstream_body_idle_ms
                .or(c.upstream_body_idle_ms)
                .unwrap_or(global.upstream_body_idle_ms)),
            request_deadline: ms(route
                .request_deadline_ms
                .unwrap_or(global.request_deadline_ms)),
            tunnel_idle: ms(route.tunnel_idle_ms.unwrap_or(global.tunnel_idle_ms)),
        }
    }
}

impl Config {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for l in &mut self.listeners {
            if let Some(tls) = &mut l.tls {
                fix(&mut tls.cert);
                fix(&mut tls.key);
                for s in &mut tls.sni {
                    fix(&mut s.cert);
                    fix(&mut s.key);
                }
            }
        }
        for c in &mut self.clusters {
            if let Some(ca) = c.tls.as_mut().and_then(|t| t.ca.as_mut()) {
                fix(ca);
            }
        }
        if let Some(ca) = self.redis.as_mut().and_then(|r| r.ca.as_mut()) {
            fix(ca);
        }
        if let Some(s) = &mut self.admin.upgrade_socket {
            fix(s);
        }
        if let Some(a) = self.access_log.as_mut().filter(|a| !a.is_stdout()) {
            fix(&mut a.path);
        }
        if let Some(p) = &mut self.plugins {
            fix(&mut p.dir);
            if let Some(c) = &mut p.cache_dir {
                fix(c);
            }
        }
    }
}
