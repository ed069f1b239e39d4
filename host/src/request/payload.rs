//! Reading a request body whole, when a filter, an endpoint or a retry needs it.

use super::{Exchange, Payload};
use crate::core::failure::Failure;
use bytes::Bytes;
use http_body::Body as _;
use std::time::{Duration, Instant};

pub(super) fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl Exchange<'_> {
    /// Buffers a streamed payload, bounded by `limit` bytes, the idle timeout and the
    /// deadline; the time counts as waiting on the client.
    pub(super) async fn buffer(
        &mut self,
        payload: Payload,
        limit: u64,
        idle: Duration,
        deadline: Instant,
    ) -> Result<Payload, Failure> {
        let Payload::Stream(body) = payload else {
            return Ok(payload);
        };
        let t0 = Instant::now();
        let r = read_whole(body, limit, idle, deadline).await;
        self.f.passport.add_waiting(t0.elapsed());
        if let Ok(b) = &r {
            self.f.bytes_in = b.len() as u64;
        }
        r.map(Payload::Buffered)
    }
}

async fn read_whole(
    mut body: crate::core::body::ClientBody,
    limit: u64,
    idle: Duration,
    deadline: Instant,
) -> Result<Bytes, Failure> {
    let mut buf = bytes::BytesMut::new();
    loop {
        let until = (Instant::now() + idle).min(deadline);
        let frame = match tokio::time::timeout_at(
            until.into(),
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)),
        )
        .await
        {
            Err(_) if Instant::now() >= deadline => return Err(Failure::DeadlineExceeded),
            Err(_) => return Err(Failure::ClientBodyTimeout),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => return Err(Failure::BadRequest),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Some(d) = frame.data_ref() {
            if (buf.len() + d.len()) as u64 > limit {
                return Err(Failure::BodyTooLarge);
            }
            buf.extend_from_slice(d);
        }
    }
}
