//! The access log: one JSON object a line per finished request, made from its passport.
//!
//! Why a queue and a writer thread: a request must never wait on a disk. [`AccessLog::record`]
//! moves what the request already owns (its URI, method, request id, route and cluster names
//! as `Arc<str>`, the plugins that acted) into a fixed [`Entry`] and `try_send`s it into a
//! bounded channel: no formatting and no allocation on the request path, and a full queue
//! drops the line and counts it (`portcullis_access_log_dropped_total`) instead of blocking.
//!
//! The writer thread polls the queue (every few milliseconds, so a sender never has to wake
//! it with a syscall), serializes each entry with `serde_json` into one buffer, and writes the
//! buffer when it reaches 64 KiB, when its oldest line is `flush_ms` old, or when asked to
//! (shutdown). Write errors are counted and logged at most every 10 s; nothing panics.
//!
//! `path = "-"` is stdout. A file is opened for appending, created `0640`; [`AccessLog::reopen`]
//! (SIGUSR1, see `gateway`) opens the path again after logrotate moved the old file away.
//! Successes (no `error`, status below 400) can be sampled with `sample_successes`; every
//! other request is always logged.

use super::prom::{Kind, Writer};
use super::{Finished, TunnelStats};
use crate::config;
use smallvec::SmallVec;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The buffer is written out when it grows past this.
const FLUSH_BYTES: usize = 64 * 1024;
/// How often the writer looks at the queue when it is idle.
const POLL: Duration = Duration::from_millis(5);
/// One finished request waiting to be written: moved out of the request, not formatted.
pub(crate) struct Entry {
    /// When the request head arrived (wall clock).
    time: SystemTime,
    request_id: Option<http::HeaderValue>,
    client: SocketAddr,
    protocol: &'static str,
    method: http::Method,
    uri: http::Uri,
    status: u16,
    route: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    endpoint: Option<Arc<str>>,
    attempts: u32,
    bytes_in: u64,
    bytes_out: u64,
    total_us: u64,
    overhead_us: u64,
    plugins: SmallVec<[Arc<str>; 2]>,
    error: Option<&'static str>,
    tunnel: Option<Box<TunnelStats>>,
}

/// The JSON line as serde would write it: the reference the hand-written encoder
/// ([`Scribe::encode`]) is tested against, field for field.
#[cfg(test)]
#[derive(serde::Serialize)]
struct Line<'a> {
    time: &'a str,
    request_id: Option<&'a str>,
    client: &'a str,
    protocol: &'static str,
    method: &'a str,
    path: &'a str,
    status: u16,
    route: Option<&'a str>,
    cluster: Option<&'a str>,
    endpoint: Option<&'a str>,
    attempts: u32,
    bytes_in: u64,
    bytes_out: u64,
    total_us: u64,
    overhead_us: u64,
    plugins: SmallVec<[&'a str; 2]>,
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel_bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel_bytes_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel_end: Option<&'static str>,
}

/// Counters shared by the request path, the writer and `/metrics`, and the writer's flags.
#[derive(Debug, Default)]
struct Shared {
    lines: AtomicU64,
    dropped: AtomicU64,
    sampled_out: AtomicU64,
    write_errors: AtomicU64,
    reopens: AtomicU64,
    reopen: AtomicBool,
    flush: super::flush::FlushTickets,
}

/// The gateway's access log. Dropping it lets the writer write what is queued and stop.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Entry>,
    shared: Arc<Shared>,
    sample: f64,
    writer: std::thread::Thread,
}

impl AccessLog {
    /// Opens the target and starts the writer thread.
    pub fn start(cfg: &config::AccessLog) -> std::io::Result<AccessLog> {
        let sink = Sink::open(&cfg.path)?;
        let (tx, rx) = sync_channel(cfg.queue.max(1));
        let shared = Arc::new(Shared::default());
        let flush_every = Duration::from_millis(cfg.flush_ms.max(1));
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("portcullis-access-log".into())
            .spawn(move || Scribe::new(rx, sink, s, flush_every).run())?;
        Ok(AccessLog {
            tx,
            shared,
            sample: cfg.sample_successes.clamp(0.0, 1.0),
            writer: handle.thread().clone(),
        })
    }

