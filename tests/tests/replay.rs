//! Replay safety (docs/config.md, `retry.*`): a request is retried only when replaying it is
//! safe: a replayable body (empty, or known-length up to `retry.max_buffered_body_bytes`), a
//! safe method (or `retry.idempotent`), a retryable outcome (`retry.on_status`, connect
//! failures, resets), and no response byte sent to the client yet.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One listener; cluster `c` over `endpoints`; one route per `(prefix, retry)` pair.
fn config(endpoints: &[SocketAddr], routes: &[(&str, &str)]) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    let mut s = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n[[cluster]]\nname = \"c\"\nendpoints = [{}]\n",
        eps.join(", ")
    );
    for (i, (prefix, retry)) in routes.iter().enumerate() {
        s.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\nmatch = {{ path_prefix = \"{prefix}\" }}\ncluster = \"c\"\n{retry}\n"
        ));
    }
    s
}

fn put(path: &str, len: usize) -> Request<BoxBody> {
    Request::builder()
        .method("PUT")
        .uri(path)
        .header("host", "x")
        .body(body(vec![b'p'; len]))
        .expect("request")
}

/// What happened to one request sent to `[resetting, good]`.
#[derive(Debug, PartialEq)]
enum Seen {
    /// Served by the good endpoint; `attempts` from `x-portcullis-attempts`.
    Ok { attempts: String },
    /// The resetting endpoint's failure reached the client.
    Reset,
}

async fn send_seen(addr: SocketAddr, req: Request<BoxBody>, len: usize) -> Seen {
    let (p, b) = send(addr, req).await;
    match p.status.as_u16() {
        200 => {
            assert_eq!(
                String::from_utf8_lossy(&b),
                len.to_string(),
                "the whole body reached the upstream"
            );
            Seen::Ok {
                attempts: header(&p, "x-portcullis-attempts"),
            }
        }
        502 => {
            assert_eq!(header(&p, "portcullis-error"), "upstream-reset");
            Seen::Reset
        }
        s => panic!("unexpected status {s}: {}", String::from_utf8_lossy(&b)),
    }
}

#[tokio::test]
async fn only_bodies_up_to_max_buffered_body_bytes_are_replayed() {
    let reset = Upstream::start_resetting("reset").await;
    let good = Upstream::start("good").await;
    let gw = gateway(
        &config(
            &[reset.addr, good.addr],
            &[(
                "/",
                "retry = { attempts = 2, max_buffered_body_bytes = 100 }",
            )],
        ),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");

    // 100 bytes (the limit): buffered, so a reset is replayed on the good endpoint.
    let mut replayed = 0;
    for _ in 0..8 {
        match send_seen(addr, put("/small/upload", 100), 100).await {
            Seen::Ok { attempts } if attempts == "2" => replayed += 1,
            Seen::Ok { attempts } => assert_eq!(attempts, "1"),
            Seen::Reset => panic!("a 100-byte PUT must be replayed after a reset"),
        }
    }
    assert!(
        replayed >= 1,
        "round robin sent some PUTs to the reset first"
    );

    // 101 bytes: over the limit, streamed once and never replayed.
    let (before, mut ok, mut failed) = (good.requests(), 0, 0);
    for _ in 0..8 {
        match send_seen(addr, put("/big/upload", 101), 101).await {
            Seen::Ok { attempts } => {
                assert_eq!(attempts, "1");
                ok += 1
            }
            Seen::Reset => failed += 1,
        }
    }
    assert!(failed >= 1, "some 101-byte PUTs hit the reset: {ok} ok");
    assert_eq!(
        good.requests() - before,
        ok,
        "no over-limit body was replayed"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_streamed_body_is_never_retried() {
    let reset = Upstream::start_resetting("reset").await;
    let good = Upstream::start("good").await;
    let gw = gateway(
        &config(
            &[reset.addr, good.addr],
            &[("/", "retry = { attempts = 3 }")],
        ),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..8 {
        // No content-length: the body is sent chunked, as it arrives, so it cannot be kept.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"tiny")))).await;
        });
        let req = Request::builder()
            .method("PUT")
            .uri("/s/upload")
            .header("host", "x")
            .body(StreamBody::new(ReceiverStream(rx)).boxed())
            .expect("request");
        match send_seen(addr, req, 4).await {
            Seen::Ok { attempts } => {
                assert_eq!(attempts, "1");
                ok += 1
            }
            Seen::Reset => failed += 1,
        }
    }
    assert!(failed >= 1, "some streamed PUTs hit the reset: {ok} ok");
    assert_eq!(good.requests(), ok, "no streamed body was replayed");
    gw.shutdown().await;
}

/// An upstream that answers the head and part of a 1000-byte body, then closes.
async fn half_answer() -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let n = Arc::new(AtomicU64::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => seen.extend_from_slice(&buf[..k]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nx-upstream: half\r\n\r\npartial")
                    .await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(s);
            });
        }
    });
    (addr, n)
}

