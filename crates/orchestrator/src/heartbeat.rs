//! Heartbeats to the providers of nodes that heal from a lost provider (node
//! `failure_recovery` restart or redeploy, or `redundancy`): every [`HEARTBEAT_EVERY`] one
//! status call per node, sent whether or not the previous one has answered, each with a
//! [`HEARTBEAT_TIMEOUT`] deadline. A node counts as lost once [`LOST_AFTER`] calls in a row
//! (in the order they were sent) failed, so a silent provider is noticed about
//! `HEARTBEAT_EVERY × (LOST_AFTER − 1) + HEARTBEAT_TIMEOUT` after its last answer, and a
//! dead one (refused connection) sooner; the supervisor is woken at once.
//!
//! The supervisor's own status polls decide everything else (status, exits, health); these
//! only decide liveness. Each call's deadline grows with the measured path to its provider
//! ([`crate::paths`]): a provider 600 ms away is slow to answer, not lost. It only sends actor
//! messages.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nunet_protocol::calls::AllocationStatusCall;
use nunet_protocol::{DeploymentStatus, Empty};
use tracing::Instrument;

use crate::engine::Engine;

/// Heartbeat period.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// How long one heartbeat may take.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed heartbeats in a row after which a provider counts as lost.
pub const LOST_AFTER: u32 = 2;

/// One node's heartbeats to the provider that runs it.
#[derive(Debug, Default)]
struct Beat {
    /// The provider (a new one starts afresh).
    peer: String,
    /// The latest heartbeat that was answered.
    last_ok: u64,
    /// Heartbeats sent after it that failed.
    failed: BTreeSet<u64>,
}

impl Beat {
    fn record(&mut self, seq: u64, ok: bool) {
        if ok {
            self.last_ok = self.last_ok.max(seq);
            let last = self.last_ok;
            self.failed.retain(|s| *s > last);
        } else if seq > self.last_ok {
            self.failed.insert(seq);
        }
    }

    fn lost(&self) -> bool {
        self.failed.len() >= LOST_AFTER as usize
    }
}

/// The heartbeat state of one deployment's nodes.
#[derive(Debug, Default)]
pub struct Heartbeats {
    beats: Mutex<HashMap<String, Beat>>,
    seq: std::sync::atomic::AtomicU64,
}

impl Heartbeats {
    /// Records heartbeat `seq` to `peer` for `node`; true when this made the node lost.
    fn record(&self, node: &str, peer: &str, seq: u64, ok: bool) -> bool {
        let Ok(mut m) = self.beats.lock() else {
            return false;
        };
        let b = m.entry(node.to_string()).or_default();
        if b.peer != peer {
            return false; // an answer about a provider the node has left
        }
        let was = b.lost();
        b.record(seq, ok);
        !was && b.lost()
    }

    /// The next sequence number for `node` on `peer` (its state restarts with a new peer).
    fn next(&self, node: &str, peer: &str) -> u64 {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if let Ok(mut m) = self.beats.lock() {
            let b = m.entry(node.to_string()).or_default();
            if b.peer != peer {
                *b = Beat {
                    peer: peer.to_string(),
                    last_ok: seq - 1,
                    failed: BTreeSet::new(),
                };
            }
        }
        seq
    }

    /// Nodes whose provider missed [`LOST_AFTER`] heartbeats in a row: (node, peer).
    pub fn lost(&self) -> Vec<(String, String)> {
        self.beats
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, b)| b.lost())
                    .map(|(n, b)| (n.clone(), b.peer.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Engine {
    /// Sends the heartbeats of the nodes that heal from a lost provider, until the
    /// deployment no longer runs.
    pub(crate) async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(rec) = self.record() else { return };
            if rec.status != DeploymentStatus::Running {
                return;
            }
            for (node, m) in &rec.manifest.nodes {
                if !crate::supervise::watched(&rec.ensemble, node) {
                    continue;
                }
                let Some(h) = rec
                    .manifest
                    .allocations
                    .values()
                    .filter(|a| &a.node_id == node)
                    .find_map(|a| a.handle.clone())
                else {
                    continue;
                };
                let seq = self.heartbeats.next(node, &m.peer);
                let (me, node, peer) = (self.clone(), node.clone(), m.peer.clone());
                tokio::spawn(
                    async move {
                        // A far provider's answer takes its path's round trips on top.
                        let t = me.paths.timeout(HEARTBEAT_TIMEOUT, &peer, 2);
                        let r = me.call::<AllocationStatusCall>(&h, &Empty {}, t).await;
                        if me.heartbeats.record(&node, &peer, seq, r.is_ok()) {
                            me.exits.notify.notify_one();
                        }
                    }
                    .in_current_span(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_lost_after_two_failures_in_a_row_in_send_order() {
        let h = Heartbeats::default();
        let s1 = h.next("n", "P");
        let s2 = h.next("n", "P");
        let s3 = h.next("n", "P");
        // Answers arrive out of order: s2 fails, s1 (older) fails, then s3 answers.
        assert!(!h.record("n", "P", s2, false));
        assert!(h.record("n", "P", s1, false), "two failures in a row");
        assert_eq!(h.lost(), vec![("n".to_string(), "P".to_string())]);
        assert!(!h.record("n", "P", s3, true));
        assert!(h.lost().is_empty(), "a later answer clears it");
        // A failure, an answer, a failure: never two in a row.
        let (a, b, c) = (h.next("n", "P"), h.next("n", "P"), h.next("n", "P"));
        h.record("n", "P", a, false);
        h.record("n", "P", b, true);
        h.record("n", "P", c, false);
        assert!(h.lost().is_empty());
        // A late failure older than the last answer does not count.
        h.record("n", "P", a, false);
        assert!(h.lost().is_empty());
        // The next failure after c does.
        let d = h.next("n", "P");
        assert!(h.record("n", "P", d, false));
    }

    #[test]
    fn a_new_provider_starts_afresh_and_old_answers_are_ignored() {
        let h = Heartbeats::default();
        let (a, b) = (h.next("n", "P"), h.next("n", "P"));
        h.record("n", "P", a, false);
        h.record("n", "P", b, false);
        assert_eq!(h.lost().len(), 1);
        let c = h.next("n", "Q");
        assert!(h.lost().is_empty(), "moved to Q");
        assert!(!h.record("n", "P", c, false), "an answer about P");
        assert!(h.lost().is_empty());
    }
}