    /// Queues a finished request's line, unless it is a sampled-out success or the queue is
    /// full (then it is counted as dropped). Never blocks.
    pub(crate) fn record(&self, mut f: Finished, total: Duration, overhead: Duration) {
        let error = f.passport.error;
        let success = error.is_none() && f.status < 400;
        if success && self.sample < 1.0 && fastrand::f64() >= self.sample {
            self.shared.sampled_out.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = SystemTime::now();
        let time = now.checked_sub(f.passport.start().elapsed()).unwrap_or(now);
        let entry = Entry {
            time,
            request_id: f.request_id,
            client: f.client,
            protocol: f.protocol,
            method: f.method,
            uri: f.uri,
            status: f.status,
            route: f.route_name,
            cluster: f.cluster,
            endpoint: f.endpoint,
            attempts: f.attempts,
            bytes_in: f.bytes_in,
            bytes_out: f.bytes_out,
            total_us: total.as_micros() as u64,
            overhead_us: overhead.as_micros() as u64,
            plugins: std::mem::take(&mut f.passport.plugins),
            error,
            tunnel: f.tunnel,
        };
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Asks the writer to open its file again (after logrotate renamed it). Returns at once;
    /// the writer reopens within a few milliseconds, writing what it holds to the old file
    /// first. Stdout is not reopened.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        self.writer.unpark();
    }

    /// Waits (at most `within`) until every line queued before this call is written out.
    pub async fn flush(&self, within: Duration) -> bool {
        self.shared.flush.flush(&self.writer, within).await
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.shared.lines.load(Ordering::Relaxed)
    }

    pub(crate) fn render(&self, w: &mut Writer) {
        let s = &self.shared;
        let families: [(&'static str, &str, &AtomicU64); 5] = [
            (
                "portcullis_access_log_lines_total",
                "Access log lines written.",
                &s.lines,
            ),
            (
                "portcullis_access_log_dropped_total",
                "Access log lines dropped because the queue to the writer was full.",
                &s.dropped,
            ),
            (
                "portcullis_access_log_sampled_out_total",
                "Successful requests not logged because of `sample_successes`.",
                &s.sampled_out,
            ),
            (
                "portcullis_access_log_write_errors_total",
                "Failed writes to the access log (the lines in them are lost).",
                &s.write_errors,
            ),
            (
                "portcullis_access_log_reopens_total",
                "Times the access log file was reopened (SIGUSR1).",
                &s.reopens,
            ),
        ];
        for (name, help, c) in families {
            w.family(name, help, Kind::Counter)
                .sample(&[], c.load(Ordering::Relaxed));
        }
    }
}

/// Where lines go.
enum Sink {
    Stdout,
    File { path: PathBuf, file: std::fs::File },
}

impl Sink {
    fn open(path: &Path) -> std::io::Result<Sink> {
        if path == Path::new("-") {
            return Ok(Sink::Stdout);
        }
        Ok(Sink::File {
            path: path.to_path_buf(),
            file: open_append(path)?,
        })
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Sink::File { file, .. } => file.write_all(buf),
        }
    }
}

/// Opens `path` for appending, creating it `0640`.
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// The writer thread's state.
struct Scribe {
    rx: Receiver<Entry>,
    sink: Sink,
    shared: Arc<Shared>,
    flush_every: Duration,
    buf: Vec<u8>,
    /// Lines in `buf`, and when the oldest of them was queued into it.
    pending: u64,
    oldest: Option<Instant>,
    /// Scratch for the time and client strings.
    clock: Clock,
    client: String,
    warnings: super::flush::LossWarnings,
}

impl Scribe {
    fn new(rx: Receiver<Entry>, sink: Sink, shared: Arc<Shared>, flush_every: Duration) -> Self {
        Scribe {
            rx,
            sink,
            shared,
            flush_every,
            buf: Vec::with_capacity(FLUSH_BYTES + 4096),
            pending: 0,
            oldest: None,
            clock: Clock::default(),
            client: String::with_capacity(48),
            warnings: Default::default(),
        }
    }

