//! Allocation exits pushed by providers: the orchestrator actor's
//! `/dms/ensemble/<id>/allocation/exited` behavior queues each report and wakes the
//! supervisor, which then checks the allocations at once instead of at its next safety-net
//! poll ([`MONITOR_EVERY`]).
//!
//! A report is only a wake-up: the status applied is the one the allocation actor answers,
//! and reports from a sender that does not run the allocation are dropped (see
//! `Engine::take_exits`).
//!
//! Also `/dms/ensemble/<id>/allocation/check` ([`allocation_check`](nunet_protocol::names::allocation_check)), which a restarted
//! provider asks about every allocation it still holds: answered from the record only
//! ([`check_allocation`]), to the provider that runs the allocation per the manifest. It
//! never changes the deployment.

use std::sync::{Arc, Mutex, Weak};

use nunet_actor::{ActorError, ActorSystem, ErrorKind, Incoming};
use nunet_protocol::call;
use nunet_protocol::calls::{Check, Exited, HealthChanged};
use nunet_protocol::{Ack, AllocationCheck, AllocationExited, AllocationHealth, AllocationWanted};
use tokio::sync::Notify;

use crate::engine::{Engine, MONITOR_EVERY, RECHECK_EVERY};
use crate::state::Deployment;

/// Whether `rec` still wants allocation `allocation_id` to run on the provider whose DID is
/// `sender`: the deployment is not over, the manifest places the allocation on that provider,
/// and the allocation has not ended as far as the orchestrator knows. A sender that is not
/// the allocation's provider in the manifest is denied (it learns nothing); an allocation
/// the manifest does not hold (e.g. from an abandoned round) is not wanted.
pub fn check_allocation(
    rec: &Deployment,
    sender: &str,
    allocation_id: &str,
) -> Result<AllocationWanted, ActorError> {
    let Some((key, a)) = rec
        .manifest
        .allocations
        .iter()
        .find(|(_, a)| a.id == allocation_id)
    else {
        return Ok(AllocationWanted::no(format!(
            "deployment {} ({}) holds no allocation {allocation_id}",
            rec.id,
            rec.status.as_str()
        )));
    };
    let provider = rec.manifest.nodes.get(&a.node_id).map(|n| n.did.as_str());
    if provider != Some(sender) && rec.manifest.is_standby(&a.node_id, sender) {
        // A standby: wanted (not started) while the deployment runs.
        if rec.status.is_terminal() {
            return Ok(AllocationWanted::no(format!(
                "deployment {} is {}",
                rec.id,
                rec.status.as_str()
            )));
        }
        return Ok(AllocationWanted::yes());
    }
    if provider != Some(sender) {
        return Err(ActorError::new(
            ErrorKind::Denied,
            "only the provider that runs the allocation may check it",
        ));
    }
    if rec.status.is_terminal() {
        let why = rec.reason.as_deref().unwrap_or("no reason recorded");
        return Ok(AllocationWanted::no(format!(
            "deployment {} is {}: {why}",
            rec.id,
            rec.status.as_str()
        )));
    }
    // A failed allocation its supervisor restarts stays wanted (its provider keeps it).
    let name = key.rsplit('.').next().unwrap_or(key);
    let order = crate::order::start_order(&rec.ensemble).unwrap_or_default();
    let restartable = a.status == nunet_protocol::AllocationStatus::Failed
        && crate::recovery::Supervision::new(&rec.ensemble, &order).supervised(name);
    if a.status.is_final() && !restartable {
        return Ok(AllocationWanted::no(format!(
            "the orchestrator counts {key} as {}",
            a.status
        )));
    }
    Ok(AllocationWanted::yes())
}

/// Most reports queued before the supervisor takes them (a flood is dropped, not stored).
const MAX_QUEUED: usize = 1024;

/// Reports received but not yet applied, and the supervisor's wake-up.
#[derive(Default)]
pub struct ExitInbox {
    queue: Mutex<Vec<(String, AllocationExited)>>,
    /// Signalled on every report (keeps one permit when nobody waits).
    pub(crate) notify: Notify,
}

