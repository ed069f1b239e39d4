//! Priority load shedding. PLACEHOLDER: the signatures are the contract.

use crate::config::Priority;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A concurrency limit that sheds by priority as utilisation rises.
#[derive(Debug)]
pub struct Shedder {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
}

/// Held for the life of an admitted request.
#[derive(Debug)]
pub struct Permit {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shedder {
    pub fn new(limit: usize) -> Self {
        Shedder {
            limit,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
    /// Admits or sheds at once; never queues.
    pub fn try_acquire(&self, _priority: Priority) -> Option<Permit> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit {
            in_flight: self.in_flight.clone(),
        };
        if now >= self.limit {
            return None;
        }
        Some(permit)
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
    pub fn limit(&self) -> usize {
        self.limit
    }
    /// PLACEHOLDER until the resilience work lands.
    pub fn shed_total(&self, _p: Priority) -> u64 {
        0
    }
}
