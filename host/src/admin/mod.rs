//! The admin listener: health, Prometheus metrics, the passport ring, plugin management,
//! the loaded config and its reload, and the operator dashboard (`dashboard`).
//!
//! Kept on its own port so that it can be firewalled off from the public and keeps answering
//! while the public listeners shed load.
//!
//! One token model for everything here ([`authorize`]): every mutation (any method but `GET`
//! and `HEAD`) needs `Authorization: Bearer <[admin] token>` (alias `[plugins] admin_token`),
//! and is refused with 403 when no token is configured; reads need `[admin] read_token` (or
//! the admin token) when one is set, except `/healthz`. Tokens are compared in constant time
//! and read from the serving config, so a reload rotates them. The dashboard's session cookie
//! stands for the read token on reads only. A request whose `Host` is a name other than
//! `localhost` or one of `[admin] hosts` is refused before anything else (DNS rebinding),
//! except `/healthz`.

mod dashboard;

use crate::reload::Live;
use crate::request::Services as Ctx;
use crate::telemetry::prom::{Kind, Writer};
use bytes::Bytes;
use dashboard::{feed::Feed, session, AdminBody};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
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
    // One feed for the admin listener's life: computed once a second while anyone watches.
    let feed = Feed::new();
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
        let (live, feed, stop) = (live.clone(), feed.clone(), shutdown.clone());
        let svc = service_fn(move |req| {
            let (live, feed, stop) = (live.clone(), feed.clone(), stop.clone());
            async move { Ok::<_, Infallible>(dispatch(&live, &feed, stop, req).await) }
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
            Some(r) => matches(Some(r)) || matches(token) || has_session(req, r, token),
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

fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A dashboard session cookie issued for the read token or the admin token.
fn has_session(req: &Request<Incoming>, read: &str, admin: Option<&str>) -> bool {
    let tokens: Vec<&str> = std::iter::once(read).chain(admin).collect();
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| session::valid(c, &tokens, unix_s()))
}

/// DNS rebinding: a page on `evil.example` whose name resolves to 127.0.0.1 reaches a
/// loopback-only admin port with `Host: evil.example`. IP literals and `localhost` cannot be
/// rebound that way; other names must be listed in `[admin] hosts`.
fn host_allowed(ctx: &Ctx, req: &Request<Incoming>) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host());
    let Some(host) = host else {
        // HTTP/1.0 without Host: not a browser.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || ctx
            .config
            .admin
            .hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
}

/// `POST /dashboard/login` with `{"token": "…"}`: the read token (or the admin token) for a
/// session cookie. `POST /dashboard/logout` clears it.
async fn login(ctx: &Ctx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/dashboard/logout" {
        let mut r = json(StatusCode::OK, &serde_json::json!({ "signed_in": false }));
        if let Ok(v) = header::HeaderValue::from_str(&session::clear()) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    let body = http_body_util::Limited::new(req.into_body(), 4096);
    let given = match body.collect().await {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b.to_bytes())
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string)),
        Err(_) => None,
    };
    let candidates = [
        ctx.config.admin.read_token.as_deref(),
        ctx.config.admin_token(),
    ];
    let Some(token) = given.as_deref().and_then(|g| {
        candidates
            .into_iter()
            .flatten()
            .find(|t| constant_time_eq(g.as_bytes(), t.as_bytes()))
    }) else {
        return json_error(StatusCode::UNAUTHORIZED, "wrong token");
    };
    let mut r = json(StatusCode::OK, &serde_json::json!({ "signed_in": true }));
    if let Ok(v) = header::HeaderValue::from_str(&session::issue(token, unix_s())) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Everything the admin listener answers, in order: the host check, the dashboard's public
/// assets and sign-in, the token model, then the feed or the API.
async fn dispatch(
    live: &Arc<Live>,
    feed: &Arc<Feed>,
    stop: watch::Receiver<bool>,
    req: Request<Incoming>,
) -> Response<AdminBody> {
    let ctx = &live.load();
    let boxed = |r: Response<Full<Bytes>>| r.map(|b| b.boxed_unsync());
    // `/healthz` answers any Host: load balancers probe it by whatever name, and it says
    // nothing but "ok" or "draining".
    if req.uri().path() != "/healthz" && !host_allowed(ctx, &req) {
        return boxed(json_error(
            StatusCode::FORBIDDEN,
            "Host not allowed on the admin listener: use an IP address or localhost, or list the name in [admin] hosts",
        ));
    }
    let path = req.uri().path().to_string();
    if req.method() == Method::GET {
        if let Some(r) = dashboard::asset(&path) {
            return boxed(r);
        }
    }
    if req.method() == Method::POST && (path == "/dashboard/login" || path == "/dashboard/logout") {
        return boxed(login(ctx, req).await);
    }
    if path == "/dashboard/feed" && matches!(*req.method(), Method::GET | Method::HEAD) {
        if let Err(r) = authorize(ctx, &req, &path) {
            return boxed(*r);
        }
        if req.method() == Method::HEAD {
            // The page asks first: may it watch, and is that thanks to a session (then it
            // offers to sign out)?
            let signed_in = ctx
                .config
                .admin
                .read_token
                .as_deref()
                .is_some_and(|r| has_session(&req, r, ctx.config.admin_token()));
            let mut r = text(StatusCode::OK, "", "text/event-stream");
            r.headers_mut().insert(
                "portcullis-signed-in",
                header::HeaderValue::from_static(if signed_in { "true" } else { "false" }),
            );
            return boxed(r);
        }
        return dashboard::sse(feed, live, stop);
    }
    boxed(route(live, req).await)
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
        "portcullis_concurrency_limit",
        "The concurrency limit now, gateway-wide (scope=global) or per cluster; an adaptive \
         limit's moves with latency.",
        Kind::Gauge,
    );
    f.sample(&[("scope", "global")], ctx.shedder.limit());
    for c in &ctx.upstreams.clusters {
        f.sample(&[("scope", &c.name)], c.limit.limit());
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
