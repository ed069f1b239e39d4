//! DNS discovery: a cluster with `endpoints = { dns = ... }` looks its name up every
//! `refresh_ms` (A and AAAA, or SRV for an `_http._tcp.` name) and swaps its endpoint set
//! when the answer changes (see [`super::endpoints::Endpoints::replace`]).
//!
//! - The record TTLs are not used: the refresh period is the operator's bound on staleness,
//!   and the resolver's cache is off, so every refresh asks the name servers.
//! - A failed lookup (NXDOMAIN, SERVFAIL, timeout, an empty answer) keeps the last good set,
//!   is counted by result and logged. While a cluster has no endpoints at all (its first
//!   lookup failed), it retries every second at most.
//! - One answer gives at most `max_endpoints` endpoints (sorted by address, the rest dropped
//!   and logged); SRV answers use their lowest priority only, each record's weight (0 → 1,
//!   capped at 1000) and port, and resolve at most `max_endpoints` targets.

use super::endpoints::Endpoints;
use crate::config::{self, DnsEndpoints};
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// How a lookup ended, the `result` label of `portcullis_dns_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Nxdomain,
    Servfail,
    Timeout,
    /// The name exists but has no records of the type asked (or an SRV's targets none).
    Empty,
    /// Anything else: refused, unreachable name servers, a malformed answer.
    Error,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Nxdomain,
        Outcome::Servfail,
        Outcome::Timeout,
        Outcome::Empty,
        Outcome::Error,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Nxdomain => "nxdomain",
            Outcome::Servfail => "servfail",
            Outcome::Timeout => "timeout",
            Outcome::Empty => "empty",
            Outcome::Error => "error",
        }
    }

    fn of(e: &NetError) -> Outcome {
        match e {
            NetError::Timeout => Outcome::Timeout,
            NetError::Dns(DnsError::NoRecordsFound(n)) => match n.response_code {
                ResponseCode::NXDomain => Outcome::Nxdomain,
                ResponseCode::ServFail => Outcome::Servfail,
                _ => Outcome::Empty,
            },
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => Outcome::Servfail,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => Outcome::Nxdomain,
            _ => Outcome::Error,
        }
    }
}

/// A DNS cluster's discovery: its lookup task and counts.
pub struct Discovery {
    pub(crate) spec: DnsEndpoints,
    task: OnceLock<tokio::task::AbortHandle>,
    lookups: [AtomicU64; Outcome::ALL.len()],
}

impl Discovery {
    pub(crate) fn lookups(&self, o: Outcome) -> u64 {
        self.lookups[o as usize].load(Ordering::Relaxed)
    }

    fn count(&self, o: Outcome) {
        self.lookups[o as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Stops looking up (the cluster went away).
    pub(crate) fn stop(&self) {
        if let Some(t) = self.task.get() {
            t.abort();
        }
    }
}

/// The resolver of every DNS cluster: `[dns] nameservers`, or the system's configuration.
/// Its cache is off (see the module doc).
pub(crate) fn resolver(cfg: &config::Dns) -> anyhow::Result<TokioResolver> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if cfg.nameservers.is_empty() {
        TokioResolver::builder(provider)
            .map_err(|e| anyhow::anyhow!("reading the system's DNS configuration: {e}"))?
    } else {
        let servers = cfg
            .nameservers
            .iter()
            .filter_map(|n| n.parse::<SocketAddr>().ok())
            .map(name_server)
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    // Each lookup is bounded by the cluster's `timeout_ms` on top of these.
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("building the DNS resolver: {e}"))
}

fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    ns
}

/// Starts looking up `spec` for `endpoints`, at once and then every `refresh_ms`.
pub(crate) fn spawn(
    cluster: Arc<str>,
    spec: DnsEndpoints,
    resolver: TokioResolver,
    endpoints: Arc<Endpoints>,
    shutdown: watch::Receiver<bool>,
) -> Arc<Discovery> {
    let d = Arc::new(Discovery {
        spec,
        task: OnceLock::new(),
        lookups: Default::default(),
    });
    let task = tokio::spawn(run(cluster, d.clone(), resolver, endpoints, shutdown));
    let _ = d.task.set(task.abort_handle());
    d
}

