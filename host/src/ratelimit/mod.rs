//! Rate limits (`[[rate_limit]]`): which limits a request is counted against, under which
//! key, and the answer: allowed (with `RateLimit` headers when the limit asks for them) or
//! denied with the strictest denial.
//!
//! The algorithm is GCRA in both scopes: `local` in a bounded in-process map ([`local`]),
//! `global` in Redis through one Lua script ([`global`]). A leaf module: it knows request
//! heads and config, never the request path.

mod global;
mod local;

use crate::config::{self, OnBackendError, RateLimitScope};
use crate::core::failure::RateLimitDenial;
use crate::routing::Matcher;
use crate::telemetry::RateLimitCounters;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a limit's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// The connection's peer address.
    ClientIp,
    Header(HeaderName),
    /// Metadata set by an inbound filter.
    Meta(String),
    /// The route's name: one bucket per route.
    Route,
}

impl KeySource {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        if s == "client_ip" {
            return Ok(KeySource::ClientIp);
        }
        if s == "route" {
            return Ok(KeySource::Route);
        }
        if let Some(h) = s.strip_prefix("header:") {
            return HeaderName::from_bytes(h.as_bytes())
                .map(KeySource::Header)
                .map_err(|_| format!("`{h}` is not a valid header name"));
        }
        if let Some(m) = s.strip_prefix("meta:").filter(|m| !m.is_empty()) {
            return Ok(KeySource::Meta(m.to_string()));
        }
        Err(format!(
            "`{s}` is not `client_ip`, `header:<name>`, `meta:<key>` or `route`"
        ))
    }
}

/// GCRA parameters in microseconds: one request every `interval_us`, bursts of `limit`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gcra {
    pub interval_us: u64,
    pub limit: u64,
}

impl Gcra {
    fn new(limit: u64, window: Duration) -> Self {
        let w = window.as_micros() as u64;
        Gcra {
            interval_us: w.div_ceil(limit).max(1),
            limit,
        }
    }

    pub(crate) fn burst_us(self) -> u64 {
        self.interval_us.saturating_mul(self.limit)
    }

    /// One request at `now` against a key whose TAT is `tat`: the outcome and, when allowed,
    /// the new TAT.
    pub(crate) fn step(self, tat: u64, now: u64) -> (Outcome, Option<u64>) {
        let tat = tat.max(now);
        let new = tat.saturating_add(self.interval_us);
        let us = Duration::from_micros;
        if new - now > self.burst_us() {
            let retry = us(new - now - self.burst_us());
            (self.outcome(false, retry, us(tat - now)), None)
        } else {
            (self.outcome(true, Duration::ZERO, us(new - now)), Some(new))
        }
    }

    /// `debt` is how far the key's TAT is ahead of now after this request.
    pub(crate) fn outcome(self, allowed: bool, retry_after: Duration, debt: Duration) -> Outcome {
        let debt_us = debt.as_micros() as u64;
        let remaining = if allowed {
            self.burst_us().saturating_sub(debt_us) / self.interval_us
        } else {
            0
        };
        Outcome {
            allowed,
            retry_after,
            remaining,
            reset: debt,
        }
    }
}

/// One limit's answer for one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub allowed: bool,
    /// Until the next request would be allowed (zero when allowed).
    pub retry_after: Duration,
    /// Requests left in the current burst.
    pub remaining: u64,
    /// Until the key is back to a full burst.
    pub reset: Duration,
}

struct Limit {
    name: Arc<str>,
    matcher: Matcher,
    key: KeySource,
    gcra: Gcra,
    window: Duration,
    scope: RateLimitScope,
    on_backend_error: OnBackendError,
    headers: bool,
    local: local::Local,
    counters: Arc<RateLimitCounters>,
}

/// What a request is counted by.
pub(crate) struct Subject<'a> {
    pub parts: &'a http::request::Parts,
    pub host: Option<&'a str>,
    /// The client's address as text (`X-Forwarded-For`'s form).
    pub client_ip: &'a str,
    pub route: Option<&'a str>,
    pub metadata: &'a [(String, String)],
}

