//! A fast, fixed-answer upstream for `bench/run.sh`: HTTP/1.1 keep-alive, a 13-byte body,
//! a single-threaded tokio runtime so it uses one core at most.
//!
//! Usage: `bench_upstream 127.0.0.1:PORT [127.0.0.1:PORT ...]` (one listener per address).
#![forbid(unsafe_code)]

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello, bench\n";

fn main() -> anyhow::Result<()> {
    let addrs: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!addrs.is_empty(), "usage: bench_upstream ADDR [ADDR ...]");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for a in addrs {
            let l = TcpListener::bind(&a).await?;
            tasks.push(tokio::spawn(accept_loop(l)));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

async fn accept_loop(l: TcpListener) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req| async {
                let mut r = Response::new(Full::new(Bytes::from_static(BODY)));
                r.headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("text/plain"));
                Ok::<_, Infallible>(r)
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}
