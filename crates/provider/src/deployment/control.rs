//! Provider-side control of what runs here: the per-ensemble behaviors
//! `/dms/ensemble/<id>/allocation/{logs,logs/follow,shutdown}` (registered on the root actor while the
//! provider holds an allocation of ensemble `<id>`, answering only that ensemble's
//! orchestrator; admission requires the `/dms/ensemble/<id>` capability the orchestrator's
//! node delegates to it), and `/dms/node/allocations/list` for the node's owner.
//! It never creates allocations or touches commitments: that is the deployment path's job.

use std::sync::{Arc, Mutex};

use nunet_actor::{ActorError, ErrorKind, Incoming};
use nunet_protocol::call::{self, Call};
use nunet_protocol::calls::{AllocationsList, EnsembleLogs, EnsembleLogsFollow, EnsembleShutdown};
use nunet_protocol::names::{ensemble_allocation_logs, ensemble_allocation_shutdown};
use nunet_protocol::{
    AllocationInfo, AllocationList, AllocationStatus, ShutdownAllocations, Stopped,
};
use serde::{Deserialize, Serialize};

use super::{AllocRecord, Provider, failed};
use crate::onboarding::now_ms;

/// When an allocation started and ended (Unix ms), kept in its record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Times {
    /// When the provider created it.
    #[serde(default)]
    pub created_ms: Option<i64>,
    /// When its execution started.
    #[serde(default)]
    pub started_ms: Option<i64>,
    /// When it completed, failed or was terminated.
    #[serde(default)]
    pub finished_ms: Option<i64>,
}

/// Records the start / end times implied by the record's status (called on every change).
pub(super) fn stamp(r: &mut AllocRecord) {
    let now = now_ms();
    let t = &mut r.times;
    t.created_ms.get_or_insert(now);
    if r.status == AllocationStatus::Running && t.started_ms.is_none() {
        t.started_ms = Some(now);
    }
    if r.status.is_final() && t.finished_ms.is_none() {
        t.finished_ms = Some(now);
    }
}

fn denied(m: impl Into<String>) -> ActorError {
    ActorError::new(ErrorKind::Denied, m)
}

