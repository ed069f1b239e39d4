//! The on-disk compile cache: compiled components kept across restarts, so a gateway whose
//! plugins did not change skips Cranelift at boot (a JS plugin takes seconds to compile).
//!
//! Loading a precompiled artifact runs native code the gateway did not just compile, so the
//! cache is never trusted blindly:
//! * **The directory** (`[plugins] cache_dir`, default `<dir>/.cache`) is created mode 0700 and
//!   refused at boot if it is owned by another user or writable by group or others.
//! * **The key** is the SHA-256 of the component's bytes and of the engine's compatibility hash
//!   (wasmtime's version, target and every setting that changes the code): a new gateway build
//!   or engine config misses instead of loading code compiled for something else.
//! * **Every artifact** carries a header with its key, length and the SHA-256 of its payload;
//!   the file is read into memory and checked before wasmtime sees it. A truncated, corrupt or
//!   stale entry (wasmtime refuses it) is deleted and recompiled, never loaded.
//! * **Writes are atomic** (private temp file, fsync, rename): a crash leaves at worst a stray
//!   temp file (removed later), never a half artifact under a real name.
//! * **Size is bounded** (`cache_max_mb`): beyond it the least recently used artifacts (by
//!   mtime, refreshed on every hit) are evicted, so uploads cannot grow it forever.

use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use wasmtime::component::Component;
use wasmtime::Engine;

const MAGIC: &[u8; 8] = b"PCLCWASM";
const FORMAT: u32 = 1;
/// magic, format, key, payload SHA-256, payload length.
const HEADER_LEN: usize = 8 + 4 + 32 + 32 + 8;
const EXT: &str = "cwasm";
/// A temp file this old is left over from a crash, not a write in progress.
const STALE_TMP: Duration = Duration::from_secs(600);

/// Why the cache directory cannot be used; the gateway refuses to start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheDirError {
    #[error("plugins.cache_dir: `{}`: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("plugins.cache_dir: `{}` is not a directory", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error(
        "plugins.cache_dir: `{}` is writable by group or others (mode {mode:04o}); compiled \
         plugins are native code: `chmod 700` it, or point cache_dir elsewhere",
        dir.display()
    )]
    Writable { dir: PathBuf, mode: u32 },
    #[error(
        "plugins.cache_dir: `{}` is owned by uid {owner}, not by the gateway's uid {me}; \
         compiled plugins are native code: use a directory the gateway's user owns",
        dir.display()
    )]
    NotOwned { dir: PathBuf, owner: u32, me: u32 },
}

/// What a lookup found.
pub(super) enum Lookup {
    Hit(Component),
    Miss,
    /// An entry existed but failed a check (it has been removed): recompile.
    Rejected(String),
}

pub(super) struct DiskCache {
    dir: PathBuf,
    engine_hash: [u8; 32],
    max_bytes: u64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub rejected: AtomicU64,
    pub write_failures: AtomicU64,
    pub evicted: AtomicU64,
    tmp_seq: AtomicU64,
    /// The gateway's uid: an artifact must be owned by it (unix).
    uid: Option<u32>,
}

