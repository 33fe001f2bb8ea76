//! Allocation exits pushed by providers: the orchestrator actor's
//! `/dms/ensemble/<id>/allocation/exited` behavior queues each report and wakes the
//! supervisor, which then checks the allocations at once instead of at its next safety-net
//! poll ([`MONITOR_EVERY`]).
//!
//! A report is only a wake-up: the status applied is the one the allocation actor answers,
//! and reports from a sender that does not run the allocation are dropped (see
//! [`Engine::take_exits`]).

use std::sync::{Arc, Mutex};

use nunet_actor::{ActorError, ActorSystem, Behavior, Incoming};
use serde_json::json;
use tokio::sync::Notify;

use crate::engine::{Engine, MONITOR_EVERY, RECHECK_EVERY};
use crate::protocol::{AllocationExited, allocation_exited};

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
        let me = self.clone();
        let id = ensemble_id.to_string();
        system.register(
            inbox,
            &allocation_exited(ensemble_id),
            Behavior::direct(move |m: Incoming| {
                let (me, id) = (me.clone(), id.clone());
                async move {
                    let r: AllocationExited = serde_json::from_value(m.payload.clone())
                        .map_err(|e| ActorError::failed(format!("bad exit report: {e}")))?;
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
                    Ok(json!({"ok": true}))
                }
            }),
        )
    }
}

impl Engine {
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

    /// Waits for the next supervision check: an exit report from a provider, or the
    /// safety-net poll ([`RECHECK_EVERY`] while some allocation missed a check).
    pub(crate) async fn next_check(&self, recheck: bool) {
        let wait = if recheck {
            RECHECK_EVERY
        } else {
            MONITOR_EVERY
        };
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
