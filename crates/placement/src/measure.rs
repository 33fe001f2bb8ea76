//! Which links of a candidate assignment still need measuring.
//!
//! The solver accepts a link that no bound rules out even when it was never measured. Before
//! committing, the orchestrator measures exactly the links returned here (via
//! `/dms/deployment/constraint/edge`), adds the results to its [`Measurements`] cache and
//! solves again: a measured link that fails its constraint then rules that pair out, and
//! links already measured are never measured twice. The loop ends when this list is empty.

use serde::{Deserialize, Serialize};

use crate::constraints::{LinkStatus, Prepared};
use crate::model::{Bid, Measurements, Problem};
use crate::solve::settled;

/// One link to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeToMeasure {
    /// The two nodes of the edge constraint.
    pub nodes: (String, String),
    /// The peers currently chosen for them.
    pub peers: (String, String),
    /// Whether the RTT must be measured.
    pub rtt: bool,
    /// Whether the bandwidth must be measured.
    pub bandwidth: bool,
}

/// The unmeasured links of an assignment (`assignment[n]` = index of the bid chosen for node
/// `n`). Each peer pair appears once even when several edges join it.
pub fn edges_to_measure(
    problem: &Problem,
    bids: &[Bid],
    assignment: &[usize],
    meas: &Measurements,
) -> Vec<EdgeToMeasure> {
    if assignment.len() != problem.nodes.len() || assignment.iter().any(|b| *b >= bids.len()) {
        return Vec::new();
    }
    let p = Prepared::new(problem, bids, meas);
    let picks: Vec<u32> = assignment.iter().map(|b| *b as u32).collect();
    edges_to_measure_prepared(&p, &picks)
}

pub(crate) fn edges_to_measure_prepared(p: &Prepared<'_>, picks: &[u32]) -> Vec<EdgeToMeasure> {
    let mut out: Vec<EdgeToMeasure> = Vec::new();
    for (e, edge) in p.problem.edges.iter().enumerate() {
        let (Some(&i), Some(&j)) = (picks.get(edge.a), picks.get(edge.b)) else {
            continue;
        };
        let status = p.link(e, i, j);
        if settled(status) || matches!(status, LinkStatus::Infeasible(_)) {
            continue;
        }
        let measured = p.measurement(i, j);
        let rtt = edge.max_rtt_ms.is_some() && measured.is_none();
        let bandwidth = edge.min_bw_bps.is_some() && measured.is_none_or(|m| m.bw_bps.is_none());
        let peers = (
            p.bids[i as usize].peer.clone(),
            p.bids[j as usize].peer.clone(),
        );
        if let Some(existing) = out.iter_mut().find(|o| {
            (o.peers.0 == peers.0 && o.peers.1 == peers.1)
                || (o.peers.0 == peers.1 && o.peers.1 == peers.0)
        }) {
            existing.rtt |= rtt;
            existing.bandwidth |= bandwidth;
            continue;
        }
        let nodes = (
            p.problem.nodes[edge.a].name.clone(),
            p.problem.nodes[edge.b].name.clone(),
        );
        out.push(EdgeToMeasure {
            nodes,
            peers,
            rtt,
            bandwidth,
        });
    }
    out
}