impl DiskCache {
    /// Creates (mode 0700) or checks the directory. Blocking.
    pub(super) fn open(
        dir: &Path,
        engine: &Engine,
        max_bytes: u64,
    ) -> Result<DiskCache, CacheDirError> {
        let uid = check_dir(dir)?;
        let mut h = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            engine_hash: h.0.finalize().into(),
            max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
            uid,
        })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache key of a component (by the SHA-256 of its bytes) for this engine.
    pub(super) fn key(&self, wasm_digest: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"portcullis compile cache v1\0");
        h.update(self.engine_hash);
        h.update(wasm_digest);
        h.finalize().into()
    }

    pub(super) fn path(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.{EXT}", hex(key)))
    }

    /// Looks a component up. Blocking (reads the artifact).
    pub(super) fn load(&self, engine: &Engine, key: &[u8; 32]) -> Lookup {
        let path = self.path(key);
        let bytes = match self.read_own(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return Lookup::Miss;
            }
            Err(e) => return self.reject(&path, format!("unreadable: {e}")),
        };
        let payload = match verify(&bytes, key) {
            Ok(p) => p,
            Err(why) => return self.reject(&path, why),
        };
        match deserialize_verified(engine, payload) {
            Ok(c) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // The mtime is the LRU clock of eviction.
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Lookup::Hit(c)
            }
            Err(e) => self.reject(&path, format!("refused by wasmtime (stale?): {e:#}")),
        }
    }

    /// Reads an artifact through one handle whose file must be owned by the gateway's user and
    /// writable by no one else: even if the directory were swapped after the boot check, a
    /// file another user planted (or a symlink to one) is refused, not loaded.
    fn read_own(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        use std::io::Read as _;
        let mut f = std::fs::File::open(path)?;
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if Some(meta.uid()) != self.uid || meta.mode() & 0o022 != 0 {
                return Err(std::io::Error::other(format!(
                    "owned by uid {} with mode {:04o}: not written by this gateway's user",
                    meta.uid(),
                    meta.mode() & 0o7777
                )));
            }
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        f.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn reject(&self, path: &Path, why: String) -> Lookup {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::remove_file(path);
        Lookup::Rejected(why)
    }

    /// Stores a freshly compiled component, then evicts beyond the size bound. Blocking.
    pub(super) fn store(&self, key: &[u8; 32], component: &Component) -> anyhow::Result<()> {
        let r = self.write(key, component);
        if r.is_err() {
            self.write_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.evict(key);
        r
    }

    fn write(&self, key: &[u8; 32], component: &Component) -> anyhow::Result<()> {
        let payload = component.serialize().map_err(super::engine::wasm_err)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT.to_le_bytes());
        header.extend_from_slice(key);
        header.extend_from_slice(&Sha256::digest(&payload));
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let tmp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            hex(key),
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| -> std::io::Result<()> {
            let mut f = private_file(&tmp)?;
            f.write_all(&header)?;
            f.write_all(&payload)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.path(key))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(written?)
    }

    /// Removes leftover temp files and, beyond `max_bytes`, the least recently used
    /// artifacts (never `keep`, the one just written).
    fn evict(&self, keep: &[u8; 32]) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let keep = format!("{}.{EXT}", hex(keep));
        let now = SystemTime::now();
        let mut artifacts = Vec::new();
        let mut total = 0u64;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with('.') && name.ends_with(".tmp") {
                if now.duration_since(mtime).is_ok_and(|age| age > STALE_TMP) {
                    let _ = std::fs::remove_file(e.path());
                }
            } else if meta.is_file() && name.ends_with(EXT) {
                total += meta.len();
                if name != keep {
                    artifacts.push((mtime, meta.len(), e.path()));
                }
            }
        }
        artifacts.sort();
        for (_, len, path) in artifacts {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                self.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(artifact = %path.display(), "compile cache: evicted (over cache_max_mb)");
            }
        }
    }
}

/// The payload of an artifact whose header matches `key` and whose hash matches its bytes.
fn verify<'a>(bytes: &'a [u8], key: &[u8; 32]) -> Result<&'a [u8], String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated: {} bytes, shorter than its header",
            bytes.len()
        ));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if &header[..8] != MAGIC || header[8..12] != FORMAT.to_le_bytes() {
        return Err("not a portcullis cache artifact (bad magic or format)".into());
    }
    if &header[12..44] != key {
        return Err("header names another key".into());
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[76..84]);
    let len = u64::from_le_bytes(len);
    if payload.len() as u64 != len {
        return Err(format!(
            "truncated: {} payload bytes, header says {len}",
            payload.len()
        ));
    }
    if Sha256::digest(payload)[..] != header[44..76] {
        return Err("payload hash mismatch (corrupt)".into());
    }
    Ok(payload)
}

