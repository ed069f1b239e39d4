//! Portcullis' own HTTP/1.1, on `httparse`: the server side here, the client side (the
//! upstream leg) in [`client`].
//!
//! Why not hyper's: hyper keeps a connection's read and write buffers (~16 KiB) and a cached
//! header map for the connection's whole life, idle or not, and has no way to release them;
//! 10,000 idle keep-alive clients cost ~300 MB. Here buffers exist only while a request is
//! in flight, so an idle connection is its socket and a small task.
//!
//! A leaf module: it knows HTTP/1.1 and tokio, nothing of the gateway. The handler is any
//! `Fn(Request<RecvBody>) -> Future<Output = Response<B>>`. Strictness is hyper's, held to
//! it by a differential test (`tests`), plus what a gateway needs on top: head errors
//! answered with a reason, a lingering close, and framing ambiguity flagged to the caller.
//!
//! Tenets: every wait is bounded (idle, header, linger); nothing is read off the socket
//! before the handler asks for it; a response is one write when it is small.

mod body;
pub(crate) mod client;
#[cfg(test)]
mod client_tests;
mod conn;
mod decode;
mod encode;
#[cfg(test)]
mod fuzz;
mod head;
#[cfg(test)]
mod tests;

pub(crate) use body::{AmbiguousFraming, Io, OnUpgrade, RecvBody, Upgraded};
pub(crate) use head::Limits;

use bytes::BytesMut;
use conn::{Done, Next};
use http::{HeaderName, HeaderValue, Request, Response};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// The protocol settings of a listener, fixed when a connection is accepted.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    /// A head must arrive within this long of its first byte (else `408`).
    pub(crate) header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed quietly.
    pub(crate) idle_timeout: Duration,
    /// A response write that makes no progress for this long ends the connection.
    pub(crate) write_idle_timeout: Duration,
    /// Headers on the codec's own error responses (`[http] error_headers`).
    pub(crate) error_headers: Arc<[(HeaderName, HeaderValue)]>,
    /// Hand a connection that opens with the HTTP/2 preface back to the caller (h2c).
    pub(crate) detect_h2: bool,
    /// How much a read asks for at a time (8 KiB, hyper's initial size).
    pub(crate) read_buf_bytes: usize,
}

/// How a connection ended.
pub(crate) enum Outcome {
    /// Closed: by the client, the idle timeout, a drain, or a response that ends it.
    Closed,
    /// The head did not arrive in time; a `408` was sent.
    HeaderTimeout,
    /// A head was refused (`400`, `414`, `431`), answered with the reason.
    Refused,
    /// The connection opened with the HTTP/2 preface: serve it as HTTP/2 (bytes read so far
    /// come first).
    H2(Upgraded),
    /// Handed over after a `101`.
    Upgraded,
}

/// A stream that can wait for readability without a buffer: plain TCP can; others (TLS)
/// are ready at once and read into a buffer instead.
pub(crate) trait ReadReady {
    fn poll_ready_to_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for tokio::net::TcpStream {
    fn poll_ready_to_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl ReadReady for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    /// Plaintext rustls already holds is ready now; otherwise wait for the socket, so an idle
    /// TLS connection holds no read buffer of ours either.
    fn poll_ready_to_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (tcp, tls) = self.get_mut();
        match tls.process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed() => {
                tcp.poll_read_ready(cx)
            }
            // Buffered plaintext, a close, or an error: the read that follows sees it.
            _ => Poll::Ready(Ok(())),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves one connection until it closes, times out, is drained (`drain` turns true: the
/// request in flight finishes with `connection: close`, an idle connection closes at once),
/// or switches protocols.
pub(crate) async fn serve<I, F, Fut, B>(
    mut io: I,
    s: &Settings,
    handler: F,
    mut drain: watch::Receiver<bool>,
) -> io::Result<Outcome>
where
    I: AsyncRead + AsyncWrite + ReadReady + Send + Unpin + 'static,
    F: Fn(Request<RecvBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    let mut buf = BytesMut::new();
    let mut first = true;
    loop {
        let next = conn::next_head(&mut io, &mut buf, s, &mut drain, first).await?;
        let head = match next {
            Next::Head(h) => h,
            Next::H2 => {
                return Ok(Outcome::H2(Upgraded {
                    read_buf: buf.freeze(),
                    io: Box::new(io),
                }))
            }
            Next::Refused(e) => {
                let code = match e.status() {
                    431 => "header-too-large",
                    414 => "uri-too-long",
                    _ => "bad-request",
                };
                let r = encode::error_response(e.status(), code, e.reason(), &s.error_headers);
                let _ = io.write_all(&r).await;
                Box::pin(conn::linger_close(io)).await;
                return Ok(Outcome::Refused);
            }
            Next::TimedOut => {
                let r = encode::error_response(
                    408,
                    "client-header-timeout",
                    "request head did not arrive in time",
                    &s.error_headers,
                );
                let _ = io.write_all(&r).await;
                let _ = io.shutdown().await;
                return Ok(Outcome::HeaderTimeout);
            }
            other => return Ok(conn::outcome_of(&other).unwrap_or(Outcome::Closed)),
        };
        first = false;
        // Boxed: the exchange's state is only alive during a request; inline it would be
        // part of every idle connection's task.
        match Box::pin(conn::exchange(io, buf, head, s, &handler, &drain)).await? {
            Done::KeepAlive(i, b) => {
                io = i;
                // Release the buffer unless a pipelined request is already in it.
                buf = if b.is_empty() { BytesMut::new() } else { b };
            }
            Done::Close(i) => {
                Box::pin(conn::linger_close(i)).await;
                return Ok(Outcome::Closed);
            }
            Done::Upgraded => return Ok(Outcome::Upgraded),
        }
    }
}
