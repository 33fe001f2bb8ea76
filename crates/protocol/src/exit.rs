//! What a provider tells the orchestrator about an allocation on its own initiative: that its
//! execution ended, and (after a restart) whether it is still wanted.

use serde::{Deserialize, Serialize};

use crate::status::AllocationStatus;

/// Payload of [`crate::names::allocation_exited`]: how the execution ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationExited {
    /// Ensemble id.
    pub ensemble_id: String,
    /// Allocation id (see [`crate::allocation_id`]).
    pub allocation_id: String,
    /// `completed` or `failed`.
    pub status: AllocationStatus,
    /// Exit code, when there was one.
    pub exit_code: Option<i64>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// Payload of [`crate::names::allocation_check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationCheck {
    /// Ensemble id.
    pub ensemble_id: String,
    /// Allocation id (see [`crate::allocation_id`]).
    pub allocation_id: String,
}

/// Answer of [`crate::names::allocation_check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationWanted {
    /// Whether the provider should keep running it.
    pub wanted: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AllocationWanted {
    /// Not wanted, because of `reason`.
    pub fn no(reason: impl Into<String>) -> Self {
        Self {
            wanted: false,
            reason: Some(reason.into()),
        }
    }

    /// Wanted.
    pub fn yes() -> Self {
        Self {
            wanted: true,
            reason: None,
        }
    }
}

/// Reply of [`crate::names::allocation_exited`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Always true: received.
    pub ok: bool,
}
