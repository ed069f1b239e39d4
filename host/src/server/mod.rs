//! Client-facing listeners: accept, TLS, and HTTP/1.1 + HTTP/2 (h2c prior knowledge and ALPN)
//! served by hyper, each connection watched for graceful drain.

pub(crate) mod h3;
pub(crate) mod io;
pub(crate) mod tls;

use crate::reload::Live;
use crate::request::Services as Ctx;
use crate::request::{self, ConnInfo, ConnState};
use crate::telemetry::ListenerMetrics;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
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
}

fn builder(ctx: &Ctx) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
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
    builder: Arc<auto::Builder<TokioExecutor>>,
    header_timeout: Duration,
    idle_timeout: Duration,
    response_408: Arc<[u8]>,
}

impl ConnSettings {
    fn of(svc: Arc<Ctx>) -> Self {
        ConnSettings {
            builder: Arc::new(builder(&svc)),
            header_timeout: Duration::from_millis(svc.timeouts.client_header_ms),
            idle_timeout: Duration::from_millis(svc.timeouts.client_idle_ms),
            response_408: io::response_408(&svc.http.error_headers),
            svc,
        }
    }
}

/// Accepts until `shutdown` flips, then drains: open connections finish their in-flight
/// requests (keep-alive is turned off, h2 gets GOAWAY) for up to `[timeouts] drain_ms`.
/// Each request runs on the services current when it starts (`Live::load`).
pub(crate) async fn serve(live: Arc<Live>, l: Listener, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let mut settings = ConnSettings::of(live.load());
    let metrics = l.metrics.clone();
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
            settings = ConnSettings::of(now);
        }
        let info = Arc::new(ConnInfo {
            client: peer,
            tls: l.tls.is_some(),
            state: Arc::new(ConnState::default()),
            alt_svc: l.alt_svc.clone(),
            listener: metrics.clone(),
            max_tunnels: l.max_tunnels,
        });
        let conn = connection(
            live.clone(),
            stream,
            info,
            l.tls.clone(),
            &settings,
            graceful.watcher(),
        );
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(client = %peer, error = %e, "client connection ended with error");
            }
            metrics.active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(l.tcp);
    drop(settings);
    let drain = Duration::from_millis(live.load().timeouts.drain_ms);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(open, "draining client connections");
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout passed with connections still open");
    }
}

type ConnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// One client connection: the TLS handshake (bounded by the header timeout) if the listener
/// has TLS, then HTTP/1.1 or HTTP/2 served by hyper under the drain watcher.
fn connection(
    live: Arc<Live>,
    stream: tokio::net::TcpStream,
    info: Arc<ConnInfo>,
    tls: Option<TlsAcceptor>,
    settings: &ConnSettings,
    watcher: hyper_util::server::graceful::Watcher,
) -> impl std::future::Future<Output = ConnResult> + Send + 'static {
    let builder = settings.builder.clone();
    let (header_timeout, idle_timeout) = (settings.header_timeout, settings.idle_timeout);
    let response_408 = settings.response_408.clone();
    let (state, listener, peer) = (info.state.clone(), info.listener.clone(), info.client);
    let svc = service_fn(move |req| request::handle(live.load(), info.clone(), req));
    async move {
        let Some(acceptor) = tls else {
            let io = io::ClientIo::new(
                stream,
                state,
                listener,
                header_timeout,
                idle_timeout,
                false,
                response_408,
            );
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            return watcher.watch(conn).await;
        };
        // Boxed: the TLS states are several KiB, and an unboxed branch would make every
        // plain connection's task that large too (this task lives as long as an idle
        // keep-alive connection).
        Box::pin(async move {
            let tls_stream =
                match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
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
            let io = io::ClientIo::new(
                tls_stream,
                state,
                listener,
                header_timeout,
                idle_timeout,
                h2,
                response_408,
            );
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            watcher.watch(conn).await
        })
        .await
    }
}
