//! The plugin directory and what is loaded from it.
//!
//! One reload path for everything: a file change (seen by `notify`, debounced), an admin
//! upload (written atomically into the directory) and the boot scan all end in `rescan`, which
//! compiles off the request path, type-checks against the world, instantiates once and only
//! then swaps the new `Chain` in atomically. A version that fails any step never replaces a
//! working one; the failure is logged, counted and shown by the admin API.

use super::cache::{DiskCache, Lookup};
use super::call::Plugin;
use super::engine::WasmHost;
use super::manifest::{Manifest, MAX_MANIFEST_BYTES};
use super::stats::PluginStats;
use super::Chain;
use crate::config;
use anyhow::Context as _;
use arc_swap::ArcSwap;
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::Component;

/// Compiled components kept by content hash, so a revert or re-upload is instant.
const COMPONENT_CACHE: usize = 32;

/// One compiled component in memory. Concurrent builds of the same bytes (several plugins
/// from one `.wasm`, compiled in parallel at boot) wait for one compile instead of each
/// doing it.
type Compiled = Arc<tokio::sync::OnceCell<Component>>;

/// Where a build's component came from, for the log.
#[derive(Clone, Copy)]
enum Origin {
    Memory,
    Disk,
    Compiled,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Memory => "memory",
            Origin::Disk => "disk cache",
            Origin::Compiled => "compiled",
        }
    }
}

/// What the admin API shows for a name in the directory.
pub(super) struct Entry {
    /// The version serving traffic, if any.
    pub loaded: Option<Arc<Plugin>>,
    /// The last load failure for this name (cleared by a successful load).
    pub error: Option<(SystemTime, String)>,
    /// Hash of the files last attempted, loaded or not: unchanged files are not retried.
    pub attempted: Option<String>,
}

pub(super) struct Registry {
    pub host: Arc<WasmHost>,
    pub dir: PathBuf,
    pub cfg: config::Plugins,
    /// The gateway's `[limits]` and `[http]` path policy the chain applies; a config reload
    /// replaces them (`set_policy`).
    policy: Mutex<(config::Limits, crate::core::identity::PathPolicy)>,
    pub current: ArcSwap<Chain>,
    pub entries: Mutex<BTreeMap<String, Entry>>,
    stats: Mutex<HashMap<String, Arc<PluginStats>>>,
    cache: Mutex<Vec<([u8; 32], Compiled)>>,
    /// Compiled components across restarts (`[plugins] cache`); `None` when off.
    pub disk: Option<Arc<DiskCache>>,
    /// Serialises rescans: one at a time, so swaps happen in order.
    scan_lock: tokio::sync::Mutex<()>,
    /// Test instantiations one at a time: plugins compile in parallel, but two instantiating
    /// at once would need two of the `max_instances` pool's slots (with `max_instances = 1`
    /// the second failed at startup, depending on timing).
    validate_lock: tokio::sync::Mutex<()>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

/// A plugin's files as read from the directory.
struct Files {
    wasm: Vec<u8>,
    manifest: String,
    hash: String,
}

impl Registry {
    pub(super) fn new(
        cfg: &config::Plugins,
        limits: &config::Limits,
        path: crate::core::identity::PathPolicy,
        host: Arc<WasmHost>,
        disk: Option<Arc<DiskCache>>,
    ) -> Self {
        Registry {
            host,
            dir: cfg.dir.clone(),
            cfg: cfg.clone(),
            policy: Mutex::new((limits.clone(), path)),
            current: ArcSwap::from_pointee(Chain::default()),
            entries: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(HashMap::new()),
            cache: Mutex::new(Vec::new()),
            disk,
            scan_lock: tokio::sync::Mutex::new(()),
            validate_lock: tokio::sync::Mutex::new(()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }
    }

    fn stats_for(&self, name: &str) -> Arc<PluginStats> {
        self.stats
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(PluginStats::new(name)))
            .clone()
    }

