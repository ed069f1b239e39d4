//! What `plugin test` runs: requests (from the command line or a TOML/JSON file), stub
//! clusters for endpoints, and the expectations a file may state.
//!
//! ```toml
//! [cluster.backend]              # endpoints: a stub served on 127.0.0.1
//! status = 200                   # default 200
//! headers = { "content-type" = "application/json" }
//! body = '{"greeting":"hello"}'
//! delay_ms = 0                   # answer after this long (default 0)
//!
//! [[request]]
//! name = "no key"                # default: "METHOD URL"
//! method = "GET"                 # default GET
//! url = "/hello?x=1"             # a path, or http://host/path (sets `host`)
//! headers = { "x-api-key" = "k1" }
//! body = ""
//! response = { status = 200, headers = {} }   # outbound filters: the response they see
//! expect = { action = "reject", status = 401, headers = { "www-authenticate" = "Bearer" }, body_contains = "key" }
//! ```
//!
//! The same document as JSON has the same keys (`{"request": [...], "cluster": {...}}`); a
//! JSON array is a list of requests.

use anyhow::Context as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Requests per run: a test file is a handful; this bounds a runaway generated one.
pub(crate) const MAX_REQUESTS: usize = 1_000;
/// Bytes of a request file.
const MAX_FILE_BYTES: u64 = 4 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Spec {
    #[serde(default)]
    pub(crate) request: Vec<TestRequest>,
    #[serde(default)]
    pub(crate) cluster: BTreeMap<String, StubCluster>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestRequest {
    pub(crate) name: Option<String>,
    #[serde(default = "get")]
    pub(crate) method: String,
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) body: String,
    /// Outbound filters: the response head the filter is given (default: 200, no headers).
    pub(crate) response: Option<TestResponse>,
    pub(crate) expect: Option<Expect>,
}

fn get() -> String {
    "GET".into()
}

fn ok() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestResponse {
    #[serde(default = "ok")]
    pub(crate) status: u16,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
}

/// A stub cluster: every request to it gets this answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StubCluster {
    #[serde(default = "ok")]
    pub(crate) status: u16,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) body: String,
    #[serde(default)]
    pub(crate) delay_ms: u64,
}

/// What a request's outcome must be; every stated field is checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    /// `continue`, `change`, `respond`, `reject`, `failed` or `skipped`.
    pub(crate) action: Option<String>,
    /// The answer's status (respond, reject, endpoint, failure) or the outbound response's.
    pub(crate) status: Option<u16>,
    /// Header → value on the result (the changed request for inbound filters, the response
    /// otherwise); a value of `""` means the header must be absent.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Option<String>,
    pub(crate) body_contains: Option<String>,
    /// Inbound filters: metadata key → value set for later filters.
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
}

impl TestRequest {
    pub(crate) fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{} {}", self.method, self.url))
    }
}

impl Spec {
    /// Reads a TOML (`.toml`) or JSON (anything else) request file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Spec> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("{}", path.display()))?
            .len();
        anyhow::ensure!(
            len <= MAX_FILE_BYTES,
            "{}: {len} bytes, more than {MAX_FILE_BYTES}",
            path.display()
        );
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let spec = Spec::parse(&text, is_toml).with_context(|| format!("{}", path.display()))?;
        Ok(spec)
    }

    pub(crate) fn parse(text: &str, is_toml: bool) -> anyhow::Result<Spec> {
        let spec: Spec = if is_toml {
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?
        } else {
            let v: serde_json::Value = serde_json::from_str(text)?;
            if v.is_array() {
                Spec {
                    request: serde_json::from_value(v)?,
                    ..Spec::default()
                }
            } else {
                serde_json::from_value(v)?
            }
        };
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.request.is_empty(),
            "no requests: add a [[request]] with at least `url`"
        );
        anyhow::ensure!(
            self.request.len() <= MAX_REQUESTS,
            "{} requests, more than {MAX_REQUESTS}",
            self.request.len()
        );
        for (i, r) in self.request.iter().enumerate() {
            http::Method::from_bytes(r.method.as_bytes()).map_err(|_| {
                anyhow::anyhow!("request[{i}].method: {:?} is not a method", r.method)
            })?;
            anyhow::ensure!(
                r.url.starts_with('/')
                    || r.url.starts_with("http://")
                    || r.url.starts_with("https://"),
                "request[{i}].url: {:?} must be a path (/...) or an http(s):// URL",
                r.url
            );
        }
        for (name, c) in &self.cluster {
            anyhow::ensure!(
                (100..=999).contains(&c.status),
                "cluster.{name}.status: {} is not an HTTP status",
                c.status
            );
            anyhow::ensure!(
                c.delay_ms <= 60_000,
                "cluster.{name}.delay_ms: at most 60000"
            );
        }
        Ok(())
    }
}

/// `-H 'name: value'` from the command line.
pub(crate) fn parse_header(h: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = h
        .split_once(':')
        .with_context(|| format!("-H {h:?}: expected `name: value`"))?;
    Ok((k.trim().to_ascii_lowercase(), v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_files_say_the_same() {
        let t = Spec::parse(
            "[cluster.b]\nbody='x'\n[[request]]\nurl='/a'\nexpect={status=401}\n",
            true,
        )
        .expect("toml");
        let j = Spec::parse(
            r#"{"cluster":{"b":{"body":"x"}},"request":[{"url":"/a","expect":{"status":401}}]}"#,
            false,
        )
        .expect("json");
        for s in [&t, &j] {
            assert_eq!(s.request[0].method, "GET");
            assert_eq!(s.cluster["b"].status, 200);
            assert_eq!(
                s.request[0].expect.as_ref().and_then(|e| e.status),
                Some(401)
            );
        }
        let list = Spec::parse(r#"[{"url":"/x","method":"POST"}]"#, false).expect("array");
        assert_eq!(list.request[0].label(), "POST /x");
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = Spec::parse("[[request]]\nurl='nope'\n", true).expect_err("url");
        assert!(e.to_string().contains("request[0].url"), "{e}");
        let e = Spec::parse("[[request]]\nurl='/'\nexpct={}\n", true).expect_err("typo");
        assert!(e.to_string().contains("expct"), "{e}");
        let e = Spec::parse("", true).expect_err("empty");
        assert!(e.to_string().contains("no requests"), "{e}");
        assert!(parse_header("nocolon").is_err());
        assert_eq!(
            parse_header("X-Key:  v1").expect("header"),
            ("x-key".into(), "v1".into())
        );
    }
}
