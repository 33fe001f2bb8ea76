//! The provider's part of ensemble subnets: `/dms/deployment/subnet/create` (only from the
//! orchestrator that allocated here), taking allocations off the subnet when they end, and
//! removing the ensemble's subnet when its last allocation here is gone.

use std::sync::{Arc, Mutex};

use nunet_actor::{ActorError, ErrorKind, Incoming};
use nunet_protocol::call;
use nunet_protocol::calls::SubnetCreate;
use nunet_protocol::{SubnetCreated, SubnetPlan};
use serde_json::Value;

use super::{AllocRecord, Provider, failed};

impl Provider {
    fn orchestrator_of(&self, ensemble: &str) -> Option<String> {
        let map = self.allocs.lock().ok()?;
        map.values()
            .filter_map(|c| c.lock().ok().map(|r| r.clone()))
            .find(|r| r.ensemble_id == ensemble)
            .map(|r| r.orchestrator.id.clone())
    }

    async fn subnet_create(
        &self,
        m: &Incoming,
        plan: SubnetPlan,
    ) -> Result<SubnetCreated, ActorError> {
        match self.orchestrator_of(&plan.ensemble_id) {
            Some(o) if o == m.sender.as_str() => {}
            _ => {
                return Err(ActorError::new(
                    ErrorKind::Denied,
                    "only the orchestrator that allocated this ensemble here may build its subnet",
                ));
            }
        }
        if let Some(why) = self.subnets.disabled_reason() {
            return Ok(SubnetCreated {
                enabled: false,
                reason: Some(why.to_string()),
            });
        }
        let local = self.key.public().peer_id();
        self.subnets.create(plan, local).await.map_err(failed)?;
        Ok(SubnetCreated {
            enabled: true,
            reason: None,
        })
    }

    /// Registers `/dms/deployment/subnet/create` on the root actor.
    pub(super) fn register_subnet(self: &Arc<Self>) -> Result<(), ActorError> {
        call::register::<SubnetCreate, _, _, _>(
            &self.system,
            "root",
            self.clone(),
            |p, m, plan| async move { p.subnet_create(&m, plan).await },
        )
    }

    /// Takes an allocation that ended off its subnet; removes the subnet when nothing of the
    /// ensemble runs here any more.
    pub(super) async fn off_subnet(&self, cell: &Arc<Mutex<AllocRecord>>) {
        let Ok((ensemble, id)) = cell.lock().map(|r| (r.ensemble_id.clone(), r.id.clone())) else {
            return;
        };
        self.subnets.detach(&ensemble, &id).await;
        self.subnet_down_if_gone(&ensemble).await;
    }

    /// Removes the ensemble's subnet when none of its allocations here still runs.
    pub(super) async fn subnet_down_if_gone(&self, ensemble: &str) {
        let alive = self.allocs.lock().is_ok_and(|m| {
            m.values().any(|c| {
                c.lock()
                    .is_ok_and(|r| r.ensemble_id == ensemble && r.holds())
            })
        });
        if !alive {
            self.subnets.destroy(ensemble).await;
        }
    }

    /// After a restart: rebuilds the subnets of ensembles that still run here, cleans the rest
    /// (awaited by the reconciliation, which may then take some of them down).
    pub(super) async fn restore_subnets(&self) {
        let live: Vec<String> = self
            .allocs
            .lock()
            .map(|m| {
                m.values()
                    .filter_map(|c| c.lock().ok().map(|r| r.clone()))
                    .filter(|r| r.holds())
                    .map(|r| r.ensemble_id)
                    .collect()
            })
            .unwrap_or_default();
        // Ensembles this node orchestrates with `subnet.join` and that still run.
        let records = self.records.clone();
        let joined =
            tokio::task::spawn_blocking(move || records.list(nunet_store::Kind::Deployment))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
                .into_iter()
                .filter(|d| d.status == "Running")
                .filter(|d| {
                    serde_json::from_str::<Value>(&d.doc)
                        .is_ok_and(|v| v["ensemble"]["subnet_join"] == true)
                })
                .map(|d| d.id);
        let live: Vec<String> = live.into_iter().chain(joined).collect();
        let local = self.key.public().peer_id();
        self.subnets.restore(&live, local).await;
    }
}
