//! Differential test: the same bytes sent to this codec and to hyper's HTTP/1.1 server, with
//! the same handler that records what it saw. Wherever hyper serves a request, we must serve
//! the same request (method, target, version, headers, body); wherever hyper refuses, we
//! must refuse.

use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    uri: String,
    version: String,
    headers: Vec<(String, Vec<u8>)>,
    /// The body, or `None` when reading it failed.
    body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    seen: Vec<Seen>,
    /// Status codes of the responses on the wire, in order.
    statuses: Vec<u16>,
}

fn settings() -> Settings {
    Settings {
        limits: Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 32,
        },
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        write_idle_timeout: Duration::from_secs(1),
        error_headers: Arc::from(Vec::new()),
        detect_h2: false,
        read_buf_bytes: 8192,
    }
}

async fn record<B>(log: Log, req: Request<B>) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes>,
{
    let (p, b) = req.into_parts();
    let body = b.collect().await.ok().map(|c| c.to_bytes().to_vec());
    let mut headers: Vec<_> = p
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    headers.sort();
    log.lock().unwrap().push(Seen {
        method: p.method.to_string(),
        uri: p.uri.to_string(),
        version: format!("{:?}", p.version),
        headers,
        body,
    });
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

/// Sends `input` and reads what comes back until the server closes or is quiet for a while
/// (keep-alive: both servers wait for more). No half-close: hyper drops a request whose
/// client has shut its side, so the comparison would say nothing.
async fn drive(mut client: tokio::io::DuplexStream, input: &[u8]) -> Vec<u8> {
    let _ = client.write_all(input).await;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(100), client.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    out
}

fn statuses(wire: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(wire);
    // Status lines only: "HTTP/1.x NNN " at the start of a line.
    text.match_indices("HTTP/1.")
        .filter(|(i, _)| *i == 0 || text[..*i].ends_with('\n'))
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .filter(|s| *s != 100)
        .collect()
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Runs `input` against the server `serve` starts on its end of an in-memory connection.
async fn run<S, F>(input: &[u8], serve: S) -> Run
where
    S: FnOnce(tokio::io::DuplexStream, Log) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let (client, server) = tokio::io::duplex(1 << 20);
    let srv = tokio::spawn(serve(server, log.clone()));
    let wire = drive(client, input).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), srv).await;
    let seen = log.lock().unwrap().clone();
    Run {
        seen,
        statuses: statuses(&wire),
    }
}

async fn ours(input: &[u8]) -> Run {
    run(input, |server, l| async move {
        let s = settings();
        let (_tx, drain) = watch::channel(false);
        let _ = serve(Ready(server), &s, move |r| record(l.clone(), r), drain).await;
    })
    .await
}

async fn hypers(input: &[u8]) -> Run {
    run(input, |server, l| async move {
        let svc = hyper::service::service_fn(move |r| {
            let l = l.clone();
            async move { Ok::<_, std::convert::Infallible>(record(l, r).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .max_buf_size(16 * 1024)
            .max_headers(32)
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc)
            .await;
    })
    .await
}

/// A duplex stream is always ready to read (no readiness without a buffer).
struct Ready(tokio::io::DuplexStream);
impl ReadReady for Ready {
    fn poll_ready_to_read(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
impl AsyncRead for Ready {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}
impl AsyncWrite for Ready {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Hand-picked cases: framing, smuggling shapes, versions, limits, pipelining.
fn corpus() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /x?q=1 HTTP/1.0\r\n\r\n",
        b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /y HTTP/1.0\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /n HTTP/1.1\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: 1\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /a HTTP/1.1\r\n Host: x\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\n  folded\r\n\r\n",
        b"G@T /a HTTP/1.1\r\n\r\n",
        b"GET  /a HTTP/1.1\r\n\r\n",
        b"GET /a\x7f HTTP/1.1\r\n\r\n",
        b"GET http://example.com/x?y HTTP/1.1\r\nHost: other\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        b"GET /%2e%2e/a HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a HTTP/1.1\nHost: a\n\n",
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
        b"GET /a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    let mut big = b"GET /a HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    v.push(big);
    let mut many = b"GET /a HTTP/1.1\r\n".to_vec();
    for i in 0..40 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    v.push(many);
    v
}

/// Random heads built from framing-relevant pieces, so the interesting combinations come up.
fn generated(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let methods = ["GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "X-CUSTOM"];
    let versions = ["HTTP/1.1", "HTTP/1.0"];
    let fields: &[&[u8]] = &[
        b"Host: a",
        b"Content-Length: 3",
        b"Content-Length: 0",
        b"Content-Length: 3, 3",
        b"Content-Length: 4",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip",
        b"Transfer-Encoding: gzip, chunked",
        b"Connection: close",
        b"Connection: keep-alive",
        b"Connection: upgrade",
        b"Expect: 100-continue",
        b"X-Empty:",
        b"X-Tab: a\tb",
        b"X-Obs: \xff",
    ];
    let bodies: &[&[u8]] = &[
        b"",
        b"abc",
        b"3\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\r\n",
        b"1;x\r\na\r\n0\r\n\r\n",
        b"abcd",
    ];
    (0..n)
        .map(|_| {
            let mut r = Vec::new();
            let reqs = 1 + rng.usize(..2);
            for _ in 0..reqs {
                r.extend_from_slice(methods[rng.usize(..methods.len())].as_bytes());
                r.extend_from_slice(b" /p");
                r.extend_from_slice(rng.u32(..1000).to_string().as_bytes());
                r.push(b' ');
                r.extend_from_slice(versions[rng.usize(..versions.len())].as_bytes());
                r.extend_from_slice(b"\r\n");
                for _ in 0..rng.usize(..4) {
                    r.extend_from_slice(fields[rng.usize(..fields.len())]);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"\r\n");
                r.extend_from_slice(bodies[rng.usize(..bodies.len())]);
            }
            r
        })
        .collect()
}

async fn compare(input: &[u8]) -> Result<(), String> {
    let (a, b) = (ours(input).await, hypers(input).await);
    if a.seen == b.seen && class(&a.statuses) == class(&b.statuses) {
        return Ok(());
    }
    Err(format!(
        "input {:?}\n  ours:  {:?}\n  hyper: {:?}",
        String::from_utf8_lossy(input),
        a,
        b
    ))
}

/// Compares every input, 50 at a time (each waits out a quiet period).
async fn compare_all(inputs: Vec<Vec<u8>>) -> Vec<String> {
    let mut failures = Vec::new();
    for batch in inputs.chunks(50) {
        let runs = batch.iter().map(|i| compare(i));
        for r in futures_util::future::join_all(runs).await {
            if let Err(e) = r {
                failures.push(e);
            }
        }
    }
    failures
}

/// Statuses compared by class: we answer refused heads with the same class (400 vs 431 and
/// 414 are all "refused"), our responses to served requests are 200s like hyper's.
fn class(s: &[u16]) -> Vec<u16> {
    s.iter().map(|c| c / 100).collect()
}

#[tokio::test]
async fn the_codec_agrees_with_hyper_on_the_corpus() {
    let failures = compare_all(corpus()).await;
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_codec_agrees_with_hyper_on_generated_heads() {
    let failures = compare_all(generated(400, 0x5eed)).await;
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
