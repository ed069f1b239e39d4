//! A hand-written HTTP/1.1 upstream on 127.0.0.1 that misbehaves on purpose, per request path.
//!
//! hyper would refuse to send most of these answers, so the server speaks raw TCP: it reads a
//! request head (and a `Content-Length` body), counts it by path, then acts on the path's
//! first segment:
//!
//! | path | what goes back |
//! |---|---|
//! | `/reset-before-head` | nothing: the connection is reset (`SO_LINGER` 0, RST) |
//! | `/reset-after-head` | a 200 head (`Content-Length: 1000`), then a reset |
//! | `/reset-mid-body` | the head and 500 of 1000 body bytes, then a reset |
//! | `/half-close-before-head` | FIN (shutdown write) with nothing sent |
//! | `/half-close-after-head` | the head (`Content-Length: 1000`), then FIN |
//! | `/garbage-status` | `HTTP/1.1 OK200 fine`, not a status line |
//! | `/long-body` | `Content-Length: 10` and 30 body bytes |
//! | `/short-body` | `Content-Length: 1000`, 10 bytes, then FIN |
//! | `/chunked-bad-size` | chunked, a chunk size line `zz` |
//! | `/chunked-missing-crlf` | chunked, a 5-byte chunk not followed by CRLF |
//! | `/chunked-truncated` | chunked, half a chunk, then FIN |
//! | `/slow-body/{ms}` | `Content-Length: 20`, one byte every `ms` |
//! | anything else | `200`, `x-upstream: <name>`, body `<name> ok <path>\n`, kept alive |
//!
//! A connection that opens with a TLS record (first byte 0x16) gets a plain `HTTP/1.1 400` and
//! is closed: "plain bytes to a TLS cluster". [`Faulty::kill`] closes the listener and every
//! open connection at once (an endpoint dying under load).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Largest request head read; more is answered by closing the connection.
const MAX_HEAD: usize = 64 * 1024;
/// Longest a connection waits for its next request before closing (bounds every test).
const READ_IDLE: Duration = Duration::from_secs(30);

/// The server's shared state.
#[derive(Default)]
struct Shared {
    by_path: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
    accepted: AtomicU64,
    killed: AtomicBool,
    /// Answer one request per connection and close on the next one unanswered.
    one_shot: bool,
    /// Requests dropped that way (the keep-alive race, provoked).
    stale_closes: AtomicU64,
}

/// A misbehaving upstream; dropping it stops it.
pub struct Faulty {
    pub addr: SocketAddr,
    pub name: String,
    shared: Arc<Shared>,
    /// The accept loop and every connection task: aborted by [`Faulty::kill`] and on drop.
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Faulty {
    pub async fn start(name: &str) -> Faulty {
        Self::start_with(name, false).await
    }

    /// Answers the first request of each connection as a keep-alive response, then closes the
    /// connection unanswered when the next request arrives on it: the keep-alive race (an
    /// upstream closing an idle connection just as the gateway reuses it), every time.
    pub async fn start_one_shot(name: &str) -> Faulty {
        Self::start_with(name, true).await
    }

    async fn start_with(name: &str, one_shot: bool) -> Faulty {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind faulty upstream");
        let addr = l.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            one_shot,
            ..Shared::default()
        });
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let (s, t, n) = (shared.clone(), tasks.clone(), name.to_string());
        tasks.lock().expect("tasks").spawn(accept_loop(l, s, t, n));
        Faulty {
            addr,
            name: name.to_string(),
            shared,
            tasks,
        }
    }

    /// Requests read whose path starts with `prefix`.
    pub fn requests(&self, prefix: &str) -> u64 {
        let m = self.shared.by_path.lock().expect("counts");
        m.iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request read.
    pub fn total(&self) -> u64 {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// Connections accepted.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Requests a one-shot upstream closed unanswered on a reused connection.
    pub fn stale_closes(&self) -> u64 {
        self.shared.stale_closes.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection at once, as the kernel does for a killed
    /// process: a FIN where nothing is unread, a RST where a request was unread; requests in
    /// flight get no answer, and a connect is refused from now on.
    pub fn kill(&self) {
        self.shared.killed.store(true, Ordering::SeqCst);
        self.tasks.lock().expect("tasks").abort_all();
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept_loop(
    l: TcpListener,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<JoinSet<()>>>,
    name: String,
) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        if shared.killed.load(Ordering::SeqCst) {
            return;
        }
        let _ = s.set_nodelay(true);
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let (sh, n) = (shared.clone(), name.clone());
        let mut set = tasks.lock().expect("tasks");
        // Reap finished connection tasks so the set stays as small as the open connections.
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            let _ = serve(s, sh, n).await;
        });
    }
}

