//! What the request side and a writer thread (the access log's, the trace exporter's)
//! share besides the queue: flush tickets ([`FlushTickets`]: `flush` takes the next ticket
//! and waits, bounded, until the writer has served it) and the writer's rate-limited
//! warnings about what was lost ([`LossWarnings`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one loss warning this often: a full disk or a dead receiver must not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

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

/// Warnings about dropped (queue full) and failed (write or export refused) items, at most
/// one every [`WARN_EVERY`], each saying how many were lost since the last one.
#[derive(Debug, Default)]
pub(crate) struct LossWarnings {
    last: Option<Instant>,
    dropped: u64,
    failed: u64,
}

impl LossWarnings {
    fn may_warn(&mut self) -> bool {
        if self.last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return false;
        }
        self.last = Some(Instant::now());
        true
    }

    /// A failure as it happens: `log` runs unless a warning went out lately. `failed_now`
    /// is the failure counter including this one, so the next summary counts only newer ones.
    pub(crate) fn failure(&mut self, failed_now: u64, log: impl FnOnce()) {
        if self.may_warn() {
            self.failed = failed_now;
            log();
        }
    }

    /// `(dropped, failed)` since the last warning, when there are new ones and a warning may
    /// go out; the caller logs them.
    pub(crate) fn losses(&mut self, dropped: u64, failed: u64) -> Option<(u64, u64)> {
        if (dropped, failed) == (self.dropped, self.failed) || !self.may_warn() {
            return None;
        }
        let new = (
            dropped.saturating_sub(self.dropped),
            failed.saturating_sub(self.failed),
        );
        (self.dropped, self.failed) = (dropped, failed);
        Some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_summed_between_warnings_and_rate_limited() {
        let mut w = LossWarnings::default();
        assert_eq!(w.losses(0, 0), None, "nothing lost");
        assert_eq!(w.losses(3, 1), Some((3, 1)));
        assert_eq!(w.losses(5, 1), None, "within WARN_EVERY");
        w.last = None;
        assert_eq!(w.losses(5, 1), Some((2, 0)), "only the new ones");
        let mut logged = false;
        w.last = None;
        w.failure(4, || logged = true);
        assert!(logged);
        w.last = None;
        assert_eq!(
            w.losses(5, 6),
            Some((0, 2)),
            "failures after the one logged"
        );
    }
}
