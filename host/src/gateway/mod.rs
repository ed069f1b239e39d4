//! Assembles a running gateway from a validated config: binds listeners and the admin port,
//! builds the route table and upstreams, and owns shutdown and the hand-over to a new
//! process.

mod listeners;

use crate::config::Config;
use crate::reload::{Live, Loaded};
use crate::request::Services;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::Metrics;
use crate::upgrade::{Handoff, Inherited, Kind, SocketInfo};
use anyhow::Context as _;
use listeners::{Bound, ListenerSet, Source};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
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
    listeners: Arc<ListenerSet>,
    admin: SocketAddr,
    /// A duplicate of the admin socket, for a hand-over to a new process.
    admin_fd: OwnedFd,
    shutdown: watch::Sender<bool>,
    /// Flips once a new process took the sockets (`portcullis run --upgrade`).
    handed_over: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Gateway {
    /// Binds every listener and starts serving. Must run inside a tokio runtime. A gateway
    /// started this way has no file to reload; see [`Gateway::start_file`].
    pub async fn start(cfg: Config) -> anyhow::Result<Gateway> {
        let mut gw = Self::start_with(cfg, None, &mut Inherited::default()).await?;
        gw.listen_for_upgrades()?;
        Ok(gw)
    }

    /// Starts from a config file, which SIGHUP and `POST /admin/config/reload` re-read.
    pub async fn start_file(path: &std::path::Path) -> anyhow::Result<Gateway> {
        let (cfg, loaded) = crate::reload::read_for_run(path)
            .map_err(|problems| anyhow::anyhow!("{}", problems.join("\n")))?;
        let mut gw = Self::start_with(cfg, Some(loaded), &mut Inherited::default()).await?;
        gw.listen_for_upgrades()?;
        Ok(gw)
    }

    /// `portcullis run --upgrade`: takes the listening sockets of the gateway that serves on
    /// `[admin] upgrade_socket`, starts on them, then tells it to drain and exit. If this
    /// start fails, the running gateway is untouched and keeps serving.
    pub async fn start_file_upgrading(path: &std::path::Path) -> anyhow::Result<Gateway> {
        let (cfg, loaded) = crate::reload::read_for_run(path)
            .map_err(|problems| anyhow::anyhow!("{}", problems.join("\n")))?;
        let socket = cfg.admin.upgrade_socket.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "--upgrade needs `[admin] upgrade_socket` in {}",
                path.display()
            )
        })?;
        let (handoff, mut inherited) =
            tokio::task::spawn_blocking(move || Handoff::connect(&socket)).await??;
        tracing::info!(
            from_pid = handoff.donor_pid(),
            "upgrade: took the listening sockets"
        );
        let mut gw = Self::start_with(cfg, Some(loaded), &mut inherited).await?;
        for s in inherited.leftover() {
            tracing::info!(name = %s.name, listen = %s.listen, "upgrade: socket not in this config, closed");
        }
        drop(inherited);
        tokio::task::spawn_blocking(move || handoff.ready())
            .await?
            .context("upgrade: the old process did not confirm")?;
        tracing::info!("upgrade: the old process is draining; this one serves");
        gw.listen_for_upgrades()?;
        Ok(gw)
    }

    async fn start_with(
        cfg: Config,
        loaded: Option<Loaded>,
        inherited: &mut Inherited,
    ) -> anyhow::Result<Gateway> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let source = loaded.as_ref().and_then(|l| l.source.clone());
        let svc = crate::reload::boot(cfg.clone(), loaded, &shutdown_rx).await?;
        let live = Arc::new(Live::new(svc, source, shutdown_rx.clone()));
        let ctx = live.load();

        // Everything is bound before anything serves: a process that cannot take every
        // socket (an upgrade whose new listener's port is taken) never accepts a connection.
        let mut bound = Vec::new();
        for l in &cfg.listeners {
            bound.push(
                Bound::new(l, Source::Inherited(inherited))
                    .with_context(|| format!("listener `{}`", l.name))?,
            );
        }
        let admin_tcp = match inherited.take_tcp(Kind::Admin, &cfg.admin.listen)? {
            Some(l) => l,
            None => listeners::bind_tcp(&cfg.admin.listen).context("admin listener")?,
        };
        let quic_key = match inherited.quic_reset_key.take() {
            Some(k) => k,
            None => random_key()?,
        };
        let set = ListenerSet::new(&live, ctx.metrics.clone(), quic_key.into());
        for b in bound {
            if let Err(e) = set.start(b) {
                set.stop_all(false);
                return Err(e);
            }
        }
        live.set_listener_hook(set.clone());
        let admin_fd = admin_tcp.as_fd().try_clone_to_owned()?;
        let admin_tcp = TcpListener::from_std(admin_tcp)?;
        let admin = admin_tcp.local_addr()?;
        tracing::info!(%admin, "admin listening");
        let mut tasks = JoinSet::new();
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
            listeners: set,
            admin,
            admin_fd,
            shutdown,
            handed_over: watch::Sender::new(false),
            tasks,
        })
    }

    /// Serves hand-overs on `[admin] upgrade_socket`, if set.
    fn listen_for_upgrades(&mut self) -> anyhow::Result<()> {
        let cfg = self.live.load().config.clone();
        let Some(path) = cfg.admin.upgrade_socket.clone() else {
            return Ok(());
        };
        let listener = crate::upgrade::bind(&path)?;
        tracing::info!(socket = %path.display(), "upgrade socket listening");
        let donor = Arc::new(Donor {
            listeners: self.listeners.clone(),
            admin: self.admin_fd.try_clone()?,
            admin_listen: cfg.admin.listen.clone(),
            handed_over: self.handed_over.clone(),
        });
        self.tasks.spawn(crate::upgrade::serve(
            listener,
            path,
            Duration::from_millis(cfg.admin.upgrade_timeout_ms),
            donor,
            self.shutdown.subscribe(),
        ));
        Ok(())
    }

    /// The services new requests run on now.
    pub fn services(&self) -> Arc<Services> {
        self.live.load()
    }

    /// The reload handle: what SIGHUP and the admin API call.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The bound address of listener `name` (it may have been added by a reload).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.addr(name)
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
        ctx.tunnel_drain.send_replace(Some(started + drain));
        let _ = self.shutdown.send(true);
        self.listeners.stop_all(*self.handed_over.borrow());
        let grace = drain + Duration::from_secs(1);
        let _ = tokio::time::timeout(grace, async {
            self.listeners.join().await;
            while self.tasks.join_next().await.is_some() {}
            // WebSocket tunnels left hyper's connections: they close at the drain deadline.
            ctx.tunnels.closed().await;
        })
        .await;
        self.tasks.abort_all();
        self.listeners.abort();
        // Requests (and tunnels) ended: their lines are queued. Bounded like everything.
        if let Some(log) = &self.metrics.access_log {
            if !log.flush(Duration::from_secs(2)).await {
                tracing::warn!("access log: queued lines not all written at shutdown");
            }
        }
        if let Some(t) = &self.metrics.tracer {
            if !t.flush(Duration::from_secs(5)).await {
                tracing::warn!("tracing: queued spans not all exported at shutdown");
            }
        }
    }

    /// Runs until `signal` completes or a new process took over the sockets, then drains.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        let mut handed_over = self.handed_over.subscribe();
        tokio::select! {
            _ = signal => {}
            _ = handed_over.wait_for(|h| *h) => {}
        }
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

/// What this gateway hands to a new process: every listener's sockets and the admin port.
struct Donor {
    listeners: Arc<ListenerSet>,
    admin: OwnedFd,
    admin_listen: String,
    handed_over: watch::Sender<bool>,
}

impl crate::upgrade::Donor for Donor {
    fn sockets(&self) -> Vec<(SocketInfo, OwnedFd)> {
        let mut out = self.listeners.sockets();
        if let Ok(fd) = self.admin.try_clone() {
            let info = SocketInfo {
                name: "admin".into(),
                kind: Kind::Admin,
                listen: self.admin_listen.clone(),
            };
            out.push((info, fd));
        }
        out
    }

    fn handed_over(&self) {
        self.handed_over.send_replace(true);
    }

    fn quic_reset_key(&self) -> Vec<u8> {
        self.listeners.quic_reset_key().to_vec()
    }
}

/// 64 random bytes from the OS.
fn random_key() -> anyhow::Result<Vec<u8>> {
    use ring::rand::SecureRandom;
    let mut key = vec![0u8; 64];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("no randomness for the QUIC reset key"))?;
    Ok(key)
}
