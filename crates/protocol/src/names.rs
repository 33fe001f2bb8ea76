//! Behaviour names and the gossip topic of the deployment conversation, in one place: the
//! orchestrator, the provider and the CLI take them from here and never re-type them.
//!
//! Per-ensemble behaviours live under `/dms/ensemble/<id>`, the namespace an ensemble's
//! orchestrator is granted on the providers that run its allocations.

/// Gossip topic of bid requests.
pub const DEPLOYMENT_TOPIC: &str = "/nunet/deployment";
/// Provider: answer a bid request (broadcast on [`DEPLOYMENT_TOPIC`]).
pub const BID_REQUEST: &str = "/dms/deployment/request";
/// Provider: answer a bid request sent directly (nodes pinned to that provider).
pub const BID_REQUEST_DIRECT: &str = "/dms/deployment/request/direct";
/// The capability a bid (or a decline) is sent under (NuNet's `/dms/deployment/bid`): the
/// orchestrating node collects only replies whose sender holds a chain for it that its own
/// anchors accept, so a node on the swarm that was granted nothing cannot win work.
pub const BID: &str = "/dms/deployment/bid";
/// Provider: lock resources for an ensemble's allocations (phase 1).
pub const COMMIT: &str = "/dms/deployment/commit";
/// Provider: create the allocation actors (phase 2).
pub const ALLOCATE: &str = "/dms/deployment/allocate";
/// Provider: undo commitments and allocations of an ensemble.
pub const REVERT: &str = "/dms/deployment/revert";
/// Allocation actor: start the execution.
pub const ALLOCATION_START: &str = "/dms/allocation/start";
/// Allocation actor of a completed task: let another node fetch one of its outputs.
pub const ALLOCATION_SHARE_OUTPUT: &str = "/dms/allocation/output/share";
/// Allocation actor: current status.
pub const ALLOCATION_STATUS: &str = "/dms/allocation/status";
/// Allocation actor: output so far.
pub const ALLOCATION_LOGS: &str = "/dms/allocation/logs";
/// Allocation actor: stop the execution and release its resources.
pub const ALLOCATION_SHUTDOWN: &str = "/dms/allocation/shutdown";
/// Allocation actor: stop the execution if it runs and start it again in place.
pub const ALLOCATION_RESTART: &str = "/dms/allocation/restart";

/// Orchestrating node: create a deployment (payload: the ensemble, optional timeout).
pub const DEPLOYMENT_NEW: &str = "/dms/node/deployment/new";
/// Orchestrating node: list its deployments.
pub const DEPLOYMENT_LIST: &str = "/dms/node/deployment/list";
/// Orchestrating node: one deployment's status and events.
pub const DEPLOYMENT_STATUS: &str = "/dms/node/deployment/status";
/// Orchestrating node: one deployment's manifest (which peer runs what).
pub const DEPLOYMENT_MANIFEST: &str = "/dms/node/deployment/manifest";
/// Orchestrating node: one deployment's allocation logs.
pub const DEPLOYMENT_LOGS: &str = "/dms/node/deployment/logs";
/// Orchestrating node: shut a deployment down.
pub const DEPLOYMENT_SHUTDOWN: &str = "/dms/node/deployment/shutdown";
/// Orchestrating node: apply a changed ensemble to a running deployment (live update).
pub const DEPLOYMENT_UPDATE: &str = "/dms/node/deployment/update";

/// Provider: the allocations it holds (for the node's owner).
pub const ALLOCATIONS_LIST: &str = "/dms/node/allocations/list";

/// Provider: create (idempotently) the ensemble's subnet. Our name for NuNet's
/// `/dms/ensemble/<id>/node/subnet/create`: it sits under `/dms/deployment`, which the
/// orchestrator already holds on every provider, and the provider answers only the
/// orchestrator that allocated there.
pub const SUBNET_CREATE: &str = "/dms/deployment/subnet/create";

/// Provider: measure the link to another candidate peer (edge constraints).
pub const EDGE_CONSTRAINT: &str = "/dms/deployment/constraint/edge";

/// `/dms/ensemble/<id>`: the per-ensemble namespace granted to its orchestrator.
pub fn ensemble_namespace(ensemble_id: &str) -> String {
    format!("/dms/ensemble/{ensemble_id}")
}

/// Provider: `/dms/ensemble/<id>/allocation/logs`, payload [`crate::LogsRequest`].
pub fn ensemble_allocation_logs(ensemble_id: &str) -> String {
    format!("{}/allocation/logs", ensemble_namespace(ensemble_id))
}

/// Provider: `/dms/ensemble/<id>/allocation/shutdown`, payload `{allocation}` (name or id;
/// absent = every allocation of the ensemble on that provider).
pub fn ensemble_allocation_shutdown(ensemble_id: &str) -> String {
    format!("{}/allocation/shutdown", ensemble_namespace(ensemble_id))
}

/// Orchestrator actor: a provider reports that an allocation's execution ended, payload
/// [`crate::AllocationExited`]; under the `/dms/ensemble/<id>` capability.
pub fn allocation_exited(ensemble_id: &str) -> String {
    format!("{}/allocation/exited", ensemble_namespace(ensemble_id))
}

/// Orchestrator actor: a restarted provider asks whether an allocation it holds is still
/// wanted. Payload [`crate::AllocationCheck`], answer [`crate::AllocationWanted`].
pub fn allocation_check(ensemble_id: &str) -> String {
    format!("{}/allocation/check", ensemble_namespace(ensemble_id))
}

/// Storage node: create a TLS-only GlusterFS volume for one client certificate.
pub const VOLUME_CREATE: &str = "/dms/volume/create";
/// Storage node: start a volume (idempotent).
pub const VOLUME_START: &str = "/dms/volume/start";
/// Storage node: stop and delete a volume, its brick and its certificates.
pub const VOLUME_DELETE: &str = "/dms/volume/delete";

#[cfg(test)]
mod tests {
    use super::*;
    use nunet_capability::Capability;

    #[test]
    fn ensemble_behaviors_live_under_the_granted_namespace() {
        let ns: Capability = ensemble_namespace("abc").parse().expect("cap");
        for b in [
            ensemble_allocation_logs("abc"),
            ensemble_allocation_shutdown("abc"),
        ] {
            let c: Capability = b.parse().expect("cap");
            assert!(ns.implies(&c), "{b}");
            let other: Capability = ensemble_namespace("abd").parse().expect("cap");
            assert!(!other.implies(&c), "{b}");
        }
    }
}
