//! The client listeners a gateway serves, started at boot and changed by a reload: an added
//! listener is bound before the new config is committed (a taken port fails the reload and
//! changes nothing), a removed one stops accepting and drains, and a changed one is served
//! anew on the same kernel socket when its address did not change, so no client is refused.

use crate::config::{self, Config};
use crate::reload::{ListenerHook, Live};
use crate::server::{self, h3, tls};
use crate::telemetry::Metrics;
use crate::upgrade::{Inherited, Kind, SocketInfo};
use anyhow::Context as _;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A listener that serves now.
struct Running {
    def: config::Listener,
    addr: SocketAddr,
    /// Duplicates of its sockets: what a changed definition or an upgrade serves on next.
    tcp: OwnedFd,
    udp: Option<OwnedFd>,
    stop: watch::Sender<bool>,
    handed_over: Arc<AtomicBool>,
}

/// A listener bound (or taken over) and not yet serving.
pub(crate) struct Bound {
    def: config::Listener,
    tcp: std::net::TcpListener,
    udp: Option<std::net::UdpSocket>,
    /// Loaded while binding, so a bad certificate fails the reload, not the commit.
    tls: Option<(Arc<rustls::ServerConfig>, Arc<tls::SniResolver>)>,
}

/// Where a listener's sockets come from: the previous process, the listener it replaces, or
/// a fresh bind.
pub(crate) enum Source<'a> {
    Fresh,
    Inherited(&'a mut Inherited),
}

pub(crate) struct ListenerSet {
    live: Weak<Live>,
    metrics: Arc<Metrics>,
    /// Signs QUIC stateless resets; kept across upgrades (`server::h3::bind`).
    quic_reset_key: Arc<[u8]>,
    running: Mutex<Vec<Running>>,
    tasks: Mutex<JoinSet<()>>,
}

/// Binds `listen` as the gateway's listening sockets are bound: address reuse (a restart is
/// not refused by sockets in TIME_WAIT), no Nagle, a 4096 backlog.
pub(crate) fn bind_tcp(listen: &str) -> anyhow::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("bad address `{listen}`"))?;
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_tcp_nodelay(true)?;
    sock.bind(&addr.into())
        .with_context(|| format!("cannot listen on {addr}"))?;
    sock.listen(4096)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

impl Bound {
    /// Binds `def`, or takes its sockets from the previous process.
    pub(crate) fn new(def: &config::Listener, src: Source<'_>) -> anyhow::Result<Bound> {
        let (tcp, udp) = match src {
            Source::Inherited(inh) => (
                inh.take_tcp(Kind::Tcp, &def.listen)?,
                inh.take(Kind::Udp, &def.listen)
                    .map(std::net::UdpSocket::from),
            ),
            Source::Fresh => (None, None),
        };
        let tcp = match tcp {
            Some(t) => t,
            None => bind_tcp(&def.listen)?,
        };
        let udp = match (def.http3 && def.tls.is_some(), udp) {
            (false, _) => None,
            (true, Some(u)) => Some(u),
            (true, None) => Some(
                std::net::UdpSocket::bind(tcp.local_addr()?)
                    .context("HTTP/3: cannot bind the UDP port")?,
            ),
        };
        Bound::with_tls(def, tcp, udp)
    }

    fn with_tls(
        def: &config::Listener,
        tcp: std::net::TcpListener,
        udp: Option<std::net::UdpSocket>,
    ) -> anyhow::Result<Bound> {
        let tls = match &def.tls {
            Some(t) => Some(tls::server_config(t).context("TLS")?),
            None => None,
        };
        Ok(Bound {
            def: def.clone(),
            tcp,
            udp,
            tls,
        })
    }

