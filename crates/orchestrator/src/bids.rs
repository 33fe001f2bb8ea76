//! Bid requests beyond the broadcast: nodes pinned to a `peer` are asked by a direct request
//! to that peer (they are left out of the gossip request), bids are capped per node
//! ([`MAX_BIDS_PER_NODE`]), declines are taken out of the replies (and shown as events), and
//! `round_closer` decides when a round may end early. Verification of the bids stays with
//! the engine; nothing here places or commits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::future::join_all;
use nunet_actor::Handle;
use nunet_did::PublicKey;
use serde_json::Value;

use nunet_protocol::calls::BidRequestDirect;
use nunet_protocol::{BidRequest, Decline, MAX_BIDS_PER_NODE};

use crate::engine::Engine;

/// Set in the nonce of direct requests.
const DIRECT_NONCE_BIT: u64 = 1 << 63;

/// Splits a request into the broadcast part (unpinned nodes) and one direct request per
/// pinned peer.
pub(crate) fn split_pinned(req: &BidRequest) -> (BidRequest, BTreeMap<String, BidRequest>) {
    let mut open = req.clone();
    open.nodes.retain(|n| n.peer.is_none());
    let mut pinned: BTreeMap<String, BidRequest> = BTreeMap::new();
    for n in req.nodes.iter().filter(|n| n.peer.is_some()) {
        let peer = n.peer.clone().unwrap_or_default();
        if req.exclude.contains(&peer) {
            continue;
        }
        pinned
            .entry(peer)
            .or_insert_with(|| BidRequest {
                nodes: Vec::new(),
                // Its own nonce: the pinned peer may answer the broadcast of this round too.
                nonce: req.nonce | DIRECT_NONCE_BIT,
                ..req.clone()
            })
            .nodes
            .push(n.clone());
    }
    (open, pinned)
}

/// Keeps the first [`MAX_BIDS_PER_NODE`] replies per node (replies without a node id are
/// kept, for the engine to refuse with a reason).
pub(crate) fn cap_per_node(replies: Vec<(Handle, Value)>) -> Vec<(Handle, Value)> {
    let mut per: HashMap<String, usize> = HashMap::new();
    replies
        .into_iter()
        .filter(|(_, v)| {
            let Some(n) = v.get("node_id").and_then(Value::as_str) else {
                return true;
            };
            let c = per.entry(n.to_string()).or_default();
            *c += 1;
            *c <= MAX_BIDS_PER_NODE
        })
        .collect()
}

/// When a bid round may close, after each reply: once every node in `wanted` has a bid, at
/// once if every peer in `subscribers` (the peers subscribed to the topic when the request
/// went out) has answered with a bid or a decline, else after `grace`. Until every node has a
/// bid the round stays open (the caller's collect time bounds it). `subscribers: None` (the
/// transport cannot tell) always leaves the grace.
pub(crate) fn round_closer(
    wanted: HashSet<String>,
    subscribers: Option<HashSet<String>>,
    grace: Duration,
) -> impl FnMut(&[(Handle, Value)]) -> Option<Duration> + Send {
    move |replies| {
        let got: HashSet<&str> = replies
            .iter()
            .filter(|(_, v)| !Decline::is_decline(v))
            .filter_map(|(_, v)| v.get("node_id").and_then(Value::as_str))
            .collect();
        if !wanted.iter().all(|n| got.contains(n.as_str())) {
            return None;
        }
        let answered: HashSet<&str> = replies.iter().map(|(h, _)| h.addr.host.as_str()).collect();
        let all = subscribers
            .as_ref()
            .is_some_and(|s| s.iter().all(|p| answered.contains(p.as_str())));
        Some(if all { Duration::ZERO } else { grace })
    }
}

/// The peers known to serve the topic (when the request went out) that did not answer.
pub(crate) fn silent_peers(
    replies: &[(Handle, Value)],
    subscribers: Option<&HashSet<String>>,
) -> Vec<String> {
    let answered: HashSet<&str> = replies.iter().map(|(h, _)| h.addr.host.as_str()).collect();
    let mut silent: Vec<String> = subscribers
        .into_iter()
        .flatten()
        .filter(|p| !answered.contains(p.as_str()))
        .cloned()
        .collect();
    silent.sort();
    silent
}

/// When the first and the last answer of a broadcast arrived, from its publish.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReplyTiming {
    pub(crate) first: Option<Duration>,
    pub(crate) last: Option<Duration>,
}

/// A deployment event saying how the broadcast part of a bid round ended: either every peer
/// known to serve the topic answered, or which ones stayed silent (they were waited for until
/// the grace or the round's limit, and are left out of the next rounds for a while); then
/// when the first and the last answer arrived.
pub(crate) fn round_summary(
    replies: &[(Handle, Value)],
    subscribers: Option<&HashSet<String>>,
    timing: ReplyTiming,
) -> String {
    let head = round_head(replies, subscribers);
    match (timing.first, timing.last) {
        (Some(f), Some(l)) => format!(
            "{head} (first answer after {} ms, last after {} ms)",
            f.as_millis(),
            l.as_millis()
        ),
        _ => head,
    }
}

fn round_head(replies: &[(Handle, Value)], subscribers: Option<&HashSet<String>>) -> String {
    match subscribers {
        None => format!("bid round closed with {} answer(s)", replies.len()),
        Some(s) => {
            let silent = silent_peers(replies, subscribers);
            if silent.is_empty() {
                format!(
                    "bid round closed: all {} subscribed peer(s) answered",
                    s.len()
                )
            } else {
                format!(
                    "bid round closed with {} answer(s); silent: {}",
                    replies.len(),
                    silent.join(", ")
                )
            }
        }
    }
}