impl ExitInbox {
    /// Registers the behavior on the orchestrator actor at `inbox`.
    pub(crate) fn register(
        self: &Arc<Self>,
        system: &ActorSystem,
        inbox: &str,
        ensemble_id: &str,
    ) -> Result<(), ActorError> {
        // A health change is only a wake-up too: the supervisor reads the health the
        // allocation actor answers.
        let wake = (self.clone(), ensemble_id.to_string());
        call::register_in::<HealthChanged, _, _, _>(
            system,
            inbox,
            ensemble_id,
            wake,
            |(me, id), _m: Incoming, r: AllocationHealth| async move {
                if r.ensemble_id != id {
                    return Err(ActorError::failed("health report for another ensemble"));
                }
                me.notify.notify_one();
                Ok(Ack { ok: true })
            },
        )?;
        let state = (self.clone(), ensemble_id.to_string());
        call::register_in::<Exited, _, _, _>(
            system,
            inbox,
            ensemble_id,
            state,
            |(me, id), m: Incoming, r: AllocationExited| async move {
                if r.ensemble_id != id {
                    return Err(ActorError::failed("exit report for another ensemble"));
                }
                let mut q = me
                    .queue
                    .lock()
                    .map_err(|_| ActorError::failed("exit queue poisoned"))?;
                if q.len() >= MAX_QUEUED {
                    return Err(ActorError::failed("too many queued exit reports"));
                }
                q.push((m.sender.as_str().to_string(), r));
                drop(q);
                me.notify.notify_one();
                Ok(Ack { ok: true })
            },
        )
    }
}

impl Engine {
    /// Registers `/dms/ensemble/<id>/allocation/check` on the orchestrator actor (the
    /// behavior holds the engine weakly: the registry owns it).
    pub(crate) fn register_check(self: &Arc<Self>) {
        let Some(id) = self.record().map(|r| r.id) else {
            return;
        };
        let me: Weak<Engine> = Arc::downgrade(self);
        let r = call::register_in::<Check, _, _, _>(
            &self.system,
            &self.inbox,
            &id,
            (me, id.clone()),
            |(me, ensemble), m: Incoming, q: AllocationCheck| async move {
                if q.ensemble_id != ensemble {
                    return Err(ActorError::failed("allocation check for another ensemble"));
                }
                let rec = me
                    .upgrade()
                    .and_then(|e| e.record())
                    .ok_or_else(|| ActorError::failed("deployment record gone"))?;
                let answer = check_allocation(&rec, m.sender.as_str(), &q.allocation_id)?;
                tracing::info!(target: "orchestrator", ensemble = %ensemble,
                        allocation = %q.allocation_id, wanted = answer.wanted,
                        "a provider checked an allocation");
                Ok(answer)
            },
        );
        if let Err(e) = r {
            tracing::warn!(target: "orchestrator", id = %id, error = %e.message,
                "no allocation-check behavior; restarted providers will give up on this deployment");
        }
    }

    /// Queued exit reports whose sender is the provider node running the allocation, as
    /// (manifest key, report); others are logged and dropped.
    pub(crate) fn take_exits(&self) -> Vec<(String, AllocationExited)> {
        let queued = self
            .exits
            .queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        let Some(rec) = self.record() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (sender, r) in queued {
            let hit = rec
                .manifest
                .allocations
                .iter()
                .find(|(_, a)| a.id == r.allocation_id);
            let Some((key, a)) = hit else {
                self.event(format!(
                    "exit report for unknown allocation {}",
                    r.allocation_id
                ));
                continue;
            };
            let provider = rec.manifest.nodes.get(&a.node_id).map(|n| n.did.as_str());
            if provider != Some(sender.as_str()) {
                self.event(format!(
                    "exit report for {key} from {sender}, which does not run it: ignored"
                ));
                continue;
            }
            out.push((key.clone(), r));
        }
        out
    }

