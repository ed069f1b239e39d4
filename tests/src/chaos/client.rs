//! Client abuse: slowloris, malformed requests, HTTP/2 floods and bombs, slow readers. Each
//! runs beside a normal client (`Normal`) whose failures are the case's lost requests.

use super::{case, Case, Ctx, Gw, Normal, Outcome};
use crate::h2raw::*;
use crate::Upstream;
use http::Request;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            "slowloris: 300 connections, one header byte / 500 ms (client_header_ms 1000)",
            "every one closed within 3 s; the normal client served",
            ci = true,
            slowloris
        ),
        case!(
            "malformed HTTP/1.1 (CL+TE, bad chunk size, 80 KiB header, HTTP/9.9)",
            "400 / 400 / 431 / 400; only the bad chunk's head reaches the upstream (cut there)",
            ci = true,
            malformed
        ),
        case!(
            "HTTP/2 PING flood",
            "connection closed within 5 s (control_frame_flood); the normal client served",
            ci = true,
            ping_flood
        ),
        case!(
            "HTTP/2 SETTINGS flood",
            "connection closed within 5 s (control_frame_flood); the normal client served",
            ci = false,
            settings_flood
        ),
        case!(
            "HTTP/2 rapid reset (HEADERS + RST_STREAM, up to 20,000 streams)",
            "connection closed before the flood ends; the normal client served",
            ci = true,
            rapid_reset
        ),
        case!(
            "HTTP/2 CONTINUATION flood (a 16 MiB literal, 64 MiB of frames)",
            "connection closed (GOAWAY ENHANCE_YOUR_CALM); no request reaches the upstream",
            ci = false,
            continuation_flood
        ),
        case!(
            "HPACK bomb (100 × 4 KB from a 4.5 KB block)",
            "connection closed; no request reaches the upstream",
            ci = false,
            hpack_bomb_case
        ),
        case!(
            "HTTP/2 half-open streams (8 of max_concurrent_streams 8, client_body_idle_ms 500)",
            "each answered 408 client-body-timeout; the slots come back",
            ci = false,
            half_open
        ),
        case!(
            "slow readers of a 256 MiB response (HTTP/1.1 and HTTP/2, client_write_idle_ms 800)",
            "both cut; gateway RSS grows < 64 MiB; the normal client served",
            ci = false,
            slow_readers
        ),
    ]
}

/// The normal client's summary appended to `observed`; its failures are `lost`.
async fn finish(
    gw: Gw,
    stop: Arc<AtomicBool>,
    normal: Arc<Normal>,
    observed: String,
    pass: bool,
) -> Outcome {
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (n, lost) = normal.summary();
    let served = normal.ok.load(Ordering::Relaxed) > 0;
    gw.outcome(
        format!("{observed}; {n}"),
        lost,
        pass && lost == 0 && served,
    )
    .await
}

/// A gateway with two clusters: `a` for the normal client, `x` for the abuse, whose
/// upstream's request count shows what got through.
struct Rig {
    gw: Gw,
    stop: Arc<AtomicBool>,
    normal: Arc<Normal>,
    x: Upstream,
    _a: Upstream,
}

async fn with_upstream(c: &Ctx, extra: &str) -> Rig {
    let a = Upstream::start("a").await;
    let x = Upstream::start("x").await;
    let mut body = String::new();
    for (name, addr) in [("a", a.addr), ("x", x.addr)] {
        body.push_str(&format!(
            "[[cluster]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n[[route]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"/{name}\" }}\ncluster = \"{name}\"\n"
        ));
    }
    body.push_str(extra);
    let mut gw = c.gateway(&body).await;
    gw.baseline();
    let stop = Arc::new(AtomicBool::new(false));
    let normal = Normal::start(gw.addr, "/a/echo", stop.clone());
    Rig {
        gw,
        stop,
        normal,
        x,
        _a: a,
    }
}

impl Rig {
    async fn finish(self, observed: String, pass: bool) -> Outcome {
        finish(self.gw, self.stop, self.normal, observed, pass).await
    }
}

