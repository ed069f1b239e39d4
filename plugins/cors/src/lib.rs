//! CORS. As an inbound filter it answers preflight `OPTIONS` requests itself; as an outbound
//! filter it adds `Access-Control-Allow-*` headers to responses for allowed origins. Deploy the
//! same `.wasm` twice (e.g. `cors-preflight.toml` with `kind = "inbound"` and `cors.toml` with
//! `kind = "outbound"`), sharing the same `[config]`.
//!
//! ```toml
//! [config]
//! origins = ["https://app.example.com"]   # or ["*"]
//! methods = ["GET", "POST"]
//! headers = ["authorization", "content-type"]
//! max_age = 600
//! credentials = false
//! ```

use portcullis_sdk::prelude::*;

struct Cors;

fn allowed_origin(origin: &str) -> Option<String> {
    let origins: Vec<String> = config::parse("origins").unwrap_or_default();
    if origins.iter().any(|o| o == origin) {
        return Some(origin.to_string());
    }
    if origins.iter().any(|o| o == "*") {
        // With credentials the spec forbids `*`: echo the origin instead.
        let creds: bool = config::parse("credentials").unwrap_or(false);
        return Some(if creds {
            origin.to_string()
        } else {
            "*".to_string()
        });
    }
    None
}

fn list(key: &str, default: &str) -> String {
    config::parse::<Vec<String>>(key)
        .map(|v| v.join(", "))
        .unwrap_or_else(|| default.to_string())
}

impl Filter for Cors {
    fn on_request(req: &RequestView) -> InboundAction {
        let Some(origin) = req.header("origin") else {
            return InboundAction::Continue;
        };
        let preflight =
            req.method() == "OPTIONS" && req.header("access-control-request-method").is_some();
        if !preflight {
            return InboundAction::Continue;
        }
        let Some(allow) = allowed_origin(&origin) else {
            return reject(403, "CORS origin not allowed");
        };
        let mut headers = vec![
            ("access-control-allow-origin".to_string(), allow),
            (
                "access-control-allow-methods".to_string(),
                list("methods", "GET, POST"),
            ),
            (
                "access-control-allow-headers".to_string(),
                list("headers", "content-type"),
            ),
            (
                "access-control-max-age".to_string(),
                config::get_or("max_age", "600"),
            ),
            ("vary".to_string(), "origin".to_string()),
        ];
        if config::parse::<bool>("credentials").unwrap_or(false) {
            headers.push(("access-control-allow-credentials".into(), "true".into()));
        }
        InboundAction::Respond(Response {
            status: 204,
            headers,
            body: Vec::new(),
        })
    }

    fn on_response(req: &RequestView, _resp: &ResponseView) -> OutboundAction {
        let Some(origin) = req.header("origin") else {
            return OutboundAction::Continue;
        };
        let Some(allow) = allowed_origin(&origin) else {
            return OutboundAction::Continue;
        };
        let mut c = Changes::new()
            .set_header("access-control-allow-origin", &allow)
            .set_header("vary", "origin");
        if config::parse::<bool>("credentials").unwrap_or(false) {
            c = c.set_header("access-control-allow-credentials", "true");
        }
        c.outbound()
    }
}

export_filter!(Cors);
