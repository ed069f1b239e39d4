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

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default)]
    origins: Vec<String>,
    methods: Option<Vec<String>>,
    headers: Option<Vec<String>>,
    #[serde(default = "max_age")]
    max_age: u64,
    #[serde(default)]
    credentials: bool,
}

fn max_age() -> u64 {
    600
}

static CONFIG: Config<Settings> = Config::new();

fn allowed_origin(cfg: &Settings, origin: &str) -> Option<String> {
    let origins = &cfg.origins;
    if origins.iter().any(|o| o == origin) {
        return Some(origin.to_string());
    }
    if origins.iter().any(|o| o == "*") {
        // With credentials the spec forbids `*`: echo the origin instead.
        let creds = cfg.credentials;
        return Some(if creds {
            origin.to_string()
        } else {
            "*".to_string()
        });
    }
    None
}

fn list(v: &Option<Vec<String>>, default: &str) -> String {
    v.as_ref()
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
        let cfg = CONFIG.get();
        let Some(allow) = allowed_origin(cfg, &origin) else {
            return reject(403, "CORS origin not allowed");
        };
        let mut headers = vec![
            ("access-control-allow-origin".to_string(), allow),
            (
                "access-control-allow-methods".to_string(),
                list(&cfg.methods, "GET, POST"),
            ),
            (
                "access-control-allow-headers".to_string(),
                list(&cfg.headers, "content-type"),
            ),
            (
                "access-control-max-age".to_string(),
                cfg.max_age.to_string(),
            ),
            ("vary".to_string(), "origin".to_string()),
        ];
        if cfg.credentials {
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
        let cfg = CONFIG.get();
        let Some(allow) = allowed_origin(cfg, &origin) else {
            return OutboundAction::Continue;
        };
        let mut c = ResponseEdit::new()
            .set_header("access-control-allow-origin", &allow)
            .set_header("vary", "origin");
        if cfg.credentials {
            c = c.set_header("access-control-allow-credentials", "true");
        }
        c.action()
    }
}

export_filter!(Cors);