    fn run(mut self) {
        loop {
            let (asked, flushing) = self.shared.flush.pending();
            let (drained, gone) = self.drain();
            let due = self.oldest.is_some_and(|t| t.elapsed() >= self.flush_every);
            if due || flushing || gone {
                self.write_out();
            }
            if self.shared.reopen.swap(false, Ordering::AcqRel) {
                self.write_out();
                self.reopen();
            }
            if flushing {
                self.shared.flush.served(asked);
            }
            self.warn_if_needed();
            if gone {
                return;
            }
            // A busy queue is drained again at once; an idle one is looked at every `POLL`
            // (or sooner when `reopen` or `flush` unparks the thread).
            if drained < 256 {
                std::thread::park_timeout(POLL);
            }
        }
    }

    /// Encodes what is queued now; `true` when every sender is gone.
    fn drain(&mut self) -> (usize, bool) {
        let mut n = 0;
        loop {
            match self.rx.try_recv() {
                Ok(e) => {
                    self.encode(&e);
                    n += 1;
                    if self.buf.len() >= FLUSH_BYTES {
                        self.write_out();
                    }
                }
                Err(TryRecvError::Empty) => return (n, false),
                Err(TryRecvError::Disconnected) => return (n, true),
            }
        }
    }

    /// Appends one JSON line. Written by hand rather than through serde: serde's string
    /// escaping and `fmt` machinery were most of the writer thread's time (perf: 1.2 % +
    /// 0.5 % of the whole process at ~30k req/s, the thread 5.4 %), and this thread shares
    /// the gateway's cores. `Line` (tests) holds it to serde's output.
    fn encode(&mut self, e: &Entry) {
        Self::line_of(&mut self.buf, &mut self.clock, &mut self.client, e);
        self.pending += 1;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// One entry as a JSON line, appended to `b` (`client` is scratch for IPv6).
    fn line_of(b: &mut Vec<u8>, clock: &mut Clock, client: &mut String, e: &Entry) {
        use json::{key, num, opt_num, opt_str, str};
        let request_id = e
            .request_id
            .as_ref()
            .map(|v| v.to_str().unwrap_or("(not visible ASCII)"));
        // The time and the address need no escaping: written straight into the line.
        b.extend_from_slice(b"{\"time\":\"");
        clock.write(e.time, b);
        b.push(b'"');
        key(b, "request_id");
        opt_str(b, request_id);
        key(b, "client");
        b.push(b'"');
        ip(e.client.ip(), b, client);
        b.push(b'"');
        key(b, "protocol");
        str(b, e.protocol);
        key(b, "method");
        str(b, e.method.as_str());
        key(b, "path");
        str(b, e.uri.path());
        key(b, "status");
        num(b, u64::from(e.status));
        key(b, "route");
        opt_str(b, e.route.as_deref());
        key(b, "cluster");
        opt_str(b, e.cluster.as_deref());
        key(b, "endpoint");
        opt_str(b, e.endpoint.as_deref());
        for (k, v) in [
            ("attempts", u64::from(e.attempts)),
            ("bytes_in", e.bytes_in),
            ("bytes_out", e.bytes_out),
            ("total_us", e.total_us),
            ("overhead_us", e.overhead_us),
        ] {
            key(b, k);
            num(b, v);
        }
        key(b, "plugins");
        b.push(b'[');
        for (i, p) in e.plugins.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            str(b, p);
        }
        b.push(b']');
        key(b, "error");
        opt_str(b, e.error);
        if let Some(t) = e.tunnel.as_deref() {
            key(b, "tunnel_us");
            opt_num(b, Some(t.lived.as_micros() as u64));
            key(b, "tunnel_bytes_in");
            num(b, t.bytes_in);
            key(b, "tunnel_bytes_out");
            num(b, t.bytes_out);
            key(b, "tunnel_end");
            str(b, t.end);
        }
        b.extend_from_slice(b"}\n");
    }

