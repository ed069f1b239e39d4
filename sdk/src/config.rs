//! The manifest's `[config]` table.
//!
//! Declare what the plugin reads as a struct and let [`Config`] parse it once per instance:
//!
//! ```text
//! #[derive(serde::Deserialize)]
//! struct Settings {
//!     header: String,
//!     #[serde(default)]
//!     keys: BTreeMap<String, String>,
//! }
//! static CONFIG: Config<Settings> = Config::new();
//!
//! fn on_request(req: &RequestView) -> InboundAction {
//!     let cfg = CONFIG.get();   // parsed on the first call, then cached
//!     ...
//! }
//! ```
//!
//! Why once per instance: the table cannot change while an instance lives (a new manifest is
//! a new plugin version with new instances), and the gateway reuses instances across calls,
//! so later calls pay nothing. A table that does not fit the struct is the author's bug, not
//! the request's: the first call logs `config key `keys.team-a`: invalid type ...` at error
//! level and traps, and the manifest's failure policy applies (by default `fail_closed`).

use crate::filter::bindings::portcullis::plugin::config as wit;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// The table as JSON, fetched from the host on first use and kept for the instance's life.
fn table() -> &'static Map<String, Value> {
    static TABLE: OnceLock<Map<String, Value>> = OnceLock::new();
    TABLE.get_or_init(|| match serde_json::from_str(&wit::all()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    })
}

/// A typed `[config]`, parsed at first use and cached in the instance. Declare it as a
/// `static`; `T` says with serde what the table holds (use `#[serde(default)]` for optional
/// keys, `#[serde(deny_unknown_fields)]` to refuse misspelled ones).
pub struct Config<T> {
    cell: OnceLock<T>,
}

impl<T: DeserializeOwned> Config<T> {
    /// An unparsed config, for a `static`.
    pub const fn new() -> Self {
        Config {
            cell: OnceLock::new(),
        }
    }

    /// The parsed table. The first call parses it; a table that does not fit `T` logs the
    /// key and the reason at error level, then traps (see the module docs).
    pub fn get(&self) -> &T {
        self.cell.get_or_init(|| match parse() {
            Ok(v) => v,
            Err(why) => {
                crate::log::error(&why);
                panic!("{why}");
            }
        })
    }
}

impl<T: DeserializeOwned> Default for Config<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses the whole table as `T`. The error names the key that did not fit, e.g.
/// ``config key `keys.team-a`: invalid type: integer `3`, expected a string``.
pub fn parse<T: DeserializeOwned>() -> Result<T, String> {
    let value = Value::Object(table().clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("config: {}", e.inner())
        } else {
            format!("config key `{path}`: {}", e.inner())
        }
    })
}

/// The value of top-level key `key` as a string (other types as their JSON text), without
/// declaring a struct.
pub fn get(key: &str) -> Option<String> {
    table().get(key).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// The whole table as JSON.
pub fn all() -> Value {
    Value::Object(table().clone())
}
