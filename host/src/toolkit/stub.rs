//! Stub clusters for `plugin test`: a real HTTP/1.1 server on 127.0.0.1 per cluster, giving
//! every request the canned answer from the request file, so an endpoint's `fetch` goes through
//! the gateway's own upstream client, pools and limits.

use super::spec::StubCluster;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A running stub; it stops when dropped.
pub(crate) struct Stub {
    pub(crate) addr: SocketAddr,
    /// Requests served so far.
    pub(crate) hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    pub(crate) fn served(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

pub(crate) async fn start(c: &StubCluster) -> anyhow::Result<Stub> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hits = Arc::new(AtomicU64::new(0));
    let answer = Arc::new(c.clone());
    let counted = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let answer = answer.clone();
                    counted.fetch_add(1, Ordering::Relaxed);
                    async move { Ok::<_, Infallible>(respond(&answer).await) }
                });
                // A stub for one test run: errors (the gateway closing a pooled connection)
                // end the connection and nothing else.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Ok(Stub { addr, hits, task })
}

async fn respond(c: &StubCluster) -> http::Response<Full<Bytes>> {
    if c.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(c.delay_ms)).await;
    }
    let mut r = http::Response::new(Full::new(Bytes::from(c.body.clone())));
    *r.status_mut() = http::StatusCode::from_u16(c.status).unwrap_or(http::StatusCode::OK);
    for (k, v) in &c.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            r.headers_mut().append(k, v);
        }
    }
    r
}
