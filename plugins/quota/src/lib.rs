//! `quota`: a fixed-window request quota per API key, kept in the plugin KV store (WIT 0.3
//! `kv`), so every instance of the plugin (and, with `[plugins] kv = "redis"`, every gateway)
//! counts against the same quota.
//!
//! ```toml
//! kind = "inbound"
//! [config]
//! header = "x-api-key"   # where the key is read (default `x-api-key`)
//! limit = 1000           # requests per key per window
//! window_ms = 3600000    # the window (default one hour)
//! ```
//!
//! A request without the header passes untouched (pair it with `auth` to require one). Each
//! counted request gets `x-quota-remaining`; one over the quota is rejected with 429 and
//! `retry-after`. When the store is unavailable (Redis down), the request passes and the
//! miss is counted in the plugin metric `quota_store_unavailable`: a quota is not worth an
//! outage.

use portcullis_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Settings {
    #[serde(default = "default_header")]
    header: String,
    limit: i64,
    #[serde(default = "default_window")]
    window_ms: u64,
}

fn default_header() -> String {
    "x-api-key".into()
}

fn default_window() -> u64 {
    3_600_000
}

static CONFIG: Config<Settings> = Config::new();

struct Quota;

impl Filter for Quota {
    fn on_request(req: &RequestView) -> InboundAction {
        let cfg = CONFIG.get();
        let Some(key) = req.header(&cfg.header) else {
            return InboundAction::Continue;
        };
        let used = match kv::increment(&format!("q:{key}"), 1, cfg.window_ms) {
            Ok(n) => n,
            Err(e) => {
                metrics::count("quota_store_unavailable", 1);
                log::warn(&format!("quota store: {e:?}"));
                return InboundAction::Continue;
            }
        };
        if used > cfg.limit {
            let secs = cfg.window_ms.div_ceil(1000).to_string();
            return reject_with(429, "quota exceeded", &[("retry-after", &secs)]);
        }
        let left = (cfg.limit - used).to_string();
        RequestEdit::new()
            .set_header("x-quota-remaining", &left)
            .action()
    }
}

export_filter!(Quota);