/// One connection: requests in a loop until a fault ends it or the peer goes.
async fn serve(mut s: TcpStream, shared: Arc<Shared>, name: String) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut served = 0u64;
    loop {
        let Some((head_len, path, body_len)) = read_head(&mut s, &mut buf).await? else {
            return Ok(());
        };
        if shared.one_shot && served > 0 {
            shared.stale_closes.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        served += 1;
        // The request body, if any, is read and discarded.
        let need = head_len + body_len;
        while buf.len() < need {
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(READ_IDLE, s.read(&mut chunk))
                .await
                .map_err(|_| std::io::ErrorKind::TimedOut)??;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..need);
        shared.total.fetch_add(1, Ordering::SeqCst);
        *shared
            .by_path
            .lock()
            .expect("counts")
            .entry(path.clone())
            .or_insert(0) += 1;
        if !answer(&mut s, &path, &name).await? {
            return Ok(());
        }
    }
}

/// Reads until a whole request head is in `buf`: its length, path and `Content-Length`.
/// `None` when the peer closed, sent a TLS record (answered in plain text) or too much.
async fn read_head(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(usize, String, usize)>> {
    loop {
        if buf.first() == Some(&0x16) {
            s.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await?;
            return Ok(None);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .to_string();
            let body_len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            return Ok(Some((end + 4, path, body_len)));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let mut chunk = [0u8; 8192];
        let n = match tokio::time::timeout(READ_IDLE, s.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => return Ok(None),
        };
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

const HEAD_1000: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";

/// Writes the answer `path` asks for. `Ok(true)` keeps the connection for another request.
async fn answer(s: &mut TcpStream, path: &str, name: &str) -> std::io::Result<bool> {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "reset-before-head" => {}
        "reset-after-head" => {
            s.write_all(HEAD_1000).await?;
            s.flush().await?;
            // Let the head arrive on its own before the reset.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        "reset-mid-body" => {
            s.write_all(HEAD_1000).await?;
            s.write_all(&[b'x'; 500]).await?;
            s.flush().await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        "half-close-before-head" => {
            s.shutdown().await?;
            linger_then_close(s).await;
            return Ok(false);
        }
        "half-close-after-head" => {
            s.write_all(HEAD_1000).await?;
            s.shutdown().await?;
            linger_then_close(s).await;
            return Ok(false);
        }
        "garbage-status" => {
            s.write_all(b"HTTP/1.1 OK200 fine\r\ncontent-length: 2\r\n\r\nok")
                .await?;
            linger_then_close(s).await;
            return Ok(false);
        }
        "long-body" => {
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789ABCDEFGHIJabcdefghij",
            )
            .await?;
            return Ok(true);
        }
        "short-body" => {
            s.write_all(HEAD_1000).await?;
            s.write_all(b"0123456789").await?;
            s.shutdown().await?;
            linger_then_close(s).await;
            return Ok(false);
        }
        "chunked-bad-size" => {
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n")
                .await?;
            linger_then_close(s).await;
            return Ok(false);
        }
        "chunked-missing-crlf" => {
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX5\r\nworld\r\n0\r\n\r\n")
                .await?;
            linger_then_close(s).await;
            return Ok(false);
        }
        "chunked-truncated" => {
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
                .await?;
            s.shutdown().await?;
            linger_then_close(s).await;
            return Ok(false);
        }
        "slow-body" => {
            let ms: u64 = path
                .rsplit('/')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(100);
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n")
                .await?;
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                s.write_all(b"s").await?;
            }
            return Ok(true);
        }
        _ => {
            let body = format!("{name} ok {path}\n");
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-upstream: {name}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await?;
            s.write_all(body.as_bytes()).await?;
            return Ok(true);
        }
    }
    // The reset faults end here: the error ends `serve`, which drops the socket, and linger 0
    // makes that a RST. (tokio deprecates `set_linger` because a *non-zero* linger blocks the
    // thread on drop; linger 0 never blocks.)
    #[allow(deprecated)]
    s.set_linger(Some(Duration::ZERO))?;
    Err(std::io::ErrorKind::ConnectionReset.into())
}

/// After a FIN (or a fault's last bytes): keep reading (and discarding) until the peer closes, at most 2 s, so the
/// close is the peer's decision and not a reset from unread data.
async fn linger_then_close(s: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
