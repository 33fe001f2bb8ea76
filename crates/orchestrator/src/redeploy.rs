//! Replacing a lost node (node `failure_recovery: redeploy`): a bid round for that node only
//! (the lost peer excluded, and the peers of the other nodes when nodes need distinct peers),
//! placement, commit, allocate, the subnet plan with the node's members moved to the new peer
//! (same addresses, names and port forwards; every provider of the ensemble gets the new
//! routes), and the start of its allocations, while the rest of the ensemble keeps running.
//! The lost provider is then fenced: it is told to revert the ensemble until it answers, and
//! if it restarts first its reconciliation learns that the allocations are no longer its own.
//!
//! It only sends actor messages; the decision to replace is the supervisor's.

use std::time::Duration;

use nunet_protocol::calls::{Revert, SubnetCreate};
use nunet_protocol::{RevertRequest, SubnetPlan};
use tracing::Instrument;

use crate::engine::{BID_COLLECT, Engine, RETRY_PACE_MS, RoundError};
use crate::now_ms;

/// How long the orchestrator keeps trying to place a lost node before it gives up.
pub const REDEPLOY_WINDOW: Duration = Duration::from_secs(60);
/// How long a lost provider is asked to revert the ensemble (it may be gone for good).
const FENCE_WINDOW: Duration = Duration::from_secs(600);
/// First pause between two fencing attempts; it doubles up to [`FENCE_MAX_RETRY`] (a fenced
/// peer is not placed on, so a provider that comes back is freed soon).
const FENCE_FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest pause between two fencing attempts.
const FENCE_MAX_RETRY: Duration = Duration::from_secs(5);

/// `plan` with the members of `ids` hosted by `peer`.
pub fn moved(plan: &SubnetPlan, ids: &[String], peer: &str) -> SubnetPlan {
    let mut p = plan.clone();
    for m in &mut p.members {
        if ids.contains(&m.allocation) {
            m.peer = peer.to_string();
        }
    }
    p
}

impl Engine {
    /// Places node `node` (lost with its provider `lost_peer`) again; `Err` when no provider
    /// took it within [`REDEPLOY_WINDOW`].
    pub(crate) async fn redeploy_node(
        self: &std::sync::Arc<Self>,
        node: &str,
        lost_peer: &str,
    ) -> Result<(), String> {
        let rec = self.record().ok_or("record lost")?;
        let old = rec.manifest.nodes.get(node).cloned();
        let mut excluded = rec.placement_exclusions(node);
        excluded.push(lost_peer.to_string());
        let t0 = std::time::Instant::now();
        let mut last = String::from("no round finished");
        while t0.elapsed() < REDEPLOY_WINDOW {
            if self.status().is_terminal() {
                return Err("the deployment ended".into());
            }
            let round = self.record().map_or(1, |r| r.rounds + 1);
            // Peers being fenced now (a fence that ended frees its peer for the next round).
            let mut skip = excluded.clone();
            skip.extend(self.fenced());
            skip.sort();
            skip.dedup();
            self.update(|r| {
                r.rounds = round;
                r.event(
                    now_ms(),
                    format!(
                        "round {round}: redeploying node {node} (excluded peers: {})",
                        skip.len()
                    ),
                );
            });
            let started = now_ms();
            match self.replace_once(round, node, &skip).await {
                Ok(peer) => {
                    self.event(format!(
                        "node {node} redeployed on {peer} in {:.1}s (lost {lost_peer})",
                        t0.elapsed().as_secs_f64()
                    ));
                    if let Some(old) = old {
                        self.fence(node.to_string(), old.peer.clone(), old.handle.clone());
                    }
                    return Ok(());
                }
                Err(RoundError::Fatal(e)) => return Err(e),
                Err(RoundError::Retry(e, peers)) => {
                    self.event(format!("round {round} (node {node}) failed: {e}"));
                    excluded.extend(peers);
                    last = e;
                }
            }
            let wait = started + RETRY_PACE_MS - now_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
        }
        Err(format!(
            "node {node} could not be redeployed within {}s: {last}",
            REDEPLOY_WINDOW.as_secs()
        ))
    }

    /// One attempt: bids, placement, commit, allocate, subnet, start; reverts the new
    /// provider when a step fails. Returns the new peer.
    async fn replace_once(
        &self,
        round: u32,
        node: &str,
        excluded: &[String],
    ) -> Result<String, RoundError> {
        let bids = self
            .collect_bids(round, excluded, BID_COLLECT, Some(node))
            .await;
        let assign = self.place(&bids, excluded, Some(node)).await?;
        let Some((_, bid)) = assign.first() else {
            return Err(RoundError::Retry("no placement".into(), Vec::new()));
        };
        let peer = bid.peer.clone();
        self.record_placement(&assign);
        let steps = async {
            self.commit(&assign).await?;
            self.allocate(&assign).await?;
            self.move_subnet(node, &bid.peer, &bid.handle, &bid.used_subnets)
                .await?;
            self.start_in_order(Some(node)).await
        };
        if let Err(e) = steps.await {
            self.revert(&assign).await;
            return Err(e);
        }
        Ok(peer)
    }

