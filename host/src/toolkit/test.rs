//! `portcullis plugin test`: runs a plugin in the gateway's own sandbox (the same engine,
//! linker, pooling allocator and manifest limits, through `PluginRuntime` and `Chain`, the
//! entry points the request path calls) against requests from the command line or a file, and
//! reports what it did.

use super::project::{self, Located};
use super::report::{self, Outcome, Run};
use super::spec::{Spec, TestRequest};
use super::stub::{self, Stub};
use crate::config::{Config, Priority};
use crate::core::passport::Passport;
use crate::core::trace::Trace;
use crate::plugin::manifest::{Kind, Manifest};
use crate::plugin::{
    Chain, EndpointOutcome, FilterState, InboundOutcome, OutboundOutcome, PluginRuntime,
};
use crate::upstream::Upstreams;
use anyhow::Context as _;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `plugin test` was asked for.
pub(crate) struct TestArgs {
    pub(crate) dir: PathBuf,
    pub(crate) spec: Spec,
    pub(crate) json: bool,
}

/// Instance slots for the run: requests go one at a time; a small pool keeps the address space
/// reserved small (the gateway's default is 1000).
const TEST_INSTANCES: u32 = 8;
/// An endpoint request's deadline (the route's `request_deadline_ms` in a gateway); the
/// manifest's `timeout_ms`, at most 5 s by default, is what bounds the call.
const ENDPOINT_DEADLINE: Duration = Duration::from_secs(30);

/// Runs every request; `Ok(true)` when all passed (no failure, every expectation met).
pub(crate) fn run(args: TestArgs) -> anyhow::Result<bool> {
    let plugin = project::locate(&args.dir)?;
    anyhow::ensure!(
        plugin.wasm().is_file(),
        "{}: missing: build it first with `portcullis plugin build --dir {}`",
        plugin.wasm().display(),
        args.dir.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let run = rt.block_on(run_all(&plugin, &args.spec))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        report::print(&run);
    }
    Ok(run.ok)
}

/// A scratch plugin directory holding only this plugin; removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(plugin: &Located) -> anyhow::Result<Scratch> {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-plugin-test-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir)?;
    let s = Scratch(dir);
    let name = &plugin.name;
    std::fs::copy(plugin.manifest(), s.0.join(format!("{name}.toml")))
        .with_context(|| plugin.manifest().display().to_string())?;
    let wasm = s.0.join(format!("{name}.wasm"));
    if std::fs::hard_link(plugin.wasm(), &wasm).is_err() {
        std::fs::copy(plugin.wasm(), &wasm).with_context(|| plugin.wasm().display().to_string())?;
    }
    Ok(s)
}

/// The gateway config for the run: the plugin directory, the stub clusters, one route, and
/// the gateway's default `[plugins]` ceilings and `[limits]`.
fn config_text(
    plugin_dir: &Path,
    cache: Option<&Path>,
    stubs: &BTreeMap<String, Stub>,
    endpoint: Option<&str>,
    max_upload: Option<u64>,
) -> String {
    let mut t = String::from("[[listener]]\nname = \"test\"\nlisten = \"127.0.0.1:0\"\n");
    for (name, s) in stubs {
        t += &format!(
            "[[cluster]]\nname = {name:?}\nendpoints = [\"{}\"]\n",
            s.addr
        );
    }
    // Routing is not exercised; the config needs a route, and the route a cluster.
    t += "[[cluster]]\nname = \"portcullis-test-upstream\"\nendpoints = [\"127.0.0.1:9\"]\n";
    t += "[[route]]\nname = \"test\"\nmatch = { path_prefix = \"/\" }\n";
    match endpoint {
        Some(e) => t += &format!("endpoint = {e:?}\n"),
        None => t += "cluster = \"portcullis-test-upstream\"\n",
    }
    t += &format!(
        "[plugins]\ndir = {:?}\nmax_instances = {TEST_INSTANCES}\n\
         # Every request reports its own failure; none is skipped as quarantined.\n\
         quarantine_after = 1000000\n",
        plugin_dir.display().to_string(),
    );
    if let Some(m) = max_upload {
        t += &format!("max_upload_bytes = {m}\n");
    }
    match cache {
        Some(c) => t += &format!("cache_dir = {:?}\n", c.display().to_string()),
        None => t += "cache = false\n",
    }
    t
}

