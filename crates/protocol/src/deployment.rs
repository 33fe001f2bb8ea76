//! The orchestrating node's deployment behaviours (`/dms/node/deployment/*`): what the CLI
//! and other callers send and get back, the progress events and the manifest (which peer
//! runs what).

use std::collections::BTreeMap;

use nunet_actor::Handle;
use nunet_ensemble::Ensemble;
use serde::{Deserialize, Serialize};

use crate::status::{AllocationStatus, DeploymentStatus};

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
    /// Last known status.
    pub status: AllocationStatus,
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
    /// Its health, when it has a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::Health>,
    /// Times the supervisor restarted it.
    #[serde(default)]
    pub restarts: u32,
    /// The GPUs its provider locked for it (UUIDs or `pci:` addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
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

/// A standby of a node (its `redundancy`): the node's allocations committed and allocated
/// on another provider, under the same allocation ids, and not started. When the node's
/// provider is lost the standby is promoted: it gets the node's subnet addresses and is
/// started, without a bid round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestStandby {
    /// The provider that holds it.
    #[serde(flatten)]
    pub node: ManifestNode,
    /// Allocation name → its (not started) allocation actor there.
    pub allocations: BTreeMap<String, Handle>,
    /// Allocation name → the GPUs it holds there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gpus: BTreeMap<String, Vec<String>>,
    /// When it was allocated (Unix ms).
    pub since_ms: i64,
}

/// Which peer runs what.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Nodes by name.
    pub nodes: BTreeMap<String, ManifestNode>,
    /// Allocations by `<node>.<alloc>`.
    pub allocations: BTreeMap<String, ManifestAllocation>,
    /// Standbys by node name (nodes with `redundancy`), the next to be promoted first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub standbys: BTreeMap<String, Vec<ManifestStandby>>,
}

impl Manifest {
    /// Whether `did` holds a standby of node `node`.
    pub fn is_standby(&self, node: &str, did: &str) -> bool {
        self.standbys
            .get(node)
            .is_some_and(|v| v.iter().any(|s| s.node.did == did))
    }

    /// Every peer that holds a node or a standby of this deployment.
    pub fn peers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .nodes
            .values()
            .map(|n| n.peer.clone())
            .chain(
                self.standbys
                    .values()
                    .flatten()
                    .map(|s| s.node.peer.clone()),
            )
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `new`: deploy an ensemble (the message's expiry is the deadline for Running).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDeployment {
    /// The ensemble, as `nunet validate` decodes it.
    pub ensemble: Ensemble,
    /// Secrets its inputs and outputs name as `credentials` (`nunet deploy --secret`): held
    /// by the orchestrator in memory only, never in its records or logs, and sent to a
    /// provider only with the allocations that name them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: std::collections::BTreeMap<String, nunet_ensemble::data::S3Credentials>,
}

/// Reply of `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDeploymentReply {
    /// Always `OK` (NuNet's answer).
    pub status: String,
    /// The new deployment's id.
    pub ensemble_id: String,
}

/// `update`: apply a changed ensemble to a running deployment (NuNet's
/// `UpdateDeploymentRequest{EnsembleID, Ensemble}`). The message's expiry bounds how long the
/// caller waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateDeployment {
    /// Deployment id or a unique prefix.
    #[serde(alias = "ensemble_id", alias = "EnsembleID")]
    pub id: String,
    /// The whole ensemble as it should run from now on.
    #[serde(alias = "Ensemble")]
    pub ensemble: Ensemble,
}

/// Reply of `update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateDeploymentReply {
    /// Always true (NuNet's `OK`); a refused or failed update is an error reply.
    #[serde(rename = "OK", alias = "ok")]
    pub ok: bool,
    /// What changed.
    pub changes: String,
}

/// Names one deployment (`id`, or NuNet's `ensemble_id`); a unique prefix of at least 6
/// characters is enough.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRef {
    /// Deployment id or prefix.
    #[serde(alias = "ensemble_id")]
    pub id: String,
}

/// `status`: one deployment, with the events after sequence number `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Deployment id or prefix.
    #[serde(alias = "ensemble_id")]
    pub id: String,
    /// Only events with a larger sequence number (0: all kept).
    #[serde(default)]
    pub after: u64,
}

/// What `list`, `status` and `shutdown` say about a deployment (no key, no ensemble).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentSummary {
    /// Deployment (ensemble) id.
    pub id: String,
    /// Status.
    pub status: DeploymentStatus,
    /// The status as NuNet numbers it.
    pub status_code: u8,
    /// Why it failed or ended, when it did.
    pub reason: Option<String>,
    /// Who asked for it (DID).
    pub owner: String,
    /// Unix ms.
    pub created_ms: i64,
    /// Running must be reached by then (Unix ms).
    pub deadline_ms: i64,
    /// Deployment rounds tried.
    pub rounds: u32,
    /// Placed nodes: name → provider peer id.
    pub nodes: BTreeMap<String, String>,
    /// Allocations (`<node>.<alloc>`) → last known status.
    pub allocations: BTreeMap<String, AllocationStatus>,
    /// Standbys (`redundancy`): node name → the peers holding one, next to promote first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub standbys: BTreeMap<String, Vec<String>>,
    /// Features this build did not provide for it.
    pub notes: Vec<String>,
    /// Verified bids per ensemble node in the latest round.
    #[serde(default)]
    pub bids: BTreeMap<String, u32>,
    /// Bids refused for want of a `/dms/deployment/bid` chain, per sender DID.
    #[serde(default)]
    pub refused_bids: BTreeMap<String, u32>,
    /// Progress events (only in `status` replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
}

impl DeploymentSummary {
    /// Whether the CLI may stop waiting: the deployment is over, or Running with a service
    /// among its allocations (services run until shut down).
    pub fn settled(&self, has_service: bool) -> bool {
        self.status.is_terminal() || (self.status == DeploymentStatus::Running && has_service)
    }
}

/// Reply of `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentList {
    /// Every deployment this node orchestrates.
    pub deployments: Vec<DeploymentSummary>,
}

/// Reply of `manifest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestReply {
    /// Deployment id.
    pub id: String,
    /// Its status.
    pub status: DeploymentStatus,
    /// Which peer runs what.
    pub manifest: Manifest,
}
