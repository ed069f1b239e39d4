//! Opening upstream connections: TCP, optional TLS (rustls, system roots or a given CA), and
//! the HTTP/1.1 or HTTP/2 handshake. The pool decides *when*; this module knows *how*.

use crate::config::{self, UpstreamProtocol};
use crate::core::body::{BoxError, UpBody};
use crate::h1;
use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use futures_util::future::Either;
use futures_util::FutureExt as _;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A ready-to-use request sender on one upstream connection.
pub enum Sender {
    /// Our own HTTP/1.1 client (`h1::client`): the connection itself. `None` while a
    /// response body is reading off it, or after an exchange that left it unusable.
    H1(Option<UpIo>),
    H2(http2::SendRequest<UpBody>),
}

/// What one request sends: origin-form target and headers (hop-by-hop removed).
pub(crate) struct Outbound<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a PathAndQuery,
    pub headers: &'a HeaderMap,
    /// This attempt's `traceparent`, in place of any in `headers`.
    pub traceparent: Option<HeaderValue>,
    /// The endpoint's address: the `Host` (HTTP/1.1) or `:authority` (HTTP/2) when the
    /// headers carry no `Host`.
    pub addr: &'a str,
    pub scheme: &'static str,
}

impl Sender {
    /// Whether the connection is gone. For an idle HTTP/1.1 connection this looks at the
    /// socket: a close (or bytes nobody asked for) since the last response rules it out.
    pub fn is_closed(&mut self) -> bool {
        match self {
            Sender::H1(io) => io.as_mut().is_none_or(UpIo::is_dead),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Whether it can take another request now, without looking at the socket.
    pub fn is_usable(&self) -> bool {
        match self {
            Sender::H1(io) => io.is_some(),
            Sender::H2(s) => !s.is_closed(),
        }
    }

    pub fn is_ready(&self) -> bool {
        match self {
            Sender::H1(io) => io.is_some(),
            Sender::H2(s) => s.is_ready(),
        }
    }

    pub async fn ready(&mut self) -> Result<(), BoxError> {
        match self {
            Sender::H1(Some(_)) => Ok(()),
            Sender::H1(None) => Err("connection already used".into()),
            Sender::H2(s) => s.ready().await.map_err(Into::into),
        }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    /// Sends a request and waits for the response head. HTTP/1.1 hands the connection to
    /// the response body (see [`super::pool::Conn::reclaim`]); HTTP/2 carries scheme and
    /// authority as pseudo-headers (`Host` moves there). `None`: the head cannot be sent
    /// (an authority that is not a valid URI).
    ///
    /// The request is encoded before the future is made, so the future holds neither the
    /// request nor a borrow of this sender: only what is on its way.
    pub(crate) fn send(
        &mut self,
        req: Outbound<'_>,
        body: UpBody,
    ) -> impl Future<Output = Option<Result<Response<UpstreamBody>, BoxError>>> + Send {
        let now = |answer| Either::Left(Either::Left(std::future::ready(answer)));
        match self {
            Sender::H1(slot) => {
                let Some(io) = slot.take() else {
                    return now(Some(Err("connection already used".into())));
                };
                let head = h1::client::ReqHead {
                    method: req.method,
                    target: req.path_and_query.as_str(),
                    headers: req.headers,
                    host: req.addr,
                    extra: req
                        .traceparent
                        .as_ref()
                        .map(|v| (&crate::core::headers::TRACEPARENT, v)),
                };
                let body = match body {
                    UpBody::Empty | UpBody::Full(None) => h1::client::Outgoing::Empty,
                    UpBody::Full(Some(b)) => h1::client::Outgoing::Full(b),
                    UpBody::Stream(s) => h1::client::Outgoing::Stream(s),
                };
                Either::Left(Either::Right(h1::client::send(io, head, body).map(|r| {
                    Some(match r {
                        Ok(r) => Ok(r.map(UpstreamBody::H1)),
                        Err(e) => Err(e.into()),
                    })
                })))
            }
            Sender::H2(s) => {
                let mut headers = req.headers.clone();
                if let Some(tp) = req.traceparent {
                    headers.insert(crate::core::headers::TRACEPARENT.clone(), tp);
                }
                let authority = headers
                    .remove(http::header::HOST)
                    .and_then(|h| h.to_str().ok().map(str::to_owned))
                    .unwrap_or_else(|| req.addr.to_string());
                let uri = format!("{}://{authority}{}", req.scheme, req.path_and_query);
                let Ok(uri) = uri.parse::<http::Uri>() else {
                    return now(None);
                };
                let mut r = Request::new(body);
                *r.method_mut() = req.method.clone();
                *r.uri_mut() = uri;
                *r.headers_mut() = headers;
                Either::Right(s.send_request(r).map(|r| {
                    Some(match r {
                        Ok(r) => Ok(r.map(UpstreamBody::H2)),
                        Err(e) => Err(e.into()),
                    })
                }))
            }
        }
    }
}

/// An upstream connection's stream: plain TCP or TLS over it.
pub enum UpIo {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpIo {
    /// Whether an idle connection was closed by the upstream (or got bytes nobody asked
    /// for, which makes it as unusable). Never waits. Plain TCP costs no syscall unless the
    /// socket was reported readable.
    fn is_dead(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let UpIo::Tcp(t) = self {
            if t.poll_read_ready(&mut cx).is_pending() {
                return false;
            }
        }
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        !Pin::new(self).poll_read(&mut cx, &mut buf).is_pending()
    }
}

impl AsyncRead for UpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpIo::Tcp(t) => Pin::new(t).poll_read(cx, buf),
            UpIo::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpIo::Tcp(t) => Pin::new(t).poll_write(cx, buf),
            UpIo::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpIo::Tcp(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            UpIo::Tls(t) => Pin::new(&mut **t).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpIo::Tcp(t) => t.is_write_vectored(),
            UpIo::Tls(t) => t.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpIo::Tcp(t) => Pin::new(t).poll_flush(cx),
            UpIo::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpIo::Tcp(t) => Pin::new(t).poll_shutdown(cx),
            UpIo::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
        }
    }
}

/// An upstream response's body, whichever protocol it arrives on.
pub(crate) enum UpstreamBody {
    H1(h1::client::RecvBody<UpIo>),
    H2(Incoming),
}

impl UpstreamBody {
    /// After a `101` from an HTTP/1.1 upstream: its connection, for the tunnel.
    pub(crate) fn take_upgraded(&mut self) -> Option<h1::Upgraded> {
        match self {
            UpstreamBody::H1(b) => b.take_upgraded(),
            UpstreamBody::H2(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} timed out")]
    Timeout { addr: Arc<str> },
    #[error("connect to {addr} failed: {source}")]
    Failed {
        addr: Arc<str>,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: Arc<str>,
        source: std::io::Error,
    },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: Arc<str>,
        source: hyper::Error,
    },
}

impl ConnectError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::Timeout { .. })
    }
    pub fn is_tls(&self) -> bool {
        matches!(self, ConnectError::Tls { .. })
    }
}