    /// Plugin names present in the directory (`<name>.wasm` or `<name>.toml`), skipping hidden
    /// and temporary files.
    fn names_on_disk(&self) -> anyhow::Result<Vec<String>> {
        let mut names = std::collections::BTreeSet::new();
        let rd = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading plugin dir {}", self.dir.display()))?;
        for e in rd.flatten() {
            let file = e.file_name();
            let Some(file) = file.to_str() else { continue };
            if file.starts_with('.') {
                continue;
            }
            let stem = file
                .strip_suffix(".wasm")
                .or_else(|| file.strip_suffix(".toml"));
            if let Some(stem) = stem {
                if valid_name(stem) {
                    names.insert(stem.to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn read_files(&self, name: &str) -> Result<Files, String> {
        let wasm_path = self.dir.join(format!("{name}.wasm"));
        let toml_path = self.dir.join(format!("{name}.toml"));
        let wasm = read_capped(&wasm_path, self.cfg.max_upload_bytes)?;
        let manifest = read_capped(&toml_path, MAX_MANIFEST_BYTES)?;
        let manifest = String::from_utf8(manifest)
            .map_err(|_| format!("{}: not UTF-8", toml_path.display()))?;
        Ok(Files {
            hash: version_hash(&wasm, manifest.as_bytes()),
            wasm,
            manifest,
        })
    }

    /// The full version hash of `name`'s files in the directory, if both are readable.
    pub(super) fn disk_version(&self, name: &str) -> Option<String> {
        self.read_files(name).ok().map(|f| f.hash)
    }

    /// Compiles, links, type-checks and test-instantiates one plugin.
    pub(super) async fn build(
        &self,
        name: &str,
        wasm: Vec<u8>,
        manifest_text: &str,
    ) -> Result<Arc<Plugin>, String> {
        let manifest =
            Manifest::parse(manifest_text, &self.cfg).map_err(|e| format!("{name}.toml: {e}"))?;
        let version = version_hash(&wasm, manifest_text.as_bytes())[..16].to_string();
        let started = Instant::now();
        let (component, origin) = self.component(name, wasm).await?;
        tracing::info!(
            plugin = %name,
            source = origin.as_str(),
            ms = started.elapsed().as_millis() as u64,
            "plugin component ready"
        );
        let pre = super::versions::link(&self.host.linker, &component, manifest.kind)
            .map_err(|e| format!("{name}.wasm: {e}"))?;
        tracing::debug!(plugin = %name, wit = pre.version(), "plugin linked");
        let plugin = Arc::new(Plugin::new(
            name,
            version,
            manifest,
            pre,
            self.stats_for(name),
        ));
        let one_at_a_time = self.validate_lock.lock().await;
        plugin
            .validate(&self.host)
            .await
            .map_err(|e| format!("{name}.wasm: test instantiation failed: {e:#}"))?;
        drop(one_at_a_time);
        Ok(plugin)
    }

    /// The compiled component for `wasm`: from memory, else the disk cache, else Cranelift
    /// (off the async workers), storing the result in both caches.
    async fn component(&self, name: &str, wasm: Vec<u8>) -> Result<(Component, Origin), String> {
        let digest: [u8; 32] = Sha256::digest(&wasm).into();
        let cell = {
            let mut cache = self.cache.lock();
            match cache.iter().find(|(h, _)| *h == digest) {
                Some((_, c)) => c.clone(),
                None => {
                    if cache.len() >= COMPONENT_CACHE {
                        cache.remove(0);
                    }
                    let c = Compiled::default();
                    cache.push((digest, c.clone()));
                    c
                }
            }
        };
        let mut origin = Origin::Memory;
        let got = cell
            .get_or_try_init(|| async {
                let engine = self.host.engine.clone();
                let disk = self.disk.clone();
                let name = name.to_string();
                let (c, o) = tokio::task::spawn_blocking(move || {
                    load_or_compile(&engine, disk.as_deref(), &name, &wasm, &digest)
                })
                .await
                .map_err(|e| format!("compile task failed: {e}"))??;
                origin = o;
                Ok::<_, String>(c)
            })
            .await
            .cloned();
        match got {
            Ok(c) => Ok((c, origin)),
            Err(e) => {
                // Forget the failed attempt: the next build of these bytes tries again.
                self.cache
                    .lock()
                    .retain(|(h, c)| *h != digest || c.initialized());
                Err(format!("{name}.wasm: {e}"))
            }
        }
    }

    /// Brings the loaded set in line with the directory. Returns the load errors (by name) of
    /// this scan. `strict` (boot) turns any error into a failure of the whole scan.
    pub(super) async fn rescan(&self, strict: bool) -> anyhow::Result<Vec<(String, String)>> {
        let _one_at_a_time = self.scan_lock.lock().await;
        let names = self.names_on_disk()?;
        let mut errors = Vec::new();
        let mut changed = false;

        // Unload what vanished.
        {
            let mut entries = self.entries.lock();
            let gone: Vec<String> = entries
                .keys()
                .filter(|n| !names.contains(n))
                .cloned()
                .collect();
            for n in gone {
                entries.remove(&n);
                self.stats.lock().remove(&n);
                tracing::info!(plugin = %n, "plugin unloaded (files removed)");
                changed = true;
            }
        }

        // What changed since the last attempt (cheap: read and hash).
        let mut todo = Vec::new();
        for name in &names {
            let files = self.read_files(name);
            let hash = files.as_ref().map(|f| f.hash.clone()).ok();
            let unchanged = {
                let entries = self.entries.lock();
                entries
                    .get(name)
                    .is_some_and(|e| hash.is_some() && e.attempted == hash)
            };
            if !unchanged {
                todo.push((name.clone(), files, hash));
            }
        }
        // Build the changed plugins concurrently, as many at once as there are cores (each
        // compile runs on a blocking thread); results come back in name order.
        let started = Instant::now();
        let count = todo.len();
        let parallel = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(count.max(1));
        let built: Vec<_> =
            futures_util::stream::iter(todo.into_iter().map(|(name, files, hash)| async move {
                let result = match files {
                    Ok(f) => self.build(&name, f.wasm, &f.manifest).await,
                    Err(e) => Err(e),
                };
                (name, hash, result)
            }))
            .buffered(parallel)
            .collect()
            .await;
        if count > 0 {
            tracing::info!(
                plugins = count,
                parallel,
                ms = started.elapsed().as_millis() as u64,
                "plugin builds finished"
            );
        }

        for (name, hash, result) in built {
            let mut entries = self.entries.lock();
            let entry = entries.entry(name.clone()).or_insert(Entry {
                loaded: None,
                error: None,
                attempted: None,
            });
            entry.attempted = hash;
            match result {
                Ok(p) => {
                    tracing::info!(plugin = %name, version = %p.version, kind = p.kind().as_str(), "plugin loaded");
                    entry.loaded = Some(p);
                    entry.error = None;
                    self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                    changed = true;
                }
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, kept_version = entry.loaded.as_ref().map(|p| p.version.as_str()).unwrap_or("none"), "plugin load failed; the previous version (if any) keeps serving");
                    if let Some(p) = &entry.loaded {
                        p.stats.set_last_error(&e);
                    }
                    entry.error = Some((SystemTime::now(), e.clone()));
                    self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                    errors.push((name.clone(), e));
                }
            }
        }
        if changed {
            self.publish();
        }
        if strict && !errors.is_empty() {
            anyhow::bail!(
                "plugin load failed: {}",
                errors
                    .iter()
                    .map(|(_, e)| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        Ok(errors)
    }

    /// Builds a new chain from the loaded entries and swaps it in. Requests that already took
    /// a snapshot keep theirs until they finish.
    fn publish(&self) {
        let (limits, path) = self.policy.lock().clone();
        let entries = self.entries.lock();
        let loaded: Vec<Arc<Plugin>> = entries.values().filter_map(|e| e.loaded.clone()).collect();
        self.current.store(Arc::new(Chain::build(
            loaded,
            self.host.clone(),
            &self.cfg,
            &limits,
            path,
        )));
    }

    /// A config reload changed `[limits]` or `[http]`: rebuilds the chain with them.
    pub(super) fn set_policy(
        &self,
        limits: &config::Limits,
        path: crate::core::identity::PathPolicy,
    ) {
        *self.policy.lock() = (limits.clone(), path);
        self.publish();
    }

    /// Records a rejected upload so the admin API shows it beside the version that kept
    /// serving.
    pub(super) fn record_upload_failure(&self, name: &str, error: &str) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock();
        if let Some(e) = entries.get_mut(name) {
            e.error = Some((SystemTime::now(), format!("upload rejected: {error}")));
        }
    }

    /// Writes an uploaded plugin into the directory atomically (temp file + rename), manifest
    /// first, so the watcher only ever sees complete files.
    pub(super) fn write(&self, name: &str, wasm: &[u8], manifest: &str) -> std::io::Result<()> {
        let tmp_t = self.dir.join(format!(".{name}.toml.tmp"));
        let tmp_w = self.dir.join(format!(".{name}.wasm.tmp"));
        std::fs::write(&tmp_t, manifest)?;
        std::fs::write(&tmp_w, wasm)?;
        std::fs::rename(&tmp_t, self.dir.join(format!("{name}.toml")))?;
        std::fs::rename(&tmp_w, self.dir.join(format!("{name}.wasm")))?;
        Ok(())
    }

    pub(super) fn remove(&self, name: &str) -> std::io::Result<bool> {
        let mut found = false;
        for ext in ["wasm", "toml"] {
            match std::fs::remove_file(self.dir.join(format!("{name}.{ext}"))) {
                Ok(()) => found = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// Watches the directory and rescans after changes settle for `reload_debounce_ms`.
    pub(super) fn watch(self: &Arc<Self>) -> anyhow::Result<notify::RecommendedWatcher> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok_and(|e| is_change(&e.kind)) {
                // A full channel already means "rescan pending": coalesce.
                let _ = tx.try_send(());
            }
        })?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        let me = Arc::downgrade(self);
        let debounce = Duration::from_millis(self.cfg.reload_debounce_ms);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Debounce: wait until no event for `debounce`.
                loop {
                    match tokio::time::timeout(debounce, rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                let Some(reg) = me.upgrade() else { return };
                if let Err(e) = reg.rescan(false).await {
                    tracing::warn!(error = %format!("{e:#}"), "plugin directory rescan failed");
                }
            }
        });
        Ok(watcher)
    }
}

/// The disk cache's artifact for `wasm` if it has a sound one, else a fresh compile (stored
/// for the next boot). Blocking. An entry that fails its checks is logged and recompiled.
fn load_or_compile(
    engine: &wasmtime::Engine,
    disk: Option<&DiskCache>,
    name: &str,
    wasm: &[u8],
    digest: &[u8; 32],
) -> Result<(Component, Origin), String> {
    let key = disk.map(|d| d.key(digest));
    if let (Some(d), Some(key)) = (disk, &key) {
        match d.load(engine, key) {
            Lookup::Hit(c) => return Ok((c, Origin::Disk)),
            Lookup::Miss => {}
            Lookup::Rejected(why) => tracing::warn!(
                plugin = %name,
                artifact = %d.path(key).display(),
                reason = %why,
                "compile cache: entry rejected and removed; recompiling"
            ),
        }
    }
    let c = Component::new(engine, wasm).map_err(|e| format!("not a valid component: {e:#}"))?;
    if let (Some(d), Some(key)) = (disk, &key) {
        if let Err(e) = d.store(key, &c) {
            tracing::warn!(plugin = %name, dir = %d.dir().display(), error = %format!("{e:#}"), "compile cache: could not store the compiled component (next boot compiles again)");
        }
    }
    Ok((c, Origin::Compiled))
}

/// Whether a directory event can mean new plugin files. Reads are not: every rescan reads and
/// hashes every plugin, and inotify reports those opens and reads, so counting them made
/// each rescan trigger the next, forever (measured: 15% of a core on an idle gateway with
/// three 12–18 MiB JavaScript/Python plugins, and a third of its CPU under load).
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// Plugin names become file names and metric labels: keep them boring.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The full version hash of a plugin's files (the fleet store's artifact address too).
pub(super) fn version_hash(wasm: &[u8], manifest: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(wasm);
    h.update([0u8]);
    h.update(manifest);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn read_capped(path: &Path, cap: usize) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > cap as u64 {
        return Err(format!(
            "{}: {} bytes, more than the limit of {cap}",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}
