//! {{name}}: an outbound filter. It runs on the response head (from the upstream, an
//! endpoint, or the gateway itself) and may change its status and headers.

use portcullis_sdk::prelude::*;

/// `[config]` in {{name}}.toml, parsed once per instance.
#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default = "default_value")]
    header_value: String,
}

fn default_value() -> String {
    "served".into()
}

static CONFIG: Config<Settings> = Config::new();

struct Plugin;

impl Filter for Plugin {
    fn on_response(_req: &RequestView, _resp: &ResponseView) -> OutboundAction {
        ResponseEdit::new()
            .set_header("x-{{name}}", &CONFIG.get().header_value)
            .remove_header("server")
            .action()
    }
}

export_filter!(Plugin);
