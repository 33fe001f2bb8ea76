//! Pushing an allocation's end (`/dms/ensemble/<id>/allocation/exited`) and health changes
//! (`…/allocation/health`) to its orchestrator,
//! so the orchestrator need not poll to notice it. Best effort: a lost report is caught by
//! the orchestrator's safety-net status poll; this must never block or fail the allocation.

use std::time::Duration;

use nunet_actor::ActorSystem;
use nunet_protocol::call::{self, Call};
use nunet_protocol::calls::{Exited, HealthChanged};
use nunet_protocol::{AllocationExited, AllocationHealth, Health};

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
    push::<Exited>(system, rec, &report).await;
}

/// Tells the allocation's orchestrator that its health changed.
pub(super) async fn report_health(system: &ActorSystem, rec: &AllocRecord, health: Health) {
    let report = AllocationHealth {
        ensemble_id: rec.ensemble_id.clone(),
        allocation_id: rec.id.clone(),
        health,
    };
    push::<HealthChanged>(system, rec, &report).await;
}

/// Sends per-ensemble call `C` to the allocation's orchestrator; a failure is only logged.
async fn push<C: Call>(system: &ActorSystem, rec: &AllocRecord, report: &C::Request) {
    let r = call::invoke_in::<C>(
        system,
        "root",
        rec.orchestrator.clone(),
        &rec.ensemble_id,
        report,
        REPORT_TIMEOUT,
    )
    .await;
    if let Err(e) = r {
        tracing::debug!(allocation = %rec.id, call = C::NAME, error = %e.message,
            "report not delivered; the orchestrator's status poll will notice");
    }
}
