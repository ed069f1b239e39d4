//! The global limiter: the same GCRA as `local`, run inside Redis by one Lua script.
//!
//! One check is one `EVALSHA` (one round trip; `EVAL` once per Redis restart when the script
//! cache is empty). The script reads Redis's own clock (`TIME`), so gateways' clocks need
//! not agree, and runs atomically, so while Redis answers, instances together admit exactly
//! what one limiter would. Every wait is bounded by `[redis] command_timeout_ms`; a failure
//! or a timeout is a [`BackendError`], and the caller applies `on_backend_error`.

use super::{Gcra, Outcome};
use crate::config;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// KEYS[1]: the key. ARGV[1]: emission interval, ARGV[2]: burst (`limit × interval`), both
/// in microseconds; the stored value is the key's TAT in Redis-clock microseconds.
/// Returns `{allowed, retry_after_us, tat_minus_now_us}`.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new = tat + interval
if new - now > burst then
  return {0, new - now - burst, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1)
return {1, 0, new - now}
"#;

/// Redis failed, or did not answer within `command_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit backend: {0}")]
pub(crate) struct BackendError(String);

pub(crate) struct Global {
    conn: ConnectionManager,
    script: redis::Script,
    command_timeout: Duration,
}

impl Global {
    /// Connects lazily (the first check connects; a lost connection is re-made in the
    /// background), so a gateway starts and serves while Redis is down.
    pub(crate) fn new(cfg: &config::Redis) -> anyhow::Result<Self> {
        let command_timeout = Duration::from_millis(cfg.command_timeout_ms);
        let (_, conn) = crate::redis_client::manager(cfg, command_timeout)?;
        Ok(Global {
            conn,
            script: redis::Script::new(GCRA_LUA),
            command_timeout,
        })
    }

    /// Counts one request for `key` (already namespaced by the caller).
    pub(crate) async fn check(&self, key: &str, g: Gcra) -> Result<Outcome, BackendError> {
        let mut conn = self.conn.clone();
        let mut inv = self.script.prepare_invoke();
        inv.key(key).arg(g.interval_us).arg(g.burst_us());
        let call = inv.invoke_async::<(u8, i64, i64)>(&mut conn);
        let (allowed, retry_us, tat_us) = tokio::time::timeout(self.command_timeout, call)
            .await
            .map_err(|_| BackendError("timed out".into()))?
            .map_err(|e| BackendError(e.to_string()))?;
        let us = |v: i64| Duration::from_micros(v.max(0) as u64);
        Ok(g.outcome(allowed == 1, us(retry_us), us(tat_us)))
    }
}
