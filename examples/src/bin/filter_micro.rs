//! Micro-benchmark of one inbound filter call, without sockets: the cost the plugin runtime
//! adds per filter per request. Used to choose and tune the instance strategy; the
//! end-to-end numbers live in `bench/run.sh` (rows `portcullis-filter1`/`portcullis-filters`).
//!
//! ```text
//! cargo run --release -p portcullis-examples --bin filter_micro -- [calls] [cold_kib] [filter]
//! ```
//!
//! `filter` is `add-header` (default: sets one header, the benchmark's chain filter) or
//! `pass` (the first-party CORS filter on a request without `Origin`: it reads one header
//! and continues, the cheapest useful filter).
#![forbid(unsafe_code)]

use portcullis::bench::{FilterState, InboundOutcome, Passport, PluginRuntime};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    // Optional: KiB of other memory to touch between calls (not timed), to see a call's cost
    // with caches that the rest of a request (and other processes) have evicted.
    let cold_kib: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut scratch = vec![0u8; cold_kib * 1024];
    let pass = match args.get(3).map(String::as_str) {
        None | Some("add-header") => false,
        Some("pass") => true,
        Some(other) => anyhow::bail!("unknown filter {other:?}: add-header or pass"),
    };
    let (wasm, config) = if pass {
        ("cors.wasm", "origins = [\"https://app.example\"]")
    } else {
        ("add_header.wasm", "set = { \"x-bench\" = \"1\" }")
    };

    let dir = std::env::temp_dir().join(format!("portcullis-filter-micro-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let guests = std::path::Path::new(env!("PORTCULLIS_GUEST_DIR"));
    std::fs::copy(guests.join(wasm), dir.join("hdr.wasm"))?;
    std::fs::write(
        dir.join("hdr.toml"),
        format!("kind = \"inbound\"\norder = 10\nfailure = \"fail_closed\"\n[config]\n{config}\n"),
    )?;
    let text = format!(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
         [[cluster]]\nname = \"up\"\nendpoints = [\"127.0.0.1:1\"]\n\
         [[route]]\nname = \"all\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"up\"\n\
         [plugins]\ndir = \"{}\"\n\
         # One call at a time: a small pool keeps the reservation small enough for valgrind.\n\
         max_instances = 8\n",
        dir.display()
    );
    let cfg =
        portcullis::Config::parse(&text, &dir).map_err(|p| anyhow::anyhow!("config: {p:?}"))?;
    let plugins = cfg
        .plugins
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no [plugins]"))?;
    let rt = PluginRuntime::start(&plugins, None, &cfg.limits, cfg.http.path_policy()).await?;
    let chain = rt.chain();
    // A filter that continues leaves no trace on the request: make sure it is loaded.
    anyhow::ensure!(!chain.is_empty(), "the filter did not load");
    let client: SocketAddr = ([127, 0, 0, 1], 40000).into();

    let one = || {
        let chain = chain.clone();
        async move {
            let (mut parts, ()) = http::Request::get("http://bench.local/items?id=7")
                .header("host", "bench.local")
                .header("user-agent", "filter-micro")
                .body(())
                .map(|r| r.into_parts())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut state = FilterState::default();
            let mut passport = Passport::new(Instant::now());
            match chain
                .inbound(
                    &mut parts,
                    client,
                    Some("all"),
                    None,
                    &mut state,
                    &mut passport,
                )
                .await
            {
                InboundOutcome::Continue if parts.headers.contains_key("x-bench") != pass => Ok(()),
                _ => anyhow::bail!("filter did not run"),
            }
        }
    };

    // Warm up: compile caches, pool slots, page tables.
    for _ in 0..500 {
        one().await?;
    }
    let mut lat: Vec<Duration> = Vec::with_capacity(calls);
    let t0 = Instant::now();
    let mut timed = Duration::ZERO;
    for i in 0..calls {
        for b in scratch.iter_mut().step_by(64) {
            *b = b.wrapping_add(i as u8);
        }
        std::hint::black_box(&scratch);
        let started = Instant::now();
        one().await?;
        let took = started.elapsed();
        timed += took;
        lat.push(took);
    }
    let total = if cold_kib > 0 { timed } else { t0.elapsed() };
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "calls={calls} mean={:.1}us p50={:.1}us p99={:.1}us calls/s={:.0}",
        total.as_secs_f64() * 1e6 / calls as f64,
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        calls as f64 / total.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
