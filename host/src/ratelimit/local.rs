//! The local limiter: GCRA (the generic cell rate algorithm) per key, in a bounded map.
//!
//! Why GCRA: one `u64` of state per key (its theoretical arrival time, TAT), O(1) per check,
//! and it allows exactly `limit` requests in a burst, then one every `window / limit`, the
//! same algorithm as the Redis script so local and global limits answer alike.
//!
//! Bounded: keys are stored as 64-bit hashes in 16 shards of at most `max_keys / 16` each.
//! A full shard first drops keys whose TAT has passed (their state is that of a new key, so
//! dropping them changes no answer), then the key closest to that; a client spraying keys
//! can only make other keys forget part of their debt, never grow memory.

use super::Gcra;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Instant;

const SHARDS: usize = 16;

pub(crate) struct Local {
    shards: [Mutex<HashMap<u64, u64>>; SHARDS],
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
    /// Times are microseconds since this instant.
    epoch: Instant,
}

impl Local {
    pub(crate) fn new(max_keys: usize) -> Self {
        Local {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: foldhash::fast::RandomState::default(),
            epoch: Instant::now(),
        }
    }

    /// Counts one request for `key`.
    pub(crate) fn check(&self, key: &str, g: Gcra, now: Instant) -> super::Outcome {
        let h = self.hasher.hash_one(key);
        let now = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let mut shard = self.shards[(h as usize) % SHARDS].lock();
        let tat = shard.get(&h).copied().unwrap_or(now);
        let (outcome, new_tat) = g.step(tat, now);
        if let Some(t) = new_tat {
            if shard.len() >= self.per_shard && !shard.contains_key(&h) {
                make_room(&mut shard, now);
            }
            shard.insert(h, t);
        }
        outcome
    }

    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// Frees at least one slot in a full shard.
fn make_room(shard: &mut HashMap<u64, u64>, now: u64) {
    let before = shard.len();
    shard.retain(|_, tat| *tat > now);
    if shard.len() < before {
        return;
    }
    // Nothing had expired: drop the key whose debt ends soonest.
    if let Some((&k, _)) = shard.iter().min_by_key(|(_, t)| **t) {
        shard.remove(&k);
    }
}
