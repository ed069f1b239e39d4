//! End-to-end test support: real upstream servers, real gateways and real clients, all on
//! 127.0.0.1 with ephemeral ports.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone)]
enum Proto {
    H1,
    H2c,
    Tls(tokio_rustls::TlsAcceptor),
}

pub mod browser;
pub mod chaos;
mod debian;
pub mod dns;
pub mod faulty;
pub mod h2raw;
pub mod otlp;
pub mod redis;
pub use faulty::Faulty;
pub use otlp::OtlpReceiver;

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A real HTTP/1.1 upstream on 127.0.0.1 that counts its accepted connections.
///
/// Paths:
/// - `/sleep/{ms}` waits, then answers;
/// - `/status/{code}` answers that status;
/// - `/upload` reads the body as a stream and answers with its byte count;
/// - `/download/{bytes}` streams that many bytes in 64 KiB chunks;
/// - `/duplex` answers at once and echoes the request body chunk by chunk as it arrives;
/// - `/stall-body` sends the head and one chunk, then stalls for 30 s;
/// - anything else echoes: `x-upstream: <name>`, and a JSON body with method, path and headers.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub accepted: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    /// Requests being answered now, and the most ever at once (a proof of overlap that does
    /// not depend on how fast the machine is).
    pub active: Arc<AtomicU64>,
    pub peak: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

/// Counts a request as active from creation to drop, and records the peak.
struct ActiveGuard(Arc<AtomicU64>);

impl ActiveGuard {
    fn new(active: &Arc<AtomicU64>, peak: &AtomicU64) -> ActiveGuard {
        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        ActiveGuard(active.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_inner(name, None).await
    }

    /// An upstream that answers every request with `status` after `delay_ms`.
    pub async fn start_fixed(name: &str, status: u16, delay_ms: u64) -> Upstream {
        Self::start_inner(name, Some((status, delay_ms))).await
    }

    /// An upstream that accepts connections and closes them without answering.
    pub async fn start_resetting(name: &str) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = l.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let a = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    drop(s);
                });
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            accepted: accepted.clone(),
            requests: accepted,
            active: Arc::new(AtomicU64::new(0)),
            peak: Arc::new(AtomicU64::new(0)),
            _task: task,
        }
    }

    /// An upstream speaking HTTP/2 with prior knowledge (h2c).
    pub async fn start_h2(name: &str) -> Upstream {
        Self::start_proto(name, Proto::H2c).await
    }

    /// An HTTP/1.1 upstream behind TLS with the certificate `<dir>/<stem>.crt`.
    pub async fn start_tls(name: &str, dir: &Path, stem: &str) -> Upstream {
        let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
            rustls_pki_types::pem::PemObject::pem_file_iter(dir.join(format!("{stem}.crt")))
                .expect("cert")
                .collect::<Result<_, _>>()
                .expect("cert");
        let key =
            <rustls_pki_types::PrivateKeyDer as rustls_pki_types::pem::PemObject>::from_pem_file(
                dir.join(format!("{stem}.key")),
            )
            .expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        Self::start_proto(
            name,
            Proto::Tls(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
        )
        .await
    }

    async fn start_inner(name: &str, fixed: Option<(u16, u64)>) -> Upstream {
        Self::start_full(name, fixed, Proto::H1).await
    }

    async fn start_proto(name: &str, proto: Proto) -> Upstream {
        Self::start_full(name, None, proto).await
    }

    async fn start_full(name: &str, fixed: Option<(u16, u64)>, proto: Proto) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = l.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let active = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let (a, r, n) = (accepted.clone(), requests.clone(), name.to_string());
        let (act, pk) = (active.clone(), peak.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::Relaxed);
                let (r, n, proto) = (r.clone(), n.clone(), proto.clone());
                let (act, pk) = (act.clone(), pk.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        r.fetch_add(1, Ordering::Relaxed);
                        let n = n.clone();
                        let guard = ActiveGuard::new(&act, &pk);
                        async move {
                            let _guard = guard;
                            match fixed {
                                Some((status, delay)) => {
                                    tokio::time::sleep(Duration::from_millis(delay)).await;
                                    let mut resp =
                                        Response::new(full(format!("{n} says {status}\n")));
                                    *resp.status_mut() =
                                        StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                                    resp.headers_mut()
                                        .insert("x-upstream", n.parse().expect("header"));
                                    Ok::<_, Infallible>(resp)
                                }
                                None => upstream_handler(n, req).await,
                            }
                        }
                    });
                    match proto {
                        Proto::H1 => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(s), svc)
                                .await;
                        }
                        Proto::H2c => {
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(s), svc)
                                .await;
                        }
                        Proto::Tls(acceptor) => {
                            let Ok(tls) = acceptor.accept(s).await else {
                                return;
                            };
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            accepted,
            requests,
            active,
            peak,
            _task: task,
        }
    }

    /// The most requests this upstream was answering at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

