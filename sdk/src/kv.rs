//! Small values shared by every instance of this plugin (new in WIT 0.3.0): feature flags,
//! counters, tokens. Namespaced by plugin name and bounded by the manifest's `[kv]` table
//! (`max_keys`, `max_key_bytes`, `max_value_bytes`, `max_ttl_ms`); where they live (this
//! gateway, or Redis shared by every gateway) is the gateway's choice.
//!
//! ```text
//! // A fixed-window counter per API key: one hour, then it starts again at 1.
//! let n = kv::increment(&format!("calls:{key}"), 1, 3_600_000)?;
//! kv::set("flag:new-ui", b"on", 0)?;            // 0: the manifest's max_ttl_ms
//! let on = kv::get_string("flag:new-ui")?.as_deref() == Some("on");
//! ```
//!
//! Every call can fail with [`KvError::Unavailable`] (Redis down or slow): decide what the
//! plugin does then (continue, or reject), rather than unwrap.

use crate::filter::bindings::portcullis::plugin::kv as wit;

pub use wit::KvError;

/// The value of `key`; `None` if unset, deleted or expired.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    wit::get(key)
}

/// [`get`] as UTF-8 text (`None` also when the value is not UTF-8).
pub fn get_string(key: &str) -> Result<Option<String>, KvError> {
    Ok(wit::get(key)?.and_then(|v| String::from_utf8(v).ok()))
}

/// Sets `key` to `value` for `ttl_ms` (0, or over the manifest's `max_ttl_ms`: that maximum).
pub fn set(key: &str, value: &[u8], ttl_ms: u64) -> Result<(), KvError> {
    wit::set(key, value, ttl_ms)
}

/// Removes `key`; `true` if it was there.
pub fn delete(key: &str) -> Result<bool, KvError> {
    wit::delete(key)
}

/// Adds `delta` to the counter at `key` and returns the new value, atomically. A new key
/// starts from 0 and expires after `ttl_ms`; an existing one keeps its expiry.
pub fn increment(key: &str, delta: i64, ttl_ms: u64) -> Result<i64, KvError> {
    wit::increment(key, delta, ttl_ms)
}
