//! Per-language facts: what a project of each language contains and how it is described.
//! (How each is built is in `build.rs`.)

use super::project::{Kind, Lang};

pub(crate) struct LangInfo {
    pub(crate) display: &'static str,
    /// What `plugin build` runs, for the README.
    pub(crate) toolchain: &'static str,
    /// The README's line for the language's own test runner.
    pub(crate) unit_test: &'static str,
    /// The language's files for the README's table: (path, what it is).
    pub(crate) files: &'static [(&'static str, &'static str)],
    /// Manifest limits the template asks for. Rust filters need microseconds and a few MiB.
    /// The JS and Python interpreters need more: measured with `plugin test` on the
    /// templates, a JS filter's first call on a fresh instance took 13 ms of CPU (later ones
    /// 0.6 ms) at 9 MiB, a Python endpoint's 27 ms at 12.5 MiB; so `cpu_ms = 50` (the default
    /// ceiling) and `memory_mb = 32`.
    pub(crate) cpu_ms: u64,
    pub(crate) memory_mb: u64,
    /// The filters' wall-clock `timeout_ms`. A fresh JS or Python instance is made inside the
    /// first call it serves; on a loaded machine (a debug build beside a compile) that took
    /// over 100 ms, so interpreters get 1 s (their CPU stays bounded by `cpu_ms`).
    pub(crate) timeout_ms: u64,
    /// The embedded SDK this language needs (`embedded::has`).
    pub(crate) sdk_prefix: &'static str,
}

pub(crate) fn info(lang: Lang) -> LangInfo {
    match lang {
        Lang::Rust => LangInfo {
            display: "Rust",
            toolchain: "cargo build --target wasm32-wasip2",
            unit_test: "portcullis plugin build && cargo test          # tests/plugin.rs, through portcullis-harness",
            files: &[
                ("src/lib.rs", "the plugin"),
                ("Cargo.toml", "the crate (a `cdylib` on `.portcullis/sdk`)"),
                ("tests/plugin.rs", "unit tests that run the built plugin in the sandbox"),
            ],
            cpu_ms: 10,
            memory_mb: 16,
            timeout_ms: 100,
            sdk_prefix: "sdk/Cargo.toml",
        },
        Lang::Js => LangInfo {
            display: "JavaScript",
            toolchain: "componentize-js, installed once into .portcullis/sdk/js by npm ci",
            unit_test: "portcullis plugin build && npm test            # test/plugin.test.mjs, node's test runner",
            files: &[
                ("plugin.js", "the plugin"),
                ("package.json", "`npm run build`, `npm test`; the SDK as a `file:` dependency for editors"),
                ("test/plugin.test.mjs", "unit tests that run the built plugin in the sandbox"),
            ],
            cpu_ms: 50,
            memory_mb: 32,
            timeout_ms: 1000,
            sdk_prefix: "sdk/js/",
        },
        Lang::Python => LangInfo {
            display: "Python",
            toolchain: "componentize-py, in a virtualenv under .portcullis/",
            unit_test: "portcullis plugin build && python3 -m unittest  # tests/test_plugin.py",
            files: &[
                ("app.py", "the plugin (`class WitWorld`)"),
                ("tests/test_plugin.py", "unit tests that run the built plugin in the sandbox"),
            ],
            cpu_ms: 50,
            memory_mb: 32,
            timeout_ms: 1000,
            sdk_prefix: "sdk/python/",
        },
    }
}

macro_rules! tpl {
    ($p:literal) => {
        include_str!(concat!("templates/", $p))
    };
}

/// The language's own files: (path in the project, template).
pub(crate) fn files(lang: Lang, kind: Kind) -> Vec<(&'static str, &'static str)> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml", tpl!("rust/Cargo.toml")),
            (
                "src/lib.rs",
                by_kind(
                    kind,
                    [
                        tpl!("rust/inbound.rs"),
                        tpl!("rust/outbound.rs"),
                        tpl!("rust/endpoint.rs"),
                    ],
                ),
            ),
            (
                "tests/plugin.rs",
                by_kind(
                    kind,
                    [
                        tpl!("rust/test_inbound.rs"),
                        tpl!("rust/test_outbound.rs"),
                        tpl!("rust/test_endpoint.rs"),
                    ],
                ),
            ),
            (".gitignore", tpl!("rust/gitignore")),
        ],
        Lang::Js => vec![
            ("package.json", tpl!("js/package.json")),
            (
                "plugin.js",
                by_kind(
                    kind,
                    [
                        tpl!("js/inbound.js"),
                        tpl!("js/outbound.js"),
                        tpl!("js/endpoint.js"),
                    ],
                ),
            ),
            (
                "test/plugin.test.mjs",
                by_kind(
                    kind,
                    [
                        tpl!("js/test_inbound.mjs"),
                        tpl!("js/test_outbound.mjs"),
                        tpl!("js/test_endpoint.mjs"),
                    ],
                ),
            ),
            (".gitignore", tpl!("js/gitignore")),
        ],
        Lang::Python => vec![
            (
                "app.py",
                by_kind(
                    kind,
                    [
                        tpl!("python/inbound.py"),
                        tpl!("python/outbound.py"),
                        tpl!("python/endpoint.py"),
                    ],
                ),
            ),
            (
                "tests/test_plugin.py",
                by_kind(
                    kind,
                    [
                        tpl!("python/test_inbound.py"),
                        tpl!("python/test_outbound.py"),
                        tpl!("python/test_endpoint.py"),
                    ],
                ),
            ),
            ("tests/__init__.py", ""),
            (".gitignore", tpl!("python/gitignore")),
        ],
    }
}

fn by_kind(kind: Kind, t: [&'static str; 3]) -> &'static str {
    match kind {
        Kind::Inbound => t[0],
        Kind::Outbound => t[1],
        Kind::Endpoint => t[2],
    }
}
