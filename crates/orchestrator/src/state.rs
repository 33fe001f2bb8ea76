//! The deployment state machine (NUNET-FORMATS §2.3) and the record the orchestrator keeps
//! and persists: status, reason, progress events and the manifest.

use std::collections::BTreeMap;

use nunet_actor::Handle;
use nunet_ensemble::Ensemble;
use serde::{Deserialize, Serialize};

/// `DeploymentStatus`, with NuNet's numbering. The retry loop goes back to `Preparing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Whether nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Failed | Self::Completed | Self::ShuttingDown)
    }

    /// The name, as shown by the CLI.
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

/// A progress event (shown live by `nunet deploy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number from 1.
    pub seq: u64,
    /// Unix ms.
    pub at_ms: i64,
    /// The status when it happened.
    pub phase: DeploymentStatus,
    /// What happened.
    pub message: String,
}

/// One allocation in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestAllocation {
    /// Allocation id.
    pub id: String,
    /// Node that runs it.
    pub node_id: String,
    /// Its actor on the provider.
    pub handle: Option<Handle>,
    /// Last known status (`pending`, `running`, `completed`, `failed`, `terminated`).
    pub status: String,
    /// Exit code when it ended.
    pub exit_code: Option<i64>,
    /// Host port → allocation port.
    pub ports: BTreeMap<u16, u16>,
    /// Address in the ensemble's subnet, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `<dns_name>.internal`, when it is on the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
}

/// One node in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestNode {
    /// Provider peer id.
    pub peer: String,
    /// Provider DID.
    pub did: String,
    /// Provider root handle.
    pub handle: Handle,
    /// Provider location.
    pub location: String,
}

/// Which peer runs what.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Nodes by name.
    pub nodes: BTreeMap<String, ManifestNode>,
    /// Allocations by `<node>.<alloc>`.
    pub allocations: BTreeMap<String, ManifestAllocation>,
}

/// Everything the orchestrator knows about one deployment; persisted on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Ensemble id.
    pub id: String,
    /// Status.
    pub status: DeploymentStatus,
    /// Why it failed or ended, when it did.
    pub reason: Option<String>,
    /// Who asked for it (DID).
    pub owner: String,
    /// Unix ms.
    pub created_ms: i64,
    /// The `new` message's expiry (Unix ms): Running must be reached by then.
    pub deadline_ms: i64,
    /// The ensemble.
    pub ensemble: Ensemble,
    /// The orchestrator actor.
    pub orchestrator: Handle,
    /// Placement and allocations.
    pub manifest: Manifest,
    /// Progress, oldest first (bounded).
    pub events: Vec<Event>,
    /// Deployment rounds tried (bidding → commit → allocate).
    pub rounds: u32,
    /// A note about features this build does not provide (e.g. the subnet).
    pub notes: Vec<String>,
    /// Verified bids per ensemble node in the latest bid round (shown by `nunet deploy`).
    #[serde(default)]
    pub bids: BTreeMap<String, u32>,
    /// Bids refused because their sender held no chain for `/dms/deployment/bid` that this
    /// node's anchors accept, per sender DID, over all rounds.
    #[serde(default)]
    pub refused_bids: BTreeMap<String, u32>,
}

/// Most events kept per deployment.
pub const MAX_EVENTS: usize = 500;

impl Deployment {
    /// Appends a progress event.
    pub fn event(&mut self, now_ms: i64, message: impl Into<String>) {
        let seq = self.events.last().map_or(1, |e| e.seq + 1);
        self.events.push(Event {
            seq,
            at_ms: now_ms,
            phase: self.status,
            message: message.into(),
        });
        if self.events.len() > MAX_EVENTS {
            let drop = self.events.len() - MAX_EVENTS;
            self.events.drain(..drop);
        }
    }

    /// Records the latest bid round: every ensemble node with the number of verified bids
    /// for it (0 when none came).
    pub fn set_bids<'a>(&mut self, bid_nodes: impl IntoIterator<Item = &'a str>) {
        let mut counts: BTreeMap<String, u32> = self
            .ensemble
            .nodes
            .iter()
            .map(|n| (n.name.clone(), 0))
            .collect();
        for n in bid_nodes {
            *counts.entry(n.to_string()).or_default() += 1;
        }
        self.bids = counts;
    }

    /// The summary shown by `list` and `status` (no key, no ensemble).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "status": self.status.as_str(),
            "status_code": self.status as u8,
            "reason": self.reason,
            "owner": self.owner,
            "created_ms": self.created_ms,
            "deadline_ms": self.deadline_ms,
            "rounds": self.rounds,
            "nodes": self.manifest.nodes.iter().map(|(n, m)| (n.clone(), m.peer.clone())).collect::<BTreeMap<_, _>>(),
            "allocations": self.manifest.allocations.iter().map(|(n, a)| (n.clone(), a.status.clone())).collect::<BTreeMap<_, _>>(),
            "notes": self.notes,
            "bids": self.bids,
            "refused_bids": self.refused_bids,
        })
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
}
