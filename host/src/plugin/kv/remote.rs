//! The Redis KV store (`[plugins] kv = "redis"`): values at `portcullis:kv:<plugin>:<key>`,
//! shared by every gateway using the same `[redis]`.
//!
//! `max_keys` holds across gateways: each plugin has an index, the sorted set
//! `portcullis:kvindex:<plugin>` of its keys scored by expiry (Redis-clock ms), and a write
//! that adds a key runs as one Lua script that drops expired members, counts, and writes
//! atomically. One call is one round trip (`EVALSHA`, or `GET` for a read), bounded by
//! `[redis] command_timeout_ms` and the plugin call's deadline; past either, or on any Redis
//! error, the call is `unavailable`.

use super::{full, Scope};
use crate::config;
use crate::plugin::api::KvError;
use redis::aio::ConnectionManager;
use std::time::{Duration, Instant};

/// Drops the index's expired members and says whether `ARGV[1]` (the key) may be written:
/// it is already live, or fewer than `ARGV[2]` (max_keys) keys are. Shared head of the two
/// write scripts; `now` is Redis's clock in ms.
const ROOM_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local live = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not live and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  return {0, 0}
end
local function index(ttl)
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
"#;

/// KEYS: value, index. ARGV: key, max_keys, value, ttl ms. Returns `{1, 0}` or `{0, 0}`
/// (full).
const SET_LUA: &str = r#"
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
index(ttl)
return {1, 0}
"#;

/// KEYS: value, index. ARGV: key, max_keys, delta, ttl ms. Returns `{1, n}`, `{0, 0}`
/// (full) or `{2, 0}` (not a number). A live key keeps its expiry.
const INCR_LUA: &str = r#"
local r = redis.pcall('INCRBY', KEYS[1], ARGV[3])
if type(r) == 'table' and r.err then return {2, 0} end
if not live then
  local ttl = tonumber(ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ttl)
  index(ttl)
end
return {1, r}
"#;

/// KEYS: value, index. ARGV: key. Returns how many were deleted.
const DEL_LUA: &str = r#"
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"#;

pub(crate) struct Remote {
    conn: ConnectionManager,
    set: redis::Script,
    incr: redis::Script,
    del: redis::Script,
    command_timeout: Duration,
}

impl Remote {
    /// Connects lazily, as the global rate limiter does (`ratelimit::global`).
    pub(crate) fn new(cfg: &config::Redis) -> anyhow::Result<Self> {
        let command_timeout = Duration::from_millis(cfg.command_timeout_ms);
        let (_, conn) = crate::redis_client::manager(cfg, command_timeout)?;
        Ok(Remote {
            conn,
            set: redis::Script::new(&format!("{ROOM_LUA}{SET_LUA}")),
            incr: redis::Script::new(&format!("{ROOM_LUA}{INCR_LUA}")),
            del: redis::Script::new(DEL_LUA),
            command_timeout,
        })
    }

    pub(crate) async fn get(&self, s: &Scope<'_>, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(value_key(s.plugin, key));
        let call = cmd.query_async::<Option<Vec<u8>>>(&mut conn);
        self.bounded(s.deadline, call).await
    }

    pub(crate) async fn set(
        &self,
        s: &Scope<'_>,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), KvError> {
        let mut inv = self.set.prepare_invoke();
        inv.key(value_key(s.plugin, key)).key(index_key(s.plugin));
        inv.arg(key).arg(s.limits.max_keys).arg(value).arg(ms(ttl));
        match self.write(s.deadline, inv).await? {
            (1, _) => Ok(()),
            _ => Err(full(s.limits.max_keys)),
        }
    }

    pub(crate) async fn increment(
        &self,
        s: &Scope<'_>,
        key: &str,
        delta: i64,
        ttl: Duration,
    ) -> Result<i64, KvError> {
        let mut inv = self.incr.prepare_invoke();
        inv.key(value_key(s.plugin, key)).key(index_key(s.plugin));
        inv.arg(key).arg(s.limits.max_keys).arg(delta).arg(ms(ttl));
        match self.write(s.deadline, inv).await? {
            (1, n) => Ok(n),
            (2, _) => Err(KvError::NotANumber),
            _ => Err(full(s.limits.max_keys)),
        }
    }

    pub(crate) async fn delete(&self, s: &Scope<'_>, key: &str) -> Result<bool, KvError> {
        let mut conn = self.conn.clone();
        let mut inv = self.del.prepare_invoke();
        inv.key(value_key(s.plugin, key)).key(index_key(s.plugin));
        inv.arg(key);
        let n: i64 = self
            .bounded(s.deadline, inv.invoke_async(&mut conn))
            .await?;
        Ok(n > 0)
    }

    async fn write(
        &self,
        deadline: Instant,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<(u8, i64), KvError> {
        let mut conn = self.conn.clone();
        self.bounded(deadline, inv.invoke_async(&mut conn)).await
    }

    /// Waits for `call` at most `command_timeout_ms`, and never past the plugin call's
    /// deadline.
    async fn bounded<T>(
        &self,
        deadline: Instant,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, KvError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = self.command_timeout.min(left);
        match tokio::time::timeout(wait, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(KvError::Unavailable(format!("redis: {e}"))),
            Err(_) => Err(KvError::Unavailable(format!(
                "redis did not answer within {} ms",
                wait.as_millis()
            ))),
        }
    }
}

fn value_key(plugin: &str, key: &str) -> String {
    format!("portcullis:kv:{plugin}:{key}")
}

/// Not under `portcullis:kv:<plugin>:`, so no plugin key can name it.
fn index_key(plugin: &str) -> String {
    format!("portcullis:kvindex:{plugin}")
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}
