//! `chaos`: the chaos report (`bash bench/chaos.sh` runs it against the release gateway).
//!
//! ```text
//! chaos [--gateway PATH] [--ci] [--only TEXT]
//! ```
//! `--gateway`: the `portcullis` binary to run as the gateway (default: the one beside this
//! program); `--ci`: only the CI subset; `--only`: cases whose name contains TEXT. Prints a
//! markdown table on stdout, progress on stderr; exits 1 if any case failed.
#![forbid(unsafe_code)]

use portcullis_tests::chaos;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mut gateway = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("portcullis")));
    let (mut ci, mut only) = (false, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--gateway" => gateway = args.next().map(PathBuf::from),
            "--ci" => ci = true,
            "--only" => only = args.next(),
            other => {
                eprintln!("chaos: unknown argument {other} (see the source's header)");
                return ExitCode::from(2);
            }
        }
    }
    let Some(gateway) = gateway.filter(|g| g.is_file()) else {
        eprintln!("chaos: no gateway binary: build it (cargo build --release -p portcullis) and pass --gateway PATH");
        return ExitCode::from(2);
    };
    let cases: Vec<_> = chaos::cases()
        .into_iter()
        .filter(|c| !ci || c.ci)
        .filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = rt.block_on(chaos::run(
        chaos::Target::Process(gateway.clone()),
        &cases,
        Duration::from_secs(60),
    ));
    println!(
        "Gateway: `{}` (its own process; RSS from /proc/PID/status).\n",
        gateway.display()
    );
    print!("{}", chaos::table(&rows));
    let failed = rows.iter().filter(|r| !r.outcome.pass).count();
    println!("\n{} cases, {failed} failed.", rows.len());
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
