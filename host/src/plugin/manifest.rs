//! `<name>.toml`: what a plugin is, when it runs, what it may use and how it fails.
//!
//! Every limit a manifest asks for is checked against the ceilings of the gateway's
//! `[plugins]` section, so a team can tune its plugin but never past what the platform team
//! allows.

use crate::config::{self, RouteMatch};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Inbound,
    Outbound,
    Endpoint,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Inbound => "inbound",
            Kind::Outbound => "outbound",
            Kind::Endpoint => "endpoint",
        }
    }
}

/// What happens to the request when the plugin traps, exceeds a limit, times out, returns
/// invalid output or is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The request fails with a 5xx and `portcullis-error: plugin-<kind>`. The default: a
    /// broken auth filter must not let traffic through.
    #[default]
    FailClosed,
    /// The filter is skipped as if it had returned `continue`.
    FailOpen,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    kind: Kind,
    #[serde(default)]
    order: i32,
    #[serde(default, rename = "match")]
    matcher: RouteMatch,
    #[serde(default)]
    failure: Failure,
    /// Filters: give `on-request` the request body (buffered up to `max_body_bytes`).
    #[serde(default)]
    body: bool,
    /// `false`: a fresh instance for every call (see `Manifest::reuse_instance`).
    #[serde(default = "yes")]
    reuse_instance: bool,
    /// Outbound filters: also run on responses the gateway made (errors, filter answers).
    #[serde(default = "yes")]
    gateway_responses: bool,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    fanout: RawFanout,
    #[serde(default)]
    kv: RawKv,
    #[serde(default)]
    config: toml::Table,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    cpu_ms: Option<u64>,
    memory_mb: Option<u64>,
    timeout_ms: Option<u64>,
    max_body_bytes: Option<usize>,
    max_instances: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFanout {
    max_calls: Option<u32>,
    max_fanout: Option<u32>,
    max_response_bytes: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKv {
    max_keys: Option<u64>,
    max_key_bytes: Option<u64>,
    max_value_bytes: Option<u64>,
    max_ttl_ms: Option<u64>,
}

/// Bounds on a plugin's `kv` namespace (WIT 0.3), each capped by `[plugins] kv_max_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Live keys at most (default 1024).
    pub max_keys: usize,
    /// Bytes per key (default 256).
    pub max_key_bytes: usize,
    /// Bytes per value (default 4096).
    pub max_value_bytes: usize,
    /// Longest life of an entry; a TTL of 0 or more means this (default one day).
    pub max_ttl: Duration,
}