/// The answer for a request.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// The strictest denial: its limit's name and `Retry-After`, `RateLimit-Policy` and
    /// `RateLimit` headers.
    pub denied: Option<RateLimitDenial>,
    /// `RateLimit-Policy` / `RateLimit` for an allowed response (limits with `headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Every configured limit, and the Redis connection of the global ones.
pub(crate) struct RateLimits {
    limits: Vec<Limit>,
    global: Option<global::Global>,
}

impl RateLimits {
    /// `counters` gives each limit its metrics by name. Needs a tokio runtime when `[redis]`
    /// is set (the connection is made lazily on it).
    pub(crate) fn build(
        cfg: &config::Config,
        counters: impl Fn(&str) -> Arc<RateLimitCounters>,
    ) -> anyhow::Result<Self> {
        let limits = cfg
            .rate_limits
            .iter()
            .filter_map(|r| {
                Some(Limit {
                    name: Arc::from(r.name.as_str()),
                    matcher: Matcher::new(&r.matcher),
                    key: KeySource::parse(&r.key).ok()?,
                    gcra: Gcra::new(r.limit, Duration::from_millis(r.window_ms)),
                    window: Duration::from_millis(r.window_ms),
                    scope: r.scope,
                    on_backend_error: r.on_backend_error,
                    headers: r.headers,
                    local: local::Local::new(if r.scope == RateLimitScope::Local {
                        r.max_keys
                    } else {
                        1
                    }),
                    counters: counters(&r.name),
                })
            })
            .collect();
        let needs_redis = cfg
            .rate_limits
            .iter()
            .any(|r| r.scope == RateLimitScope::Global);
        let global = match (&cfg.redis, needs_redis) {
            (Some(r), true) => Some(global::Global::new(r)?),
            _ => None,
        };
        Ok(RateLimits { limits, global })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Checks every matching limit (the global ones concurrently: one Redis round trip of
    /// latency, bounded by `command_timeout_ms`) and picks the strictest denial.
    pub(crate) async fn check(&self, s: &Subject<'_>) -> Verdict {
        let now = Instant::now();
        // A request matches a few limits: no allocation for the list, none for a key that is
        // already text (the client address, the route's name, a header).
        let mut results: smallvec::SmallVec<[(&Limit, Outcome); 4]> = smallvec::SmallVec::new();
        let mut remote = Vec::new();
        for l in &self.limits {
            if !l.matcher.matches(s.parts, s.host) {
                continue;
            }
            // A request without the key's source (no such header or metadata) is not
            // counted by this limit.
            let Some(key) = key_of(&l.key, s) else {
                continue;
            };
            match (l.scope, &self.global) {
                (RateLimitScope::Local, _) => results.push((l, l.local.check(&key, l.gcra, now))),
                (RateLimitScope::Global, Some(g)) => {
                    let k = redis_key(&l.name, &key);
                    remote.push(async move { (l, g.check(k, l.gcra).await) })
                }
                (RateLimitScope::Global, None) => {}
            }
        }
        if remote.is_empty() {
            return verdict(&results);
        }
        for (l, r) in futures_util::future::join_all(remote).await {
            match r {
                Ok(o) => results.push((l, o)),
                Err(e) => {
                    l.counters.backend_error();
                    tracing::debug!(limit = %l.name, error = %e, "rate limit backend failed");
                    if l.on_backend_error == OnBackendError::Deny {
                        results.push((l, fallback(OnBackendError::Deny)));
                    }
                }
            }
        }
        verdict(&results)
    }
}

/// A plugin's check of one limit (WIT 0.3 `rate-limit.check`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PluginCheck {
    pub outcome: Outcome,
    /// The limit's `limit` and `window_ms`.
    pub limit: u64,
    pub window: Duration,
    /// Redis failed and `on_backend_error` decided.
    pub fallback: bool,
}

impl RateLimits {
    /// Counts one check of `plugin` for its `key` against the limit `name`; `None` when no
    /// limit has that name. The bucket is the plugin's own (`\0plugin\0key`: no request
    /// key can contain a NUL), so a plugin spends neither clients' budgets nor another
    /// plugin's. Bounded by `command_timeout_ms` for a global limit.
    pub(crate) async fn check_for_plugin(
        &self,
        name: &str,
        plugin: &str,
        key: &str,
    ) -> Option<PluginCheck> {
        let l = self.limits.iter().find(|l| &*l.name == name)?;
        let bucket = format!("\0{plugin}\0{key}");
        let (outcome, fallback) = match (l.scope, &self.global) {
            (RateLimitScope::Global, Some(g)) => {
                match g.check(redis_key(&l.name, &bucket), l.gcra).await {
                    Ok(o) => (o, false),
                    Err(e) => {
                        l.counters.backend_error();
                        tracing::debug!(limit = %l.name, error = %e, "rate limit backend failed");
                        (fallback(l.on_backend_error), true)
                    }
                }
            }
            _ => (l.local.check(&bucket, l.gcra, Instant::now()), false),
        };
        if !outcome.allowed {
            l.counters.limited();
        }
        Some(PluginCheck {
            outcome,
            limit: l.gcra.limit,
            window: l.window,
            fallback,
        })
    }
}

/// What `on_backend_error` answers when Redis does not.
fn fallback(policy: OnBackendError) -> Outcome {
    let second = Duration::from_secs(1);
    let allowed = policy == OnBackendError::Allow;
    Outcome {
        allowed,
        retry_after: if allowed { Duration::ZERO } else { second },
        remaining: 0,
        reset: second,
    }
}

fn verdict(results: &[(&Limit, Outcome)]) -> Verdict {
    let strictest = results
        .iter()
        .filter(|(_, o)| !o.allowed)
        .max_by_key(|(_, o)| o.retry_after);
    if let Some((l, o)) = strictest {
        for (l, _) in results.iter().filter(|(_, o)| !o.allowed) {
            l.counters.limited();
        }
        let mut h = vec![(
            http::header::RETRY_AFTER,
            HeaderValue::from(ceil_secs(o.retry_after).max(1)),
        )];
        h.extend(policy_headers(l, o));
        return Verdict {
            denied: Some(RateLimitDenial {
                limit: l.name.clone(),
                headers: h,
            }),
            headers: Vec::new(),
        };
    }
    let headers = results
        .iter()
        .filter(|(l, _)| l.headers)
        .flat_map(|(l, o)| policy_headers(l, o))
        .collect();
    Verdict {
        denied: None,
        headers,
    }
}

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `RateLimit-Policy: "<name>";q=<limit>;w=<window s>` and
/// `RateLimit: "<name>";r=<remaining>;t=<reset s>` (draft-ietf-httpapi-ratelimit-headers-09).
fn policy_headers(l: &Limit, o: &Outcome) -> [(HeaderName, HeaderValue); 2] {
    let v = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("\"\""));
    [
        (
            RATELIMIT_POLICY.clone(),
            v(format!(
                "\"{}\";q={};w={}",
                l.name,
                l.gcra.limit,
                ceil_secs(l.window).max(1)
            )),
        ),
        (
            RATELIMIT.clone(),
            v(format!(
                "\"{}\";r={};t={}",
                l.name,
                o.remaining,
                ceil_secs(o.reset)
            )),
        ),
    ]
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

fn key_of<'a>(k: &KeySource, s: &Subject<'a>) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    match k {
        KeySource::ClientIp => Some(Cow::Borrowed(s.client_ip)),
        KeySource::Header(h) => s.parts.headers.get(h)?.to_str().ok().map(Cow::Borrowed),
        KeySource::Meta(m) => s
            .metadata
            .iter()
            .rev()
            .find(|(k, _)| k == m)
            .map(|(_, v)| Cow::Borrowed(v.as_str())),
        KeySource::Route => s.route.map(Cow::Borrowed),
    }
}

/// `portcullis:rl:<limit>:<sha256(key), hex>`: fixed length whatever the client sent.
fn redis_key(limit: &str, key: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(key.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(14 + limit.len() + 1 + 32);
    out.push_str("portcullis:rl:");
    out.push_str(limit);
    out.push(':');
    for b in &d[..16] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests;
