//! The gateway's rate limits, checked on a key the plugin computes (new in WIT 0.3.0).
//!
//! A check counts (an allowed one takes one request's worth of the key's budget), so this is
//! how a plugin enforces a limit per tenant, user or anything it parses:
//!
//! ```text
//! match rate_limit::check("per-tenant", &tenant) {
//!     Ok(d) if !d.allowed => return rate_limit::reject_429(&d),
//!     Ok(_) => {}
//!     Err(e) => log::warn(&format!("rate limit: {e:?}")),
//! }
//! ```

use crate::filter::bindings::portcullis::plugin::rate_limit as wit;
use crate::types::InboundAction;

pub use wit::{CheckError, Decision};

/// Checks (and counts) one request for `key` against the gateway's `[[rate_limit]]` named
/// `name`.
pub fn check(name: &str, key: &str) -> Result<Decision, CheckError> {
    wit::check(name, key)
}

/// A 429 rejection for a denied [`Decision`], with `retry-after` (whole seconds, at least 1).
pub fn reject_429(d: &Decision) -> InboundAction {
    let secs = d.retry_after_ms.div_ceil(1000).max(1).to_string();
    crate::reject_with(429, "rate limited", &[("retry-after", &secs)])
}
