//! Per-endpoint upstream connection pool.
//!
//! Why our own pool rather than a generic client: the request state machine needs to see
//! acquire/connect as separate passport states, count reuse exactly, bound open connections
//! per endpoint, and hand an HTTP/1.1 connection back only once its response body was fully
//! read (a half-read response must never be reused). LIFO reuse keeps the hot set small and
//! warm, so idle connections age out. HTTP/2 endpoints share one multiplexed connection,
//! opened by one request while concurrent ones wait for it instead of stampeding.

use super::connect::{ConnectError, Connector, Sender};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    pub max_idle: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_requests_per_connection: u64,
}

impl From<&crate::config::Pool> for PoolConfig {
    fn from(p: &crate::config::Pool) -> Self {
        PoolConfig {
            max_idle: p.max_idle_per_endpoint,
            max_connections: p.max_connections_per_endpoint,
            idle_timeout: Duration::from_millis(p.idle_timeout_ms),
            max_requests_per_connection: p.max_requests_per_connection,
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
    uses: u64,
    permit: OwnedSemaphorePermit,
}

/// A connection checked out of the pool for one request.
pub struct Conn {
    pub sender: Sender,
    uses: u64,
    permit: Option<OwnedSemaphorePermit>,
    /// True when this connection served an earlier request.
    pub reused: bool,
    /// Time spent in TCP connect + TLS + handshake (zero when reused): waiting on upstream.
    pub connect_time: Duration,
}

impl Conn {
    /// Takes an HTTP/1.1 connection back from a response body that was read to its end
    /// (the body holds it while it reads). Without this the connection is not pooled again.
    pub(crate) fn reclaim(&mut self, body: &mut super::connect::UpstreamBody) {
        if let (Sender::H1(slot), super::connect::UpstreamBody::H1(b)) = (&mut self.sender, body) {
            *slot = b.take_reusable();
        }
    }
}

pub struct Pool {
    addr: Arc<str>,
    cfg: PoolConfig,
    connector: Connector,
    idle: Mutex<Vec<Idle>>,
    /// The shared HTTP/2 connection, if the cluster speaks h2.
    h2: tokio::sync::Mutex<Option<Sender>>,
    permits: Arc<Semaphore>,
    pub new_connections: AtomicU64,
    pub reused: AtomicU64,
    pub connect_failures: AtomicU64,
    /// The endpoint was removed from its cluster: connections are not pooled any more.
    retired: AtomicBool,
}

impl Pool {
    pub fn new(addr: Arc<str>, cfg: PoolConfig, connector: Connector) -> Self {
        Pool {
            addr,
            idle: Mutex::new(Vec::with_capacity(cfg.max_idle.min(1024))),
            h2: tokio::sync::Mutex::new(None),
            permits: Arc::new(Semaphore::new(cfg.max_connections)),
            cfg,
            connector,
            new_connections: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    pub fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// HTTP/1.1 connections open now (idle + busy).
    pub fn open(&self) -> usize {
        self.cfg.max_connections - self.permits.available_permits()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }

    /// Checks out a ready connection. `deadline` bounds waiting for a connection slot, the TCP
    /// connect and the handshakes. `fresh` skips the idle HTTP/1.1 connections and opens a
    /// new one: for the replay after a pooled connection was found dead, whose siblings the
    /// upstream probably closed too.
    pub async fn acquire(&self, deadline: Instant, fresh: bool) -> Result<Conn, ConnectError> {
        match self.connector.protocol() {
            crate::config::UpstreamProtocol::H1 => self.acquire_h1(deadline, fresh).await,
            crate::config::UpstreamProtocol::H2 => self.acquire_h2(deadline).await,
        }
    }

    async fn acquire_h2(&self, deadline: Instant) -> Result<Conn, ConnectError> {
        let timeout = || ConnectError::Timeout {
            addr: self.addr.clone(),
        };
        let mut slot = tokio::time::timeout_at(deadline.into(), self.h2.lock())
            .await
            .map_err(|_| timeout())?;
        if let Some(Sender::H2(s)) = slot.as_ref() {
            if !s.is_closed() {
                self.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(Conn {
                    sender: Sender::H2(s.clone()),
                    uses: 0,
                    permit: None,
                    reused: true,
                    connect_time: Duration::ZERO,
                });
            }
        }
        let started = Instant::now();
        // Boxed: opening a connection (TCP, TLS, handshake) is the cold path, and its future
        // is kilobytes; inline it would sit in every request's future.
        let sender = match tokio::time::timeout_at(
            deadline.into(),
            Box::pin(self.connector.connect(&self.addr)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            Err(_) => {
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                return Err(timeout());
            }
        };
        self.new_connections.fetch_add(1, Ordering::Relaxed);
        let out = match &sender {
            Sender::H2(s) => Sender::H2(s.clone()),
            // A connector configured for h2 always yields h2; keep the type honest anyway.
            Sender::H1(_) => {
                return Ok(Conn {
                    sender,
                    uses: 0,
                    permit: None,
                    reused: false,
                    connect_time: started.elapsed(),
                })
            }
        };
        *slot = Some(sender);
        Ok(Conn {
            sender: out,
            uses: 0,
            permit: None,
            reused: false,
            connect_time: started.elapsed(),
        })
    }

    async fn acquire_h1(&self, deadline: Instant, fresh: bool) -> Result<Conn, ConnectError> {
        // A fresh connection is wanted after a pooled one was found dead: skip the idle ones.
        let mut idle_left = !fresh;
        while idle_left {
            let idle = self.idle.lock().pop();
            let Some(mut idle) = idle else {
                idle_left = false;
                continue;
            };
            if idle.sender.is_closed() || idle.since.elapsed() > self.cfg.idle_timeout {
                continue;
            }
            if !idle.sender.is_ready() {
                // The previous response just ended; the connection task may not have caught up.
                let wait = Instant::now() + Duration::from_millis(20);
                match tokio::time::timeout_at(wait.min(deadline).into(), idle.sender.ready()).await
                {
                    Ok(Ok(())) => {}
                    _ => continue,
                }
            }
            self.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(Conn {
                sender: idle.sender,
                uses: idle.uses,
                permit: Some(idle.permit),
                reused: true,
                connect_time: Duration::ZERO,
            });
        }
        let started = Instant::now();
        let addr = self.addr.clone();
        // Boxed for the same reason as in `acquire_h2`: the request's future stays small.
        let res = tokio::time::timeout_at(
            deadline.into(),
            Box::pin(async {
                let permit = self
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ConnectError::Timeout { addr: addr.clone() })?;
                let sender = self.connector.connect(&addr).await?;
                Ok::<_, ConnectError>((sender, permit))
            }),
        )
        .await;
        let (sender, permit) = match res {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            Err(_) => {
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                return Err(ConnectError::Timeout { addr });
            }
        };
        self.new_connections.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            sender,
            uses: 0,
            permit: Some(permit),
            reused: false,
            connect_time: started.elapsed(),
        })
    }

    /// Returns a connection whose response was read to the end. HTTP/1.1 connections that are
    /// closed, worn out, or beyond the idle cap are dropped (closing them); HTTP/2 clones are
    /// simply dropped, the shared connection stays.
    pub fn release(&self, conn: Conn) {
        let Some(permit) = conn.permit else { return };
        let uses = conn.uses + 1;
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        if !conn.sender.is_usable() || uses >= self.cfg.max_requests_per_connection {
            return;
        }
        let mut q = self.idle.lock();
        if q.len() < self.cfg.max_idle {
            q.push(Idle {
                sender: conn.sender,
                since: Instant::now(),
                uses,
                permit,
            });
        }
    }

    /// Closes every idle connection: the endpoint left its cluster's set. Connections still
    /// busy finish their requests; [`Pool::release`] drops them after (`retired`).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.idle.lock().clear();
        // The shared h2 connection closes once the requests holding clones are done. Busy
        // slot: a request is opening it right now, and `release` of h2 clones pools nothing.
        if let Ok(mut h2) = self.h2.try_lock() {
            *h2 = None;
        }
    }

    /// Closes idle connections past the idle timeout. Called periodically.
    pub fn reap(&self, now: Instant) {
        let mut q = self.idle.lock();
        q.retain_mut(|i| {
            !i.sender.is_closed() && now.saturating_duration_since(i.since) <= self.cfg.idle_timeout
        });
    }
}
