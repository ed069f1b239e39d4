//! The demo's aggregate API: `GET /api/home?user=N` fans out to four services at once and
//! returns one JSON document for the home screen.
//!
//! Partial failure is normal: `profile` is essential (without it the endpoint answers 502);
//! the other sections degrade to defaults, and `degraded` lists them.
//!
//! ```toml
//! kind = "endpoint"
//! [config]
//! timeout_ms = 300        # per call
//! ```

use portcullis_sdk::endpoint::CallResultExt;
use portcullis_sdk::json::{self, json, Value};
use portcullis_sdk::prelude::*;

struct Home;

#[derive(serde::Deserialize)]
struct Settings {
    /// Per call.
    #[serde(default = "timeout_ms")]
    timeout_ms: u32,
}

fn timeout_ms() -> u32 {
    300
}

static CONFIG: Config<Settings> = Config::new();

impl Endpoint for Home {
    fn handle(req: Request) -> Response {
        let user = req.query("user").unwrap_or("1").to_string();
        if user.is_empty() || !user.bytes().all(|b| b.is_ascii_digit()) || user.len() > 12 {
            return json::response(400, &json!({ "error": "user must be a number" }));
        }
        let timeout = CONFIG.get().timeout_ms;
        let call = |cluster: &str| {
            Call::get(cluster, &format!("/{cluster}?user={user}"))
                .timeout_ms(timeout)
                .forward_context(&req)
        };
        let sections = ["profile", "recommendations", "ratings", "artwork"];
        let results = fetch_all(sections.iter().map(|s| call(s)).collect());

        let mut doc = serde_json::Map::new();
        let mut degraded = Vec::new();
        for (name, res) in sections.iter().zip(results) {
            match res.ok_2xx().and_then(|r| r.json::<Value>()) {
                Ok(v) => {
                    doc.insert(name.to_string(), v);
                }
                Err(e) => {
                    metrics::count(&format!("degraded_{name}"), 1);
                    degraded.push(json!({ "section": name, "reason": e.to_string() }));
                    doc.insert(name.to_string(), fallback(name));
                }
            }
        }
        if doc.get("profile").is_none_or(Value::is_null) {
            return json::response(
                502,
                &json!({ "error": "profile unavailable", "degraded": degraded }),
            );
        }
        doc.insert("degraded".into(), Value::Array(degraded));
        json::response(200, &Value::Object(doc))
    }
}

/// What a section shows when its service fails: empty lists, never a broken page.
fn fallback(section: &str) -> Value {
    match section {
        "recommendations" => json!({ "items": [] }),
        "ratings" => json!({ "ratings": [] }),
        "artwork" => json!({ "images": [] }),
        _ => Value::Null,
    }
}

export_endpoint!(Home);
