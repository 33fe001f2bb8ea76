//! Deployments of ensembles (NUNET-FORMATS §2): the orchestrator actor that a node creates for
//! `/dms/node/deployment/new`, which asks providers for bids on `/nunet/deployment`, verifies
//! the signed bids, places nodes with `nunet-placement`, locks resources with a two-phase
//! commit (reverting everything and retrying without the failed peer on any failure),
//! allocates and starts the allocations in `depends_on` order, and supervises them until the
//! ensemble completes, fails, or is shut down. Also the wire formats providers answer.
//!
//! The provider side (bidding, commitments, executions) lives in the node, which owns the
//! resources and executors; this crate does no IO other than actor messages, and persists
//! through a callback the node supplies.

/// Direct bid requests to pinned peers and the per-node bid cap.
pub mod bids;
/// Node-side control behaviors and the deployment registry.
pub mod control;
pub mod decline;
/// Placement with edge constraints measured on real links.
pub mod edges;
/// The orchestrator's rounds and supervision.
pub mod engine;
/// Allocation exits pushed by providers.
pub mod exits;
/// The order allocations start in (`depends_on`).
pub mod order;
/// Behavior names and payloads between orchestrators and providers.
pub mod protocol;
/// Ports and provision scripts of an allocation.
pub mod provision;
/// Deployment status, record and manifest.
pub mod state;
/// The ensemble subnet plan: network, addresses, routes, DNS records, port forwards.
pub mod subnet;
/// Supervision, shutdown and logs of a deployment.
pub mod supervise;

use std::sync::Arc;

pub use control::Deployments;
pub use state::{Deployment, DeploymentStatus, Manifest};

/// Called with the record after every change, to persist it.
pub type PersistFn = Arc<dyn Fn(&Deployment) + Send + Sync>;

/// Current time, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
