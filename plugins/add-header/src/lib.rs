//! Header injection: sets and removes headers on the request (`kind = "inbound"`) or on the
//! response (`kind = "outbound"`).
//!
//! ```toml
//! [config]
//! set = { "x-frame-options" = "DENY", "strict-transport-security" = "max-age=63072000" }
//! remove = ["server", "x-powered-by"]
//! ```

use portcullis_sdk::prelude::*;
use std::collections::BTreeMap;
use std::sync::OnceLock;

struct AddHeader;

/// The changes are the same for every request: built from config once per instance.
fn changes() -> Changes {
    static CHANGES: OnceLock<Changes> = OnceLock::new();
    CHANGES.get_or_init(build).clone()
}

fn build() -> Changes {
    let mut c = Changes::new();
    for name in config::parse::<Vec<String>>("remove").unwrap_or_default() {
        c = c.remove_header(&name);
    }
    let set: BTreeMap<String, String> = config::parse("set").unwrap_or_default();
    for (k, v) in &set {
        c = c.set_header(k, v);
    }
    c
}

impl Filter for AddHeader {
    fn on_request(_req: &RequestView) -> InboundAction {
        changes().inbound()
    }
    fn on_response(_req: &RequestView, _resp: &ResponseView) -> OutboundAction {
        changes().outbound()
    }
}

export_filter!(AddHeader);