    /// Waits for the next supervision check: an exit report from a provider, a restart
    /// falling due (`until`), or the safety-net poll ([`RECHECK_EVERY`] while some allocation
    /// missed a check).
    pub(crate) async fn next_check(&self, recheck: bool, until: Option<std::time::Duration>) {
        let wait = if recheck {
            RECHECK_EVERY
        } else {
            MONITOR_EVERY
        };
        let wait = until.map_or(wait, |u| u.min(wait));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.exits.notify.notified() => {
                for (key, r) in self.take_exits() {
                    tracing::debug!(target: "orchestrator", allocation = %key, status = %r.status,
                        "exit reported by the provider");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nunet_actor::Handle;

    use super::*;
    use nunet_protocol::{AllocationStatus, DeploymentStatus, ManifestAllocation, ManifestNode};

    const YAML: &str = "version: V1\nallocations:\n  a:\n    executor: docker\n    type: service\n    resources: {cpu: {cores: 0.1}, ram: {size: 16MiB}, disk: {size: 10MiB}}\n    execution: {type: docker, image: busybox}\nnodes:\n  n:\n    allocations: [a]\n";

    fn deployment(status: DeploymentStatus, alloc_status: AllocationStatus) -> Deployment {
        let ensemble = nunet_ensemble::parse_str(YAML, &Default::default())
            .expect("ensemble")
            .ensemble;
        let node = ManifestNode {
            peer: "peer-p".into(),
            did: "did:key:provider".into(),
            handle: Handle::default(),
            location: String::new(),
        };
        let alloc = ManifestAllocation {
            id: "alloc-1".into(),
            node_id: "n".into(),
            handle: None,
            status: alloc_status,
            exit_code: None,
            ports: BTreeMap::new(),
            ip: None,
            dns: None,
            health: None,
            restarts: 0,
            gpus: Vec::new(),
        };
        let mut manifest = crate::Manifest::default();
        manifest.nodes.insert("n".into(), node);
        manifest.allocations.insert("n.a".into(), alloc);
        Deployment {
            id: "ens-1".into(),
            status,
            reason: Some("allocation n.a is unreachable".into()),
            owner: "did:key:user".into(),
            created_ms: 0,
            deadline_ms: 0,
            ensemble,
            orchestrator: Handle::default(),
            manifest,
            events: Vec::new(),
            rounds: 1,
            notes: Vec::new(),
            bids: BTreeMap::new(),
            refused_bids: BTreeMap::new(),
            subnet: None,
        }
    }

    #[test]
    fn a_running_deployment_wants_its_allocation_from_its_provider_only() {
        let d = deployment(DeploymentStatus::Running, AllocationStatus::Running);
        let ok = check_allocation(&d, "did:key:provider", "alloc-1").expect("answer");
        assert!(ok.wanted && ok.reason.is_none(), "{ok:?}");
        let e = check_allocation(&d, "did:key:someone-else", "alloc-1").expect_err("denied");
        assert_eq!(e.kind, ErrorKind::Denied);
        // Provisioning counts as wanted too (the orchestrator is about to start it).
        let d = deployment(DeploymentStatus::Provisioning, AllocationStatus::Pending);
        assert!(
            check_allocation(&d, "did:key:provider", "alloc-1")
                .expect("answer")
                .wanted
        );
    }

    #[test]
    fn a_standby_is_wanted_while_the_deployment_runs() {
        let mut d = deployment(DeploymentStatus::Running, AllocationStatus::Running);
        d.manifest.standbys.insert(
            "n".into(),
            vec![nunet_protocol::ManifestStandby {
                node: ManifestNode {
                    peer: "peer-s".into(),
                    did: "did:key:standby".into(),
                    handle: Handle::default(),
                    location: String::new(),
                },
                allocations: BTreeMap::new(),
                gpus: BTreeMap::new(),
                since_ms: 0,
            }],
        );
        let ok = check_allocation(&d, "did:key:standby", "alloc-1").expect("answer");
        assert!(ok.wanted, "{ok:?}");
        // Not a standby of another node, and not once the deployment ended.
        let e = check_allocation(&d, "did:key:someone-else", "alloc-1").expect_err("denied");
        assert_eq!(e.kind, ErrorKind::Denied);
        d.status = DeploymentStatus::Failed;
        let no = check_allocation(&d, "did:key:standby", "alloc-1").expect("answer");
        assert!(!no.wanted, "{no:?}");
    }

    #[test]
    fn terminal_deployments_ended_allocations_and_unknown_ids_are_not_wanted() {
        for s in [
            DeploymentStatus::Failed,
            DeploymentStatus::ShuttingDown,
            DeploymentStatus::Completed,
        ] {
            let a = check_allocation(
                &deployment(s, AllocationStatus::Running),
                "did:key:provider",
                "alloc-1",
            )
            .expect("answer");
            assert!(!a.wanted, "{s:?}");
            let why = a.reason.unwrap_or_default();
            assert!(
                why.contains(s.as_str()) && why.contains("unreachable"),
                "{why}"
            );
        }
        for s in [
            AllocationStatus::Failed,
            AllocationStatus::Terminated,
            AllocationStatus::Completed,
        ] {
            let d = deployment(DeploymentStatus::Running, s);
            let a = check_allocation(&d, "did:key:provider", "alloc-1").expect("answer");
            assert!(!a.wanted && a.reason.unwrap_or_default().contains(s.as_str()));
        }
        // Not in the manifest (another round placed it elsewhere, or never): not wanted, and
        // the answer says nothing about who runs what.
        let d = deployment(DeploymentStatus::Running, AllocationStatus::Running);
        let a = check_allocation(&d, "did:key:anyone", "alloc-2").expect("answer");
        assert!(!a.wanted);
        let back: AllocationWanted =
            serde_json::from_value(serde_json::to_value(&a).expect("json")).expect("json");
        assert_eq!(back, a);
    }

    #[test]
    fn the_check_lives_under_the_ensemble_namespace() {
        let ns: nunet_capability::Capability = nunet_protocol::names::ensemble_namespace("abc")
            .parse()
            .expect("cap");
        let c: nunet_capability::Capability = nunet_protocol::names::allocation_check("abc")
            .parse()
            .expect("cap");
        assert!(ns.implies(&c));
    }
}
