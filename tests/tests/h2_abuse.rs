//! HTTP/2 abuse against an h2c listener, with hand-built frames and the `h2` crate's client:
//! each abuse is cut at its bound, counted in `portcullis_h2_connection_errors_total{reason}`,
//! and a normal client on another connection is served meanwhile. Slow readers (HTTP/1.1 and
//! HTTP/2) of a 256 MiB response hold bounded memory.
//!
//! The tests run one at a time (`serial`): the RSS test measures this whole process, and the
//! floods compete for the same two cores.

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_tests::h2raw::*;
use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Held by each test for its whole run (each `#[tokio::test]` has its own runtime; tokio's
/// mutex works across them, and a failed test does not poison it).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A normal client on its own h2c connection: `n` requests, each answered 200 within `bound`.
async fn normal_client_is_served(addr: SocketAddr, n: usize, bound: Duration) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..n {
        let req = Request::builder()
            .uri(format!("http://localhost/a/echo?normal={i}"))
            .body(body(""))
            .unwrap();
        let t = Instant::now();
        let resp = tokio::time::timeout(bound, async {
            let r = tx.send_request(req).await.unwrap();
            let status = r.status();
            r.into_body().collect().await.unwrap();
            status
        })
        .await
        .unwrap_or_else(|_| panic!("normal request {i} not answered within {bound:?}"));
        assert_eq!(resp, 200, "normal request {i}");
        assert!(t.elapsed() < bound);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn h2_errors(reason: &str) -> String {
    format!("portcullis_h2_connection_errors_total{{listener=\"main\",reason=\"{reason}\"}}")
}

async fn h2_error_count(admin: SocketAddr, reason: &str) -> f64 {
    sample(&metrics(admin).await, &h2_errors(reason)).unwrap_or(f64::NAN)
}

/// Floods control frames from `make` in batches until the server closes the connection (or
/// 10 s pass), reading and dropping the server's answers meanwhile. How long it took.
async fn flood(addr: SocketAddr, make: impl Fn() -> Vec<u8> + Send + 'static) -> Option<Duration> {
    let s = raw(addr, true).await;
    let (mut r, mut w) = s.into_split();
    let t0 = Instant::now();
    let writer = tokio::spawn(async move {
        let batch: Vec<u8> = (0..500).flat_map(|_| make()).collect();
        while t0.elapsed() < Duration::from_secs(10) {
            if w.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let closed = until_closed(&mut r, Duration::from_secs(10)).await;
    writer.abort();
    closed.map(|_| t0.elapsed())
}

/// PING and SETTINGS floods (from a client that reads every answer, so h2's one-pending-
/// answer rule never stops it) are closed at `[limits] h2_max_control_frames_per_sec`.
#[tokio::test]
async fn ping_and_settings_floods_are_closed_and_others_are_served() {
    let _s = SERIAL.lock().await;
    let a = Upstream::start("a").await;
    let cfg = basic_config(
        &[("a", a.addr)],
        "[limits]\nh2_max_control_frames_per_sec = 200\n",
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();

    let pings = tokio::spawn(flood(addr, || frame(PING, 0, 0, &[7; 8])));
    normal_client_is_served(addr, 5, Duration::from_secs(2)).await;
    let took = pings
        .await
        .unwrap()
        .expect("the PING flood was never cut off");
    assert!(
        took < Duration::from_secs(5),
        "PING flood cut after {took:?}"
    );

    // Empty SETTINGS count once each; a SETTINGS with 50 parameters counts 50 times.
    let settings = tokio::spawn(flood(addr, || frame(SETTINGS, 0, 0, &[])));
    normal_client_is_served(addr, 5, Duration::from_secs(2)).await;
    let took = settings
        .await
        .unwrap()
        .expect("the SETTINGS flood was never cut off");
    assert!(
        took < Duration::from_secs(5),
        "SETTINGS flood cut after {took:?}"
    );
    let wide = tokio::spawn(flood(addr, || {
        let param: [u8; 6] = [0, 3, 0, 0, 0, 100]; // MAX_CONCURRENT_STREAMS = 100
        frame(SETTINGS, 0, 0, &param.repeat(50))
    }));
    assert!(
        wide.await.unwrap().is_some(),
        "wide SETTINGS flood never cut off"
    );

    assert!(
        wait_for_metric(
            admin,
            &h2_errors("control_frame_flood"),
            Duration::from_secs(3),
            |v| v >= 3.0
        )
        .await,
        "{}",
        metrics(admin).await
    );
    // A client well under the rate (a few PINGs, as keep-alive does) keeps its connection.
    let mut s = raw(addr, true).await;
    for _ in 0..20 {
        s.write_all(&frame(PING, 0, 0, &[1; 8])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(until_closed(&mut s, Duration::from_millis(500)).await, None);
    gw.shutdown().await;
}

/// HEADERS without END_HEADERS, then CONTINUATION frames without end: h2's own bound
/// (CONTINUATION frames per block, from `max_header_bytes`: 5 at 64 KiB) closes the
/// connection with GOAWAY ENHANCE_YOUR_CALM, also before the client acknowledged our
/// SETTINGS (h2 applies `max_header_list_size` from the first frame).
#[tokio::test]
async fn continuation_floods_are_cut_whether_or_not_settings_were_acknowledged() {
    let _s = SERIAL.lock().await;
    let a = Upstream::start("a").await;
    let cfg = basic_config(&[("a", a.addr)], "");
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();

    for ack in [true, false] {
        let s = raw(addr, ack).await;
        let (mut r, mut w) = s.into_split();
        // The block starts a literal header whose value claims 16 MiB: h2's decoder waits
        // for more, buffering what arrives.
        let mut first = hpack_get("/a/echo");
        first.push(0x00);
        first.extend(hpack_str(b"x-flood"));
        // 127 + 8 × 128³ (RFC 7541 §5.1 integer, 7-bit prefix).
        first.extend_from_slice(&[0x7f, 0x80, 0x80, 0x80, 0x08]);
        let writer = tokio::spawn(async move {
            if w.write_all(&frame(HEADERS, END_STREAM, 1, &first))
                .await
                .is_err()
            {
                return;
            }
            let cont = frame(CONTINUATION, 0, 1, &[b'z'; 16 * 1024]);
            // At most 64 MiB: far past every bound.
            for _ in 0..4096 {
                if w.write_all(&cont).await.is_err() {
                    return;
                }
            }
        });
        let flood =
            tokio::spawn(async move { until_closed(&mut r, Duration::from_secs(10)).await });
        normal_client_is_served(addr, 5, Duration::from_secs(2)).await;
        let closed = flood.await.unwrap();
        writer.abort();
        assert!(
            closed.is_some(),
            "ack={ack}: a CONTINUATION flood kept its connection"
        );
    }
    let m = metrics(admin).await;
    assert_eq!(
        sample(&m, &h2_errors("enhance_your_calm")),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        a.requests(),
        10,
        "only the normal requests reached the upstream"
    );
    gw.shutdown().await;
}

/// HPACK bombs: small header blocks that decode to far more. More fields than `max_headers`
/// (one-byte references to one tiny field; h2 has no count limit) get the gateway's 431; a
/// decoded size past `max_header_bytes` gets h2's 431, past 4 × it h2's GOAWAY
/// ENHANCE_YOUR_CALM. None reaches an upstream; the connection survives the 431s.
#[tokio::test]
async fn hpack_bombs_never_reach_an_upstream() {
    let _s = SERIAL.lock().await;
    let a = Upstream::start("a").await;
    let cfg = basic_config(&[("a", a.addr)], "");
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();

    for ack in [false, true] {
        let mut s = raw(addr, ack).await;
        // 301 fields "x-bomb: a" of 39 bytes each (RFC 9113 size): 12 KB, far under 64 KiB.
        let bomb = hpack_bomb("/a/echo", 1, 300);
        assert!(bomb.len() < 400);
        s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &bomb))
            .await
            .unwrap();
        // 30 × 4 KB: past 64 KiB, under 4 × 64 KiB.
        let bomb = hpack_bomb("/a/echo", 4000, 30);
        s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &bomb))
            .await
            .unwrap();
        // Both answered 431 on a connection that stays open.
        assert_eq!(until_closed(&mut s, Duration::from_millis(500)).await, None);
        // 100 × 4 KB: past 4 × 64 KiB, the connection is closed.
        let bomb = hpack_bomb("/a/echo", 4000, 100);
        assert!(bomb.len() < 5000);
        s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 5, &bomb))
            .await
            .unwrap();
        let closed = until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(
            closed.is_some(),
            "ack={ack}: an HPACK bomb past 4× kept its connection"
        );
        normal_client_is_served(addr, 3, Duration::from_secs(2)).await;
    }
    let m = metrics(admin).await;
    assert_eq!(sample(&m, &h2_errors("too_many_headers")), Some(2.0), "{m}");
    assert_eq!(
        sample(&m, &h2_errors("enhance_your_calm")),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        a.requests(),
        6,
        "only the normal requests reached the upstream"
    );
    gw.shutdown().await;
}

/// An upstream that reads the whole request body before it answers, as most do.
async fn collecting_upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let n = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        Ok::<_, std::convert::Infallible>(http::Response::new(body(format!(
                            "{n}\n"
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// An idle connection holding `max_concurrent_streams` half-open streams (HEADERS without
/// END_STREAM, no body ever): each is answered 408 at `client_body_idle_ms`, and the slots
/// come back; a normal client is served meanwhile.
#[tokio::test]
async fn half_open_streams_are_answered_408_at_client_body_idle_ms() {
    let _s = SERIAL.lock().await;
    let a = Upstream::start("a").await;
    let u = collecting_upstream().await;
    let cfg = basic_config(
        &[("a", a.addr), ("u", u)],
        "[limits]\nmax_concurrent_streams = 8\n[timeouts]\nclient_body_idle_ms = 500\n",
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();

    let s = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(s).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let t0 = Instant::now();
    let mut held = Vec::new();
    for i in 0..8 {
        let req = Request::post(format!("http://localhost/u/upload?i={i}"))
            .body(())
            .unwrap();
        client = client.ready().await.unwrap();
        let (resp, body_tx) = client.send_request(req, false).unwrap();
        held.push((resp, body_tx));
    }
    normal_client_is_served(addr, 5, Duration::from_secs(2)).await;
    for (i, (resp, _tx)) in held.into_iter().enumerate() {
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .unwrap_or_else(|_| panic!("half-open stream {i} still held after 5 s"))
            .unwrap();
        assert_eq!(resp.status(), 408, "stream {i}");
        assert_eq!(resp.headers()["portcullis-error"], "client-body-timeout");
    }
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    // The slots are free again: a full request on the same connection.
    let mut client = client.ready().await.unwrap();
    let (resp, mut tx) = client
        .send_request(
            Request::post("http://localhost/u/upload").body(()).unwrap(),
            false,
        )
        .unwrap();
    tx.send_data(Bytes::from_static(b"hello"), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.shutdown().await;
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

const BIG: u64 = 256 << 20;

/// An h2 stream whose client never opens its flow-control window (it takes the first 64 KiB
/// window's worth and never releases it): reset at `client_write_idle_ms`.
async fn h2_reader_that_never_opens_its_window(addr: SocketAddr) -> (u64, Duration) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(s).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = Request::get(format!("http://localhost/a/download/{BIG}"))
        .body(())
        .unwrap();
    let t0 = Instant::now();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    // `data()` hands over what h2 buffered; without `release_capacity` no WINDOW_UPDATE is
    // ever sent, so the gateway cannot send more than the initial window.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match body.data().await {
                Some(Ok(d)) => got += d.len() as u64,
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await;
    let e = ended
        .unwrap_or_else(|_| panic!("the stream stayed open ({got} bytes) with its window shut"))
        .expect("the stream ended cleanly instead of being reset");
    assert_eq!(e.reason(), Some(h2::Reason::CANCEL), "{e}");
    (got, t0.elapsed())
}

/// Reads nothing until `until` (well past the write timeout: the socket buffers, several
/// MiB on loopback, fill first), then asserts the connection ends once they are drained, far
/// short of the whole response.
async fn h1_read_after(mut h1: TcpStream, until: Instant) {
    tokio::time::sleep_until(until.into()).await;
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match h1.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "h1: the connection stayed open ({got} bytes)"
    );
    assert!(got < BIG / 4, "h1: {got} of {BIG} bytes arrived");
}

/// hyper's HTTP/1.1 server (`[http] http1_server = "hyper"`) has no write timeout of its own:
/// the connection-level one (`server::io`) cuts a client that stopped reading.
#[tokio::test]
async fn hyper_http1_slow_reader_is_cut_at_client_write_idle_ms() {
    let _s = SERIAL.lock().await;
    let a = Upstream::start("a").await;
    let cfg = basic_config(
        &[("a", a.addr)],
        "[timeouts]\nclient_write_idle_ms = 400\n[http]\nhttp1_server = \"hyper\"\n",
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let mut h1 = TcpStream::connect(addr).await.unwrap();
    h1.write_all(format!("GET /a/download/{BIG} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    h1_read_after(h1, Instant::now() + Duration::from_secs(2)).await;
    let (p, _) = send(addr, get(addr, "/a/echo")).await;
    assert_eq!(p.status, 200);
    gw.shutdown().await;
}

/// Slow readers of a 256 MiB response on HTTP/1.1 and HTTP/2: both are cut at
/// `client_write_idle_ms` (the h2 stream is reset; the HTTP/1.1 connection closed), this
/// process (the gateway runs in it) grows by far less than the response, and a normal client
/// is served meanwhile.
#[tokio::test]
async fn slow_readers_of_256_mib_are_cut_at_client_write_idle_ms_with_bounded_memory() {
    let _s = SERIAL.lock().await;
    let a = Upstream::start("a").await;
    let cfg = basic_config(&[("a", a.addr)], "[timeouts]\nclient_write_idle_ms = 800\n");
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();
    normal_client_is_served(addr, 1, Duration::from_secs(2)).await;
    let before = rss_bytes();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let p = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            p.fetch_max(rss_bytes(), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let h2 = tokio::spawn(h2_reader_that_never_opens_its_window(addr));
    // HTTP/1.1: ask, then read nothing.
    let mut h1 = TcpStream::connect(addr).await.unwrap();
    h1.write_all(format!("GET /a/download/{BIG} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let h1_asked = Instant::now();
    normal_client_is_served(addr, 10, Duration::from_secs(2)).await;
    let (h2_got, h2_took) = h2.await.unwrap();
    assert!(
        h2_got <= 1 << 20,
        "h2: {h2_got} bytes arrived with the window shut"
    );
    assert!(
        h2_took >= Duration::from_millis(800),
        "h2 reset after {h2_took:?}"
    );
    h1_read_after(h1, h1_asked + Duration::from_secs(3)).await;
    sampler.abort();
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    eprintln!(
        "RSS {} MiB before, grew by at most {} KiB",
        before >> 20,
        grew >> 10
    );
    assert!(grew < 64 << 20, "RSS grew by {} MiB", grew >> 20);
    assert_eq!(h2_error_count(admin, "stream_write_idle").await, 1.0);
    gw.shutdown().await;
}