    /// Serves `def` on the sockets of `r` (a changed definition at the same address).
    fn reuse(def: &config::Listener, r: &Running) -> anyhow::Result<Bound> {
        let tcp = std::net::TcpListener::from(r.tcp.try_clone()?);
        tcp.set_nonblocking(true)?;
        let udp = match (&r.udp, def.http3 && def.tls.is_some()) {
            (_, false) => None,
            (Some(u), true) => Some(std::net::UdpSocket::from(u.try_clone()?)),
            (None, true) => Some(std::net::UdpSocket::bind(tcp.local_addr()?)?),
        };
        Bound::with_tls(def, tcp, udp)
    }
}

impl ListenerSet {
    pub(crate) fn new(
        live: &Arc<Live>,
        metrics: Arc<Metrics>,
        quic_reset_key: Arc<[u8]>,
    ) -> Arc<ListenerSet> {
        Arc::new(ListenerSet {
            live: Arc::downgrade(live),
            metrics,
            quic_reset_key,
            running: Mutex::new(Vec::new()),
            tasks: Mutex::new(JoinSet::new()),
        })
    }

    /// Starts serving `b`: the accept loop, HTTP/3 if asked, and the certificate watcher.
    pub(crate) fn start(&self, b: Bound) -> anyhow::Result<()> {
        let live = self
            .live
            .upgrade()
            .ok_or_else(|| anyhow::anyhow!("the gateway is shutting down"))?;
        let l = &b.def;
        let addr = b.tcp.local_addr()?;
        let metrics = self.metrics.listener(&l.name);
        let (stop, stop_rx) = watch::channel(false);
        let handed_over = Arc::new(AtomicBool::new(false));
        let tcp_dup = b.tcp.as_fd().try_clone_to_owned()?;
        let udp_dup = match &b.udp {
            Some(u) => Some(u.as_fd().try_clone_to_owned()?),
            None => None,
        };
        let mut tasks = self.tasks.lock();
        let mut alt_svc = None;
        let acceptor = match (&l.tls, b.tls) {
            (Some(t), Some((server_cfg, resolver))) => {
                if let Some(udp) = b.udp {
                    let h3l = h3::H3Listener {
                        metrics: metrics.clone(),
                        addr,
                        tls: server_cfg.clone(),
                        max_connections: l.max_connections,
                        max_streams: l.http3_max_streams,
                        idle_timeout: Duration::from_millis(l.http3_idle_timeout_ms),
                        handed_over: handed_over.clone(),
                    };
                    let endpoint = h3::bind(&h3l, Some(udp), &self.quic_reset_key)
                        .with_context(|| format!("listener `{}` HTTP/3 on udp {addr}", l.name))?;
                    tracing::info!(listener = %l.name, %addr, "serving HTTP/3 over QUIC");
                    alt_svc =
                        http::HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", addr.port()))
                            .ok();
                    tasks.spawn(h3::serve(live.clone(), h3l, endpoint, stop_rx.clone()));
                }
                tasks.spawn(tls::watch_reload(
                    l.name.clone(),
                    t.clone(),
                    resolver,
                    metrics.tls_reloads.clone(),
                    stop_rx.clone(),
                ));
                Some(tokio_rustls::TlsAcceptor::from(server_cfg))
            }
            _ => None,
        };
        tracing::info!(listener = %l.name, %addr, tls = acceptor.is_some(), "listening");
        let listener = server::Listener {
            tcp: tokio::net::TcpListener::from_std(b.tcp)?,
            tls: acceptor,
            metrics,
            max_connections: l.max_connections,
            alt_svc,
            max_tunnels: l.max_tunnels,
            proxy_protocol: l.proxy_protocol,
        };
        tasks.spawn(server::serve(live, listener, stop_rx));
        self.running.lock().push(Running {
            def: b.def,
            addr,
            tcp: tcp_dup,
            udp: udp_dup,
            stop,
            handed_over,
        });
        Ok(())
    }

