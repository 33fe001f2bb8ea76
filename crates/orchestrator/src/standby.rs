//! Standbys (node `redundancy: N`): N copies of a node committed and allocated on other
//! providers, under the node's own allocation ids, and not started. They hold their
//! resources (the price of a promotion without a bid round) and are shown in the manifest.
//!
//! * The **keeper** ([`Engine::keep_standbys`]) runs beside the supervisor while the
//!   deployment is Running: it places missing standbys (a bid round for that node only, on
//!   peers that hold no node or standby of the deployment, so that one provider's loss never
//!   takes two copies), checks the ones placed (a standby that stops answering or is no
//!   longer pending is dropped and fenced), and places a new one after each promotion.
//! * **Promotion**: when the node's provider is lost, the first
//!   standby becomes the node: the subnet plan with the node's members moved to it goes to
//!   every provider (same addresses and `.internal` names), its allocations are started,
//!   and the lost provider is fenced as after a redeploy.
//!
//! It only sends actor messages; the decision to promote is the supervisor's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use nunet_protocol::calls::AllocationStatusCall;
use nunet_protocol::{AllocationStatus, DeploymentStatus, Empty, ManifestStandby};

use crate::engine::{BID_COLLECT, Engine, MAX_MISSED_CHECKS, RoundError, manifest_node};
use crate::now_ms;

/// How often the keeper looks at the standbys (and retries placing missing ones, with
/// back-off after failures).
const KEEPER_EVERY: Duration = Duration::from_secs(2);
/// Longest pause between two failed placements of a node's standby.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// How long a standby's status check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The nodes that want standbys, with how many: `redundancy` of nodes not pinned to a peer
/// (a pinned node cannot run anywhere else).
pub fn wanted(e: &nunet_ensemble::Ensemble) -> BTreeMap<String, u32> {
    e.nodes
        .iter()
        .filter(|n| n.redundancy > 0 && n.peer.is_none())
        .map(|n| (n.name.clone(), n.redundancy))
        .collect()
}

/// Placement back-off of one node's standbys.
#[derive(Default)]
struct Retry {
    not_before: Option<Instant>,
    pause: Duration,
    /// Peers that failed a placement of this node (excluded until the pause is at its
    /// longest, then tried again).
    failed: Vec<String>,
}

impl Retry {
    fn failed(&mut self, peers: Vec<String>) {
        self.pause = (self.pause * 2).clamp(KEEPER_EVERY, MAX_PAUSE);
        if self.pause == MAX_PAUSE {
            self.failed.clear();
        }
        self.failed.extend(peers);
        self.not_before = Some(Instant::now() + self.pause);
    }
}

impl Engine {
    /// Keeps every node's standbys while the deployment runs (see the module doc); returns
    /// when it no longer runs.
    pub async fn keep_standbys(self: Arc<Self>) {
        let mut retry: HashMap<String, Retry> = HashMap::new();
        let mut missed: HashMap<String, u32> = HashMap::new();
        loop {
            let Some(rec) = self.record() else { return };
            if rec.status != DeploymentStatus::Running {
                return;
            }
            // Read each time: a live update may change `redundancy` or the nodes.
            let wanted = wanted(&rec.ensemble);
            self.trim_standbys(&wanted);
            self.check_standbys(&mut missed).await;
            for (node, n) in &wanted {
                let have = self
                    .record()
                    .map_or(0, |r| r.manifest.standbys.get(node).map_or(0, Vec::len));
                let r = retry.entry(node.clone()).or_default();
                if have >= *n as usize || r.not_before.is_some_and(|t| Instant::now() < t) {
                    continue;
                }
                match self.place_standby(node, &r.failed).await {
                    Ok(()) => *r = Retry::default(),
                    Err(RoundError::Retry(e, peers)) => {
                        r.failed(peers);
                        self.event(format!(
                            "no standby of node {node} placed ({have} of {n}): {e}; trying again \
                             in {}s",
                            r.pause.as_secs()
                        ));
                    }
                    Err(RoundError::Fatal(e)) => {
                        r.failed(Vec::new());
                        self.event(format!("no standby of node {node} placed: {e}"));
                    }
                }
            }
            tokio::select! {
                () = self.standby_wake.notified() => {}
                () = tokio::time::sleep(KEEPER_EVERY) => {}
            }
        }
    }

