//! The on-disk compile cache (`[plugins] cache`): a second boot with unchanged plugins loads
//! their compiled code from disk instead of compiling; a damaged artifact is detected,
//! recompiled and replaced; a cache directory others could write is refused.

use portcullis_tests::*;
use std::path::{Path, PathBuf};

fn config(up: std::net::SocketAddr, dir: &Path, extra: &str) -> String {
    basic_config(
        &[("up", up)],
        &format!(
            "[[route]]\nname = \"all\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"up\"\n[plugins]\ndir = \"{}\"\n{extra}",
            dir.display()
        ),
    )
}

fn install(dir: &Path) {
    install_plugin(
        dir,
        "tag",
        "testbed",
        "kind = \"inbound\"\n[config]\nmode = \"ok\"\n",
    );
    install_plugin(
        dir,
        "headers",
        "add-header",
        "kind = \"outbound\"\n[config]\nset = { \"x-frame-options\" = \"DENY\" }\n",
    );
}

/// Both plugins run: the inbound one tags the request, the outbound one the response.
async fn assert_plugins_work(gw: &portcullis::Gateway) {
    let addr = gw.listener_addr("main").expect("listener");
    let (p, b) = send(addr, get(addr, "/x")).await;
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&b));
    let echo: serde_json::Value = serde_json::from_slice(&b).expect("echo json");
    assert_eq!(echo["headers"]["x-testbed"], "ok", "inbound filter ran");
    assert_eq!(header(&p, "x-frame-options"), "DENY", "outbound filter ran");
}

/// `portcullis_plugin_compile_cache_total{result=...}` by result.
async fn cache_counts(gw: &portcullis::Gateway) -> [f64; 3] {
    let m = metrics(gw.admin_addr()).await;
    assert_valid_exposition(&m);
    ["hit", "miss", "rejected"].map(|r| {
        sample(
            &m,
            &format!("portcullis_plugin_compile_cache_total{{result=\"{r}\"}}"),
        )
        .unwrap_or_else(|| panic!("no compile cache sample for {r}:\n{m}"))
    })
}

fn artifacts(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(".cache"))
        .expect("cache dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn second_boot_loads_from_the_cache_and_a_truncated_artifact_is_recompiled() {
    let up = Upstream::start("up").await;
    let dir = temp_dir("cache-boot");
    install(&dir);
    let cfg = config(up.addr, &dir, "");

    // First boot: nothing cached, both components compiled and stored.
    let gw = gateway(&cfg, Path::new(".")).await;
    assert_eq!(
        cache_counts(&gw).await,
        [0.0, 2.0, 0.0],
        "hit, miss, rejected"
    );
    assert_plugins_work(&gw).await;
    gw.shutdown().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(".cache"))
            .expect("cache dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the default cache dir is private");
    }
    let stored = artifacts(&dir);
    assert_eq!(stored.len(), 2, "one artifact per distinct component");

    // Second boot, unchanged plugins: both from disk, nothing compiled.
    let gw = gateway(&cfg, Path::new(".")).await;
    assert_eq!(
        cache_counts(&gw).await,
        [2.0, 0.0, 0.0],
        "hit, miss, rejected"
    );
    assert_plugins_work(&gw).await;
    gw.shutdown().await;

    // A truncated artifact (a crash, a full disk) is detected before loading, recompiled, and
    // replaced by a sound one.
    let victim = &stored[0];
    let full = std::fs::metadata(victim).expect("artifact").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .expect("open artifact");
    f.set_len(full / 2).expect("truncate");
    drop(f);
    let gw = gateway(&cfg, Path::new(".")).await;
    assert_eq!(
        cache_counts(&gw).await,
        [1.0, 0.0, 1.0],
        "hit, miss, rejected"
    );
    assert_plugins_work(&gw).await;
    gw.shutdown().await;
    assert_eq!(
        std::fs::metadata(victim).expect("rewritten").len(),
        full,
        "the recompiled component was stored again"
    );

    // A flipped byte in the payload (same length) fails the hash check the same way.
    let mut bytes = std::fs::read(victim).expect("artifact");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(victim, &bytes).expect("corrupt");
    let gw = gateway(&cfg, Path::new(".")).await;
    assert_eq!(
        cache_counts(&gw).await,
        [1.0, 0.0, 1.0],
        "hit, miss, rejected"
    );
    assert_plugins_work(&gw).await;
    gw.shutdown().await;

    // `cache = false`: no lookups, no metric family, plugins still load.
    let gw = gateway(&config(up.addr, &dir, "cache = false\n"), Path::new(".")).await;
    let m = metrics(gw.admin_addr()).await;
    assert!(!m.contains("portcullis_plugin_compile_cache_total"), "{m}");
    assert_plugins_work(&gw).await;
    gw.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_cache_dir_others_can_write_is_refused_at_boot() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::start("up").await;
    let dir = temp_dir("cache-perms");
    install(&dir);
    let cache = temp_dir("cache-perms-shared");
    std::fs::set_permissions(&*cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let cfg = portcullis::Config::parse(
        &config(
            up.addr,
            &dir,
            &format!("cache_dir = \"{}\"\n", cache.display()),
        ),
        Path::new("."),
    )
    .expect("config");
    let err = match portcullis::Gateway::start(cfg).await {
        Ok(_) => panic!("a world-writable cache dir must be refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("plugins.cache_dir") && err.contains("writable by group or others"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&*cache).expect("cache dir").count(),
        0,
        "nothing was written into the refused directory"
    );

    // Group-writable is refused too; private is accepted and used.
    std::fs::set_permissions(&*cache, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    let cfg = config(
        up.addr,
        &dir,
        &format!("cache_dir = \"{}\"\n", cache.display()),
    );
    let parsed = portcullis::Config::parse(&cfg, Path::new(".")).expect("config");
    assert!(portcullis::Gateway::start(parsed).await.is_err());
    std::fs::set_permissions(&*cache, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let gw = gateway(&cfg, Path::new(".")).await;
    assert_eq!(
        cache_counts(&gw).await,
        [0.0, 2.0, 0.0],
        "hit, miss, rejected"
    );
    assert_plugins_work(&gw).await;
    gw.shutdown().await;
    assert!(
        !dir.join(".cache").exists(),
        "cache_dir replaces the default"
    );
}
