//! Supervision of a running deployment (allocation status polling, completion, failure),
//! shutdown and logs (through the providers' `/dms/ensemble/<id>/allocation/*` behaviors).
//! It only sends actor messages; providers own the executions and resources.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::future::join_all;
use nunet_actor::{ActorError, ErrorKind};
use nunet_ensemble::spec::AllocationType;
use nunet_protocol::calls::{
    AllocationLogsCall, AllocationStatusCall, EnsembleLogs, EnsembleShutdown,
};
use nunet_protocol::{
    AllocationLogs, AllocationStatus, Bid, DeploymentStatus, Empty, LogCursor, LogsRequest,
    ManifestAllocation, ShutdownAllocations, log_slice,
};

use crate::engine::{Assignment, Engine, MAX_MISSED_CHECKS};
use crate::now_ms;

/// How long a provider gets to stop an ensemble's allocations (NuNet
/// `AllocationShutdownTimeout` is 15 s per allocation; several may stop in parallel).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a logs request may take.
const LOGS_TIMEOUT: Duration = Duration::from_secs(30);

impl Engine {
    pub(crate) async fn revert_manifest(&self) {
        let Some(rec) = self.record() else { return };
        let assign: Assignment = rec
            .manifest
            .nodes
            .iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    Bid {
                        ensemble_id: rec.id.clone(),
                        node_id: n.clone(),
                        peer: m.peer.clone(),
                        handle: m.handle.clone(),
                        location: Default::default(),
                        free: Default::default(),
                        executors: Vec::new(),
                        used_subnets: Vec::new(),
                        signature: String::new(),
                    },
                )
            })
            .collect();
        self.revert(&assign).await;
    }

    /// Supervises a running deployment until it completes, fails or is shut down.
    pub async fn monitor(&self) {
        let mut missed: HashMap<String, u32> = HashMap::new();
        loop {
            self.next_check(!missed.is_empty()).await; // pushed exits, else the safety-net poll
            let Some(rec) = self.record() else { return };
            if rec.status != DeploymentStatus::Running {
                return;
            }
            let mut changes = Vec::new();
            let mut problem = None;
            for (key, a) in &rec.manifest.allocations {
                let Some(h) = &a.handle else { continue };
                match self
                    .call::<AllocationStatusCall>(h, &Empty {}, Duration::from_secs(5))
                    .await
                {
                    Ok(v) => {
                        missed.remove(key);
                        let (status, code) = (v.status, v.exit_code);
                        if status == AllocationStatus::Failed {
                            problem = Some(format!(
                                "allocation {key} failed: {}",
                                v.reason.as_deref().unwrap_or("no reason given")
                            ));
                        }
                        // Only this orchestrator's shutdown terminates allocations; while
                        // Running, a terminated one was stopped by its provider (e.g. a forced
                        // offboard).
                        if status == AllocationStatus::Terminated {
                            problem = Some(format!(
                                "allocation {key} was terminated by its provider ({})",
                                h.addr.host
                            ));
                        }
                        if status != a.status || code != a.exit_code {
                            changes.push((key.clone(), status, code));
                        }
                    }
                    Err(e) => {
                        let n = missed.entry(key.clone()).or_default();
                        *n += 1;
                        if *n >= MAX_MISSED_CHECKS {
                            problem = Some(format!(
                                "allocation {key} is unreachable ({}): {}",
                                h.addr.host, e.message
                            ));
                        }
                    }
                }
            }
            if !changes.is_empty() {
                self.update(|r| {
                    for (k, s, c) in changes {
                        if let Some(a) = r.manifest.allocations.get_mut(&k) {
                            a.status = s;
                            a.exit_code = c;
                        }
                        r.event(now_ms(), format!("allocation {k}: {s}"));
                    }
                });
            }
            if let Some(p) = problem {
                self.fail(p);
                self.revert_manifest().await;
                return;
            }
            let Some(rec) = self.record() else { return };
            let kinds: HashMap<&str, AllocationType> = rec
                .ensemble
                .allocations
                .iter()
                .map(|a| (a.name.as_str(), a.kind))
                .collect();
            let mut all_done = !rec.manifest.allocations.is_empty();
            for (k, a) in &rec.manifest.allocations {
                let name = k.rsplit('.').next().unwrap_or(k);
                match kinds.get(name) {
                    Some(AllocationType::Task) => {
                        all_done &= a.status == AllocationStatus::Completed;
                    }
                    _ => {
                        all_done = false;
                        if a.status == AllocationStatus::Completed {
                            self.fail(format!("service allocation {k} exited"));
                            self.revert_manifest().await;
                            return;
                        }
                    }
                }
            }
            if all_done {
                self.set_status(DeploymentStatus::Completed, "every task completed");
                return;
            }
        }
    }

    /// Stops every allocation and releases everything on every provider: first through each
    /// provider's `/dms/ensemble/<id>/allocation/shutdown` (every allocation of the ensemble
    /// there), then `/dms/deployment/revert`, which removes the actors, records and
    /// commitments (and also stops anything the first step missed).
    pub async fn shutdown(&self, by: &str) -> Result<(), String> {
        let was = self.status();
        if was.is_terminal()
            && was != DeploymentStatus::Completed
            && was != DeploymentStatus::Failed
        {
            return Ok(());
        }
        self.update(|r| {
            r.status = DeploymentStatus::ShuttingDown;
            r.reason = Some(format!("shut down by {by}"));
            r.event(now_ms(), "shutting down");
        });
        if let Some(rec) = self.record() {
            let all = ShutdownAllocations::default();
            let calls = rec.manifest.nodes.iter().map(|(node, m)| {
                let all = &all;
                async move {
                    let r = self
                        .call_in::<EnsembleShutdown>(&m.handle, all, SHUTDOWN_TIMEOUT)
                        .await;
                    (node, m.peer.clone(), r)
                }
            });
            for (node, peer, r) in join_all(calls).await {
                match r {
                    Ok(v) => self.event(format!(
                        "stopped node {node} on {peer}: {}",
                        v.stopped.len()
                    )),
                    Err(e) => self.event(format!(
                        "shutdown of node {node} on {peer}: {} (revert follows)",
                        e.message
                    )),
                }
            }
        }
        self.revert_manifest().await;
        self.update(|r| {
            for a in r.manifest.allocations.values_mut() {
                a.status = AllocationStatus::Terminated;
            }
            r.event(
                now_ms(),
                "shut down: allocations stopped, resources released",
            );
        });
        Ok(())
    }

    /// Output of the deployment's allocations (all, or the one `only` names: `<node>.<alloc>`,
    /// the allocation name, or its id), by `<node>.<alloc>`. `cursors` maps those keys to the
    /// offsets already seen; each entry returns the new offsets, so a follower never gets the
    /// same bytes twice.
    pub async fn logs(
        &self,
        only: Option<&str>,
        cursors: &BTreeMap<String, LogCursor>,
    ) -> Result<BTreeMap<String, AllocationLogs>, ActorError> {
        let rec = self
            .record()
            .ok_or_else(|| ActorError::failed("record lost"))?;
        let picked: Vec<(&String, &ManifestAllocation)> = rec
            .manifest
            .allocations
            .iter()
            .filter(|(k, a)| {
                only.is_none_or(|o| o == k.as_str() || o == a.id || k.ends_with(&format!(".{o}")))
            })
            .collect();
        if let Some(o) = only
            && picked.is_empty()
        {
            return Err(ActorError::new(
                ErrorKind::NotFound,
                format!("no allocation {o} in deployment {}", rec.id),
            ));
        }
        let calls = picked.into_iter().map(|(k, a)| {
            let c = cursors.get(k).copied().unwrap_or_default();
            let req = LogsRequest {
                allocation: a.id.clone(),
                stdout_offset: c.stdout_offset,
                stderr_offset: c.stderr_offset,
                max_bytes: 0,
            };
            let rec = &rec;
            async move { (k.clone(), self.allocation_logs(rec, a, req).await) }
        });
        Ok(join_all(calls).await.into_iter().collect())
    }

    /// One allocation's output from its provider's per-ensemble behavior, or (a provider
    /// without it) from the allocation actor, cut to the cursor here.
    async fn allocation_logs(
        &self,
        rec: &crate::state::Deployment,
        a: &ManifestAllocation,
        req: LogsRequest,
    ) -> AllocationLogs {
        if let Some(node) = rec.manifest.nodes.get(&a.node_id) {
            match self
                .call_in::<EnsembleLogs>(&node.handle, &req, LOGS_TIMEOUT)
                .await
            {
                Ok(v) => return v,
                Err(e) if e.kind != ErrorKind::NotFound => return AllocationLogs::error(e.message),
                Err(_) => {}
            }
        }
        let Some(h) = &a.handle else {
            return AllocationLogs::error("not allocated");
        };
        match self
            .call::<AllocationLogsCall>(h, &Empty {}, LOGS_TIMEOUT)
            .await
        {
            Ok(v) => {
                let (stdout, so) = log_slice(&v.stdout, req.stdout_offset, 0);
                let (stderr, se) = log_slice(&v.stderr, req.stderr_offset, 0);
                AllocationLogs {
                    status: Some(v.status),
                    stdout,
                    stderr,
                    stdout_offset: so,
                    stderr_offset: se,
                    ..AllocationLogs::default()
                }
            }
            Err(e) => AllocationLogs::error(e.message),
        }
    }
}
