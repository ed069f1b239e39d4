//! The upstream's response body on its way down to the client.
//!
//! `RespBody` enforces the upstream-body idle timeout and the request deadline, returns the
//! upstream connection to its pool only after the last byte, and finishes the passport when
//! the last byte (or an error, or a client disconnect) happens.

use super::{grpc, Finisher};
use crate::core::body::{BodyError, BoxError};
use crate::core::passport::State;
use crate::upstream::connect::UpstreamBody;
use crate::upstream::pool::Conn;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// The upstream's response on its way down, with everything needed to finish the request.
pub(crate) struct Streaming {
    inner: UpstreamBody,
    idle: Duration,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Returned to its pool only after the body was read to the end.
    conn: Option<(Conn, Arc<crate::upstream::Endpoint>)>,
    finisher: Option<Finisher>,
    body_started: Instant,
    /// A gRPC call: a stream the gateway cuts ends with `grpc-status` trailers, not a reset.
    grpc: bool,
}

/// What goes down to the client.
pub(crate) enum RespBody {
    Full(Option<Bytes>),
    Stream(Box<Streaming>),
}

impl RespBody {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        RespBody::Full(Some(b.into()))
    }
    pub(crate) fn stream(
        inner: UpstreamBody,
        idle: Duration,
        deadline: Instant,
        conn: (Conn, Arc<crate::upstream::Endpoint>),
        finisher: Finisher,
        now: Instant,
        grpc: bool,
    ) -> Self {
        let mut s = Box::new(Streaming {
            inner,
            idle,
            deadline,
            sleep: None,
            conn: Some(conn),
            finisher: Some(finisher),
            body_started: now,
            grpc,
        });
        if s.inner.is_end_stream() {
            s.complete();
        }
        RespBody::Stream(s)
    }
}

impl Streaming {
    fn complete(&mut self) {
        if let Some((mut conn, endpoint)) = self.conn.take() {
            conn.reclaim(&mut self.inner);
            endpoint.pool.release(conn);
        }
        // Finished in place, then dropped: `take()` would copy the finisher (passport and
        // all) out of the body first.
        if let Some(f) = self.finisher.as_mut() {
            let now = Instant::now();
            f.passport
                .add_waiting(now.saturating_duration_since(self.body_started));
            f.passport.stamp_at(State::RespBodySent, now);
            f.passport.stamp_at(State::Done, now);
            f.complete();
            self.finisher = None;
        }
    }

    fn fail(&mut self, state: State) {
        self.conn = None;
        if let Some(mut f) = self.finisher.take() {
            f.passport.add_waiting(self.body_started.elapsed());
            f.passport.stamp(state);
            f.passport.error.get_or_insert(cut_short_code(state));
            f.finish();
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let s = match self.get_mut() {
            RespBody::Full(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Stream(s) => s,
        };
        if s.finisher.is_none() && s.conn.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut s.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                s.sleep = None;
                if let (Some(d), Some(f)) = (frame.data_ref(), s.finisher.as_mut()) {
                    f.bytes_out += d.len() as u64;
                }
                if s.inner.is_end_stream() {
                    s.complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                s.fail(State::UpstreamReset);
                if s.grpc {
                    let t = grpc::end_trailers(grpc::Code::Unavailable, "upstream stream reset");
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                s.complete();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let now = Instant::now();
                let (idle, deadline) = (s.idle, s.deadline);
                let sleep = s.sleep.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until((now + idle).min(deadline).into()))
                });
                ready!(sleep.as_mut().poll(cx));
                let state = if Instant::now() >= deadline {
                    State::DeadlineExceeded
                } else {
                    State::UpstreamBodyTimeout
                };
                s.fail(state);
                if s.grpc {
                    let t = match state {
                        State::DeadlineExceeded => {
                            grpc::end_trailers(grpc::Code::DeadlineExceeded, "deadline exceeded")
                        }
                        _ => grpc::end_trailers(grpc::Code::Unavailable, "upstream stalled"),
                    };
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Poll::Ready(Some(Err(Box::new(BodyError(
                    "upstream response body timed out",
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Stream(s) => s.finisher.is_none() && s.conn.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespBody::Stream(s) => s.inner.size_hint(),
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if self.finisher.is_some() {
            // The client went away (or the connection was torn down) mid-body: the upstream
            // connection is not reusable, and the passport says so.
            self.fail(State::ClientDisconnected);
        }
    }
}

/// The access log's `error` for a response body cut short after its head went down.
fn cut_short_code(state: State) -> &'static str {
    match state {
        State::DeadlineExceeded => "deadline-exceeded",
        State::UpstreamBodyTimeout => "upstream-body-timeout",
        State::ClientDisconnected => "client-disconnected",
        _ => "upstream-reset",
    }
}