    /// Writes the buffer out; on error its lines are lost and counted.
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.sink.write(&self.buf) {
            Ok(()) => {
                self.shared.lines.fetch_add(self.pending, Ordering::Relaxed);
            }
            Err(e) => {
                self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                let lines = self.pending;
                let errors = self.shared.write_errors.load(Ordering::Relaxed);
                self.warnings.failure(
                    errors,
                    || tracing::warn!(error = %e, lines, "access log write failed"),
                );
            }
        }
        self.buf.clear();
        self.pending = 0;
        self.oldest = None;
    }

    fn reopen(&mut self) {
        let Sink::File { path, file } = &mut self.sink else {
            return;
        };
        match open_append(path) {
            Ok(f) => {
                *file = f;
                self.shared.reopens.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %path.display(), "access log reopened");
            }
            Err(e) => {
                self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                // Keep writing to the old file rather than losing lines.
                tracing::warn!(path = %path.display(), error = %e, "access log reopen failed; still writing to the old file");
            }
        }
    }

    /// Warns about new drops and write errors, at most every `WARN_EVERY`.
    fn warn_if_needed(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        let errors = self.shared.write_errors.load(Ordering::Relaxed);
        if let Some((dropped, write_errors)) = self.warnings.losses(dropped, errors) {
            tracing::warn!(
                dropped,
                write_errors,
                "access log lines lost since the last warning (queue full or write failed)"
            );
        }
    }
}

/// RFC 3339 UTC with microseconds: `2024-05-01T12:34:56.123456Z`.
fn rfc3339(t: SystemTime, out: &mut String) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    // Fixed widths, written digit by digit: `write!` cost more than the rest of the line.
    let fields: [(u64, usize, char); 7] = [
        (y.clamp(0, 9999) as u64, 4, '-'),
        (u64::from(m), 2, '-'),
        (u64::from(day), 2, 'T'),
        (s / 3600, 2, ':'),
        (s / 60 % 60, 2, ':'),
        (s % 60, 2, '.'),
        (u64::from(d.subsec_micros()), 6, 'Z'),
    ];
    for (v, width, then) in fields {
        let mut v = v;
        let mut buf = [b'0'; 6];
        for i in (0..width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend(buf[..width].iter().map(|&c| char::from(c)));
        out.push(then);
    }
}

/// An IP address as `Display` writes it; IPv4 (the common case) without `fmt`.
fn ip(a: std::net::IpAddr, b: &mut Vec<u8>, scratch: &mut String) {
    match a {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    b.push(b'.');
                }
                json::num(b, u64::from(*o));
            }
        }
        std::net::IpAddr::V6(v6) => {
            scratch.clear();
            let _ = write!(scratch, "{v6}");
            b.extend_from_slice(scratch.as_bytes());
        }
    }
}

/// The formatted second of the last line: consecutive lines nearly always share it, so the
/// calendar arithmetic runs once a second, not once a line.
#[derive(Default)]
struct Clock {
    sec: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS.`
    prefix: String,
}

impl Clock {
    fn write(&mut self, t: SystemTime, b: &mut Vec<u8>) {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.sec != Some(d.as_secs()) {
            self.prefix.clear();
            rfc3339(
                UNIX_EPOCH + Duration::from_secs(d.as_secs()),
                &mut self.prefix,
            );
            self.prefix.truncate(20);
            self.sec = Some(d.as_secs());
        }
        b.extend_from_slice(self.prefix.as_bytes());
        let mut us = d.subsec_micros();
        let mut digits = [b'0'; 6];
        for c in digits.iter_mut().rev() {
            *c = b'0' + (us % 10) as u8;
            us /= 10;
        }
        b.extend_from_slice(&digits);
        b.push(b'Z');
    }
}

/// The few JSON pieces a line is made of.
mod json {
    /// `,"k":` — keys are static names that need no escaping.
    pub(super) fn key(b: &mut Vec<u8>, k: &str) {
        b.extend_from_slice(b",\"");
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(b"\":");
    }

    /// A JSON string, escaped as serde_json escapes: `"`, `\\`, and control characters
    /// (`\n`, `\t`, … or `\u00XX`); everything else, UTF-8 included, as is.
    pub(super) fn str(b: &mut Vec<u8>, s: &str) {
        b.push(b'"');
        let bytes = s.as_bytes();
        let mut from = 0;
        for (i, &c) in bytes.iter().enumerate() {
            let esc: &[u8] = match c {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => {
                    b.extend_from_slice(&bytes[from..i]);
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    b.extend_from_slice(b"\\u00");
                    b.push(HEX[usize::from(c >> 4)]);
                    b.push(HEX[usize::from(c & 0xf)]);
                    from = i + 1;
                    continue;
                }
                _ => continue,
            };
            b.extend_from_slice(&bytes[from..i]);
            b.extend_from_slice(esc);
            from = i + 1;
        }
        b.extend_from_slice(&bytes[from..]);
        b.push(b'"');
    }