    /// Gives the node's allocations their old addresses on the new provider: the plan with
    /// their members moved goes to every provider of the ensemble (new routes everywhere).
    /// `used` are the subnets the new provider already has (from its bid).
    pub(crate) async fn move_subnet(
        &self,
        node: &str,
        peer: &str,
        handle: &nunet_actor::Handle,
        used: &[String],
    ) -> Result<(), RoundError> {
        let Some(rec) = self.record() else {
            return Err(RoundError::Fatal("record lost".into()));
        };
        let Some(plan) = &rec.subnet else {
            return Ok(()); // no subnet (off on every provider, or no member)
        };
        let ids: Vec<String> = rec
            .manifest
            .allocations
            .values()
            .filter(|a| a.node_id == node)
            .map(|a| a.id.clone())
            .collect();
        let plan = moved(plan, &ids, peer);
        if used.contains(&plan.network) {
            return Err(RoundError::Retry(
                format!("{peer} already uses the ensemble's subnet {}", plan.network),
                vec![peer.to_string()],
            ));
        }
        // The new provider first: without it the node cannot run.
        self.call::<SubnetCreate>(handle, &plan, Duration::from_secs(30))
            .await
            .map_err(|e| {
                RoundError::Retry(
                    format!("subnet on {peer}: {}", e.message),
                    vec![peer.to_string()],
                )
            })?;
        let others: Vec<(String, nunet_actor::Handle)> = rec
            .manifest
            .nodes
            .iter()
            .filter(|(n, m)| n.as_str() != node && plan.members.iter().any(|x| x.peer == m.peer))
            .map(|(n, m)| (n.clone(), m.handle.clone()))
            .collect();
        for (n, h) in others {
            if let Err(e) = self
                .call::<SubnetCreate>(&h, &plan, Duration::from_secs(30))
                .await
            {
                self.event(format!(
                    "routes of node {n} not updated for the move of node {node}: {}",
                    e.message
                ));
            }
        }
        self.record_plan(&plan);
        Ok(())
    }

    /// Peers being fenced (told to revert this deployment): no placement may pick them.
    pub(crate) fn fenced(&self) -> Vec<String> {
        self.fencing
            .lock()
            .map(|f| f.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records `plan` as the subnet the providers run, and each allocation's address and name
    /// in it.
    pub(crate) fn record_plan(&self, plan: &SubnetPlan) {
        self.update(|r| {
            for a in r.manifest.allocations.values_mut() {
                if let Some(m) = plan.member(&a.id) {
                    a.ip = Some(m.ip.to_string());
                    a.dns = Some(format!("{}.internal", m.dns_name));
                }
            }
            r.subnet = Some(plan.clone());
        });
    }

    /// Tells the lost provider to revert the ensemble, in the background, until it answers
    /// or [`FENCE_WINDOW`] passes (a provider that restarts first drops the allocations
    /// itself: its allocation checks are denied, the manifest names another provider).
    /// Until then the peer is in [`Engine::fenced`]: no placement picks it, or the late revert
    /// would take down what was just placed there.
    pub(crate) fn fence(
        self: &std::sync::Arc<Self>,
        node: String,
        peer: String,
        handle: nunet_actor::Handle,
    ) {
        let Some(rec) = self.record() else { return };
        let system = self.system.clone();
        let inbox = self.inbox.clone();
        let req = RevertRequest::all(&rec.id);
        if let Ok(mut f) = self.fencing.lock() {
            f.insert(peer.clone());
        }
        let me = std::sync::Arc::downgrade(self);
        let fenced = peer.clone();
        // The last word of the fence: said, and the peer may be placed again.
        let done = move |m: String| {
            if let Some(e) = me.upgrade() {
                if let Ok(mut f) = e.fencing.lock() {
                    f.remove(&fenced);
                }
                e.event(m);
            }
        };
        tokio::spawn(
            async move {
                let t0 = std::time::Instant::now();
                let mut pause = FENCE_FIRST_RETRY;
                while t0.elapsed() < FENCE_WINDOW {
                    let r = nunet_protocol::call::invoke::<Revert>(
                        &system,
                        &inbox,
                        handle.clone(),
                        &req,
                        Duration::from_secs(10),
                    )
                    .await;
                    if r.is_ok() {
                        done(format!(
                            "fenced the lost provider {peer} of node {node}: reverted"
                        ));
                        return;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(FENCE_MAX_RETRY);
                }
                done(format!(
                    "the lost provider {peer} of node {node} did not answer for {}s; it drops the \
                 allocations itself if it comes back",
                    FENCE_WINDOW.as_secs()
                ));
            }
            .in_current_span(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_changes_only_the_peer_of_the_moved_members() {
        let members = vec![
            ("e-a".to_string(), "a".to_string(), "P1".to_string()),
            ("e-b".to_string(), "b".to_string(), "P2".to_string()),
        ];
        let plan = nunet_protocol::subnet::plan("e", &members, Vec::new(), &[]).expect("plan");
        let m = moved(&plan, &["e-b".to_string()], "P3");
        assert_eq!(m.network, plan.network);
        for (x, y) in plan.members.iter().zip(&m.members) {
            assert_eq!((x.ip, &x.dns_name), (y.ip, &y.dns_name));
        }
        assert_eq!(m.member("e-b").map(|x| x.peer.as_str()), Some("P3"));
        assert_eq!(m.member("e-a").map(|x| x.peer.as_str()), Some("P1"));
    }
}