impl Provider {
    /// The allocations of `ensemble_id` held here.
    fn cells_of(&self, ensemble_id: &str) -> Vec<Arc<Mutex<AllocRecord>>> {
        self.allocs
            .lock()
            .map(|m| {
                m.values()
                    .filter(|c| c.lock().is_ok_and(|r| r.ensemble_id == ensemble_id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Registers the per-ensemble behaviors on the root actor (again after a restart).
    pub(super) fn ensemble_behaviors_up(self: &Arc<Self>, ensemble_id: &str) {
        if self
            .system
            .behaviors("root")
            .contains(&EnsembleLogs::behavior(Some(ensemble_id)))
        {
            return;
        }
        let state = (self.clone(), ensemble_id.to_string());
        let r = [
            call::register_in::<EnsembleLogs, _, _, _>(
                &self.system,
                "root",
                ensemble_id,
                state.clone(),
                |(p, e), m, req| async move { p.ensemble_logs(&e, &m, req).await },
            ),
            call::register_in::<EnsembleLogsFollow, _, _, _>(
                &self.system,
                "root",
                ensemble_id,
                state.clone(),
                |(p, e), m, req| async move { p.follow_ticket(&e, &m, req) },
            ),
            call::register_in::<EnsembleShutdown, _, _, _>(
                &self.system,
                "root",
                ensemble_id,
                state,
                |(p, e), m, req| async move { p.ensemble_shutdown(&e, &m, req).await },
            ),
        ];
        if let Some(Err(e)) = r.into_iter().find(Result::is_err) {
            tracing::warn!(ensemble = %ensemble_id, error = %e.message, "per-ensemble behaviours not registered");
        }
    }

    /// Removes the per-ensemble behaviors once no allocation of the ensemble is left here.
    pub(super) fn ensemble_behaviors_down_if_gone(&self, ensemble_id: &str) {
        if self.cells_of(ensemble_id).is_empty() {
            self.system
                .unregister("root", &ensemble_allocation_logs(ensemble_id));
            self.system
                .unregister("root", &EnsembleLogsFollow::behavior(Some(ensemble_id)));
            self.system
                .unregister("root", &ensemble_allocation_shutdown(ensemble_id));
        }
    }

    /// The ensemble's allocations that `selector` names (name, `<node>.<name>` or id; all of
    /// them when `None`), after checking that `m` comes from the ensemble's orchestrator.
    pub(super) fn select(
        &self,
        ensemble_id: &str,
        selector: Option<&str>,
        m: &Incoming,
    ) -> Result<Vec<Arc<Mutex<AllocRecord>>>, ActorError> {
        let pairs: Vec<(Arc<Mutex<AllocRecord>>, AllocRecord)> = self
            .cells_of(ensemble_id)
            .into_iter()
            .filter_map(|c| {
                let r = c.lock().ok().map(|g| g.clone())?;
                Some((c, r))
            })
            .collect();
        if pairs
            .iter()
            .any(|(_, r)| r.orchestrator.id != m.sender.as_str())
        {
            return Err(denied("only the ensemble's orchestrator may control it"));
        }
        let picked: Vec<Arc<Mutex<AllocRecord>>> = pairs
            .into_iter()
            .filter(|(_, r)| {
                selector.is_none_or(|s| {
                    s == r.id || s == r.name || s == format!("{}.{}", r.node_id, r.name)
                })
            })
            .map(|(c, _)| c)
            .collect();
        match selector {
            Some(s) if picked.is_empty() => Err(failed(format!(
                "no allocation {s} of ensemble {ensemble_id} here"
            ))),
            _ => Ok(picked),
        }
    }

    async fn ensemble_shutdown(
        &self,
        ensemble_id: &str,
        m: &Incoming,
        req: ShutdownAllocations,
    ) -> Result<Stopped, ActorError> {
        let selector = req.allocation.as_deref();
        let mut stopped = Vec::new();
        for cell in self.select(ensemble_id, selector, m)? {
            let Ok(rec) = cell.lock().map(|r| r.clone()) else {
                continue;
            };
            if let Some(exec) = self.executors.get(rec.execution.executor()) {
                self.terminate(&cell, exec).await;
                stopped.push(rec.id);
            }
        }
        Ok(Stopped { ok: true, stopped })
    }

    /// What runs here, oldest first.
    fn allocations_list(&self) -> Result<AllocationList, ActorError> {
        let mut recs: Vec<AllocRecord> = self
            .allocs
            .lock()
            .map_err(|_| failed("poisoned"))?
            .values()
            .filter_map(|c| c.lock().ok().map(|r| r.clone()))
            .collect();
        recs.sort_by(|a, b| {
            (a.times.created_ms, &a.ensemble_id, &a.name).cmp(&(
                b.times.created_ms,
                &b.ensemble_id,
                &b.name,
            ))
        });
        let allocations = recs
            .into_iter()
            .map(|r| AllocationInfo {
                executor: r.execution.executor().to_string(),
                id: r.id,
                ensemble_id: r.ensemble_id,
                node_id: r.node_id,
                name: r.name,
                kind: r.kind,
                status: r.status,
                exit_code: r.exit_code,
                resources: r.resources,
                orchestrator: r.orchestrator.id,
                orchestrator_node: r.orchestrator.did,
                created_ms: r.times.created_ms,
                started_ms: r.times.started_ms,
                finished_ms: r.times.finished_ms,
                health: r.health,
                restarts: r.restarts,
            })
            .collect();
        Ok(AllocationList { allocations })
    }

    /// Registers `/dms/node/allocations/list` on the root actor.
    pub(super) fn register_control(self: &Arc<Self>) -> Result<(), ActorError> {
        call::register::<AllocationsList, _, _, _>(
            &self.system,
            "root",
            self.clone(),
            |p, _m, _req| async move { p.allocations_list() },
        )
    }
}
