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

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

static CONFIG: Config<Settings> = Config::new();

/// The changes are the same for every request: built from config once per instance, for the
/// phase the manifest's `kind` says.
fn request_edit() -> RequestEdit {
    static EDIT: OnceLock<RequestEdit> = OnceLock::new();
    EDIT.get_or_init(|| {
        let cfg = CONFIG.get();
        let mut e = RequestEdit::new();
        for name in &cfg.remove {
            e = e.remove_header(name);
        }
        for (k, v) in &cfg.set {
            e = e.set_header(k, v);
        }
        e
    })
    .clone()
}

fn response_edit() -> ResponseEdit {
    static EDIT: OnceLock<ResponseEdit> = OnceLock::new();
    EDIT.get_or_init(|| {
        let cfg = CONFIG.get();
        let mut e = ResponseEdit::new();
        for name in &cfg.remove {
            e = e.remove_header(name);
        }
        for (k, v) in &cfg.set {
            e = e.set_header(k, v);
        }
        e
    })
    .clone()
}

impl Filter for AddHeader {
    fn on_request(_req: &RequestView) -> InboundAction {
        request_edit().action()
    }
    fn on_response(_req: &RequestView, _resp: &ResponseView) -> OutboundAction {
        response_edit().action()
    }
}

export_filter!(AddHeader);
