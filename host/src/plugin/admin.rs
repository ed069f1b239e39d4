//! `/admin/plugins`: what teams use to see and ship their plugins.
//!
//! * `GET /admin/plugins` — every plugin in the directory: version, kind, state, last error,
//!   calls, failures by kind, CPU time, memory high-water.
//! * `PUT /admin/plugins/{name}` — `multipart/form-data` with parts `manifest` (TOML) and
//!   `wasm`. Validated first (compile, type-check, instantiate); only a good upload is written
//!   into the directory, atomically, and then loaded by the same path as any file change.
//! * `DELETE /admin/plugins/{name}` — removes the files and unloads the plugin.
//!
//! Mutations need `Authorization: Bearer <[admin] token>` (alias `[plugins] admin_token`);
//! without a configured token they are refused outright. The admin listener checks it for
//! every mutation before a request gets here (`admin::authorize`).

use super::registry::{valid_name, Registry};
use super::stats::{render_all, StatsSnapshot};
use crate::telemetry::prom::{Kind, Writer};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use std::time::SystemTime;

#[derive(Serialize)]
struct PluginView {
    name: String,
    state: &'static str,
    version: Option<String>,
    /// The WIT version the component targets, e.g. `0.2.0`.
    wit: Option<&'static str>,
    kind: Option<&'static str>,
    order: Option<i32>,
    failure: Option<&'static str>,
    loaded_at_unix_ms: Option<u64>,
    last_error: Option<String>,
    last_error_at_unix_ms: Option<u64>,
    stats: Option<StatsSnapshot>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn json(status: StatusCode, v: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_else(|e| e.to_string().into_bytes());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": msg.into() }))
}

pub(super) fn list_json(reg: &Registry) -> serde_json::Value {
    serde_json::to_value(list(reg)).unwrap_or(serde_json::Value::Null)
}

fn list(reg: &Registry) -> Vec<PluginView> {
    let entries = reg.entries.lock();
    entries
        .iter()
        .map(|(name, e)| {
            let p = e.loaded.as_ref();
            let stats = p.map(|p| p.stats.snapshot());
            let quarantined = stats
                .as_ref()
                .is_some_and(|s| s.quarantined_for_ms.is_some());
            PluginView {
                name: name.clone(),
                state: match (p.is_some(), &e.error, quarantined) {
                    (true, _, true) => "quarantined",
                    (true, Some(_), _) => "loaded-with-failed-update",
                    (true, None, _) => "loaded",
                    (false, _, _) => "failed",
                },
                version: p.map(|p| p.version.clone()),
                wit: p.map(|p| p.pre.version()),
                kind: p.map(|p| p.kind().as_str()),
                order: p.map(|p| p.manifest.order),
                failure: p.map(|p| match p.manifest.failure {
                    super::manifest::Failure::FailOpen => "fail_open",
                    super::manifest::Failure::FailClosed => "fail_closed",
                }),
                loaded_at_unix_ms: p.map(|p| unix_ms(p.loaded_at)),
                last_error: e.error.as_ref().map(|(_, m)| m.clone()).or_else(|| {
                    stats
                        .as_ref()
                        .and_then(|s| s.last_error.as_ref().map(|l| l.error.clone()))
                }),
                last_error_at_unix_ms: e.error.as_ref().map(|(t, _)| unix_ms(*t)),
                stats,
            }
        })
        .collect()
}

pub(super) async fn handle(
    reg: &Registry,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let name = path
        .strip_prefix("/admin/plugins")
        .map(|s| s.trim_start_matches('/'))
        .unwrap_or("")
        .to_string();
    match (req.method().clone(), name.is_empty()) {
        (Method::GET, true) => json(StatusCode::OK, &list(reg)),
        (Method::GET, false) => match list(reg).into_iter().find(|p| p.name == name) {
            Some(p) => json(StatusCode::OK, &p),
            None => error(StatusCode::NOT_FOUND, format!("no plugin `{name}`")),
        },
        (Method::PUT, false) => {
            if !valid_name(&name) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "plugin names are 1-64 characters of a-z, 0-9, `-` and `_`",
                );
            }
            upload(reg, &name, req).await
        }
        (Method::DELETE, false) => match reg.remove(&name) {
            Ok(false) => error(StatusCode::NOT_FOUND, format!("no plugin `{name}`")),
            Ok(true) => match reg.rescan(false).await {
                Ok(_) => json(StatusCode::OK, &serde_json::json!({ "deleted": name })),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
            },
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET, PUT or DELETE"),
    }
}