/// The one `unsafe` of the crate.
///
/// SAFETY: `Component::deserialize` trusts its input to be code wasmtime compiled, since it
/// maps it executable. `payload` is that: it was read into memory (so it cannot change between
/// check and use, as a mapped file could) from a cache directory only this user can write
/// (checked at boot: owner and mode, created 0700), from a file owned by this user and
/// writable by no one else (checked on the open handle), and `verify` matched the SHA-256 the
/// gateway recorded when it serialized the component, and the key binding it to these component
/// bytes and this engine's compatibility hash. wasmtime additionally checks the artifact's
/// own version and engine settings and refuses a mismatch with an error.
#[allow(unsafe_code)]
fn deserialize_verified(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Component> {
    unsafe { Component::deserialize(engine, payload) }
}

/// For `portcullis check`: what would make boot refuse an existing cache directory (without
/// creating or writing anything). A missing one is fine: boot creates it.
pub(super) fn inspect(dir: &Path) -> Option<String> {
    let meta = std::fs::metadata(dir).ok()?;
    if !meta.is_dir() {
        return Some(
            CacheDirError::NotADirectory {
                dir: dir.to_path_buf(),
            }
            .to_string(),
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            let dir = dir.to_path_buf();
            return Some(CacheDirError::Writable { dir, mode }.to_string());
        }
    }
    None
}

/// Creates (0700) or checks the cache directory; returns the gateway's uid (unix).
fn check_dir(dir: &Path) -> Result<Option<u32>, CacheDirError> {
    let io = |source| CacheDirError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io)?;
    let meta = std::fs::metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(CacheDirError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(CacheDirError::Writable {
                dir: dir.to_path_buf(),
                mode,
            });
        }
        // Our uid without libc: the owner of a file we just created. The name is unique
        // per call, not only per process: two gateways in one process (tests, or a
        // reload beside a boot) open the same cache at once, and a shared name made
        // one of them fail with "File exists".
        static PROBE_SEQ: AtomicU64 = AtomicU64::new(0);
        let probe = dir.join(format!(
            ".owner-probe.{}.{}",
            std::process::id(),
            PROBE_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&probe);
        let me = private_file(&probe)
            .and_then(|f| f.metadata())
            .map(|m| m.uid());
        let _ = std::fs::remove_file(&probe);
        let me = me.map_err(io)?;
        if meta.uid() != me {
            return Err(CacheDirError::NotOwned {
                dir: dir.to_path_buf(),
                owner: meta.uid(),
                me,
            });
        }
        Ok(Some(me))
    }
    #[cfg(not(unix))]
    Ok(None)
}

/// A new file only its owner can read or write.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::File::options();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `Hash` into SHA-256: a digest of the engine's compatibility that is stable across
/// runs (std's `DefaultHasher` is not promised to be).
struct ShaHasher(Sha256);