    pub(super) fn opt_str(b: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => str(b, s),
            None => b.extend_from_slice(b"null"),
        }
    }

    /// Decimal digits of `v`, in `buf`.
    pub(super) fn itoa(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        &buf[i..]
    }

    pub(super) fn num(b: &mut Vec<u8>, v: u64) {
        let mut buf = [0u8; 20];
        b.extend_from_slice(itoa(v, &mut buf));
    }

    pub(super) fn opt_num(b: &mut Vec<u8>, v: Option<u64>) {
        match v {
            Some(v) => num(b, v),
            None => b.extend_from_slice(b"null"),
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u32) -> String {
        let mut s = String::new();
        rfc3339(
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into()),
            &mut s,
        );
        s
    }

    #[test]
    fn times_are_rfc3339_utc_with_microseconds() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_709_251_199, 999_999), "2024-02-29T23:59:59.999999Z");
        assert_eq!(at(1_735_689_600, 0), "2025-01-01T00:00:00.000000Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
    }

    fn finished(status: u16, error: Option<&'static str>) -> Finished {
        let mut passport = crate::core::passport::Passport::new(Instant::now());
        passport.error = error;
        Finished {
            passport,
            route: None,
            route_name: None,
            cluster: None,
            endpoint: None,
            status,
            method: http::Method::GET,
            uri: http::Uri::from_static("/x"),
            request_id: None,
            protocol: "http/1.1",
            client: SocketAddr::from(([127, 0, 0, 1], 1)),
            attempts: 0,
            bytes_in: 0,
            bytes_out: 0,
            tunnel: None,
        }
    }

    /// A log whose writer never drains: the queue stays as `record` leaves it.
    fn stalled(queue: usize, sample: f64) -> (AccessLog, Receiver<Entry>) {
        let (tx, rx) = sync_channel(queue);
        let log = AccessLog {
            tx,
            shared: Arc::default(),
            sample,
            writer: std::thread::current(),
        };
        (log, rx)
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (log, rx) = stalled(2, 1.0);
        for _ in 0..5 {
            log.record(finished(200, None), Duration::ZERO, Duration::ZERO);
        }
        assert_eq!(log.shared.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_iter().count(), 2);
        drop(rx);
        log.record(finished(200, None), Duration::ZERO, Duration::ZERO);
        assert_eq!(log.shared.dropped.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn sampling_skips_only_successes() {
        let (log, rx) = stalled(16, 0.0);
        log.record(finished(200, None), Duration::ZERO, Duration::ZERO);
        log.record(finished(302, None), Duration::ZERO, Duration::ZERO);
        log.record(finished(404, None), Duration::ZERO, Duration::ZERO);
        log.record(finished(503, None), Duration::ZERO, Duration::ZERO);
        log.record(
            finished(200, Some("upstream-reset")),
            Duration::ZERO,
            Duration::ZERO,
        );
        let kept: Vec<u16> = rx.try_iter().map(|e| e.status).collect();
        assert_eq!(kept, [404, 503, 200]);
        assert_eq!(log.shared.sampled_out.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_entry_stays_small() {
        // Every queue slot holds one: `queue` × this is the queue's memory (measured 368
        // bytes: 3 MiB for the default 8192). Boxing would shrink it to a pointer at the cost
        // of an allocation per request.
        let size = std::mem::size_of::<Entry>();
        eprintln!("access_log::Entry: {size} bytes");
        assert!(size <= 384, "Entry is {size} bytes");
    }

    /// What serde_json writes for `e`: the reference for the hand-written encoder.
    fn serde_line(e: &Entry) -> String {
        let (mut time, client) = (String::new(), e.client.ip().to_string());
        rfc3339(e.time, &mut time);
        let t = e.tunnel.as_deref();
        let line = Line {
            time: &time,
            request_id: e
                .request_id
                .as_ref()
                .map(|v| v.to_str().unwrap_or("(not visible ASCII)")),
            client: &client,
            protocol: e.protocol,
            method: e.method.as_str(),
            path: e.uri.path(),
            status: e.status,
            route: e.route.as_deref(),
            cluster: e.cluster.as_deref(),
            endpoint: e.endpoint.as_deref(),
            attempts: e.attempts,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            total_us: e.total_us,
            overhead_us: e.overhead_us,
            plugins: e.plugins.iter().map(|p| &**p).collect(),
            error: e.error,
            tunnel_us: t.map(|t| t.lived.as_micros() as u64),
            tunnel_bytes_in: t.map(|t| t.bytes_in),
            tunnel_bytes_out: t.map(|t| t.bytes_out),
            tunnel_end: t.map(|t| t.end),
        };
        serde_json::to_string(&line).unwrap() + "\n"
    }

    #[test]
    fn the_hand_written_line_is_what_serde_writes() {
        let nasty = [
            "plain",
            "",
            "q\"uote",
            "back\\slash",
            "ctl\u{1}\u{1f}\n\r\t\u{8}\u{c}",
            "ünï©ødé ✓",
            "\u{7f}</script>",
        ];
        let clients: [SocketAddr; 3] = [
            ([127, 0, 0, 1], 9).into(),
            ([10, 200, 3, 255], 1).into(),
            "[2001:db8::1]:443".parse().unwrap(),
        ];
        let mut n = 0u64;
        for (i, s) in nasty.iter().enumerate() {
            for (j, client) in clients.iter().enumerate() {
                n += 1;
                let arc = |x: &str| Some(Arc::<str>::from(x));
                let e = Entry {
                    time: UNIX_EPOCH + Duration::from_micros(1_764_600_000_123_456 + n * 7_777_777),
                    request_id: http::HeaderValue::from_str(&format!("id-{i}")).ok(),
                    client: *client,
                    protocol: ["http/1.1", "h2", "h3"][j],
                    method: http::Method::from_bytes(if i % 2 == 0 { b"GET" } else { b"PURGE" })
                        .unwrap(),
                    uri: format!("/p/{}", i).parse().unwrap(),
                    status: [200, 404, 502][j],
                    route: arc(s),
                    cluster: if j == 1 { None } else { arc(s) },
                    endpoint: if j == 2 { None } else { arc("127.0.0.1:8080") },
                    attempts: j as u32,
                    bytes_in: n * 1000,
                    bytes_out: u64::MAX - n,
                    total_us: n,
                    overhead_us: 0,
                    plugins: if j == 0 {
                        SmallVec::new()
                    } else {
                        [Arc::from(*s), Arc::from("auth")].into_iter().collect()
                    },
                    error: if j == 2 { Some("upstream-reset") } else { None },
                    tunnel: (j == 1).then(|| {
                        Box::new(TunnelStats {
                            lived: Duration::from_micros(n),
                            bytes_in: 1,
                            bytes_out: 2,
                            end: "closed",
                        })
                    }),
                };
                let (mut b, mut clock, mut c) = (Vec::new(), Clock::default(), String::new());
                Scribe::line_of(&mut b, &mut clock, &mut c, &e);
                // Twice: the second line takes the cached second.
                let first = b.len();
                Scribe::line_of(&mut b, &mut clock, &mut c, &e);
                assert_eq!(b[..first], b[first..]);
                b.truncate(first);
                assert_eq!(
                    String::from_utf8(b).unwrap(),
                    serde_line(&e),
                    "entry {i}/{j}"
                );
            }
        }
    }
}