/// How to reach one cluster's endpoints.
#[derive(Clone)]
pub struct Connector {
    protocol: UpstreamProtocol,
    tls: Option<(tokio_rustls::TlsConnector, Option<ServerName<'static>>)>,
}

impl Connector {
    pub fn new(cluster: &config::Cluster) -> anyhow::Result<Self> {
        let tls = match &cluster.tls {
            None => None,
            Some(t) => {
                let mut roots = rustls::RootCertStore::empty();
                match &t.ca {
                    Some(ca) => {
                        for cert in CertificateDer::pem_file_iter(ca)
                            .with_context(|| format!("reading CA file {}", ca.display()))?
                        {
                            let cert =
                                cert.with_context(|| format!("parsing CA file {}", ca.display()))?;
                            roots
                                .add(cert)
                                .map_err(|e| anyhow!("CA file {}: {e}", ca.display()))?;
                        }
                    }
                    None => {
                        let found = rustls_native_certs::load_native_certs();
                        for cert in found.certs {
                            let _ = roots.add(cert);
                        }
                    }
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                    .map_err(|e| anyhow!("TLS versions: {e}"))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                cfg.alpn_protocols = match cluster.protocol {
                    UpstreamProtocol::H1 => vec![b"http/1.1".to_vec()],
                    UpstreamProtocol::H2 => vec![b"h2".to_vec()],
                };
                // A DNS cluster's endpoints are addresses: the name looked up is the server's.
                let dns_name = cluster.endpoints.dns().and_then(|d| {
                    let (name, _) = d.target()?;
                    let name = name.strip_prefix(config::SRV_PREFIX).unwrap_or(name);
                    Some(name.trim_end_matches('.').to_string())
                });
                let sni = match t.sni.as_ref().or(dns_name.as_ref()) {
                    Some(n) => Some(
                        ServerName::try_from(n.clone())
                            .map_err(|e| anyhow!("tls.sni `{n}`: {e}"))?,
                    ),
                    None => None,
                };
                Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), sni))
            }
        };
        Ok(Connector {
            protocol: cluster.protocol,
            tls,
        })
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Opens a connection to `addr` and performs the handshakes. Unbounded by itself: the pool
    /// wraps it in the connect deadline.
    pub async fn connect(&self, addr: &Arc<str>) -> Result<Sender, ConnectError> {
        let tcp = TcpStream::connect(&**addr)
            .await
            .map_err(|source| ConnectError::Failed {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.handshake(addr, UpIo::Tcp(tcp)).await,
            Some((connector, sni)) => {
                let name = match sni {
                    Some(n) => n.clone(),
                    None => {
                        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
                        ServerName::try_from(host.to_string()).map_err(|e| ConnectError::Tls {
                            addr: addr.clone(),
                            source: std::io::Error::other(e),
                        })?
                    }
                };
                let tls =
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|source| ConnectError::Tls {
                            addr: addr.clone(),
                            source,
                        })?;
                self.handshake(addr, UpIo::Tls(Box::new(tls))).await
            }
        }
    }

    /// HTTP/1.1 has no handshake: the connection is ready as it is.
    async fn handshake(&self, addr: &Arc<str>, io: UpIo) -> Result<Sender, ConnectError> {
        let err = |source| ConnectError::Handshake {
            addr: addr.clone(),
            source,
        };
        let a = addr.clone();
        match self.protocol {
            UpstreamProtocol::H1 => Ok(Sender::H1(Some(io))),
            UpstreamProtocol::H2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .handshake::<_, UpBody>(TokioIo::new(io))
                    .await
                    .map_err(err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(upstream = %a, error = %e, "upstream h2 connection ended");
                    }
                });
                Ok(Sender::H2(sender))
            }
        }
    }
}
