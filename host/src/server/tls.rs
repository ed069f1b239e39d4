//! TLS for listeners: rustls with several certificates chosen by SNI, ALPN h2 + http/1.1.

use crate::config;
use anyhow::{anyhow, Context as _};
use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The certificates of one listener at one instant.
#[derive(Debug)]
struct Certs {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

/// Picks a certificate by SNI: exact name, then `*.parent` wildcard, then the default. The set
/// is swapped atomically on reload; handshakes in progress keep the key they resolved, and
/// established connections are unaffected.
#[derive(Debug)]
pub(crate) struct SniResolver {
    certs: ArcSwap<Certs>,
    /// The files' versions as of the first load, taken before reading them: the reload
    /// watcher starts from this, not from whatever is on disk when its task first runs
    /// (a change in between would otherwise never be noticed).
    loaded: Vec<Option<FileVersion>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        let Some(name) = hello.server_name() else {
            return Some(certs.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = certs.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = certs.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        Some(certs.default.clone())
    }
}

fn load_key(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{}: no certificate found", cert.display()));
    }
    let key_path = key;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("reading private key {}", key_path.display()))?;
    let signing = any_supported_type(&key).map_err(|e| anyhow!("unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing);
    // A key that does not belong to its certificate would fail every handshake. During a
    // rotation that writes the two files one after the other, the poller can see the new
    // certificate with the old key: refuse the pair (the old one stays in service) and load
    // it once the key has been written too.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(anyhow!(
                "{} does not match the certificate {}: {e}",
                key_path.display(),
                cert.display()
            ))
        }
    }
    Ok(Arc::new(certified))
}

fn load_certs(tls: &config::Tls) -> anyhow::Result<Certs> {
    let default = load_key(&tls.cert, &tls.key)?;
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    for s in &tls.sni {
        let k = load_key(&s.cert, &s.key)?;
        for n in &s.names {
            let n = n.to_ascii_lowercase();
            match n.strip_prefix("*.") {
                Some(parent) => wildcard.insert(parent.to_string(), k.clone()),
                None => exact.insert(n, k.clone()),
            };
        }
    }
    Ok(Certs {
        default,
        exact,
        wildcard,
    })
}

/// Builds the rustls server config for a listener, and the resolver to reload.
pub(crate) fn server_config(
    tls: &config::Tls,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<SniResolver>)> {
    let loaded = fingerprint(tls);
    let resolver = Arc::new(SniResolver {
        certs: ArcSwap::from_pointee(load_certs(tls)?),
        loaded,
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), resolver))
}

/// How often certificate files are checked for changes.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies a file's version: mtime and length, and on Unix the inode too. File
/// timestamps are coarse (a kernel tick), so a file replaced within the same tick by one of the
/// same length would look unchanged; a rename into place always brings a new inode.
type FileVersion = (std::time::SystemTime, u64, u64);

fn fingerprint(tls: &config::Tls) -> Vec<Option<FileVersion>> {
    let files = [&tls.cert, &tls.key]
        .into_iter()
        .chain(tls.sni.iter().flat_map(|s| [&s.cert, &s.key]));
    files
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), inode(&m))))
        })
        .collect()
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// Watches a listener's certificate and key files and swaps in new ones when they change.
/// Polling metadata (rather than inotify) also sees atomic symlink swaps, as done by
/// Kubernetes secret mounts. A broken new file is logged and counted, and the old
/// certificates stay in service.
pub(crate) async fn watch_reload(
    listener: String,
    tls: config::Tls,
    resolver: Arc<SniResolver>,
    reloads: Arc<std::sync::atomic::AtomicU64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = resolver.loaded.clone();
    // After a failed load, try again on every tick until one succeeds: a rotation caught
    // half-way (new certificate, old key) completes without a further visible change.
    let mut failed = false;
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = fingerprint(&tls);
        let changed = now != last;
        if !changed && !failed {
            continue;
        }
        last = now;
        match load_certs(&tls) {
            Ok(c) => {
                resolver.certs.store(Arc::new(c));
                failed = false;
                reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(%listener, "TLS certificates reloaded");
            }
            Err(e) if changed => {
                failed = true;
                tracing::error!(%listener, error = %format!("{e:#}"), "TLS certificate reload failed; keeping the previous certificates");
            }
            Err(e) => {
                tracing::debug!(%listener, error = %format!("{e:#}"), "TLS certificate reload still failing");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, stem: &str) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("generate certificate");
        std::fs::write(dir.join(format!("{stem}.crt")), ck.cert.pem()).expect("write cert");
        std::fs::write(
            dir.join(format!("{stem}.key")),
            ck.signing_key.serialize_pem(),
        )
        .expect("write key");
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-tls-unit-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        write_pair(&dir, "a");
        write_pair(&dir, "b");
        let ok = load_key(&dir.join("a.crt"), &dir.join("a.key"));
        let mixed = load_key(&dir.join("a.crt"), &dir.join("b.key"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(ok.is_ok(), "{:?}", ok.err());
        let err = match mixed {
            Ok(_) => panic!("a mismatched pair must be refused"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("b.key") && err.contains("does not match"),
            "{err}"
        );
    }
}
