//! Supervision of a running deployment (allocation status polling, completion, failure),
//! shutdown and logs (through the providers' `/dms/ensemble/<id>/allocation/*` behaviors).
//! It only sends actor messages; providers own the executions and resources.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::future::join_all;
use nunet_actor::{ActorError, ErrorKind};
use nunet_ensemble::spec::AllocationType;
use nunet_protocol::calls::{
    AllocationLogsCall, AllocationRestart, AllocationStatusCall, EnsembleLogs, EnsembleShutdown,
};
use nunet_protocol::{
    AllocationLogs, AllocationStatus, DeploymentStatus, Empty, LogCursor, LogsRequest,
    ManifestAllocation, ShutdownAllocations, log_slice,
};
use tracing::Instrument;

use crate::engine::{Assignment, Engine, MAX_MISSED_CHECKS, RoundError};
use crate::heartbeat::{HEARTBEAT_EVERY, HEARTBEAT_TIMEOUT, LOST_AFTER};
use crate::now_ms;
use crate::recovery::{Decision, Supervision};
use nunet_ensemble::spec::NodeRecovery;

/// What happens when node `node`'s provider is lost: its `failure_recovery`, except that a
/// node pinned to one peer cannot be moved (redeploy acts as stay_down).
fn node_recovery(e: &nunet_ensemble::Ensemble, node: &str) -> NodeRecovery {
    match e.node(node) {
        Some(n) if n.peer.is_some() && n.failure_recovery == NodeRecovery::Redeploy => {
            NodeRecovery::StayDown
        }
        Some(n) => n.failure_recovery,
        None => NodeRecovery::StayDown,
    }
}

/// Whether a lost provider of node `node` is healed rather than failing the deployment: the
/// node has a `failure_recovery` other than stay_down, or a standby to promote.
fn heals(rec: &crate::state::Deployment, node: &str) -> bool {
    node_recovery(&rec.ensemble, node) != NodeRecovery::StayDown
        || rec
            .manifest
            .standbys
            .get(node)
            .is_some_and(|v| !v.is_empty())
}

/// Whether node `node` is polled on the short heartbeat deadline (see [`heals`]; a node with
/// `redundancy` counts before its standbys are placed).
pub(crate) fn watched(e: &nunet_ensemble::Ensemble, node: &str) -> bool {
    node_recovery(e, node) != NodeRecovery::StayDown || crate::standby::wanted(e).contains_key(node)
}

/// Times `escalation_strategy: redeploy` moves one node to another provider; the next
/// escalation tears the deployment down (a workload that fails everywhere must stop).
pub const MAX_ESCALATIONS: u32 = 1;

/// Whether an escalation from node `node` redeploys it, given how often it was already.
fn escalates_by_redeploy(e: &nunet_ensemble::Ensemble, node: &str, done: u32) -> bool {
    e.escalation_strategy == Some(nunet_ensemble::spec::EscalationStrategy::Redeploy)
        && e.node(node).is_some_and(|n| n.peer.is_none())
        && done < MAX_ESCALATIONS
}

/// What the ensemble's `escalation_strategy` did once supervision gave up, for the reason.
fn escalation_note(rec: &crate::state::Deployment, node: &str) -> String {
    match rec.ensemble.escalation_strategy {
        Some(nunet_ensemble::spec::EscalationStrategy::Redeploy) => {
            if rec.ensemble.node(node).is_some_and(|n| n.peer.is_some()) {
                format!(
                    " (escalation_strategy redeploy cannot move node {node}, pinned to a peer: \
                     torn down)"
                )
            } else {
                format!(
                    " (escalation_strategy redeploy moved node {node} {MAX_ESCALATIONS} time(s) \
                     already: torn down)"
                )
            }
        }
        _ => " (escalation_strategy teardown)".to_string(),
    }
}

/// How long a provider gets to stop an ensemble's allocations (NuNet
/// `AllocationShutdownTimeout` is 15 s per allocation; several may stop in parallel).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a logs request may take.
const LOGS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a status poll may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

