//! Plugin runtime: the only door between the fixed core and product teams' Wasm.
//!
//! The core calls exactly this facade:
//!
//! ```text
//! let rt = PluginRuntime::start(&cfg.plugins).await?;  // boot: strict scan + watcher
//! let chain = rt.chain();     // once per request: a snapshot, so a request finishes on the
//!                             // plugin versions it began with
//! chain.inbound_todo(&parts)       -> Option<InboundTodo> // None: no filter applies
//! chain.inbound_body_cap(&parts)   -> Option<usize>    // Some: buffer the body up to cap
//! chain.inbound_from(todo, ..).await -> InboundOutcome // before routing
//! chain.endpoint(name)             -> Option<Arc<Plugin>>
//! chain.run_endpoint(..).await     -> EndpointOutcome  // `[[route]] endpoint = ...`
//! chain.outbound(..).await         -> OutboundOutcome  // on the response head
//! rt.admin(req).await                                  // /admin/plugins[/{name}]
//! rt.render_metrics(&mut out)                          // appended to /metrics
//! ```
//!
//! Internals, one room each: `manifest` (what a plugin asks for), `engine` (wasmtime, limits),
//! `versions` (the WIT versions served: bindings, host imports, conversion into the
//! version-neutral `api` types), `call` (invoking one plugin and classifying failures),
//! `registry` (the directory, reloads, atomic swap), `upstream` (endpoint fan-out), `stats`,
//! `admin`.

mod admin;
mod api;
mod cache;
mod call;
mod convert;
mod engine;
#[cfg(test)]
mod fuzz;
mod imports;
mod kv;
pub(crate) mod manifest;
mod registry;
mod stats;
mod store;
mod ticker;
mod upstream;
mod versions;
mod view;

pub(crate) use call::Plugin;
pub(crate) use stats::FailureKind;

use crate::config::{self, Priority};
use crate::core::failure::{Failure as GatewayFailure, PluginFailure};
use crate::core::identity::PathPolicy;
use crate::core::passport::{Passport, State};
use crate::routing::MatchIndex;
use crate::upstream::Upstreams;
use bytes::Bytes;
use engine::WasmHost;
use http::{Response, StatusCode};
use manifest::{Failure, Kind};
use registry::Registry;
use stats::QuarantinePolicy;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use view::{ReqData, RespData};

/// Per-request state that filters read and write. Lives for the whole request.
#[derive(Debug, Default, Clone)]
pub struct FilterState {
    /// Metadata set by inbound filters; later filters and outbound filters read it.
    pub metadata: Vec<(String, String)>,
    /// Target cluster chosen by a filter; overrides the route's cluster.
    pub cluster: Option<String>,
    /// Shedding class chosen by a filter; overrides the route's.
    pub priority: Option<Priority>,
    /// A filter changed the head (path or headers): routing must look at it again.
    pub head_changed: bool,
}

pub enum InboundOutcome {
    /// Go on to routing (the head and `FilterState` may have been changed).
    Continue,
    /// A filter answered (short-circuit) or rejected; send this response as is.
    Respond(Response<Bytes>),
    /// A `fail_closed` filter trapped or exceeded a limit, or changed the path into one
    /// admission refuses.
    Failed(GatewayFailure),
}

/// The inbound filters a head may meet, found by [`Chain::inbound_todo`]: candidates in order,
/// and the first of them whose match fits.
pub struct InboundTodo {
    todo: crate::routing::Candidates,
    first: usize,
}

pub enum OutboundOutcome {
    Continue,
    Failed(GatewayFailure),
}

pub enum EndpointOutcome {
    Respond(Response<Bytes>),
    Failed(GatewayFailure),
}

/// Limits on what plugins may hand back, taken from the gateway's `[limits]`.
#[derive(Debug, Clone, Copy)]
struct OutputLimits {
    max_headers: usize,
    max_header_bytes: usize,
    max_body_bytes: usize,
    /// A path a filter sets is normalized like the client's (`[http]`).
    path: PathPolicy,
}