    /// One standby of `node`: a bid round for that node only, on peers that hold nothing of
    /// this deployment (nor `failed`), then commit and allocate, without starting.
    async fn place_standby(&self, node: &str, failed: &[String]) -> Result<(), RoundError> {
        let rec = self
            .record()
            .ok_or_else(|| RoundError::Fatal("record lost".into()))?;
        let mut excluded = rec.ensemble.exclude_peers.clone();
        excluded.extend(rec.manifest.peers());
        excluded.extend(failed.iter().cloned());
        excluded.extend(self.fenced());
        let round = rec.rounds + 1;
        self.update(|r| {
            r.rounds = round;
            r.event(
                now_ms(),
                format!(
                    "round {round}: placing a standby of node {node} (excluded peers: {})",
                    excluded.len()
                ),
            );
        });
        let bids = self
            .collect_bids(round, &excluded, BID_COLLECT, Some(node))
            .await;
        let assign = self.place(&bids, &excluded, Some(node)).await?;
        let Some((_, bid)) = assign.first().cloned() else {
            return Err(RoundError::Retry("no placement".into(), Vec::new()));
        };
        if let Err(e) = self.commit(&assign).await {
            self.revert(&assign).await;
            return Err(e);
        }
        let (done, failed) = match self.allocate_each(&assign, None).await {
            Ok(x) => x,
            Err(e) => {
                self.revert(&assign).await;
                return Err(e);
            }
        };
        if let Some(e) = failed {
            self.revert(&assign).await;
            return Err(e);
        }
        let Some((_, _, allocated)) = done.into_iter().next() else {
            self.revert(&assign).await;
            return Err(RoundError::Retry(
                "nothing allocated".into(),
                vec![bid.peer],
            ));
        };
        let standby = ManifestStandby {
            node: manifest_node(&bid),
            allocations: allocated.allocations,
            gpus: allocated.gpus,
            since_ms: now_ms(),
        };
        let mut kept = false;
        self.update(|r| {
            // Only while it runs (a shutdown reverts what the manifest names), while the
            // node is not on that peer meanwhile, and while the ensemble is the one the
            // standby was allocated for (a live update drops the standbys of what it changes).
            if r.status == DeploymentStatus::Running
                && r.ensemble == rec.ensemble
                && r.manifest
                    .nodes
                    .get(node)
                    .is_some_and(|m| m.peer != bid.peer)
            {
                r.manifest
                    .standbys
                    .entry(node.to_string())
                    .or_default()
                    .push(standby);
                r.event(
                    now_ms(),
                    format!("standby of node {node} ready on {}", bid.peer),
                );
                kept = true;
            }
        });
        if !kept {
            self.revert(&assign).await;
            return Err(RoundError::Fatal(
                "the deployment stopped or was updated meanwhile".into(),
            ));
        }
        Ok(())
    }

    /// Drops the standbys beyond what `wanted` asks for (a node gone, or its `redundancy`
    /// lowered by a live update), the newest first.
    fn trim_standbys(self: &Arc<Self>, wanted: &BTreeMap<String, u32>) {
        let Some(rec) = self.record() else { return };
        for (node, v) in &rec.manifest.standbys {
            let keep = wanted.get(node).copied().unwrap_or(0) as usize;
            for s in v.iter().skip(keep) {
                self.drop_standby(node, s, "more standbys than the node's redundancy asks for");
            }
        }
    }

