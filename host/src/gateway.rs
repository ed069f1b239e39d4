//! Assembles a running gateway from a validated config: binds listeners and the admin port,
//! builds the route table and upstreams, and owns shutdown.

use crate::config::Config;
use crate::plugin::PluginRuntime;
use crate::request::{HttpPolicy, Services};
use crate::routing::RouteTable;
use crate::server::{self, tls};
use crate::shed::Shedder;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::Metrics;
use crate::upstream::Upstreams;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Gateway {
    ctx: Arc<Services>,
    listeners: Vec<(String, SocketAddr)>,
    admin: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    drain: Duration,
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
    /// Binds every listener and starts serving. Must run inside a tokio runtime.
    pub async fn start(cfg: Config) -> anyhow::Result<Gateway> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut upstreams = Upstreams::new(&cfg)?;
        upstreams.start_health_checks(&cfg, &shutdown_rx);
        let routes = RouteTable::build(&cfg, |n| upstreams.index(n));
        let route_names: Vec<Arc<str>> = routes.routes().iter().map(|r| r.name.clone()).collect();
        let listener_names: Vec<Arc<str>> = cfg
            .listeners
            .iter()
            .map(|l| Arc::from(l.name.as_str()))
            .collect();
        let access_log =
            match &cfg.access_log {
                Some(a) => Some(AccessLog::start(a).with_context(|| {
                    format!("access_log.path: cannot open `{}`", a.path.display())
                })?),
                None => None,
            };
        let metrics = Arc::new(
            Metrics::new(
                &route_names,
                &listener_names,
                cfg.admin.passport_ring,
                Duration::from_millis(cfg.admin.slow_request_ms),
            )
            .with_access_log(access_log),
        );
        let plugins = match &cfg.plugins {
            Some(p) => Some(
                PluginRuntime::start(p, &cfg.limits, cfg.http.path_policy())
                    .await
                    .context("starting the plugin runtime")?,
            ),
            None => None,
        };
        let ctx = Arc::new(Services {
            routes,
            upstreams: Arc::new(upstreams),
            metrics,
            plugins,
            shedder: Shedder::new(cfg.limits.max_in_flight),
            timeouts: cfg.timeouts.clone(),
            limits: cfg.limits.clone(),
            http: HttpPolicy::from_config(&cfg.http),
            draining: AtomicBool::new(false),
            tunnels: Default::default(),
        });

        let drain = Duration::from_millis(cfg.timeouts.drain_ms);
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
                            ctx.clone(),
                            h3l,
                            endpoint,
                            shutdown_rx.clone(),
                            drain,
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
            tasks.spawn(server::serve(
                ctx.clone(),
                listener,
                shutdown_rx.clone(),
                drain,
            ));
        }
        let admin_tcp = bind(&cfg.admin.listen).context("admin listener")?;
        let admin = admin_tcp.local_addr()?;
        tracing::info!(%admin, "admin listening");
        tasks.spawn(crate::admin::serve(
            ctx.clone(),
            admin_tcp,
            shutdown_rx.clone(),
        ));

        if cfg.access_log.as_ref().is_some_and(|a| !a.is_stdout()) {
            tasks.spawn(reopen_on_sigusr1(ctx.clone(), shutdown_rx.clone()));
        }

        let reaper_ctx = ctx.clone();
        let mut reaper_stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => reaper_ctx.upstreams.reap_idle(),
                    _ = reaper_stop.changed() => break,
                }
            }
        });

        Ok(Gateway {
            ctx,
            listeners: bound,
            admin,
            shutdown,
            tasks,
            drain,
        })
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.ctx
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
        self.ctx.metrics.access_log.as_ref()
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), and returns
    /// once every listener is closed.
    pub async fn shutdown(mut self) {
        let started = std::time::Instant::now();
        self.ctx.draining.store(true, Ordering::Relaxed);
        self.ctx.tunnels.drain_at(started + self.drain);
        let _ = self.shutdown.send(true);
        let grace = self.drain + Duration::from_secs(1);
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
            // WebSocket tunnels left hyper's connections: they close at the drain deadline.
            self.ctx.tunnels.closed().await;
        })
        .await;
        self.tasks.abort_all();
        // Requests (and tunnels) ended: their lines are queued. Bounded like everything.
        if let Some(log) = &self.ctx.metrics.access_log {
            if !log.flush(Duration::from_secs(2)).await {
                tracing::warn!("access log: queued lines not all written at shutdown");
            }
        }
    }

    /// Runs until the returned future of `signal` completes, then drains.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!(
            drain_ms = self.drain.as_millis() as u64,
            "shutting down: draining"
        );
        self.shutdown().await;
        tracing::info!("stopped");
    }
}

/// Reopens the access log file on SIGUSR1 (logrotate's `postrotate`), until shutdown.
async fn reopen_on_sigusr1(ctx: Arc<Services>, mut stop: watch::Receiver<bool>) {
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
                if let Some(log) = &ctx.metrics.access_log {
                    log.reopen();
                }
            }
            _ = stop.changed() => return,
        }
    }
}