async fn upstream_handler(
    name: String,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_string();
    // Routes mount upstreams under a prefix (`/<cluster>/...`): look past it.
    let all: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let known = [
        "sleep",
        "status",
        "upload",
        "download",
        "stall-body",
        "duplex",
    ];
    let from = all
        .iter()
        .position(|s| known.contains(s))
        .unwrap_or(all.len());
    let seg = &all[from..];
    let mut resp = match seg {
        ["sleep", ms] => {
            let ms: u64 = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(format!("slept {ms}\n")))
        }
        ["status", code] => {
            let mut r = Response::new(full(format!("status {code}\n")));
            *r.status_mut() = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            r
        }
        ["upload"] => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            Response::new(full(n.to_string()))
        }
        ["download", bytes] => {
            let total: u64 = bytes.parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_stream(total, chunk);
            let mut r = Response::new(StreamBody::new(stream).boxed());
            r.headers_mut().insert("content-length", total.into());
            r
        }
        ["duplex"] => {
            // Answers at once and echoes the request body as it arrives: full duplex.
            let body = req.into_body().map_err(std::io::Error::other).boxed();
            Response::new(body)
        }
        ["stall-body"] => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"first chunk\n"))))
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(tx);
            });
            Response::new(StreamBody::new(ReceiverStream(rx)).boxed())
        }
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                    )
                })
                .collect();
            // Names that came more than once (`headers` above keeps the last of each).
            let repeated: Vec<&str> = req
                .headers()
                .keys()
                .filter(|k| req.headers().get_all(*k).iter().count() > 1)
                .map(|k| k.as_str())
                .collect();
            let body = serde_json::json!({
                "upstream": name,
                "method": req.method().as_str(),
                "path": req.uri().to_string(),
                "headers": headers,
                "repeated": repeated,
            });
            Response::new(full(body.to_string()))
        }
    };
    resp.headers_mut()
        .insert("x-upstream", name.parse().expect("header value"));
    resp.headers_mut()
        .insert("connection", "keep-alive".parse().expect("header value"));
    Ok(resp)
}

/// A minimal `Stream` over an mpsc receiver (avoids a tokio-stream dependency).
pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core_shim::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

pub use futures_core_shim::Stream;
mod futures_core_shim {
    pub use futures_core::Stream;
}

fn futures_stream(
    total: u64,
    chunk: Bytes,
) -> impl Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if tx.send(Ok(Frame::data(chunk.slice(..n)))).await.is_err() {
                return;
            }
            left -= n as u64;
        }
    });
    ReceiverStream(rx)
}

/// Starts an in-process gateway from TOML text. Relative paths resolve against `base`.
pub async fn gateway(toml: &str, base: &Path) -> portcullis::Gateway {
    let cfg = match portcullis::Config::parse(toml, base) {
        Ok(c) => c,
        Err(problems) => panic!("test config invalid: {problems:?}"),
    };
    portcullis::Gateway::start(cfg)
        .await
        .expect("gateway starts")
}

/// A pooled HTTP/1.1 client (the pool is what makes keep-alive tests meaningful).
pub fn h1_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, BoxBody>
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request over a fresh connection (h1) and returns status, headers and body.
pub async fn send(addr: SocketAddr, req: Request<BoxBody>) -> (http::response::Parts, Bytes) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(20), tx.send_request(req))
        .await
        .expect("response in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (parts, body)
}

