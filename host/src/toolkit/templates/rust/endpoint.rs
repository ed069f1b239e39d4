//! {{name}}: an aggregate endpoint. A route with `endpoint = "{{name}}"` sends requests
//! here; it calls clusters (`fetch`, or `fetch_all` for several at once) and answers.

use portcullis_sdk::endpoint::CallResultExt;
use portcullis_sdk::json::{self, json, Value};
use portcullis_sdk::prelude::*;

struct Plugin;

impl Endpoint for Plugin {
    fn handle(req: Request) -> Response {
        // The cluster to call, from `[config]` in {{name}}.toml.
        let cluster = config::get_or("cluster", "backend");
        let call = Call::get(&cluster, "/hello")
            .timeout_ms(500)
            .forward_context(&req);
        match fetch(call).ok_2xx().and_then(|r| r.json::<Value>()) {
            Ok(v) => json::response(200, &json!({ "plugin": "{{name}}", "backend": v })),
            Err(e) => json::response(502, &json!({ "error": e.to_string() })),
        }
    }
}

export_endpoint!(Plugin);
