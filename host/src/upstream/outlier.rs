//! Passive outlier detection. PLACEHOLDER: never ejects; the signatures are the contract.

use crate::config;
use std::time::Instant;

pub struct OutlierDetector {}

impl OutlierDetector {
    pub fn new(_cfg: &config::Outlier, _endpoints: usize) -> Self {
        OutlierDetector {}
    }
    /// False while endpoint `i` is ejected.
    pub fn is_available(&self, _i: usize, _now: Instant) -> bool {
        true
    }
    pub fn on_success(&self, _i: usize) {}
    /// Records a failure; may eject `i` (never past the max share, never the last endpoint).
    pub fn on_failure(&self, _i: usize, _now: Instant) {}
    pub fn ejections_total(&self, _i: usize) -> u64 {
        0
    }
    pub fn is_ejected(&self, i: usize, now: Instant) -> bool {
        !self.is_available(i, now)
    }
}
