//! Config reload without a restart: SIGHUP and `POST /admin/config/reload`.
//!
//! A reload reads the file the gateway was started from and validates it exactly as
//! `portcullis check` does ([`check`]). An invalid file, or one that changes a key that cannot
//! change at runtime ([`fixed_changes`]), changes nothing: every problem is logged and the
//! reload is counted in `portcullis_config_reloads_total{result}`. Otherwise a new
//! [`Services`] is built and swapped in at once: routes, clusters, limits, timeouts, `[http]`
//! and the admin tokens. Each request takes the current `Services` when it starts and keeps
//! it, so in-flight requests finish under the config they started with.
//!
//! Clusters whose definition did not change are carried over as they are (pools, balancer,
//! stats, outlier, health and retry-budget state); a redefined cluster is built anew but keeps
//! its concurrency limit's in-flight count, as does the global `[limits] max_in_flight`.
//! Per-route counters are kept for every route name that stays.

use crate::config::{Config, Problem};
use crate::plugin::PluginRuntime;
use crate::request::{HttpPolicy, Services};
use crate::routing::RouteTable;
use crate::shed::Shedder;
use crate::telemetry::{Metrics, RouteMetrics};
use crate::upstream::Upstreams;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Where the serving config came from and when it was loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// SHA-256 of the file's bytes (hex); of the config's debug form when it was not read
    /// from a file.
    pub hash: String,
    pub loaded_at: SystemTime,
    pub source: Option<PathBuf>,
}

impl Loaded {
    fn in_memory(cfg: &Config) -> Self {
        Loaded {
            hash: hex(&Sha256::digest(format!("{cfg:?}").as_bytes())),
            loaded_at: SystemTime::now(),
            source: None,
        }
    }

