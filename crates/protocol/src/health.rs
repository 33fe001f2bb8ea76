//! An allocation's health as its provider's checks see it (`healthcheck:` of the ensemble),
//! reported in its state, the manifest and `get allocations`, and pushed to the orchestrator
//! when it changes ([`crate::calls::HealthChanged`]).

use serde::{Deserialize, Serialize};

/// The health of one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Health {
    /// Whether the allocation counts as healthy: no check has failed
    /// `failure_threshold` times in a row. True until the first check (a start period).
    pub healthy: bool,
    /// `command` or `http`.
    pub check_type: String,
    /// When the last check ran (Unix ms; 0: none yet).
    pub last_check_ms: i64,
    /// What the last check found (`ok`, or why it failed, or why it could not run).
    pub message: String,
    /// Failed checks in a row.
    pub consecutive_failures: u32,
    /// Checks run since the execution started.
    pub checks: u64,
}

/// Payload of [`crate::calls::HealthChanged`]: an allocation turned unhealthy or healthy again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationHealth {
    /// Ensemble id.
    pub ensemble_id: String,
    /// Allocation id.
    pub allocation_id: String,
    /// Its health now.
    pub health: Health,
}
