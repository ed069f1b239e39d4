//! The client connection's byte stream, with the two timeouts hyper cannot express the way an
//! operator expects:
//!
//! - **client header timeout**: a client that started a request head but did not finish it in
//!   time gets `408 Request Timeout` and the connection is closed;
//! - **client idle timeout**: a keep-alive connection with no request in flight and no bytes
//!   arriving is closed quietly.
//!
//! Both only run while no request is in flight on the connection (`ConnState::busy() == 0`);
//! once a head is parsed, the request's own timeouts take over. HTTP/2 connections (seen by
//! their preface or ALPN) only get the idle timeout: a 408 written into an h2 stream would be
//! garbage.

use crate::request::ConnState;
use crate::telemetry::ListenerMetrics;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// The canned 408 for a head that did not arrive in time, with the operator's static
/// `[http] error_headers` (no request exists yet, so no filter can add them). Built once per
/// listener.
pub(crate) fn response_408(extra: &[(http::HeaderName, http::HeaderValue)]) -> Arc<[u8]> {
    let mut r = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: text/plain\r\nportcullis-error: client-header-timeout\r\n".to_vec();
    for (k, v) in extra {
        r.extend_from_slice(k.as_str().as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"content-length: 36\r\n\r\nrequest head did not arrive in time\n");
    r.into()
}

pub(crate) struct ClientIo<T> {
    inner: T,
    state: Arc<ConnState>,
    listener: Arc<ListenerMetrics>,
    header_timeout: Duration,
    idle_timeout: Duration,
    h2: bool,
    first_read: bool,
    /// Bytes of a request head arrived since the last request started.
    partial: bool,
    seen_started: u64,
    /// Allocated at the first idle wait and kept for the connection's life: re-armed with
    /// `reset` per request instead of a new allocation and timer registration each time.
    sleep: Option<Pin<Box<Sleep>>>,
    /// `Some(is_header_timeout)` while the timer counts; `None` while disarmed.
    armed: Option<bool>,
    response_408: Arc<[u8]>,
}

impl<T> ClientIo<T> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: T,
        state: Arc<ConnState>,
        listener: Arc<ListenerMetrics>,
        header_timeout: Duration,
        idle_timeout: Duration,
        h2: bool,
        response_408: Arc<[u8]>,
    ) -> Self {
        ClientIo {
            inner,
            state,
            listener,
            header_timeout,
            idle_timeout,
            h2,
            first_read: true,
            partial: false,
            seen_started: 0,
            sleep: None,
            armed: None,
            response_408,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let started = this.state.started();
        if started != this.seen_started {
            this.seen_started = started;
            this.partial = false;
            this.armed = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if this.first_read && !got.is_empty() {
                    this.first_read = false;
                    if got.starts_with(H2_PREFACE) {
                        this.h2 = true;
                    }
                }
                if !got.is_empty() && this.state.busy() == 0 && !this.h2 {
                    // hyper resolves `Content-Length` + `Transfer-Encoding` by dropping the
                    // length (and closing afterwards), which hides the ambiguity from the
                    // request path; admission refuses it with 400 instead. Only head bytes
                    // are scanned (no request is in flight), line starts only.
                    if crate::core::identity::head_has_length_and_chunked(got) {
                        this.state.flag_ambiguous_framing();
                    }
                }
                if !got.is_empty() && this.state.busy() == 0 && !this.h2 && !this.partial {
                    // A new head begins: its clock starts now.
                    this.partial = true;
                    this.armed = None;
                } else if !got.is_empty() && this.h2 {
                    this.armed = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.state.busy() > 0 {
                    this.armed = None;
                    this.state.wake_when_idle(cx.waker());
                    // Re-check: the request may have ended between the load and the register.
                    if this.state.busy() > 0 {
                        return Poll::Pending;
                    }
                }
                let header_phase = this.partial && !this.h2;
                if this.armed.is_none() || (header_phase && this.armed != Some(true)) {
                    let d = if header_phase {
                        this.header_timeout
                    } else {
                        this.idle_timeout
                    };
                    let deadline = Instant::now() + d;
                    match this.sleep.as_mut() {
                        Some(s) => s.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.armed = Some(header_phase);
                }
                let (Some(timer), Some(is_header)) = (this.sleep.as_mut(), this.armed) else {
                    return Poll::Pending;
                };
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if is_header {
                    this.listener
                        .header_timeouts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Best effort: one non-blocking write of a canned 408, then close.
                    let _ = Pin::new(&mut this.inner).poll_write(cx, &this.response_408);
                    let _ = Pin::new(&mut this.inner).poll_flush(cx);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client header timeout",
                    )))
                } else {
                    // Idle keep-alive connection: a clean EOF closes it quietly.
                    Poll::Ready(Ok(()))
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