    pub fn loaded_at_unix_ms(&self) -> u64 {
        unix_ms(self.loaded_at)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A config file that passed every check, with the hash of its bytes.
pub struct Checked {
    pub config: Config,
    pub hash: String,
}

/// Reads and validates a config file the way `portcullis check` reports it: parse and
/// semantic problems, then the plugin directory's. Every problem as `file: key: reason`.
pub fn check(path: &Path) -> Result<Checked, Vec<String>> {
    let (cfg, hash) = read(path)?;
    let problems = cfg
        .plugins
        .as_ref()
        .map(crate::plugin::check_dir)
        .unwrap_or_default();
    if problems.is_empty() {
        Ok(Checked { config: cfg, hash })
    } else {
        Err(problems)
    }
}

/// Reads, hashes, parses and validates a config file (no plugin directory check).
fn read(path: &Path) -> Result<(Config, String), Vec<String>> {
    let show = |p: &Problem| format!("{}: {}: {}", path.display(), p.key, p.reason);
    let bytes = std::fs::read(path)
        .map_err(|e| vec![show(&Problem::new("(file)", format!("cannot read: {e}")))])?;
    let hash = hex(&Sha256::digest(&bytes));
    let text =
        String::from_utf8(bytes).map_err(|_| vec![show(&Problem::new("(file)", "not UTF-8"))])?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let cfg = Config::parse(&text, &base).map_err(|ps| ps.iter().map(show).collect::<Vec<_>>())?;
    Ok((cfg, hash))
}

/// The keys `new` changes that cannot change at runtime (docs/config.md lists them):
/// `[admin] listen`, `passport_ring` and `upgrade_socket`, `[access_log]`, `[tracing]`, and everything in
/// `[plugins]` but `admin_token`. Listeners can be added, removed and changed (see
/// [`ListenerHook`]); certificates named by a listener keep hot-reloading from disk.
pub fn fixed_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.admin.listen != new.admin.listen {
        out.push("admin.listen".to_string());
    }
    if old.admin.passport_ring != new.admin.passport_ring {
        out.push("admin.passport_ring".to_string());
    }
    if old.admin.upgrade_socket != new.admin.upgrade_socket {
        out.push("admin.upgrade_socket".to_string());
    }
    if old.access_log != new.access_log {
        out.push("access_log".to_string());
    }
    if old.tracing != new.tracing {
        out.push("tracing".to_string());
    }
    match (&old.plugins, &new.plugins) {
        (None, None) => {}
        (Some(_), None) => out.push("plugins (removed)".to_string()),
        (None, Some(_)) => out.push("plugins (added)".to_string()),
        (Some(o), Some(n)) => {
            macro_rules! fields {
                ($($f:ident),*) => {$(
                    if o.$f != n.$f {
                        out.push(format!("plugins.{}", stringify!($f)));
                    }
                )*};
            }
            fields!(
                dir,
                max_upload_bytes,
                reload_debounce_ms,
                max_cpu_ms,
                max_memory_mb,
                max_timeout_ms,
                max_body_bytes,
                max_instances,
                memory_budget_mb,
                instance_reuse_calls,
                epoch_tick_ms,
                quarantine_after,
                quarantine_base_ms,
                quarantine_max_ms,
                cache,
                cache_dir,
                cache_max_mb,
                store,
                store_poll_ms,
                store_history,
                store_timeout_ms,
                kv,
                kv_max_keys,
                kv_max_key_bytes,
                kv_max_value_bytes,
                kv_max_ttl_ms
            );
            // The fleet store's connection is made at boot from the `[redis]` of then.
            if o.store == crate::config::PluginStoreKind::Redis && old.redis != new.redis {
                out.push("redis (used by [plugins] store = \"redis\")".to_string());
            }
        }
    }
    out
}

/// What every config generation shares.
pub(crate) struct Shared {
    pub metrics: Arc<Metrics>,
    pub plugins: Option<Arc<PluginRuntime>>,
    pub shedder: Arc<Shedder>,
    pub draining: Arc<AtomicBool>,
    pub tunnels: Arc<crate::request::tunnel::Tunnels>,
}

impl Shared {
    fn of(s: &Services) -> Self {
        Shared {
            metrics: s.metrics.clone(),
            plugins: s.plugins.clone(),
            shedder: s.shedder.clone(),
            draining: s.draining.clone(),
            tunnels: s.tunnels.clone(),
        }
    }
}

/// Builds the services of `cfg`, carrying unchanged clusters and route counters over from
/// `old`. Changes nothing shared: the caller applies the gateway-wide settings
/// ([`apply_shared`]) once it commits to the result.
pub(crate) fn build(
    cfg: Arc<Config>,
    loaded: Loaded,
    shared: Shared,
    old: Option<&Services>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<(Services, Vec<Arc<str>>)> {
    let (upstreams, kept) =
        Upstreams::rebuild(&cfg, old.map(|o| (&*o.config, &*o.upstreams)), shutdown)?;
    let routes = RouteTable::build(&cfg, |n| upstreams.index(n));
    let names: Vec<Arc<str>> = routes.routes().iter().map(|r| r.name.clone()).collect();
    let route_metrics = RouteMetrics::for_routes(&names, old.map_or(&[], |o| &o.route_metrics));
    let rate_limits = match old
        .filter(|o| o.config.rate_limits == cfg.rate_limits && o.config.redis == cfg.redis)
    {
        Some(o) => o.rate_limits.clone(),
        None => Arc::new(crate::ratelimit::RateLimits::build(&cfg, |n| {
            shared.metrics.rate_limit(n)
        })?),
    };
    Ok((
        Services {
            routes,
            route_metrics,
            upstreams: Arc::new(upstreams),
            metrics: shared.metrics,
            plugins: shared.plugins,
            shedder: shared.shedder,
            draining: shared.draining,
            tunnels: shared.tunnels,
            tunnel_drain: old
                .filter(|o| tunnels_unaffected(&o.config, &cfg))
                .map(|o| o.tunnel_drain.clone())
                .unwrap_or_default(),
            timeouts: cfg.timeouts.clone(),
            limits: cfg.limits.clone(),
            http: HttpPolicy::from_config(&cfg.http),
            config: cfg,
            loaded,
            rate_limits,
        },
        kept,
    ))
}

/// Whether tunnels opened under `old` may live on under `new`: nothing they were routed,
/// sent or bounded by changed.
fn tunnels_unaffected(old: &Config, new: &Config) -> bool {
    old.routes == new.routes
        && old.clusters == new.clusters
        && old.listeners == new.listeners
        && old.timeouts.tunnel_idle_ms == new.timeouts.tunnel_idle_ms
}

/// The gateway-wide settings a reload changes in place.
fn apply_shared(s: &Services) {
    let cfg = &s.config;
    s.shedder.configure(cfg.limits.max_in_flight);
    s.metrics
        .set_slow(Duration::from_millis(cfg.admin.slow_request_ms));
    if let Some(p) = &s.plugins {
        p.set_policy(&cfg.limits, cfg.http.path_policy());
        p.set_rate_limits(s.rate_limits.clone());
    }
}

/// A reload that changed nothing, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadError {
    /// `invalid`, `refused` (a key that cannot change at runtime) or `error`.
    pub result: &'static str,
    pub problems: Vec<String>,
}

/// A reload that was applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    pub result: &'static str,
    pub hash: String,
    /// Clusters carried over with their state.
    pub kept_clusters: Vec<String>,
}

/// The last reload's outcome, for `GET /admin/config`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastReload {
    pub at_unix_ms: u64,
    pub result: &'static str,
    pub problems: Vec<String>,
}

