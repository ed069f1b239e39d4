//! Opening upstream connections: TCP, optional TLS (rustls, system roots or a given CA), and
//! the HTTP/1.1 or HTTP/2 handshake. The pool decides *when*; this module knows *how*.

use crate::config::{self, UpstreamProtocol};
use crate::core::body::UpBody;
use anyhow::{anyhow, Context as _};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A ready-to-use request sender on one upstream connection.
pub enum Sender {
    H1(http1::SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    pub fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }

    pub async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    /// Sends a request. For HTTP/2 the URI must be absolute (scheme and authority become the
    /// pseudo-headers); the caller prepares it with `prepare_uri`.
    pub async fn send(
        &mut self,
        req: http::Request<UpBody>,
    ) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        match self {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
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
            None => self.handshake(addr, tcp).await,
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
                self.handshake(addr, tls).await
            }
        }
    }

    async fn handshake<T>(&self, addr: &Arc<str>, io: T) -> Result<Sender, ConnectError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let err = |source| ConnectError::Handshake {
            addr: addr.clone(),
            source,
        };
        let a = addr.clone();
        match self.protocol {
            UpstreamProtocol::H1 => {
                let (sender, conn) = http1::Builder::new()
                    .handshake::<_, UpBody>(TokioIo::new(io))
                    .await
                    .map_err(err)?;
                // `with_upgrades`: a 101 hands the connection to a WebSocket tunnel.
                tokio::spawn(async move {
                    if let Err(e) = conn.with_upgrades().await {
                        tracing::debug!(upstream = %a, error = %e, "upstream connection ended");
                    }
                });
                Ok(Sender::H1(sender))
            }
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
