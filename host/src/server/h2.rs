//! HTTP/2 client connections: the bounds hyper and h2 do not set themselves, and the one
//! place their errors are classified for `portcullis_h2_connection_errors_total{reason}`.
//!
//! What hyper 1 / h2 0.4 already bound (configured in `server::builder`, from the first frame:
//! h2's server applies `max_header_list_size` before the client acknowledges it, measured in
//! `tests/tests/h2_abuse.rs`): CONTINUATION frames per header block (about
//! `max_header_list_size / 16 KiB × 1.25`, at least 5; GOAWAY `ENHANCE_YOUR_CALM`), a decoded
//! header list past `max_header_list_size` (431 + reset; past 4× it, GOAWAY
//! `ENHANCE_YOUR_CALM`), streams reset before they were accepted
//! (`max_pending_accept_reset_streams`) or for the client's errors
//! (`max_local_error_reset_streams`), concurrent streams, and queued PONGs and SETTINGS ACKs
//! (one at a time: h2 stops reading while one cannot be written).
//!
//! What they leave open, bounded here and in `server::io`:
//! - the number of header fields: an HPACK block of one-byte references to one small indexed
//!   field stays under the size limit with thousands of fields. [`too_many_headers`] answers
//!   431 past `max_headers`, as our HTTP/1.1 codec does.
//! - a stream whose client never opens its flow-control window is never polled again by
//!   hyper: it would hold its upstream connection for as long as the upstream waits.
//!   [`StreamExec`] runs every stream under a watchdog that resets it once its response made
//!   no progress for `client_write_idle_ms` ([`StallBody`] tells the watchdog).
//! - PING / SETTINGS floods from a client that reads the answers: counted frame by frame in
//!   `server::io::FrameScan`.

use crate::request::RespBody;
use crate::telemetry::ListenerMetrics;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// What one of the gateway's own HTTP/2 bounds cut; carried inside the `io::Error` a
/// connection fails with, so [`classify`] can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abuse {
    ControlFrameFlood,
    WriteIdle,
}

impl Abuse {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Abuse::ControlFrameFlood => "control_frame_flood",
            Abuse::WriteIdle => "write_idle_timeout",
        }
    }

    pub(crate) fn into_io(self) -> std::io::Error {
        let kind = match self {
            Abuse::WriteIdle => std::io::ErrorKind::TimedOut,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, self)
    }
}

impl std::fmt::Display for Abuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Abuse::ControlFrameFlood => "too many HTTP/2 PING/SETTINGS frames",
            Abuse::WriteIdle => "client write idle timeout",
        })
    }
}

impl std::error::Error for Abuse {}

/// The `reason` label for a connection that ended with `e` (see `H2_ERROR_REASONS`). Walks
/// the source chain: one of our [`Abuse`] bounds (inside an `io::Error`; h2 keeps only an
/// I/O error's kind and message, so it is known by its message), an `h2::Error` with a
/// GOAWAY/RST reason, hyper's keep-alive timeout, or another I/O error.
pub(crate) fn classify(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cur = Some(e);
    let mut io = false;
    while let Some(err) = cur {
        if let Some(a) = err.downcast_ref::<Abuse>() {
            return a.reason();
        }
        if let Some(ioe) = err.downcast_ref::<std::io::Error>() {
            if let Some(a) = ioe.get_ref().and_then(|i| i.downcast_ref::<Abuse>()) {
                return a.reason();
            }
            let text = ioe.to_string();
            for a in [Abuse::ControlFrameFlood, Abuse::WriteIdle] {
                if text == a.to_string() {
                    return a.reason();
                }
            }
            io = true;
        }
        if let Some(h) = err.downcast_ref::<h2::Error>() {
            if let Some(r) = h.reason() {
                return reason_label(r);
            }
            if h.is_io() {
                io = true;
            }
        }
        if err.to_string() == "keep-alive timed out" {
            return "keep_alive_timeout";
        }
        cur = err.source();
    }
    if io {
        "io"
    } else {
        "other"
    }
}

fn reason_label(r: h2::Reason) -> &'static str {
    let i = u32::from(r) as usize;
    crate::telemetry::H2_ERROR_REASONS
        .get(i)
        .filter(|_| i < 14)
        .copied()
        .unwrap_or("other")
}

/// Whether a connection error is worth counting as an HTTP/2 one: the connection spoke
/// HTTP/2 (`h2`, known from ALPN or the preface), or its error came from h2.
pub(crate) fn is_h2_error(e: &(dyn std::error::Error + 'static), h2: bool) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<h2::Error>().is_some() {
            return true;
        }
        cur = err.source();
    }
    h2
}