/// The set of loaded plugins at one instant, ordered for execution.
pub struct Chain {
    inbound: Vec<Arc<Plugin>>,
    outbound: Vec<Arc<Plugin>>,
    /// Which inbound/outbound filters' `[match]` can fit a path and host: loaded filters that
    /// never match cost a lookup, not a scan.
    inbound_ix: MatchIndex,
    outbound_ix: MatchIndex,
    /// Some inbound filter asks for the body (most do not: the body check is skipped).
    inbound_body: bool,
    endpoints: HashMap<Arc<str>, Arc<Plugin>>,
    host: Option<Arc<WasmHost>>,
    policy: QuarantinePolicy,
    limits: OutputLimits,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            inbound: Vec::new(),
            outbound: Vec::new(),
            inbound_ix: MatchIndex::default(),
            outbound_ix: MatchIndex::default(),
            inbound_body: false,
            endpoints: HashMap::new(),
            host: None,
            policy: QuarantinePolicy {
                after: 5,
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            limits: OutputLimits {
                max_headers: 100,
                max_header_bytes: 64 * 1024,
                max_body_bytes: 1024 * 1024,
                path: PathPolicy::default(),
            },
        }
    }
}

impl Chain {
    fn build(
        plugins: Vec<Arc<Plugin>>,
        host: Arc<WasmHost>,
        cfg: &config::Plugins,
        limits: &config::Limits,
        path: PathPolicy,
    ) -> Chain {
        let mut c = Chain {
            host: Some(host),
            policy: QuarantinePolicy {
                after: cfg.quarantine_after,
                base: Duration::from_millis(cfg.quarantine_base_ms),
                max: Duration::from_millis(cfg.quarantine_max_ms),
            },
            limits: OutputLimits {
                max_headers: limits.max_headers,
                max_header_bytes: limits.max_header_bytes,
                max_body_bytes: cfg.max_body_bytes,
                path,
            },
            ..Chain::default()
        };
        for p in plugins {
            match p.kind() {
                Kind::Inbound => c.inbound.push(p),
                Kind::Outbound => c.outbound.push(p),
                Kind::Endpoint => {
                    c.endpoints.insert(p.name.clone(), p);
                }
            }
        }
        let by_order = |a: &Arc<Plugin>, b: &Arc<Plugin>| {
            (a.manifest.order, &a.name).cmp(&(b.manifest.order, &b.name))
        };
        c.inbound.sort_by(by_order);
        c.outbound.sort_by(by_order);
        c.inbound_ix = MatchIndex::build(c.inbound.iter().map(|p| &p.matcher));
        c.inbound_body = c.inbound.iter().any(|p| p.manifest.body);
        c.outbound_ix = MatchIndex::build(c.outbound.iter().map(|p| &p.matcher));
        c
    }

    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty() && self.outbound.is_empty() && self.endpoints.is_empty()
    }

    /// Whether any outbound filter is loaded: without one, the proxy path skips the outbound
    /// phase and need not keep the request head it sent.
    pub fn has_outbound(&self) -> bool {
        self.host.is_some() && !self.outbound.is_empty()
    }

    /// `Some(cap)` when a matching inbound filter wants the body: the core buffers it (and
    /// refuses bodies over the cap with 413) before calling `inbound`.
    pub fn inbound_body_cap(&self, parts: &http::request::Parts) -> Option<usize> {
        if !self.inbound_body {
            return None;
        }
        let host = host_if(&self.inbound_ix, parts);
        self.inbound_ix
            .candidates(parts.uri.path(), host)
            .into_iter()
            .filter_map(|i| self.inbound.get(i as usize))
            .filter(|p| p.manifest.body && p.matcher.matches(parts, host))
            .map(|p| p.manifest.max_body_bytes)
            .max()
    }

    /// The inbound filters that may run on this head, from the first whose `[match]` fits
    /// (in order); `None` when none fits or no filter is loaded. The proxy path asks first, so
    /// a request that no loaded filter applies to costs one index lookup: no move of the head
    /// into a view, no boxed call future (1.8k instructions per request with 24 unmatched
    /// filters before this check, `bench/instructions.sh`).
    pub fn inbound_todo(&self, parts: &http::request::Parts) -> Option<InboundTodo> {
        self.host.as_ref()?;
        let host = host_if(&self.inbound_ix, parts);
        let todo = self.inbound_ix.candidates(parts.uri.path(), host);
        let first = todo.iter().position(|&pos| {
            self.inbound
                .get(pos as usize)
                .is_some_and(|p| p.matcher.matches(parts, host))
        })?;
        Some(InboundTodo { todo, first })
    }

    /// Runs the inbound filters whose match fits, in order, on `parts` (changed in place).
    /// Each sees the changes of those before it. Same as [`Chain::inbound_todo`] followed by
    /// [`Chain::inbound_from`].
    pub async fn inbound(
        &self,
        parts: &mut http::request::Parts,
        client: SocketAddr,
        route: Option<&str>,
        body: Option<&Bytes>,
        state: &mut FilterState,
        passport: &mut Passport,
    ) -> InboundOutcome {
        match self.inbound_todo(parts) {
            Some(todo) => {
                self.inbound_from(todo, parts, client, route, body, state, passport)
                    .await
            }
            None => InboundOutcome::Continue,
        }
    }

    /// Runs the filters of `todo` (from [`Chain::inbound_todo`] on this same head) whose match
    /// fits. The head is moved into a [`view::ReqData`] for the whole chain, lent to each
    /// call, and moved back at the end: no per-filter copies of the request.
    #[allow(clippy::too_many_arguments)]
    pub async fn inbound_from(
        &self,
        todo: InboundTodo,
        parts: &mut http::request::Parts,
        client: SocketAddr,
        route: Option<&str>,
        body: Option<&Bytes>,
        state: &mut FilterState,
        passport: &mut Passport,
    ) -> InboundOutcome {
        let Some(host) = &self.host else {
            return InboundOutcome::Continue;
        };
        let metadata = std::mem::take(&mut state.metadata);
        let mut req = ReqData::take(parts, client, route, metadata);
        let out = self
            .run_inbound(host, todo, &mut req, body, state, passport)
            .await;
        state.metadata = req.restore(parts);
        out
    }

    async fn run_inbound(
        &self,
        host: &WasmHost,
        todo: InboundTodo,
        req: &mut ReqData,
        body: Option<&Bytes>,
        state: &mut FilterState,
        passport: &mut Passport,
    ) -> InboundOutcome {
        let candidates = |req: &ReqData| {
            let host = host_if(&self.inbound_ix, &req.parts);
            self.inbound_ix.candidates(req.parts.uri.path(), host)
        };
        let InboundTodo { mut todo, first } = todo;
        let mut next = first;
        while let Some(&pos) = todo.get(next) {
            next += 1;
            let Some(p) = self.inbound.get(pos as usize) else {
                continue;
            };
            if !p
                .matcher
                .matches(&req.parts, host_if(&self.inbound_ix, &req.parts))
            {
                continue;
            }
            req.body = body
                .filter(|_| p.manifest.body)
                .map(|b| b.slice(..b.len().min(p.manifest.max_body_bytes)));
            use api::InboundAction as A;
            let span = span_start(passport);
            let action = match p.on_request(host, &self.policy, req).await {
                Ok(a) => {
                    let outcome = match &a {
                        A::Continue => "continue",
                        A::Modify(_) => "modify",
                        A::Respond(_) => "respond",
                        A::Reject(_) => "reject",
                    };
                    trace_call(passport, p, "inbound", span, outcome, Duration::ZERO);
                    a
                }
                Err(fail) => {
                    trace_call(
                        passport,
                        p,
                        "inbound",
                        span,
                        fail.kind.as_str(),
                        Duration::ZERO,
                    );
                    match self.failed(p, fail, passport) {
                        Some(pf) => return InboundOutcome::Failed(pf),
                        None => continue,
                    }
                }
            };
            match action {
                A::Continue => {}
                A::Modify(ch) => {
                    passport.plugin_acted(&p.name);
                    state.head_changed = true;
                    let rematch = changes_match_inputs(&ch);
                    let (parts, meta) = (&mut req.parts, &mut req.metadata);
                    if let Err(why) = convert::apply_request(parts, meta, state, ch, &self.limits) {
                        if let Some(pf) = self.bad_output(p, why, passport) {
                            return InboundOutcome::Failed(pf);
                        }
                    }
                    if rematch {
                        // Later filters match the changed path and host.
                        todo = candidates(req);
                        todo.retain(|i| *i > pos);
                        next = 0;
                    }
                }
                A::Respond(r) => match convert::response(r, &self.limits) {
                    Ok(resp) => {
                        passport.plugin_acted(&p.name);
                        passport.stamp(State::PluginResponded);
                        passport.set_detail(format!("answered by plugin {}", p.name));
                        return InboundOutcome::Respond(resp);
                    }
                    Err(why) => {
                        if let Some(pf) = self.bad_output(p, why, passport) {
                            return InboundOutcome::Failed(pf);
                        }
                    }
                },
                A::Reject(rj) => {
                    let mut resp = convert::rejection(&rj);
                    let mut detail = format!("rejected by plugin {}: {}", p.name, rj.reason);
                    if let Err(why) =
                        convert::rejection_headers(&mut resp, rj.headers, &self.limits)
                    {
                        // A refusal stays a refusal whatever the failure policy: answered
                        // without the refused headers (a bad header must never let the request
                        // through a `fail_open` filter), and counted as the filter's bad output.
                        p.stats
                            .record_failure(FailureKind::BadOutput, &why, &self.policy);
                        detail.push_str(&format!(" (its headers were refused: {why})"));
                    }
                    passport.plugin_acted(&p.name);
                    passport.error = Some("plugin-rejected");
                    passport.stamp(State::PluginRejected);
                    passport.set_detail(detail);
                    return InboundOutcome::Respond(resp);
                }
            }
        }
        InboundOutcome::Continue
    }

    /// Runs the outbound filters whose match fits, in order, on `resp` (changed in place).
    /// Both heads are lent to the calls as views, as in [`Chain::inbound`]; `req` comes back
    /// unchanged. `gateway_made`: the response is the gateway's own (an error, a filter's
    /// answer); filters whose manifest says `gateway_responses = false` skip it.
    #[allow(clippy::too_many_arguments)]
    pub async fn outbound(
        &self,
        req: &mut http::request::Parts,
        client: SocketAddr,
        route: Option<&str>,
        resp: &mut http::response::Parts,
        gateway_made: bool,
        state: &mut FilterState,
        passport: &mut Passport,
    ) -> OutboundOutcome {
        let Some(host) = &self.host else {
            return OutboundOutcome::Continue;
        };
        if self.outbound.is_empty() {
            return OutboundOutcome::Continue;
        }
        let metadata = std::mem::take(&mut state.metadata);
        let mut rq = ReqData::take(req, client, route, metadata);
        let mut rs = RespData {
            status: resp.status,
            headers: std::mem::take(&mut resp.headers),
        };
        let out = self
            .run_outbound(host, &mut rq, &mut rs, gateway_made, passport)
            .await;
        state.metadata = rq.restore(req);
        resp.status = rs.status;
        resp.headers = rs.headers;
        out
    }

    async fn run_outbound(
        &self,
        host: &WasmHost,
        rq: &mut ReqData,
        rs: &mut RespData,
        gateway_made: bool,
        passport: &mut Passport,
    ) -> OutboundOutcome {
        let host_name = host_if(&self.outbound_ix, &rq.parts);
        for pos in self.outbound_ix.candidates(rq.parts.uri.path(), host_name) {
            let Some(p) = self.outbound.get(pos as usize) else {
                continue;
            };
            if gateway_made && !p.manifest.gateway_responses {
                continue;
            }
            if !p
                .matcher
                .matches(&rq.parts, host_if(&self.outbound_ix, &rq.parts))
            {
                continue;
            }
            let span = span_start(passport);
            let action = match p.on_response(host, &self.policy, rq, rs).await {
                Ok(a) => {
                    let outcome = match &a {
                        api::OutboundAction::Modify(_) => "modify",
                        _ => "continue",
                    };
                    trace_call(passport, p, "outbound", span, outcome, Duration::ZERO);
                    a
                }
                Err(fail) => {
                    trace_call(
                        passport,
                        p,
                        "outbound",
                        span,
                        fail.kind.as_str(),
                        Duration::ZERO,
                    );
                    match self.failed(p, fail, passport) {
                        Some(pf) => return OutboundOutcome::Failed(pf),
                        None => continue,
                    }
                }
            };
            if let api::OutboundAction::Modify(ch) = action {
                passport.plugin_acted(&p.name);
                if let Err(why) = convert::apply_response(rs, ch, &self.limits) {
                    if let Some(pf) = self.bad_output(p, why, passport) {
                        return OutboundOutcome::Failed(pf);
                    }
                }
            }
        }
        OutboundOutcome::Continue
    }

    pub fn endpoint(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.endpoints.get(name)
    }

    /// Runs an endpoint plugin. Its upstream calls are stamped into the passport and counted
    /// as waiting time.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_endpoint(
        &self,
        plugin: &Arc<Plugin>,
        upstreams: Arc<Upstreams>,
        parts: &http::request::Parts,
        client: SocketAddr,
        route: Option<&str>,
        body: Option<&Bytes>,
        state: &FilterState,
        deadline: Instant,
        priority: Priority,
        passport: &mut Passport,
    ) -> EndpointOutcome {
        let Some(host) = &self.host else {
            return EndpointOutcome::Failed(unavailable());
        };
        passport.stamp(State::EndpointStart);
        let req = convert::request(parts, client, route, body, state);
        // A traced endpoint's calls are children of its call's span.
        let span = span_start(passport);
        let trace = passport
            .trace
            .as_ref()
            .zip(span)
            .map(|(t, (id, _))| (t.trace_id, id));
        let fanout = upstream::FanoutCtx::new(
            upstreams,
            deadline,
            plugin.manifest.fanout,
            priority,
            self.limits.max_headers,
            trace,
        );
        let res = plugin.handle(host, &self.policy, req, fanout).await;
        let out = match res {
            Ok((resp, fanout)) => {
                trace_call(
                    passport,
                    plugin,
                    "endpoint",
                    span,
                    "respond",
                    fanout.waited(),
                );
                for c in &fanout.records {
                    passport.stamp_at(State::FanoutCallStart, c.start);
                    passport.stamp_at(State::FanoutCallEnd, c.end);
                }
                passport.add_waiting(fanout.waited());
                passport.calls = fanout.records;
                match convert::response(resp, &self.limits) {
                    Ok(r) => {
                        passport.plugin_acted(&plugin.name);
                        EndpointOutcome::Respond(r)
                    }
                    Err(why) => match self.bad_output(plugin, why, passport) {
                        Some(pf) => EndpointOutcome::Failed(pf),
                        None => EndpointOutcome::Failed(unavailable()),
                    },
                }
            }
            Err(fail) => {
                let kind = fail.kind.as_str();
                trace_call(passport, plugin, "endpoint", span, kind, Duration::ZERO);
                match self.failed(plugin, fail, passport) {
                    Some(pf) => EndpointOutcome::Failed(pf),
                    // fail_open has no meaning for an endpoint: there is nothing to skip to.
                    None => EndpointOutcome::Failed(unavailable()),
                }
            }
        };
        passport.stamp(State::EndpointEnd);
        out
    }

    /// Records a failed call; returns the failure to answer with under `fail_closed`, `None`
    /// under `fail_open` (skip the filter).
    fn failed(
        &self,
        p: &Plugin,
        fail: call::CallFail,
        passport: &mut Passport,
    ) -> Option<GatewayFailure> {
        passport.stamp(match fail.kind {
            FailureKind::CpuExceeded => State::PluginCpuExceeded,
            FailureKind::MemoryExceeded => State::PluginMemoryExceeded,
            _ => State::PluginTrap,
        });
        passport.set_detail(format!(
            "plugin {} ({}): {}",
            p.name,
            fail.kind.as_str(),
            fail.detail
        ));
        if p.manifest.failure == Failure::FailOpen && p.kind() != Kind::Endpoint {
            return None;
        }
        let status = match fail.kind {
            FailureKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            FailureKind::Overloaded | FailureKind::Quarantined => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Some(GatewayFailure::Plugin(PluginFailure {
            plugin: p.name.clone(),
            code: failure_code(fail.kind),
            status,
        }))
    }

    fn bad_output(
        &self,
        p: &Plugin,
        why: String,
        passport: &mut Passport,
    ) -> Option<GatewayFailure> {
        let fail = call::CallFail {
            kind: FailureKind::BadOutput,
            detail: why,
        };
        p.stats
            .record_failure(fail.kind, &fail.detail, &self.policy);
        self.failed(p, fail, passport)
    }
}

