//! `portcullis plugin build`: the language's toolchain, run in the project, to `NAME.wasm`
//! next to the manifest. A missing tool is named with how to install it.

use super::project::{self, Lang, Located, META_DIR};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub(crate) struct BuildArgs {
    pub(crate) dir: PathBuf,
    pub(crate) release: bool,
}

pub(crate) fn run(args: BuildArgs) -> anyhow::Result<()> {
    let p = project::locate(&args.dir)?;
    let proj = p.project.clone().with_context(|| {
        format!(
            "{}: not a project made by `portcullis plugin new` (no {META_DIR}/project.toml)",
            args.dir.display()
        )
    })?;
    let t0 = Instant::now();
    let built = match proj.lang {
        Lang::Rust => rust(&p, args.release)?,
        Lang::Js => js(&p)?,
        Lang::Python => python(&p)?,
    };
    let out = p.wasm();
    if built != out {
        // Through a temporary name: a gateway watching this directory never sees half a file.
        let tmp = p.dir.join(format!(".{}.wasm.tmp", p.name));
        std::fs::copy(&built, &tmp).with_context(|| format!("copying {}", built.display()))?;
        std::fs::rename(&tmp, &out)?;
    }
    let bytes = std::fs::metadata(&out)?.len();
    println!(
        "built {} ({:.1} MiB) in {:.1} s",
        out.display(),
        bytes as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A tool that is not installed, with how to install it.
fn missing(tool: &str, how: &str) -> anyhow::Error {
    anyhow::anyhow!("{tool} not found: {how}")
}

/// Runs `cmd` with inherited output; a failure names the command.
fn status(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {what}"))?;
    anyhow::ensure!(st.success(), "{what} failed ({st})");
    Ok(())
}

/// The output of `prog args` if it runs, `None` if it is not installed.
fn probe(prog: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// ---- Rust ----

fn rust(p: &Located, release: bool) -> anyhow::Result<PathBuf> {
    let dir = &p.dir;
    let sysroot = probe("rustc", &["--print", "sysroot"], dir).ok_or_else(|| {
        missing(
            "rustc",
            "install Rust with rustup (https://rustup.rs), then `rustup target add wasm32-wasip2`",
        )
    })?;
    if !Path::new(&sysroot)
        .join("lib/rustlib/wasm32-wasip2")
        .is_dir()
    {
        eprintln!("the wasm32-wasip2 target is missing: rustup target add wasm32-wasip2");
        if probe("rustup", &["--version"], dir).is_none() {
            return Err(missing(
                "rustup",
                "the wasm32-wasip2 target is not installed for this Rust; install Rust with \
                 rustup (https://rustup.rs) and run `rustup target add wasm32-wasip2`",
            ));
        }
        status(
            Command::new("rustup")
                .args(["target", "add", "wasm32-wasip2"])
                .current_dir(dir),
            "rustup target add wasm32-wasip2",
        )?;
    }
    let mut cmd = Command::new("cargo");
    cmd.args([
        "build",
        "--target",
        "wasm32-wasip2",
        "--message-format",
        "json-render-diagnostics",
    ])
    .current_dir(dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .map_err(|_| missing("cargo", "install Rust with rustup (https://rustup.rs)"))?;
    anyhow::ensure!(
        out.status.success(),
        "cargo build --target wasm32-wasip2 failed"
    );
    wasm_artifact(
        &String::from_utf8_lossy(&out.stdout),
        &p.name.replace('-', "_"),
    )
    .context("cargo built no .wasm for this crate (is it a `cdylib`?)")
}

/// The crate's `.wasm` from cargo's JSON messages (wherever the target dir is).
fn wasm_artifact(messages: &str, crate_name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == crate_name)
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
}

// ---- JavaScript ----

/// Node 18 is the oldest componentize-js 0.23 runs on; the SDK's tests use node's test runner.
const MIN_NODE_MAJOR: u32 = 18;

fn js(p: &Located) -> anyhow::Result<PathBuf> {
    let dir = &p.dir;
    let how =
        "install Node.js 20+ with npm (Debian: apt-get install nodejs npm; or https://nodejs.org)";
    let v = probe("node", &["--version"], dir).ok_or_else(|| missing("node", how))?;
    let major: u32 = v
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    anyhow::ensure!(major >= MIN_NODE_MAJOR, "node {v} is too old: {how}");
    let meta = dir.join(META_DIR);
    let sdk = meta.join("sdk/js");
    anyhow::ensure!(
        sdk.join("build.mjs").is_file(),
        "{}: the JavaScript SDK is missing: run `portcullis plugin new --refresh --dir {}`",
        sdk.display(),
        dir.display()
    );
    js_tools(&sdk, how)?;
    let world = p.project.as_ref().map_or("filter", |pr| pr.kind.world());
    status(
        Command::new("node")
            .arg(sdk.join("build.mjs"))
            // The SDK picks the WIT version it targets from `.portcullis/wit/`.
            .args(["--world", world, "-o"])
            .arg(p.wasm())
            .arg("plugin.js")
            .current_dir(dir),
        "node .portcullis/sdk/js/build.mjs (componentize-js)",
    )?;
    Ok(p.wasm())
}

/// componentize-js in the SDK copy's `node_modules`: `npm ci` from its `package-lock.json`
/// once, or a link to the `node_modules` that `PORTCULLIS_JS_NODE_MODULES` names (an install
/// of the same lock file, shared between projects, as the tests do).
fn js_tools(sdk: &Path, how: &str) -> anyhow::Result<()> {
    let nm = sdk.join("node_modules");
    if nm.join("@bytecodealliance/componentize-js").is_dir() {
        return Ok(());
    }
    if let Some(shared) = std::env::var_os("PORTCULLIS_JS_NODE_MODULES") {
        let shared = PathBuf::from(shared);
        anyhow::ensure!(
            shared.join("@bytecodealliance/componentize-js").is_dir(),
            "PORTCULLIS_JS_NODE_MODULES: no componentize-js in {}",
            shared.display()
        );
        let _ = std::fs::remove_dir_all(&nm);
        std::os::unix::fs::symlink(&shared, &nm)
            .with_context(|| format!("linking {} to {}", nm.display(), shared.display()))?;
        return Ok(());
    }
    probe("npm", &["--version"], sdk).ok_or_else(|| missing("npm", how))?;
    status(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(sdk),
        "npm ci in .portcullis/sdk/js (componentize-js; the npm registry must be reachable)",
    )
}

// ---- Python ----

fn python(p: &Located) -> anyhow::Result<PathBuf> {
    let dir = &p.dir;
    let meta = dir.join(META_DIR);
    let sdk = meta.join("sdk/python");
    anyhow::ensure!(
        sdk.join("build.py").is_file(),
        "{}: the Python SDK is missing: run `portcullis plugin new --refresh --dir {}`",
        sdk.display(),
        dir.display()
    );
    let py = venv(dir)?;
    if !py.with_file_name("componentize-py").is_file() {
        status(
            Command::new(&py)
                .args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"])
                .arg(sdk.join("requirements.txt"))
                .current_dir(dir),
            "pip install -r .portcullis/sdk/python/requirements.txt (componentize-py; PyPI must be reachable)",
        )?;
    }
    let world = p.project.as_ref().map_or("filter", |pr| pr.kind.world());
    status(
        Command::new(&py)
            .arg(sdk.join("build.py"))
            // The SDK picks the WIT version it targets from `.portcullis/wit/`.
            .args(["--world", world, "-o"])
            .arg(p.wasm())
            .arg(".")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(dir),
        "python .portcullis/sdk/python/build.py (componentize-py)",
    )?;
    Ok(p.wasm())
}

/// The project's virtualenv python (`.portcullis/venv`, made on first build), or the one
/// `PORTCULLIS_PYTHON_VENV` names (a shared install with componentize-py, as the tests use).
fn venv(dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(v) = std::env::var_os("PORTCULLIS_PYTHON_VENV") {
        let py = PathBuf::from(v).join("bin/python3");
        anyhow::ensure!(
            py.is_file(),
            "PORTCULLIS_PYTHON_VENV: {} not found",
            py.display()
        );
        return Ok(py);
    }
    let v = dir.join(META_DIR).join("venv");
    let py = v.join("bin/python3");
    if py.is_file() {
        return Ok(py);
    }
    probe("python3", &["--version"], dir).ok_or_else(|| {
        missing(
            "python3",
            "install Python 3.10+ (Debian: apt-get install python3 python3-venv)",
        )
    })?;
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&v)
        .output()
        .context("running python3 -m venv")?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&v);
        anyhow::bail!(
            "python3 -m venv failed: apt-get install python3-venv (Debian/Ubuntu)\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(py)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wasm_is_found_in_cargo_messages() {
        let msgs = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"serde"},"filenames":["/t/libserde.rlib"]}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"my_plugin"},"filenames":["/t/wasm32-wasip2/debug/my_plugin.wasm"]}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            wasm_artifact(msgs, "my_plugin"),
            Some(PathBuf::from("/t/wasm32-wasip2/debug/my_plugin.wasm"))
        );
        assert_eq!(wasm_artifact(msgs, "other"), None);
    }
}
