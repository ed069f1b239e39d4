//! HTTP/3 over QUIC (quinn + h3) on a TLS listener's port, over UDP.
//!
//! Requests go through the same state machine as h1 and h2 (`request::handle_any`): routing,
//! filters, limits, passports and metrics are identical; the protocol is only a label. 0-RTT
//! is off (`max_early_data_size = 0`): replayable early data is a risk we do not take by
//! default.

use crate::core::body::{BoxError, ClientBody};
use crate::request::RespBody;
use crate::request::{self, ConnInfo, ConnState};
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use quinn::crypto::rustls::QuicServerConfig;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;

type H3Recv = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;
type H3Send = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// A request body arriving on an HTTP/3 stream.
pub(crate) struct H3Body {
    recv: H3Recv,
    done: bool,
}

/// A request body the gateway stops reading (the response was complete first, or the body
/// was refused) asks the client to stop sending with H3_NO_ERROR (RFC 9114 §4.1), not the
/// bare 0 QUIC would send on drop, which clients take for an error.
impl Drop for H3Body {
    fn drop(&mut self) {
        if !self.done {
            self.recv.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.recv.poll_recv_data(cx) {
            Poll::Ready(Ok(Some(mut buf))) => {
                let b = buf.copy_to_bytes(buf.remaining());
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Ok(None)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.done = true;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

pub(crate) struct H3Listener {
    pub metrics: Arc<crate::telemetry::ListenerMetrics>,
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ServerConfig>,
    pub max_connections: usize,
    pub max_streams: u32,
    pub idle_timeout: Duration,
    /// Set when the socket was handed to a new process (`portcullis run --upgrade`): then
    /// this endpoint stops reading it at once instead of draining, because datagrams of the
    /// new process' connections would otherwise be read (and reset) here.
    pub handed_over: Arc<std::sync::atomic::AtomicBool>,
}

/// Binds the UDP endpoint, on `socket` when one was inherited from the process being
/// upgraded. Separate from `serve` so bind errors surface at startup.
///
/// `reset_key` signs stateless resets. A gateway keeps one for its life and hands it to the
/// process that upgrades it, so QUIC connections of the old process that reach the new one
/// are reset at once (clients reconnect) instead of hanging until their idle timeout.
pub(crate) fn bind(
    l: &H3Listener,
    socket: Option<std::net::UdpSocket>,
    reset_key: &[u8],
) -> anyhow::Result<quinn::Endpoint> {
    let mut crypto = (*l.tls).clone();
    crypto.alpn_protocols = vec![b"h3".to_vec()];
    crypto.max_early_data_size = 0;
    let quic =
        QuicServerConfig::try_from(crypto).map_err(|e| anyhow::anyhow!("QUIC TLS config: {e}"))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(l.max_streams.into())
        .max_concurrent_uni_streams(8u32.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(l.idle_timeout)
                .map_err(|e| anyhow::anyhow!("http3 idle timeout: {e}"))?,
        ));
    server.transport_config(Arc::new(transport));
    let socket = match socket {
        Some(s) => s,
        None => std::net::UdpSocket::bind(l.addr)?,
    };
    let runtime =
        quinn::default_runtime().ok_or_else(|| anyhow::anyhow!("HTTP/3 needs a tokio runtime"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key);
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::new(Arc::new(key)),
        Some(server),
        socket,
        runtime,
    )?)
}

pub(crate) async fn serve(
    live: Arc<crate::reload::Live>,
    l: H3Listener,
    endpoint: quinn::Endpoint,
    mut shutdown: watch::Receiver<bool>,
) {
    let metrics = l.metrics.clone();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        metrics.accepted.fetch_add(1, Ordering::Relaxed);
        if metrics.active.load(Ordering::Relaxed) >= l.max_connections as i64 {
            metrics.rejected.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        metrics.active.fetch_add(1, Ordering::Relaxed);
        let metrics = metrics.clone();
        let live = live.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(live, incoming, metrics.clone(), stop).await {
                tracing::debug!(error = %e, "HTTP/3 connection ended with error");
            }
            metrics.active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    if l.handed_over.load(Ordering::Acquire) {
        // The new process serves this UDP socket now, and a datagram read here would be a
        // new connection refused or a new-process connection reset. So let go of it at once:
        // move the endpoint to a throwaway socket and close. Open HTTP/3 connections end;
        // their next packet reaches the new process, which resets them with the shared key,
        // and clients reconnect (docs/operations.md).
        // Twice: quinn keeps reading the previous socket after a rebind (for a migration's
        // packets in flight) until traffic arrives on the new one; the second rebind makes
        // the first throwaway that previous socket, and the shared one is let go.
        let any = std::net::SocketAddr::new(l.addr.ip(), 0);
        for _ in 0..2 {
            if let Err(e) = std::net::UdpSocket::bind(any).and_then(|s| endpoint.rebind(s)) {
                tracing::warn!(error = %e, "HTTP/3: cannot let go of the handed-over socket");
            }
        }
        endpoint.close(0u32.into(), b"upgrade");
        return;
    }
    // Stop taking new connections; let open ones finish (they got GOAWAY) up to the drain.
    endpoint.set_server_config(None);
    let drain = Duration::from_millis(live.load().timeouts.drain_ms);
    let _ = tokio::time::timeout(drain, endpoint.wait_idle()).await;
    endpoint.close(0u32.into(), b"shutdown");
}

async fn connection(
    live: Arc<crate::reload::Live>,
    incoming: quinn::Incoming,
    listener: Arc<crate::telemetry::ListenerMetrics>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let client = conn.remote_address();
    let mut h3c: h3::server::Connection<h3_quinn::Connection, Bytes> =
        h3::server::Connection::new(h3_quinn::Connection::new(conn)).await?;
    let info = Arc::new(ConnInfo {
        client,
        client_ip: crate::core::headers::client_ip(client),
        tls: true,
        state: Arc::new(ConnState::default()),
        alt_svc: None,
        // No upgrades over HTTP/3 (RFC 9220 is not served): no tunnels to count.
        listener,
        max_tunnels: 0,
    });
    let mut draining = *stop.borrow();
    if draining {
        let _ = h3c.shutdown(0).await;
    }
    loop {
        let next = tokio::select! {
            r = h3c.accept() => r,
            _ = stop.changed(), if !draining => {
                draining = true;
                let _ = h3c.shutdown(0).await;
                continue;
            }
        };
        let resolver = match next {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => {
                if e.is_h3_no_error() {
                    return Ok(());
                }
                return Err(e.into());
            }
        };
        let ctx = live.load();
        let info = info.clone();
        tokio::spawn(async move {
            let (req, stream) = match resolver.resolve_request().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "bad HTTP/3 request");
                    return;
                }
            };
            let (send, recv) = stream.split();
            let req = req.map(|()| ClientBody::Boxed(Box::pin(H3Body { recv, done: false })));
            let resp = request::handle_any(ctx, info, req).await;
            respond(send, resp).await;
        });
    }
}

async fn respond(mut send: H3Send, resp: http::Response<RespBody>) {
    let (parts, mut body) = resp.into_parts();
    if send
        .send_response(http::Response::from_parts(parts, ()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => {
                    if send.send_data(d).await.is_err() {
                        return;
                    }
                }
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        let _ = send.send_trailers(t).await;
                    }
                }
            },
            Err(_) => {
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        }
    }
    let _ = send.finish().await;
}
