//! The client side against hyper's client on the same bytes, and the exchanges a proxy
//! depends on: early answers, interim responses, connection reuse.
//!
//! Every case is a real upstream on 127.0.0.1 that reads the request head and answers with
//! fixed bytes. Both clients must agree on every well-formed case (status, version, fields,
//! body) and must both refuse every malformed one.

use super::client::{self, Outgoing, ReqHead};
use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Empty, StreamBody};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream on 127.0.0.1 that runs `serve` on the first connection it accepts.
async fn one_connection<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((s, _)) = l.accept().await {
            serve(s).await;
        }
    });
    addr
}

/// Reads into `got` until it holds a whole request head; false if the client went away.
async fn read_head(s: &mut TcpStream, got: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// Serves `answer` to one connection after the request head (and what of its body has
/// arrived), then closes.
async fn upstream(answer: Vec<u8>) -> std::net::SocketAddr {
    one_connection(|mut s| async move {
        if !read_head(&mut s, &mut Vec::new()).await {
            return;
        }
        let mut buf = [0u8; 4096];
        let _ = s.write_all(&answer).await;
        let _ = s.shutdown().await;
        // Drain what the client still sends, so the close is a FIN, not a reset.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    })
    .await
}

/// What a client made of a response: `Err` for any refusal, else the parts that matter.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    version: http::Version,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn fields(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

async fn ours(answer: &[u8], method: &Method) -> Result<Seen, String> {
    let addr = upstream(answer.to_vec()).await;
    let io = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let headers = HeaderMap::new();
    let head = ReqHead {
        method,
        target: "/",
        headers: &headers,
        host: "127.0.0.1",
        extra: None,
    };
    let resp = client::send(io, head, Outgoing::<Empty<Bytes>>::Empty)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Seen {
        status: parts.status.as_u16(),
        version: parts.version,
        fields: fields(&parts.headers),
        body: body.to_vec(),
    })
}

async fn hypers(answer: &[u8], method: &Method) -> Result<Seen, String> {
    let addr = upstream(answer.to_vec()).await;
    let io = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method.clone())
        .uri("/")
        .header("host", "127.0.0.1")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Seen {
        status: parts.status.as_u16(),
        version: parts.version,
        fields: fields(&parts.headers),
        body: body.to_vec(),
    })
}

/// Responses both clients read the same way.
const WELL_FORMED: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\nuntil the close",
    b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi",
    b"HTTP/1.0 200 OK\r\n\r\nten-ish bytes",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nraw until close",
    b"HTTP/1.1 404 \r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 599 Whatever \xe9\r\ncontent-length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\ncontent-length: 2\n\nhi",
    b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nX-Mixed-Case: v\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbyes",
    b"HTTP/1.1 200 OK\r\nx-empty:\r\ncontent-length: 0\r\n\r\n",
];

/// Responses both clients refuse (at the head or in the body).
const MALFORMED: &[&[u8]] = &[
    b"",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"HTTP/1.1 abc OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 20 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a : 1\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: a\0b\r\ncontent-length: 0\r\n\r\n",
    b"ICY 200 OK\r\n\r\n",
];

#[tokio::test]
async fn well_formed_responses_read_as_hyper_reads_them() {
    for answer in WELL_FORMED {
        let (o, h) = (
            ours(answer, &Method::GET).await,
            hypers(answer, &Method::GET).await,
        );
        let shown = String::from_utf8_lossy(answer);
        assert!(o.is_ok(), "ours refused {shown:?}: {o:?}");
        assert_eq!(o, h, "on {shown:?}");
    }
}

#[tokio::test]
async fn malformed_responses_are_refused_as_hyper_refuses_them() {
    for answer in MALFORMED {
        let (o, h) = (
            ours(answer, &Method::GET).await,
            hypers(answer, &Method::GET).await,
        );
        let shown = String::from_utf8_lossy(answer);
        assert!(o.is_err(), "ours accepted {shown:?}: {o:?}");
        assert!(h.is_err(), "hyper accepted {shown:?}: {h:?}");
    }
}

#[tokio::test]
async fn limits_match_hyper() {
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=client::MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"content-length: 0\r\n\r\n");
    let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    let mut near = huge.clone();
    // hyper's bound is its read buffer's, so it is checked a read's worth late: compare well
    // inside and well outside it.
    huge.resize(client::MAX_HEAD_BYTES * 2, b'a');
    huge.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    near.resize(client::MAX_HEAD_BYTES - 1024, b'a');
    near.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    let mut just = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..client::MAX_HEADERS - 1 {
        just.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    just.extend_from_slice(b"content-length: 0\r\n\r\n");
    for (answer, ok) in [(&many, false), (&huge, false), (&just, true), (&near, true)] {
        let (o, h) = (
            ours(answer, &Method::GET).await,
            hypers(answer, &Method::GET).await,
        );
        assert_eq!(o.is_ok(), ok, "ours: {:?}", o.as_ref().map(|s| s.status));
        assert_eq!(
            h.is_ok(),
            ok,
            "hyper: {:?} on {} bytes",
            h.as_ref().map(|s| s.status),
            answer.len()
        );
        if ok {
            assert_eq!(o, h);
        }
    }
}