pub fn get(addr: SocketAddr, path: &str) -> Request<BoxBody> {
    Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", "localhost")
        .body(full(Bytes::new()))
        .expect("request")
}

pub fn body(b: impl Into<Bytes>) -> BoxBody {
    full(b)
}

/// Fetches the admin `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    let (_, b) = send(admin, get(admin, "/metrics")).await;
    String::from_utf8_lossy(&b).into_owned()
}

/// Reads one sample's value from Prometheus text, e.g. `portcullis_requests_total{route="a",status_class="2xx"}`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Checks Prometheus text (format 0.0.4) the way a strict scraper reads it, returning every
/// problem found: each family has exactly one `# HELP` and one `# TYPE` line, HELP before TYPE;
/// every sample sits right under its own family's header (so it has a TYPE and no family is
/// split); histogram samples are `_bucket` (with `le`), `_sum` or `_count`; label values are
/// well-formed and escaped; no series appears twice; values parse; every histogram's buckets are
/// cumulative, end with `le="+Inf"` and agree with `_count`.
pub fn exposition_errors(text: &str) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let mut errors = Vec::new();
    let mut help: HashSet<String> = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut current: Option<(String, String)> = None;
    let mut series: HashSet<String> = HashSet::new();
    // (family, labels without le) -> ((bound, cumulative count) in order, _count)
    type Buckets = (Vec<(f64, f64)>, Option<f64>);
    let mut hist: HashMap<(String, String), Buckets> = HashMap::new();
    let mut last_help: Option<String> = None;
    if !text.is_empty() && !text.ends_with('\n') {
        errors.push("text does not end with a newline".into());
    }
    for (no, line) in text.lines().enumerate() {
        let no = no + 1;
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !help.insert(name.to_string()) {
                errors.push(format!("line {no}: second HELP for {name}"));
            }
            last_help = Some(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                errors.push(format!("line {no}: bad TYPE {kind:?} for {name}"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                errors.push(format!("line {no}: second TYPE for {name}"));
            }
            if last_help.as_deref() != Some(name) {
                errors.push(format!(
                    "line {no}: TYPE for {name} not right after its HELP"
                ));
            }
            current = Some((name.to_string(), kind.to_string()));
            continue;
        }
        last_help = None;
        if line.starts_with('#') || line.is_empty() {
            errors.push(format!("line {no}: unexpected line {line:?}"));
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels: LabelPairs = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            match parse_labels(r) {
                Ok((l, after)) => {
                    labels = l;
                    rest = after;
                }
                Err(e) => {
                    errors.push(format!("line {no}: {e}: {line}"));
                    continue;
                }
            }
        }
        let value = rest.strip_prefix(' ').unwrap_or("");
        let value = match value {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            v => v.parse::<f64>().ok(),
        };
        let Some(value) = value else {
            errors.push(format!("line {no}: bad value: {line}"));
            continue;
        };
        let mut names = HashSet::new();
        if !labels.iter().all(|(k, _)| names.insert(k.as_str())) {
            errors.push(format!("line {no}: repeated label name: {line}"));
        }
        if !series.insert(line[..line.len() - rest.len()].to_string()) {
            errors.push(format!("line {no}: series repeated: {line}"));
        }
        let Some((family, kind)) = &current else {
            errors.push(format!("line {no}: sample before any TYPE: {line}"));
            continue;
        };
        if kind == "histogram" {
            let suffix = name.strip_prefix(family.as_str()).unwrap_or("-");
            let le = labels.iter().position(|(k, _)| k == "le");
            let key_labels = |labels: &[(String, String)]| {
                labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let key = (family.clone(), key_labels(&labels));
            match (suffix, le) {
                ("_bucket", Some(i)) => {
                    let le = &labels[i].1;
                    let bound = if le == "+Inf" {
                        Some(f64::INFINITY)
                    } else {
                        le.parse::<f64>().ok()
                    };
                    match bound {
                        Some(b) => hist.entry(key).or_default().0.push((b, value)),
                        None => errors.push(format!("line {no}: bad le: {line}")),
                    }
                }
                ("_sum", None) => {}
                ("_count", None) => hist.entry(key).or_default().1 = Some(value),
                _ => errors.push(format!(
                    "line {no}: not a sample of histogram {family}: {line}"
                )),
            }
        } else if name != family {
            errors.push(format!(
                "line {no}: sample not under its own family (current: {family}): {line}"
            ));
        }
    }
    for ((family, labels), (buckets, count)) in &hist {
        let what = format!("histogram {family}{{{labels}}}");
        if !buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        {
            errors.push(format!("{what}: buckets not ascending and cumulative"));
        }
        match buckets.last() {
            Some((b, c)) if b.is_infinite() => {
                if *count != Some(*c) {
                    errors.push(format!("{what}: _count {count:?} != +Inf bucket {c}"));
                }
            }
            _ => errors.push(format!("{what}: no le=\"+Inf\" bucket")),
        }
    }
    for name in &help {
        if !types.contains_key(name) {
            errors.push(format!("{name}: HELP without TYPE"));
        }
    }
    errors
}

type LabelPairs = Vec<(String, String)>;

/// Parses `k="v",…}` (after the `{`), unescaping values; returns the labels and what follows `}`.
fn parse_labels(mut s: &str) -> Result<(LabelPairs, &str), String> {
    let mut out = Vec::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((out, rest));
        }
        let eq = s.find('=').ok_or("label without =")?;
        let name = &s[..eq];
        let mut chars = name.chars();
        let name_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(format!("bad label name {name:?}"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut it = s.char_indices();
        let end = loop {
            match it.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match it.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("bad escape in label value".into()),
                },
                Some((_, '\n')) => return Err("raw newline in label value".into()),
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        out.push((name.to_string(), value));
        s = &s[end + 1..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected , or } after label".into());
        }
    }
}