    /// Asks every standby how it is; one that is no longer pending, or missed
    /// [`MAX_MISSED_CHECKS`] checks in a row, is dropped from the manifest and fenced.
    async fn check_standbys(self: &Arc<Self>, missed: &mut HashMap<String, u32>) {
        let Some(rec) = self.record() else { return };
        let checks = rec.manifest.standbys.iter().flat_map(|(node, v)| {
            v.iter().filter_map(move |s| {
                let h = s.allocations.values().next()?;
                Some(async move {
                    let t = self.paths.timeout(CHECK_TIMEOUT, &h.addr.host, 2);
                    let r = self.call::<AllocationStatusCall>(h, &Empty {}, t).await;
                    (node.clone(), s.clone(), r)
                })
            })
        });
        for (node, s, r) in join_all(checks).await {
            let key = format!("{node}@{}", s.node.did);
            let why = match r {
                Ok(v) if v.status == AllocationStatus::Pending => {
                    missed.remove(&key);
                    continue;
                }
                Ok(v) => format!("it is {}", v.status),
                Err(e) => {
                    let n = missed.entry(key.clone()).or_default();
                    *n += 1;
                    if *n < MAX_MISSED_CHECKS {
                        continue;
                    }
                    format!("it did not answer {n} checks: {}", e.message)
                }
            };
            missed.remove(&key);
            self.drop_standby(&node, &s, &why);
        }
    }

    /// Removes standby `s` of `node` from the manifest (when still there) and fences it.
    fn drop_standby(self: &Arc<Self>, node: &str, s: &ManifestStandby, why: &str) {
        let mut removed = false;
        self.update(|r| {
            if let Some(v) = r.manifest.standbys.get_mut(node) {
                let before = v.len();
                v.retain(|x| x.node.did != s.node.did);
                removed = v.len() < before;
                if v.is_empty() {
                    r.manifest.standbys.remove(node);
                }
            }
            if removed {
                r.event(
                    now_ms(),
                    format!("standby of node {node} on {} dropped: {why}", s.node.peer),
                );
            }
        });
        if removed {
            self.fence(
                format!("{node} (standby)"),
                s.node.peer.clone(),
                s.node.handle.clone(),
            );
            self.standby_wake.notify_one();
        }
    }

    /// Reverts every standby (the deployment ended) and takes them off the manifest.
    pub(crate) async fn release_standbys(&self) {
        let Some(rec) = self.record() else { return };
        let assign: crate::engine::Assignment = rec
            .manifest
            .standbys
            .iter()
            .flat_map(|(n, v)| v.iter().map(move |s| (n.clone(), s)))
            .map(|(n, s)| (n.clone(), crate::engine::bid_of(&rec.id, &n, &s.node)))
            .collect();
        if assign.is_empty() {
            return;
        }
        self.update(|r| r.manifest.standbys.clear());
        self.revert(&assign).await;
    }