impl std::hash::Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "portcullis-cache-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn artifact(key: &[u8; 32], payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&FORMAT.to_le_bytes());
        v.extend_from_slice(key);
        v.extend_from_slice(&Sha256::digest(payload));
        v.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// Gateways in one process open one cache directory at the same time (CI failed on
    /// this in stop 34: "File exists" from a probe name shared by the process).
    #[test]
    fn many_opens_of_one_directory_at_once_all_succeed() {
        let dir = tmp("concurrent").join("cache");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .try_for_each(|_| check_dir(&dir).map(|_| ()).map_err(|e| e.to_string()))
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().expect("thread"), Ok(()));
        }
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("read dir")
            .filter_map(|e| e.ok())
            .collect();
        assert!(left.is_empty(), "no probe files left behind: {left:?}");
    }

    #[test]
    fn only_an_intact_artifact_for_its_key_passes() {
        let key = [7u8; 32];
        let good = artifact(&key, b"compiled code");
        assert_eq!(verify(&good, &key), Ok(&b"compiled code"[..]));
        assert!(verify(&good, &[8u8; 32]).is_err(), "another key");
        for cut in [0, 10, HEADER_LEN, good.len() - 1] {
            let e = verify(&good[..cut], &key).expect_err("truncated");
            assert!(e.contains("truncated"), "{cut}: {e}");
        }
        let mut flipped = good.clone();
        *flipped.last_mut().expect("payload") ^= 1;
        assert!(verify(&flipped, &key)
            .expect_err("corrupt")
            .contains("hash"));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(verify(&magic, &key).is_err());
        let mut longer = good;
        longer.push(0);
        assert!(verify(&longer, &key).is_err(), "trailing bytes");
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_is_created_private_and_refused_when_others_can_write_it() {
        use std::os::unix::fs::PermissionsExt;
        let base = tmp("dir");
        let fresh = base.join("a/b");
        check_dir(&fresh).expect("created");
        let mode = std::fs::metadata(&fresh).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            std::fs::read_dir(&fresh).expect("dir").count(),
            0,
            "the owner probe is removed"
        );
        for bad in [0o777, 0o722, 0o720, 0o702] {
            std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(bad)).expect("chmod");
            match check_dir(&fresh) {
                Err(CacheDirError::Writable { mode, .. }) => assert_eq!(mode, bad),
                other => panic!("{bad:o}: {other:?}"),
            }
        }
        assert!(inspect(&fresh).is_some_and(|e| e.contains("writable")));
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        check_dir(&fresh).expect("readable by others is fine");
        assert_eq!(inspect(&fresh), None);
        assert_eq!(inspect(&base.join("missing")), None, "boot will create it");
        let file = base.join("file");
        std::fs::write(&file, b"x").expect("file");
        assert!(check_dir(&file).is_err(), "a file is not a cache dir");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[cfg(unix)]
    #[test]
    fn an_artifact_others_could_write_is_refused_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp("planted");
        let engine = Engine::default();
        let cache = DiskCache::open(&dir, &engine, u64::MAX).expect("open");
        let key = cache.key(&[9; 32]);
        let path = cache.path(&key);
        // A well-formed header over junk: only the file's mode gives it away.
        std::fs::write(&path, artifact(&key, b"not code")).expect("plant");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        match cache.load(&engine, &key) {
            Lookup::Rejected(why) => assert!(why.contains("mode 0666"), "{why}"),
            _ => panic!("a writable-by-others artifact must be rejected"),
        }
        assert!(!path.exists(), "removed");
        assert!(matches!(cache.load(&engine, &key), Lookup::Miss));
        assert_eq!(cache.rejected.load(Ordering::Relaxed), 1);
        assert_eq!(cache.misses.load(Ordering::Relaxed), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn eviction_keeps_the_newest_within_the_bound() {
        let dir = tmp("evict");
        let engine = Engine::default();
        let mut cache = DiskCache::open(&dir, &engine, u64::MAX).expect("open");
        let old = dir.join(format!("{}.{EXT}", hex(&[1; 32])));
        let mid = dir.join(format!("{}.{EXT}", hex(&[2; 32])));
        let new = dir.join(format!("{}.{EXT}", hex(&[3; 32])));
        let stale_tmp = dir.join(".x.1.0.tmp");
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        for (i, p) in [&old, &mid, &new, &stale_tmp].into_iter().enumerate() {
            std::fs::write(p, vec![0u8; 100]).expect("write");
            let f = std::fs::File::options().append(true).open(p).expect("open");
            f.set_modified(t0 + Duration::from_secs(i as u64))
                .expect("mtime");
        }
        cache.max_bytes = 250;
        cache.evict(&[3; 32]);
        assert!(!old.exists() && mid.exists() && new.exists());
        assert!(
            !stale_tmp.exists(),
            "a crash's leftover temp file is removed"
        );
        assert_eq!(cache.evicted.load(Ordering::Relaxed), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