/// Panics with every problem [`exposition_errors`] finds in `/metrics` text.
pub fn assert_valid_exposition(text: &str) {
    let errors = exposition_errors(text);
    assert!(
        errors.is_empty(),
        "invalid /metrics text:\n{}\n\n{text}",
        errors.join("\n")
    );
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Polls the async `f` until it returns true or `within` passes.
pub async fn eventually_async<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the admin `/metrics` until `series` (missing: NaN) satisfies `ok`, for at most
/// `within`. For waiting on the gateway instead of sleeping a guessed time.
pub async fn wait_for_metric(
    admin: SocketAddr,
    series: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
) -> bool {
    eventually_async(within, || async {
        ok(sample(&metrics(admin).await, series).unwrap_or(f64::NAN))
    })
    .await
}

/// A basic gateway config: one plain listener, admin, one cluster per upstream, one route per
/// cluster with `path_prefix = "/<cluster>"`. Extra TOML is appended.
pub fn basic_config(upstreams: &[(&str, SocketAddr)], extra: &str) -> String {
    let mut s = String::from(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n",
    );
    for (name, addr) in upstreams {
        s.push_str(&format!(
            "[[cluster]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n[[route]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"/{name}\" }}\ncluster = \"{name}\"\n"
        ));
    }
    s.push_str(extra);
    s
}

/// A fresh private temp directory for one test, removed again when the test drops it (also
/// when the test fails), so repeated runs don't fill the disk.
pub fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!(
        "portcullis-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    TempDir(d)
}

/// A directory under the system temp dir that is deleted on drop; derefs to its [`Path`].
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a self-signed certificate for `names` as `<stem>.crt`/`<stem>.key`; returns its DER.
pub fn write_cert(
    dir: &Path,
    stem: &str,
    names: &[&str],
) -> rustls_pki_types::CertificateDer<'static> {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("generate certificate");
    // Each file is written under a temporary name and renamed into place, so the gateway's
    // reload poller never reads a half-written file. Key first: a poll between the two
    // renames sees the new key with the old certificate, which the gateway refuses (keeping
    // the old pair) until the certificate follows.
    let (crt, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    let (tcrt, tkey) = (
        dir.join(format!(".{stem}.crt.tmp")),
        dir.join(format!(".{stem}.key.tmp")),
    );
    std::fs::write(&tcrt, ck.cert.pem()).expect("write cert");
    std::fs::write(&tkey, ck.signing_key.serialize_pem()).expect("write key");
    std::fs::rename(&tkey, &key).expect("rename key");
    std::fs::rename(&tcrt, &crt).expect("rename cert");
    ck.cert.der().clone()
}

/// A TLS client config trusting exactly `roots`, offering `alpn`.
pub fn tls_client(
    roots: &[rustls_pki_types::CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// The `.wasm` built from the workspace's guest crate `krate` (by `build.rs`).
pub fn guest(krate: &str) -> std::path::PathBuf {
    Path::new(env!("PORTCULLIS_GUEST_DIR")).join(format!("{}.wasm", krate.replace('-', "_")))
}

/// The `.wasm` of a first-party JavaScript or Python plugin (`home_js`, `pass_js`, `ab_py`,
/// `pass_py`), built from source by `plugins/build_js_py.rs`.
pub fn jspy_guest(name: &str) -> std::path::PathBuf {
    Path::new(env!("PORTCULLIS_JSPY_DIR")).join(format!("{name}.wasm"))
}

/// Installs the JavaScript or Python plugin `built` as plugin `name` into `dir`.
pub fn install_jspy_plugin(dir: &Path, name: &str, built: &str, manifest: &str) {
    let wasm = std::fs::read(jspy_guest(built)).expect("js/python plugin built");
    install_plugin_bytes(dir, name, &wasm, manifest);
}

/// One plugin's entry in `GET /admin/plugins` (name, version, stats, ...).
pub async fn admin_plugin(admin: SocketAddr, name: &str) -> serde_json::Value {
    let (_, b) = send(admin, get(admin, "/admin/plugins")).await;
    let all: serde_json::Value = serde_json::from_slice(&b).expect("admin plugins json");
    all.as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or_else(|| panic!("plugin {name} not in /admin/plugins: {all}"))
}

/// Installs plugin `name` (the guest crate `krate` with `manifest`) into `dir` atomically:
/// both files are written under temporary names and renamed, manifest first.
pub fn install_plugin(dir: &Path, name: &str, krate: &str, manifest: &str) {
    let wasm = std::fs::read(guest(krate)).expect("guest built");
    install_plugin_bytes(dir, name, &wasm, manifest);
}

pub fn install_plugin_bytes(dir: &Path, name: &str, wasm: &[u8], manifest: &str) {
    let tt = dir.join(format!(".{name}.toml.tmp"));
    let tw = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&tt, manifest).expect("write manifest");
    std::fs::write(&tw, wasm).expect("write wasm");
    std::fs::rename(&tt, dir.join(format!("{name}.toml"))).expect("rename manifest");
    std::fs::rename(&tw, dir.join(format!("{name}.wasm"))).expect("rename wasm");
}

/// A `multipart/form-data` body with the given `(field, bytes)` parts; returns
/// `(content-type, body)`.
pub fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = format!("portcullis{}", fastrand::u64(..));
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A header value as a string ("" if absent).
pub fn header(p: &http::response::Parts, name: &str) -> String {
    p.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// An HTTP/1.1 upstream whose behaviour a test switches while it runs (resilience tests).
///
/// - `delay_ms`: every answer waits this long first;
/// - `status`: the status of every answer (default 200);
/// - `reset`: while true, requests get no answer: the connection is closed instead;
/// - `health_status`: the answer to `GET /healthz` (default 200), which is not delayed and
///   not counted in `requests` but in `health_checks`.
///
/// Answers carry `x-upstream: <name>`.
pub struct Controlled {
    pub addr: SocketAddr,
    pub name: String,
    pub requests: Arc<AtomicU64>,
    pub health_checks: Arc<AtomicU64>,
    pub delay_ms: Arc<AtomicU64>,
    pub status: Arc<std::sync::atomic::AtomicU16>,
    pub reset: Arc<std::sync::atomic::AtomicBool>,
    pub health_status: Arc<std::sync::atomic::AtomicU16>,
    /// Connections open now.
    pub open: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Knobs {
    name: String,
    requests: Arc<AtomicU64>,
    health_checks: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    status: Arc<std::sync::atomic::AtomicU16>,
    reset: Arc<std::sync::atomic::AtomicBool>,
    health_status: Arc<std::sync::atomic::AtomicU16>,
}

impl Controlled {
    pub async fn start(name: &str) -> Controlled {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Self::serve(name, l)
    }

    /// Listens on `addr` (another loopback address, say `127.0.0.2:port`), or `None` when that
    /// address is taken.
    pub async fn start_on(name: &str, addr: SocketAddr) -> Option<Controlled> {
        Some(Self::serve(name, TcpListener::bind(addr).await.ok()?))
    }

    fn serve(name: &str, l: TcpListener) -> Controlled {
        let addr = l.local_addr().expect("addr");
        let k = Knobs {
            name: name.to_string(),
            requests: Arc::new(AtomicU64::new(0)),
            health_checks: Arc::new(AtomicU64::new(0)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            status: Arc::new(std::sync::atomic::AtomicU16::new(200)),
            reset: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            health_status: Arc::new(std::sync::atomic::AtomicU16::new(200)),
        };
        let knobs = k.clone();
        let open = Arc::new(AtomicU64::new(0));
        let o = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let k = knobs.clone();
                let o = o.clone();
                o.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let k = k.clone();
                        async move { controlled_answer(k, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Controlled {
            addr,
            name: name.to_string(),
            requests: k.requests,
            health_checks: k.health_checks,
            delay_ms: k.delay_ms,
            status: k.status,
            reset: k.reset,
            health_status: k.health_status,
            open,
            _task: task,
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn set_delay_ms(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::Relaxed);
    }
    pub fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::Relaxed);
    }
    pub fn set_reset(&self, on: bool) {
        self.reset.store(on, Ordering::Relaxed);
    }
    pub fn set_health_status(&self, s: u16) {
        self.health_status.store(s, Ordering::Relaxed);
    }
}

/// Why a controlled upstream refused to answer (makes hyper close the connection).
#[derive(Debug)]
struct ResetByTest;
impl std::fmt::Display for ResetByTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset by test")
    }
}
impl std::error::Error for ResetByTest {}

async fn controlled_answer(
    k: Knobs,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, ResetByTest> {
    if req.uri().path().ends_with("/healthz") {
        k.health_checks.fetch_add(1, Ordering::Relaxed);
        let mut r = Response::new(full("health\n"));
        *r.status_mut() =
            StatusCode::from_u16(k.health_status.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK);
        return Ok(r);
    }
    k.requests.fetch_add(1, Ordering::Relaxed);
    if k.reset.load(Ordering::Relaxed) {
        return Err(ResetByTest);
    }
    let delay = k.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut r = Response::new(full(format!("{} answered\n", k.name)));
    *r.status_mut() =
        StatusCode::from_u16(k.status.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert("x-upstream", k.name.parse().expect("header value"));
    Ok(r)
}

/// An address on 127.0.0.1 where nothing listens: connecting to it is refused.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

#[cfg(test)]
mod tests {
    use super::exposition_errors;

    #[test]
    fn exposition_check_accepts_good_text_and_names_each_problem() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n\
                    # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
        assert_eq!(exposition_errors(good), Vec::<String>::new());
        // The layout /metrics had for plugins: headers first, then families interleaved per
        // plugin, and a family with no HELP/TYPE at all.
        let bad = "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\n\
                   a{p=\"1\"} 1\nb{p=\"1\"} 1\na{p=\"2\"} 1\nc{p=\"1\"} 1\n";
        let errors = exposition_errors(bad);
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors
            .iter()
            .all(|e| e.contains("not under its own family")));
        let errors = exposition_errors(
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\nh_count 1\nh_x 1\n",
        );
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            !exposition_errors("# TYPE a gauge\n# TYPE a gauge\na{x=\"\\q\"} 1\na 1\na 1\n")
                .is_empty()
        );
    }
}
