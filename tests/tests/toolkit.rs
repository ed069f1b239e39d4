#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test
//! The plugin toolkit with the real `portcullis` binary: `plugin new`, then `plugin build`,
//! then `plugin test`, for every language and kind, in a temporary directory outside the
//! repository (so a project builds from what the binary carries, not from the checkout).
//!
//! The generated Rust projects share one `CARGO_TARGET_DIR` (under this workspace's target
//! dir), so wit-bindgen and serde are compiled once per machine, not once per project.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace's target profile dir (`target/debug`): this test runs from `deps/` in it.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The `portcullis` binary of this workspace, built if `cargo test` did not build it (only the
/// host package's own tests make cargo build it).
fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let st = Command::new(cargo)
            .args(["build", "--workspace", "--bin", "portcullis"])
            .current_dir(root)
            .status()
            .unwrap();
        assert!(st.success(), "building the portcullis binary");
        profile_dir().join("portcullis")
    })
}

/// A private temp directory outside the repository, removed when dropped.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp(tag: &str) -> Temp {
    let d = std::env::temp_dir().join(format!("portcullis-toolkit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Temp(d)
}

/// `portcullis ARGS` in `dir`, with the outer cargo's settings removed (a plugin author's
/// shell has none) and the shared guest target dir.
fn portcullis(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(dir);
    clean_env(&mut cmd);
    cmd.output().unwrap()
}

fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" || k == "RUSTFLAGS" || k == "RUSTC_WRAPPER"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("CARGO_TARGET_DIR", profile_dir().join("toolkit-guests"));
    cmd.env("PORTCULLIS_BIN", bin());
    // One compile cache for every run, and the one js_plugins and python_plugins use (under
    // the target dir): an unchanged component (the same template) loads from it instead of a
    // minute of Cranelift for a JS or Python one.
    cmd.env(
        "PORTCULLIS_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("jspy-compile-cache"),
    );
    // The JS and Python toolchains the test build installed for the first-party plugins
    // (plugins/build_js_py.rs), shared instead of a second install per project.
    let js_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/js-py");
    let node_modules = js_py.join("js-sdk/node_modules");
    if node_modules.is_dir() {
        cmd.env("PORTCULLIS_JS_NODE_MODULES", node_modules);
    }
    let venv = js_py.join("py-venv");
    if venv.join("bin/componentize-py").is_file() {
        cmd.env("PORTCULLIS_PYTHON_VENV", venv);
    }
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `plugin new` then `plugin build` in a fresh directory; returns the project dir.
fn new_and_build(root: &Path, name: &str, lang: &str, kind: &str) -> PathBuf {
    let out = portcullis(
        root,
        &["plugin", "new", name, "--lang", lang, "--kind", kind],
    );
    ok(&out, "plugin new");
    let dir = root.join(name);
    for f in [
        format!("{name}.toml"),
        "README.md".into(),
        "requests.toml".into(),
        ".portcullis/project.toml".into(),
    ] {
        assert!(dir.join(&f).is_file(), "plugin new wrote {f}");
    }
    let out = portcullis(&dir, &["plugin", "build"]);
    ok(&out, "plugin build");
    let wasm = dir.join(format!("{name}.wasm"));
    let bytes = std::fs::read(&wasm).unwrap();
    // A component, not a core module: the preamble's layer field is 1.
    assert_eq!(&bytes[..4], b"\0asm", "{} is Wasm", wasm.display());
    assert_eq!(&bytes[6..8], &[1, 0], "{} is a component", wasm.display());
    dir
}

/// `plugin test --request requests.toml --json`: every generated request passes, and the
/// actions are the ones the template promises.
fn test_requests(dir: &Path, actions: &[&str]) -> Value {
    let out = portcullis(
        dir,
        &["plugin", "test", "--request", "requests.toml", "--json"],
    );
    ok(&out, "plugin test");
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["ok"], true, "{run:#}");
    let got: Vec<&str> = run["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(got, actions, "{run:#}");
    for r in run["results"].as_array().unwrap() {
        assert!(
            r["call_us"].as_u64().unwrap() > 0,
            "a call was timed: {r:#}"
        );
        assert!(
            r["memory_high_water_bytes"].as_u64().unwrap() > 0,
            "memory was measured: {r:#}"
        );
    }
    run
}

// ---- Rust ----

#[test]
fn rust_inbound_new_build_test_and_the_harness() {
    let t = temp("rust-inbound");
    let dir = new_and_build(&t.0, "gatekeeper", "rust", "inbound");
    let run = test_requests(&dir, &["reject", "change"]);
    assert_eq!(run["results"][0]["status"], 401);
    let changed = &run["results"][1];
    let header = changed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-gatekeeper")
        .cloned();
    assert_eq!(
        header,
        Some(serde_json::json!(["x-gatekeeper", "ok"])),
        "{changed:#}"
    );

    // A request on the command line, with a failed expectation in a file: exit 1, named.
    let out = portcullis(
        &dir,
        &["plugin", "test", "-X", "GET", "/x", "-H", "x-api-key: k"],
    );
    ok(&out, "plugin test -X");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-> change"), "{text}");
    assert!(text.contains("x-gatekeeper: ok"), "{text}");
    std::fs::write(
        dir.join("wrong.toml"),
        "[[request]]\nurl = '/x'\nexpect = { status = 200 }\n",
    )
    .unwrap();
    let out = portcullis(&dir, &["plugin", "test", "--request", "wrong.toml"]);
    assert_eq!(out.status.code(), Some(1), "a failed expectation exits 1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: expected 200, got 401"), "{text}");

    // The author's own unit tests, through portcullis-harness.
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["test", "--quiet"]).current_dir(&dir);
    clean_env(&mut cmd);
    ok(
        &cmd.output().unwrap(),
        "cargo test in the generated project",
    );

    // A plugin that spins past its CPU budget: the sandbox stops it and the run fails.
    let lib = dir.join("src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap().replace(
        "fn on_request(req: &RequestView) -> InboundAction {",
        "fn on_request(req: &RequestView) -> InboundAction {\n        \
         let mut n = 0u64;\n        while std::hint::black_box(n) != u64::MAX { n += 1; }",
    );
    std::fs::write(&lib, src).unwrap();
    ok(
        &portcullis(&dir, &["plugin", "build"]),
        "plugin build (spinning)",
    );
    let out = portcullis(&dir, &["plugin", "test", "--json", "/x"]);
    assert_eq!(out.status.code(), Some(1), "a limit breach exits 1");
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &run["results"][0];
    assert_eq!(r["action"], "failed", "{r:#}");
    assert_eq!(r["failure"]["kind"], "cpu-exceeded", "{r:#}");
    assert_eq!(r["status"], 500, "fail_closed answers 500: {r:#}");
}

