//! The plugin toolkit, `portcullis plugin new|build|test`: from nothing to a plugin that has
//! run in the gateway's sandbox, with the SDKs and WIT this binary carries (nothing is
//! published to a registry). One file per command: `new`, `build`, `test`; `spec` (request
//! files), `stub` (stub clusters), `report` (what a test run prints), `project` (finding a
//! plugin on disk), `langs` (per-language templates), `embedded` (the carried SDKs).

mod build;
mod embedded;
mod langs;
mod new;
mod project;
mod report;
mod spec;
mod stub;
mod test;

use clap::{Args, Subcommand};
use project::{Kind, Lang};
use std::path::PathBuf;
use std::process::ExitCode;

/// `portcullis plugin ...` (the subcommand's types stay private to the toolkit).
#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    cmd: PluginCmd,
}

#[derive(Debug, Subcommand)]
enum PluginCmd {
    /// Write a ready plugin project (manifest, sample requests, README, and the SDK and WIT
    /// this binary carries under `.portcullis/`) that builds as generated.
    New {
        /// The plugin's name: the gateway loads it as NAME.wasm + NAME.toml.
        name: String,
        #[arg(long, value_enum)]
        lang: Lang,
        #[arg(long, value_enum)]
        kind: Kind,
        /// Project directory (default: ./NAME). Must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Only rewrite `.portcullis/` (SDK and WIT) of an existing project, for this
        /// binary's version.
        #[arg(long)]
        refresh: bool,
    },
    /// Build the project to NAME.wasm next to its manifest, with the language's toolchain.
    Build {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Optimized build (Rust: `--release`).
        #[arg(long)]
        release: bool,
    },
    /// Run the plugin in the gateway's sandbox (same engine and limits) against requests, and
    /// print what it did. Exits 1 on a trap, a limit breach or a failed expectation.
    Test {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A TOML or JSON file of requests, stub clusters and expectations (see README).
        #[arg(long, conflicts_with_all = ["method", "url", "header", "data"])]
        request: Option<PathBuf>,
        /// Method of a single request given on the command line.
        #[arg(short = 'X', long, default_value = "GET")]
        method: String,
        /// URL (or path) of a single request given on the command line.
        url: Option<String>,
        /// A request header, `name: value` (repeatable).
        #[arg(short = 'H', long)]
        header: Vec<String>,
        /// The request body.
        #[arg(short = 'd', long)]
        data: Option<String>,
        /// Print the results as JSON (what the harness helpers read).
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `plugin` subcommand: 0 on success, 1 when a test failed, 2 on an error.
pub fn run(args: PluginArgs) -> ExitCode {
    let res = match args.cmd {
        PluginCmd::New {
            name,
            lang,
            kind,
            dir,
            refresh,
        } => new::run(new::NewArgs {
            name,
            lang,
            kind,
            dir,
            refresh,
        })
        .map(|()| true),
        PluginCmd::Build { dir, release } => {
            build::run(build::BuildArgs { dir, release }).map(|()| true)
        }
        PluginCmd::Test {
            dir,
            request,
            method,
            url,
            header,
            data,
            json,
        } => test_spec(request, method, url, header, data)
            .and_then(|spec| test::run(test::TestArgs { dir, spec, json })),
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The requests to run: the file, or the one request on the command line.
fn test_spec(
    file: Option<PathBuf>,
    method: String,
    url: Option<String>,
    headers: Vec<String>,
    body: Option<String>,
) -> anyhow::Result<spec::Spec> {
    if let Some(f) = file {
        return spec::Spec::load(&f);
    }
    let url = url.ok_or_else(|| {
        anyhow::anyhow!("nothing to run: give --request FILE, or a URL (with -X, -H, -d)")
    })?;
    let mut req =
        serde_json::json!({ "method": method, "url": url, "body": body.unwrap_or_default() });
    let mut h = serde_json::Map::new();
    for line in &headers {
        let (k, v) = spec::parse_header(line)?;
        h.insert(k, serde_json::Value::String(v));
    }
    req["headers"] = serde_json::Value::Object(h);
    spec::Spec::parse(&serde_json::json!({ "request": [req] }).to_string(), false)
}
