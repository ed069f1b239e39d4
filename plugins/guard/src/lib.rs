//! Request guard: allowed methods and a maximum declared body size, checked before any
//! upstream sees the request.
//!
//! ```toml
//! kind = "inbound"
//! order = 5
//! [config]
//! methods = ["GET", "HEAD", "POST"]   # others get 405
//! max_body_bytes = 1048576            # a larger Content-Length gets 413
//! require_content_length = false      # true: bodies without Content-Length get 411
//! ```

use portcullis_sdk::prelude::*;

struct Guard;

#[derive(serde::Deserialize)]
struct Settings {
    methods: Option<Vec<String>>,
    max_body_bytes: Option<u64>,
    #[serde(default)]
    require_content_length: bool,
}

static CONFIG: Config<Settings> = Config::new();

impl Filter for Guard {
    fn on_request(req: &RequestView) -> InboundAction {
        let cfg = CONFIG.get();
        if let Some(methods) = &cfg.methods {
            let method = req.method();
            if !methods.iter().any(|m| m.eq_ignore_ascii_case(&method)) {
                metrics::count("rejected_method", 1);
                return reject(405, &format!("method {method} is not allowed here"));
            }
        }
        let max = cfg.max_body_bytes;
        let declared = req
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let chunked = req
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked && cfg.require_content_length {
            metrics::count("rejected_length_required", 1);
            return reject(411, "a Content-Length is required");
        }
        if let (Some(max), Some(n)) = (max, declared) {
            if n > max {
                metrics::count("rejected_size", 1);
                return reject(
                    413,
                    &format!("body of {n} bytes exceeds the limit of {max}"),
                );
            }
        }
        InboundAction::Continue
    }
}

export_filter!(Guard);