/// The commit step of a listener change: starts what was bound and stops what went away;
/// returns the problems of listeners that could not start.
pub(crate) type ListenerCommit<'a> = Box<dyn FnOnce() -> Vec<String> + Send + 'a>;

/// What a reload asks of the gateway's listeners. `prepare` binds every listener `new` adds
/// or moves (a taken port is an error and nothing changes); the commit it returns runs once
/// the new services are swapped in.
pub(crate) trait ListenerHook: Send + Sync {
    fn prepare(&self, old: &Config, new: &Config) -> Result<ListenerCommit<'_>, Vec<String>>;
}

/// The serving config, swapped whole by a reload.
pub struct Live {
    current: ArcSwap<Services>,
    source: Option<PathBuf>,
    /// One reload at a time.
    lock: tokio::sync::Mutex<()>,
    last: parking_lot::Mutex<Option<LastReload>>,
    shutdown: watch::Receiver<bool>,
    /// Set by the gateway once its listeners serve.
    listeners: std::sync::OnceLock<Arc<dyn ListenerHook>>,
}

impl Live {
    pub(crate) fn new(
        svc: Services,
        source: Option<PathBuf>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Live {
            current: ArcSwap::from_pointee(svc),
            source,
            lock: tokio::sync::Mutex::new(()),
            last: parking_lot::Mutex::new(None),
            shutdown,
            listeners: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn set_listener_hook(&self, hook: Arc<dyn ListenerHook>) {
        let _ = self.listeners.set(hook);
    }

    /// The services new requests run on.
    pub fn load(&self) -> Arc<Services> {
        self.current.load_full()
    }

    pub fn last_reload(&self) -> Option<LastReload> {
        self.last.lock().clone()
    }

    /// Re-reads the config file and applies it, or changes nothing. Logs and counts either.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one = self.lock.lock().await;
        let out = self.try_reload();
        let svc = self.load();
        let (result, problems) = match &out {
            Ok(r) => {
                tracing::info!(hash = %r.hash, kept_clusters = ?r.kept_clusters, "config reloaded");
                (r.result, Vec::new())
            }
            Err(e) => {
                for p in &e.problems {
                    tracing::error!(result = e.result, problem = %p, "config reload refused");
                }
                tracing::error!(
                    result = e.result,
                    problems = e.problems.len(),
                    hash = %svc.loaded.hash,
                    "config reload refused: the running config keeps serving"
                );
                (e.result, e.problems.clone())
            }
        };
        svc.metrics.count_reload(result);
        *self.last.lock() = Some(LastReload {
            at_unix_ms: unix_ms(SystemTime::now()),
            result,
            problems,
        });
        out
    }

    fn try_reload(&self) -> Result<Reloaded, ReloadError> {
        let err = |result, problems| ReloadError { result, problems };
        let Some(path) = &self.source else {
            return Err(err(
                "error",
                vec!["the gateway was started from an in-memory config, not a file".into()],
            ));
        };
        let cur = self.load();
        if cur.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(err(
                "error",
                vec!["the gateway is draining (shutdown or upgrade): nothing to reload".into()],
            ));
        }
        let checked = check(path).map_err(|p| err("invalid", p))?;
        let fixed = fixed_changes(&cur.config, &checked.config);
        if !fixed.is_empty() {
            return Err(err(
                "refused",
                fixed
                    .iter()
                    .map(|k| {
                        format!(
                            "{}: {k}: cannot change at runtime (restart to apply)",
                            path.display()
                        )
                    })
                    .collect(),
            ));
        }
        let loaded = Loaded {
            hash: checked.hash,
            loaded_at: SystemTime::now(),
            source: Some(path.clone()),
        };
        let (svc, kept) = build(
            Arc::new(checked.config),
            loaded,
            Shared::of(&cur),
            Some(&cur),
            &self.shutdown,
        )
        .map_err(|e| err("error", vec![format!("{}: {e:#}", path.display())]))?;
        let at = |p: Vec<String>| -> Vec<String> {
            p.into_iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect()
        };
        let commit = match self.listeners.get() {
            Some(l) => Some(
                l.prepare(&cur.config, &svc.config)
                    .map_err(|p| err("error", at(p)))?,
            ),
            None => None,
        };
        apply_shared(&svc);
        let hash = svc.loaded.hash.clone();
        let retire = !Arc::ptr_eq(&cur.tunnel_drain, &svc.tunnel_drain);
        let drain = Duration::from_millis(svc.timeouts.drain_ms);
        self.current.store(Arc::new(svc));
        if retire {
            // Tunnels of the old config get the drain time to finish, as requests do at
            // shutdown; WebSocket clients see the connection close and reconnect.
            if cur.tunnel_drain.borrow().is_none() {
                cur.tunnel_drain
                    .send_replace(Some(std::time::Instant::now() + drain));
            }
        }
        if let Some(problems) = commit.map(|c| c()).filter(|p| !p.is_empty()) {
            // Bound and checked in `prepare`; starting can still fail (e.g. the QUIC
            // endpoint). The rest of the config is in force: say so, and what is missing.
            return Err(err("error", at(problems)));
        }
        Ok(Reloaded {
            result: "ok",
            hash,
            kept_clusters: kept.iter().map(|k| k.to_string()).collect(),
        })
    }
}

