//! Retry budget per cluster. PLACEHOLDER: the signatures are the contract.

use crate::config;

pub struct RetryBudget {}

/// Held while a retry is in flight; dropping it returns the budget.
pub struct RetryPermit {}

impl RetryBudget {
    pub fn new(_cfg: &config::RetryBudget) -> Self {
        RetryBudget {}
    }
    /// `active` is the cluster's current in-flight request count.
    pub fn try_acquire(&self, _active: usize) -> Option<RetryPermit> {
        Some(RetryPermit {})
    }
}
