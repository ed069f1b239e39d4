//! The fleet store's Redis layout and the commands on it. Nothing else talks to Redis.
//!
//! Keys (prefix `portcullis:plugins:`):
//! * `artifact:<name>:<version>` — hash `{wasm, manifest}`; `<version>` is the SHA-256 of
//!   `wasm ‖ 0x00 ‖ manifest` (hex), the same hash the registry's versions come from, so a
//!   reader can check what it got.
//! * `history:<name>` — list of versions (or `deleted`), newest first, at most
//!   `[plugins] store_history` long; artifacts that fall off it are deleted.
//! * `current` — hash `name → version | deleted`: what every gateway should run.
//! * `stamp` — `<generation>:<nonce>`, new on every change: a poll reads only this. The nonce
//!   keeps a restarted (emptied) Redis from repeating a stamp a gateway has already seen.
//! * channel `changed` — the new stamp is published there, so gateways notice at once.
//!
//! Every change to `history` and `current` is one Lua script, so the two never disagree.
//! (The scripts name keys they derive from the prefix: fine for one Redis, not for Cluster.)

use super::{Head, StoreError};
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::time::Duration;

const PREFIX: &str = "portcullis:plugins:";
pub(super) const CHANNEL: &str = "portcullis:plugins:changed";
/// Names the store holds at most (deleted ones included): bounds `current` and every sync.
const MAX_NAMES: usize = 1024;
const DELETED: &str = "deleted";

/// Shared by the scripts. KEYS: current, history, stamp, generation. ARGV[1] name, ARGV[2]
/// the name's artifact key prefix, ARGV[3] nonce, ARGV[4] channel.
const LUA_COMMON: &str = r#"
local function bump()
  local stamp = redis.call('INCR', KEYS[4]) .. ':' .. ARGV[3]
  redis.call('SET', KEYS[3], stamp)
  redis.call('PUBLISH', ARGV[4], stamp)
end
local function forget(gone)
  local live = {}
  for _, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do live[v] = true end
  for _, v in ipairs(gone) do
    if v ~= 'deleted' and not live[v] then redis.call('DEL', ARGV[2] .. v) end
  end
end
"#;

/// ARGV[5] history length, ARGV[6] the new head (a version or `deleted`), ARGV[7] max names.
/// Returns -1: nothing to delete; 0: already the head; 1: changed.
const LUA_PUSH: &str = r#"
local name, state, keep = ARGV[1], ARGV[6], tonumber(ARGV[5])
local head = redis.call('HGET', KEYS[1], name)
if state == 'deleted' and (not head or head == 'deleted') then return -1 end
if head == state then return 0 end
if not head and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[7]) then
  return redis.error_reply('the store holds its maximum of ' .. ARGV[7] .. ' plugin names')
end
if state ~= 'deleted' and redis.call('EXISTS', ARGV[2] .. state) == 0 then
  return redis.error_reply('the artifact vanished before it was published')
end
redis.call('HSET', KEYS[1], name, state)
redis.call('LPUSH', KEYS[2], state)
local gone = redis.call('LRANGE', KEYS[2], keep, -1)
redis.call('LTRIM', KEYS[2], 0, keep - 1)
forget(gone)
bump()
return 1
"#;

/// Returns `{1, restored}` or `{0, ''}` when there is no previous version.
const LUA_ROLLBACK: &str = r#"
local hist = redis.call('LRANGE', KEYS[2], 0, 1)
if #hist < 2 then return {0, ''} end
local gone = redis.call('LPOP', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], hist[2])
forget({gone})
bump()
return {1, hist[2]}
"#;

pub(super) struct RedisStore {
    conn: ConnectionManager,
    client: redis::Client,
    push: redis::Script,
    rollback: redis::Script,
    timeout: Duration,
    connect_timeout: Duration,
    history: usize,
}

/// What a rollback did.
pub(super) enum Rolled {
    To(Head),
    NoPrevious,
}

fn artifact_prefix(name: &str) -> String {
    format!("{PREFIX}artifact:{name}:")
}