    /// The bound address of listener `name`.
    pub(crate) fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.running
            .lock()
            .iter()
            .find(|r| r.def.name == name)
            .map(|r| r.addr)
    }

    pub(crate) fn quic_reset_key(&self) -> &[u8] {
        &self.quic_reset_key
    }

    /// Duplicates of every listening socket, for a hand-over to a new process.
    pub(crate) fn sockets(&self) -> Vec<(SocketInfo, OwnedFd)> {
        let mut out = Vec::new();
        for r in self.running.lock().iter() {
            let info = |kind| SocketInfo {
                name: r.def.name.clone(),
                kind,
                listen: r.def.listen.clone(),
            };
            if let Ok(fd) = r.tcp.try_clone() {
                out.push((info(Kind::Tcp), fd));
            }
            if let Some(fd) = r.udp.as_ref().and_then(|u| u.try_clone().ok()) {
                out.push((info(Kind::Udp), fd));
            }
        }
        out
    }

    /// Stops every listener: `handed_over` when a new process serves the same sockets.
    pub(crate) fn stop_all(&self, handed_over: bool) {
        for r in self.running.lock().drain(..) {
            stop(r, handed_over);
        }
    }

    /// Waits for every listener task to end (each drains for up to `drain_ms`).
    pub(crate) async fn join(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        while tasks.join_next().await.is_some() {}
    }

    pub(crate) fn abort(&self) {
        self.tasks.lock().abort_all();
    }
}

/// Stops one listener: it stops accepting and drains its connections. Its socket closes
/// once nothing else holds it (a listener serving the same socket, or a new process).
fn stop(r: Running, handed_over: bool) {
    r.handed_over.store(handed_over, Ordering::Release);
    let _ = r.stop.send(true);
    tracing::info!(listener = %r.def.name, addr = %r.addr, "listener stopped; draining");
}

impl ListenerHook for ListenerSet {
    fn prepare(
        &self,
        _old: &Config,
        new: &Config,
    ) -> Result<Box<dyn FnOnce() -> Vec<String> + Send + '_>, Vec<String>> {
        let running = self.running.lock();
        let mut bound = Vec::new();
        let mut problems = Vec::new();
        let mut replaced = Vec::new();
        for def in &new.listeners {
            // Same address as a running listener (same name or renamed): serve its socket.
            let same_name = running.iter().position(|r| r.def.name == def.name);
            let same_addr = running.iter().position(|r| r.def.listen == def.listen);
            if same_name.is_some_and(|i| running[i].def == *def) {
                continue;
            }
            let b = match same_addr {
                Some(i) => Bound::reuse(def, &running[i]).inspect(|_| replaced.push(i)),
                None => Bound::new(def, Source::Fresh),
            };
            match b {
                Ok(b) => bound.push(b),
                Err(e) => problems.push(format!("listener.{}: {e:#}", def.name)),
            }
            if let Some(i) = same_name {
                replaced.push(i);
            }
        }
        let removed: Vec<String> = running
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                replaced.contains(i) || !new.listeners.iter().any(|d| d.name == r.def.name)
            })
            .map(|(_, r)| r.def.name.clone())
            .collect();
        drop(running);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(move || self.commit(bound, removed)))
    }
}

impl ListenerSet {
    /// Stops the listeners named in `removed` (removed or replaced), then starts `bound`.
    /// Returns the problems of any that could not start (their sockets are closed).
    fn commit(&self, bound: Vec<Bound>, removed: Vec<String>) -> Vec<String> {
        let stopped: Vec<Running> = {
            let mut running = self.running.lock();
            let (out, keep) = running
                .drain(..)
                .partition(|r| removed.contains(&r.def.name));
            *running = keep;
            out
        };
        for r in stopped {
            // A replaced HTTP/3 endpoint must stop reading the shared UDP socket at once.
            let shared = bound.iter().any(|b| b.def.listen == r.def.listen);
            stop(r, shared);
        }
        let mut problems = Vec::new();
        for b in bound {
            let name = b.def.name.clone();
            if let Err(e) = self.start(b) {
                problems.push(format!("listener.{name}: {e:#}"));
            }
        }
        problems
    }
}
