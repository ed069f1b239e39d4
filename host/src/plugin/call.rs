//! One plugin, loaded: its compiled, pre-linked component, its idle instances, and the code
//! that calls it under its limits and classifies whatever goes wrong.

use super::api;
use super::engine::{IdleSlot, Stdio, StoreData, WasmHost, STDIO_CAPACITY};
use super::manifest::{Kind, Manifest};
use super::stats::{FailureKind, PluginStats, QuarantinePolicy};
use super::upstream::FanoutCtx;
use super::versions::{Instance, Pre};
use super::view::{ReqData, RespData};
use crate::routing::Matcher;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use wasmtime::Store;

pub struct Plugin {
    pub name: Arc<str>,
    /// First 16 hex digits of sha256(wasm ‖ manifest): the version.
    pub version: String,
    pub manifest: Arc<Manifest>,
    pub matcher: Matcher,
    pub pre: Pre,
    pub stats: Arc<PluginStats>,
    pub loaded_at: SystemTime,
    /// Instances that finished a call cleanly, most recently used last. They belong to this
    /// version only: a reload starts with none, and they go away with the old version.
    pub idle: Mutex<Vec<(Warm, IdleSlot)>>,
    /// Live instances (running and idle), against the manifest's `max_instances`.
    pub live: Arc<AtomicU32>,
}

/// Why a call produced no usable result.
#[derive(Debug, Clone)]
pub struct CallFail {
    pub kind: FailureKind,
    pub detail: String,
}

type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// Idle instances kept per plugin version, on top of the pool-wide bound (half the slots).
/// Calls that run at the same time each need their own instance; more idle ones than the
/// gateway's usual concurrency per plugin would only hold memory.
const MAX_IDLE_PER_PLUGIN: usize = 64;

/// A store with (after its first call) an instance in it, and what has been read of its
/// stdout/stderr so far.
///
/// Why reuse at all: a fresh instance per call costs ~45 µs for a trivial Rust filter on the
/// benchmark machine (`cargo run --release -p portcullis-examples --bin filter_micro`),
/// almost all of it resetting and re-faulting guest memory; a reused one costs a few µs.
/// The trade-off, stated in docs/architecture.md: a plugin's globals and heap survive
/// between its own calls (never across plugins or versions), so a plugin that must not
/// carry anything from one request to the next sets `reuse_instance = false`.
pub struct Warm {
    store: Store<StoreData>,
    instance: Option<Instance>,
    stdio: Stdio,
    stdout_seen: usize,
    stderr_seen: usize,
    calls: u32,
}

impl Warm {
    fn new(host: &WasmHost, plugin: &Plugin) -> Result<Warm, super::engine::Refused> {
        let (store, stdio) = host.store(&plugin.manifest, &plugin.stats, &plugin.live)?;
        Ok(Warm {
            store,
            instance: None,
            stdio,
            stdout_seen: 0,
            stderr_seen: 0,
            calls: 0,
        })
    }

    /// Instantiates on first use, then runs `f`.
    async fn call<R, F>(&mut self, pre: &Pre, f: F) -> wasmtime::Result<R>
    where
        F: for<'a> FnOnce(&'a mut Store<StoreData>, &'a Instance) -> CallFuture<'a, R>,
    {
        let Warm {
            store, instance, ..
        } = self;
        if instance.is_none() {
            // Boxed: instantiation is rare (a new or retired instance) and its future is
            // large; inline, every call's future (moved into a box per request by the proxy)
            // would carry it.
            *instance = Some(Box::pin(pre.instantiate(store)).await?);
        }
        self.calls += 1;
        match instance {
            Some(inst) => f(store, inst).await,
            None => Err(wasmtime::Error::msg("instance missing after instantiation")),
        }
    }

    /// Sends what the guest printed since the last call to the log.
    fn flush_output(&mut self, stats: &PluginStats) {
        let out = self.stdio.stdout.contents();
        if out.len() > self.stdout_seen {
            stats.guest_output("stdout", &out[self.stdout_seen..]);
            self.stdout_seen = out.len();
        }
        let err = self.stdio.stderr.contents();
        if err.len() > self.stderr_seen {
            stats.guest_output("stderr", &err[self.stderr_seen..]);
            self.stderr_seen = err.len();
        }
    }

    /// Whether the capture pipes still have room for another call's output (a full pipe
    /// would make the guest's prints fail).
    fn pipes_have_room(&self) -> bool {
        self.stdout_seen.max(self.stderr_seen) <= STDIO_CAPACITY / 2
    }
}

