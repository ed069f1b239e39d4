//! Embeds what `portcullis plugin new` writes into a project: the SDKs under `sdk/` (Rust, and
//! the JavaScript and Python ones when present), the WIT the host serves (`wit/`), and the
//! workspace `Cargo.toml` (the SDK crates inherit their package fields from it). Nothing is
//! published to a registry, so a project must build from what the binary carries.
//!
//! Writes `$OUT_DIR/embedded.rs`: `static FILES: &[(&str, &[u8])]`, paths relative to the
//! repository root, sorted. Installed toolchains and build output (`node_modules`, virtualenvs,
//! caches, `target`, `.wasm`) are skipped; the total is bounded so a stray large file fails the
//! build loudly instead of bloating the binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bound on the embedded bytes: the SDK sources and WIT are ~100 KiB today.
const MAX_TOTAL_BYTES: u64 = 8 << 20;

/// Directory names never embedded: installed dependencies, virtualenvs, caches, build output.
const SKIP_DIRS: &[&str] = &[
    "node_modules",
    "target",
    "__pycache__",
    "venv",
    "dist-newstyle",
];

fn skip_file(name: &str) -> bool {
    name.ends_with(".wasm") || name.ends_with(".pyc")
}

/// Collects the files under `rel` to embed and registers what to watch; returns whether the
/// subtree holds nothing skipped. cargo scans a watched directory recursively, so a directory
/// holding `node_modules` or a virtualenv is not watched itself (every `npm install` would
/// rebuild the host): its embedded children are, one by one.
fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>, watch: &mut Vec<PathBuf>) -> bool {
    let dir = root.join(rel);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return true;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    let mut clean = true;
    let mut mine = Vec::new();
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        let Ok(ft) = e.file_type() else { continue };
        let child = rel.join(&name);
        // Hidden entries: `.venv`, `.cache`, `.pytest_cache`, editor files.
        if name.starts_with('.') || (ft.is_dir() && SKIP_DIRS.contains(&name.as_str())) {
            clean = false;
        } else if ft.is_dir() {
            let mut sub = Vec::new();
            if walk(root, &child, out, &mut sub) {
                mine.push(root.join(&child));
            } else {
                clean = false;
                mine.extend(sub);
            }
        } else if ft.is_file() && !skip_file(&name) {
            mine.push(root.join(&child));
            out.push(child);
        } else {
            clean = false;
        }
    }
    if clean {
        watch.push(dir);
    } else {
        watch.extend(mine);
    }
    clean
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("repository root").to_path_buf();
    let mut files = vec![PathBuf::from("Cargo.toml")];
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    let mut watch = Vec::new();
    walk(&root, Path::new("sdk"), &mut files, &mut watch);
    walk(&root, Path::new("wit"), &mut files, &mut watch);
    for w in &watch {
        println!("cargo:rerun-if-changed={}", w.display());
    }
    let mut total = 0u64;
    let mut src = String::from("pub(crate) static FILES: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let abs = root.join(f);
        total += std::fs::metadata(&abs).map(|m| m.len()).unwrap_or(0);
        let rel = f.to_string_lossy().replace('\\', "/");
        writeln!(
            src,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.display().to_string()
        )
        .expect("write to a String");
    }
    src.push_str("];\n");
    assert!(
        total <= MAX_TOTAL_BYTES,
        "embedding sdk/ and wit/: {total} bytes, more than {MAX_TOTAL_BYTES}: a build output or \
         dependency directory is not skipped (see SKIP_DIRS in host/build.rs)"
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded.rs");
    std::fs::write(out, src).expect("writing embedded.rs");
}
