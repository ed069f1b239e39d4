//! {{name}}: an outbound filter. It runs on the response head (from the upstream, an
//! endpoint, or the gateway itself) and may change its status and headers.

use portcullis_sdk::prelude::*;

struct Plugin;

impl Filter for Plugin {
    fn on_response(_req: &RequestView, _resp: &ResponseView) -> OutboundAction {
        let value = config::get_or("header_value", "served");
        Changes::new()
            .set_header("x-{{name}}", &value)
            .remove_header("server")
            .outbound()
    }
}

export_filter!(Plugin);
