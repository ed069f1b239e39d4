//! The Wasm engine: one wasmtime `Engine` with the pooling allocator and epoch interruption,
//! the `Linker` with every host import, and the per-call `Store` setup that enforces limits.
//!
//! Why these choices:
//! * **Pooling allocator**: instance slots, memories, tables and fiber stacks are reserved up
//!   front, so the total is bounded by `[plugins] max_instances`: more concurrent calls than
//!   slots fail fast, never allocate.
//! * **Epoch interruption** (not fuel): a ticker thread bumps the epoch every tick
//!   (`[plugins] epoch_tick_ms`, 2 ms by default) while calls run (it parks when there are
//!   none: `ticker.rs`); a call yields to tokio at each tick (so a long guest never starves
//!   other requests on the worker) and is stopped once its ticks exceed the manifest's
//!   `cpu_ms`.
//! * **A `Store` is the unit of isolation**, never shared between plugins or versions. By
//!   default a store and its instance serve up to `[plugins] instance_reuse_calls` calls of
//!   one plugin (see `call.rs` for why); `reuse_instance = false` in a manifest gives every
//!   call a fresh one.
//! * **A gateway-wide memory budget** (`[plugins] memory_budget_mb`): every linear memory
//!   byte a live instance (running or idle) holds is charged to one budget as it grows, and
//!   given back when its store drops. A JavaScript or Python instance starts at 9–13 MiB
//!   (docs/plugins.md, "Limits for JavaScript and Python"), so without it a burst of
//!   concurrent calls to one such plugin could take the host's memory from every other
//!   plugin. A growth past the budget is refused: the call fails as `overloaded` (503,
//!   `plugin-overloaded`), counted like a full pool, never a trap that quarantines.
//!   Idle instances are kept only while less than half the budget is in use.
//! * **A per-plugin instance cap** (manifest `[limits] max_instances`): live instances of
//!   one plugin version; a call past it fails the same way, at once (no queue to wait in).

use super::imports::HostServices;
use super::kv::Kv;
use super::manifest::Manifest;
use super::stats::PluginStats;
use super::ticker::Ticker;
use super::upstream::FanoutCtx;
use super::view::CallView;
use crate::config;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Guest stack; deep recursion traps here instead of growing.
const MAX_WASM_STACK: usize = 512 * 1024;
/// Bytes of guest stdout/stderr a store's pipes hold; a reused store is retired once half
/// full, so a guest's print never fails for lack of room.
pub(super) const STDIO_CAPACITY: usize = 16 * 1024;
/// Table elements per table (function references).
const MAX_TABLE_ELEMENTS: usize = 20_000;

pub struct WasmHost {
    pub engine: Engine,
    pub linker: Linker<StoreData>,
    /// Advances the epoch while calls run; parked while none do (see `ticker.rs`).
    pub ticker: Ticker,
    /// Calls one instance may serve (`[plugins] instance_reuse_calls`; ≤ 1: no reuse).
    pub reuse_calls: u32,
    /// The epoch tick; CPU budgets are counted in whole ticks.
    tick: Duration,
    /// Idle instances may hold at most half of the pool's slots, so kept-warm instances can
    /// never starve calls of a slot.
    idle_slots_left: Arc<AtomicUsize>,
    /// Linear memory all live instances hold, against `[plugins] memory_budget_mb`.
    pub budget: Arc<MemBudget>,
    /// What the 0.3 imports reach (KV, rate limits); every store holds it.
    pub(crate) services: Arc<HostServices>,
}

/// The gateway-wide budget of guest linear memory (`[plugins] memory_budget_mb`).
#[derive(Debug)]
pub struct MemBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemBudget {
    pub fn new(limit: usize) -> MemBudget {
        MemBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }
    /// Charges `bytes` if they fit.
    fn try_charge(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(bytes).filter(|n| *n <= self.limit)
            })
            .is_ok()
    }
    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
    pub fn limit(&self) -> usize {
        self.limit
    }
    /// Whether an instance that finished a call may be kept idle: only while less than half
    /// the budget is in use, so idle instances never stand between a call and its memory.
    pub fn idle_allowed(&self) -> bool {
        self.used() < self.limit / 2
    }
}

/// Why no new instance could be made for a call.
#[derive(Debug)]
pub struct Refused(pub String);

/// One live instance of a plugin version, counted against its manifest's `max_instances`;
/// given back on drop (when its store drops).
pub(super) struct InstanceTicket(Arc<AtomicU32>);

impl InstanceTicket {
    /// A ticket if fewer than `cap` instances of the version are live.
    pub(super) fn take(live: &Arc<AtomicU32>, cap: Option<u32>) -> Result<InstanceTicket, Refused> {
        let cap = cap.unwrap_or(u32::MAX);
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        })
        .map(|_| InstanceTicket(live.clone()))
        .map_err(|n| {
            Refused(format!(
                "max_instances = {n} reached: that many instances of this plugin are busy"
            ))
        })
    }
}

