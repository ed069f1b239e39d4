//! {{name}}: an aggregate endpoint. A route with `endpoint = "{{name}}"` sends requests
//! here; it calls clusters (`fetch`, or `fetch_all` for several at once) and answers.

use portcullis_sdk::endpoint::CallResultExt;
use portcullis_sdk::json::{self, json, Value};
use portcullis_sdk::prelude::*;

/// `[config]` in {{name}}.toml, parsed once per instance.
#[derive(serde::Deserialize)]
struct Settings {
    /// The cluster to call.
    #[serde(default = "default_cluster")]
    cluster: String,
}

fn default_cluster() -> String {
    "backend".into()
}

static CONFIG: Config<Settings> = Config::new();

struct Plugin;

impl Endpoint for Plugin {
    fn handle(req: Request) -> Response {
        let call = Call::get(&CONFIG.get().cluster, "/hello")
            .timeout_ms(500)
            .forward_context(&req);
        match fetch(call).ok_2xx().and_then(|r| r.json::<Value>()) {
            Ok(v) => json::response(200, &json!({ "plugin": "{{name}}", "backend": v })),
            Err(e) => json::response(502, &json!({ "error": e.to_string() })),
        }
    }
}

export_endpoint!(Plugin);
