//! Malformed and oversized input gets a 4xx with a reason, never a panic or a hang.

use portcullis_tests::*;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` and reads until the gateway closes the connection. Panics if it has not
/// closed it within 5 s: a gateway that hangs on bad input must not pass as "no answer".
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let t0 = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "{bytes:?}: the gateway neither answered nor closed within 5 s (got {:?})",
        String::from_utf8_lossy(&buf)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "{bytes:?}: answered only after {:?}",
        t0.elapsed()
    );
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_4xx() {
    let a = Upstream::start("a").await;
    let cfg = basic_config(
        &[("a", a.addr)],
        "[limits]\nmax_header_bytes = 16384\nmax_headers = 20\nmax_body_bytes = 1000\n",
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();

    for garbage in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /a/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let r = raw(addr, garbage).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{garbage:?} -> {r:?}");
    }

    // Head too large: one huge header, and too many headers.
    let mut big = b"GET /a/echo HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 32 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    assert!(raw(addr, &big).await.starts_with("HTTP/1.1 431"));
    let mut many = b"GET /a/echo HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..50 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(raw(addr, &many).await.starts_with("HTTP/1.1 431"));

    // Body over the limit: declared, and chunked without a length.
    let r = raw(
        addr,
        b"POST /a/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.contains("portcullis-error: body-too-large"));
    let mut chunked =
        b"POST /a/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend(std::iter::repeat_n(b'z', 0x200));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = raw(addr, &chunked).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");

    // Still serving after all that.
    let (p, _) = send(addr, get(addr, "/a/echo")).await;
    assert_eq!(p.status, 200);
    gw.shutdown().await;
}
