//! What providers answer: to the two-phase commit, to calls on an allocation actor, to the
//! per-ensemble control behaviours, and to their owner's allocation list.

use std::collections::BTreeMap;

use nunet_actor::Handle;
use nunet_ensemble::Resources;
use nunet_ensemble::spec::AllocationType;
use serde::{Deserialize, Serialize};

use crate::status::AllocationStatus;

/// A request without fields (`{}`; an empty payload decodes too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Reply of [`crate::names::COMMIT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// Always true.
    pub ok: bool,
    /// Allocation ids whose resources are now locked.
    pub committed: Vec<String>,
}

/// Reply of [`crate::names::ALLOCATE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocated {
    /// Always true.
    pub ok: bool,
    /// Allocation name → its actor on the provider.
    pub allocations: BTreeMap<String, Handle>,
    /// Allocation name → the GPUs (UUIDs or `pci:` addresses) its commitment locked, for
    /// allocations that have any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gpus: BTreeMap<String, Vec<String>>,
}

/// Reply of [`crate::names::REVERT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reverted {
    /// Always true.
    pub ok: bool,
    /// Allocation ids stopped and forgotten.
    pub stopped: Vec<String>,
    /// How many commitments were released.
    pub released_commitments: usize,
}

/// An allocation actor's state (reply of start, status and shutdown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationState {
    /// Status.
    pub status: AllocationStatus,
    /// Exit code, when it ended with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its health, when it has a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::Health>,
    /// Times its execution was restarted in place.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl AllocationState {
    /// Just a status.
    pub fn of(status: AllocationStatus) -> Self {
        Self {
            status,
            exit_code: None,
            reason: None,
            health: None,
            restarts: 0,
        }
    }
}

/// An allocation actor's whole output so far (reply of [`crate::names::ALLOCATION_LOGS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationOutput {
    /// Status.
    pub status: AllocationStatus,
    /// Everything written to stdout.
    #[serde(default)]
    pub stdout: String,
    /// Everything written to stderr.
    #[serde(default)]
    pub stderr: String,
}

/// Payload of the per-ensemble shutdown: one allocation (name, `<node>.<name>` or id), or
/// every allocation of the ensemble on the provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownAllocations {
    /// The allocation; absent: all.
    #[serde(default)]
    pub allocation: Option<String>,
}

/// Reply of the per-ensemble shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    /// Always true.
    pub ok: bool,
    /// Allocation ids stopped.
    pub stopped: Vec<String>,
}

/// One allocation in [`crate::names::ALLOCATIONS_LIST`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationInfo {
    /// Allocation id.
    pub id: String,
    /// Ensemble id.
    pub ensemble_id: String,
    /// Ensemble node it belongs to.
    pub node_id: String,
    /// Allocation name.
    pub name: String,
    /// Task or service.
    pub kind: AllocationType,
    /// Executor (`docker`, `firecracker`, `wasm`, …).
    pub executor: String,
    /// Status.
    pub status: AllocationStatus,
    /// Exit code, when it ended with one.
    pub exit_code: Option<i64>,
    /// Resources it holds.
    pub resources: Resources,
    /// The orchestrator actor's DID.
    pub orchestrator: String,
    /// The orchestrating node's DID.
    pub orchestrator_node: String,
    /// When the provider created it (Unix ms).
    pub created_ms: Option<i64>,
    /// When its execution started.
    pub started_ms: Option<i64>,
    /// When it ended.
    pub finished_ms: Option<i64>,
    /// Its health, when it has a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::Health>,
    /// Times it was restarted in place.
    #[serde(default)]
    pub restarts: u32,
}

/// Reply of [`crate::names::ALLOCATIONS_LIST`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationList {
    /// Oldest first.
    pub allocations: Vec<AllocationInfo>,
}