impl Engine {
    /// Takes the declines out of `replies`, recording a deployment event for each (a decline
    /// whose signature or sender does not check out is dropped with an event too) and
    /// keeping their reasons for the round's error (key `only`, the round's node); returns
    /// the other replies.
    pub(crate) fn take_declines(
        &self,
        ensemble_id: &str,
        replies: Vec<(Handle, Value)>,
        only: Option<&str>,
    ) -> Vec<(Handle, Value)> {
        let (declines, rest): (Vec<_>, Vec<_>) = replies
            .into_iter()
            .partition(|(_, v)| Decline::is_decline(v));
        let mut reasons = Vec::new();
        for (from, v) in declines {
            let d = match serde_json::from_value::<Decline>(v) {
                Ok(d) => d,
                Err(e) => {
                    self.event(format!("malformed decline from {}: {e}", from.did));
                    continue;
                }
            };
            match d.verify() {
                Ok(did) if did.as_str() == from.did && d.ensemble_id == ensemble_id => {
                    self.event(format!("peer {} declined to bid: {}", d.peer, d.summary()));
                    reasons.push(format!("{}: {}", d.peer, d.summary()));
                }
                Ok(_) => self.event(format!(
                    "decline from {} is for another ensemble or signer",
                    from.did
                )),
                Err(e) => self.event(format!("refused decline: {e}")),
            }
        }
        if let Ok(mut d) = self.declines.lock() {
            d.insert(only.map(str::to_string), reasons);
        }
        rest
    }

    /// Asks every pinned peer directly; returns (peer's root handle, bid JSON) per answer.
    pub(crate) async fn pinned_bids(
        &self,
        pinned: BTreeMap<String, BidRequest>,
        t: Duration,
    ) -> Vec<(Handle, Value)> {
        let calls = pinned.into_iter().map(|(peer, req)| async move {
            let to = peer
                .parse()
                .ok()
                .and_then(|p| PublicKey::from_peer_id(&p).ok())
                .map(|k| Handle::root_of(&k));
            let Some(to) = to else {
                self.event(format!("pinned peer {peer} is not a valid peer id"));
                return None;
            };
            // Typed on the way in; the round then treats it like a gossip reply.
            // A pinned provider far away gets its path's round trips on top.
            let t = self.paths.timeout(t, &peer, 2);
            match self.call::<BidRequestDirect>(&to, &req, t).await {
                Ok(v) => serde_json::to_value(v).ok().map(|v| (to, v)),
                Err(e) => {
                    self.event(format!("pinned peer {peer} did not bid: {}", e.message));
                    None
                }
            }
        });
        join_all(calls).await.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nunet_protocol::NodeBidRequest;
    use serde_json::json;

    fn node(name: &str, peer: Option<&str>) -> NodeBidRequest {
        NodeBidRequest {
            node_id: name.into(),
            executors: vec!["docker".into()],
            resources: Default::default(),
            location: Default::default(),
            peer: peer.map(str::to_string),
            ports: Vec::new(),
            gpu_executors: Vec::new(),
        }
    }

    #[test]
    fn pinned_nodes_leave_the_broadcast_and_group_by_peer() {
        let req = BidRequest {
            ensemble_id: "e".into(),
            nonce: 1,
            nodes: vec![
                node("a", None),
                node("b", Some("P1")),
                node("c", Some("P1")),
                node("d", Some("P2")),
                node("x", Some("EX")),
            ],
            exclude: vec!["EX".into()],
        };
        let (open, pinned) = split_pinned(&req);
        assert_eq!(open.nodes.len(), 1);
        assert_eq!(open.nodes[0].node_id, "a");
        assert_eq!(pinned.len(), 2, "excluded pinned peer is not asked");
        assert_eq!(pinned["P1"].nodes.len(), 2);
        assert_eq!(pinned["P2"].nodes[0].node_id, "d");
    }

    #[test]
    fn at_most_eight_bids_per_node() {
        let replies: Vec<(Handle, Value)> = (0..20)
            .map(|i| {
                let n = if i % 2 == 0 { "a" } else { "b" };
                (Handle::default(), json!({"node_id": n}))
            })
            .chain([(Handle::default(), json!({"junk": 1}))])
            .collect();
        let kept = cap_per_node(replies);
        let count = |n: &str| kept.iter().filter(|(_, v)| v["node_id"] == n).count();
        assert_eq!(count("a"), MAX_BIDS_PER_NODE);
        assert_eq!(count("b"), MAX_BIDS_PER_NODE);
        assert_eq!(kept.len(), 2 * MAX_BIDS_PER_NODE + 1);
    }

    #[test]
    fn round_summary_names_the_silent_peers() {
        let from = |host: &str| {
            let mut h = Handle::default();
            h.addr.host = host.into();
            (h, json!({}))
        };
        let subs: HashSet<String> = ["P1", "P2"].iter().map(|s| s.to_string()).collect();
        let none = ReplyTiming::default();
        let all = round_summary(&[from("P1"), from("P2")], Some(&subs), none);
        assert_eq!(all, "bid round closed: all 2 subscribed peer(s) answered");
        let some = round_summary(&[from("P1")], Some(&subs), none);
        assert_eq!(some, "bid round closed with 1 answer(s); silent: P2");
        assert_eq!(
            round_summary(&[], None, none),
            "bid round closed with 0 answer(s)"
        );
        assert_eq!(silent_peers(&[from("P1")], Some(&subs)), vec!["P2"]);
        let timed = ReplyTiming {
            first: Some(Duration::from_millis(12)),
            last: Some(Duration::from_millis(340)),
        };
        assert_eq!(
            round_summary(&[from("P1"), from("P2")], Some(&subs), timed),
            "bid round closed: all 2 subscribed peer(s) answered \
             (first answer after 12 ms, last after 340 ms)"
        );
    }
}
