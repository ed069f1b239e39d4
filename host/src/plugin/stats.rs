//! Per-plugin accounting: calls, traps by kind, CPU time, memory high-water, quarantine, the
//! last error, and the guest's own (bounded) metrics and log lines.
//!
//! Stats belong to a plugin *name*, not a version, so counters survive hot reloads, as
//! Prometheus expects of counters.

use super::api::LogLevel as Level;
use crate::telemetry::histogram::Histogram;
use crate::telemetry::prom::{Kind, Writer};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How a call went wrong. `as_str` is the metric label and, prefixed with `plugin-`, the
/// `portcullis-error` header value under `fail_closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A Wasm trap: `unreachable`, a panic (abort), stack overflow, out-of-bounds access.
    Trap,
    CpuExceeded,
    MemoryExceeded,
    /// The call's wall-clock `timeout_ms` passed (e.g. waiting on upstream calls).
    Timeout,
    /// The plugin returned something the gateway refuses (bad header, oversize output).
    BadOutput,
    /// No instance slot was free (`[plugins] max_instances`).
    Overloaded,
    /// Skipped without a call: the plugin is quarantined after repeated failures.
    Quarantined,
}

pub(super) const FAILURE_KINDS: [FailureKind; 7] = [
    FailureKind::Trap,
    FailureKind::CpuExceeded,
    FailureKind::MemoryExceeded,
    FailureKind::Timeout,
    FailureKind::BadOutput,
    FailureKind::Overloaded,
    FailureKind::Quarantined,
];

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::CpuExceeded => "cpu-exceeded",
            FailureKind::MemoryExceeded => "memory-exceeded",
            FailureKind::Timeout => "timeout",
            FailureKind::BadOutput => "bad-output",
            FailureKind::Overloaded => "overloaded",
            FailureKind::Quarantined => "quarantined",
        }
    }
    /// Whether this failure counts toward quarantine (the plugin's own fault).
    fn counts_for_quarantine(self) -> bool {
        !matches!(self, FailureKind::Overloaded | FailureKind::Quarantined)
    }
}

const MAX_GUEST_METRICS: usize = 64;
const MAX_GUEST_METRIC_NAME: usize = 64;
const MAX_LOG_LINE: usize = 4096;
/// Guest log lines per plugin per second; beyond it lines are dropped and counted.
const GUEST_LOG_RATE: u32 = 100;
/// Trap log lines (with backtrace) per plugin per second.
const TRAP_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Unit-agnostic buckets for guest histograms (the metric name carries the unit).
pub(super) const GUEST_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 10000.0,
];

pub struct PluginStats {
    pub name: String,
    calls: AtomicU64,
    failures: [AtomicU64; FAILURE_KINDS.len()],
    cpu_ns: AtomicU64,
    memory_high_water: AtomicU64,
    consecutive_failures: AtomicU32,
    /// True while `quarantine.strikes != 0`, so that a success need not take the lock to learn
    /// whether there is a backoff to reset (starting a quarantine zeroes `consecutive_failures`).
    backoff_armed: AtomicBool,
    quarantine: Mutex<Quarantine>,
    last_error: Mutex<Option<(SystemTime, String)>>,
    last_trap_log: Mutex<Option<Instant>>,
    log_window: Mutex<(Instant, u32)>,
    logs_dropped: AtomicU64,
    counters: Mutex<BTreeMap<String, u64>>,
    histograms: Mutex<BTreeMap<String, Histogram>>,
    metrics_dropped: AtomicU64,
}

#[derive(Default)]
struct Quarantine {
    until: Option<Instant>,
    /// Quarantines since the last success: the backoff exponent.
    strikes: u32,
    total: u64,
}

/// Quarantine policy from `[plugins]`.
#[derive(Debug, Clone, Copy)]
pub struct QuarantinePolicy {
    pub after: u32,
    pub base: Duration,
    pub max: Duration,
}

impl PluginStats {
    pub fn new(name: &str) -> Self {
        PluginStats {
            name: name.to_string(),
            calls: AtomicU64::new(0),
            failures: Default::default(),
            cpu_ns: AtomicU64::new(0),
            memory_high_water: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            backoff_armed: AtomicBool::new(false),
            quarantine: Mutex::new(Quarantine::default()),
            last_error: Mutex::new(None),
            last_trap_log: Mutex::new(None),
            log_window: Mutex::new((Instant::now(), 0)),
            logs_dropped: AtomicU64::new(0),
            counters: Mutex::new(BTreeMap::new()),
            histograms: Mutex::new(BTreeMap::new()),
            metrics_dropped: AtomicU64::new(0),
        }
    }