/// A plugin call's span id and start, read only when the request is traced.
fn span_start(passport: &Passport) -> Option<(u64, Instant)> {
    passport
        .trace
        .as_ref()
        .map(|_| (crate::core::trace::new_span_id(), Instant::now()))
}

/// Records a finished call's span in a traced request (`span` from [`span_start`]); `waited`
/// is the time the call spent suspended on fan-out calls, not running.
fn trace_call(
    passport: &mut Passport,
    p: &Plugin,
    phase: &'static str,
    span: Option<(u64, Instant)>,
    outcome: &'static str,
    waited: Duration,
) {
    let (Some(t), Some((span_id, start))) = (passport.trace.as_mut(), span) else {
        return;
    };
    let end = Instant::now();
    t.push_plugin(crate::core::trace::PluginSpan {
        span_id,
        plugin: p.name.clone(),
        version: p.version.clone(),
        phase,
        outcome,
        start,
        end,
        cpu: end.saturating_duration_since(start).saturating_sub(waited),
    });
}

/// The request's host when some matcher of `ix` looks at it (the lookup hashes `Host`).
fn host_if<'a>(ix: &MatchIndex, parts: &'a http::request::Parts) -> Option<&'a str> {
    if ix.uses_host() {
        crate::routing::request_host(parts)
    } else {
        None
    }
}

