//! Copies the fleet store into this gateway's plugin directory.
//!
//! A sync reads the store's stamp (one `GET`); only when it differs from the last complete
//! sync does it read the heads and fetch what this gateway lacks. Each artifact is checked
//! against its hash before a byte reaches the directory. Names the store has never held are
//! left alone (plugins placed in `dir` by hand stay this gateway's own).

use super::redis::RedisStore;
use super::{Fleet, Head, StoreError, SyncStats};
use crate::plugin::manifest::MAX_MANIFEST_BYTES;
use crate::plugin::registry::{valid_name, version_hash, Registry};
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

#[derive(Default)]
pub(super) struct Mirror {
    /// One sync at a time (the loop's and an admin request's).
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The stamp of the last sync that finished without a Redis error.
    seen: Option<Option<String>>,
    /// What the directory holds of each store name, as far as this mirror knows. Only names
    /// in the store's `current` (bounded there) are kept.
    applied: HashMap<String, Head>,
    /// The last sync failed on Redis: logged once per outage, not once per poll.
    failing: bool,
}

impl Mirror {
    /// Brings the directory in line with the store; `true` when files changed (the caller
    /// rescans). Failures are counted and logged; the next sync retries.
    pub(super) async fn sync(&self, store: &RedisStore, reg: &Registry, stats: &SyncStats) -> bool {
        let mut st = self.state.lock().await;
        match self.sync_locked(&mut st, store, reg, stats).await {
            Ok(changed) => {
                if std::mem::take(&mut st.failing) {
                    tracing::info!("fleet store reachable again; plugin directory in sync");
                }
                changed
            }
            Err((changed, e)) => {
                stats.error.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut st.failing, true) {
                    tracing::warn!(error = %e, "fleet store sync failed; loaded plugins keep serving, retrying");
                }
                changed
            }
        }
    }

    async fn sync_locked(
        &self,
        st: &mut State,
        store: &RedisStore,
        reg: &Registry,
        stats: &SyncStats,
    ) -> Result<bool, (bool, StoreError)> {
        let stamp = store.stamp().await.map_err(|e| (false, e))?;
        if st.seen.as_ref() == Some(&stamp) {
            return Ok(false);
        }
        let heads = store.heads().await.map_err(|e| (false, e))?;
        st.applied.retain(|n, _| heads.contains_key(n));
        let mut changed = false;
        for (name, head) in &heads {
            match apply(st, store, reg, stats, name, head).await {
                Ok(c) => changed |= c,
                Err(e) => return Err((changed, e)),
            }
        }
        st.seen = Some(stamp);
        Ok(changed)
    }
}

/// Makes the directory hold `head` for `name`. `Ok(true)`: files changed. Refusals are counted
/// and logged here (and retried at the next change); only Redis errors come back.
async fn apply(
    st: &mut State,
    store: &RedisStore,
    reg: &Registry,
    stats: &SyncStats,
    name: &str,
    head: &Head,
) -> Result<bool, StoreError> {
    if st.applied.get(name) == Some(head) {
        return Ok(false);
    }
    if !valid_name(name) {
        refuse(stats, name, "not a valid plugin name");
        return Ok(false);
    }
    let changed = match head {
        Head::Deleted => remove(reg, stats, name),
        Head::Version(v) if reg.disk_version(name).as_deref() == Some(v.as_str()) => false,
        Head::Version(v) => match fetch(store, reg, stats, name, v).await? {
            Some((wasm, manifest)) => write(reg, stats, name, &wasm, &manifest)?,
            None => return Ok(false),
        },
    };
    st.applied.insert(name.to_string(), head.clone());
    Ok(changed)
}

/// The artifact of `version`, checked against it; `None` (counted, logged) when refused.
async fn fetch(
    store: &RedisStore,
    reg: &Registry,
    stats: &SyncStats,
    name: &str,
    version: &str,
) -> Result<Option<(Vec<u8>, String)>, StoreError> {
    let caps = (reg.cfg.max_upload_bytes, MAX_MANIFEST_BYTES);
    let (wasm, manifest) = match store.artifact(name, version, caps).await {
        Ok(Some(parts)) => parts,
        Ok(None) => {
            refuse(stats, name, &format!("artifact {version} is missing"));
            return Ok(None);
        }
        Err(StoreError::Refused(why)) => {
            refuse(stats, name, &why);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let got = version_hash(&wasm, &manifest);
    if got != version {
        stats.hash_mismatch.fetch_add(1, Ordering::Relaxed);
        tracing::error!(plugin = %name, expected = %version, got = %got, "fleet store artifact does not match its hash: refused, not written (was the store tampered with?)");
        return Ok(None);
    }
    match String::from_utf8(manifest) {
        Ok(m) => Ok(Some((wasm, m))),
        Err(_) => {
            refuse(stats, name, "manifest is not UTF-8");
            Ok(None)
        }
    }
}

fn write(
    reg: &Registry,
    stats: &SyncStats,
    name: &str,
    wasm: &[u8],
    manifest: &str,
) -> Result<bool, StoreError> {
    reg.write(name, wasm, manifest).map_err(|e| {
        StoreError::Unavailable(format!("writing {name} into the plugin directory: {e}"))
    })?;
    stats.applied.fetch_add(1, Ordering::Relaxed);
    tracing::info!(plugin = %name, "fleet store version written into the plugin directory");
    Ok(true)
}

fn remove(reg: &Registry, stats: &SyncStats, name: &str) -> bool {
    match reg.remove(name) {
        Ok(found) => {
            if found {
                stats.removed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(plugin = %name, "plugin deleted fleet-wide: files removed");
            }
            found
        }
        Err(e) => {
            tracing::warn!(plugin = %name, error = %e, "removing a fleet-deleted plugin's files failed");
            false
        }
    }
}

fn refuse(stats: &SyncStats, name: &str, why: &str) {
    stats.refused.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(plugin = %name, reason = %why, "fleet store entry refused");
}

/// The mirror's loop: a sync on every wake-up (pub/sub) and every `store_poll_ms`.
pub(super) async fn run(fleet: Arc<Fleet>, wake: Arc<tokio::sync::Notify>, reg: Weak<Registry>) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(fleet.poll) => {}
        }
        let Some(reg) = reg.upgrade() else { return };
        if fleet.mirror.sync(&fleet.store, &reg, &fleet.stats).await {
            super::rescan(&reg).await;
        }
    }
}

/// Keeps a subscription to the change channel and turns each message into a wake-up;
/// resubscribes with a backoff (up to `store_poll_ms`) when the connection drops.
pub(super) async fn listen(fleet: Arc<Fleet>, wake: Arc<tokio::sync::Notify>, reg: Weak<Registry>) {
    let mut backoff = Duration::from_millis(100);
    while reg.strong_count() > 0 {
        match fleet.store.subscribe().await {
            Ok(ps) => {
                backoff = Duration::from_millis(100);
                // Changes made while unsubscribed are caught by this first sync.
                wake.notify_one();
                let mut msgs = ps.into_on_message();
                loop {
                    tokio::select! {
                        m = msgs.next() => match m {
                            Some(_) => wake.notify_one(),
                            None => break,
                        },
                        _ = tokio::time::sleep(fleet.poll) => if reg.strong_count() == 0 { return },
                    }
                }
                tracing::debug!("fleet store subscription ended; resubscribing");
            }
            Err(e) => tracing::debug!(error = %e, "fleet store subscribe failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(fleet.poll);
    }
}
