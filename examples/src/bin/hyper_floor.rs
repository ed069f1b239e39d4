//! The floor under Portcullis' plain-proxy throughput: the smallest HTTP/1.1 reverse proxy
//! that can be built on the same stack (tokio current-thread runtime, hyper 1 server and
//! client connections, mimalloc, TCP_NODELAY, pooled keep-alive upstream connections) and
//! nothing else: no routing, no passport, no header rewriting, no timeouts, no limits.
//! It is **not** a usable proxy (it bounds nothing); it exists so `bench/run.sh` can show how
//! much of the gap to nginx/HAProxy is the stack and how much is Portcullis' own work.
//!
//! ```text
//! hyper_floor LISTEN UPSTREAM [spawn|inline]
//! ```
//!
//! `spawn` (default) drives each upstream connection on its own task, as hyper's docs do and
//! as Portcullis does; `inline` drives it from the request's task (the request future while
//! waiting for the head, the response body while streaming), trading a task hand-off per
//! request for more bookkeeping.
#![forbid(unsafe_code)]

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOC: portcullis_alloc::Mimalloc = portcullis_alloc::Mimalloc;

type Conn = client::Connection<TokioIo<TcpStream>, Incoming>;
type Tx = client::SendRequest<Incoming>;

/// Upper bound on idle upstream connections kept (the bench uses 64 client connections).
const MAX_IDLE: usize = 256;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: hyper_floor LISTEN UPSTREAM [spawn|inline]");
    };
    let inline = match args.get(2).map(String::as_str) {
        None | Some("spawn") => false,
        Some("inline") => true,
        Some(m) => anyhow::bail!("unknown mode {m}"),
    };
    let upstream: Rc<str> = Rc::from(upstream.as_str());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let l = TcpListener::bind(listen).await?;
        let spawned: Rc<RefCell<Vec<Tx>>> = Rc::default();
        let inlined: Rc<RefCell<Vec<(Tx, Conn)>>> = Rc::default();
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let (up, spawned, inlined) = (upstream.clone(), spawned.clone(), inlined.clone());
            tokio::task::spawn_local(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (up, spawned, inlined) = (up.clone(), spawned.clone(), inlined.clone());
                    async move {
                        if inline {
                            forward_inline(&up, &inlined, req).await
                        } else {
                            forward_spawned(&up, &spawned, req)
                                .await
                                .map(|r| r.map(Either::A))
                        }
                    }
                });
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
        #[allow(unreachable_code)]
        Ok::<_, anyhow::Error>(())
    })
}

async fn connect(up: &str) -> anyhow::Result<(Tx, Conn)> {
    let s = TcpStream::connect(up).await?;
    let _ = s.set_nodelay(true);
    Ok(client::handshake(TokioIo::new(s)).await?)
}

async fn forward_spawned(
    up: &str,
    pool: &RefCell<Vec<Tx>>,
    req: Request<Incoming>,
) -> anyhow::Result<Response<Incoming>> {
    let mut tx = loop {
        let idle = pool.borrow_mut().pop();
        match idle {
            Some(mut tx) if !tx.is_closed() => {
                if tx.ready().await.is_ok() {
                    break tx;
                }
            }
            Some(_) => continue,
            None => {
                let (tx, conn) = connect(up).await?;
                tokio::task::spawn_local(conn);
                break tx;
            }
        }
    };
    let resp = tx.send_request(req).await?;
    let mut q = pool.borrow_mut();
    if q.len() < MAX_IDLE {
        q.push(tx);
    }
    Ok(resp)
}

async fn forward_inline(
    up: &str,
    pool: &Rc<RefCell<Vec<(Tx, Conn)>>>,
    req: Request<Incoming>,
) -> anyhow::Result<Response<Either>> {
    let (mut tx, mut conn) = loop {
        let idle = pool.borrow_mut().pop();
        match idle {
            Some((mut tx, mut conn)) => {
                let ok = poll_fn(|cx| {
                    if let Poll::Ready(r) = tx.poll_ready(cx) {
                        return Poll::Ready(r.is_ok());
                    }
                    match Pin::new(&mut conn).poll(cx) {
                        Poll::Ready(_) => Poll::Ready(false),
                        Poll::Pending => {
                            Poll::Ready(matches!(tx.poll_ready(cx), Poll::Ready(Ok(()))))
                        }
                    }
                })
                .await;
                if ok {
                    break (tx, conn);
                }
            }
            None => break connect(up).await?,
        }
    };
    let mut fut = std::pin::pin!(tx.send_request(req));
    let mut conn_done = false;
    let resp = poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if !conn_done && Pin::new(&mut conn).poll(cx).is_ready() {
            conn_done = true;
        }
        fut.as_mut().poll(cx)
    })
    .await?;
    let up = (!conn_done).then_some((tx, conn));
    Ok(resp.map(|inner| {
        Either::B(Box::new(InlineBody {
            inner,
            up,
            pool: pool.clone(),
        }))
    }))
}

/// A response body that drives its upstream connection while it streams and hands the
/// connection back to the pool once the body was read to its end.
struct InlineBody {
    inner: Incoming,
    up: Option<(Tx, Conn)>,
    pool: Rc<RefCell<Vec<(Tx, Conn)>>>,
}

impl Body for InlineBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(f) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(f);
        }
        if let Some((_, conn)) = &mut this.up {
            if Pin::new(conn).poll(cx).is_ready() {
                this.up = None;
            }
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for InlineBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(up) = self.up.take() {
                let mut q = self.pool.borrow_mut();
                if q.len() < MAX_IDLE {
                    q.push(up);
                }
            }
        }
    }
}

enum Either {
    A(Incoming),
    B(Box<InlineBody>),
}

impl Body for Either {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Either::A(b) => Pin::new(b).poll_frame(cx),
            Either::B(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Either::A(b) => b.is_end_stream(),
            Either::B(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Either::A(b) => b.size_hint(),
            Either::B(b) => b.size_hint(),
        }
    }
}
