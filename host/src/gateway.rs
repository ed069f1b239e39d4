//! Assembles a running gateway from a validated config: binds listeners and the admin port,
//! builds the route table and upstreams, and owns shutdown.

use crate::config::Config;
use crate::reload::{Live, Loaded};
use crate::request::Services;
use crate::server::{self, tls};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::Metrics;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Gateway {
    live: Arc<Live>,
    /// Shared by every config generation (a reload keeps it).
    metrics: Arc<Metrics>,
    listeners: Vec<(String, SocketAddr)>,
    admin: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address `{addr}`"))?;
    let sock = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    sock.set_nodelay(true)?;
    sock.bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
    Ok(sock.listen(4096)?)
}

impl Gateway {
    /// Binds every listener and starts serving. Must run inside a tokio runtime. A gateway
    /// started this way has no file to reload; see [`Gateway::start_file`].
    pub async fn start(cfg: Config) -> anyhow::Result<Gateway> {
        Self::start_with(cfg, None).await
    }

    /// Starts from a config file, which SIGHUP and `POST /admin/config/reload` re-read.
    pub async fn start_file(path: &std::path::Path) -> anyhow::Result<Gateway> {
        let (cfg, loaded) = crate::reload::read_for_run(path)
            .map_err(|problems| anyhow::anyhow!("{}", problems.join("\n")))?;
        Self::start_with(cfg, Some(loaded)).await
    }

    async fn start_with(cfg: Config, loaded: Option<Loaded>) -> anyhow::Result<Gateway> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let source = loaded.as_ref().and_then(|l| l.source.clone());
        let svc = crate::reload::boot(cfg.clone(), loaded, &shutdown_rx).await?;
        let live = Arc::new(Live::new(svc, source, shutdown_rx.clone()));
        let ctx = live.load();

        let mut tasks = JoinSet::new();
        let mut bound = Vec::new();
        for (index, l) in cfg.listeners.iter().enumerate() {
            let tcp = bind(&l.listen).with_context(|| format!("listener `{}`", l.name))?;
            let addr = tcp.local_addr()?;
            let mut alt_svc = None;
            let acceptor = match &l.tls {
                Some(t) => {
                    let (server_cfg, resolver) = tls::server_config(t)
                        .with_context(|| format!("listener `{}` TLS", l.name))?;
                    if l.http3 {
                        let h3l = server::h3::H3Listener {
                            index,
                            addr,
                            tls: server_cfg.clone(),
                            max_connections: l.max_connections,
                            max_streams: l.http3_max_streams,
                            idle_timeout: Duration::from_millis(l.http3_idle_timeout_ms),
                        };
                        let endpoint = server::h3::bind(&h3l).with_context(|| {
                            format!("listener `{}` HTTP/3 on udp {addr}", l.name)
                        })?;
                        tracing::info!(listener = %l.name, %addr, "serving HTTP/3 over QUIC");
                        alt_svc = http::HeaderValue::from_str(&format!(
                            "h3=\":{}\"; ma=86400",
                            addr.port()
                        ))
                        .ok();
                        tasks.spawn(server::h3::serve(
                            live.clone(),
                            h3l,
                            endpoint,
                            shutdown_rx.clone(),
                        ));
                    }
                    let reloads = ctx.metrics.listeners[index].tls_reloads.clone();
                    tasks.spawn(tls::watch_reload(
                        l.name.clone(),
                        t.clone(),
                        resolver,
                        reloads,
                        shutdown_rx.clone(),
                    ));
                    Some(tokio_rustls::TlsAcceptor::from(server_cfg))
                }
                None => None,
            };
            tracing::info!(listener = %l.name, %addr, tls = acceptor.is_some(), "listening");
            bound.push((l.name.clone(), addr));
            let listener = server::Listener {
                index,
                tcp,
                tls: acceptor,
                max_connections: l.max_connections,
                alt_svc,
                max_tunnels: l.max_tunnels,
            };
            tasks.spawn(server::serve(live.clone(), listener, shutdown_rx.clone()));
        }
        let admin_tcp = bind(&cfg.admin.listen).context("admin listener")?;
        let admin = admin_tcp.local_addr()?;
        tracing::info!(%admin, "admin listening");
        tasks.spawn(crate::admin::serve(
            live.clone(),
            admin_tcp,
            shutdown_rx.clone(),
        ));

        let reaper = live.clone();
        if cfg.access_log.as_ref().is_some_and(|a| !a.is_stdout()) {
            tasks.spawn(reopen_on_sigusr1(ctx.metrics.clone(), shutdown_rx.clone()));
        }
        let mut reaper_stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => reaper.load().upstreams.reap_idle(),
                    _ = reaper_stop.changed() => break,
                }
            }
        });

        Ok(Gateway {
            metrics: ctx.metrics.clone(),
            live,
            listeners: bound,
            admin,
            shutdown,
            tasks,
        })
    }

    /// The services new requests run on now.
    pub fn services(&self) -> Arc<Services> {
        self.live.load()
    }

    /// The reload handle: what SIGHUP and the admin API call.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The access log, when `[access_log]` is configured: `reopen` is what SIGUSR1 does,
    /// `flush` waits for the queued lines to be written.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.metrics.access_log.as_ref()
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), and returns
    /// once every listener is closed.
    pub async fn shutdown(mut self) {
        let started = std::time::Instant::now();
        let ctx = self.live.load();
        let drain = Duration::from_millis(ctx.timeouts.drain_ms);
        ctx.draining.store(true, Ordering::Relaxed);
        ctx.tunnels.drain_at(started + drain);
        let _ = self.shutdown.send(true);
        let grace = drain + Duration::from_secs(1);
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
            // WebSocket tunnels left hyper's connections: they close at the drain deadline.
            ctx.tunnels.closed().await;
        })
        .await;
        self.tasks.abort_all();
        // Requests (and tunnels) ended: their lines are queued. Bounded like everything.
        if let Some(log) = &self.metrics.access_log {
            if !log.flush(Duration::from_secs(2)).await {
                tracing::warn!("access log: queued lines not all written at shutdown");
            }
        }
    }

    /// Runs until the returned future of `signal` completes, then drains.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!(
            drain_ms = self.live.load().timeouts.drain_ms,
            "shutting down: draining"
        );
        self.shutdown().await;
        tracing::info!("stopped");
    }
}

/// Reopens the access log file on SIGUSR1 (logrotate's `postrotate`), until shutdown.
async fn reopen_on_sigusr1(metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = match signal(SignalKind::user_defined1()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGUSR1: the access log will not be reopened");
            return;
        }
    };
    loop {
        tokio::select! {
            got = usr1.recv() => {
                if got.is_none() {
                    return;
                }
                if let Some(log) = &metrics.access_log {
                    log.reopen();
                }
            }
            _ = stop.changed() => return,
        }
    }
}
