//! The epoch ticker: the thread that advances wasmtime's epoch every tick (`[plugins]
//! epoch_tick_ms`, default 2 ms), which is what makes a running guest yield to tokio and what
//! its CPU budget is counted in.
//!
//! Why 2 ms and not 1: under load the ticker never parks, and each wake-up is a context switch
//! on whatever core the proxy runs. On the benchmark's shared core a 1 ms tick cost 3 filters
//! ~0.12 extra context switches per request and ~10 % of their throughput; 2 ms removed most of
//! that (bench/PROFILE.md, round 5). The price: a looping guest holds its worker for up to
//! 2 ms between yields, and a CPU budget can overrun by up to two ticks.
//!
//! Why it parks: a gateway with plugins but no traffic would otherwise wake a thread every
//! tick for nothing (about 1 % of a core here at 1 ms, and a context switch on whatever
//! core the proxy runs). The ticker parks after [`IDLE_PARK`] of ticks in which no call started
//! and none was running; the first call after that wakes it before entering the guest.
//!
//! Why parking cannot lose a budget: a call registers ([`Ticker::enter`]) before any guest
//! code runs and stays registered until its [`Running`] guard drops, and the ticker never
//! parks while a call is registered. The hand-off is the usual flag-then-recheck: the ticker
//! publishes `parked` and re-reads the counters before parking; a caller bumps the counters
//! and then reads `parked`. With sequentially consistent operations on both sides, either the
//! ticker sees the new call or the caller sees `parked` and unparks it (an unpark that comes
//! before the park is kept by the thread's token, so it is never lost). While the ticker
//! sleeps the epoch does not move, and deadlines are relative to it, so no call is
//! interrupted early either.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;
use wasmtime::EngineWeak;

/// Idle time before the ticker parks.
const IDLE_PARK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Shared {
    /// Calls started, ever: a change means traffic.
    started: AtomicU64,
    /// Calls registered and not yet finished.
    running: AtomicU64,
    parked: AtomicBool,
    stop: AtomicBool,
}

/// Handle to the ticker thread; stops it on drop.
pub struct Ticker {
    shared: Arc<Shared>,
    thread: Thread,
}

/// A registered call; deregisters on drop (including when the call's future is dropped on
/// timeout).
pub struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

impl Ticker {
    /// Starts the thread; `tick` is clamped to at least 1 ms.
    pub fn start(engine: EngineWeak, tick: Duration) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let tick = tick.max(Duration::from_millis(1));
        let idle_ticks = (IDLE_PARK.as_micros() / tick.as_micros()).max(1) as u32;
        let handle = std::thread::Builder::new()
            .name("portcullis-epoch".into())
            .spawn(move || run(&s, &engine, tick, idle_ticks))?;
        Ok(Ticker {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// Registers a call about to run guest code; keep the guard until the guest is done.
    pub fn enter(&self) -> Running {
        self.shared.started.fetch_add(1, SeqCst);
        self.shared.running.fetch_add(1, SeqCst);
        if self.shared.parked.load(SeqCst) {
            self.thread.unpark();
        }
        Running(self.shared.clone())
    }

    /// Whether the ticker is parked now.
    pub fn is_parked(&self) -> bool {
        self.shared.parked.load(SeqCst)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.thread.unpark();
    }
}

fn run(s: &Shared, engine: &EngineWeak, tick: Duration, idle_ticks: u32) {
    let (mut seen, mut idle) = (s.started.load(SeqCst), 0u32);
    while !s.stop.load(SeqCst) {
        std::thread::sleep(tick);
        match engine.upgrade() {
            Some(e) => e.increment_epoch(),
            None => return,
        }
        let started = s.started.load(SeqCst);
        if started != seen || s.running.load(SeqCst) != 0 {
            (seen, idle) = (started, 0);
            continue;
        }
        idle += 1;
        if idle < idle_ticks {
            continue;
        }
        s.parked.store(true, SeqCst);
        // Re-check after publishing `parked`: a call that registered in between either shows
        // up here or has seen `parked` and will unpark us.
        while s.started.load(SeqCst) == seen && s.running.load(SeqCst) == 0 {
            if s.stop.load(SeqCst) {
                return;
            }
            std::thread::park();
        }
        s.parked.store(false, SeqCst);
        idle = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(5), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn parks_when_idle_ticks_while_a_call_runs_and_parks_again_after() {
        let engine = wasmtime::Engine::default();
        let t = Ticker::start(engine.weak(), Duration::from_millis(2)).unwrap();
        wait_for("parked while idle", || t.is_parked());

        let call = t.enter();
        wait_for("awake once a call registered", || !t.is_parked());
        // While the call is registered the ticker keeps ticking, however long it runs.
        std::thread::sleep(IDLE_PARK * 2);
        assert!(!t.is_parked(), "parked under a running call");
        drop(call);
        wait_for("parked again after the call", || t.is_parked());
    }
}
