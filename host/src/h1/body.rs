//! The request body as the handler sees it (`RecvBody`), fed by the connection driver one
//! piece at a time, only when the handler asks for more: a body nobody reads is never read
//! off the socket, and at most one piece waits between the two.
//!
//! Also the upgrade hand-over: `OnUpgrade` resolves to the connection's stream (with any
//! bytes already read) once a `101` has been written.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a request body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body's framing was broken (bad chunk line, oversized trailers).
    #[error("malformed request body: {0}")]
    Malformed(&'static str),
    /// The client closed the connection before the body was complete.
    #[error("client closed the connection mid-body")]
    Incomplete,
    /// Reading the socket failed.
    #[error("reading the request body failed: {0}")]
    Io(#[source] io::Error),
}

#[derive(Default)]
struct Slot {
    item: Option<Result<Bytes, BodyError>>,
    /// The driver delivered the last piece (or an error): nothing more comes.
    ended: bool,
    /// The reader is waiting for a piece.
    want: bool,
    /// The reader went away.
    dropped: bool,
    reader: Option<Waker>,
    driver: Option<Waker>,
}

/// The request body. Empty bodies carry no channel at all (no allocation per GET).
pub struct RecvBody {
    slot: Option<Arc<Mutex<Slot>>>,
    /// Bytes still to come when the length is known.
    remaining: Option<u64>,
}

impl RecvBody {
    pub(crate) fn empty() -> Self {
        RecvBody {
            slot: None,
            remaining: Some(0),
        }
    }
}

/// The driver's end of a request body.
pub(crate) struct Sender {
    slot: Arc<Mutex<Slot>>,
}

/// A body of `length` bytes (`None`: chunked), and the driver's end of it.
pub(crate) fn channel(length: Option<u64>) -> (Sender, RecvBody) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    (
        Sender { slot: slot.clone() },
        RecvBody {
            slot: Some(slot),
            remaining: length,
        },
    )
}

impl Sender {
    /// Ready when the reader wants a piece; `false` when the reader is gone.
    pub(crate) fn poll_want(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut s = self.slot.lock();
        if s.dropped {
            return Poll::Ready(false);
        }
        if s.want && s.item.is_none() {
            return Poll::Ready(true);
        }
        s.driver = Some(cx.waker().clone());
        Poll::Pending
    }

    fn put(&self, item: Option<Result<Bytes, BodyError>>) {
        let mut s = self.slot.lock();
        match item {
            Some(i) => {
                s.ended |= i.is_err();
                s.item = Some(i);
            }
            None => s.ended = true,
        }
        s.want = false;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// Hands one piece to the reader (only after `poll_want` said it wants one).
    pub(crate) fn send(&self, data: Bytes) {
        self.put(Some(Ok(data)));
    }
    /// The body is complete.
    pub(crate) fn finish(&self) {
        self.put(None);
    }
    /// The body ended with an error.
    pub(crate) fn fail(&self, e: BodyError) {
        self.put(Some(Err(e)));
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // A driver that stops feeding (connection gone, request abandoned) must not leave
        // the reader waiting.
        let mut s = self.slot.lock();
        if !s.ended && s.item.is_none() {
            s.item = Some(Err(BodyError::Incomplete));
            s.ended = true;
            if let Some(w) = s.reader.take() {
                w.wake();
            }
        }
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            let mut s = slot.lock();
            s.dropped = true;
            if let Some(w) = s.driver.take() {
                w.wake();
            }
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(slot) = &self.slot else {
            return Poll::Ready(None);
        };
        let mut s = slot.lock();
        match s.item.take() {
            Some(Ok(data)) => {
                drop(s);
                if let Some(r) = &mut self.remaining {
                    *r = r.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None if s.ended => Poll::Ready(None),
            None => {
                s.want = true;
                s.reader = Some(cx.waker().clone());
                if let Some(w) = s.driver.take() {
                    w.wake();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.slot {
            None => true,
            Some(slot) => {
                self.remaining == Some(0) || {
                    let s = slot.lock();
                    s.ended && s.item.is_none()
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// The stream of a connection that switched protocols.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connection after a `101`: the bytes the driver had already read come first.
pub(crate) struct Upgraded {
    pub(crate) read_buf: Bytes,
    pub(crate) io: Box<dyn Io>,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_buf.is_empty() {
            let n = self.read_buf.len().min(buf.remaining());
            buf.put_slice(&self.read_buf.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// In a request's extensions when it asked to upgrade: resolves to the connection once the
/// handler's `101` has been written, or to an error if it never is.
/// (Extensions must be `Clone`; the first `get` takes the connection.)
#[derive(Clone)]
pub(crate) struct OnUpgrade(Arc<Mutex<Option<tokio::sync::oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub(crate) fn new(rx: tokio::sync::oneshot::Receiver<Upgraded>) -> Self {
        OnUpgrade(Arc::new(Mutex::new(Some(rx))))
    }

    pub(crate) async fn get(self) -> io::Result<Upgraded> {
        let not_upgraded =
            || io::Error::new(io::ErrorKind::UnexpectedEof, "connection not upgraded");
        let rx = self.0.lock().take().ok_or_else(not_upgraded)?;
        rx.await.map_err(|_| not_upgraded())
    }
}

/// In a request's extensions when its head had both `Content-Length` and
/// `Transfer-Encoding` (see `head::Head::ambiguous`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AmbiguousFraming;