/// Whether a filter's changes can alter what `[match]` reads first (path, host): then later
/// filters' candidates are looked up again. Header-only changes keep the candidates; their
/// header conditions are checked on each candidate anyway.
fn changes_match_inputs(ch: &api::RequestChanges) -> bool {
    ch.path.is_some()
        || ch
            .set_headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        || ch
            .remove_headers
            .iter()
            .any(|n| n.eq_ignore_ascii_case("host"))
}

fn unavailable() -> GatewayFailure {
    GatewayFailure::EndpointUnavailable
}

/// The `portcullis-error` code of a plugin failure.
fn failure_code(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Trap => "plugin-trap",
        FailureKind::CpuExceeded => "plugin-cpu-exceeded",
        FailureKind::MemoryExceeded => "plugin-memory-exceeded",
        FailureKind::Timeout => "plugin-timeout",
        FailureKind::BadOutput => "plugin-bad-output",
        FailureKind::Overloaded => "plugin-overloaded",
        FailureKind::Quarantined => "plugin-quarantined",
    }
}

/// Static checks of the plugin directory for `portcullis check`: every manifest parses within
/// the ceilings and has its `.wasm`, and an existing compile cache directory is private.
/// (Compilation and type-checking happen at load.) Returns one `file: reason` line per
/// problem.
pub fn check_dir(cfg: &config::Plugins) -> Vec<String> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&cfg.dir) {
        Ok(rd) => rd,
        Err(e) => return vec![format!("{}: plugins.dir: {e}", cfg.dir.display())],
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if let Some(stem) = name.strip_suffix(".toml") {
            if !registry::valid_name(stem) {
                out.push(format!(
                    "{}: plugin names are 1-64 characters of a-z, 0-9, `-` and `_`",
                    path.display()
                ));
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    if let Err(why) = manifest::Manifest::parse(&text, cfg) {
                        out.push(format!("{}: {why}", path.display()));
                    }
                }
                Err(e) => out.push(format!("{}: {e}", path.display())),
            }
            let wasm = cfg.dir.join(format!("{stem}.wasm"));
            match std::fs::metadata(&wasm) {
                Ok(m) if m.len() > cfg.max_upload_bytes as u64 => out.push(format!(
                    "{}: {} bytes, more than [plugins] max_upload_bytes",
                    wasm.display(),
                    m.len()
                )),
                Ok(_) => {}
                Err(_) => out.push(format!(
                    "{}: missing (the manifest has no component)",
                    wasm.display()
                )),
            }
        } else if let Some(stem) = name.strip_suffix(".wasm") {
            if !cfg.dir.join(format!("{stem}.toml")).exists() {
                out.push(format!("{}: missing manifest {stem}.toml", path.display()));
            }
        }
    }
    if let Some(why) = cfg.cache_dir().as_deref().and_then(cache::inspect) {
        out.push(why);
    }
    out.sort();
    out
}

