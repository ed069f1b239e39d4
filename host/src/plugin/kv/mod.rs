//! The WIT 0.3 `kv` import: small values per plugin, in process ([`local`]) or in Redis
//! ([`remote`]), as `[plugins] kv` says.
//!
//! Both stores answer the same questions with the same bounds: this module checks a call
//! against the calling plugin version's `[kv]` limits (key and value size, TTL) once, and
//! the store enforces the count (`max_keys`), which only it can see. Values are namespaced
//! by plugin name, so a plugin's reloads and versions share its values and no two plugins
//! share any.

mod local;
mod remote;

use super::api::KvError;
use super::manifest::KvLimits;
use crate::config;
use std::time::{Duration, Instant};

/// The gateway's plugin KV store.
pub(crate) enum Kv {
    Local(local::Local),
    Redis(remote::Remote),
}

/// One call's view of the store: the plugin's namespace, its limits, and its deadline.
pub(crate) struct Scope<'a> {
    pub plugin: &'a str,
    pub limits: &'a KvLimits,
    pub deadline: Instant,
}

impl Kv {
    /// `[plugins] kv = "redis"` connects lazily to `[redis]` (a gateway starts while Redis is
    /// down; calls then fail with `unavailable`).
    pub(crate) fn new(store: config::KvStore, redis: Option<&config::Redis>) -> anyhow::Result<Kv> {
        Ok(match (store, redis) {
            (config::KvStore::Redis, Some(r)) => Kv::Redis(remote::Remote::new(r)?),
            (config::KvStore::Redis, None) => {
                anyhow::bail!("plugins.kv: `redis` needs a [redis] section")
            }
            (config::KvStore::Local, _) => Kv::Local(local::Local::default()),
        })
    }

    pub(crate) async fn get(&self, s: &Scope<'_>, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(s.limits, key)?;
        match self {
            Kv::Local(l) => Ok(l.get(s.plugin, key)),
            Kv::Redis(r) => r.get(s, key).await,
        }
    }

    pub(crate) async fn set(
        &self,
        s: &Scope<'_>,
        key: &str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), KvError> {
        check_key(s.limits, key)?;
        if value.len() > s.limits.max_value_bytes {
            return Err(KvError::TooLarge(format!(
                "value of {} bytes, the manifest's [kv] max_value_bytes is {}",
                value.len(),
                s.limits.max_value_bytes
            )));
        }
        let ttl = ttl(s.limits, ttl_ms);
        match self {
            Kv::Local(l) => l.set(s.plugin, s.limits.max_keys, key, value, ttl),
            Kv::Redis(r) => r.set(s, key, value, ttl).await,
        }
    }

    pub(crate) async fn delete(&self, s: &Scope<'_>, key: &str) -> Result<bool, KvError> {
        check_key(s.limits, key)?;
        match self {
            Kv::Local(l) => Ok(l.delete(s.plugin, key)),
            Kv::Redis(r) => r.delete(s, key).await,
        }
    }

    pub(crate) async fn increment(
        &self,
        s: &Scope<'_>,
        key: &str,
        delta: i64,
        ttl_ms: u64,
    ) -> Result<i64, KvError> {
        check_key(s.limits, key)?;
        let ttl = ttl(s.limits, ttl_ms);
        match self {
            Kv::Local(l) => l.increment(s.plugin, s.limits.max_keys, key, delta, ttl),
            Kv::Redis(r) => r.increment(s, key, delta, ttl).await,
        }
    }
}

fn check_key(l: &KvLimits, key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::TooLarge("the key is empty".into()));
    }
    if key.len() > l.max_key_bytes {
        return Err(KvError::TooLarge(format!(
            "key of {} bytes, the manifest's [kv] max_key_bytes is {}",
            key.len(),
            l.max_key_bytes
        )));
    }
    Ok(())
}

/// 0, or more than `max_ttl`, is `max_ttl`: every entry expires.
fn ttl(l: &KvLimits, ttl_ms: u64) -> Duration {
    match Duration::from_millis(ttl_ms) {
        t if t.is_zero() || t > l.max_ttl => l.max_ttl,
        t => t,
    }
}

/// The message of a full namespace.
fn full(max_keys: usize) -> KvError {
    KvError::LimitExceeded(format!(
        "the plugin has {max_keys} live keys, the manifest's [kv] max_keys"
    ))
}

#[cfg(test)]
mod tests;
