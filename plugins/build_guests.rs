// Builds the guest plugins in `plugins/` for wasm32-wasip2 from a build script, so that
// `cargo test` and the demo need no manual step on a fresh machine. Included (not a crate) by
// `tests/build.rs` and `examples/build.rs`.
//
// Sets `PORTCULLIS_GUEST_DIR` for the including crate: the directory holding `<crate>.wasm`.

#[allow(dead_code)]
fn build_guests() {
    use std::path::PathBuf;
    use std::process::Command;

    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    let plugins = root.join("plugins");
    // Watch the guests' sources only. Not the whole `plugins/` folder: the guest build writes
    // `plugins/target`, which would make the folder newer than every build, so this script (and
    // the crate including it) would rerun each time.
    for path in guest_sources(&root) {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    // The target is not preinstalled on a fresh machine; rustup adds it in seconds.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let have_target = PathBuf::from(&sysroot)
        .join("lib/rustlib/wasm32-wasip2")
        .is_dir();
    if !have_target {
        let status = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!(
                "the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` failed: {other:?}"
            ),
        }
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = plugins.join("target");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Don't leak the outer build's settings (flags for the host target, its target dir).
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_MAKEFLAGS"
            || k == "RUSTFLAGS"
            || k == "RUSTC_WRAPPER"
            || k == "RUSTC_WORKSPACE_WRAPPER"
        {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("running cargo for the guest plugins");
    if !out.status.success() {
        panic!(
            "building the guest plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=PORTCULLIS_GUEST_DIR={}", dir.display());
}

/// What the guest build reads: each guest crate's files but its own `target/` (`src/`,
/// `Cargo.toml`, any manifest or `build.rs`), the guest workspace's `Cargo.toml` and `Cargo.lock`,
/// the SDK's `src/` and `Cargo.toml`, and `wit/`. Never `plugins/target`.
#[allow(dead_code)]
fn guest_sources(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let plugins = root.join("plugins");
    let mut out = vec![
        plugins.join("Cargo.toml"),
        plugins.join("Cargo.lock"),
        root.join("sdk").join("Cargo.toml"),
        root.join("sdk").join("src"),
        root.join("wit"),
    ];
    let mut crates: Vec<_> = std::fs::read_dir(&plugins)
        .expect("reading plugins/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    crates.sort();
    for krate in crates {
        let mut entries: Vec<_> = std::fs::read_dir(&krate)
            .expect("reading a guest crate")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != "target")
            .map(|e| e.path())
            .collect();
        entries.sort();
        out.extend(entries);
    }
    out
}