/// The compile cache: `PORTCULLIS_CACHE_DIR` (shared between projects, e.g. kept by CI), else
/// the project's `.portcullis/cache`, so a second `plugin test` of an unchanged JS or Python
/// component skips a minute of compiling; `None` if it cannot be made.
fn cache_dir(plugin: &Located) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PORTCULLIS_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let meta = plugin.dir.join(project::META_DIR);
    std::fs::create_dir_all(&meta).ok()?;
    let dir = std::fs::canonicalize(&meta).ok()?.join("cache");
    Some(dir)
}

async fn run_all(plugin: &Located, spec: &Spec) -> anyhow::Result<Run> {
    let manifest_text = std::fs::read_to_string(plugin.manifest())
        .with_context(|| plugin.manifest().display().to_string())?;
    let mut stubs = BTreeMap::new();
    for (name, c) in &spec.cluster {
        stubs.insert(name.clone(), stub::start(c).await?);
    }
    let scratch = scratch(plugin)?;
    let wasm_bytes = std::fs::metadata(plugin.wasm())?.len();
    // Parsed once for the gateway's defaults and the kind; the runtime parses it again, as
    // the gateway does.
    let probe = Config::parse(
        &config_text(&scratch.0, None, &stubs, None, None),
        &scratch.0,
    )
    .map_err(|p| anyhow::anyhow!("internal test config: {p:?}"))?;
    let ceilings = probe
        .plugins
        .clone()
        .context("internal test config: no [plugins]")?;
    let manifest = Manifest::parse(&manifest_text, &ceilings)
        .map_err(|why| anyhow::anyhow!("{}: {why}", plugin.manifest().display()))?;
    let endpoint = (manifest.kind == Kind::Endpoint).then_some(plugin.name.as_str());
    let cache = cache_dir(plugin);
    // A component over the default upload limit still runs here; the report says the
    // gateway needs the limit raised.
    let default_upload = ceilings.max_upload_bytes as u64;
    let upload = (wasm_bytes > default_upload).then_some(wasm_bytes);
    let text = config_text(&scratch.0, cache.as_deref(), &stubs, endpoint, upload);
    let cfg = Config::parse(&text, &scratch.0)
        .map_err(|p| anyhow::anyhow!("internal test config: {p:?}"))?;
    let plugins = cfg
        .plugins
        .clone()
        .context("internal test config: no [plugins]")?;

    let t0 = Instant::now();
    let rt = PluginRuntime::start(&plugins, &cfg.limits, cfg.http.path_policy(), None)
        .await
        .with_context(|| format!("{} did not load", plugin.wasm().display()))?;
    let load = t0.elapsed();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let upstreams = Arc::new(Upstreams::new(&cfg, &shutdown)?);
    let chain = rt.chain();

    let mut results = Vec::with_capacity(spec.request.len());
    for r in &spec.request {
        let mut out = match manifest.kind {
            Kind::Inbound => inbound(&chain, r).await,
            Kind::Outbound => outbound(&chain, r).await,
            Kind::Endpoint => endpoint_call(&chain, &plugin.name, upstreams.clone(), r).await,
        }
        .unwrap_or_else(|e| Outcome::error(r, format!("{e:#}")));
        out.memory_high_water_bytes = memory_high_water(&rt);
        out.check(r.expect.as_ref());
        results.push(out);
    }
    let served = stubs.iter().map(|(k, s)| (k.clone(), s.served())).collect();
    Ok(Run::new(
        plugin,
        &manifest,
        &rt,
        load,
        (wasm_bytes, default_upload),
        results,
        served,
    ))
}

