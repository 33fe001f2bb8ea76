//! Pushing an allocation's end (`/dms/ensemble/<id>/allocation/exited`) and health changes
//! (`…/allocation/health`) to its orchestrator,
//! so the orchestrator need not poll to notice it. Best effort: a lost report is caught by
//! the orchestrator's safety-net status poll; this must never block or fail the allocation.

use std::time::Duration;

use nunet_actor::ActorSystem;
use nunet_network::Paths;
use nunet_protocol::call::{self, Call};
use nunet_protocol::calls::{Exited, HealthChanged};
use nunet_protocol::{AllocationExited, AllocationHealth, Health};

use super::AllocRecord;

/// How long one report may take on the provider's side of the call; the path to the
/// orchestrator adds its measured round trips ([`Paths`]).
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Round trips a report makes: the request and its answer, plus one for a retransmission.
const REPORT_TRIPS: u32 = 2;

/// Sends reports to allocations' orchestrators. Cheap to clone.
#[derive(Clone)]
pub(super) struct Reports {
    system: ActorSystem,
    paths: Paths,
}

impl Reports {
    pub(super) fn new(system: ActorSystem, paths: Paths) -> Self {
        Self { system, paths }
    }

    /// Tells the allocation's orchestrator how its execution ended (sent by the node's root
    /// actor, under the node's `/dms/ensemble/<id>` capability).
    pub(super) async fn exit(&self, rec: &AllocRecord) {
        let report = AllocationExited {
            ensemble_id: rec.ensemble_id.clone(),
            allocation_id: rec.id.clone(),
            status: rec.status,
            exit_code: rec.exit_code,
            reason: rec.reason.clone(),
        };
        self.push::<Exited>(rec, &report).await;
    }

    /// Tells the allocation's orchestrator that its health changed.
    pub(super) async fn health(&self, rec: &AllocRecord, health: Health) {
        let report = AllocationHealth {
            ensemble_id: rec.ensemble_id.clone(),
            allocation_id: rec.id.clone(),
            health,
        };
        self.push::<HealthChanged>(rec, &report).await;
    }

    /// How long a call to `rec`'s orchestrator may take: `base`, plus two round trips of the
    /// measured path to the orchestrator's host.
    pub(super) fn timeout(&self, base: Duration, rec: &AllocRecord) -> Duration {
        self.paths
            .timeout(base, &rec.orchestrator.addr.host, REPORT_TRIPS)
    }

    /// Sends per-ensemble call `C` to the allocation's orchestrator; a failure is only logged.
    async fn push<C: Call>(&self, rec: &AllocRecord, report: &C::Request) {
        let r = call::invoke_in::<C>(
            &self.system,
            "root",
            rec.orchestrator.clone(),
            &rec.ensemble_id,
            report,
            self.timeout(REPORT_TIMEOUT, rec),
        )
        .await;
        if let Err(e) = r {
            tracing::debug!(allocation = %rec.id, call = C::NAME, error = %e.message,
                "report not delivered; the orchestrator's status poll will notice");
        }
    }
}
