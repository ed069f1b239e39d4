//! Client-facing listeners: accept, TLS, and HTTP/1.1 + HTTP/2 (h2c prior knowledge and ALPN)
//! served by hyper, each connection watched for graceful drain.

pub(crate) mod h2;
pub(crate) mod h3;
pub(crate) mod io;
mod proxy_protocol;
pub(crate) mod tls;

use crate::h1;
use crate::reload::Live;
use crate::request::Services as Ctx;
use crate::request::{self, ConnInfo, ConnState};
use crate::telemetry::ListenerMetrics;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub(crate) struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
    /// This listener's counters (shared by every connection it accepts).
    pub metrics: Arc<ListenerMetrics>,
    pub max_connections: usize,
    /// `Alt-Svc` value when HTTP/3 is served on the same port.
    pub alt_svc: Option<http::HeaderValue>,
    pub max_tunnels: usize,
    /// Every connection opens with a PROXY protocol header (`server::proxy_protocol`).
    pub proxy_protocol: bool,
}

/// hyper's server settings. HTTP/2 streams run under `h2::StreamExec` (the write-idle
/// watchdog); what hyper and h2 bound themselves is listed in `server::h2`.
fn builder(ctx: &Ctx, metrics: &Arc<ListenerMetrics>) -> auto::Builder<h2::StreamExec> {
    let mut b = auto::Builder::new(h2::StreamExec {
        write_idle: Duration::from_millis(ctx.timeouts.client_write_idle_ms),
        metrics: metrics.clone(),
    });
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Header and idle timeouts are ours (server::io) so a slow head gets a 408.
        .header_read_timeout(None)
        .max_buf_size(ctx.limits.max_header_bytes.max(8192))
        .max_headers(ctx.limits.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(ctx.limits.max_concurrent_streams)
        .max_header_list_size(ctx.limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(Some(64))
        // Streams we reset for the client's errors (h2's own default, stated): past it, GOAWAY
        // ENHANCE_YOUR_CALM.
        .max_local_error_reset_streams(Some(1024))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        // RFC 8441: WebSockets over HTTP/2 streams (`request::tunnel`).
        .enable_connect_protocol();
    b
}

/// What a connection takes from the config when it is accepted: the protocol settings and
/// client timeouts. Rebuilt when a reload swapped the services.
struct ConnSettings {
    svc: Arc<Ctx>,
    builder: Arc<auto::Builder<h2::StreamExec>>,
    /// Our HTTP/1.1 codec's settings; `None` when `[http] http1_server = "hyper"`.
    h1: Option<Arc<h1::Settings>>,
    io: Arc<io::IoSettings>,
}

impl ConnSettings {
    fn of(svc: Arc<Ctx>, metrics: &Arc<ListenerMetrics>) -> Self {
        let header_timeout = Duration::from_millis(svc.timeouts.client_header_ms);
        let idle_timeout = Duration::from_millis(svc.timeouts.client_idle_ms);
        let h1 = (svc.http.http1_server == crate::config::Http1Server::Portcullis).then(|| {
            Arc::new(h1::Settings {
                limits: h1::Limits {
                    max_head_bytes: svc.limits.max_header_bytes,
                    max_headers: svc.limits.max_headers,
                },
                header_timeout,
                idle_timeout,
                error_headers: svc.http.error_headers.clone().into(),
                write_idle_timeout: Duration::from_millis(svc.timeouts.client_write_idle_ms),
                detect_h2: true,
                read_buf_bytes: 8192,
            })
        });
        let io = Arc::new(io::IoSettings {
            header_timeout,
            idle_timeout,
            write_idle: Duration::from_millis(svc.timeouts.client_write_idle_ms),
            response_408: io::response_408(&svc.http.error_headers),
            frames: io::FrameLimits {
                control_per_sec: svc.limits.h2_max_control_frames_per_sec,
            },
        });
        ConnSettings {
            builder: Arc::new(builder(&svc, metrics)),
            h1,
            io,
            svc,
        }
    }
}

/// Accepts until `shutdown` flips, then drains: open connections finish their in-flight
/// requests (keep-alive is turned off, h2 gets GOAWAY) for up to `[timeouts] drain_ms`.
/// Each request runs on the services current when it starts (`Live::load`).
pub(crate) async fn serve(live: Arc<Live>, l: Listener, mut shutdown: watch::Receiver<bool>) {
    // Every connection holds a receiver; a drain flips it, and `closed` resolves once the
    // last connection has ended.
    let (drain_tx, drain_rx) = watch::channel(false);
    let metrics = l.metrics.clone();
    let mut settings = ConnSettings::of(live.load(), &metrics);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            r = l.tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        metrics.accepted.fetch_add(1, Ordering::Relaxed);
        if metrics.active.load(Ordering::Relaxed) >= l.max_connections as i64 {
            metrics.rejected.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        metrics.active.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let now = live.load();
        if !Arc::ptr_eq(&now, &settings.svc) {
            settings = ConnSettings::of(now, &metrics);
        }
        let conn = Accepted {
            live: live.clone(),
            tls: l.tls.clone(),
            alt_svc: l.alt_svc.clone(),
            max_tunnels: l.max_tunnels,
            proxy_protocol: l.proxy_protocol,
            settings: settings.share(),
            drain: drain_rx.clone(),
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // Two steps, so the PROXY header's reading is not part of the task's state for
            // the rest of the connection's life (an idle connection's task is its memory).
            if let Some(served) = conn.start(stream, peer, metrics.clone()).await {
                if let Err(e) = served.await {
                    tracing::debug!(client = %peer, error = %e, "client connection ended with error");
                }
            }
            metrics.active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(l.tcp);
    drop(settings);
    drop(drain_rx);
    let drain = Duration::from_millis(live.load().timeouts.drain_ms);
    let open = drain_tx.receiver_count();
    if open > 0 {
        tracing::info!(open, "draining client connections");
    }
    let _ = drain_tx.send(true);
    if tokio::time::timeout(drain, drain_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout passed with connections still open");
    }
}

type ConnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs a hyper connection until it ends; a drain asks it to shut down gracefully (no new
/// requests, in-flight ones finish, h2 gets GOAWAY).
async fn until_drained<C>(conn: C, mut drain: watch::Receiver<bool>) -> Result<(), C::Error>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    if !*drain.borrow() {
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = drain.wait_for(|d| *d) => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// What one accepted connection needs of its listener, moved into its task.
struct Accepted {
    live: Arc<Live>,
    tls: Option<TlsAcceptor>,
    alt_svc: Option<http::HeaderValue>,
    max_tunnels: usize,
    proxy_protocol: bool,
    settings: Shared,
    drain: watch::Receiver<bool>,
}

impl Accepted {
    /// Reads the PROXY protocol header first when the listener wants one (a connection
    /// without a valid one is closed and counted: `None`), fixes the connection's client
    /// address, and returns the connection to serve.
    async fn start(
        self,
        mut stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        metrics: Arc<ListenerMetrics>,
    ) -> Option<impl std::future::Future<Output = ConnResult> + Send + 'static> {
        let client = if self.proxy_protocol {
            // Boxed: its buffers live only while the header is read.
            let timeout = self.settings.io.header_timeout;
            match Box::pin(proxy_protocol::read(&mut stream, timeout)).await {
                Ok(declared) => declared.unwrap_or(peer),
                Err(e) => {
                    tracing::debug!(client = %peer, error = %e, "PROXY protocol header refused");
                    metrics
                        .proxy_header_failures
                        .fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        } else {
            peer
        };
        let info = Arc::new(ConnInfo {
            client,
            client_ip: crate::core::headers::client_ip(client),
            tls: self.tls.is_some(),
            state: Arc::new(ConnState::default()),
            alt_svc: self.alt_svc,
            listener: metrics,
            max_tunnels: self.max_tunnels,
        });
        Some(connection(
            self.live,
            stream,
            info,
            self.tls,
            self.settings,
            self.drain,
        ))
    }
}

/// A listener's connection settings, as each connection holds them.
struct Shared {
    builder: Arc<auto::Builder<h2::StreamExec>>,
    h1: Option<Arc<h1::Settings>>,
    io: Arc<io::IoSettings>,
}

impl ConnSettings {
    fn share(&self) -> Shared {
        Shared {
            builder: self.builder.clone(),
            h1: self.h1.clone(),
            io: self.io.clone(),
        }
    }
}

/// One client connection: the TLS handshake (bounded by the header timeout) if the listener
/// has TLS, then HTTP/1.1 (ours, or hyper's) or HTTP/2 (hyper's).
fn connection(
    live: Arc<Live>,
    stream: tokio::net::TcpStream,
    info: Arc<ConnInfo>,
    tls: Option<TlsAcceptor>,
    settings: Shared,
    drain: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ConnResult> + Send + 'static {
    let c = Conn {
        builder: settings.builder,
        h1: settings.h1,
        io: settings.io,
        live,
        info,
        drain,
    };
    async move {
        let Some(acceptor) = tls else {
            return c.serve(stream, false).await;
        };
        // Boxed: the TLS states are several KiB, and an unboxed branch would make every
        // plain connection's task that large too (this task lives as long as an idle
        // keep-alive connection).
        Box::pin(async move {
            let peer = c.info.client;
            let listener = c.info.listener.clone();
            let tls_stream =
                match tokio::time::timeout(c.io.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                        listener.tls_failures.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(_) => {
                        listener.tls_failures.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                };
            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            c.serve(tls_stream, h2).await
        })
        .await
    }
}

/// A connection's share of the listener's settings.
struct Conn {
    builder: Arc<auto::Builder<h2::StreamExec>>,
    h1: Option<Arc<h1::Settings>>,
    io: Arc<io::IoSettings>,
    live: Arc<Live>,
    info: Arc<ConnInfo>,
    drain: watch::Receiver<bool>,
}

impl Conn {
    /// Serves the stream: HTTP/2 (ALPN said so) on hyper; HTTP/1.1 on our codec, which hands
    /// back a plaintext connection that opens with the HTTP/2 preface; or all of it on
    /// hyper's auto-detecting server when `[http] http1_server = "hyper"`.
    async fn serve<S>(self, stream: S, h2: bool) -> ConnResult
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + h1::ReadReady + Send + Unpin + 'static,
    {
        // hyper's connection futures are boxed: inline, their state (KiBs for the auto
        // builder's h1 + h2 machinery) would be part of every connection's task, idle
        // HTTP/1.1 ones included.
        let Some(h1s) = self.h1.clone().filter(|_| !h2) else {
            return Box::pin(self.hyper(stream, h2)).await;
        };
        let (live, info) = (self.live.clone(), self.info.clone());
        let handler = move |req| request::handle_h1(live.load(), info.clone(), req);
        match h1::serve(stream, &h1s, handler, self.drain.clone()).await? {
            h1::Outcome::H2(io) => Box::pin(self.hyper(io, true)).await,
            h1::Outcome::HeaderTimeout => {
                self.info
                    .listener
                    .header_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            h1::Outcome::Closed | h1::Outcome::Refused | h1::Outcome::Upgraded => Ok(()),
        }
    }

    /// hyper's server: HTTP/2, or HTTP/1.1 when it is configured to serve it.
    async fn hyper<S>(self, stream: S, h2: bool) -> ConnResult
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (live, info) = (self.live, self.info);
        let listener = info.listener.clone();
        let io = io::ClientIo::new(
            stream,
            info.state.clone(),
            info.listener.clone(),
            &self.io,
            h2,
        );
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (svc, info) = (live.load(), info.clone());
            async move {
                let extra = &svc.http.error_headers;
                if let Some(r) = h2::too_many_headers(&req, &svc.limits, extra) {
                    info.listener.count_h2_error("too_many_headers");
                    return Ok::<_, std::convert::Infallible>(r.map(h2::StallBody::new));
                }
                let resp = request::handle(svc, info, req).await?;
                Ok(resp.map(h2::StallBody::new))
            }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc);
        let r = until_drained(conn, self.drain).await;
        if let Err(e) = &r {
            let reason = h2::classify(&**e);
            let scanned = reason == "control_frame_flood";
            if scanned || h2::is_h2_error(&**e, h2) {
                listener.count_h2_error(reason);
            }
        }
        r
    }
}
