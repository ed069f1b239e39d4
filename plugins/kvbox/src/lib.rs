//! A test fixture for the WIT 0.3.0 imports: an inbound filter that answers every request it
//! matches with the result of the one `kv` or `rate-limit` call its query names, as text:
//!
//! | query                              | call                          | answer            |
//! |------------------------------------|-------------------------------|-------------------|
//! | `op=get&k=K`                       | `kv::get(K)`                  | `some:V` / `none` |
//! | `op=set&k=K&v=V&ttl=MS`            | `kv::set(K, V, MS)`           | `ok`              |
//! | `op=del&k=K`                       | `kv::delete(K)`               | `true` / `false`  |
//! | `op=incr&k=K&d=N&ttl=MS`           | `kv::increment(K, N, MS)`     | the new value     |
//! | `op=rl&name=L&k=K`                 | `rate_limit::check(L, K)`     | `allowed=.. remaining=.. retry=.. fallback=..` |
//!
//! A failure answers `err:<case>` (`err:too-large`, `err:unavailable`, ...). `v=` may be
//! `@N`: N bytes of `x` (for the value-size limit).

use portcullis_sdk::kv::KvError;
use portcullis_sdk::prelude::*;
use portcullis_sdk::rate_limit::CheckError;

struct KvBox;

impl Filter for KvBox {
    fn on_request(req: &RequestView) -> InboundAction {
        let q = |k: &str| req.query(k).unwrap_or_default();
        let num = |k: &str| q(k).parse::<i64>().unwrap_or(0);
        let key = q("k");
        let out = match q("op").as_str() {
            "get" => kv::get(&key).map(|v| match v {
                Some(v) => format!("some:{}", String::from_utf8_lossy(&v)),
                None => "none".into(),
            }),
            "set" => kv::set(&key, &value(&q("v")), num("ttl") as u64).map(|()| "ok".into()),
            "del" => kv::delete(&key).map(|b| b.to_string()),
            "incr" => kv::increment(&key, num("d"), num("ttl") as u64).map(|n| n.to_string()),
            "rl" => return respond(200, &check(&q("name"), &key)),
            other => return respond(400, &format!("unknown op `{other}`")),
        };
        respond(200, &out.unwrap_or_else(|e| kv_error(&e)))
    }
}

fn value(v: &str) -> Vec<u8> {
    match v.strip_prefix('@').and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => vec![b'x'; n],
        None => v.as_bytes().to_vec(),
    }
}

fn check(name: &str, key: &str) -> String {
    match rate_limit::check(name, key) {
        Ok(d) => format!(
            "allowed={} remaining={} retry={} fallback={}",
            d.allowed, d.remaining, d.retry_after_ms, d.fallback
        ),
        Err(CheckError::UnknownLimit(_)) => "err:unknown-limit".into(),
        Err(CheckError::InvalidKey) => "err:invalid-key".into(),
    }
}

fn kv_error(e: &KvError) -> String {
    match e {
        KvError::TooLarge(_) => "err:too-large".into(),
        KvError::LimitExceeded(_) => "err:limit-exceeded".into(),
        KvError::Unavailable(why) => format!("err:unavailable {why}"),
        KvError::NotANumber => "err:not-a-number".into(),
    }
}

export_filter!(KvBox);
