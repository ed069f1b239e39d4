//! What `plugin test` found, per request and for the run: printed for people, or as JSON
//! (`--json`) for the harness helpers (`sdk/harness/`) and CI. The JSON field names are the
//! harnesses' contract.

use super::project::Located;
use super::spec::{Expect, TestRequest};
use crate::core::passport::Passport;
use crate::plugin::manifest::Manifest;
use crate::plugin::PluginRuntime;
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Body bytes kept in a result (and printed): enough to read an answer, bounded for a large one.
const MAX_BODY_SHOWN: usize = 64 * 1024;

#[derive(Debug, Serialize)]
pub(crate) struct Run {
    pub(crate) plugin: PluginInfo,
    pub(crate) results: Vec<Outcome>,
    /// Requests each stub cluster served.
    pub(crate) stub_hits: BTreeMap<String, u64>,
    pub(crate) ok: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct PluginInfo {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) version: Option<String>,
    pub(crate) wasm_bytes: u64,
    /// Compile (or compile-cache load), type-check and first instantiation.
    pub(crate) load_ms: u64,
    pub(crate) limits: Limits,
    /// Notes for shipping it (a component over the gateway's default upload limit).
    pub(crate) warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Limits {
    pub(crate) cpu_ms: u64,
    pub(crate) memory_mb: u64,
    pub(crate) timeout_ms: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    pub(crate) name: String,
    pub(crate) method: String,
    pub(crate) url: String,
    /// `continue`, `change`, `respond`, `reject`, `failed`, `skipped` (its `[match]` does not
    /// fit), `refused` (the gateway would answer before calling it) or `error` (the request
    /// could not be run).
    pub(crate) action: String,
    /// What the gateway answers (respond, reject, endpoint, failure) or the outbound response.
    pub(crate) status: Option<u16>,
    /// The changed request's headers (inbound `continue`/`change`) or the response's.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<String>,
    /// Inbound: the request as it goes on to routing.
    pub(crate) path: Option<String>,
    pub(crate) metadata: Vec<(String, String)>,
    pub(crate) cluster: Option<String>,
    /// Endpoints: the upstream calls made.
    pub(crate) calls: Vec<CallInfo>,
    pub(crate) failure: Option<FailureInfo>,
    /// Wall-clock time of the call (µs), and of it the time spent running (not waiting on
    /// upstream calls).
    pub(crate) call_us: u64,
    pub(crate) cpu_us: u64,
    /// The plugin's linear-memory high-water mark so far.
    pub(crate) memory_high_water_bytes: u64,
    /// Expectations that failed, as `what: expected X, got Y`.
    pub(crate) failed_expectations: Vec<String>,
    pub(crate) ok: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct CallInfo {
    pub(crate) cluster: String,
    pub(crate) status: Option<u16>,
    pub(crate) error: Option<&'static str>,
    pub(crate) ms: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct FailureInfo {
    /// `trap`, `cpu-exceeded`, `memory-exceeded`, `timeout`, `bad-output`, ...
    pub(crate) kind: String,
    /// The `portcullis-error` code the gateway answers with (`fail_closed`), if it does.
    pub(crate) code: Option<&'static str>,
    pub(crate) detail: Option<String>,
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

fn body_text(b: &Bytes) -> String {
    let cut = &b[..b.len().min(MAX_BODY_SHOWN)];
    String::from_utf8_lossy(cut).into_owned()
}

fn headers_vec(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

impl Outcome {
    fn blank(r: &TestRequest, action: &str) -> Outcome {
        Outcome {
            name: r.label(),
            method: r.method.clone(),
            url: r.url.clone(),
            action: action.into(),
            status: None,
            headers: Vec::new(),
            body: None,
            path: None,
            metadata: Vec::new(),
            cluster: None,
            calls: Vec::new(),
            failure: None,
            call_us: 0,
            cpu_us: 0,
            memory_high_water_bytes: 0,
            failed_expectations: Vec::new(),
            ok: true,
        }
    }

    /// The request could not be run (a bad URL or header).
    pub(crate) fn error(r: &TestRequest, why: String) -> Outcome {
        let mut o = Outcome::blank(r, "error");
        o.failure = Some(FailureInfo {
            kind: "error".into(),
            code: None,
            detail: Some(why),
        });
        o
    }

    /// The gateway answers before calling the plugin.
    pub(crate) fn refused(r: &TestRequest, status: u16, why: String) -> Outcome {
        let mut o = Outcome::blank(r, "refused");
        o.status = Some(status);
        o.body = Some(why);
        o
    }

    /// The action and timings from the plugin's span in the (traced) passport.
    pub(crate) fn from_passport(r: &TestRequest, p: &Passport) -> Outcome {
        let span = p.trace.as_ref().and_then(|t| t.plugins.first());
        let Some(span) = span else {
            return Outcome::blank(r, "skipped");
        };
        let action = match span.outcome {
            "continue" => "continue",
            "modify" => "change",
            "respond" => "respond",
            "reject" => "reject",
            _ => "failed",
        };
        let mut o = Outcome::blank(r, action);
        o.call_us = us(span.end.saturating_duration_since(span.start));
        o.cpu_us = us(span.cpu);
        if action == "failed" {
            o.failure = Some(FailureInfo {
                kind: span.outcome.to_string(),
                code: None,
                detail: p.detail.clone(),
            });
        }
        o
    }

    pub(crate) fn set_request(
        &mut self,
        parts: &http::request::Parts,
        st: &crate::plugin::FilterState,
    ) {
        self.path = Some(parts.uri.to_string());
        self.headers = headers_vec(&parts.headers);
        self.metadata = st.metadata.clone();
        self.cluster = st.cluster.clone();
    }

    pub(crate) fn set_response(
        &mut self,
        status: http::StatusCode,
        h: &http::HeaderMap,
        body: Option<&Bytes>,
    ) {
        self.status = Some(status.as_u16());
        self.headers = headers_vec(h);
        self.body = body.map(body_text);
    }

    pub(crate) fn set_failed(&mut self, status: http::StatusCode, code: &'static str) {
        self.status = Some(status.as_u16());
        match &mut self.failure {
            Some(f) => f.code = Some(code),
            None => {
                self.failure = Some(FailureInfo {
                    kind: code.trim_start_matches("plugin-").into(),
                    code: Some(code),
                    detail: None,
                })
            }
        }
        if self.action != "failed" {
            self.action = "failed".into();
        }
    }

    pub(crate) fn set_calls(&mut self, p: &Passport) {
        self.calls = p
            .calls
            .iter()
            .map(|c| CallInfo {
                cluster: c.cluster.clone(),
                status: c.status,
                error: c.error,
                ms: c.end.saturating_duration_since(c.start).as_secs_f64() * 1e3,
            })
            .collect();
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Checks the expectations; a failure (trap, limit) fails the request unless the file
    /// expects `action = "failed"`.
    pub(crate) fn check(&mut self, e: Option<&Expect>) {
        let mut bad = Vec::new();
        let expects_failure = e.and_then(|e| e.action.as_deref()) == Some("failed");
        if let Some(f) = &self.failure {
            if !expects_failure {
                bad.push(format!("{}: {}", f.kind, f.detail.as_deref().unwrap_or("")));
            }
        }
        if let Some(e) = e {
            if let Some(a) = &e.action {
                if *a != self.action {
                    bad.push(format!("action: expected {a}, got {}", self.action));
                }
            }
            if let Some(s) = e.status {
                if Some(s) != self.status {
                    bad.push(format!("status: expected {s}, got {}", opt(self.status)));
                }
            }
            for (k, want) in &e.headers {
                let got = self.header(k);
                match (want.is_empty(), got) {
                    (true, None) => {}
                    (true, Some(g)) => bad.push(format!("header {k}: expected absent, got {g:?}")),
                    (false, Some(g)) if g == want => {}
                    (false, g) => bad.push(format!(
                        "header {k}: expected {want:?}, got {}",
                        opt(g.map(|g| format!("{g:?}")))
                    )),
                }
            }
            let body = self.body.as_deref().unwrap_or("");
            if let Some(b) = &e.body {
                if b != body {
                    bad.push(format!("body: expected {b:?}, got {body:?}"));
                }
            }
            if let Some(b) = &e.body_contains {
                if !body.contains(b.as_str()) {
                    bad.push(format!("body: expected to contain {b:?}, got {body:?}"));
                }
            }
            for (k, want) in &e.metadata {
                let got = self.metadata.iter().find(|(mk, _)| mk == k).map(|(_, v)| v);
                if got != Some(want) {
                    bad.push(format!("metadata {k}: expected {want:?}, got {}", opt(got)));
                }
            }
        }
        self.ok = bad.is_empty();
        self.failed_expectations = bad;
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".into(), |v| v.to_string())
}

impl Run {
    pub(crate) fn new(
        plugin: &Located,
        m: &Manifest,
        rt: &PluginRuntime,
        load: Duration,
        (wasm_bytes, max_upload): (u64, u64),
        results: Vec<Outcome>,
        stub_hits: BTreeMap<String, u64>,
    ) -> Run {
        let version = rt
            .plugins_json()
            .get(0)
            .and_then(|p| p.get("version"))
            .and_then(|v| v.as_str())
            .map(String::from);
        let mut warnings = Vec::new();
        if wasm_bytes > max_upload {
            warnings.push(format!(
                "{}.wasm is {:.1} MiB, more than the gateway's default [plugins] max_upload_bytes \
                 ({:.0} MiB): raise it in the gateway's config to load this plugin",
                plugin.name,
                wasm_bytes as f64 / (1 << 20) as f64,
                max_upload as f64 / (1 << 20) as f64
            ));
        }
        Run {
            ok: results.iter().all(|r| r.ok),
            plugin: PluginInfo {
                name: plugin.name.clone(),
                kind: m.kind.as_str(),
                version,
                wasm_bytes,
                load_ms: load.as_millis() as u64,
                limits: Limits {
                    cpu_ms: m.cpu.as_millis() as u64,
                    memory_mb: (m.memory_bytes >> 20) as u64,
                    timeout_ms: m.timeout.as_millis() as u64,
                },
                warnings,
            },
            results,
            stub_hits,
        }
    }
}

/// The human-readable report.
pub(crate) fn print(run: &Run) {
    let p = &run.plugin;
    println!(
        "plugin {} ({}, version {}): {:.1} MiB, loaded in {} ms; limits cpu {} ms, memory {} MiB, timeout {} ms",
        p.name,
        p.kind,
        p.version.as_deref().unwrap_or("?"),
        p.wasm_bytes as f64 / (1 << 20) as f64,
        p.load_ms,
        p.limits.cpu_ms,
        p.limits.memory_mb,
        p.limits.timeout_ms
    );
    for w in &p.warnings {
        println!("warning: {w}");
    }
    for r in &run.results {
        println!();
        println!("{} {}", if r.ok { "ok  " } else { "FAIL" }, r.name);
        let status = r.status.map(|s| format!(" {s}")).unwrap_or_default();
        println!("  {} {} -> {}{status}", r.method, r.url, r.action);
        if let Some(path) = &r.path {
            println!("  request: {path}");
        }
        for (k, v) in &r.headers {
            println!("    {k}: {v}");
        }
        for (k, v) in &r.metadata {
            println!("  metadata {k} = {v}");
        }
        if let Some(c) = &r.cluster {
            println!("  cluster: {c}");
        }
        for c in &r.calls {
            let what = c
                .status
                .map(|s| s.to_string())
                .or(c.error.map(String::from));
            println!("  call {} -> {} ({:.1} ms)", c.cluster, opt(what), c.ms);
        }
        if let Some(b) = r.body.as_deref().filter(|b| !b.is_empty()) {
            println!("  body: {}", b.trim_end());
        }
        if let Some(f) = &r.failure {
            println!(
                "  failure: {} {}",
                f.kind,
                f.detail.as_deref().unwrap_or("")
            );
        }
        println!(
            "  call {} µs, cpu {} µs, memory high-water {:.1} MiB",
            r.call_us,
            r.cpu_us,
            r.memory_high_water_bytes as f64 / (1 << 20) as f64
        );
        for e in &r.failed_expectations {
            println!("  expected: {e}");
        }
    }
    let failed = run.results.iter().filter(|r| !r.ok).count();
    println!();
    println!(
        "{} request(s): {} passed, {failed} failed",
        run.results.len(),
        run.results.len() - failed
    );
}