impl Engine {
    pub(crate) async fn revert_manifest(&self) {
        let Some(rec) = self.record() else { return };
        let standbys = rec
            .manifest
            .standbys
            .iter()
            .flat_map(|(n, v)| v.iter().map(move |s| (n, &s.node)));
        let assign: Assignment = rec
            .manifest
            .nodes
            .iter()
            .chain(standbys)
            .map(|(n, m)| (n.clone(), crate::engine::bid_of(&rec.id, n, m)))
            .collect();
        self.revert(&assign).await;
    }

    /// Supervises a running deployment until it completes, fails or is shut down: polls
    /// the allocations (woken early by pushed exits and health changes), restarts failed or
    /// unhealthy ones as their supervisor decides ([`crate::recovery`]), and fails the
    /// deployment (reverting it) when nothing restarts them.
    pub async fn monitor(self: &std::sync::Arc<Self>) {
        let Some(rec) = self.record() else { return };
        // What the supervisor derives from the ensemble; derived again after a live update.
        let derive = |e: &nunet_ensemble::Ensemble| {
            let order = crate::order::start_order(e).unwrap_or_default();
            let sup = Supervision::new(e, &order);
            let kinds: HashMap<String, AllocationType> = e
                .allocations
                .iter()
                .map(|a| (a.name.clone(), a.kind))
                .collect();
            let fast = e.nodes.iter().any(|n| watched(e, &n.name));
            (order, sup, kinds, fast)
        };
        let mut ensemble = rec.ensemble.clone();
        let (mut order, mut sup, mut kinds, mut fast) = derive(&ensemble);
        let mut missed: HashMap<String, u32> = HashMap::new();
        tokio::spawn(self.clone().keep_standbys().in_current_span());
        tokio::spawn(self.clone().heartbeat().in_current_span());
        // Nodes with `failure_recovery: restart` whose provider is unreachable, waited for.
        let mut waiting: HashSet<String> = HashSet::new();
        // Escalations that redeployed a node, per node.
        let mut escalated: HashMap<String, u32> = HashMap::new();
        // Failed starts in a row of allocations that waited for other allocations' outputs.
        let mut handoff_failures = 0u32;
        // Restarts decided and not done yet: (due, allocation names, why).
        let mut pending: Vec<(Instant, Vec<String>, String)> = Vec::new();
        loop {
            let until = pending
                .iter()
                .map(|(due, _, _)| due.saturating_duration_since(Instant::now()))
                .chain(fast.then_some(HEARTBEAT_EVERY))
                .min();
            self.next_check(!missed.is_empty(), until).await;
            // A live update or a standby placement changes the deployment's shape: this
            // iteration waits for it and sees the result.
            let _shape = self.changing.lock().await;
            let Some(rec) = self.record() else { return };
            if rec.status != DeploymentStatus::Running {
                return;
            }
            if rec.ensemble != ensemble {
                ensemble = rec.ensemble.clone();
                (order, sup, kinds, fast) = derive(&ensemble);
                missed.clear();
                pending.clear();
                waiting.clear();
            }
            let scheduled: HashSet<String> =
                pending.iter().flat_map(|(_, a, _)| a.clone()).collect();
            let mut changes = Vec::new();
            let mut problem = None;
            let mut failures: Vec<(String, String)> = Vec::new();
            // Every allocation at once; nodes that recover from a lost provider on a short
            // deadline, so that a dead or silent one is noticed within a bounded time.
            // Nodes whose provider missed its heartbeats ([`crate::heartbeat`]) are not
            // polled (that would wait out another deadline): they are lost.
            let mut lost: BTreeMap<String, (String, String)> = BTreeMap::new();
            for (node, peer) in self.heartbeats.lost() {
                let current = rec.manifest.nodes.get(&node).map(|m| m.peer.as_str());
                if current == Some(peer.as_str()) && heals(&rec, &node) {
                    let why =
                        format!("its provider {peer} missed {LOST_AFTER} heartbeats in a row");
                    lost.insert(node, (peer, why));
                }
            }
            let polls = rec.manifest.allocations.iter().filter_map(|(key, a)| {
                if lost.contains_key(&a.node_id) {
                    return None;
                }
                let h = a.handle.as_ref()?;
                let quick = watched(&rec.ensemble, &a.node_id);
                let base = if quick {
                    HEARTBEAT_TIMEOUT
                } else {
                    STATUS_TIMEOUT
                };
                let t = self.paths.timeout(base, &h.addr.host, 2);
                Some(async move {
                    let r = self.call::<AllocationStatusCall>(h, &Empty {}, t).await;
                    (key, a, h, quick, r)
                })
            });
            for (key, a, h, quick, r) in join_all(polls).await {
                let name = key.rsplit('.').next().unwrap_or(key).to_string();
                match r {
                    Ok(v) => {
                        missed.remove(key);
                        if waiting.remove(&a.node_id) {
                            self.event(format!("node {} answers again", a.node_id));
                        }
                        let service = kinds.get(&name) != Some(&AllocationType::Task);
                        let failure = match v.status {
                            AllocationStatus::Failed => Some(format!(
                                "failed: {}",
                                v.reason.as_deref().unwrap_or("no reason given")
                            )),
                            AllocationStatus::Completed if service => {
                                Some("exited (a service must keep running)".to_string())
                            }
                            AllocationStatus::Running => v
                                .health
                                .as_ref()
                                .filter(|h| !h.healthy)
                                .map(|h| format!("unhealthy: {}", h.message)),
                            _ => None,
                        };
                        // Only this orchestrator's shutdown terminates allocations; while
                        // Running, a terminated one was stopped by its provider (e.g. a forced
                        // offboard).
                        if v.status == AllocationStatus::Terminated {
                            problem = Some(format!(
                                "allocation {key} was terminated by its provider ({})",
                                h.addr.host
                            ));
                        }
                        if let Some(f) = failure
                            && !scheduled.contains(&name)
                        {
                            failures.push((name.clone(), format!("allocation {key} {f}")));
                        }
                        if v.status != a.status
                            || v.exit_code != a.exit_code
                            || v.health != a.health
                        {
                            changes.push((key.clone(), v));
                        }
                    }
                    Err(e) => {
                        let n = missed.entry(key.clone()).or_default();
                        *n += 1;
                        let after = if quick { LOST_AFTER } else { MAX_MISSED_CHECKS };
                        if *n >= after {
                            let why = format!(
                                "allocation {key} is unreachable ({}): {}",
                                h.addr.host, e.message
                            );
                            if !heals(&rec, &a.node_id) {
                                problem = Some(why);
                            } else {
                                lost.insert(a.node_id.clone(), (h.addr.host.clone(), why));
                            }
                        }
                    }
                }
            }
            if !changes.is_empty() {
                self.update(|r| {
                    for (k, v) in changes {
                        if let Some(a) = r.manifest.allocations.get_mut(&k) {
                            let status_changed = a.status != v.status;
                            a.status = v.status;
                            a.exit_code = v.exit_code;
                            a.health = v.health;
                            if status_changed {
                                // A completed task's reason says what it left (published outputs).
                                let why = v.reason.map(|w| format!(" ({w})")).unwrap_or_default();
                                r.event(now_ms(), format!("allocation {k}: {}{why}", v.status));
                            }
                        }
                    }
                });
            }
            if problem.is_none() && !lost.is_empty() {
                let mut replaced = false;
                for (node, (peer, why)) in &lost {
                    let recovery = node_recovery(&rec.ensemble, node);
                    for (k, a) in &rec.manifest.allocations {
                        if &a.node_id == node {
                            missed.remove(k);
                        }
                    }
                    let standby = rec
                        .manifest
                        .standbys
                        .get(node)
                        .is_some_and(|v| !v.is_empty());
                    if recovery == NodeRecovery::Restart && !standby {
                        if waiting.insert(node.clone()) {
                            self.event(format!(
                                "node {node}: {why}; waiting for its provider to come back \
                                 (failure_recovery restart)"
                            ));
                        }
                        continue;
                    }
                    if standby {
                        self.event(format!(
                            "node {node}: {why}; promoting its standby (redundancy)"
                        ));
                    } else {
                        self.event(format!(
                            "node {node}: {why}; redeploying it (failure_recovery redeploy)"
                        ));
                    }
                    let redeploy = recovery == NodeRecovery::Redeploy;
                    match self.replace_node(node, peer, redeploy).await {
                        Ok(()) => replaced = true,
                        Err(e) if recovery == NodeRecovery::Restart => {
                            waiting.insert(node.clone());
                            self.event(format!(
                                "{e}; waiting for the provider of node {node} to come back \
                                 (failure_recovery restart)"
                            ));
                        }
                        Err(e) => {
                            problem = Some(format!("node {node} was lost and {e}"));
                            break;
                        }
                    }
                }
                if replaced && problem.is_none() {
                    continue; // the manifest changed: look again
                }
            }
            let mut escalate: Option<(String, String)> = None;
            if problem.is_none() {
                for (name, what) in failures {
                    if pending.iter().any(|(_, a, _)| a.contains(&name)) {
                        continue;
                    }
                    let node = rec
                        .ensemble
                        .node_of(&name)
                        .map(|n| n.name.clone())
                        .unwrap_or_default();
                    match sup.on_failure(&name, Instant::now()) {
                        Decision::Restart {
                            allocations,
                            delay,
                            why,
                        } => {
                            self.event(format!(
                                "{what}; restarting {} in {:.1}s ({why})",
                                allocations.join(", "),
                                delay.as_secs_f64()
                            ));
                            pending.push((Instant::now() + delay, allocations, why));
                        }
                        Decision::GiveUp(why)
                            if sup.supervised(&name)
                                && escalates_by_redeploy(
                                    &rec.ensemble,
                                    &node,
                                    escalated.get(&node).copied().unwrap_or(0),
                                ) =>
                        {
                            escalate = Some((node, format!("{what}; {why}")));
                            break;
                        }
                        Decision::GiveUp(why) if sup.supervised(&name) => {
                            problem =
                                Some(format!("{what}; {why}{}", escalation_note(&rec, &node)));
                            break;
                        }
                        Decision::GiveUp(_) => {
                            problem = Some(what);
                            break;
                        }
                    }
                }
            }
            if let (None, Some((node, why))) = (&problem, escalate) {
                let peer = rec
                    .manifest
                    .nodes
                    .get(&node)
                    .map(|n| n.peer.clone())
                    .unwrap_or_default();
                self.event(format!(
                    "{why}; escalating (escalation_strategy redeploy): redeploying node {node} \
                     away from {peer}"
                ));
                match self.replace_node(&node, &peer, true).await {
                    Ok(()) => {
                        *escalated.entry(node).or_default() += 1;
                        // A fresh start on the new provider: restart limits count anew.
                        sup = Supervision::new(&rec.ensemble, &order);
                        pending.clear();
                        continue;
                    }
                    Err(e) => problem = Some(format!("{why}; escalation failed: {e}")),
                }
            }
            if let Some(p) = problem {
                self.fail(p);
                self.revert_manifest().await;
                return;
            }
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|(at, _, _)| *at <= now);
            pending = later;
            for (_, allocations, why) in due {
                self.restart_in_place(&allocations, &why).await;
            }
            let Some(rec) = self.record() else { return };
            // Allocations that waited for other allocations' outputs start once those completed.
            if crate::handoff::someone_ready(&rec) {
                match self.start_in_order(None).await {
                    Ok(()) => handoff_failures = 0,
                    Err(RoundError::Retry(why, _) | RoundError::Fatal(why)) => {
                        handoff_failures += 1;
                        let what = format!(
                            "starting an allocation that waited for other allocations' outputs: {why}"
                        );
                        // A fetch cut off resumes where it stopped on the next try.
                        if handoff_failures >= crate::handoff::START_TRIES {
                            self.fail(what);
                            self.revert_manifest().await;
                            return;
                        }
                        self.event(format!(
                            "{what} (try {handoff_failures} of {}; trying again)",
                            crate::handoff::START_TRIES
                        ));
                    }
                }
                continue;
            }
            let all_done = !rec.manifest.allocations.is_empty()
                && rec.manifest.allocations.keys().all(|k| {
                    let name = k.rsplit('.').next().unwrap_or(k);
                    kinds.get(name) == Some(&AllocationType::Task)
                        && rec.manifest.allocations[k].status == AllocationStatus::Completed
                });
            if all_done && pending.is_empty() {
                self.release_standbys().await;
                self.set_status(DeploymentStatus::Completed, "every task completed");
                return;
            }
        }
    }

    /// Moves node `node` off provider `peer`: promotes a standby when it has one, else (or
    /// when none took over, if `redeploy`) runs a bid round for it ([`Engine::redeploy_node`]).
    async fn replace_node(
        self: &std::sync::Arc<Self>,
        node: &str,
        peer: &str,
        redeploy: bool,
    ) -> Result<(), String> {
        let span = tracing::info_span!("heal", node, lost_peer = peer, action = "replace");
        self.replace_node_now(node, peer, redeploy)
            .instrument(span)
            .await
    }

    async fn replace_node_now(
        self: &std::sync::Arc<Self>,
        node: &str,
        peer: &str,
        redeploy: bool,
    ) -> Result<(), String> {
        let standby = self
            .record()
            .is_some_and(|r| r.manifest.standbys.get(node).is_some_and(|v| !v.is_empty()));
        if standby {
            match self.promote(node, peer).await {
                Ok(_) => return Ok(()),
                Err(e) if !redeploy => return Err(e),
                Err(e) => self.event(format!("{e}; redeploying node {node} instead")),
            }
        } else if !redeploy {
            return Err(format!("node {node} has no standby to promote"));
        }
        self.redeploy_node(node, peer).await
    }

    /// Restarts `allocations` (names, start order) on their providers, keeping their
    /// resources, addresses and names; a restart that fails shows as a failure at the next
    /// check.
    async fn restart_in_place(&self, allocations: &[String], why: &str) {
        let span = tracing::info_span!("heal", action = "restart", reason = why);
        self.restart_in_place_now(allocations, why)
            .instrument(span)
            .await;
    }

    async fn restart_in_place_now(&self, allocations: &[String], why: &str) {
        let Some(rec) = self.record() else { return };
        for name in allocations {
            let Some((key, a)) = rec
                .manifest
                .allocations
                .iter()
                .find(|(k, _)| k.rsplit('.').next() == Some(name.as_str()))
            else {
                continue;
            };
            let Some(h) = &a.handle else { continue };
            // Not started yet (it waits for other allocations' outputs): the start round
            // owns it, and a restart would start it without them.
            if a.status == AllocationStatus::Pending {
                continue;
            }
            match self
                .call::<AllocationRestart>(h, &Empty {}, crate::engine::START_TIMEOUT)
                .await
            {
                Ok(v) => self.update(|r| {
                    if let Some(a) = r.manifest.allocations.get_mut(key) {
                        a.status = v.status;
                        a.exit_code = None;
                        a.health = v.health;
                        a.restarts = a.restarts.saturating_add(1);
                    }
                    r.event(now_ms(), format!("restarted {key} in place ({why})"));
                }),
                Err(e) => self.event(format!("restart of {key} failed: {}", e.message)),
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
        let picked = crate::follow::pick(&rec.manifest.allocations, only);
        if let Some(o) = only
            && picked.is_empty()
        {
            return Err(ActorError::new(
                ErrorKind::NotFound,
                format!("no allocation {o} in deployment {}", rec.id),
            ));
        }
        let calls = picked.into_iter().map(|(k, a)| {
            let c = cursors.get(k).cloned().unwrap_or_default();
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
