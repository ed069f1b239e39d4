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
//!
//! Two more bounds hold on every connection hyper serves:
//! - **client write idle**: a write that cannot make progress for `client_write_idle_ms` (the
//!   client stopped reading, its TCP window is shut) fails the connection;
//! - **HTTP/2 control frames** ([`FrameScan`]): the frame headers going into h2 are followed,
//!   so a PING/SETTINGS flood closes the connection.

use super::h2::Abuse;
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

/// The per-connection settings `ClientIo` takes from the config.
#[derive(Clone)]
pub(crate) struct IoSettings {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_idle: Duration,
    pub response_408: Arc<[u8]>,
    pub frames: FrameLimits,
}

pub(crate) struct ClientIo<T> {
    inner: T,
    state: Arc<ConnState>,
    listener: Arc<ListenerMetrics>,
    header_timeout: Duration,
    idle_timeout: Duration,
    h2: bool,
    /// Follows HTTP/2 frames once the connection is known to speak it.
    frames: Option<FrameScan>,
    frame_limits: FrameLimits,
    write_idle: Duration,
    /// Counts from the first write that could not proceed; `None` while writes flow.
    write_sleep: Option<Pin<Box<Sleep>>>,
    write_armed: bool,
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
    pub(crate) fn new(
        inner: T,
        state: Arc<ConnState>,
        listener: Arc<ListenerMetrics>,
        s: &IoSettings,
        h2: bool,
    ) -> Self {
        ClientIo {
            inner,
            state,
            listener,
            header_timeout: s.header_timeout,
            idle_timeout: s.idle_timeout,
            h2,
            frames: h2.then(|| FrameScan::new(s.frames)),
            frame_limits: s.frames,
            write_idle: s.write_idle,
            write_sleep: None,
            write_armed: false,
            first_read: true,
            partial: false,
            seen_started: 0,
            sleep: None,
            armed: None,
            response_408: s.response_408.clone(),
        }
    }

    /// After a write returned `Pending`: arms the write-idle timer (once per stall) and fails
    /// the connection when it fires. Any write that proceeds disarms it.
    fn write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.write_armed {
            self.write_armed = true;
            let deadline = Instant::now() + self.write_idle;
            match self.write_sleep.as_mut() {
                Some(s) => s.as_mut().reset(deadline),
                None => self.write_sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match self.write_sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Abuse::WriteIdle.into_io()),
            _ => Poll::Pending,
        }
    }

    fn wrote<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => match self.write_stalled(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                self.write_armed = false;
                ready
            }
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
                    if got.starts_with(H2_PREFACE) && !this.h2 {
                        this.h2 = true;
                        this.frames = Some(FrameScan::new(this.frame_limits));
                    }
                }
                if let Some(scan) = this.frames.as_mut() {
                    if let Err(a) = scan.feed(got) {
                        tracing::debug!(error = %a, "HTTP/2 connection closed");
                        return Poll::Ready(Err(a.into_io()));
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
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.wrote(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The HTTP/2 frame bounds, from `[limits]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameLimits {
    /// PING and SETTINGS (per parameter) frames per second.
    pub control_per_sec: u32,
}

const FRAME_SETTINGS: u8 = 0x4;
const FRAME_PING: u8 = 0x6;
const FLAG_ACK: u8 = 0x1;
/// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
const PREFACE_LEN: usize = 24;

/// Follows the client's HTTP/2 frames by their 9-byte headers (payloads are skipped, never
/// copied) and refuses what h2 lets through: PING and SETTINGS frames need an answer each,
/// and h2 answers every one (one at a time, so memory stays bounded, but a client that reads
/// the answers can keep a core busy for as long as it likes); more than `control_per_sec`
/// in a second closes the connection. A SETTINGS frame counts once per parameter: each can
/// make h2 walk every open stream (`INITIAL_WINDOW_SIZE`).
#[derive(Debug)]
pub(crate) struct FrameScan {
    limits: FrameLimits,
    /// Bytes of the preface or of the current payload still to pass.
    skip: usize,
    head: [u8; 9],
    have: usize,
    window_start: Option<Instant>,
    control: u32,
}

impl FrameScan {
    pub(crate) fn new(limits: FrameLimits) -> Self {
        FrameScan {
            limits,
            skip: PREFACE_LEN,
            head: [0; 9],
            have: 0,
            window_start: None,
            control: 0,
        }
    }

    /// Follows `buf`, the next bytes the client sent.
    pub(crate) fn feed(&mut self, mut buf: &[u8]) -> Result<(), Abuse> {
        while !buf.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                self.skip -= n;
                buf = &buf[n..];
                continue;
            }
            let n = (9 - self.have).min(buf.len());
            self.head[self.have..self.have + n].copy_from_slice(&buf[..n]);
            self.have += n;
            buf = &buf[n..];
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let h = self.head;
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            self.skip = len;
            self.frame(h[3], h[4], len)?;
        }
        Ok(())
    }

    fn frame(&mut self, kind: u8, flags: u8, len: usize) -> Result<(), Abuse> {
        match kind {
            FRAME_SETTINGS if flags & FLAG_ACK == 0 => self.control((len / 6).max(1))?,
            FRAME_PING if flags & FLAG_ACK == 0 => self.control(1)?,
            _ => {}
        }
        Ok(())
    }

    /// Counts `n` control frames in the current one-second window.
    fn control(&mut self, n: usize) -> Result<(), Abuse> {
        let now = Instant::now();
        match self.window_start {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {}
            _ => {
                self.window_start = Some(now);
                self.control = 0;
            }
        }
        self.control = self
            .control
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if self.control > self.limits.control_per_sec {
            return Err(Abuse::ControlFrameFlood);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        control_per_sec: 10,
    };

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn preface() -> Vec<u8> {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    }

    #[test]
    fn pings_past_the_rate_close_the_connection_acks_do_not_count() {
        let mut s = FrameScan::new(LIMITS);
        let mut bytes = preface();
        for _ in 0..10 {
            bytes.extend(frame(FRAME_PING, 0, &[0; 8]));
            bytes.extend(frame(FRAME_PING, FLAG_ACK, &[0; 8]));
        }
        // Fed one byte at a time: frame headers split across reads are followed.
        for b in &bytes {
            assert_eq!(s.feed(std::slice::from_ref(b)), Ok(()));
        }
        assert_eq!(
            s.feed(&frame(FRAME_PING, 0, &[0; 8])),
            Err(Abuse::ControlFrameFlood)
        );
    }

    #[test]
    fn a_settings_frame_counts_per_parameter() {
        let mut s = FrameScan::new(LIMITS);
        s.feed(&preface()).unwrap();
        assert_eq!(s.feed(&frame(FRAME_SETTINGS, 0, &[0; 60])), Ok(()));
        assert_eq!(
            s.feed(&frame(FRAME_SETTINGS, 0, &[0; 6])),
            Err(Abuse::ControlFrameFlood)
        );
    }
}
