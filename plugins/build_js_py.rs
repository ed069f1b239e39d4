// Builds the first-party JavaScript and Python plugins from source in a build script, so that
// `cargo test` and the demo need no manual step on a fresh machine. Included (not a crate) by
// `tests/build.rs` and `examples/build.rs`, next to `build_guests.rs`.
//
// The toolchains come from the project's own files, from the package registries:
// * JavaScript: `sdk/js/package-lock.json` → `npm ci` in `plugins/target/js-py/js-sdk/` (a
//   copy of `sdk/js`), giving componentize-js;
// * Python: `sdk/python/requirements.txt` (componentize-py, pinned) → a virtualenv in
//   `plugins/target/js-py/py-venv/`.
// Each install is redone only when its lock file changed, and each plugin only when its
// sources, the SDK, the WIT or the toolchain changed (a content stamp next to the `.wasm`),
// so a re-run costs a few file reads. Measured on the 2-core CI machine with a fresh cache
// dir: see docs/plugins.md, "Building JavaScript and Python plugins in this repository".
//
// Sets `PORTCULLIS_JSPY_DIR` for the including crate: the directory holding `<name>.wasm`.

/// The first-party JS/Python plugins: (output name, language, world, source).
#[allow(dead_code)]
const JS_PY_PLUGINS: [(&str, &str, &str, &str); 4] = [
    ("home_js", "js", "endpoint", "plugins/js/home/home.js"),
    ("pass_js", "js", "filter", "plugins/js/pass/pass.js"),
    ("ab_py", "python", "filter", "plugins/python/ab"),
    ("pass_py", "python", "filter", "plugins/python/pass"),
];

/// The SDK files the JS build copies into its tool folder (everything `build.mjs` needs).
#[allow(dead_code)]
const JS_SDK_FILES: [&str; 5] = [
    "package.json",
    "package-lock.json",
    "index.js",
    "endpoint.js",
    "build.mjs",
];

