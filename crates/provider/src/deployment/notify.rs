//! Pushing an allocation's end to its orchestrator (`/dms/ensemble/<id>/allocation/exited`),
//! so the orchestrator need not poll to notice it. Best effort: a lost report is caught by
//! the orchestrator's safety-net status poll; this must never block or fail the allocation.

use std::time::Duration;

use nunet_actor::ActorSystem;
use nunet_protocol::AllocationExited;
use nunet_protocol::call;
use nunet_protocol::calls::Exited;

use super::AllocRecord;

/// How long one report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells the allocation's orchestrator how its execution ended (sent by the node's root
/// actor, under the node's `/dms/ensemble/<id>` capability).
pub(super) async fn report_exit(system: &ActorSystem, rec: &AllocRecord) {
    let report = AllocationExited {
        ensemble_id: rec.ensemble_id.clone(),
        allocation_id: rec.id.clone(),
        status: rec.status,
        exit_code: rec.exit_code,
        reason: rec.reason.clone(),
    };
    let r = call::invoke_in::<Exited>(
        system,
        "root",
        rec.orchestrator.clone(),
        &rec.ensemble_id,
        &report,
        REPORT_TIMEOUT,
    )
    .await;
    if let Err(e) = r {
        tracing::debug!(allocation = %rec.id, error = %e.message,
            "exit report not delivered; the orchestrator's status poll will notice");
    }
}