fn memory_high_water(rt: &PluginRuntime) -> u64 {
    rt.plugins_json()
        .get(0)
        .and_then(|p| p.pointer("/stats/memory_high_water_bytes"))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// The request head and body of a test request, as the gateway would hand them to the chain.
fn request_parts(r: &TestRequest) -> anyhow::Result<(http::request::Parts, Bytes)> {
    let uri: http::Uri = r.url.parse().with_context(|| format!("url {:?}", r.url))?;
    let mut b = http::Request::builder().method(r.method.as_str()).uri(&uri);
    if !r.headers.keys().any(|k| k.eq_ignore_ascii_case("host")) {
        b = b.header(
            "host",
            uri.authority().map(|a| a.as_str()).unwrap_or("localhost"),
        );
    }
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let (mut parts, ()) = b.body(()).context("request head")?.into_parts();
    // The chain sees origin-form targets, as the gateway does after admission.
    if let Some(pq) = uri.path_and_query() {
        parts.uri = pq.as_str().parse()?;
    }
    Ok((parts, Bytes::from(r.body.clone())))
}

fn client() -> SocketAddr {
    ([127, 0, 0, 1], 40000).into()
}

fn traced() -> Passport {
    let mut p = Passport::new(Instant::now());
    p.trace = Some(Trace::new(1, None));
    p
}

async fn inbound(chain: &Chain, r: &TestRequest) -> anyhow::Result<Outcome> {
    let (mut parts, body) = request_parts(r)?;
    let mut passport = traced();
    let mut state = FilterState::default();
    let cap = chain.inbound_body_cap(&parts);
    if let Some(cap) = cap.filter(|&c| body.len() > c) {
        return Ok(Outcome::refused(r, 413, format!("body of {} bytes is over the filter's max_body_bytes = {cap}: the gateway answers 413", body.len())));
    }
    let body = cap.map(|_| body);
    let res = chain
        .inbound(
            &mut parts,
            client(),
            Some("test"),
            body.as_ref(),
            &mut state,
            &mut passport,
        )
        .await;
    let mut out = Outcome::from_passport(r, &passport);
    match res {
        InboundOutcome::Continue => out.set_request(&parts, &state),
        InboundOutcome::Respond(resp) => {
            out.set_response(resp.status(), resp.headers(), Some(resp.body()))
        }
        InboundOutcome::Failed(f) => out.set_failed(f.status(), f.code()),
    }
    Ok(out)
}

async fn outbound(chain: &Chain, r: &TestRequest) -> anyhow::Result<Outcome> {
    let (mut parts, _) = request_parts(r)?;
    let mut resp = http::Response::builder().status(r.response.as_ref().map_or(200, |x| x.status));
    for (k, v) in r.response.iter().flat_map(|x| x.headers.iter()) {
        resp = resp.header(k.as_str(), v.as_str());
    }
    let (mut head, ()) = resp.body(()).context("response head")?.into_parts();
    let mut passport = traced();
    let mut state = FilterState::default();
    let res = chain
        .outbound(
            &mut parts,
            client(),
            Some("test"),
            &mut head,
            false,
            &mut state,
            &mut passport,
        )
        .await;
    let mut out = Outcome::from_passport(r, &passport);
    match res {
        OutboundOutcome::Continue => out.set_response(head.status, &head.headers, None),
        OutboundOutcome::Failed(f) => out.set_failed(f.status(), f.code()),
    }
    Ok(out)
}

async fn endpoint_call(
    chain: &Chain,
    name: &str,
    upstreams: Arc<Upstreams>,
    r: &TestRequest,
) -> anyhow::Result<Outcome> {
    let (parts, body) = request_parts(r)?;
    let plugin = chain
        .endpoint(name)
        .with_context(|| format!("endpoint {name} is not loaded"))?
        .clone();
    let mut passport = traced();
    let state = FilterState::default();
    let deadline = Instant::now() + ENDPOINT_DEADLINE;
    let res = chain
        .run_endpoint(
            &plugin,
            upstreams,
            &parts,
            client(),
            Some("test"),
            Some(&body),
            &state,
            deadline,
            Priority::Normal,
            &mut passport,
        )
        .await;
    let mut out = Outcome::from_passport(r, &passport);
    out.set_calls(&passport);
    match res {
        EndpointOutcome::Respond(resp) => {
            out.set_response(resp.status(), resp.headers(), Some(resp.body()))
        }
        EndpointOutcome::Failed(f) => out.set_failed(f.status(), f.code()),
    }
    Ok(out)
}
