//! The `portcullis` binary: `run` a gateway, `check` a config, or make, build and test a
//! plugin (`plugin new|build|test`).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use portcullis::Gateway;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: a proxy allocates and frees small objects (header maps,
/// bodies' bookkeeping, futures) on every request from every worker; glibc's arenas showed up
/// at ~9 % of CPU in the profile (bench/PROFILE.md) and fragment under many connections.
/// Called through `portcullis-alloc`, which keeps most calls on mimalloc's fast path.
#[global_allocator]
static ALLOC: portcullis_alloc::Mimalloc = portcullis_alloc::Mimalloc;

/// Portcullis: a WebAssembly-extensible programmable HTTP gateway.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the gateway. SIGTERM or SIGINT stops accepting, drains in-flight requests for up
    /// to `[timeouts] drain_ms`, and exits 0. SIGHUP reloads the config file (as
    /// `POST /admin/config/reload` does); an invalid file changes nothing.
    Run {
        /// Path to the TOML config (see docs/config.md).
        #[arg(short, long)]
        config: PathBuf,
        /// Tokio worker threads (default: one per CPU). Also read from `PORTCULLIS_WORKERS`.
        #[arg(long)]
        workers: Option<usize>,
        /// Zero-downtime upgrade: take the listening sockets of the gateway serving on
        /// `[admin] upgrade_socket`, start on them, then let it drain and exit 0. If this
        /// process fails to start, the running one keeps serving.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config and exit: 0 if valid, 1 listing every problem as `file: key: reason`.
    Check {
        /// Path to the TOML config.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Write, build and test plugins: `plugin new|build|test` (docs/plugins.md, "Toolkit").
    Plugin(portcullis::PluginArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Plugin(args) => portcullis::plugin_command(args),
        // The same check a reload runs.
        Cmd::Check { config } => match portcullis::check(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("{p}");
                }
                eprintln!("{} problem(s) found", problems.len());
                ExitCode::from(1)
            }
        },
        Cmd::Run {
            config,
            workers,
            upgrade,
        } => {
            portcullis::init_logging();
            let workers = workers.or_else(|| {
                std::env::var("PORTCULLIS_WORKERS")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
            });
            // One worker: everything on this thread (no work stealing, no cross-thread
            // wake-ups between a client connection and its upstream connection).
            let mut builder = match workers {
                Some(n) if n <= 1 => tokio::runtime::Builder::new_current_thread(),
                _ => tokio::runtime::Builder::new_multi_thread(),
            };
            builder.enable_all().thread_name("portcullis");
            if let Some(n) = workers.filter(|&n| n > 1) {
                builder.worker_threads(n);
            }
            let rt = match builder.build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(async move {
                // Registered before the gateway starts: SIGHUP's default action ends the
                // process, and a reload must never do that.
                use tokio::signal::unix::{signal, SignalKind};
                let hup = signal(SignalKind::hangup());
                let started = if upgrade {
                    Gateway::start_file_upgrading(&config).await
                } else {
                    Gateway::start_file(&config).await
                };
                let gw = match started {
                    Ok(g) => g,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        return ExitCode::from(1);
                    }
                };
                let live = gw.live().clone();
                let hup = tokio::spawn(async move {
                    let Ok(mut hup) = hup else {
                        tracing::warn!("cannot listen for SIGHUP: reload through the admin API");
                        return;
                    };
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the config");
                        // Logged and counted by the reload itself.
                        let _ = live.reload().await;
                    }
                });
                gw.run_until(shutdown_signal()).await;
                hup.abort();
                ExitCode::SUCCESS
            })
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