async fn slowloris(c: &Ctx) -> Outcome {
    let rig = with_upstream(c, "[timeouts]\nclient_header_ms = 1000\n").await;
    let addr = rig.gw.addr;
    let t0 = Instant::now();
    let mut conns = Vec::new();
    for i in 0..300 {
        conns.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return None;
            };
            let _ = s
                .write_all(format!("GET /x/loris/{i} HTTP/1.1\r\nHost: x\r\n").as_bytes())
                .await;
            let (mut r, mut w) = s.into_split();
            let drip = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if w.write_all(b"X").await.is_err() {
                        return;
                    }
                }
            });
            let mut buf = [0u8; 1024];
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            drip.abort();
            closed.ok().map(|()| Instant::now())
        }));
    }
    let mut open = 0;
    let mut last = t0;
    for h in conns {
        match h.await.ok().flatten() {
            Some(t) => last = last.max(t),
            None => open += 1,
        }
    }
    let took = last - t0;
    let pass = open == 0 && took < Duration::from_secs(3);
    rig.finish(
        format!("{} of 300 closed, the last after {took:.2?}", 300 - open),
        pass,
    )
    .await
}

/// Sends `bytes`, reads until the gateway closes (at most 5 s): the status line.
async fn raw_h1(addr: SocketAddr, bytes: &[u8]) -> String {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return "connect failed".into();
    };
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await {
        Ok(_) => String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or("closed, no answer")
            .to_string(),
        Err(_) => "no answer, still open after 5 s".into(),
    }
}

async fn malformed(c: &Ctx) -> Outcome {
    let rig = with_upstream(c, "").await;
    // Past the default `max_header_bytes` (64 KiB).
    let mut big = b"GET /x/echo HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 80 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    // (bytes, status, how many may reach the upstream): a bad chunk is found mid-body, after
    // the head was forwarded (bodies stream), so that upstream request is cut, not answered.
    let cases: [(&[u8], &str, u64); 4] = [
        (
            &b"POST /x/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
            "400",
            0,
        ),
        (
            &b"POST /x/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            "400",
            1,
        ),
        (&big[..], "431", 0),
        (&b"GET / HTTP/9.9\r\n\r\n"[..], "400", 0),
    ];
    let mut seen = Vec::new();
    let mut pass = true;
    for (bytes, want, may_reach) in cases {
        let before = rig.x.requests();
        let line = raw_h1(rig.gw.addr, bytes).await;
        let reached = rig.x.requests() - before;
        pass &= line.starts_with(&format!("HTTP/1.1 {want}")) && reached <= may_reach;
        seen.push(format!(
            "{} ({reached} upstream)",
            line.chars().take(28).collect::<String>()
        ));
    }
    rig.finish(seen.join(" / "), pass).await
}

