//! # portcullis-harness
//!
//! Runs a built plugin (`NAME.wasm` next to `NAME.toml`) in the gateway's own sandbox, from a
//! plugin's unit tests: each [`Harness::run`] calls `portcullis plugin test --json` with one
//! request and returns what the plugin did, typed. The sandbox is the gateway's (same engine,
//! limits and host imports), so a test passes here exactly when the plugin behaves so in the
//! gateway.
//!
//! ```text
//! use portcullis_harness::{Action, Harness, Request};
//!
//! #[test]
//! fn rejects_without_a_key() {
//!     let out = Harness::new(env!("CARGO_MANIFEST_DIR"))
//!         .run(Request::get("/hello"))
//!         .expect("plugin test ran");
//!     assert_eq!(out.action, Action::Reject);
//!     assert_eq!(out.status, Some(401));
//! }
//! ```
//!
//! Build the plugin first (`portcullis plugin build`). The `portcullis` binary is found on
//! `PATH`, or at the path `PORTCULLIS_BIN` names. Endpoints get stub clusters with
//! [`Harness::stub`]: a real HTTP server on 127.0.0.1 for the run.

#![warn(missing_docs)]

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::process::Command;

/// Runs one plugin directory's `.wasm` through `portcullis plugin test`.
#[derive(Debug, Clone)]
pub struct Harness {
    dir: PathBuf,
    clusters: Map<String, Value>,
}

/// One request to run.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Map<String, Value>,
    body: String,
    response: Option<Value>,
}

impl Request {
    /// A request with `method` to `url` (a path such as `/a?b=1`, or `http://host/path`).
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Map::new(),
            body: String::new(),
            response: None,
        }
    }
    /// A `GET`.
    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }
    /// A `POST` with a body.
    pub fn post(url: &str, body: &str) -> Request {
        Request::new("POST", url).body(body)
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .insert(name.into(), Value::String(value.into()));
        self
    }
    /// Sets the body.
    pub fn body(mut self, body: &str) -> Request {
        self.body = body.into();
        self
    }
    /// Outbound filters: the response head the filter is given (default 200, no headers).
    pub fn response(mut self, status: u16, headers: &[(&str, &str)]) -> Request {
        let h: Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        self.response = Some(json!({ "status": status, "headers": h }));
        self
    }
}

/// What the plugin did with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It let the request (or response) through unchanged.
    Continue,
    /// It changed the request or response.
    Change,
    /// It answered (an inbound filter's `respond`, or an endpoint's response).
    Respond,
    /// It rejected the request.
    Reject,
    /// It trapped, exceeded a limit, timed out or returned output the gateway refuses.
    Failed,
    /// Its manifest's `[match]` does not fit the request: it was not called.
    Skipped,
    /// The gateway answers before calling it (a body over `max_body_bytes`).
    Refused,
    /// The request could not be run (a malformed URL or header).
    Error,
}

/// A failure of the call.
#[derive(Debug, Clone, Deserialize)]
pub struct Failure {
    /// `trap`, `cpu-exceeded`, `memory-exceeded`, `timeout`, `bad-output`, ...
    pub kind: String,
    /// The `portcullis-error` code the gateway answers with, if it answers.
    pub code: Option<String>,
    /// What went wrong, as the gateway logs it.
    pub detail: Option<String>,
}

/// An upstream call an endpoint made.
#[derive(Debug, Clone, Deserialize)]
pub struct Call {
    /// The cluster called.
    pub cluster: String,
    /// Its status, if it answered.
    pub status: Option<u16>,
    /// Why it did not, if it did not.
    pub error: Option<String>,
}

/// The result of one request.
#[derive(Debug, Clone, Deserialize)]
pub struct Outcome {
    /// What the plugin did.
    pub action: Action,
    /// The answer's status (respond, reject, endpoint, failure) or the outbound response's.
    pub status: Option<u16>,
    /// The changed request's headers (inbound filters that let it through) or the response's.
    pub headers: Vec<(String, String)>,
    /// The answer's body, when there is one (lossy UTF-8, first 64 KiB).
    #[serde(default, deserialize_with = "null_empty")]
    pub body: String,
    /// Inbound filters: the path and query the request goes on with.
    pub path: Option<String>,
    /// Inbound filters: metadata set for later filters.
    pub metadata: Vec<(String, String)>,
    /// Inbound filters: the cluster chosen, if one was.
    pub cluster: Option<String>,
    /// Endpoints: the upstream calls made.
    pub calls: Vec<Call>,
    /// Set when the call failed.
    pub failure: Option<Failure>,
    /// Wall-clock time of the call, µs.
    pub call_us: u64,
    /// Time spent running (not waiting on upstream calls), µs.
    pub cpu_us: u64,
    /// The plugin's memory high-water mark, bytes.
    pub memory_high_water_bytes: u64,
}

fn null_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl Outcome {
    /// A header of the result, by name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be run: the binary is missing, the plugin is not built or did not
/// load, or the output was not understood. The message is `portcullis`'s own.
#[derive(Debug, Clone)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

#[derive(Deserialize)]
struct Run {
    results: Vec<Outcome>,
}

impl Harness {
    /// A harness for the plugin in `dir` (the project directory, where `NAME.toml` is).
    pub fn new(dir: impl Into<PathBuf>) -> Harness {
        Harness {
            dir: dir.into(),
            clusters: Map::new(),
        }
    }

    /// Endpoints: every call to `cluster` gets this answer, from a server on 127.0.0.1.
    pub fn stub(
        mut self,
        cluster: &str,
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Harness {
        let h: Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        self.clusters.insert(
            cluster.into(),
            json!({ "status": status, "headers": h, "body": body }),
        );
        self
    }

    /// Runs one request. A plugin failure (trap, limit) is an [`Outcome`] with
    /// `action: Failed`, not an error.
    pub fn run(&self, req: Request) -> Result<Outcome, Error> {
        let mut r = json!({ "method": req.method, "url": req.url, "headers": req.headers, "body": req.body });
        if let Some(resp) = req.response {
            r["response"] = resp;
        }
        let spec = json!({ "request": [r], "cluster": self.clusters });
        let file = std::env::temp_dir().join(format!(
            "portcullis-harness-{}-{}.json",
            std::process::id(),
            unique()
        ));
        std::fs::write(&file, spec.to_string())
            .map_err(|e| Error(format!("{}: {e}", file.display())))?;
        let bin = std::env::var_os("PORTCULLIS_BIN").unwrap_or_else(|| "portcullis".into());
        let out = Command::new(&bin)
            .args(["plugin", "test", "--json", "--dir"])
            .arg(&self.dir)
            .arg("--request")
            .arg(&file)
            .output();
        let _ = std::fs::remove_file(&file);
        let out = out.map_err(|e| {
            Error(format!(
                "running {}: {e} (install portcullis on PATH, or set PORTCULLIS_BIN)",
                bin.to_string_lossy()
            ))
        })?;
        // Exit 1 is a failed request (reported in the JSON); anything else without JSON is an
        // error of the run itself.
        let parsed: Result<Run, _> = serde_json::from_slice(&out.stdout);
        match parsed {
            Ok(mut run) if run.results.len() == 1 => Ok(run.results.remove(0)),
            _ => Err(Error(format!(
                "portcullis plugin test failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }
}

/// A per-process counter: tests run in parallel threads, each with its own request file.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