#[tokio::test]
async fn a_head_request_reads_no_body_as_hyper_does() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    let (o, h) = (
        ours(answer, &Method::HEAD).await,
        hypers(answer, &Method::HEAD).await,
    );
    assert_eq!(o.as_ref().map(|s| s.body.len()), Ok(0));
    assert_eq!(o, h);
}

#[tokio::test]
async fn transfer_encoding_drops_a_contradicting_length() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let o = ours(answer, &Method::GET).await.expect("read");
    assert_eq!(o.body, b"hello");
    assert!(o.fields.iter().all(|(k, _)| k != "content-length"));
    // hyper reads the same body (and keeps the stale length, which a proxy must not forward).
    let h = hypers(answer, &Method::GET).await.expect("hyper read");
    assert_eq!(h.body, b"hello");
}

/// A keep-alive upstream that answers every request on one connection, and says what it got.
async fn keep_alive_upstream(
    answers: Vec<Vec<u8>>,
) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let addr = one_connection(|mut s| async move {
        let mut got = Vec::new();
        for answer in answers {
            if !read_head(&mut s, &mut got).await {
                return;
            }
            let _ = tx.send(std::mem::take(&mut got)).await;
            if s.write_all(&answer).await.is_err() {
                return;
            }
        }
        let _ = s.read(&mut [0u8; 64]).await;
    })
    .await;
    (addr, rx)
}

#[tokio::test]
async fn a_response_read_to_its_end_gives_the_connection_back() {
    let (addr, mut got) = keep_alive_upstream(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none".to_vec(),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nthree".to_vec(),
    ])
    .await;
    let mut io = Some(TcpStream::connect(addr).await.expect("connect"));
    let headers = HeaderMap::new();
    for (i, want) in ["one", "two", "three"].into_iter().enumerate() {
        let head = ReqHead {
            method: &Method::GET,
            target: "/n",
            headers: &headers,
            host: "up.test",
            extra: None,
        };
        let conn = io.take().expect("the connection came back");
        let resp = client::send(conn, head, Outgoing::<Empty<Bytes>>::Empty)
            .await
            .expect("answer");
        let mut body = resp.into_body();
        let mut read = Vec::new();
        while let Some(f) = body.frame().await {
            read.extend_from_slice(&f.expect("frame").into_data().unwrap_or_default());
        }
        assert_eq!(read, want.as_bytes());
        io = body.take_reusable();
        assert_eq!(io.is_some(), i < 2, "reusable after response {i}");
        let req = got.recv().await.expect("request");
        assert!(
            req.starts_with(b"GET /n HTTP/1.1\r\nhost: up.test\r\n"),
            "{req:?}"
        );
    }
}

#[tokio::test]
async fn a_streamed_body_goes_up_chunked_or_with_its_length() {
    let (addr, mut got) = keep_alive_upstream(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
    ])
    .await;
    let io = TcpStream::connect(addr).await.expect("connect");
    let headers = HeaderMap::new();
    let head = ReqHead {
        method: &Method::POST,
        target: "/up",
        headers: &headers,
        host: "up.test",
        extra: None,
    };
    let parts = futures_util::stream::iter(
        ["ab", "cde"].map(|s| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(s)))),
    );
    let resp = client::send(io, head, Outgoing::Stream(StreamBody::new(parts)))
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);
    let mut req = got.recv().await.expect("request");
    // The head arrived first; the body may trail it by a read.
    tokio::time::sleep(Duration::from_millis(50)).await;
    while let Ok(more) = got.try_recv() {
        req.extend_from_slice(&more);
    }
    let text = String::from_utf8_lossy(&req);
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
}

/// An upstream that answers `413` as soon as the head is in and stops reading: the answer
/// is returned while the body is still open, and the connection is not reused.
#[tokio::test]
async fn an_early_answer_is_returned_while_the_body_is_open() {
    let addr = upstream(
        b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbig!"
            .to_vec(),
    )
    .await;
    let io = TcpStream::connect(addr).await.expect("connect");
    let headers = HeaderMap::new();
    let head = ReqHead {
        method: &Method::POST,
        target: "/up",
        headers: &headers,
        host: "up.test",
        extra: None,
    };
    // A body that never ends: only the early answer can end the exchange.
    let (_keep, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
    let body = StreamBody::new(tokio_stream_of(rx));
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client::send(io, head, Outgoing::Stream(body)),
    )
    .await
    .expect("the early answer ends the exchange")
    .expect("answer");
    assert_eq!(resp.status(), 413);
    let mut body = resp.into_body();
    let data = body.frame().await.expect("frame").expect("data");
    assert_eq!(data.into_data().unwrap_or_default(), "big!");
    assert!(body.frame().await.is_none());
    assert!(
        body.take_reusable().is_none(),
        "an early answer's connection is not reused"
    );
}