    /// Promotes a standby of `node`, whose provider `lost_peer` was lost: the first one
    /// that takes the node's subnet addresses and starts (a standby that fails is reverted
    /// and the next one tried). `Err` when none did; the manifest then names the lost
    /// provider again, for the caller's next step.
    pub(crate) async fn promote(
        self: &Arc<Self>,
        node: &str,
        lost_peer: &str,
    ) -> Result<String, String> {
        let t0 = Instant::now();
        let old = self
            .record()
            .and_then(|r| r.manifest.nodes.get(node).cloned())
            .ok_or("the node is not in the manifest")?;
        #[allow(clippy::type_complexity)]
        let old_handles: BTreeMap<String, (Option<nunet_actor::Handle>, Vec<String>)> = self
            .record()
            .map(|r| {
                r.manifest
                    .allocations
                    .iter()
                    .filter(|(_, a)| a.node_id == node)
                    .map(|(k, a)| (k.clone(), (a.handle.clone(), a.gpus.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let mut last = String::from("no standby");
        loop {
            let mut taken = None;
            self.update(|r| {
                let Some(v) = r.manifest.standbys.get_mut(node) else {
                    return;
                };
                if !v.is_empty() {
                    taken = Some(v.remove(0));
                }
                if v.is_empty() {
                    r.manifest.standbys.remove(node);
                }
                let Some(s) = &taken else { return };
                r.manifest.nodes.insert(node.to_string(), s.node.clone());
                for (key, a) in r.manifest.allocations.iter_mut() {
                    if a.node_id != node {
                        continue;
                    }
                    let name = key.rsplit('.').next().unwrap_or(key);
                    a.handle = s.allocations.get(name).cloned();
                    a.gpus = s.gpus.get(name).cloned().unwrap_or_default();
                    a.status = AllocationStatus::Pending;
                    a.exit_code = None;
                    a.health = None;
                }
                r.event(
                    now_ms(),
                    format!(
                        "promoting the standby of node {node} on {} (lost {lost_peer})",
                        s.node.peer
                    ),
                );
            });
            let Some(s) = taken else { break };
            let steps = async {
                self.move_subnet(node, &s.node.peer, &s.node.handle, &[])
                    .await?;
                self.start_in_order(Some(node)).await
            };
            match steps.await {
                Ok(()) => {
                    self.event(format!(
                        "node {node}: standby on {} promoted in {:.1}s (lost {lost_peer})",
                        s.node.peer,
                        t0.elapsed().as_secs_f64()
                    ));
                    self.fence(node.to_string(), old.peer.clone(), old.handle.clone());
                    self.standby_wake.notify_one();
                    return Ok(s.node.peer);
                }
                Err(RoundError::Retry(e, _) | RoundError::Fatal(e)) => {
                    self.event(format!(
                        "promotion of the standby of node {node} on {} failed: {e}",
                        s.node.peer
                    ));
                    self.fence(
                        format!("{node} (failed standby)"),
                        s.node.peer.clone(),
                        s.node.handle.clone(),
                    );
                    last = e;
                }
            }
        }
        // None took over: the manifest names the lost provider again.
        self.update(|r| {
            r.manifest.nodes.insert(node.to_string(), old.clone());
            for (k, (h, gpus)) in &old_handles {
                if let Some(a) = r.manifest.allocations.get_mut(k) {
                    a.handle = h.clone();
                    a.gpus = gpus.clone();
                }
            }
        });
        self.standby_wake.notify_one();
        Err(format!("no standby of node {node} took over: {last}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unpinned_nodes_with_redundancy_want_standbys() {
        let y = "version: V1\nallocations:\n  a: {executor: docker, type: service, \
                 resources: {cpu: {cores: 1}, ram: {size: 1GiB}, disk: {size: 1GiB}}, \
                 execution: {type: docker, image: x}}\n  b: {executor: docker, type: service, \
                 resources: {cpu: {cores: 1}, ram: {size: 1GiB}, disk: {size: 1GiB}}, \
                 execution: {type: docker, image: x}}\n  c: {executor: docker, type: service, \
                 resources: {cpu: {cores: 1}, ram: {size: 1GiB}, disk: {size: 1GiB}}, \
                 execution: {type: docker, image: x}}\nnodes:\n  one: {allocations: [a], \
                 redundancy: 2}\n  two: {allocations: [b]}\n  three: {allocations: [c], \
                 redundancy: 1, peer: 12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN}\n";
        let e = nunet_ensemble::parse_str(y, &Default::default())
            .expect("ensemble")
            .ensemble;
        let w = wanted(&e);
        assert_eq!(
            w.into_iter().collect::<Vec<_>>(),
            vec![("one".to_string(), 2)]
        );
    }

    #[test]
    fn placement_back_off_doubles_and_forgets_failed_peers_at_its_longest() {
        let mut r = Retry::default();
        r.failed(vec!["p1".into()]);
        assert_eq!(r.pause, KEEPER_EVERY);
        assert_eq!(r.failed, vec!["p1".to_string()]);
        r.failed(vec!["p2".into()]);
        assert_eq!(r.pause, KEEPER_EVERY * 2);
        assert_eq!(r.failed.len(), 2);
        for _ in 0..10 {
            r.failed(Vec::new());
        }
        assert_eq!(r.pause, MAX_PAUSE);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert!(r.not_before.is_some());
    }
}
