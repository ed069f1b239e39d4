//! JSON helpers for building responses.

use crate::types::Response;
use serde::Serialize;

/// A JSON response with `content-type: application/json`. Serialisation errors become a 500.
pub fn response<T: Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        },
        Err(e) => Response {
            status: 500,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: format!("json encoding failed: {e}\n").into_bytes(),
        },
    }
}

pub use serde_json::{json, Value};
