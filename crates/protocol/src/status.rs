//! The statuses both sides report, each an enum with one serialised spelling: a deployment's
//! (NuNet's `DeploymentStatus` names and numbers) and an allocation's (lower case, as
//! providers have always written them into their records and replies).

use std::fmt;

use serde::{Deserialize, Serialize};

/// `DeploymentStatus`, with NuNet's numbering. The retry loop goes back to `Preparing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeploymentStatus {
    /// Collecting bids and placing.
    Preparing = 0,
    /// Locking resources on the chosen providers (phase 1).
    Committing = 2,
    /// Creating and starting allocations (phase 2 and start).
    Provisioning = 3,
    /// Every allocation started.
    Running = 4,
    /// Gave up (deadline, allocation failure); see the reason.
    Failed = 5,
    /// Shut down on request: allocations stopped, resources released.
    ShuttingDown = 6,
    /// Every task allocation finished successfully.
    Completed = 7,
}

impl DeploymentStatus {
    /// Every status, in NuNet's order.
    pub const ALL: [Self; 7] = [
        Self::Preparing,
        Self::Committing,
        Self::Provisioning,
        Self::Running,
        Self::Failed,
        Self::ShuttingDown,
        Self::Completed,
    ];

    /// Whether nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Failed | Self::Completed | Self::ShuttingDown)
    }

    /// The name, as serialised and shown by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "Preparing",
            Self::Committing => "Committing",
            Self::Provisioning => "Provisioning",
            Self::Running => "Running",
            Self::Failed => "Failed",
            Self::ShuttingDown => "ShuttingDown",
            Self::Completed => "Completed",
        }
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one allocation is on its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocationStatus {
    /// Allocated, not started yet.
    #[default]
    Pending,
    /// Its execution runs.
    Running,
    /// Its execution ended with exit code 0.
    Completed,
    /// Its execution failed (non-zero exit, start error, lost on a restart).
    Failed,
    /// Stopped on request.
    Terminated,
}

impl AllocationStatus {
    /// Every status.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Terminated,
    ];

    /// Whether it runs no more (completed, failed or terminated).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Terminated)
    }

    /// Whether it holds resources for a workload that runs or is about to (pending, running).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }

    /// The name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Terminated => "terminated",
        }
    }
}

impl fmt::Display for AllocationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_follow_nunet_and_terminal_states() {
        assert_eq!(DeploymentStatus::Running as u8, 4);
        assert_eq!(DeploymentStatus::Completed as u8, 7);
        assert!(DeploymentStatus::ShuttingDown.is_terminal());
        assert!(!DeploymentStatus::Provisioning.is_terminal());
        let j = serde_json::to_string(&DeploymentStatus::Failed).expect("json");
        assert_eq!(j, "\"Failed\"");
    }

    #[test]
    fn allocation_statuses_have_one_spelling() {
        for s in [
            AllocationStatus::Pending,
            AllocationStatus::Running,
            AllocationStatus::Completed,
            AllocationStatus::Failed,
            AllocationStatus::Terminated,
        ] {
            let j = serde_json::to_string(&s).expect("json");
            assert_eq!(j, format!("\"{}\"", s.as_str()));
            assert_eq!(
                serde_json::from_str::<AllocationStatus>(&j).expect("back"),
                s
            );
            assert_eq!(s.is_final(), !s.is_active());
        }
        assert!(serde_json::from_str::<AllocationStatus>("\"Running\"").is_err());
    }
}
