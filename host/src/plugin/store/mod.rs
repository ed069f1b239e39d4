//! The fleet store (`[plugins] store = "redis"`): uploads that reach every gateway.
//!
//! A `PUT`, `DELETE` or rollback on any gateway is validated there and then written into
//! Redis (`redis`: content-addressed artifacts, a bounded history per plugin, the current
//! version of each). Every gateway runs a [`mirror`] that copies the store into its own
//! plugin directory and loads it through the registry's one reload path, so what serves is
//! always what the directory holds and a version that fails to load never replaces a working
//! one. The mirror wakes on pub/sub and polls every `store_poll_ms` as well (a missed
//! message, a Redis restart); it catches up at boot, and retries while Redis is down.
//!
//! Whoever can write to this Redis can run code on every gateway: each artifact's hash is
//! checked on read, but the store is exactly as trusted as the admin token.

mod mirror;
mod redis;

use super::registry::Registry;
use crate::config;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the store says a plugin should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Head {
    /// The full version hash (hex SHA-256 of `wasm ‖ 0 ‖ manifest`).
    Version(String),
    Deleted,
}

impl Head {
    /// The short form the admin API and metrics show (as the registry's `version`).
    pub(super) fn short(&self) -> &str {
        match self {
            Head::Version(v) => v.get(..16).unwrap_or(v),
            Head::Deleted => "deleted",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum StoreError {
    /// Redis failed or was slower than `store_timeout_ms`: the admin API answers 503.
    #[error("fleet store unavailable: {0}")]
    Unavailable(String),
    /// What Redis holds is not acceptable (too big, a bad name, a hash mismatch).
    #[error("fleet store content refused: {0}")]
    Refused(String),
}

/// Mirror outcomes, by `result` label of `portcullis_plugin_store_sync_total`.
#[derive(Default)]
struct SyncStats {
    applied: AtomicU64,
    removed: AtomicU64,
    hash_mismatch: AtomicU64,
    refused: AtomicU64,
    error: AtomicU64,
}

pub(super) struct Fleet {
    store: redis::RedisStore,
    mirror: mirror::Mirror,
    stats: SyncStats,
    poll: std::time::Duration,
}

/// What a rollback did, for the admin API.
pub(super) enum Rollback {
    To(Head),
    NoPrevious,
}

impl Fleet {
    pub(super) fn new(redis: &config::Redis, cfg: &config::Plugins) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Fleet {
            store: redis::RedisStore::new(redis, cfg)?,
            mirror: mirror::Mirror::default(),
            stats: SyncStats::default(),
            poll: std::time::Duration::from_millis(cfg.store_poll_ms),
        }))
    }

    /// Publishes a validated upload fleet-wide and mirrors it here; returns its head.
    pub(super) async fn put(
        &self,
        reg: &Registry,
        name: &str,
        wasm: &[u8],
        manifest: &str,
    ) -> Result<Head, StoreError> {
        let version = super::registry::version_hash(wasm, manifest.as_bytes());
        self.store.put(name, &version, wasm, manifest).await?;
        self.sync_now(reg).await;
        Ok(Head::Version(version))
    }

    /// Deletes `name` fleet-wide; `false` when the store has no live version of it.
    pub(super) async fn delete(&self, reg: &Registry, name: &str) -> Result<bool, StoreError> {
        let found = self.store.delete(name).await?;
        if found {
            self.sync_now(reg).await;
        }
        Ok(found)
    }

    /// Restores the version before the current one of `name` fleet-wide.
    pub(super) async fn rollback(
        &self,
        reg: &Registry,
        name: &str,
    ) -> Result<Rollback, StoreError> {
        match self.store.rollback(name).await? {
            redis::Rolled::NoPrevious => Ok(Rollback::NoPrevious),
            redis::Rolled::To(head) => {
                self.sync_now(reg).await;
                Ok(Rollback::To(head))
            }
        }
    }

    /// The store's current head of every name, for `GET /admin/plugins`.
    pub(super) async fn heads(&self) -> Result<HashMap<String, Head>, StoreError> {
        self.store.heads().await
    }

    /// One sync now (the admin API's own change, so its answer shows the loaded result).
    async fn sync_now(&self, reg: &Registry) {
        if self.mirror.sync(&self.store, reg, &self.stats).await {
            rescan(reg).await;
        }
    }

    /// Boot: one bounded catch-up before the boot scan loads the directory. Redis down is
    /// logged, not fatal: the gateway starts on the plugins it has and the mirror retries.
    pub(super) async fn catch_up(&self, reg: &Registry) {
        self.mirror.sync(&self.store, reg, &self.stats).await;
    }

    /// Starts the mirror's loop (pub/sub wake-ups and the poll); it ends with the registry.
    pub(super) fn spawn(self: &Arc<Self>, reg: &Arc<Registry>) {
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(mirror::listen(
            self.clone(),
            wake.clone(),
            Arc::downgrade(reg),
        ));
        tokio::spawn(mirror::run(self.clone(), wake, Arc::downgrade(reg)));
    }

    pub(super) fn render_metrics(&self, w: &mut crate::telemetry::prom::Writer<'_>) {
        use crate::telemetry::prom::Kind;
        let mut f = w.family(
            "portcullis_plugin_store_sync_total",
            "Fleet store mirror outcomes: applied (a version written into the plugin directory), \
             removed (a fleet-wide delete), hash_mismatch (an artifact whose content does not \
             match its hash: refused), refused (an oversized artifact or a bad name), error \
             (Redis failed or timed out; retried).",
            Kind::Counter,
        );
        let s = &self.stats;
        for (result, n) in [
            ("applied", &s.applied),
            ("removed", &s.removed),
            ("hash_mismatch", &s.hash_mismatch),
            ("refused", &s.refused),
            ("error", &s.error),
        ] {
            f.sample(&[("result", result)], n.load(Ordering::Relaxed));
        }
    }
}

async fn rescan(reg: &Registry) {
    if let Err(e) = reg.rescan(false).await {
        tracing::warn!(error = %format!("{e:#}"), "plugin directory rescan after a fleet sync failed");
    }
}
