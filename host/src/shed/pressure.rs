//! How much of its share each priority keeps while higher priorities are being refused.
//!
//! A refusal of priority `p` is evidence that the work below `p` holds slots `p` needs, so
//! every priority below `p` yields half of what it keeps (at most once per `SHRINK_EVERY`,
//! so a burst of refusals halves once, not a hundred times), down to nothing. A priority's
//! own refusal is evidence it still has demand: once no higher priority was refused for
//! `QUIET`, and while there is room (fewer in flight than the next priority up may fill),
//! its share grows back by `GROW_STEP` per `GROW_EVERY`, up to its whole share. Without the
//! room condition, a share growing back into a limit that critical work fills costs a
//! critical refusal per growth step.
//!
//! Growing back is a probe, and a probe that brings the pressure back was premature: the
//! quiet period then doubles (up to `MAX_QUIET`), as TCP backs off its retransmissions, so
//! sustained overload costs a higher priority a refusal every few seconds rather than twice
//! a second. A share that grows all the way back resets the quiet period.
//!
//! Measured end to end (`tests/tests/resilience.rs`, `critical_traffic_holds_at_three_times_overload`):
//! 40 critical and 80 sheddable closed-loop clients on a limit of 40, 3× overload: critical
//! success went from 93–96 % with fixed shares to 99.2–99.7 %, sheddable shed first.

use std::time::{Duration, Instant};

/// A whole share, per mille.
pub(super) const FULL: u32 = 1000;
/// Below this a halved share is nothing: a share of a few per mille admits nobody anyway.
const FLOOR: u32 = 30;
const SHRINK_EVERY: Duration = Duration::from_millis(10);
const QUIET: Duration = Duration::from_millis(500);
const MAX_QUIET: Duration = Duration::from_secs(8);
const GROW_EVERY: Duration = Duration::from_millis(100);
const GROW_STEP: u32 = FULL / 20;

/// Indexed like the shedder's priorities: sheddable, normal, critical.
#[derive(Debug)]
pub(super) struct Pressure {
    kept: [u32; 3],
    /// When each priority last yielded (its share halved).
    shrunk: [Option<Instant>; 3],
    /// When each priority's share last grew.
    grown: [Option<Instant>; 3],
    /// How long each priority waits without pressure before growing back.
    quiet: [Duration; 3],
    /// When each priority last looked for room to grow into.
    looked: [Option<Instant>; 3],
}

impl Default for Pressure {
    fn default() -> Self {
        Pressure {
            kept: [FULL; 3],
            shrunk: [None; 3],
            grown: [None; 3],
            quiet: [QUIET; 3],
            looked: [None; 3],
        }
    }
}

fn older_than(t: Option<Instant>, now: Instant, d: Duration) -> bool {
    t.is_none_or(|t| now.saturating_duration_since(t) >= d)
}

impl Pressure {
    pub(super) fn kept(&self) -> [u32; 3] {
        self.kept
    }

    /// A request of priority `p` (index) was refused at `now`; `room` says whether fewer were
    /// in flight, since it was last asked, than the priority above `p` may fill (asked at most
    /// once per `GROW_EVERY`). Returns whether any share changed.
    pub(super) fn refused(&mut self, p: usize, now: Instant, room: impl FnOnce() -> bool) -> bool {
        let mut changed = false;
        for q in 0..p {
            if self.kept[q] > 0 && older_than(self.shrunk[q], now, SHRINK_EVERY) {
                if self.grown[q] > self.shrunk[q] {
                    // It grew since it last yielded, and the pressure is back.
                    self.quiet[q] = (self.quiet[q] * 2).min(MAX_QUIET);
                }
                self.kept[q] /= 2;
                if self.kept[q] < FLOOR {
                    self.kept[q] = 0;
                }
                changed = true;
            }
            // Pressure from above, even on a share already at nothing, restarts the quiet.
            self.shrunk[q] = Some(now);
        }
        if self.kept[p] < FULL
            && older_than(self.shrunk[p], now, self.quiet[p])
            && older_than(self.looked[p], now, GROW_EVERY)
            && {
                self.looked[p] = Some(now);
                room()
            }
        {
            self.kept[p] = (self.kept[p] + GROW_STEP).min(FULL);
            self.grown[p] = Some(now);
            if self.kept[p] == FULL {
                self.quiet[p] = QUIET;
            }
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_above_halve_the_shares_below_once_per_interval() {
        let mut p = Pressure::default();
        let t = Instant::now();
        assert!(p.refused(2, t, || true), "a critical refusal");
        assert_eq!(p.kept(), [500, 500, FULL]);
        assert!(
            !p.refused(2, t + Duration::from_millis(1), || true),
            "same burst"
        );
        assert!(p.refused(1, t + Duration::from_millis(11), || true));
        assert_eq!(
            p.kept(),
            [250, 500, FULL],
            "normal's refusal moves only sheddable"
        );
        for i in 2..10 {
            p.refused(2, t + Duration::from_millis(11 * i), || true);
        }
        assert_eq!(p.kept()[0], 0, "down to nothing");
        assert_eq!(p.kept()[2], FULL, "critical never yields");
    }

    #[test]
    fn shares_grow_back_only_after_quiet_and_only_with_demand() {
        let mut p = Pressure::default();
        let t = Instant::now();
        p.refused(2, t, || true);
        assert_eq!(p.kept()[0], 500);
        // Sheddable demand during the quiet period: no growth yet.
        assert!(!p.refused(0, t + Duration::from_millis(100), || true));
        let q = t + QUIET;
        assert!(p.refused(0, q, || true));
        assert_eq!(p.kept()[0], 550);
        assert!(
            !p.refused(0, q + Duration::from_millis(50), || true),
            "one step per 100 ms"
        );
        assert!(
            !p.refused(0, q + Duration::from_millis(200), || false),
            "no growth without room"
        );
        let mut at = q + Duration::from_millis(200);
        for _ in 0..20 {
            at += GROW_EVERY;
            p.refused(0, at, || true);
        }
        assert_eq!(p.kept()[0], FULL, "whole again, never more");
    }

    #[test]
    fn pressure_right_after_growing_back_doubles_the_quiet() {
        let mut p = Pressure::default();
        let mut t = Instant::now();
        let ms = Duration::from_millis;
        p.refused(2, t, || true); // sheddable 500
        for expect in [ms(1000), ms(2000), ms(4000), ms(8000), ms(8000)] {
            t += p.quiet[0];
            assert!(p.refused(0, t, || true), "grows once quiet");
            t += ms(20);
            p.refused(2, t, || true); // and the pressure is back at once
            assert_eq!(p.quiet[0], expect);
        }
        assert!(
            !p.refused(0, t + ms(4000), || true),
            "still waiting out 8 s"
        );
    }
}
