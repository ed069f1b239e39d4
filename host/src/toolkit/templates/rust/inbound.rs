//! {{name}}: an inbound filter. It runs before routing, on every request its manifest's
//! `[match]` fits, and returns one action: continue, change the request, answer it, or
//! reject it.

use portcullis_sdk::prelude::*;

/// `[config]` in {{name}}.toml, parsed once per instance.
#[derive(serde::Deserialize)]
struct Settings {
    /// The header a request must carry.
    #[serde(default = "default_header")]
    require_header: String,
}

fn default_header() -> String {
    "x-api-key".into()
}

static CONFIG: Config<Settings> = Config::new();

struct Plugin;

impl Filter for Plugin {
    fn on_request(req: &RequestView) -> InboundAction {
        let required = &CONFIG.get().require_header;
        if req.header(required).is_none() {
            return reject_with(
                401,
                &format!("missing {required}"),
                &[("www-authenticate", "ApiKey")],
            );
        }
        // Tell the upstream which filter let the request through.
        RequestEdit::new().set_header("x-{{name}}", "ok").action()
    }
}

export_filter!(Plugin);
