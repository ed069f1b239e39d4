//! Flush tickets between the request side and a writer thread (the access log's, the trace
//! exporter's): `flush` takes the next ticket and waits, bounded, until the writer says it
//! has served it; the writer serves every ticket taken before it started its last round.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct FlushTickets {
    asked: AtomicU64,
    served: AtomicU64,
}

impl FlushTickets {
    /// Asks for a flush, wakes the writer, and waits at most `within` for it. `true` when
    /// everything queued before this call went out.
    pub(crate) async fn flush(&self, writer: &std::thread::Thread, within: Duration) -> bool {
        let ticket = self.asked.fetch_add(1, Ordering::AcqRel) + 1;
        writer.unpark();
        let end = Instant::now() + within;
        loop {
            if self.served.load(Ordering::Acquire) >= ticket {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The writer's side, at the start of a round: the last ticket taken, and whether one
    /// is waiting to be served.
    pub(crate) fn pending(&self) -> (u64, bool) {
        let asked = self.asked.load(Ordering::Acquire);
        (asked, asked > self.served.load(Ordering::Acquire))
    }

    /// The writer's side, once what was queued at `pending` is out.
    pub(crate) fn served(&self, asked: u64) {
        self.served.store(asked, Ordering::Release);
    }
}
