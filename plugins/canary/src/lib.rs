//! Canary routing: sends a request to the canary cluster when a header or cookie says so, or
//! for a sticky percentage of users.
//!
//! ```toml
//! kind = "inbound"
//! order = 20
//! [config]
//! cluster = "api-canary"        # required: where canary traffic goes
//! header = "x-canary"           # optional: header that opts in ...
//! header_value = "1"            #   ... when it has this value (any value if absent)
//! cookie = "canary"             # optional: cookie that opts in when set to "1" or "true"
//! percent = 5                   # optional: share of users (0-100) sent to the canary
//! sticky_header = "x-user-id"   # optional: hash this header for the percentage (else the
//!                               #   client address), so a user stays on one side
//! ```
//! A request sent to the canary gets `x-portcullis-canary: 1` and metadata `canary = 1`.

use portcullis_sdk::prelude::*;

struct Canary;

#[derive(serde::Deserialize)]
struct Settings {
    cluster: Option<String>,
    header: Option<String>,
    header_value: Option<String>,
    cookie: Option<String>,
    #[serde(default)]
    percent: u64,
    sticky_header: Option<String>,
}

static CONFIG: Config<Settings> = Config::new();

/// FNV-1a: stable across versions and platforms, unlike `DefaultHasher`.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn wants_canary(cfg: &Settings, req: &RequestView) -> bool {
    if let Some(h) = &cfg.header {
        if let Some(v) = req.header(h) {
            match &cfg.header_value {
                Some(want) if *want != v => {}
                _ => return true,
            }
        }
    }
    if let Some(c) = &cfg.cookie {
        if matches!(req.cookie(c).as_deref(), Some("1") | Some("true")) {
            return true;
        }
    }
    let percent = cfg.percent;
    if percent == 0 {
        return false;
    }
    let key = cfg
        .sticky_header
        .as_ref()
        .and_then(|h| req.header(h))
        .unwrap_or_else(|| {
            let addr = req.client_addr();
            addr.rsplit_once(':')
                .map(|(ip, _)| ip.to_string())
                .unwrap_or(addr.clone())
        });
    fnv1a(&key) % 100 < percent.min(100)
}

impl Filter for Canary {
    fn on_request(req: &RequestView) -> InboundAction {
        let cfg = CONFIG.get();
        let Some(cluster) = &cfg.cluster else {
            log::warn("canary: config.cluster is not set; passing through");
            return InboundAction::Continue;
        };
        if !wants_canary(cfg, req) {
            return InboundAction::Continue;
        }
        metrics::count("canary_requests", 1);
        RequestEdit::new()
            .cluster(cluster)
            .set_header("x-portcullis-canary", "1")
            .meta("canary", "1")
            .action()
    }
}

export_filter!(Canary);