impl Plugin {
    pub fn new(
        name: &str,
        version: String,
        manifest: Manifest,
        pre: Pre,
        stats: Arc<PluginStats>,
    ) -> Plugin {
        Plugin {
            name: Arc::from(name),
            version,
            matcher: Matcher::new(&manifest.matcher),
            manifest: Arc::new(manifest),
            pre,
            stats,
            loaded_at: SystemTime::now(),
            idle: Mutex::new(Vec::new()),
            live: Arc::default(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.manifest.kind
    }

    /// Runs `f` on an idle or new instance under the manifest's limits and accounts for the
    /// outcome. Only an instance whose call succeeded is kept: after a trap, a limit or a
    /// timeout its state is unknown, so it is dropped.
    ///
    /// `req` and `resp` are lent to the store for the call (swapped with its empty views) and
    /// swapped back before anything else happens, whatever the outcome: the heads belong to
    /// the request, not to the plugin.
    async fn invoke<R, F>(
        &self,
        host: &WasmHost,
        policy: &QuarantinePolicy,
        fanout: Option<FanoutCtx>,
        mut req: Option<&mut ReqData>,
        mut resp: Option<&mut RespData>,
        f: F,
    ) -> Result<R, CallFail>
    where
        F: for<'a> FnOnce(&'a mut Store<StoreData>, &'a Instance) -> CallFuture<'a, R>,
    {
        let t0 = Instant::now();
        if let Some(left) = self.stats.quarantined(t0) {
            let fail = CallFail {
                kind: FailureKind::Quarantined,
                detail: format!("quarantined for another {} ms", left.as_millis()),
            };
            self.stats.record_failure(fail.kind, &fail.detail, policy);
            return Err(fail);
        }
        let idle = self.idle.lock().pop().map(|(w, _slot)| w);
        let mut warm = match idle.map_or_else(|| Warm::new(host, self), Ok) {
            Ok(w) => w,
            Err(refused) => {
                let fail = CallFail {
                    kind: FailureKind::Overloaded,
                    detail: refused.0,
                };
                self.stats.record_failure(fail.kind, &fail.detail, policy);
                return Err(fail);
            }
        };
        StoreData::arm(&mut warm.store, fanout, t0 + self.manifest.timeout);
        let lend = |d: &mut StoreData,
                    req: &mut Option<&mut ReqData>,
                    resp: &mut Option<&mut RespData>| {
            if let Some(r) = req.as_deref_mut() {
                std::mem::swap(r, &mut d.view.req);
            }
            if let Some(r) = resp.as_deref_mut() {
                std::mem::swap(r, &mut d.view.resp);
            }
        };
        lend(warm.store.data_mut(), &mut req, &mut resp);
        // tokio's timeout polls the call before its timer, and a timer that is never polled
        // is never registered: a call that finishes in its first poll (any filter that does
        // not sleep) costs no timer work.
        let deadline = tokio::time::Instant::from_std(t0 + self.manifest.timeout);
        let running = host.ticker.enter();
        let res = tokio::time::timeout_at(deadline, warm.call(&self.pre, f)).await;
        drop(running);
        let elapsed = t0.elapsed();
        lend(warm.store.data_mut(), &mut req, &mut resp);
        self.account(host, policy, warm, res, elapsed)
    }

    /// Records a finished (or timed-out) call and keeps its instance if it is clean.
    fn account<R>(
        &self,
        host: &WasmHost,
        policy: &QuarantinePolicy,
        mut warm: Warm,
        res: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
        elapsed: std::time::Duration,
    ) -> Result<R, CallFail> {
        warm.flush_output(&self.stats);
        let d = warm.store.data();
        let waited = d.fanout.as_ref().map(|f| f.waited()).unwrap_or_default();
        self.stats
            .record_call(elapsed.saturating_sub(waited), d.limiter.high_water);
        let (kind, err) = match res {
            Ok(Ok(r)) => {
                self.stats.record_success();
                self.keep(host, warm);
                return Ok(r);
            }
            Ok(Err(e)) => {
                let kind = if d.cpu_exceeded {
                    FailureKind::CpuExceeded
                } else if d.limiter.budget_denied {
                    FailureKind::Overloaded
                } else if d.limiter.denied {
                    FailureKind::MemoryExceeded
                } else if e.is::<wasmtime::PoolConcurrencyLimitError>()
                    || e.chain()
                        .any(|c| c.is::<wasmtime::PoolConcurrencyLimitError>())
                {
                    FailureKind::Overloaded
                } else {
                    FailureKind::Trap
                };
                (kind, e)
            }
            Err(_) => (
                FailureKind::Timeout,
                wasmtime::Error::msg(format!(
                    "call exceeded timeout_ms = {}",
                    self.manifest.timeout.as_millis()
                )),
            ),
        };
        let budget = warm.store.data().limiter.budget();
        let detail = match kind {
            FailureKind::Overloaded if warm.store.data().limiter.budget_denied => format!(
                "the gateway's plugin memory budget is in use ([plugins] memory_budget_mb = {}, {} MiB held)",
                budget.limit() >> 20,
                budget.used() >> 20
            ),
            FailureKind::CpuExceeded => format!(
                "cpu budget of {} ms exceeded",
                self.manifest.cpu.as_millis()
            ),
            FailureKind::MemoryExceeded => format!(
                "memory limit of {} MiB exceeded",
                self.manifest.memory_bytes >> 20
            ),
            _ => format!("{err:#}"),
        };
        self.stats.log_trap(kind, &err);
        self.stats.record_failure(kind, &detail, policy);
        Err(CallFail { kind, detail })
    }

    /// Keeps an instance that served a call cleanly for the next call, within the bounds:
    /// calls per instance, idle instances per plugin and across the pool, pipe room.
    fn keep(&self, host: &WasmHost, warm: Warm) {
        if !self.manifest.reuse_instance
            || warm.calls >= host.reuse_calls
            || warm.instance.is_none()
            || !warm.pipes_have_room()
            || !host.budget.idle_allowed()
        {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() >= MAX_IDLE_PER_PLUGIN {
            return;
        }
        if let Some(slot) = host.reserve_idle() {
            idle.push((warm, slot));
        }
    }

    /// Calls `on-request` with a view of `req` (the filter's changes are applied by the
    /// caller, from the returned action).
    pub async fn on_request(
        &self,
        host: &WasmHost,
        policy: &QuarantinePolicy,
        req: &mut ReqData,
    ) -> Result<api::InboundAction, CallFail> {
        if !self.pre.is_filter() {
            return Err(not_a(Kind::Inbound));
        }
        self.invoke(host, policy, None, Some(req), None, |store, inst| {
            Box::pin(inst.on_request(store))
        })
        .await
    }

    /// Calls `on-response` with views of `req` and `resp`.
    pub async fn on_response(
        &self,
        host: &WasmHost,
        policy: &QuarantinePolicy,
        req: &mut ReqData,
        resp: &mut RespData,
    ) -> Result<api::OutboundAction, CallFail> {
        if !self.pre.is_filter() {
            return Err(not_a(Kind::Outbound));
        }
        self.invoke(host, policy, None, Some(req), Some(resp), |store, inst| {
            Box::pin(inst.on_response(store))
        })
        .await
    }

    /// Calls an endpoint's `handle`, with `fanout` serving its upstream calls.
    pub async fn handle(
        &self,
        host: &WasmHost,
        policy: &QuarantinePolicy,
        req: api::Request,
        fanout: FanoutCtx,
    ) -> Result<(api::Response, FanoutCtx), CallFail> {
        if self.pre.is_filter() {
            return Err(not_a(Kind::Endpoint));
        }
        self.invoke(
            host,
            policy,
            Some(fanout),
            None,
            None,
            move |store, inst| {
                Box::pin(async move {
                    let resp = inst.handle(&mut *store, req).await?;
                    let fanout = store
                        .data_mut()
                        .fanout
                        .take()
                        .ok_or_else(|| wasmtime::Error::msg("fan-out context lost"))?;
                    Ok((resp, fanout))
                })
            },
        )
        .await
    }

    /// Instantiates once without calling anything: catches missing imports, bad start
    /// functions and initial memory over the limit before the plugin takes traffic. The
    /// instance then serves the first call.
    pub async fn validate(&self, host: &WasmHost) -> anyhow::Result<()> {
        let mut warm = Warm::new(host, self).map_err(|r| anyhow::anyhow!(r.0))?;
        StoreData::arm(
            &mut warm.store,
            None,
            Instant::now() + self.manifest.timeout,
        );
        let fut = async {
            warm.instance = Some(self.pre.instantiate(&mut warm.store).await?);
            wasmtime::Result::Ok(())
        };
        let running = host.ticker.enter();
        let res = tokio::time::timeout(self.manifest.timeout, fut).await;
        drop(running);
        match res {
            Ok(r) => r.map_err(super::engine::wasm_err)?,
            Err(_) => anyhow::bail!("instantiation exceeded timeout_ms"),
        }
        warm.flush_output(&self.stats);
        self.keep(host, warm);
        Ok(())
    }
}

fn not_a(kind: Kind) -> CallFail {
    CallFail {
        kind: FailureKind::BadOutput,
        detail: format!("plugin is not an {} plugin", kind.as_str()),
    }
}