#[tokio::test]
async fn no_retry_once_response_bytes_were_sent() {
    let (half, half_requests) = half_answer().await;
    let good = Upstream::start("good").await;
    let gw = gateway(
        &config(&[half, good.addr], &[("/", "retry = { attempts = 3 }")]),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    let mut cut = 0;
    for _ in 0..6 {
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(get(addr, "/x")))
            .await
            .expect("head in time")
            .expect("head");
        assert_eq!(resp.status(), 200);
        let from = resp
            .headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
            .await
            .expect("body ends in time");
        match from.as_str() {
            "good" => assert!(body.is_ok(), "the good endpoint's answer is whole"),
            "half" => {
                assert!(body.is_err(), "a cut answer must not look complete");
                cut += 1;
            }
            other => panic!("answer from {other:?}"),
        }
    }
    assert!(cut >= 1, "round robin reached the half-answering endpoint");
    assert_eq!(half_requests.load(Ordering::SeqCst), cut);
    assert_eq!(
        good.requests(),
        6 - cut,
        "a request whose answer had started was not tried again"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn retry_on_status_lists_the_retried_statuses() {
    let bad = Upstream::start_fixed("bad", 500, 0).await;
    let good = Upstream::start("good").await;
    let gw = gateway(
        &config(
            &[bad.addr, good.addr],
            &[
                ("/default", ""),
                ("/on500", "retry = { on_status = [500] }"),
            ],
        ),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    // Default on_status is [503]: a 500 is passed through.
    let (mut passed, mut ok) = (0, 0);
    for _ in 0..6 {
        let (p, _) = send(addr, get(addr, "/default/x")).await;
        match p.status.as_u16() {
            500 => {
                assert_eq!(header(&p, "x-upstream"), "bad");
                assert_eq!(header(&p, "x-portcullis-attempts"), "1");
                passed += 1
            }
            200 => ok += 1,
            s => panic!("status {s}"),
        }
    }
    assert!(passed >= 1, "some requests reached the 500 endpoint");
    assert_eq!(good.requests(), ok, "none was retried");
    // on_status = [500]: retried on the good endpoint.
    let before = good.requests();
    for _ in 0..6 {
        let (p, _) = send(addr, get(addr, "/on500/x")).await;
        assert_eq!(p.status, 200, "a listed status is retried");
        assert_eq!(header(&p, "x-upstream"), "good");
    }
    assert_eq!(good.requests() - before, 6);
    gw.shutdown().await;
}

#[tokio::test]
async fn retry_idempotent_makes_a_post_replayable() {
    let reset = Upstream::start_resetting("reset").await;
    let good = Upstream::start("good").await;
    let gw = gateway(
        &config(
            &[reset.addr, good.addr],
            &[("/plain", ""), ("/replay", "retry = { idempotent = true }")],
        ),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").expect("listener");
    let post = |path: &str| {
        Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "x")
            .body(body("order #1"))
            .expect("request")
    };
    let mut replayed = 0;
    for _ in 0..8 {
        match send_seen(addr, post("/replay/upload"), 8).await {
            Seen::Ok { attempts } if attempts == "2" => replayed += 1,
            Seen::Ok { .. } => {}
            Seen::Reset => panic!("retry.idempotent: the POST must be replayed"),
        }
    }
    assert!(replayed >= 1, "some POSTs hit the reset first");
    // The same POST on a route without it is never replayed.
    let mut failed = 0;
    for _ in 0..8 {
        if send_seen(addr, post("/plain/upload"), 8).await == Seen::Reset {
            failed += 1;
        }
    }
    assert!(
        failed >= 1,
        "without retry.idempotent a POST is not replayed"
    );
    gw.shutdown().await;
}