impl RedisStore {
    /// Connects lazily: a gateway starts (on the plugins in its directory) while Redis is down.
    pub(super) fn new(
        redis: &crate::config::Redis,
        plugins: &crate::config::Plugins,
    ) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(plugins.store_timeout_ms);
        let (client, conn) = crate::redis_client::manager(redis, timeout)?;
        let connect_timeout = Duration::from_millis(redis.connect_timeout_ms);
        Ok(RedisStore {
            conn,
            client,
            push: redis::Script::new(&format!("{LUA_COMMON}{LUA_PUSH}")),
            rollback: redis::Script::new(&format!("{LUA_COMMON}{LUA_ROLLBACK}")),
            timeout,
            connect_timeout,
            history: plugins.store_history,
        })
    }

    /// Runs one operation within the store timeout; a failure or a timeout is `Unavailable`.
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within [plugins] store_timeout_ms ({} ms)",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Stores the artifact under its version, then makes it the head of `name`.
    pub(super) async fn put(
        &self,
        name: &str,
        version: &str,
        wasm: &[u8],
        manifest: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("{}{version}", artifact_prefix(name));
        let mut hset = redis::cmd("HSET");
        hset.arg(&key)
            .arg("wasm")
            .arg(wasm)
            .arg("manifest")
            .arg(manifest);
        self.bounded(hset.query_async::<()>(&mut conn)).await?;
        self.set_head(name, version).await.map(|_| ())
    }

    /// Makes `name` deleted fleet-wide; `false` when the store has no live version of it.
    pub(super) async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        self.set_head(name, DELETED).await.map(|r| r >= 0)
    }

    async fn set_head(&self, name: &str, state: &str) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.push.prepare_invoke();
        self.script_args(&mut inv, name);
        inv.arg(self.history).arg(state).arg(MAX_NAMES);
        self.bounded(inv.invoke_async::<i64>(&mut conn)).await
    }

    pub(super) async fn rollback(&self, name: &str) -> Result<Rolled, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.rollback.prepare_invoke();
        self.script_args(&mut inv, name);
        let (done, head) = self
            .bounded(inv.invoke_async::<(i64, String)>(&mut conn))
            .await?;
        Ok(match done {
            1 => Rolled::To(Head::parse(&head)),
            _ => Rolled::NoPrevious,
        })
    }

    fn script_args(&self, inv: &mut redis::ScriptInvocation<'_>, name: &str) {
        inv.key(format!("{PREFIX}current"))
            .key(format!("{PREFIX}history:{name}"))
            .key(format!("{PREFIX}stamp"))
            .key(format!("{PREFIX}generation"));
        inv.arg(name)
            .arg(artifact_prefix(name))
            .arg(fastrand::u64(..))
            .arg(CHANNEL);
    }

    /// The change stamp; `None` for an empty store.
    pub(super) async fn stamp(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut get = redis::cmd("GET");
        get.arg(format!("{PREFIX}stamp"));
        self.bounded(get.query_async(&mut conn)).await
    }

    /// What every gateway should run, by name (at most `MAX_NAMES` names: the scripts keep it so,
    /// and a bigger hash written around them is refused).
    pub(super) async fn heads(&self) -> Result<HashMap<String, Head>, StoreError> {
        let mut conn = self.conn.clone();
        let mut hlen = redis::cmd("HLEN");
        hlen.arg(format!("{PREFIX}current"));
        let n: usize = self.bounded(hlen.query_async(&mut conn)).await?;
        if n > MAX_NAMES {
            return Err(StoreError::Unavailable(format!(
                "`{PREFIX}current` holds {n} names, more than {MAX_NAMES}"
            )));
        }
        let mut all = redis::cmd("HGETALL");
        all.arg(format!("{PREFIX}current"));
        let raw: HashMap<String, String> = self.bounded(all.query_async(&mut conn)).await?;
        Ok(raw.into_iter().map(|(k, v)| (k, Head::parse(&v))).collect())
    }

    /// One artifact's `(wasm, manifest)`, refused unread when a part is over its cap (the
    /// store is written by others). `None`: the artifact is gone.
    pub(super) async fn artifact(
        &self,
        name: &str,
        version: &str,
        caps: (usize, usize),
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("{}{version}", artifact_prefix(name));
        let mut sizes = redis::pipe();
        sizes
            .cmd("HSTRLEN")
            .arg(&key)
            .arg("wasm")
            .cmd("HSTRLEN")
            .arg(&key)
            .arg("manifest");
        let (w, m): (usize, usize) = self.bounded(sizes.query_async(&mut conn)).await?;
        if w > caps.0 || m > caps.1 {
            return Err(StoreError::Refused(format!(
                "artifact {key}: {w} + {m} bytes, over max_upload_bytes or the manifest cap"
            )));
        }
        let mut get = redis::cmd("HMGET");
        get.arg(&key).arg("wasm").arg("manifest");
        let (w, m): (Option<Vec<u8>>, Option<Vec<u8>>) =
            self.bounded(get.query_async(&mut conn)).await?;
        Ok(w.zip(m))
    }

    /// A fresh pub/sub connection subscribed to [`CHANNEL`], within the connect timeout.
    pub(super) async fn subscribe(&self) -> Result<redis::aio::PubSub, StoreError> {
        let connect = async {
            let mut ps = self.client.get_async_pubsub().await?;
            ps.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        match tokio::time::timeout(self.connect_timeout + self.timeout, connect).await {
            Ok(r) => r.map_err(|e| StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Unavailable("subscribe timed out".into())),
        }
    }
}

impl Head {
    fn parse(s: &str) -> Head {
        if s == DELETED {
            Head::Deleted
        } else {
            Head::Version(s.to_string())
        }
    }
}