impl Drop for InstanceTicket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WasmHost {
    /// `redis`: the gateway's `[redis]`, for `[plugins] kv = "redis"`.
    pub fn new(cfg: &config::Plugins, redis: Option<&config::Redis>) -> anyhow::Result<WasmHost> {
        let max_memory = (cfg.max_memory_mb as usize) << 20;
        let mut pool = PoolingAllocationConfig::new();
        let slots = cfg.max_instances.max(1);
        // A Rust wasip2 component is a handful of core instances (main module, WASI adapter,
        // shims) with one or two memories.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(4))
            .total_stacks(slots)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(16)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_memory_size(max_memory);
        let mut wc = Config::new();
        wc.epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .async_stack_size(MAX_WASM_STACK + 1024 * 1024)
            // Reserve only what a memory may grow to: many gateways (and tests) can share
            // one address space without reserving terabytes.
            .memory_reservation(max_memory as u64)
            .memory_guard_size(64 * 1024)
            .memory_reservation_for_growth(0)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wc).map_err(wasm_err)?;

        let mut linker: Linker<StoreData> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_err)?;
        // Every served WIT version's imports (`versions`): one linker serves them all.
        super::versions::add_to_linker(&mut linker).map_err(wasm_err)?;

        let tick = Duration::from_millis(cfg.epoch_tick_ms.max(1));
        let ticker = Ticker::start(engine.weak(), tick)?;
        Ok(WasmHost {
            engine,
            linker,
            ticker,
            reuse_calls: cfg.instance_reuse_calls,
            tick,
            idle_slots_left: Arc::new(AtomicUsize::new(slots as usize / 2)),
            budget: Arc::new(MemBudget::new(
                (cfg.memory_budget_mb as usize).saturating_mul(1 << 20),
            )),
            services: Arc::new(HostServices::new(Kv::new(cfg.kv, redis)?)),
        })
    }

    /// Reserves room for one idle instance; `None` when idle instances already hold their
    /// share of the pool. Dropping the slot gives the room back.
    pub fn reserve_idle(&self) -> Option<IdleSlot> {
        self.idle_slots_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()
            .map(|_| IdleSlot(self.idle_slots_left.clone()))
    }

    /// A fresh store, with the plugin's limits armed (`StoreData::arm` re-arms them for each
    /// call), counted as one of the version's `live` instances; refused past the manifest's
    /// `max_instances`.
    pub fn store(
        &self,
        manifest: &Arc<Manifest>,
        stats: &Arc<PluginStats>,
        live: &Arc<AtomicU32>,
    ) -> Result<(Store<StoreData>, Stdio), Refused> {
        let ticket = InstanceTicket::take(live, manifest.max_instances)?;
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let cpu_budget = budget_ticks(manifest.cpu, self.tick);
        let data = StoreData {
            wasi,
            table: ResourceTable::new(),
            limiter: MemLimiter {
                max_bytes: manifest.memory_bytes,
                high_water: 0,
                denied: false,
                budget: self.budget.clone(),
                charged: 0,
                budget_denied: false,
            },
            _ticket: ticket,
            manifest: manifest.clone(),
            stats: stats.clone(),
            ticks: 0,
            cpu_budget,
            cpu_exceeded: false,
            fanout: None,
            view: CallView::default(),
            services: self.services.clone(),
            deadline: Instant::now() + manifest.timeout,
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|d| &mut d.limiter);
        store.epoch_deadline_callback(|mut cx| {
            let d = cx.data_mut();
            d.ticks += 1;
            if d.ticks > d.cpu_budget {
                d.cpu_exceeded = true;
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            // Let other tasks on this worker run before continuing. tokio's `yield_now`
            // defers the wake-up until the I/O driver has been polled, so sockets on this
            // worker make progress too (a plain self-wake would starve the driver).
            Ok(wasmtime::UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        Ok((store, Stdio { stdout, stderr }))
    }
}

/// A CPU budget in whole ticks, rounded up: the guest is stopped at the first tick past it, so
/// it always gets at least `cpu` and at most about two ticks more (the first tick of a call
/// can come at any point of a tick period).
fn budget_ticks(cpu: Duration, tick: Duration) -> u64 {
    let tick = tick.as_micros().max(1);
    cpu.as_micros().div_ceil(tick).max(1) as u64
}

/// Room for one idle instance in the pool-wide idle budget, given back on drop.
pub struct IdleSlot(Arc<AtomicUsize>);

impl Drop for IdleSlot {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// wasmtime has its own error type; at the edges we speak anyhow.
pub(super) fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// The guest's captured stdout and stderr for one call.
pub struct Stdio {
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
}

/// Everything one call's store holds.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemLimiter,
    pub manifest: Arc<Manifest>,
    pub stats: Arc<PluginStats>,
    /// Epoch ticks spent in the guest during this call (× `epoch_tick_ms` ≈ execution time).
    pub ticks: u64,
    cpu_budget: u64,
    pub cpu_exceeded: bool,
    /// Present for endpoint calls: the context `upstream.fetch` runs in.
    pub fanout: Option<FanoutCtx>,
    /// Present for filter calls: the request (and response) head the guest's views read.
    pub view: CallView,
    /// The KV store and rate limits the 0.3 imports use.
    pub(super) services: Arc<HostServices>,
    /// When the current call's `timeout_ms` runs out: host imports that wait stop there.
    pub(super) deadline: Instant,
    /// This store's place under the manifest's `max_instances`.
    _ticket: InstanceTicket,
}

impl StoreData {
    /// Resets the per-call budget of a store before a call (fresh or reused instance).
    pub fn arm(store: &mut Store<StoreData>, fanout: Option<FanoutCtx>, deadline: Instant) {
        let d = store.data_mut();
        d.deadline = deadline;
        d.ticks = 0;
        d.cpu_exceeded = false;
        d.limiter.denied = false;
        d.limiter.budget_denied = false;
        d.fanout = fanout;
        store.set_epoch_deadline(1);
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Per-store memory limit, and the store's share of the gateway-wide budget. A denied growth
/// makes the guest's allocator fail (a Rust guest then aborts: a trap); `denied` lets the
/// host report it as `PLUGIN_MEMORY_EXCEEDED`, `budget_denied` as `plugin-overloaded`.
pub struct MemLimiter {
    max_bytes: usize,
    pub high_water: usize,
    pub denied: bool,
    budget: Arc<MemBudget>,
    /// Bytes this store's memories hold, charged to `budget` (given back on drop).
    charged: usize,
    /// The last denied growth was the gateway-wide budget's, not the manifest's limit.
    pub budget_denied: bool,
}

impl MemLimiter {
    /// The budget this store charges, for the failure message.
    pub fn budget(&self) -> &MemBudget {
        &self.budget
    }
}

impl Drop for MemLimiter {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

impl wasmtime::ResourceLimiter for MemLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        // Called for a memory's creation too (current = 0), so an instance's initial memory
        // is charged before it exists.
        let grow = desired.saturating_sub(current);
        if !self.budget.try_charge(grow) {
            self.budget_denied = true;
            return Ok(false);
        }
        self.charged += grow;
        self.high_water = self.high_water.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

// The host imports (log, metrics, config, views, upstream) are in `versions`, once per
// served WIT version, each delegating to the one implementation.

#[cfg(test)]
mod tests {
    use super::*;

    /// The tick comes from `[plugins] epoch_tick_ms` and every store's budget is counted in it.
    #[test]
    fn stores_count_cpu_in_the_configured_tick() {
        let cfg = config::Config::parse(
            "[[listener]]\nname='l'\nlisten='127.0.0.1:0'\n\
             [plugins]\ndir='p'\nmax_instances=4\nepoch_tick_ms=7\n",
            std::path::Path::new("."),
        )
        .expect("config");
        let plugins = cfg.plugins.expect("plugins");
        let host = WasmHost::new(&plugins, None).expect("engine");
        let manifest =
            Manifest::parse("kind='inbound'\n[limits]\ncpu_ms=20\n", &plugins).expect("manifest");
        let (store, _) = host
            .store(
                &Arc::new(manifest),
                &Arc::new(PluginStats::new("t")),
                &Arc::default(),
            )
            .expect("store");
        assert_eq!(host.tick, Duration::from_millis(7));
        assert_eq!(
            store.data().cpu_budget,
            3,
            "20 ms in 7 ms ticks, rounded up"
        );
    }

    #[test]
    fn the_memory_budget_charges_and_gives_back() {
        let b = MemBudget::new(10);
        assert!(b.try_charge(6));
        assert!(!b.try_charge(5), "past the limit");
        assert!(b.try_charge(4), "exactly the limit fits");
        b.release(10);
        assert_eq!(b.used(), 0);
        let b = MemBudget::new(100);
        assert!(b.idle_allowed());
        assert!(b.try_charge(50));
        assert!(
            !b.idle_allowed(),
            "idle instances only under half the budget"
        );
    }

    #[test]
    fn instance_tickets_stop_at_the_cap_and_come_back() {
        let live = Arc::default();
        let a = InstanceTicket::take(&live, Some(2)).expect("first");
        let _b = InstanceTicket::take(&live, Some(2)).expect("second");
        let refused = InstanceTicket::take(&live, Some(2))
            .err()
            .expect("third refused");
        assert!(refused.0.contains("max_instances = 2"), "{}", refused.0);
        drop(a);
        assert!(
            InstanceTicket::take(&live, Some(2)).is_ok(),
            "a dropped one frees its place"
        );
        assert!(
            InstanceTicket::take(&Arc::default(), None).is_ok(),
            "no cap"
        );
    }

    #[test]
    fn cpu_budgets_round_up_to_whole_ticks() {
        let ms = Duration::from_millis;
        assert_eq!(budget_ticks(ms(10), ms(2)), 5);
        assert_eq!(
            budget_ticks(ms(5), ms(2)),
            3,
            "never fewer ticks than the budget"
        );
        assert_eq!(budget_ticks(ms(1), ms(2)), 1);
        assert_eq!(budget_ticks(ms(50), ms(1)), 50);
        assert_eq!(budget_ticks(ms(15), ms(10)), 2);
        assert_eq!(budget_ticks(Duration::ZERO, ms(2)), 1, "at least one tick");
    }
}
