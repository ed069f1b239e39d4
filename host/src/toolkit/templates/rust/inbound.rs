//! {{name}}: an inbound filter. It runs before routing, on every request its manifest's
//! `[match]` fits, and returns one action: continue, change the request, answer it, or
//! reject it.

use portcullis_sdk::prelude::*;

struct Plugin;

impl Filter for Plugin {
    fn on_request(req: &RequestView) -> InboundAction {
        // The name of the header to require, from `[config]` in {{name}}.toml.
        let required = config::get_or("require_header", "x-api-key");
        if req.header(&required).is_none() {
            return reject(401, &format!("missing {required}"));
        }
        // Tell the upstream which filter let the request through.
        Changes::new().set_header("x-{{name}}", "ok").inbound()
    }
}

export_filter!(Plugin);