#[allow(dead_code)]
fn build_js_py() {
    use std::path::PathBuf;

    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    // Watch sources only: never `node_modules`, `__pycache__` or the cache folder.
    for f in JS_SDK_FILES {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("sdk/js").join(f).display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("sdk/python/requirements.txt").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("sdk/python/build.py").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("sdk/python/portcullis_sdk").display()
    );
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    for (_, _, _, src) in JS_PY_PLUGINS {
        let src = root.join(src);
        let dir = if src.is_dir() {
            src.clone()
        } else {
            src.parent().expect("source dir").to_path_buf()
        };
        println!("cargo:rerun-if-changed={}", dir.display());
    }

    let cache = root.join("plugins/target/js-py");
    let out = cache.join("out");
    std::fs::create_dir_all(&out).expect("creating plugins/target/js-py/out");
    // tests/ and examples/ run this script at the same time: one builds, the other waits and
    // then finds every stamp current.
    let lock = std::fs::File::create(cache.join(".lock")).expect("creating the js-py build lock");
    lock.lock().expect("locking the js-py build");

    let started = std::time::Instant::now();
    let (js, py) = std::thread::scope(|s| {
        let js = s.spawn(|| jspy::build_lang(&root, &cache, &out, "js"));
        let py = s.spawn(|| jspy::build_lang(&root, &cache, &out, "python"));
        (js.join(), py.join())
    });
    for r in [js, py] {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("\n\nbuilding the JavaScript/Python plugins failed:\n{e}\n"),
            Err(_) => panic!("the JavaScript/Python plugin build thread panicked"),
        }
    }
    if started.elapsed() > std::time::Duration::from_secs(1) {
        println!(
            "cargo:warning=js/python plugins built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    drop(lock);
    println!("cargo:rustc-env=PORTCULLIS_JSPY_DIR={}", out.display());
}

#[allow(dead_code)]
mod jspy {
    use std::hash::Hasher;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Installs one language's toolchain (if its lock changed) and builds its plugins (if
    /// their stamps changed).
    pub(crate) fn build_lang(
        root: &Path,
        cache: &Path,
        out: &Path,
        lang: &str,
    ) -> Result<(), String> {
        let mut tool_stamp = None;
        for (name, l, world, src) in super::JS_PY_PLUGINS {
            if l != lang {
                continue;
            }
            let src = root.join(src);
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write(world.as_bytes());
            hash_tree(&mut h, &src)?;
            hash_tree(&mut h, &wit_dir(root))?;
            if lang == "js" {
                for f in super::JS_SDK_FILES {
                    hash_tree(&mut h, &root.join("sdk/js").join(f))?;
                }
            } else {
                hash_tree(&mut h, &root.join("sdk/python/portcullis_sdk"))?;
                hash_tree(&mut h, &root.join("sdk/python/build.py"))?;
                hash_tree(&mut h, &root.join("sdk/python/requirements.txt"))?;
            }
            let stamp = format!("{:016x}\n", h.finish());
            let wasm = out.join(format!("{name}.wasm"));
            let stamp_file = out.join(format!("{name}.stamp"));
            if wasm.is_file()
                && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp)
            {
                continue;
            }
            let tool = match &tool_stamp {
                Some(t) => t,
                None => tool_stamp.insert(if lang == "js" {
                    js_tools(root, cache)?
                } else {
                    py_tools(root, cache)?
                }),
            };
            let _ = std::fs::remove_file(&stamp_file);
            let mut cmd = if lang == "js" {
                let mut c = Command::new("node");
                c.arg(tool.join("build.mjs"))
                    .args(["--world", world, "--wit"])
                    .arg(wit_dir(root));
                c.arg("-o").arg(&wasm).arg(&src);
                c
            } else {
                let mut c = Command::new(tool.join("bin/python"));
                c.arg(root.join("sdk/python/build.py"))
                    .args(["--world", world, "--wit"])
                    .arg(wit_dir(root));
                c.arg("-o").arg(&wasm).arg(&src);
                // No __pycache__ in the source tree: it would make the watched folders newer
                // than every build.
                c.env("PYTHONDONTWRITEBYTECODE", "1");
                c
            };
            run(&mut cmd, &format!("building {name}.wasm"))?;
            std::fs::write(&stamp_file, stamp)
                .map_err(|e| format!("{}: {e}", stamp_file.display()))?;
        }
        Ok(())
    }

    /// `plugins/target/js-py/js-sdk`: a copy of `sdk/js` with `node_modules` from `npm ci`.
    fn js_tools(root: &Path, cache: &Path) -> Result<PathBuf, String> {
        need("node", &["--version"], "Node.js (node, 18 or later) is needed to build the JavaScript plugins: install it (e.g. `apt-get install nodejs npm`)")?;
        let dir = cache.join("js-sdk");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for f in super::JS_SDK_FILES {
            let from = root.join("sdk/js").join(f);
            std::fs::copy(&from, dir.join(f))
                .map_err(|e| format!("copying {}: {e}", from.display()))?;
        }
        let lock = std::fs::read(dir.join("package-lock.json"))
            .map_err(|e| format!("sdk/js/package-lock.json: {e}"))?;
        let want = format!("{:016x}\n", hash_bytes(&lock));
        let marker = dir.join(".installed");
        let installed = std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str())
            && dir
                .join("node_modules/@bytecodealliance/componentize-js")
                .is_dir();
        if !installed {
            need("npm", &["--version"], "npm is needed to install componentize-js for the JavaScript plugins: install it (e.g. `apt-get install npm`)")?;
            let _ = std::fs::remove_file(&marker);
            let mut c = Command::new("npm");
            c.args(["ci", "--no-audit", "--no-fund", "--omit=dev"])
                .current_dir(&dir);
            run(
                &mut c,
                "npm ci (componentize-js, from sdk/js/package-lock.json)",
            )?;
            std::fs::write(&marker, want).map_err(|e| format!("{}: {e}", marker.display()))?;
        }
        Ok(dir)
    }

    /// `plugins/target/js-py/py-venv`: a virtualenv with `sdk/python/requirements.txt`.
    fn py_tools(root: &Path, cache: &Path) -> Result<PathBuf, String> {
        need("python3", &["--version"], "python3 is needed to build the Python plugins: install it (e.g. `apt-get install python3 python3-venv`)")?;
        let venv = cache.join("py-venv");
        let req = root.join("sdk/python/requirements.txt");
        let text = std::fs::read(&req).map_err(|e| format!("{}: {e}", req.display()))?;
        let want = format!("{:016x}\n", hash_bytes(&text));
        let marker = venv.join(".installed");
        let installed = std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str())
            && venv.join("bin/componentize-py").is_file();
        if !installed {
            let _ = std::fs::remove_file(&marker);
            let mut c = Command::new("python3");
            c.args(["-m", "venv", "--clear"]).arg(&venv);
            run(&mut c, "python3 -m venv (is the venv module installed? e.g. `apt-get install python3-venv`)")?;
            let mut c = Command::new(venv.join("bin/python"));
            c.args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&req);
            run(
                &mut c,
                "pip install -r sdk/python/requirements.txt (componentize-py)",
            )?;
            std::fs::write(&marker, want).map_err(|e| format!("{}: {e}", marker.display()))?;
        }
        Ok(venv)
    }

    /// The WIT the JS and Python SDKs target: `wit/v0.2` (0.1-built JavaScript and Python
    /// plugins are not rebuilt from these SDKs; the Rust fixtures `plugins/legacy-v01*` cover
    /// serving 0.1).
    pub(crate) fn wit_dir(root: &Path) -> PathBuf {
        root.join("wit").join("v0.2")
    }

    /// Fails with `why` unless `prog args` runs.
    fn need(prog: &str, args: &[&str], why: &str) -> Result<(), String> {
        match Command::new(prog).args(args).output() {
            Ok(o) if o.status.success() => Ok(()),
            _ => Err(format!("`{prog}` not found or not working. {why}")),
        }
    }

    fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
        let out = cmd
            .output()
            .map_err(|e| format!("{what}: could not start {:?}: {e}", cmd.get_program()))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    fn hash_bytes(b: &[u8]) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(b);
        h.finish()
    }

    /// Hashes a file, or a folder's files (sorted, with their relative names), skipping
    /// `__pycache__`, `node_modules` and dot entries.
    fn hash_tree(h: &mut impl Hasher, path: &Path) -> Result<(), String> {
        if path.is_file() {
            h.write(
                path.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            h.write(&std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?);
            return Ok(());
        }
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                !n.starts_with('.') && n != "__pycache__" && n != "node_modules"
            })
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            hash_tree(h, &e)?;
        }
        Ok(())
    }
}
