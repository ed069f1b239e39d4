//! What the WIT 0.3 imports `kv` and `rate-limit` reach (the plugin KV store, the gateway's
//! `[[rate_limit]]`s), and their one version-neutral implementation on [`StoreData`], which
//! each version's bindings (`versions::v0_3`) delegate to.

use super::api::{CheckError, Decision, KvError};
use super::engine::StoreData;
use super::kv::{Kv, Scope};
use crate::ratelimit::RateLimits;
use arc_swap::ArcSwapOption;
use std::sync::Arc;

/// A rate-limit key longer than this is `invalid-key`: the local limiter hashes keys, and
/// Redis keys are digests, but a plugin has no reason to send more.
const MAX_RATE_KEY_BYTES: usize = 1024;

/// Shared by every store of the runtime.
pub(crate) struct HostServices {
    pub kv: Kv,
    /// The current config's rate limits; replaced by a reload (`set_rate_limits`), so a call
    /// sees the limits of the config serving when it checks. `None` before the first config
    /// is applied.
    rate_limits: ArcSwapOption<RateLimits>,
}

impl HostServices {
    pub(crate) fn new(kv: Kv) -> Self {
        HostServices {
            kv,
            rate_limits: ArcSwapOption::empty(),
        }
    }

    pub(crate) fn set_rate_limits(&self, limits: Arc<RateLimits>) {
        self.rate_limits.store(Some(limits));
    }
}

impl StoreData {
    fn kv_scope(&self) -> Scope<'_> {
        Scope {
            plugin: &self.stats.name,
            limits: &self.manifest.kv,
            deadline: self.deadline,
        }
    }

    pub(crate) async fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.services.kv.get(&self.kv_scope(), key).await
    }

    pub(crate) async fn kv_set(
        &mut self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), KvError> {
        self.services
            .kv
            .set(&self.kv_scope(), key, value, ttl_ms)
            .await
    }

    pub(crate) async fn kv_delete(&mut self, key: &str) -> Result<bool, KvError> {
        self.services.kv.delete(&self.kv_scope(), key).await
    }

    pub(crate) async fn kv_increment(
        &mut self,
        key: &str,
        delta: i64,
        ttl_ms: u64,
    ) -> Result<i64, KvError> {
        let s = self.kv_scope();
        self.services.kv.increment(&s, key, delta, ttl_ms).await
    }

    /// `rate-limit.check`: one counted check of this plugin's `key` against limit `name`.
    pub(crate) async fn rate_check(
        &mut self,
        name: &str,
        key: &str,
    ) -> Result<Decision, CheckError> {
        if key.is_empty() || key.len() > MAX_RATE_KEY_BYTES {
            return Err(CheckError::InvalidKey);
        }
        let unknown = || CheckError::UnknownLimit(name.to_string());
        let limits = self.services.rate_limits.load_full().ok_or_else(unknown)?;
        let c = limits
            .check_for_plugin(name, &self.stats.name, key)
            .await
            .ok_or_else(unknown)?;
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        Ok(Decision {
            allowed: c.outcome.allowed,
            remaining: c.outcome.remaining,
            retry_after_ms: ms(c.outcome.retry_after),
            reset_ms: ms(c.outcome.reset),
            limit: c.limit,
            window_ms: ms(c.window),
            fallback: c.fallback,
        })
    }
}