#[test]
fn rust_outbound_new_build_test() {
    let t = temp("rust-outbound");
    let dir = new_and_build(&t.0, "stamp", "rust", "outbound");
    let run = test_requests(&dir, &["change"]);
    let r = &run["results"][0];
    let names: Vec<&str> = r["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"x-stamp") && !names.contains(&"server"),
        "{r:#}"
    );
}

#[test]
fn rust_endpoint_new_build_test_with_a_stub_cluster() {
    let t = temp("rust-endpoint");
    let dir = new_and_build(&t.0, "summary", "rust", "endpoint");
    let run = test_requests(&dir, &["respond"]);
    assert_eq!(
        run["stub_hits"]["backend"], 1,
        "the stub served the call: {run:#}"
    );
    let r = &run["results"][0];
    assert_eq!(r["calls"][0]["cluster"], "backend", "{r:#}");
    assert_eq!(r["calls"][0]["status"], 200, "{r:#}");
    // Without the stub, the call fails inside the gateway (unknown cluster) and the template
    // answers 502: the run reports it, and passes (no expectation, no trap).
    let out = portcullis(&dir, &["plugin", "test", "--json", "/api/summary"]);
    ok(&out, "plugin test without stubs");
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["results"][0]["status"], 502, "{run:#}");
}

// ---- JavaScript and Python ----

#[test]
fn js_new_build_test_every_kind() {
    let t = temp("js");
    let dir = new_and_build(&t.0, "js-gate", "js", "inbound");
    test_requests(&dir, &["reject", "change"]);
    let mut cmd = Command::new("npm");
    cmd.args(["test", "--silent"]).current_dir(&dir);
    clean_env(&mut cmd);
    ok(&cmd.output().unwrap(), "npm test in the generated project");
    let dir = new_and_build(&t.0, "js-stamp", "js", "outbound");
    test_requests(&dir, &["change"]);
    let dir = new_and_build(&t.0, "js-summary", "js", "endpoint");
    test_requests(&dir, &["respond"]);
}

#[test]
fn python_new_build_test_every_kind() {
    let t = temp("python");
    let dir = new_and_build(&t.0, "py-gate", "python", "inbound");
    test_requests(&dir, &["reject", "change"]);
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "unittest", "-q"]).current_dir(&dir);
    clean_env(&mut cmd);
    ok(
        &cmd.output().unwrap(),
        "python3 -m unittest in the generated project",
    );
    let dir = new_and_build(&t.0, "py-stamp", "python", "outbound");
    test_requests(&dir, &["change"]);
    let dir = new_and_build(&t.0, "py-summary", "python", "endpoint");
    test_requests(&dir, &["respond"]);
}

// ---- what the user is told ----

#[test]
fn bad_input_is_named() {
    let t = temp("errors");
    let out = portcullis(
        &t.0,
        &[
            "plugin", "new", "Bad Name", "--lang", "rust", "--kind", "inbound",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plugin name"),
        "{out:?}"
    );
    let out = portcullis(&t.0, &["plugin", "build"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no plugin here"),
        "{out:?}"
    );
    let out = portcullis(
        &t.0,
        &["plugin", "new", "p", "--lang", "rust", "--kind", "inbound"],
    );
    ok(&out, "plugin new");
    let out = portcullis(&t.0.join("p"), &["plugin", "test", "/"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("p.wasm") && err.contains("plugin build"),
        "{err}"
    );
    let out = portcullis(
        &t.0,
        &["plugin", "new", "p", "--lang", "rust", "--kind", "inbound"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "an existing project is not overwritten"
    );
}