async fn run(
    cluster: Arc<str>,
    d: Arc<Discovery>,
    resolver: TokioResolver,
    endpoints: Arc<Endpoints>,
    mut shutdown: watch::Receiver<bool>,
) {
    let refresh = Duration::from_millis(d.spec.refresh_ms.max(1));
    let timeout = Duration::from_millis(d.spec.timeout_ms.max(1));
    loop {
        let answer = match tokio::time::timeout(timeout, lookup(&resolver, &d.spec)).await {
            Ok(a) => a,
            Err(_) => Err(Outcome::Timeout),
        };
        refreshed(&cluster, &d, &endpoints, answer);
        let wait = if endpoints.load().endpoints.is_empty() {
            refresh.min(Duration::from_secs(1))
        } else {
            refresh
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

/// Applies one lookup's answer: a new set, or the last good one kept and the failure told.
fn refreshed(
    cluster: &str,
    d: &Discovery,
    endpoints: &Endpoints,
    answer: Result<Vec<(Arc<str>, u32)>, Outcome>,
) {
    match answer {
        Ok(mut found) => {
            d.count(Outcome::Ok);
            found.sort();
            found.dedup_by(|a, b| a.0 == b.0);
            if found.len() > d.spec.max_endpoints {
                tracing::warn!(cluster, dns = %d.spec.dns, found = found.len(), max = d.spec.max_endpoints, "DNS answer has more endpoints than max_endpoints; the rest are ignored");
                found.truncate(d.spec.max_endpoints);
            }
            let change = endpoints.replace(&found);
            if change != Default::default() {
                tracing::info!(cluster, dns = %d.spec.dns, endpoints = found.len(), added = change.added, removed = change.removed, "DNS discovery changed the endpoint set");
            }
        }
        Err(o) => {
            d.count(o);
            let kept = endpoints.load().endpoints.len();
            tracing::warn!(cluster, dns = %d.spec.dns, result = o.as_str(), kept, "DNS lookup failed; keeping the last good endpoint set");
        }
    }
}

/// One lookup: `(address, weight)` endpoints, or why there are none.
async fn lookup(r: &TokioResolver, spec: &DnsEndpoints) -> Result<Vec<(Arc<str>, u32)>, Outcome> {
    let found = match spec.target() {
        Some((name, Some(port))) => addresses(r, name, port, 1, spec.max_endpoints).await?,
        Some((name, None)) => srv(r, name, spec.max_endpoints).await?,
        None => return Err(Outcome::Error),
    };
    if found.is_empty() {
        return Err(Outcome::Empty);
    }
    Ok(found)
}

/// A and AAAA records of `name`, each with `port` and `weight`.
async fn addresses(
    r: &TokioResolver,
    name: &str,
    port: u16,
    weight: u32,
    max: usize,
) -> Result<Vec<(Arc<str>, u32)>, Outcome> {
    let ips = r.lookup_ip(name).await.map_err(|e| Outcome::of(&e))?;
    Ok(ips
        .iter()
        .take(max)
        .map(|ip| (Arc::from(SocketAddr::new(ip, port).to_string()), weight))
        .collect())
}

/// SRV records of `name` at their lowest priority, each target resolved to its addresses.
async fn srv(r: &TokioResolver, name: &str, max: usize) -> Result<Vec<(Arc<str>, u32)>, Outcome> {
    let answer = r.srv_lookup(name).await.map_err(|e| Outcome::of(&e))?;
    let records: Vec<_> = answer
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SRV(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let Some(best) = records.iter().map(|s| s.priority).min() else {
        return Err(Outcome::Empty);
    };
    let mut out = Vec::new();
    for s in records.iter().filter(|s| s.priority == best).take(max) {
        let weight = u32::from(s.weight).clamp(1, 1000);
        let target = s.target.to_string();
        match addresses(r, &target, s.port, weight, max).await {
            Ok(found) => out.extend(found),
            Err(o) => {
                tracing::warn!(dns = name, srv_target = %target, result = o.as_str(), "SRV target does not resolve")
            }
        }
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}
