//! The global limiter: the same GCRA as `local`, run inside Redis by one Lua script.
//!
//! Checks are batched: each check is queued to one batcher task, which sends whatever is
//! queued (up to [`MAX_BATCH`] keys) as one `EVALSHA`, one call at a time. A check is in one
//! call (one round trip; under load it also waits for the end of the call in flight), and
//! Redis runs one script call for many requests instead of one each. The call itself
//! (parsing, script lookup, `TIME`) was most of Redis's cost per check, and it made the
//! global row miss its throughput goal while Redis shared the proxy's core (0.77×,
//! bench/results/2026-12-02-vm-quick.md; batched: 0.93×, 2026-12-02-vm-quick-s8.md). An idle
//! gateway sends batches of one, so nothing waits for a batch to fill.
//!
//! The script reads Redis's own clock (`TIME`), so gateways' clocks need not agree, and runs
//! atomically (a batch is one script run, keys in queue order), so while Redis answers,
//! instances together admit exactly what one limiter would. Every wait is bounded by
//! `[redis] command_timeout_ms`; a failure, a timeout or a full queue is a [`BackendError`],
//! and the caller applies `on_backend_error`.

use super::{Gcra, Outcome};
use crate::config;
use redis::aio::ConnectionManager;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// KEYS[i]: the i-th check's key. ARGV[2i-1], ARGV[2i]: its emission interval and burst
/// (`limit × interval`), in microseconds; the stored value is the key's TAT in Redis-clock
/// microseconds. Returns one integer per key: allowed, how far the key's TAT is ahead of now
/// after this request (≥ 1); denied, `-1 - (tat - now)` (≤ -1). The host derives the rest
/// (`Retry-After` is `tat - now + interval - burst`), so the reply is one value per check.
///
/// A key is read once and written once per batch however often it appears: a hot key (one
/// client, or `key = "route"`) is most of a busy batch. Measured with the bench's global row
/// (every request one key, ~18 keys a batch): reading and writing each occurrence cost Redis
/// 113 µs per batch, ~6 µs per check, mostly `redis.call` overhead.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats, dirty, out = {}, {}, {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tats[key]
  if tat == nil then tat = tonumber(redis.call('GET', key) or now) end
  if tat < now then tat = now end
  local new = tat + interval
  if new - now > burst then
    out[i] = -1 - (tat - now)
    tats[key] = tat
  else
    out[i] = new - now
    tats[key] = new
    dirty[key] = true
  end
end
for key in pairs(dirty) do
  local tat = tats[key]
  redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return out
"#;

/// Keys per script call. Bounds the script's run time inside Redis (Redis runs nothing else
/// meanwhile: 64 keys are about 40 µs there) and the size of one command.
const MAX_BATCH: usize = 64;
/// Checks waiting for a batch. A full queue means Redis is far behind: the check fails at
/// once (the policy decides) instead of waiting.
const MAX_QUEUED: usize = 8192;

/// Redis failed, or did not answer within `command_timeout_ms`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate-limit backend: {0}")]
pub(crate) struct BackendError(Arc<str>);

impl BackendError {
    fn new(why: impl Into<Arc<str>>) -> Self {
        BackendError(why.into())
    }
}

/// One queued check and where its answer goes.
struct Pending {
    key: String,
    gcra: Gcra,
    reply: oneshot::Sender<Result<Outcome, BackendError>>,
}

pub(crate) struct Global {
    conn: ConnectionManager,
    command_timeout: Duration,
    /// The batcher's queue, started by the first check (a check runs on the runtime; the
    /// limiter may be built outside one). The task ends when this sender is dropped.
    queue: OnceLock<mpsc::Sender<Pending>>,
}

impl Global {
    /// Connects lazily (the first check connects; a lost connection is re-made in the
    /// background), so a gateway starts and serves while Redis is down.
    pub(crate) fn new(cfg: &config::Redis) -> anyhow::Result<Self> {
        let command_timeout = Duration::from_millis(cfg.command_timeout_ms);
        let (_, conn) = crate::redis_client::manager(cfg, command_timeout)?;
        Ok(Global {
            conn,
            command_timeout,
            queue: OnceLock::new(),
        })
    }

    /// Counts one request for `key` (already namespaced by the caller).
    pub(crate) async fn check(&self, key: String, gcra: Gcra) -> Result<Outcome, BackendError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(MAX_QUEUED);
            tokio::spawn(batcher(self.conn.clone(), rx, self.command_timeout));
            tx
        });
        let (reply, answer) = oneshot::channel();
        queue
            .try_send(Pending { key, gcra, reply })
            .map_err(|_| BackendError::new("too many checks waiting for Redis"))?;
        match tokio::time::timeout(self.command_timeout, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(BackendError::new("the batch was dropped")),
            Err(_) => Err(BackendError::new("timed out")),
        }
    }
}

