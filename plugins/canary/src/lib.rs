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

/// FNV-1a: stable across versions and platforms, unlike `DefaultHasher`.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn wants_canary(req: &RequestView) -> bool {
    if let Some(h) = config::get("header") {
        if let Some(v) = req.header(&h) {
            match config::get("header_value") {
                Some(want) if want != v => {}
                _ => return true,
            }
        }
    }
    if let Some(c) = config::get("cookie") {
        if matches!(req.cookie(&c).as_deref(), Some("1") | Some("true")) {
            return true;
        }
    }
    let percent: u64 = config::parse("percent").unwrap_or(0);
    if percent == 0 {
        return false;
    }
    let key = config::get("sticky_header")
        .and_then(|h| req.header(&h))
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
        let Some(cluster) = config::get("cluster") else {
            log::warn("canary: config.cluster is not set; passing through");
            return InboundAction::Continue;
        };
        if !wants_canary(req) {
            return InboundAction::Continue;
        }
        metrics::count("canary_requests", 1);
        Changes::new()
            .cluster(&cluster)
            .set_header("x-portcullis-canary", "1")
            .meta("canary", "1")
            .inbound()
    }
}

export_filter!(Canary);