    /// `Some(remaining)` while quarantined. After it ends, calls go through again; the next
    /// failure re-quarantines with a doubled backoff, a success clears the backoff.
    pub fn quarantined(&self, now: Instant) -> Option<Duration> {
        let q = self.quarantine.lock();
        q.until.and_then(|u| u.checked_duration_since(now))
    }

    pub fn record_call(&self, cpu: Duration, memory: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.cpu_ns.fetch_add(
            cpu.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        self.memory_high_water
            .fetch_max(memory as u64, Ordering::Relaxed);
    }

    /// Clears the failure streak and the quarantine backoff (docs/plugins.md: "A success resets
    /// the backoff"), also right after a quarantine, when the streak counter is already 0.
    pub fn record_success(&self) {
        let streak = self.consecutive_failures.swap(0, Ordering::Relaxed) != 0;
        if streak || self.backoff_armed.load(Ordering::Relaxed) {
            let mut q = self.quarantine.lock();
            q.strikes = 0;
            self.backoff_armed.store(false, Ordering::Relaxed);
        }
    }

    /// Counts a failure; returns true if it just put the plugin in quarantine.
    pub fn record_failure(
        &self,
        kind: FailureKind,
        detail: &str,
        policy: &QuarantinePolicy,
    ) -> bool {
        if let Some(i) = FAILURE_KINDS.iter().position(|k| *k == kind) {
            self.failures[i].fetch_add(1, Ordering::Relaxed);
        }
        *self.last_error.lock() = Some((SystemTime::now(), truncate(detail, 1024)));
        if !kind.counts_for_quarantine() {
            return false;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < policy.after.max(1) {
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let mut q = self.quarantine.lock();
        let backoff = policy
            .base
            .saturating_mul(1u32 << q.strikes.min(16))
            .min(policy.max);
        q.until = Some(Instant::now() + backoff);
        q.strikes = q.strikes.saturating_add(1);
        self.backoff_armed.store(true, Ordering::Relaxed);
        q.total += 1;
        tracing::warn!(plugin = %self.name, backoff_ms = backoff.as_millis() as u64, "plugin quarantined after repeated failures");
        true
    }

    /// Logs a trap with its Wasm backtrace, at most once per second per plugin.
    pub fn log_trap(&self, kind: FailureKind, err: &wasmtime::Error) {
        let now = Instant::now();
        {
            let mut last = self.last_trap_log.lock();
            if last.is_some_and(|l| now.duration_since(l) < TRAP_LOG_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        tracing::warn!(plugin = %self.name, kind = kind.as_str(), error = %format!("{err:?}"), "plugin call failed");
    }

    pub fn set_last_error(&self, msg: &str) {
        *self.last_error.lock() = Some((SystemTime::now(), truncate(msg, 1024)));
    }

    fn log_allowed(&self) -> bool {
        let mut w = self.log_window.lock();
        let now = Instant::now();
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        if w.1 >= GUEST_LOG_RATE {
            self.logs_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        w.1 += 1;
        true
    }

    pub fn guest_log(&self, level: Level, message: &str) {
        if !self.log_allowed() {
            return;
        }
        let msg = truncate(message, MAX_LOG_LINE);
        let plugin = self.name.as_str();
        match level {
            Level::Trace => tracing::trace!(plugin, "{msg}"),
            Level::Debug => tracing::debug!(plugin, "{msg}"),
            Level::Info => tracing::info!(plugin, "{msg}"),
            Level::Warn => tracing::warn!(plugin, "{msg}"),
            Level::Error => tracing::error!(plugin, "{msg}"),
        }
    }

    /// Guest stdout/stderr after a call, logged line by line under the same rate limit.
    pub fn guest_output(&self, stream: &'static str, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        for line in String::from_utf8_lossy(bytes).lines() {
            if !self.log_allowed() {
                return;
            }
            tracing::info!(plugin = %self.name, stream, "{}", truncate(line, MAX_LOG_LINE));
        }
    }

    fn metric_name_ok(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_GUEST_METRIC_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    }

    pub fn guest_counter(&self, name: &str, value: u64) {
        let mut c = self.counters.lock();
        if let Some(v) = c.get_mut(name) {
            *v = v.saturating_add(value);
            return;
        }
        if c.len() >= MAX_GUEST_METRICS || !Self::metric_name_ok(name) {
            self.metrics_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        c.insert(name.to_string(), value);
    }

    pub fn guest_histogram(&self, name: &str, value: f64) {
        if !value.is_finite() || value < 0.0 {
            self.metrics_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let d = Duration::from_secs_f64(value.min(1e9));
        let mut h = self.histograms.lock();
        if let Some(x) = h.get(name) {
            x.observe(d);
            return;
        }
        if h.len() >= MAX_GUEST_METRICS || !Self::metric_name_ok(name) {
            self.metrics_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let x = Histogram::new(GUEST_BUCKETS);
        x.observe(d);
        h.insert(name.to_string(), x);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let q = self.quarantine.lock();
        let now = Instant::now();
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            failures: FAILURE_KINDS
                .iter()
                .zip(&self.failures)
                .map(|(k, c)| (k.as_str(), c.load(Ordering::Relaxed)))
                .collect(),
            cpu_seconds: self.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9,
            memory_high_water_bytes: self.memory_high_water.load(Ordering::Relaxed),
            quarantined_for_ms: q
                .until
                .and_then(|u| u.checked_duration_since(now))
                .map(|d| d.as_millis() as u64),
            quarantines: q.total,
            last_error: self.last_error.lock().as_ref().map(|(at, e)| LastError {
                at_unix_ms: at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                error: e.clone(),
            }),
        }
    }
}

/// Writes the per-plugin families one family at a time across all of `all`, so that every
/// family's samples sit together under its header (rendering plugin by plugin would interleave
/// them).
pub(crate) fn render_all(all: &[&PluginStats], w: &mut Writer) {
    let snaps: Vec<(&str, StatsSnapshot)> = all
        .iter()
        .map(|s| (s.name.as_str(), s.snapshot()))
        .collect();
    let mut f = w.family(
        "portcullis_plugin_calls_total",
        "Plugin calls.",
        Kind::Counter,
    );
    for (n, s) in &snaps {
        f.sample(&[("plugin", n)], s.calls);
    }
    let mut f = w.family(
        "portcullis_plugin_failures_total",
        "Failed plugin calls by kind (trap, cpu-exceeded, memory-exceeded, timeout, bad-output, overloaded, quarantined).",
        Kind::Counter,
    );
    for (n, s) in &snaps {
        for (k, v) in &s.failures {
            f.sample(&[("plugin", n), ("kind", k)], *v);
        }
    }
    let mut f = w.family(
        "portcullis_plugin_cpu_seconds_total",
        "Time spent executing guest code.",
        Kind::Counter,
    );
    for (n, s) in &snaps {
        f.sample(&[("plugin", n)], s.cpu_seconds);
    }
    let mut f = w.family(
        "portcullis_plugin_memory_high_water_bytes",
        "Largest linear memory of any instance.",
        Kind::Gauge,
    );
    for (n, s) in &snaps {
        f.sample(&[("plugin", n)], s.memory_high_water_bytes);
    }
    let mut f = w.family(
        "portcullis_plugin_quarantined",
        "1 while the plugin is quarantined.",
        Kind::Gauge,
    );
    for (n, s) in &snaps {
        f.sample(&[("plugin", n)], s.quarantined_for_ms.is_some());
    }
    let mut f = w.family(
        "portcullis_plugin_guest_logs_dropped_total",
        "Guest log lines dropped by the per-plugin rate limit.",
        Kind::Counter,
    );
    for s in all {
        f.sample(
            &[("plugin", &s.name)],
            s.logs_dropped.load(Ordering::Relaxed),
        );
    }
    let mut f = w.family(
        "portcullis_plugin_guest_metrics_dropped_total",
        "Guest metric updates dropped: bad name, negative or non-finite value, or over the per-plugin limit.",
        Kind::Counter,
    );
    for s in all {
        f.sample(
            &[("plugin", &s.name)],
            s.metrics_dropped.load(Ordering::Relaxed),
        );
    }
    let mut f = w.family(
        "portcullis_plugin_guest_counter_total",
        "Counters a plugin adds to, by plugin and name.",
        Kind::Counter,
    );
    for s in all {
        for (name, v) in s.counters.lock().iter() {
            f.sample(&[("plugin", &s.name), ("name", name)], *v);
        }
    }
    let mut f = w.family(
        "portcullis_plugin_guest_histogram",
        "Values a plugin observes, by plugin and name (the name carries the unit).",
        Kind::Histogram,
    );
    for s in all {
        for (name, h) in s.histograms.lock().iter() {
            f.histogram(&[("plugin", &s.name), ("name", name)], h);
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    pub calls: u64,
    pub failures: BTreeMap<&'static str, u64>,
    pub cpu_seconds: f64,
    pub memory_high_water_bytes: u64,
    pub quarantined_for_ms: Option<u64>,
    pub quarantines: u64,
    pub last_error: Option<LastError>,
}

#[derive(Debug, Serialize)]
pub struct LastError {
    pub at_unix_ms: u64,
    pub error: String,
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> QuarantinePolicy {
        QuarantinePolicy {
            after: 2,
            base: Duration::from_secs(10),
            max: Duration::from_secs(25),
        }
    }

    /// Fails `after` times in a row and returns the quarantine that this started.
    fn quarantine(s: &PluginStats, pol: &QuarantinePolicy) -> Duration {
        for _ in 1..pol.after {
            assert!(!s.record_failure(FailureKind::Trap, "x", pol));
        }
        assert!(s.record_failure(FailureKind::Trap, "x", pol));
        s.quarantined(Instant::now()).expect("quarantined")
    }

    fn near(d: Duration, secs: u64) -> bool {
        d <= Duration::from_secs(secs) && d > Duration::from_secs(secs) - Duration::from_secs(1)
    }

    #[test]
    fn quarantine_after_n_failures_with_doubling_backoff_capped_at_max() {
        let s = PluginStats::new("p");
        let pol = policy();
        let first = quarantine(&s, &pol);
        assert!(near(first, 10), "base: {first:?}");
        assert!(!s.record_failure(FailureKind::Trap, "x", &pol));
        assert!(s.record_failure(FailureKind::CpuExceeded, "x", &pol));
        let second = s.quarantined(Instant::now()).expect("quarantined");
        assert!(near(second, 20), "doubled: {second:?}");
        // 40 s, capped at quarantine_max (25 s), and it stays there.
        let third = quarantine(&s, &pol);
        assert!(near(third, 25), "capped: {third:?}");
        let fourth = quarantine(&s, &pol);
        assert!(near(fourth, 25), "still capped: {fourth:?}");
        // Overload is not the plugin's fault.
        for _ in 0..10 {
            assert!(!s.record_failure(FailureKind::Overloaded, "x", &pol));
        }
        assert_eq!(s.snapshot().quarantines, 4);
    }

    #[test]
    fn a_success_right_after_a_quarantine_resets_the_backoff() {
        let s = PluginStats::new("p");
        let pol = policy();
        assert!(near(quarantine(&s, &pol), 10));
        assert!(near(quarantine(&s, &pol), 20));
        // The quarantine zeroed the failure streak; the success must still clear the backoff.
        s.record_success();
        let after = quarantine(&s, &pol);
        assert!(near(after, 10), "back to base after a success: {after:?}");
        // A success in the middle of a streak resets it: `after` fresh failures are needed.
        assert!(!s.record_failure(FailureKind::Trap, "x", &pol));
        s.record_success();
        assert!(!s.record_failure(FailureKind::Trap, "x", &pol));
        assert!(s.record_failure(FailureKind::Trap, "x", &pol));
        let again = s.quarantined(Instant::now()).expect("quarantined");
        assert!(near(again, 10), "{again:?}");
        assert_eq!(s.snapshot().quarantines, 4);
    }

    #[test]
    fn guest_metrics_are_bounded() {
        let s = PluginStats::new("p");
        for i in 0..100 {
            s.guest_counter(&format!("c{i}"), 1);
        }
        s.guest_counter("bad name\"}", 1);
        let mut out = String::new();
        render_all(&[&s], &mut Writer::new(&mut out));
        assert_eq!(
            out.matches("\nportcullis_plugin_guest_counter_total{")
                .count(),
            64
        );
        assert!(out.contains("portcullis_plugin_guest_metrics_dropped_total{plugin=\"p\"} 37"));
    }
}
