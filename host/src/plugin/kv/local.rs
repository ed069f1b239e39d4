//! The in-process KV store: one bounded map per plugin, shared by every instance (and
//! version) of that plugin on this gateway; lost at restart.
//!
//! Expiry is lazy: an expired entry reads as absent, and a full namespace drops its expired
//! entries before refusing a new key, so expired entries never hold a place a live one needs.
//! The scan on a full map is O(keys), bounded by `max_keys`; a map that is not full never
//! scans.

use super::full;
use crate::plugin::api::KvError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

type Space = HashMap<String, Entry>;

/// Every plugin's namespace. A namespace lives as long as the gateway: a plugin removed and
/// uploaded again finds its unexpired values.
#[derive(Default)]
pub(crate) struct Local {
    spaces: Mutex<HashMap<String, Arc<Mutex<Space>>>>,
}

impl Local {
    fn space(&self, plugin: &str) -> Arc<Mutex<Space>> {
        let mut spaces = self.spaces.lock();
        if let Some(s) = spaces.get(plugin) {
            return s.clone();
        }
        spaces.entry(plugin.to_string()).or_default().clone()
    }

    pub(crate) fn get(&self, plugin: &str, key: &str) -> Option<Vec<u8>> {
        let space = self.space(plugin);
        let s = space.lock();
        s.get(key)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.value.clone())
    }

    pub(crate) fn set(
        &self,
        plugin: &str,
        max_keys: usize,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), KvError> {
        let now = Instant::now();
        let space = self.space(plugin);
        let mut s = space.lock();
        make_room(&mut s, max_keys, key, now)?;
        s.insert(
            key.to_string(),
            Entry {
                value,
                expires: now + ttl,
            },
        );
        Ok(())
    }

    pub(crate) fn delete(&self, plugin: &str, key: &str) -> bool {
        let space = self.space(plugin);
        let removed = space.lock().remove(key);
        removed.is_some_and(|e| e.expires > Instant::now())
    }

    pub(crate) fn increment(
        &self,
        plugin: &str,
        max_keys: usize,
        key: &str,
        delta: i64,
        ttl: Duration,
    ) -> Result<i64, KvError> {
        let now = Instant::now();
        let space = self.space(plugin);
        let mut s = space.lock();
        if let Some(e) = s.get_mut(key).filter(|e| e.expires > now) {
            let n = std::str::from_utf8(&e.value)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .and_then(|n| n.checked_add(delta))
                .ok_or(KvError::NotANumber)?;
            e.value = n.to_string().into_bytes();
            return Ok(n);
        }
        make_room(&mut s, max_keys, key, now)?;
        s.insert(
            key.to_string(),
            Entry {
                value: delta.to_string().into_bytes(),
                expires: now + ttl,
            },
        );
        Ok(delta)
    }
}

/// Room for `key` in `s`: always when it is already there; else drops expired entries when
/// the map holds `max_keys`, and refuses if none had expired.
fn make_room(s: &mut Space, max_keys: usize, key: &str, now: Instant) -> Result<(), KvError> {
    if s.len() < max_keys || s.contains_key(key) {
        return Ok(());
    }
    s.retain(|_, e| e.expires > now);
    if s.len() < max_keys {
        Ok(())
    } else {
        Err(full(max_keys))
    }
}
