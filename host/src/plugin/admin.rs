//! `/admin/plugins`: what teams use to see and ship their plugins.
//!
//! * `GET /admin/plugins` — every plugin in the directory: version, kind, state, last error,
//!   calls, failures by kind, CPU time, memory high-water.
//! * `PUT /admin/plugins/{name}` — `multipart/form-data` with parts `manifest` (TOML) and
//!   `wasm`. Validated first (compile, type-check, instantiate); only a good upload is written
//!   into the directory, atomically, and then loaded by the same path as any file change.
//! * `DELETE /admin/plugins/{name}` — removes the files and unloads the plugin.
//! * `POST /admin/plugins/{name}/rollback` — with `[plugins] store = "redis"`: the version
//!   before the current one, everywhere (409 when there is none).
//!
//! With the fleet store, a mutation goes into Redis (`store`) and every gateway's mirror
//! writes it into its own directory; the listing shows each plugin's `fleet_version` beside
//! the loaded `version`.
//!
//! Mutations need `Authorization: Bearer <[admin] token>` (alias `[plugins] admin_token`);
//! without a configured token they are refused outright. The admin listener checks it for
//! every mutation before a request gets here (`admin::authorize`).

use super::registry::{valid_name, Registry};
use super::stats::{render_all, StatsSnapshot};
use super::store::{Fleet, Head, Rollback, StoreError};
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
    /// What the fleet store says this gateway should run (short version or `deleted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet_version: Option<String>,
    /// Why the fleet store could not be read for this listing.
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet_error: Option<String>,
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
                fleet_version: None,
                fleet_error: None,
            }
        })
        .collect()
}

/// The listing, with the fleet store's versions beside the loaded ones when there is one.
/// Names the store holds that this gateway has not loaded are listed as `not-mirrored`.
async fn list_all(reg: &Registry, fleet: Option<&Fleet>) -> Vec<PluginView> {
    let mut views = list(reg);
    let Some(fleet) = fleet else { return views };
    let heads = match fleet.heads().await {
        Ok(h) => h,
        Err(e) => {
            for v in &mut views {
                v.fleet_error = Some(e.to_string());
            }
            return views;
        }
    };
    for v in &mut views {
        v.fleet_version = heads.get(&v.name).map(|h| h.short().to_string());
    }
    for (name, head) in &heads {
        if *head != Head::Deleted && !views.iter().any(|v| &v.name == name) {
            views.push(not_mirrored(name, head));
        }
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    views
}

fn not_mirrored(name: &str, head: &Head) -> PluginView {
    PluginView {
        name: name.to_string(),
        state: "not-mirrored",
        version: None,
        wit: None,
        kind: None,
        order: None,
        failure: None,
        loaded_at_unix_ms: None,
        last_error: None,
        last_error_at_unix_ms: None,
        stats: None,
        fleet_version: Some(head.short().to_string()),
        fleet_error: None,
    }
}

async fn view(reg: &Registry, fleet: Option<&Fleet>, name: &str) -> Response<Full<Bytes>> {
    match list_all(reg, fleet)
        .await
        .into_iter()
        .find(|p| p.name == name)
    {
        Some(p) => json(StatusCode::OK, &p),
        None => error(StatusCode::NOT_FOUND, format!("no plugin `{name}`")),
    }
}

pub(super) async fn handle(
    reg: &Registry,
    fleet: Option<&Fleet>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let name = path
        .strip_prefix("/admin/plugins")
        .map(|s| s.trim_start_matches('/'))
        .unwrap_or("")
        .to_string();
    if let Some(target) = name.strip_suffix("/rollback") {
        return match req.method() {
            &Method::POST => rollback(reg, fleet, target).await,
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "use POST for a rollback"),
        };
    }
    match (req.method().clone(), name.is_empty()) {
        (Method::GET, true) => json(StatusCode::OK, &list_all(reg, fleet).await),
        (Method::GET, false) => view(reg, fleet, &name).await,
        (Method::PUT, false) => {
            if !valid_name(&name) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "plugin names are 1-64 characters of a-z, 0-9, `-` and `_`",
                );
            }
            upload(reg, fleet, &name, req).await
        }
        (Method::DELETE, false) => match fleet {
            Some(f) => delete_fleet(reg, f, &name).await,
            None => delete_local(reg, &name).await,
        },
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET, PUT or DELETE"),
    }
}

async fn delete_local(reg: &Registry, name: &str) -> Response<Full<Bytes>> {
    match reg.remove(name) {
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no plugin `{name}`")),
        Ok(true) => match reg.rescan(false).await {
            Ok(_) => json(StatusCode::OK, &serde_json::json!({ "deleted": name })),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        },
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn delete_fleet(reg: &Registry, fleet: &Fleet, name: &str) -> Response<Full<Bytes>> {
    match fleet.delete(reg, name).await {
        Ok(true) => json(
            StatusCode::OK,
            &serde_json::json!({ "deleted": name, "fleet": true }),
        ),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no plugin `{name}` in the fleet store (files placed in a gateway's directory by hand are that gateway's own)"),
        ),
        Err(e) => store_error(e),
    }
}

async fn rollback(reg: &Registry, fleet: Option<&Fleet>, name: &str) -> Response<Full<Bytes>> {
    let Some(fleet) = fleet else {
        return error(
            StatusCode::CONFLICT,
            "rollback needs [plugins] store = \"redis\": the plugin directory keeps no history",
        );
    };
    if !valid_name(name) {
        return error(StatusCode::BAD_REQUEST, "not a plugin name");
    }
    match fleet.rollback(reg, name).await {
        Ok(Rollback::To(head)) => json(
            StatusCode::OK,
            &serde_json::json!({ "rolled_back": name, "fleet_version": head.short() }),
        ),
        Ok(Rollback::NoPrevious) => error(
            StatusCode::CONFLICT,
            format!("no previous version of `{name}` in the fleet store to roll back to"),
        ),
        Err(e) => store_error(e),
    }
}

/// The store could not be written: nothing changed anywhere, the caller may retry.
fn store_error(e: StoreError) -> Response<Full<Bytes>> {
    tracing::warn!(error = %e, "plugin store write failed");
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
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
    fleet: Option<&Fleet>,
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
    if let Some(f) = fleet {
        return match f.put(reg, name, &wasm, &manifest).await {
            Ok(_) => view(reg, Some(f), name).await,
            Err(e) => store_error(e),
        };
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
pub(super) fn render_metrics(reg: &Registry, fleet: Option<&Fleet>, out: &mut String) {
    use std::sync::atomic::Ordering;
    let mut w = Writer::new(out);
    if let Some(f) = fleet {
        f.render_metrics(&mut w);
    }
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