/// 431 for an HTTP/2 request with more than `max_headers` header fields (h2 bounds their
/// size, not their count).
pub(crate) fn too_many_headers<B>(
    req: &http::Request<B>,
    limits: &crate::config::Limits,
    error_headers: &[(http::HeaderName, http::HeaderValue)],
) -> Option<http::Response<RespBody>> {
    if req.version() != http::Version::HTTP_2 || req.headers().len() <= limits.max_headers {
        return None;
    }
    let mut resp = http::Response::new(RespBody::full(Bytes::from_static(
        b"too many request header fields\n",
    )));
    *resp.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let rh = resp.headers_mut();
    for (k, v) in error_headers {
        rh.insert(k.clone(), v.clone());
    }
    rh.insert(
        "portcullis-error",
        http::HeaderValue::from_static("header-too-large"),
    );
    rh.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Some(resp)
}

/// What a stream's response body tells its watchdog: how often hyper asked it for a frame,
/// and whether a data frame it handed out is still waiting for the next ask (hyper asks for
/// the next frame only once h2 has window for it: see hyper's `PipeToSendStream`).
#[derive(Default)]
pub(crate) struct Progress {
    polls: AtomicU64,
    waiting: AtomicBool,
}

tokio::task_local! {
    /// The `Progress` of the stream whose task is running (set by `StreamExec`).
    static PROGRESS: Arc<Progress>;
}

/// hyper's executor for HTTP/2 streams: each stream's task runs under [`Watchdog`].
#[derive(Clone)]
pub(crate) struct StreamExec {
    pub write_idle: Duration,
    pub metrics: Arc<ListenerMetrics>,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let progress = Arc::new(Progress::default());
        tokio::spawn(Watchdog {
            inner: Box::pin(PROGRESS.scope(progress.clone(), fut)),
            progress,
            idle: self.write_idle,
            sleep: None,
            armed: false,
            seen: 0,
            metrics: self.metrics.clone(),
        });
    }
}

/// Runs one stream's task; ends it (dropping the stream, so h2 resets it with `CANCEL` and
/// frees what it buffered) once a response frame waited `idle` without hyper asking for the
/// next one, i.e. the client opened no window for it.
struct Watchdog<F> {
    inner: Pin<Box<F>>,
    progress: Arc<Progress>,
    idle: Duration,
    /// Allocated at the first stall and re-armed with `reset` after that.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// `progress.polls` when the timer was armed.
    seen: u64,
    metrics: Arc<ListenerMetrics>,
}

impl<F: Future<Output = ()>> Future for Watchdog<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.inner.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if !this.progress.waiting.load(Ordering::Relaxed) {
            // Waiting on the service or the upstream: their own timeouts apply.
            this.armed = false;
            return Poll::Pending;
        }
        let polls = this.progress.polls.load(Ordering::Relaxed);
        if !this.armed || polls != this.seen {
            this.seen = polls;
            this.armed = true;
            let deadline = Instant::now() + this.idle;
            match this.sleep.as_mut() {
                Some(s) => s.as_mut().reset(deadline),
                None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let Some(sleep) = this.sleep.as_mut() else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        tracing::debug!(
            idle_ms = this.idle.as_millis() as u64,
            "HTTP/2 stream reset: the client took no response data"
        );
        this.metrics.count_h2_error("stream_write_idle");
        Poll::Ready(())
    }
}

/// The response body as hyper sees it: on an HTTP/2 stream run by [`StreamExec`] it reports
/// its progress to the stream's watchdog; elsewhere it passes frames through.
pub(crate) struct StallBody {
    inner: RespBody,
    progress: Option<Arc<Progress>>,
}

impl StallBody {
    /// Picks up the running stream's `Progress`, if any: call it inside the stream's task.
    pub(crate) fn new(inner: RespBody) -> Self {
        StallBody {
            inner,
            progress: PROGRESS.try_with(Arc::clone).ok(),
        }
    }
}

impl Body for StallBody {
    type Data = Bytes;
    type Error = crate::core::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(p) = &this.progress {
            p.polls.fetch_add(1, Ordering::Relaxed);
            let handed_out = matches!(&r, Poll::Ready(Some(Ok(f))) if f.is_data());
            p.waiting
                .store(handed_out && !this.inner.is_end_stream(), Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_bounds_are_found_inside_io_errors() {
        let e = Abuse::ControlFrameFlood.into_io();
        assert_eq!(classify(&e), "control_frame_flood");
        let e = Abuse::WriteIdle.into_io();
        assert_eq!(classify(&e), "write_idle_timeout");
        // As h2 hands it back: kind and message only.
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "too many HTTP/2 PING/SETTINGS frames",
        );
        assert_eq!(classify(&e), "control_frame_flood");
    }

    #[test]
    fn h2_reasons_get_their_rfc_names() {
        let e = h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM);
        assert_eq!(classify(&e), "enhance_your_calm");
        let e = h2::Error::from(h2::Reason::COMPRESSION_ERROR);
        assert_eq!(classify(&e), "compression_error");
        let e = h2::Error::from(h2::Reason::HTTP_1_1_REQUIRED);
        assert_eq!(classify(&e), "http_1_1_required");
        let e = h2::Error::from(h2::Reason::from(0x99));
        assert_eq!(classify(&e), "other");
    }

    #[test]
    fn plain_io_errors_are_io() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&e), "io");
    }
}