/// Takes whatever is queued, up to [`MAX_BATCH`], sends it, and waits for the answer before
/// taking the next batch: one call at a time, so the next batch is everything that arrived
/// during this round trip. Redis runs one script at a time anyway, and each call has a fixed
/// cost (parsing, script lookup, a wake-up of Redis), so fewer, larger calls cost it less.
async fn batcher(mut conn: ConnectionManager, mut rx: mpsc::Receiver<Pending>, timeout: Duration) {
    let script = redis::Script::new(GCRA_LUA);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Ends when the limiter is dropped (a reload replaced it).
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        send(&mut conn, &script, std::mem::take(&mut batch), timeout).await;
    }
}

/// One script call for `batch`; every check gets its own outcome, or the batch's error.
async fn send(
    conn: &mut ConnectionManager,
    script: &redis::Script,
    batch: Vec<Pending>,
    timeout: Duration,
) {
    let mut inv = script.prepare_invoke();
    for p in &batch {
        inv.key(&p.key)
            .arg(p.gcra.interval_us)
            .arg(p.gcra.burst_us());
    }
    let answer = match tokio::time::timeout(timeout, inv.invoke_async::<Vec<i64>>(conn)).await {
        Err(_) => Err(BackendError::new("timed out")),
        Ok(Err(e)) => Err(BackendError::new(e.to_string())),
        Ok(Ok(v)) if v.len() != batch.len() => Err(BackendError::new(format!(
            "the script answered {} values for {} keys",
            v.len(),
            batch.len()
        ))),
        Ok(Ok(v)) => Ok(v),
    };
    // The caller may have timed out and gone: then there is nobody to tell.
    match answer {
        Ok(v) => {
            for (p, r) in batch.into_iter().zip(v) {
                let _ = p.reply.send(Ok(outcome(p.gcra, r)));
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

/// The script's integer for one check, as an [`Outcome`].
fn outcome(g: Gcra, v: i64) -> Outcome {
    let us = Duration::from_micros;
    if v >= 0 {
        return g.outcome(true, Duration::ZERO, us(v as u64));
    }
    // Denied: `ahead` is the key's TAT minus now; the next request fits once the TAT is
    // within `burst` of the clock again.
    let ahead = v.unsigned_abs() - 1;
    let retry = ahead
        .saturating_add(g.interval_us)
        .saturating_sub(g.burst_us());
    g.outcome(false, us(retry), us(ahead))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Redis that accepts connections and never answers: every batch waits out the
    /// command timeout. Checks beyond the queue's bound must fail at once instead of joining
    /// the wait (`MAX_QUEUED`); the ones queued still end within the timeout.
    #[tokio::test]
    async fn a_full_queue_fails_new_checks_at_once() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let g = Arc::new(
            Global::new(&config::Redis {
                url: format!("redis://{addr}"),
                connect_timeout_ms: 500,
                command_timeout_ms: 800,
                ca: None,
            })
            .expect("limiter"),
        );
        let gcra = Gcra {
            interval_us: 1000,
            limit: 10,
        };
        // Fill the queue, let the batcher take its first batch (it then waits on the silent
        // Redis), and fill the room that batch left.
        let spawn = |range: std::ops::Range<usize>| -> Vec<_> {
            range
                .map(|i| {
                    let g = g.clone();
                    tokio::spawn(async move { g.check(format!("k{i}"), gcra).await })
                })
                .collect()
        };
        let mut waiting = spawn(0..MAX_QUEUED);
        tokio::time::sleep(Duration::from_millis(100)).await;
        waiting.extend(spawn(MAX_QUEUED..MAX_QUEUED + MAX_BATCH));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = std::time::Instant::now();
        let over = g.check("one-too-many".into(), gcra).await;
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "a check past the bound waited {:?}",
            t.elapsed()
        );
        let why = over.expect_err("no Redis answered").to_string();
        assert!(why.contains("too many checks"), "{why}");
        let t = std::time::Instant::now();
        for w in waiting {
            assert!(w.await.expect("task").is_err(), "nothing answered");
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "queued checks outlived the timeout"
        );
        hold.abort();
    }

    /// The script's one-integer answer decodes to what the in-process GCRA (`Gcra::step`, the
    /// same algorithm) answers for the same TAT and clock, allowed or denied.
    #[test]
    fn the_scripts_answer_decodes_to_the_local_gcras_outcome() {
        let g = Gcra {
            interval_us: 200_000,
            limit: 5,
        };
        let now = 10_000_000u64;
        for stored in [
            0,
            now - 1,
            now,
            now + 1,
            now + 400_000,
            now + 800_000,
            now + 999_999,
        ] {
            let (want, _) = g.step(stored, now);
            let tat = stored.max(now);
            let new = tat + g.interval_us;
            // What GCRA_LUA returns for this key.
            let v = if new - now > g.burst_us() {
                -1 - (tat - now) as i64
            } else {
                (new - now) as i64
            };
            let got = outcome(g, v);
            assert_eq!(got.allowed, want.allowed, "stored {stored}");
            assert_eq!(got.retry_after, want.retry_after, "stored {stored}");
            assert_eq!(got.remaining, want.remaining, "stored {stored}");
            assert_eq!(got.reset, want.reset, "stored {stored}");
        }
    }
}