/// The running plugin system: registry, watcher, admin API, and the fleet store's mirror
/// when `[plugins] store = "redis"`.
pub struct PluginRuntime {
    registry: Arc<Registry>,
    fleet: Option<Arc<store::Fleet>>,
    _watcher: notify::RecommendedWatcher,
}

impl PluginRuntime {
    /// Boots the runtime: every plugin in the directory must load, or the gateway refuses to
    /// start (a missing auth filter must not silently open the door). Later reloads are
    /// forgiving: a bad version is reported and the old one keeps serving.
    /// `path`: how a path a filter sets is normalized (the gateway's `[http]` policy).
    /// `redis`: the `[redis]` section, which `store = "redis"` and `kv = "redis"` need
    /// (validation says so; read at start only).
    pub async fn start(
        cfg: &config::Plugins,
        redis: Option<&config::Redis>,
        limits: &config::Limits,
        path: PathPolicy,
    ) -> anyhow::Result<Arc<PluginRuntime>> {
        if !cfg.dir.is_dir() {
            anyhow::bail!("plugins.dir: `{}` is not a directory", cfg.dir.display());
        }
        let host = Arc::new(WasmHost::new(cfg, redis)?);
        let disk = match cfg.cache_dir() {
            Some(dir) => {
                let engine = host.engine.clone();
                let max_bytes = cfg.cache_max_mb.saturating_mul(1 << 20);
                let opened = tokio::task::spawn_blocking(move || {
                    cache::DiskCache::open(&dir, &engine, max_bytes)
                })
                .await?;
                match opened {
                    Ok(c) => {
                        tracing::info!(dir = %c.dir().display(), max_mb = cfg.cache_max_mb, "plugin compile cache on");
                        Some(Arc::new(c))
                    }
                    // The default location could not be made (a read-only plugin dir): run
                    // without a cache rather than refuse a config that never asked for one.
                    // An unsafe directory, or any trouble with a configured one, refuses boot.
                    Err(e @ cache::CacheDirError::Io { .. }) if cfg.cache_dir.is_none() => {
                        tracing::warn!(error = %e, "plugin compile cache off: the default cache_dir is unusable (set [plugins] cache_dir, or cache = false)");
                        None
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => None,
        };
        let registry = Arc::new(Registry::new(cfg, limits, path, host, disk));
        let fleet = match (cfg.store, redis) {
            (config::PluginStoreKind::Redis, Some(r)) => Some(store::Fleet::new(r, cfg)?),
            (config::PluginStoreKind::Redis, None) => {
                anyhow::bail!("plugins.store: `redis` needs a [redis] section")
            }
            (config::PluginStoreKind::Directory, _) => None,
        };
        if let Some(f) = &fleet {
            f.catch_up(&registry).await;
        }
        registry.rescan(true).await?;
        let watcher = registry.watch()?;
        if let Some(f) = &fleet {
            f.spawn(&registry);
        }
        Ok(Arc::new(PluginRuntime {
            registry,
            fleet,
            _watcher: watcher,
        }))
    }

    pub fn chain(&self) -> Arc<Chain> {
        self.registry.current.load_full()
    }

    /// Applies a reloaded config's `[limits]` and `[http]` path policy to the filter chain
    /// (requests that already took a chain keep theirs).
    pub fn set_policy(&self, limits: &config::Limits, path: PathPolicy) {
        self.registry.set_policy(limits, path);
    }

    /// The config's `[[rate_limit]]`s, which the `rate-limit` import checks by name: set at
    /// boot and by each reload (calls in flight keep the limits they loaded).
    pub(crate) fn set_rate_limits(&self, limits: Arc<crate::ratelimit::RateLimits>) {
        self.registry.host.services.set_rate_limits(limits);
    }

    /// What `GET /admin/plugins` lists (no config values), for the dashboard.
    pub fn plugins_json(&self) -> serde_json::Value {
        admin::list_json(&self.registry)
    }

    pub fn render_metrics(&self, out: &mut String) {
        admin::render_metrics(&self.registry, self.fleet.as_deref(), out);
    }

    pub async fn admin(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<http_body_util::Full<Bytes>> {
        admin::handle(&self.registry, self.fleet.as_deref(), req).await
    }
}
