//! Per-endpoint HTTP/1.1 keep-alive connection pool.
//!
//! Why our own pool rather than a generic client: the request state machine needs to see
//! acquire/connect as separate passport states, count reuse exactly, bound open connections
//! per endpoint, and hand a connection back only once its response body was fully read (a
//! half-read response must never be reused). LIFO reuse keeps the hot set of connections
//! small and warm, so idle ones age out.

use crate::request::body::UpBody;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
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

/// Why a connection could not be had. Callers branch on it for status and passport state.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} timed out")]
    Timeout { addr: Arc<str> },
    #[error("connect to {addr} failed: {source}")]
    Failed {
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
}

struct Idle {
    sender: http1::SendRequest<UpBody>,
    since: Instant,
    uses: u64,
    permit: OwnedSemaphorePermit,
}

/// A connection checked out of the pool for one request.
pub struct Conn {
    pub sender: http1::SendRequest<UpBody>,
    uses: u64,
    permit: OwnedSemaphorePermit,
    /// True when this connection served an earlier request.
    pub reused: bool,
    /// Time spent in TCP connect + handshake (zero when reused): waiting on the upstream.
    pub connect_time: Duration,
}

pub struct Pool {
    addr: Arc<str>,
    cfg: PoolConfig,
    idle: Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
    pub new_connections: AtomicU64,
    pub reused: AtomicU64,
    pub connect_failures: AtomicU64,
}

impl Pool {
    pub fn new(addr: Arc<str>, cfg: PoolConfig) -> Self {
        Pool {
            addr,
            idle: Mutex::new(Vec::with_capacity(cfg.max_idle.min(1024))),
            permits: Arc::new(Semaphore::new(cfg.max_connections)),
            cfg,
            new_connections: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        }
    }

    pub fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    /// Connections open now (idle + busy).
    pub fn open(&self) -> usize {
        self.cfg.max_connections - self.permits.available_permits()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }

    /// Checks out a ready connection: the most recently used idle one, or a new one.
    /// `deadline` bounds waiting for a connection slot, the TCP connect and the handshake.
    pub async fn acquire(&self, deadline: Instant) -> Result<Conn, ConnectError> {
        loop {
            let idle = {
                let mut q = self.idle.lock();
                q.pop()
            };
            let Some(mut idle) = idle else { break };
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
                permit: idle.permit,
                reused: true,
                connect_time: Duration::ZERO,
            });
        }
        let started = Instant::now();
        let addr = self.addr.clone();
        let res = tokio::time::timeout_at(deadline.into(), async {
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ConnectError::Timeout { addr: addr.clone() })?;
            let stream = TcpStream::connect(&*addr)
                .await
                .map_err(|source| ConnectError::Failed {
                    addr: addr.clone(),
                    source,
                })?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = http1::Builder::new()
                .handshake::<_, UpBody>(TokioIo::new(stream))
                .await
                .map_err(|source| ConnectError::Handshake {
                    addr: addr.clone(),
                    source,
                })?;
            let a = addr.clone();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(upstream = %a, error = %e, "upstream connection ended with error");
                }
            });
            Ok::<_, ConnectError>((sender, permit))
        })
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
            permit,
            reused: false,
            connect_time: started.elapsed(),
        })
    }

    /// Returns a connection whose response was read to the end. Connections that are closed,
    /// worn out, or beyond the idle cap are dropped (closing them).
    pub fn release(&self, conn: Conn) {
        let uses = conn.uses + 1;
        if conn.sender.is_closed() || uses >= self.cfg.max_requests_per_connection {
            return;
        }
        let mut q = self.idle.lock();
        if q.len() < self.cfg.max_idle {
            q.push(Idle {
                sender: conn.sender,
                since: Instant::now(),
                uses,
                permit: conn.permit,
            });
        }
    }

    /// Closes idle connections past the idle timeout. Called periodically.
    pub fn reap(&self, now: Instant) {
        let mut q = self.idle.lock();
        q.retain(|i| {
            !i.sender.is_closed() && now.saturating_duration_since(i.since) <= self.cfg.idle_timeout
        });
    }
}
