//! One plugin, loaded: its compiled, pre-linked component and the code that calls it under
//! its limits and classifies whatever goes wrong.

use super::bindings::{endpoint, filter, types};
use super::engine::{StoreData, WasmHost};
use super::manifest::{Kind, Manifest};
use super::stats::{FailureKind, PluginStats, QuarantinePolicy};
use super::upstream::FanoutCtx;
use crate::routing::Matcher;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use wasmtime::Store;

/// The typed, pre-linked component. Building it type-checks the component's exports against
/// the world its manifest names, so a mismatch is a load error, never a request-time one.
#[derive(Clone)]
pub enum Pre {
    Filter(filter::FilterPre<StoreData>),
    Endpoint(endpoint::EndpointPre<StoreData>),
}

pub struct Plugin {
    pub name: Arc<str>,
    /// First 16 hex digits of sha256(wasm ‖ manifest): the version.
    pub version: String,
    pub manifest: Arc<Manifest>,
    pub matcher: Matcher,
    pub pre: Pre,
    pub stats: Arc<PluginStats>,
    pub loaded_at: SystemTime,
}

/// Why a call produced no usable result.
#[derive(Debug, Clone)]
pub struct CallFail {
    pub kind: FailureKind,
    pub detail: String,
}

type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

impl Plugin {
    pub fn kind(&self) -> Kind {
        self.manifest.kind
    }

    /// Runs `f` in a fresh store under the manifest's limits and accounts for the outcome.
    async fn invoke<R, F>(
        &self,
        host: &WasmHost,
        policy: &QuarantinePolicy,
        fanout: Option<FanoutCtx>,
        f: F,
    ) -> Result<R, CallFail>
    where
        F: for<'a> FnOnce(&'a mut Store<StoreData>) -> CallFuture<'a, R>,
    {
        if let Some(left) = self.stats.quarantined(Instant::now()) {
            let fail = CallFail {
                kind: FailureKind::Quarantined,
                detail: format!("quarantined for another {} ms", left.as_millis()),
            };
            self.stats.record_failure(fail.kind, &fail.detail, policy);
            return Err(fail);
        }
        let (mut store, stdio) = host.store(&self.manifest, &self.stats, fanout);
        let t0 = Instant::now();
        let res = tokio::time::timeout(self.manifest.timeout, f(&mut store)).await;
        let elapsed = t0.elapsed();
        let d = store.data();
        let waited = d.fanout.as_ref().map(|f| f.waited()).unwrap_or_default();
        self.stats
            .record_call(elapsed.saturating_sub(waited), d.limiter.high_water);
        self.stats.guest_output("stdout", &stdio.stdout.contents());
        self.stats.guest_output("stderr", &stdio.stderr.contents());
        let (kind, err) = match res {
            Ok(Ok(r)) => {
                self.stats.record_success();
                return Ok(r);
            }
            Ok(Err(e)) => {
                let kind = if d.cpu_exceeded {
                    FailureKind::CpuExceeded
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
        let detail = match kind {
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

    /// Calls `on-request`.
    pub async fn on_request(
        &self,
        host: &WasmHost,
        policy: &QuarantinePolicy,
        req: types::Request,
    ) -> Result<types::InboundAction, CallFail> {
        let Pre::Filter(pre) = self.pre.clone() else {
            return Err(not_a(Kind::Inbound));
        };
        self.invoke(host, policy, None, move |store| {
            Box::pin(async move {
                let inst = pre.instantiate_async(&mut *store).await?;
                inst.call_on_request(&mut *store, &req).await
            })
        })
        .await
    }

    /// Calls `on-response`.
    pub async fn on_response(
        &self,
        host: &WasmHost,
        policy: &QuarantinePolicy,
        req: types::Request,
        resp: types::ResponseHead,
    ) -> Result<types::OutboundAction, CallFail> {
        let Pre::Filter(pre) = self.pre.clone() else {
            return Err(not_a(Kind::Outbound));
        };
        self.invoke(host, policy, None, move |store| {
            Box::pin(async move {
                let inst = pre.instantiate_async(&mut *store).await?;
                inst.call_on_response(&mut *store, &req, &resp).await
            })
        })
        .await
    }

    /// Calls an endpoint's `handle`, with `fanout` serving its upstream calls.
    pub async fn handle(
        &self,
        host: &WasmHost,
        policy: &QuarantinePolicy,
        req: types::Request,
        fanout: FanoutCtx,
    ) -> Result<(types::Response, FanoutCtx), CallFail> {
        let Pre::Endpoint(pre) = self.pre.clone() else {
            return Err(not_a(Kind::Endpoint));
        };
        self.invoke(host, policy, Some(fanout), move |store| {
            Box::pin(async move {
                let inst = pre.instantiate_async(&mut *store).await?;
                let resp = inst.call_handle(&mut *store, &req).await?;
                let fanout = store
                    .data_mut()
                    .fanout
                    .take()
                    .ok_or_else(|| wasmtime::Error::msg("fan-out context lost"))?;
                Ok((resp, fanout))
            })
        })
        .await
    }

    /// Instantiates once without calling anything: catches missing imports, bad start
    /// functions and initial memory over the limit before the plugin takes traffic.
    pub async fn validate(&self, host: &WasmHost) -> anyhow::Result<()> {
        let (mut store, _stdio) = host.store(&self.manifest, &self.stats, None);
        let fut = async {
            match &self.pre {
                Pre::Filter(p) => p.instantiate_async(&mut store).await.map(|_| ()),
                Pre::Endpoint(p) => p.instantiate_async(&mut store).await.map(|_| ()),
            }
        };
        match tokio::time::timeout(self.manifest.timeout, fut).await {
            Ok(r) => r.map_err(super::engine::wasm_err),
            Err(_) => anyhow::bail!("instantiation exceeded timeout_ms"),
        }
    }
}

fn not_a(kind: Kind) -> CallFail {
    CallFail {
        kind: FailureKind::BadOutput,
        detail: format!("plugin is not an {} plugin", kind.as_str()),
    }
}
