//! Active HTTP health checks. PLACEHOLDER: the signatures are the contract.

use crate::config::HealthCheck;
use std::sync::Arc;

pub struct HealthChecker {}

impl HealthChecker {
    pub fn spawn(
        _cfg: HealthCheck,
        _addrs: Vec<String>,
        _shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<HealthChecker> {
        Arc::new(HealthChecker {})
    }
    pub fn is_healthy(&self, _i: usize) -> bool {
        true
    }
}