#[tokio::test]
async fn an_interim_answer_does_not_stop_the_upload() {
    // An upstream that sends `100 Continue` after the head, then reads the whole chunked
    // body and echoes it.
    let addr = one_connection(|mut s| async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut continued = false;
        loop {
            if !continued && got.windows(4).any(|w| w == b"\r\n\r\n") {
                continued = true;
                let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            }
            if got.ends_with(b"0\r\n\r\n") {
                break;
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        let body = got.split_off(at);
        let mut answer =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        answer.extend_from_slice(&body);
        let _ = s.write_all(&answer).await;
        let _ = s.read(&mut buf).await;
    })
    .await;
    let io = TcpStream::connect(addr).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let body = StreamBody::new(tokio_stream_of(rx));
    let send = tokio::spawn(async move {
        let headers = HeaderMap::new();
        let head = ReqHead {
            method: &Method::PUT,
            target: "/up",
            headers: &headers,
            host: "up.test",
            extra: None,
        };
        client::send(io, head, Outgoing::Stream(body)).await
    });
    // The 100 goes out after the head; the body follows it, in two pieces.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for piece in ["abc", "de"] {
        tx.send(Ok::<_, std::io::Error>(http_body::Frame::data(
            Bytes::from(piece),
        )))
        .await
        .expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tx);
    let resp = tokio::time::timeout(Duration::from_secs(5), send)
        .await
        .expect("in time")
        .expect("task")
        .expect("answer");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let echoed = body.frame().await.expect("frame").expect("data");
    assert_eq!(
        echoed.into_data().unwrap_or_default(),
        "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    );
    assert!(body.frame().await.is_none());
    assert!(
        body.take_reusable().is_some(),
        "the whole exchange happened: reusable"
    );
}

/// An upstream that starts an answer while the body is going up and never finishes its
/// head: what is read of it is bounded like any response head, and refused past the bound.
#[tokio::test]
async fn an_endless_head_during_the_upload_is_refused_at_the_head_bound() {
    let addr = one_connection(|mut s| async move {
        if !read_head(&mut s, &mut Vec::new()).await {
            return;
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nx-endless: ").await;
        let chunk = vec![b'a'; 64 * 1024];
        // Twice the bound, then silence: only the bound can end the exchange.
        for _ in 0..(2 * client::MAX_HEAD_BYTES / chunk.len() + 1) {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = s.read(&mut [0u8; 64]).await;
    })
    .await;
    let io = TcpStream::connect(addr).await.expect("connect");
    let headers = HeaderMap::new();
    let head = ReqHead {
        method: &Method::POST,
        target: "/up",
        headers: &headers,
        host: "up.test",
        extra: None,
    };
    let (_keep, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
    let body = StreamBody::new(tokio_stream_of(rx));
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        client::send(io, head, Outgoing::Stream(body)),
    )
    .await
    .expect("refused at the bound, not read forever");
    assert!(
        matches!(got, Err(client::Error::HeadTooLarge)),
        "{:?}",
        got.map(|r| r.status())
    );
}

/// An upstream that answers as soon as the head is in, then echoes each piece of the chunked
/// request body as a piece of its own: the upload goes on while the response is read.
#[tokio::test]
async fn the_upload_goes_on_after_the_answer_full_duplex() {
    let addr = one_connection(|mut s| async move {
        let mut got = Vec::new();
        if !read_head(&mut s, &mut got).await {
            return;
        }
        let mut buf = [0u8; 4096];
        let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        let mut seen = got.split_off(at);
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        loop {
            if !seen.is_empty() {
                let mut piece = format!("{:x}\r\n", seen.len()).into_bytes();
                piece.extend_from_slice(&seen);
                piece.extend_from_slice(b"\r\n");
                let _ = s.write_all(&piece).await;
            }
            if seen.ends_with(b"0\r\n\r\n") {
                let _ = s.write_all(b"0\r\n\r\n").await;
                break;
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen = buf[..n].to_vec(),
            }
        }
        let _ = s.read(&mut buf).await;
    })
    .await;
    let io = TcpStream::connect(addr).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let headers = HeaderMap::new();
    let head = ReqHead {
        method: &Method::POST,
        target: "/duplex",
        headers: &headers,
        host: "up.test",
        extra: None,
    };
    let body = StreamBody::new(tokio_stream_of(rx));
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client::send(io, head, Outgoing::Stream(body)),
    )
    .await
    .expect("the answer comes while the body is open")
    .expect("answer");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    for piece in ["ping-1", "ping-2"] {
        tx.send(Ok::<_, std::io::Error>(http_body::Frame::data(
            Bytes::from(piece),
        )))
        .await
        .expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("each piece comes back before the next goes up")
            .expect("frame")
            .expect("data")
            .into_data()
            .unwrap_or_default();
        assert_eq!(echoed, format!("6\r\n{piece}\r\n"));
    }
    drop(tx);
    let last = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the end of the upload comes back")
        .expect("frame")
        .expect("data");
    assert_eq!(last.into_data().unwrap_or_default(), "0\r\n\r\n");
    assert!(body.frame().await.is_none());
    assert!(
        body.take_reusable().is_some(),
        "both directions ended cleanly: reusable"
    );
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Unpin {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
