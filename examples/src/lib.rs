//! Demo upstream services for the README's demo and for benchmarks: small JSON services with
//! configurable latency and failure rate, served on loopback.
#![forbid(unsafe_code)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How a demo service behaves.
#[derive(Debug, Clone)]
pub struct Behavior {
    pub name: &'static str,
    pub latency: Duration,
    /// 0.0–1.0: share of requests answered with 503.
    pub failure_rate: f64,
}

impl Behavior {
    /// Defaults, overridable with `DEMO_<NAME>_LATENCY_MS` and `DEMO_<NAME>_FAILURE_RATE`.
    pub fn from_env(name: &'static str, latency_ms: u64, failure_rate: f64) -> Self {
        let key = name.to_ascii_uppercase();
        let latency_ms = std::env::var(format!("DEMO_{key}_LATENCY_MS"))
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(latency_ms);
        let failure_rate = std::env::var(format!("DEMO_{key}_FAILURE_RATE"))
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(failure_rate);
        Behavior {
            name,
            latency: Duration::from_millis(latency_ms),
            failure_rate,
        }
    }
}

fn query_param<'a>(q: Option<&'a str>, key: &str) -> Option<&'a str> {
    q?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

const NAMES: [&str; 4] = ["Ada", "Grace", "Edsger", "Barbara"];

/// The body a demo service answers with, by service name.
fn payload(name: &str, req: &Request<Incoming>) -> serde_json::Value {
    let user: u64 = query_param(req.uri().query(), "user")
        .and_then(|u| u.parse().ok())
        .or_else(|| {
            req.uri()
                .path()
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
        })
        .unwrap_or(1);
    match name {
        "profile" => serde_json::json!({
            "user": user, "name": NAMES[(user % 4) as usize],
            "plan": if user.is_multiple_of(2) { "family" } else { "basic" },
        }),
        "recommendations" => serde_json::json!({
            "user": user,
            "items": (0..5).map(|i| serde_json::json!({"id": user * 100 + i, "title": format!("Title {}", user * 100 + i)})).collect::<Vec<_>>(),
        }),
        "ratings" => serde_json::json!({
            "user": user,
            "ratings": (0..5).map(|i| serde_json::json!({"id": user * 100 + i, "stars": 1 + (user + i) % 5})).collect::<Vec<_>>(),
        }),
        "artwork" => serde_json::json!({
            "user": user,
            "images": (0..5).map(|i| serde_json::json!({"id": user * 100 + i, "url": format!("https://img.example/{}.jpg", user * 100 + i)})).collect::<Vec<_>>(),
        }),
        other => serde_json::json!({ "service": other, "path": req.uri().path() }),
    }
}

async fn handle(
    b: Arc<Behavior>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/healthz" {
        return Ok(json(StatusCode::OK, serde_json::json!({"ok": true})));
    }
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    if b.failure_rate > 0.0 && fastrand::f64() < b.failure_rate {
        return Ok(json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": format!("{} is failing (demo failure rate)", b.name)}),
        ));
    }
    Ok(json(StatusCode::OK, payload(b.name, &req)))
}

/// Serves a demo service on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, behavior: Behavior) {
    let b = Arc::new(behavior);
    loop {
        let Ok((s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        let b = b.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(b.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

/// Binds and spawns a demo service; returns its address.
pub async fn spawn(addr: &str, behavior: Behavior) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("demo service {} cannot bind {addr}: {e}", behavior.name))?;
    let local = l.local_addr()?;
    tokio::spawn(serve(l, behavior));
    Ok(local)
}