/// Per-request bounds on an endpoint's upstream calls.
#[derive(Debug, Clone, Copy)]
pub struct FanoutLimits {
    /// Calls in total per request (default 32).
    pub max_calls: u32,
    /// Calls in one `fetch-all` (default 16).
    pub max_fanout: u32,
    /// Response body bytes per call (default 1 MiB).
    pub max_response_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub kind: Kind,
    pub order: i32,
    pub matcher: RouteMatch,
    pub failure: Failure,
    pub body: bool,
    /// Whether an instance may serve more than one call (up to `[plugins]
    /// instance_reuse_calls`). `false` trades throughput for isolation between requests: a
    /// plugin that keeps request data in globals cannot leak it into the next request.
    pub reuse_instance: bool,
    /// Outbound filters: run on the gateway's own responses too (its errors, and inbound
    /// filters' `respond` / `reject`), not only on upstream and endpoint answers. Default
    /// `true`, so a security-headers filter covers a 404 as well.
    pub gateway_responses: bool,
    /// Guest execution budget per call, enforced by epoch interruption.
    pub cpu: Duration,
    pub memory_bytes: usize,
    /// Wall-clock bound per call, including (for endpoints) upstream calls.
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// Live instances of this plugin version at most (`[limits] max_instances`), running or
    /// idle; `None`: only the gateway's pool and memory budget bound them. A call that would
    /// need one more fails at once as `overloaded` (503 `plugin-overloaded`).
    pub max_instances: Option<u32>,
    pub fanout: FanoutLimits,
    pub kv: KvLimits,
    /// The `[config]` table as JSON, handed to the guest by the `config` import.
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// Default limits when a manifest sets none, clamped to the ceilings.
const DEFAULT_CPU_MS: u64 = 10;
/// Room for a JavaScript or Python plugin: a fresh componentize-js instance holds 9.1 MiB of
/// linear memory, a componentize-py one 12.5 MiB (docs/plugins.md, "Limits for JavaScript and
/// Python"), and each grows with what a call allocates. A limit is a cap, not a reservation:
/// a 200 KiB Rust filter still holds 200 KiB (the memory budget charges what is used).
const DEFAULT_MEMORY_MB: u64 = 32;
const DEFAULT_FILTER_TIMEOUT_MS: u64 = 100;
const DEFAULT_ENDPOINT_TIMEOUT_MS: u64 = 2_000;
/// A manifest is configuration, not data: a few KiB in practice.
pub(crate) const MAX_MANIFEST_BYTES: usize = 64 * 1024;

impl Manifest {
    /// Parses and validates a manifest; every problem is listed as `key: reason`.
    pub fn parse(text: &str, ceilings: &config::Plugins) -> Result<Manifest, String> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(format!(
                "manifest is {} bytes, more than {MAX_MANIFEST_BYTES}",
                text.len()
            ));
        }
        let raw: Raw = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        let mut problems = Vec::new();
        let mut check = |key: &str, asked: Option<u64>, default: u64, ceiling: u64| -> u64 {
            match asked {
                Some(0) => {
                    problems.push(format!("limits.{key}: must be greater than 0"));
                    default.min(ceiling)
                }
                Some(v) if v > ceiling => {
                    problems.push(format!(
                        "limits.{key}: {v} exceeds the gateway's ceiling [plugins] max_{key} = {ceiling}"
                    ));
                    ceiling
                }
                Some(v) => v,
                None => default.min(ceiling),
            }
        };
        let cpu_ms = check(
            "cpu_ms",
            raw.limits.cpu_ms,
            DEFAULT_CPU_MS,
            ceilings.max_cpu_ms,
        );
        let memory_mb = check(
            "memory_mb",
            raw.limits.memory_mb,
            DEFAULT_MEMORY_MB,
            ceilings.max_memory_mb,
        );
        let default_timeout = match raw.kind {
            Kind::Endpoint => DEFAULT_ENDPOINT_TIMEOUT_MS,
            _ => DEFAULT_FILTER_TIMEOUT_MS,
        };
        let timeout_ms = check(
            "timeout_ms",
            raw.limits.timeout_ms,
            default_timeout,
            ceilings.max_timeout_ms,
        );
        let max_body_bytes = match raw.limits.max_body_bytes {
            Some(v) if v > ceilings.max_body_bytes => {
                problems.push(format!(
                    "limits.max_body_bytes: {v} exceeds the gateway's ceiling [plugins] max_body_bytes = {}",
                    ceilings.max_body_bytes
                ));
                ceilings.max_body_bytes
            }
            Some(v) => v,
            None => ceilings.max_body_bytes.min(64 * 1024),
        };
        let max_instances = match raw.limits.max_instances {
            Some(0) => {
                problems.push("limits.max_instances: must be at least 1".into());
                None
            }
            Some(v) if v > ceilings.max_instances => {
                problems.push(format!(
                    "limits.max_instances: {v} exceeds the gateway's [plugins] max_instances = {}",
                    ceilings.max_instances
                ));
                None
            }
            v => v,
        };
        if raw.body && raw.kind != Kind::Inbound {
            problems.push("body: only inbound filters take the body (endpoints always do)".into());
        }
        if raw.kind == Kind::Endpoint && raw.order != 0 {
            problems.push("order: endpoints are mounted by routes and have no order".into());
        }
        if let Err(e) = config::validate::route_match(&raw.matcher) {
            problems.push(format!("match: {e}"));
        }
        let fanout = FanoutLimits {
            max_calls: raw.fanout.max_calls.unwrap_or(32).clamp(1, 1024),
            max_fanout: raw.fanout.max_fanout.unwrap_or(16).clamp(1, 256),
            max_response_bytes: raw
                .fanout
                .max_response_bytes
                .unwrap_or(1024 * 1024)
                .min(ceilings.max_body_bytes.max(1024 * 1024)),
        };
        let kv = kv_limits(&raw.kv, ceilings, &mut problems);
        let config = match serde_json::to_value(&raw.config) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                problems.push("config: must be a table".into());
                serde_json::Map::new()
            }
        };
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Manifest {
            kind: raw.kind,
            order: raw.order,
            matcher: raw.matcher,
            failure: raw.failure,
            body: raw.body,
            reuse_instance: raw.reuse_instance,
            gateway_responses: raw.gateway_responses,
            cpu: Duration::from_millis(cpu_ms),
            memory_bytes: (memory_mb as usize) << 20,
            timeout: Duration::from_millis(timeout_ms),
            max_body_bytes,
            max_instances,
            fanout,
            kv,
            config,
        })
    }

    /// The value the guest's `config.get(key)` returns: strings as is, anything else as JSON.
    pub fn config_value(&self, key: &str) -> Option<String> {
        self.config.get(key).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// The `[kv]` table against the gateway's `kv_max_*` ceilings.
fn kv_limits(raw: &RawKv, ceilings: &config::Plugins, problems: &mut Vec<String>) -> KvLimits {
    let mut check = |key: &str, asked: Option<u64>, default: u64, ceiling: u64| -> u64 {
        match asked {
            Some(0) => {
                problems.push(format!("kv.{key}: must be greater than 0"));
                default.min(ceiling)
            }
            Some(v) if v > ceiling => {
                problems.push(format!(
                    "kv.{key}: {v} exceeds the gateway's ceiling [plugins] kv_{key} = {ceiling}"
                ));
                ceiling
            }
            Some(v) => v,
            None => default.min(ceiling),
        }
    };
    let c = ceilings;
    KvLimits {
        max_keys: check("max_keys", raw.max_keys, 1024, c.kv_max_keys.into()) as usize,
        max_key_bytes: check(
            "max_key_bytes",
            raw.max_key_bytes,
            256,
            c.kv_max_key_bytes.into(),
        ) as usize,
        max_value_bytes: check(
            "max_value_bytes",
            raw.max_value_bytes,
            4096,
            c.kv_max_value_bytes.into(),
        ) as usize,
        max_ttl: Duration::from_millis(check(
            "max_ttl_ms",
            raw.max_ttl_ms,
            86_400_000,
            c.kv_max_ttl_ms,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceilings() -> config::Plugins {
        let cfg = config::Config::parse(
            "[[listener]]\nname='l'\nlisten='127.0.0.1:0'\n[plugins]\ndir='p'\n",
            std::path::Path::new("."),
        )
        .expect("config");
        cfg.plugins.expect("plugins")
    }

    #[test]
    fn defaults_and_config_values() {
        let m = Manifest::parse(
            "kind='inbound'\norder=5\n[config]\nname='x'\nn=3\nlist=['a']\n",
            &ceilings(),
        )
        .expect("valid");
        assert_eq!(m.kind, Kind::Inbound);
        assert_eq!(m.failure, Failure::FailClosed);
        assert_eq!(m.cpu, Duration::from_millis(10));
        assert_eq!(m.config_value("name").as_deref(), Some("x"));
        assert_eq!(m.config_value("n").as_deref(), Some("3"));
        assert_eq!(m.config_value("list").as_deref(), Some("[\"a\"]"));
    }

    #[test]
    fn ceilings_and_unknown_keys_are_errors() {
        let e = Manifest::parse("kind='inbound'\n[limits]\ncpu_ms=100000\n", &ceilings())
            .expect_err("over ceiling");
        assert!(
            e.contains("limits.cpu_ms") && e.contains("max_cpu_ms"),
            "{e}"
        );
        let e = Manifest::parse("kind='inbound'\nordr=1\n", &ceilings()).expect_err("typo");
        assert!(e.contains("ordr"), "{e}");
        let e = Manifest::parse("kind='sideways'\n", &ceilings()).expect_err("kind");
        assert!(e.contains("sideways"), "{e}");
    }

    #[test]
    fn max_instances_is_bounded_by_the_pool() {
        let m = Manifest::parse("kind='inbound'\n", &ceilings()).expect("valid");
        assert_eq!(m.max_instances, None, "no cap unless asked");
        assert_eq!(m.memory_bytes, 32 << 20, "room for a JS or Python plugin");
        let m = Manifest::parse("kind='inbound'\n[limits]\nmax_instances=2\n", &ceilings())
            .expect("valid");
        assert_eq!(m.max_instances, Some(2));
        let e = Manifest::parse("kind='inbound'\n[limits]\nmax_instances=0\n", &ceilings())
            .expect_err("zero");
        assert!(
            e.contains("limits.max_instances: must be at least 1"),
            "{e}"
        );
        let e = Manifest::parse(
            "kind='inbound'\n[limits]\nmax_instances=100000\n",
            &ceilings(),
        )
        .expect_err("over the pool");
        assert!(e.contains("[plugins] max_instances = 1000"), "{e}");
    }

    #[test]
    fn kv_limits_default_and_stop_at_the_ceilings() {
        let m = Manifest::parse("kind='inbound'\n", &ceilings()).expect("valid");
        assert_eq!(m.kv.max_keys, 1024);
        assert_eq!(m.kv.max_key_bytes, 256);
        assert_eq!(m.kv.max_value_bytes, 4096);
        assert_eq!(m.kv.max_ttl, Duration::from_secs(86_400));
        let e = Manifest::parse("kind='inbound'\n[kv]\nmax_keys=1000000\n", &ceilings())
            .expect_err("over the ceiling");
        assert!(
            e.contains("kv.max_keys") && e.contains("kv_max_keys = 100000"),
            "{e}"
        );
        let e =
            Manifest::parse("kind='inbound'\n[kv]\nmax_ttl_ms=0\n", &ceilings()).expect_err("zero");
        assert!(e.contains("kv.max_ttl_ms: must be greater than 0"), "{e}");
    }
}