/// Builds the first generation: the shared parts, then its services.
pub(crate) async fn boot(
    cfg: Config,
    loaded: Option<Loaded>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Services> {
    use anyhow::Context as _;
    let listener_names: Vec<Arc<str>> = cfg
        .listeners
        .iter()
        .map(|l| Arc::from(l.name.as_str()))
        .collect();
    // Opened once at boot: `[access_log]` is not reloadable (see `fixed_changes`).
    let access_log = match &cfg.access_log {
        Some(a) => Some(
            crate::telemetry::access_log::AccessLog::start(a)
                .with_context(|| format!("access_log.path: cannot open `{}`", a.path.display()))?,
        ),
        None => None,
    };
    // Started once at boot, like the access log: `[tracing]` is not reloadable either.
    let tracer = match &cfg.tracing {
        Some(t) => Some(
            crate::telemetry::trace::Tracer::start(t)
                .context("tracing: cannot start the span exporter")?,
        ),
        None => None,
    };
    let metrics = Arc::new(
        Metrics::new(
            &listener_names,
            cfg.admin.passport_ring,
            Duration::from_millis(cfg.admin.slow_request_ms),
        )
        .with_access_log(access_log)
        .with_tracer(tracer),
    );
    let plugins = match &cfg.plugins {
        Some(p) => Some(
            PluginRuntime::start(p, cfg.redis.as_ref(), &cfg.limits, cfg.http.path_policy())
                .await
                .context("starting the plugin runtime")?,
        ),
        None => None,
    };
    let shared = Shared {
        metrics,
        plugins,
        shedder: Arc::new(Shedder::new(cfg.limits.max_in_flight)),
        draining: Arc::new(AtomicBool::new(false)),
        tunnels: Default::default(),
    };
    let loaded = loaded.unwrap_or_else(|| Loaded::in_memory(&cfg));
    let (svc, _) = build(Arc::new(cfg), loaded, shared, None, shutdown)?;
    if let Some(p) = &svc.plugins {
        p.set_rate_limits(svc.rate_limits.clone());
    }
    Ok(svc)
}

/// Reads a config file for `portcullis run`: parse and validate (the plugin directory is
/// checked by the runtime as it loads), with the file's hash.
pub(crate) fn read_for_run(path: &Path) -> Result<(Config, Loaded), Vec<String>> {
    let (cfg, hash) = read(path)?;
    Ok((
        cfg,
        Loaded {
            hash,
            loaded_at: SystemTime::now(),
            source: Some(path.to_path_buf()),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn parse(extra: &str) -> Config {
        let text = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n[[cluster]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n[[route]]\nname = \"r\"\ncluster = \"a\"\n{extra}"
        );
        Config::parse(&text, Path::new(".")).expect("valid")
    }

    #[test]
    fn reloadable_changes_are_not_fixed() {
        let old = parse("");
        let new = parse("[timeouts]\nconnect_ms = 5\n[limits]\nmax_in_flight = 7\n");
        assert!(fixed_changes(&old, &new).is_empty());
    }

    #[test]
    fn fixed_changes_are_named() {
        let old = parse("");
        let mut new = old.clone();
        new.admin.listen = "127.0.0.1:1".into();
        new.listeners[0].max_connections = 3;
        new.listeners.push(config::Listener {
            name: "extra".into(),
            ..new.listeners[0].clone()
        });
        new.admin.upgrade_socket = Some("/run/p.sock".into());
        // Listeners may change: the gateway binds and drains them (gateway::listeners).
        let keys = fixed_changes(&old, &new);
        assert_eq!(keys, ["admin.listen", "admin.upgrade_socket"]);
        let mut a = old.clone();
        a.plugins = Some(
            toml::from_str::<config::Plugins>("dir = \"/p\"\nadmin_token = \"x\"").expect("p"),
        );
        let mut b = a.clone();
        if let Some(p) = b.plugins.as_mut() {
            p.admin_token = Some("y".into());
            p.max_instances = 3;
        }
        assert_eq!(fixed_changes(&a, &b), ["plugins.max_instances"]);
        assert_eq!(fixed_changes(&old, &a), ["plugins (added)"]);
    }
}
