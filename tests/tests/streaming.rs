//! Bodies stream both ways without being buffered whole, and the upload runs concurrently
//! with the response. Alone in its own test binary so the RSS measurement is not disturbed.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use portcullis_tests::*;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpStream;

/// Peak resident memory. Fails (rather than reading 0, which would pass any bound) where
/// `/proc/self/status` has no `VmHWM`.
fn rss_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status is needed to measure memory (Linux)");
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/self/status: {status}"));
    assert!(kib > 0, "VmHWM reads 0");
    kib
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_in_bounded_memory() {
    const SIZE: u64 = 256 * 1024 * 1024;
    let a = Upstream::start("a").await;
    let extra = "[limits]\nmax_body_bytes = 1073741824\n";
    let gw = gateway(&basic_config(&[("a", a.addr)], extra), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    // Warm up allocator arenas and pools before taking the baseline.
    let (p, _) = send(addr, get(addr, "/a/download/1048576")).await;
    assert_eq!(p.status, 200);
    let before = rss_hwm_kib();

    // Download: count bytes as they arrive, never holding the body.
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(get(addr, &format!("/a/download/{SIZE}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        got += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(got, SIZE);

    // Upload: a generated stream; the upstream counts what arrived.
    let (btx, brx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
        for _ in 0..SIZE / chunk.len() as u64 {
            if btx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                return;
            }
        }
    });
    let req = Request::builder()
        .method("POST")
        .uri("/a/upload")
        .header("host", "x")
        .header("content-length", SIZE)
        .body(StreamBody::new(ReceiverStream(brx)).boxed())
        .unwrap();
    let (p, b) = send(addr, req).await;
    assert_eq!(p.status, 200);
    assert_eq!(String::from_utf8_lossy(&b), SIZE.to_string());

    let grown_mib = rss_hwm_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "peak RSS grew by {grown_mib} MiB while streaming 2 x 256 MiB"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn request_body_uploads_while_the_response_streams_down() {
    let a = Upstream::start("a").await;
    let gw = gateway(&basic_config(&[("a", a.addr)], ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let (btx, brx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri("/a/duplex")
        .header("host", "x")
        .body(StreamBody::new(ReceiverStream(brx)).boxed())
        .unwrap();
    let pending = tokio::spawn(async move { tx.send_request(req).await });
    btx.send(Ok(Frame::data(Bytes::from_static(b"ping-1"))))
        .await
        .unwrap();
    // The response head arrives while the request body is still open.
    let resp = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("response head before the request body ended")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    for i in 1..=3 {
        // Each chunk we send comes back before we send the next one: no serialization.
        let echoed = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("echo in time")
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(&echoed[..], format!("ping-{i}").as_bytes());
        if i < 3 {
            btx.send(Ok(Frame::data(Bytes::from(format!("ping-{}", i + 1)))))
                .await
                .unwrap();
        }
    }
    drop(btx);
    assert!(tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .is_none());
    gw.shutdown().await;
}