/// Floods frames from `make` (500 per write) until the connection closes or 10 s pass: how
/// long it took to be closed.
async fn flood(
    addr: SocketAddr,
    make: impl Fn(u32) -> Vec<u8> + Send + 'static,
) -> Option<Duration> {
    let s = raw(addr, true).await;
    let (mut r, mut w) = s.into_split();
    let t0 = Instant::now();
    let writer = tokio::spawn(async move {
        let mut n = 0u32;
        while t0.elapsed() < Duration::from_secs(10) {
            let batch: Vec<u8> = (0..500)
                .flat_map(|_| {
                    n += 1;
                    make(n)
                })
                .collect();
            if batch.is_empty() {
                // Done sending; hold the connection open (a FIN would close it for us).
                tokio::time::sleep_until((t0 + Duration::from_secs(10)).into()).await;
                return;
            }
            if w.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let closed = until_closed(&mut r, Duration::from_secs(10)).await;
    writer.abort();
    closed.map(|_| t0.elapsed())
}

async fn control_flood(c: &Ctx, kind: u8) -> Outcome {
    let rig = with_upstream(c, "[limits]\nh2_max_control_frames_per_sec = 200\n").await;
    let took = flood(rig.gw.addr, move |_| {
        if kind == PING {
            frame(PING, 0, 0, &[7; 8])
        } else {
            frame(SETTINGS, 0, 0, &[])
        }
    })
    .await;
    let counted = rig.gw
        .metric("portcullis_h2_connection_errors_total{listener=\"main\",reason=\"control_frame_flood\"}")
        .await;
    let pass = took.is_some_and(|t| t < Duration::from_secs(5)) && counted >= 1.0;
    let observed = match took {
        Some(t) => format!("closed after {t:.2?}, counted {counted}"),
        None => "still open after 10 s".into(),
    };
    rig.finish(observed, pass).await
}

async fn ping_flood(c: &Ctx) -> Outcome {
    control_flood(c, PING).await
}
async fn settings_flood(c: &Ctx) -> Outcome {
    control_flood(c, SETTINGS).await
}

async fn rapid_reset(c: &Ctx) -> Outcome {
    let rig = with_upstream(c, "").await;
    let took = flood(rig.gw.addr, |n| {
        // Client streams are odd and increasing; stop at 20,000 streams.
        let id = 2 * n - 1;
        if n > 20_000 {
            return Vec::new();
        }
        let mut f = frame(HEADERS, END_HEADERS | END_STREAM, id, &hpack_get("/x/echo"));
        f.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
        f
    })
    .await;
    let reached = rig.x.requests();
    let observed = match took {
        Some(t) => {
            format!("closed after {t:.2?}; {reached} of the reset streams reached the upstream")
        }
        None => format!("still open after 10 s; {reached} reached the upstream"),
    };
    rig.finish(observed, took.is_some() && reached < 2_000)
        .await
}

async fn continuation_flood(c: &Ctx) -> Outcome {
    let rig = with_upstream(c, "").await;
    let s = raw(rig.gw.addr, true).await;
    let (mut r, mut w) = s.into_split();
    let mut first = hpack_get("/x/echo");
    first.push(0x00);
    first.extend(hpack_str(b"x-flood"));
    first.extend_from_slice(&[0x7f, 0x80, 0x80, 0x80, 0x08]); // a 16 MiB literal
    let writer = tokio::spawn(async move {
        if w.write_all(&frame(HEADERS, END_STREAM, 1, &first))
            .await
            .is_err()
        {
            return;
        }
        let cont = frame(CONTINUATION, 0, 1, &[b'z'; 16 * 1024]);
        for _ in 0..4096 {
            if w.write_all(&cont).await.is_err() {
                return;
            }
        }
    });
    let closed = until_closed(&mut r, Duration::from_secs(10)).await;
    writer.abort();
    let calm = rig
        .gw
        .metric(
            "portcullis_h2_connection_errors_total{listener=\"main\",reason=\"enhance_your_calm\"}",
        )
        .await;
    let reached = rig.x.requests();
    let observed = format!(
        "{}, enhance_your_calm {calm}, {reached} reached the upstream",
        if closed.is_some() {
            "closed"
        } else {
            "still open after 10 s"
        }
    );
    let pass = closed.is_some() && reached == 0;
    rig.finish(observed, pass).await
}

async fn hpack_bomb_case(c: &Ctx) -> Outcome {
    let rig = with_upstream(c, "").await;
    let mut s = raw(rig.gw.addr, true).await;
    let bomb = hpack_bomb("/x/bomb", 4000, 100);
    let _ = s
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &bomb))
        .await;
    let closed = until_closed(&mut s, Duration::from_secs(5)).await;
    let reached = rig.x.requests();
    let observed = format!(
        "{}-byte block: {}, {reached} reached the upstream",
        bomb.len(),
        if closed.is_some() {
            "connection closed"
        } else {
            "still open after 5 s"
        }
    );
    rig.finish(observed, closed.is_some() && reached == 0).await
}

async fn half_open(c: &Ctx) -> Outcome {
    let rig = with_upstream(
        c,
        "[limits]\nmax_concurrent_streams = 8\n[timeouts]\nclient_body_idle_ms = 500\n",
    )
    .await;
    let t0 = Instant::now();
    let mut statuses = Vec::new();
    let result: Result<(), String> = async {
        let s = TcpStream::connect(rig.gw.addr)
            .await
            .map_err(|e| e.to_string())?;
        let (client, conn) = h2::client::handshake(s).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let mut held = Vec::new();
        for i in 0..8 {
            let req = Request::post(format!("http://localhost/x/upload?i={i}"))
                .body(())
                .map_err(|e| e.to_string())?;
            client = client.ready().await.map_err(|e| e.to_string())?;
            held.push(client.send_request(req, false).map_err(|e| e.to_string())?);
        }
        for (resp, _tx) in held {
            let r = tokio::time::timeout(Duration::from_secs(5), resp)
                .await
                .map_err(|_| "a stream still held after 5 s".to_string())?
                .map_err(|e| e.to_string())?;
            statuses.push(r.status().as_u16());
        }
        Ok(())
    }
    .await;
    let took = t0.elapsed();
    let all_408 = statuses.len() == 8 && statuses.iter().all(|s| *s == 408);
    let observed = match &result {
        Ok(()) => format!(
            "{} of 8 answered 408 after {took:.2?}",
            statuses.iter().filter(|s| **s == 408).count()
        ),
        Err(e) => format!("{e} ({} answered)", statuses.len()),
    };
    rig.finish(observed, result.is_ok() && all_408).await
}

const BIG: u64 = 256 << 20;

async fn slow_readers(c: &Ctx) -> Outcome {
    let rig = with_upstream(c, "[timeouts]\nclient_write_idle_ms = 800\n").await;
    let addr = rig.gw.addr;
    // HTTP/2: a stream whose window is never opened (h2's data is taken, never released).
    let h2 = tokio::spawn(async move {
        let s = TcpStream::connect(addr).await.ok()?;
        let (client, conn) = h2::client::handshake(s).await.ok()?;
        tokio::spawn(conn);
        let mut client = client.ready().await.ok()?;
        let req = Request::get(format!("http://localhost/x/download/{BIG}"))
            .body(())
            .ok()?;
        let (resp, _) = client.send_request(req, true).ok()?;
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .ok()?
            .ok()?;
        let mut body = resp.into_body();
        let mut got = 0u64;
        let reset = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match body.data().await {
                    Some(Ok(d)) => got += d.len() as u64,
                    Some(Err(_)) => return true,
                    None => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
        Some((reset, got))
    });
    // HTTP/1.1: ask, read nothing for 3 s, then drain what the socket buffers hold.
    let mut h1 = TcpStream::connect(addr).await.ok();
    if let Some(s) = h1.as_mut() {
        let _ = s
            .write_all(format!("GET /x/download/{BIG} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut h1_got = 0u64;
    let h1_closed = match h1 {
        Some(mut s) => {
            let mut buf = vec![0u8; 1 << 16];
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => h1_got += n as u64,
                    }
                }
            })
            .await
            .is_ok()
        }
        None => false,
    };
    let h2 = h2.await.ok().flatten();
    let grew = rig
        .gw
        .peak
        .load(Ordering::Relaxed)
        .saturating_sub(rig.gw.before);
    let pass = h1_closed
        && h1_got < BIG / 4
        && h2.is_some_and(|(reset, got)| reset && got <= 1 << 20)
        && grew < 64 << 20;
    let observed = format!(
        "h1 {} after {} MiB; h2 {}; RSS grew {} MiB at most",
        if h1_closed { "closed" } else { "still open" },
        h1_got >> 20,
        match h2 {
            Some((true, got)) => format!("reset after {} KiB", got >> 10),
            Some((false, got)) => format!("ended cleanly after {} KiB", got >> 10),
            None => "failed to start".into(),
        },
        grew >> 20
    );
    rig.finish(observed, pass).await
}