/// The `wasm` and `manifest` parts of a buffered `multipart/form-data` upload; other parts
/// are ignored, a repeated part keeps its last value. The error is the 400's reason.
pub(super) async fn upload_parts(body: Bytes, boundary: String) -> Result<(Bytes, Bytes), String> {
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut wasm = None;
    let mut manifest = None;
    loop {
        match mp.next_field().await {
            Ok(Some(f)) => {
                let field = f.name().map(str::to_owned);
                let data = f
                    .bytes()
                    .await
                    .map_err(|e| format!("bad multipart body: {e}"))?;
                match field.as_deref() {
                    Some("wasm") => wasm = Some(data),
                    Some("manifest") => manifest = Some(data),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => return Err(format!("bad multipart body: {e}")),
        }
    }
    match (wasm, manifest) {
        (Some(w), Some(m)) => Ok((w, m)),
        _ => Err("both parts `manifest` and `wasm` are required".into()),
    }
}

async fn upload(
    reg: &Registry,
    name: &str,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let boundary = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send multipart/form-data with parts `manifest` and `wasm` (curl -F manifest=@x.toml -F wasm=@x.wasm)",
        );
    };
    let cap = reg.cfg.max_upload_bytes + super::manifest::MAX_MANIFEST_BYTES + 16 * 1024;
    let body = match Limited::new(req.into_body(), cap).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "upload larger than [plugins] max_upload_bytes ({} bytes)",
                    reg.cfg.max_upload_bytes
                ),
            )
        }
    };
    let (wasm, manifest) = match upload_parts(body, boundary).await {
        Ok(parts) => parts,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if wasm.len() > reg.cfg.max_upload_bytes {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "wasm larger than [plugins] max_upload_bytes",
        );
    }
    let Ok(manifest) = String::from_utf8(manifest.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "manifest is not UTF-8");
    };
    // Validate before writing: a broken upload never reaches the directory.
    if let Err(e) = reg.build(name, wasm.to_vec(), &manifest).await {
        tracing::warn!(plugin = %name, error = %e, "plugin upload rejected");
        reg.record_upload_failure(name, &e);
        return error(StatusCode::UNPROCESSABLE_ENTITY, e);
    }
    if let Err(e) = reg.write(name, &wasm, &manifest) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing plugin files: {e}"),
        );
    }
    match reg.rescan(false).await {
        Ok(errors) => match errors.into_iter().find(|(n, _)| n == name) {
            Some((_, e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
            None => match list(reg).into_iter().find(|p| p.name == name) {
                Some(v) => json(StatusCode::OK, &v),
                None => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "plugin vanished after upload",
                ),
            },
        },
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// `/metrics` families for the plugin system, appended to `out`.
pub(super) fn render_metrics(reg: &Registry, out: &mut String) {
    use std::sync::atomic::Ordering;
    let mut w = Writer::new(out);
    let entries = reg.entries.lock();
    let loaded: Vec<(&str, &super::call::Plugin)> = entries
        .iter()
        .filter_map(|(name, e)| e.loaded.as_deref().map(|p| (name.as_str(), p)))
        .collect();
    let stats: Vec<&super::stats::PluginStats> = loaded.iter().map(|(_, p)| &*p.stats).collect();
    render_all(&stats, &mut w);
    let mut f = w.family(
        "portcullis_plugin_loaded",
        "1 per loaded plugin version.",
        Kind::Gauge,
    );
    for (name, p) in &loaded {
        f.sample(
            &[
                ("plugin", name),
                ("version", &p.version),
                ("kind", p.kind().as_str()),
            ],
            1u64,
        );
    }
    let mut f = w.family(
        "portcullis_plugin_reloads_total",
        "Plugin loads by result.",
        Kind::Counter,
    );
    f.sample(&[("result", "ok")], reg.reloads_ok.load(Ordering::Relaxed));
    f.sample(
        &[("result", "failed")],
        reg.reloads_failed.load(Ordering::Relaxed),
    );
    if let Some(d) = &reg.disk {
        let mut f = w.family(
            "portcullis_plugin_compile_cache_total",
            "On-disk compile cache lookups and writes by result: hit, miss, rejected (corrupt, \
             truncated or stale: recompiled), write_failed, evicted.",
            Kind::Counter,
        );
        for (result, n) in [
            ("hit", &d.hits),
            ("miss", &d.misses),
            ("rejected", &d.rejected),
            ("write_failed", &d.write_failures),
            ("evicted", &d.evicted),
        ] {
            f.sample(&[("result", result)], n.load(Ordering::Relaxed));
        }
    }
}
