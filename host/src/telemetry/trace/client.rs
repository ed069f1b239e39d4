//! The exporter's HTTP client: `opentelemetry_http::HttpClient` over hyper's HTTP/1.1
//! connection API, with rustls (ring) for `https://` receivers.
//!
//! Why not the `reqwest` clients `opentelemetry-otlp` offers: hyper, tokio-rustls and ring are
//! already in the gateway, reqwest would add its own stack (and by default another TLS
//! provider) for one POST a second. One connection is kept alive between exports; exports
//! never overlap, so it needs no pool. It runs on the exporter thread's own runtime.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// A collector's answer is a small protobuf; anything bigger is refused.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

pub(super) struct OtlpClient {
    /// Each request (connect, TLS, send, answer) takes at most this long.
    timeout: Duration,
    tls: tokio_rustls::TlsConnector,
    /// The kept-alive connection of the last export.
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl OtlpClient {
    pub(super) fn new(timeout: Duration) -> anyhow::Result<OtlpClient> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(OtlpClient {
            timeout,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            conn: Mutex::new(None),
        })
    }

    /// Opens a connection to the URI's authority (TLS for `https`).
    async fn connect(&self, uri: &http::Uri) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or("OTLP endpoint has no host")?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // `[::1]` in a URI is `::1` to the resolver and to SNI.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare, port)).await?;
        tcp.set_nodelay(true)?;
        if https {
            let name = ServerName::try_from(bare.to_string())?;
            let tls = self.tls.connect(name, tcp).await?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }

    async fn send(&self, req: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let uri = parts.uri;
        let authority = uri
            .authority()
            .ok_or("OTLP endpoint has no authority")?
            .as_str();
        let mut headers = parts.headers;
        headers.insert(http::header::HOST, http::HeaderValue::from_str(authority)?);
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let make = || {
            let mut r = http::Request::new(Full::new(body.clone()));
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = http::Uri::from(path.clone());
            *r.headers_mut() = headers.clone();
            r
        };
        let kept = self.conn.lock().take().filter(|s| !s.is_closed());
        let reused = kept.is_some();
        let mut sender = match kept {
            Some(s) => s,
            None => self.connect(&uri).await?,
        };
        let resp = match sender.send_request(make()).await {
            Ok(r) => r,
            // The receiver closed the idle connection as the request went out: once more on
            // a new one (the request was not processed).
            Err(e) if reused && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) => {
                sender = self.connect(&uri).await?;
                sender.send_request(make()).await?
            }
            Err(e) => return Err(e.into()),
        };
        let (head, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await?
            .to_bytes();
        if !sender.is_closed() {
            *self.conn.lock() = Some(sender);
        }
        Ok(Response::from_parts(head, body))
    }
}

/// `HttpClient` requires `Debug`; the TLS connector has none.
impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Full<Bytes>>, HttpError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "tracing: OTLP connection ended");
        }
    });
    Ok(sender)
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        match tokio::time::timeout(self.timeout, self.send(request)).await {
            Ok(r) => r,
            Err(_) => {
                // Whatever the connection was doing, it is not to be trusted now.
                self.conn.lock().take();
                Err(format!("no answer within {} ms", self.timeout.as_millis()).into())
            }
        }
    }
}
