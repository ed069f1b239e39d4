//! The admin listener: health, Prometheus metrics, the passport ring, plugin management,
//! the loaded config and its reload.
//!
//! Kept on its own port so that it can be firewalled off from the public and keeps answering
//! while the public listeners shed load.
//!
//! One token model for everything here ([`authorize`]): every mutation (any method but `GET`
//! and `HEAD`) needs `Authorization: Bearer <[admin] token>` (alias `[plugins] admin_token`),
//! and is refused with 403 when no token is configured; reads need `[admin] read_token` (or
//! the admin token) when one is set, except `/healthz`. Tokens are compared in constant time
//! and read from the serving config, so a reload rotates them.

use crate::reload::Live;
use crate::request::Services as Ctx;
use crate::telemetry::prom::{Kind, Writer};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(crate) async fn serve(live: Arc<Live>, tcp: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let live = live.clone();
        let svc = service_fn(move |req| {
            let live = live.clone();
            async move { Ok::<_, Infallible>(route(&live, req).await) }
        });
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        let conn = b.serve_connection(TokioIo::new(stream), svc);
        let fut = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = fut.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
}

fn text(status: StatusCode, body: impl Into<Bytes>, ctype: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r
}

/// Constant-time equality (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token model: see the module docs.
fn authorize(
    ctx: &Ctx,
    req: &Request<Incoming>,
    path: &str,
) -> Result<(), Box<Response<Full<Bytes>>>> {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    if read && path == "/healthz" {
        return Ok(());
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = ctx.config.admin_token();
    let matches = |t: Option<&str>| matches!((given, t), (Some(g), Some(t)) if constant_time_eq(g.as_bytes(), t.as_bytes()));
    let ok = if read {
        match ctx.config.admin.read_token.as_deref() {
            None => true,
            Some(r) => matches(Some(r)) || matches(token),
        }
    } else {
        if token.is_none() {
            return Err(Box::new(json_error(
                StatusCode::FORBIDDEN,
                "admin mutations are disabled: set [admin] token",
            )));
        }
        matches(token)
    };
    if ok {
        return Ok(());
    }
    let mut r = json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Err(Box::new(r))
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(v) {
        Ok(b) => text(status, b, "application/json"),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
            "text/plain",
        ),
    }
}

fn json_error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": msg }))
}

/// `GET /admin/config`: what is serving, and how the last reload went.
fn config_view(live: &Live, ctx: &Ctx) -> Response<Full<Bytes>> {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "hash": ctx.loaded.hash,
            "loaded_at_unix_ms": ctx.loaded.loaded_at_unix_ms(),
            "source": ctx.loaded.source.as_ref().map(|p| p.display().to_string()),
            "last_reload": live.last_reload(),
        }),
    )
}

async fn route(live: &Arc<Live>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let ctx = &live.load();
    let path = req.uri().path().to_string();
    if let Err(r) = authorize(ctx, &req, &path) {
        return *r;
    }
    match (req.method(), path.as_str()) {
        (&Method::GET, "/admin/config") => config_view(live, ctx),
        (&Method::POST, "/admin/config/reload") => match live.reload().await {
            Ok(r) => json(StatusCode::OK, &r),
            Err(e) => {
                let status = match e.result {
                    "invalid" => StatusCode::BAD_REQUEST,
                    "refused" => StatusCode::CONFLICT,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                json(status, &e)
            }
        },
        (&Method::GET, "/healthz") => {
            if ctx.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n", "text/plain")
            } else {
                text(StatusCode::OK, "ok\n", "text/plain")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut out = String::with_capacity(64 * 1024);
            {
                let mut w = Writer::new(&mut out);
                ctx.metrics.render(&mut w, &ctx.route_metrics);
                ctx.upstreams.render(&mut w);
                render_shedding(ctx, &mut w);
            }
            // The plugin runtime appends its families through a writer of its own.
            if let Some(p) = &ctx.plugins {
                p.render_metrics(&mut out);
            }
            text(StatusCode::OK, out, "text/plain; version=0.0.4")
        }
        (&Method::GET, "/admin/passports") => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            let mut all = ctx.metrics.ring.snapshot();
            all.truncate(limit);
            match serde_json::to_vec(&all) {
                Ok(v) => text(StatusCode::OK, v, "application/json"),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.to_string(),
                    "text/plain",
                ),
            }
        }
        (_, p) if p == "/admin/plugins" || p.starts_with("/admin/plugins/") => match &ctx.plugins {
            Some(rt) => rt.admin(req).await,
            None => text(
                StatusCode::NOT_FOUND,
                "plugins are not enabled ([plugins] is absent)\n",
                "text/plain",
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

fn render_shedding(ctx: &Ctx, w: &mut Writer) {
    use crate::config::Priority;
    let mut f = w.family(
        "portcullis_in_flight",
        "Requests in flight, gateway-wide (scope=global) or per cluster.",
        Kind::Gauge,
    );
    f.sample(&[("scope", "global")], ctx.shedder.in_flight());
    for c in &ctx.upstreams.clusters {
        f.sample(&[("scope", &c.name)], c.limit.in_flight());
    }
    let mut f = w.family(
        "portcullis_shed_total",
        "Requests shed, by scope and priority.",
        Kind::Counter,
    );
    for (scope, s) in std::iter::once(("global", &ctx.shedder))
        .chain(ctx.upstreams.clusters.iter().map(|c| (&*c.name, &c.limit)))
    {
        for p in [Priority::Critical, Priority::Normal, Priority::Sheddable] {
            f.sample(
                &[("scope", scope), ("priority", p.as_str())],
                s.shed_total(p),
            );
        }
    }
}
