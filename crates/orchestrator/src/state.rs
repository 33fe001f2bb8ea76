//! The deployment state machine (NUNET-FORMATS §2.3) and the record the orchestrator keeps
//! and persists: status, reason, progress events and the manifest.

use std::collections::BTreeMap;

use nunet_actor::Handle;
use nunet_ensemble::Ensemble;
use nunet_protocol::{DeploymentStatus, DeploymentSummary, Event, Manifest};
use serde::{Deserialize, Serialize};

/// Everything the orchestrator knows about one deployment; persisted on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Ensemble id.
    pub id: String,
    /// Status.
    pub status: DeploymentStatus,
    /// Why it failed or ended, when it did.
    pub reason: Option<String>,
    /// Who asked for it (DID).
    pub owner: String,
    /// Unix ms.
    pub created_ms: i64,
    /// The `new` message's expiry (Unix ms): Running must be reached by then.
    pub deadline_ms: i64,
    /// The ensemble.
    pub ensemble: Ensemble,
    /// The orchestrator actor.
    pub orchestrator: Handle,
    /// Placement and allocations.
    pub manifest: Manifest,
    /// Progress, oldest first (bounded).
    pub events: Vec<Event>,
    /// Deployment rounds tried (bidding → commit → allocate).
    pub rounds: u32,
    /// A note about features this build does not provide (e.g. the subnet).
    pub notes: Vec<String>,
    /// Verified bids per ensemble node in the latest bid round (shown by `nunet deploy`).
    #[serde(default)]
    pub bids: BTreeMap<String, u32>,
    /// Bids refused because their sender held no chain for `/dms/deployment/bid` that this
    /// node's anchors accept, per sender DID, over all rounds.
    #[serde(default)]
    pub refused_bids: BTreeMap<String, u32>,
    /// The subnet plan the providers run (kept so a replaced node's allocations get the same
    /// addresses and names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<nunet_protocol::SubnetPlan>,
}

/// Most events kept per deployment.
pub const MAX_EVENTS: usize = 500;
/// Of those, the first ones, always kept (a long retry loop must not hide how it began).
pub const FIRST_EVENTS_KEPT: usize = 50;

impl Deployment {
    /// Appends a progress event.
    pub fn event(&mut self, now_ms: i64, message: impl Into<String>) {
        let seq = self.events.last().map_or(1, |e| e.seq + 1);
        self.events.push(Event {
            seq,
            at_ms: now_ms,
            phase: self.status,
            message: message.into(),
        });
        // The first events (how it began) and the latest are kept; the middle goes.
        if self.events.len() > MAX_EVENTS {
            let drop = self.events.len() - MAX_EVENTS;
            self.events
                .drain(FIRST_EVENTS_KEPT..FIRST_EVENTS_KEPT + drop);
        }
    }

    /// Records the latest bid round: every ensemble node with the number of verified bids
    /// for it (0 when none came).
    pub fn set_bids<'a>(&mut self, bid_nodes: impl IntoIterator<Item = &'a str>) {
        let mut counts: BTreeMap<String, u32> = self
            .ensemble
            .nodes
            .iter()
            .map(|n| (n.name.clone(), 0))
            .collect();
        for n in bid_nodes {
            *counts.entry(n.to_string()).or_default() += 1;
        }
        self.bids = counts;
    }

    /// Peers a bid round for node `node` of a running deployment leaves out: the
    /// ensemble's `exclude_peers`, every peer holding a standby (reverting the standby would
    /// take a node placed there with it), and with distinct peers the other nodes' peers.
    pub fn placement_exclusions(&self, node: &str) -> Vec<String> {
        let mut v = self.ensemble.exclude_peers.clone();
        v.extend(
            self.manifest
                .standbys
                .values()
                .flatten()
                .map(|s| s.node.peer.clone()),
        );
        if self.ensemble.distinct_peers {
            v.extend(
                self.manifest
                    .nodes
                    .iter()
                    .filter(|(n, _)| n.as_str() != node)
                    .map(|(_, m)| m.peer.clone()),
            );
        }
        v
    }

    /// The summary shown by `list` and `status` (no key, no ensemble, no events).
    pub fn summary(&self) -> DeploymentSummary {
        DeploymentSummary {
            id: self.id.clone(),
            status: self.status,
            status_code: self.status as u8,
            reason: self.reason.clone(),
            owner: self.owner.clone(),
            created_ms: self.created_ms,
            deadline_ms: self.deadline_ms,
            rounds: self.rounds,
            nodes: self
                .manifest
                .nodes
                .iter()
                .map(|(n, m)| (n.clone(), m.peer.clone()))
                .collect(),
            allocations: self
                .manifest
                .allocations
                .iter()
                .map(|(n, a)| (n.clone(), a.status))
                .collect(),
            standbys: self
                .manifest
                .standbys
                .iter()
                .map(|(n, v)| (n.clone(), v.iter().map(|s| s.node.peer.clone()).collect()))
                .collect(),
            notes: self.notes.clone(),
            bids: self.bids.clone(),
            refused_bids: self.refused_bids.clone(),
            events: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_history_keeps_its_beginning_and_its_end() {
        let ensemble = nunet_ensemble::parse_str(
            "version: V1\nallocations:\n  a: {executor: docker, type: task, resources: {cpu: \
             {cores: 1}, ram: {size: 1GiB}, disk: {size: 1GiB}}, execution: {type: docker, \
             image: x}}\nnodes:\n  n: {allocations: [a]}\n",
            &Default::default(),
        )
        .expect("ensemble")
        .ensemble;
        let mut d = Deployment {
            id: "e".into(),
            status: DeploymentStatus::Preparing,
            reason: None,
            owner: String::new(),
            created_ms: 0,
            deadline_ms: 0,
            ensemble,
            orchestrator: Handle::default(),
            manifest: Manifest::default(),
            events: Vec::new(),
            rounds: 0,
            notes: Vec::new(),
            bids: BTreeMap::new(),
            refused_bids: BTreeMap::new(),
            subnet: None,
        };
        for i in 0..(MAX_EVENTS * 3) {
            d.event(i as i64, format!("event {i}"));
        }
        assert_eq!(d.events.len(), MAX_EVENTS);
        assert_eq!(d.events[0].message, "event 0");
        assert_eq!(
            d.events[FIRST_EVENTS_KEPT - 1].message,
            format!("event {}", FIRST_EVENTS_KEPT - 1)
        );
        let last = d.events.last().map(|e| e.message.clone());
        assert_eq!(last, Some(format!("event {}", MAX_EVENTS * 3 - 1)));
        // Sequence numbers still grow, so `status --after` readers miss nothing new.
        assert!(d.events.windows(2).all(|w| w[0].seq < w[1].seq));
    }
}
