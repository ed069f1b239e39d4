//! Request bodies on their way up, without being buffered whole.
//!
//! `ClientBody` is the client's body from any protocol; `ReqBody` carries it up to the
//! upstream, enforcing the size limit and the client-body idle timeout as it goes; `UpBody`
//! is what an upstream connection sends (empty, buffered and replayable, or streamed once).
//! The response side (`request::response_body`) finishes the passport, so it lives above.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body stopped early; read by the state machine to pick the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReqBodyFault {
    None = 0,
    IdleTimeout = 1,
    TooLarge = 2,
    ClientError = 3,
}

/// State shared between the uploading body and the request task.
#[derive(Debug)]
pub struct ReqShared {
    start: Instant,
    fault: AtomicU8,
    /// Nanoseconds since `start` when the last byte went up; 0 = not yet.
    sent_at: AtomicU64,
    /// Body bytes read from the client so far (the access log's `bytes_in`).
    received: AtomicU64,
}

impl ReqShared {
    pub fn new(start: Instant) -> Arc<Self> {
        Arc::new(ReqShared {
            start,
            fault: AtomicU8::new(0),
            sent_at: AtomicU64::new(0),
            received: AtomicU64::new(0),
        })
    }
    pub fn fault(&self) -> ReqBodyFault {
        match self.fault.load(Ordering::Acquire) {
            1 => ReqBodyFault::IdleTimeout,
            2 => ReqBodyFault::TooLarge,
            3 => ReqBodyFault::ClientError,
            _ => ReqBodyFault::None,
        }
    }
    fn set_fault(&self, f: ReqBodyFault) {
        let _ = self
            .fault
            .compare_exchange(0, f as u8, Ordering::AcqRel, Ordering::Acquire);
    }
    /// Body bytes read from the client so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    pub fn sent_at(&self) -> Option<Instant> {
        match self.sent_at.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.start + Duration::from_nanos(n)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BodyError(pub(crate) &'static str);

/// A client's request body, whichever protocol it arrived on. An enum rather than a boxed
/// trait object: no allocation per request, and the h1/h2 path stays a direct call.
pub enum ClientBody {
    Hyper(Incoming),
    /// Our own HTTP/1.1 codec's body (`crate::h1`).
    H1(crate::h1::RecvBody),
    /// Any other protocol's body (HTTP/3), boxed: those connections pay one indirection so
    /// this leaf module knows no codec.
    Boxed(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
            ClientBody::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
            ClientBody::Boxed(b) => b.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::Boxed(b) => b.size_hint(),
        }
    }
}

/// The client's body on its way up.
pub struct ReqBody {
    inner: ClientBody,
    limit: u64,
    seen: u64,
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    shared: Arc<ReqShared>,
}

impl ReqBody {
    pub fn new(inner: ClientBody, limit: u64, idle: Duration, shared: Arc<ReqShared>) -> Self {
        ReqBody {
            inner,
            limit,
            seen: 0,
            idle,
            sleep: None,
            shared,
        }
    }

    fn finished(&self) {
        let n = self.shared.start.elapsed().as_nanos().max(1) as u64;
        self.shared.sent_at.store(n, Ordering::Release);
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    this.shared.received.store(this.seen, Ordering::Relaxed);
                    if this.seen > this.limit {
                        this.shared.set_fault(ReqBodyFault::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(BodyError(
                            "request body exceeds the limit",
                        )))));
                    }
                }
                this.sleep = None;
                if this.inner.is_end_stream() {
                    this.finished();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.shared.set_fault(ReqBodyFault::ClientError);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finished();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(sleep.as_mut().poll(cx));
                this.shared.set_fault(ReqBodyFault::IdleTimeout);
                Poll::Ready(Some(Err(Box::new(BodyError("client body idle timeout")))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What goes up to an upstream.
pub enum UpBody {
    Empty,
    Full(Option<Bytes>),
    Stream(ReqBody),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpBody::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Full(b) => b.is_none(),
            UpBody::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Stream(s) => s.size_hint(),
        }
    }
}
