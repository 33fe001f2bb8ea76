//! Explanations for "nothing fits": which node has no usable bid and why, which edge no pair
//! of candidates can meet, or that only the combination fails.

use std::collections::BTreeMap;
use std::fmt;

use nunet_ensemble::units::{format_bandwidth, trim_float};
use serde::Serialize;

use crate::constraints::{LinkFailure, LinkStatus, Prepared, Rejection};

/// Why no placement was found, one finding per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Findings, most specific first.
    pub lines: Vec<String>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.lines.join("\n"))
    }
}

/// Pairs checked per edge at most when explaining (beyond it the edge is not analysed).
const MAX_PAIRS: usize = 4_000_000;

pub(crate) fn explain(p: &Prepared<'_>, steps: u64, cut_short: bool) -> Explanation {
    let mut lines = Vec::new();
    for (n, node) in p.problem.nodes.iter().enumerate() {
        if !p.candidates[n].is_empty() {
            continue;
        }
        let total = p.rejected[n].len();
        if total == 0 {
            lines.push(format!("node {}: no bids", node.name));
            continue;
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (_, why) in &p.rejected[n] {
            for r in why {
                let key = match r {
                    Rejection::OtherNode => continue,
                    Rejection::Resources(short) => {
                        for s in short {
                            *counts
                                .entry(format!("fail {}", s.requirement()))
                                .or_default() += 1;
                        }
                        continue;
                    }
                    Rejection::Location(rule) => format!("rejected by {rule}"),
                    Rejection::Excluded => "come from excluded peers".to_string(),
                    Rejection::NotPinned(peer) => format!("are not from the pinned peer {peer}"),
                };
                *counts.entry(key).or_default() += 1;
            }
        }
        let mut parts: Vec<(usize, String)> = counts
            .into_iter()
            .map(|(k, v)| (v, format!("{v} {k}")))
            .collect();
        parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let parts: Vec<String> = parts.into_iter().map(|(_, s)| s).collect();
        lines.push(format!(
            "node {}: 0 of {total} bids fit: {}",
            node.name,
            parts.join("; ")
        ));
    }
    if lines.is_empty() {
        if let Some(l) = distinct_peer_shortage(p) {
            lines.push(l);
        }
        lines.extend((0..p.problem.edges.len()).filter_map(|e| impossible_edge(p, e)));
    }
    if lines.is_empty() {
        lines.push(format!(
            "every node has candidates and every edge has some feasible pair, but no combination satisfies all constraints together ({steps} steps searched)"
        ));
    }
    if cut_short {
        lines.push(format!("search stopped after {steps} steps without a placement (raise Options::max_steps to search longer)"));
    }
    Explanation { lines }
}

/// Hall's condition via maximum matching of nodes to distinct peers.
fn distinct_peer_shortage(p: &Prepared<'_>) -> Option<String> {
    if !p.problem.distinct_peers {
        return None;
    }
    let peers = p.peer.iter().map(|x| *x as usize + 1).max().unwrap_or(0);
    let node_peers: Vec<Vec<usize>> = p
        .candidates
        .iter()
        .map(|c| {
            let mut v: Vec<usize> = c.iter().map(|b| p.peer[*b as usize] as usize).collect();
            v.sort_unstable();
            v.dedup();
            v
        })
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; peers];
    let mut unmatched = Vec::new();
    for n in 0..node_peers.len() {
        let mut seen = vec![false; peers];
        if !augment(n, &node_peers, &mut owner, &mut seen) {
            unmatched.push(p.problem.nodes[n].name.clone());
        }
    }
    if unmatched.is_empty() {
        return None;
    }
    let matched = node_peers.len() - unmatched.len();
    Some(format!(
        "each node needs its own peer, but the candidates cover only {matched} of {} nodes with distinct peers (left over: {})",
        node_peers.len(),
        unmatched.join(", ")
    ))
}

fn augment(
    n: usize,
    node_peers: &[Vec<usize>],
    owner: &mut [Option<usize>],
    seen: &mut [bool],
) -> bool {
    for &peer in &node_peers[n] {
        if seen[peer] {
            continue;
        }
        seen[peer] = true;
        if owner[peer].is_none_or(|o| augment(o, node_peers, owner, seen)) {
            owner[peer] = Some(n);
            return true;
        }
    }
    false
}

/// Describes edge `e` if no candidate pair can serve it.
fn impossible_edge(p: &Prepared<'_>, e: usize) -> Option<String> {
    let edge = &p.problem.edges[e];
    let (da, db) = (&p.candidates[edge.a], &p.candidates[edge.b]);
    if da.len().saturating_mul(db.len()) > MAX_PAIRS {
        return None;
    }
    let mut best_floor = f64::INFINITY;
    let mut best_bound: f64 = 0.0;
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for &i in da {
        for &j in db {
            match p.link(e, i, j) {
                LinkStatus::Satisfied | LinkStatus::Plausible => {
                    if !p.problem.distinct_peers || p.peer[i as usize] != p.peer[j as usize] {
                        return None;
                    }
                }
                LinkStatus::Infeasible(f) => {
                    let kind = match f {
                        LinkFailure::SpeedOfLight { floor_ms } => {
                            best_floor = best_floor.min(floor_ms);
                            "speed of light"
                        }
                        LinkFailure::TcpBound { bound_bps } => {
                            best_bound = best_bound.max(bound_bps);
                            "TCP throughput bound"
                        }
                        LinkFailure::Uplink { .. } => "uplink capacity",
                        LinkFailure::MeasuredRtt { .. } => "measured rtt",
                        LinkFailure::MeasuredBw { .. } => "measured bandwidth",
                    };
                    *kinds.entry(kind).or_default() += 1;
                }
            }
        }
    }
    let a = &p.problem.nodes[edge.a].name;
    let b = &p.problem.nodes[edge.b].name;
    let mut want = Vec::new();
    if let Some(r) = edge.max_rtt_ms {
        want.push(format!("rtt ≤ {} ms", trim_float(r)));
    }
    if let Some(bw) = edge.min_bw_bps {
        want.push(format!("bw ≥ {}", format_bandwidth(bw)));
    }
    let why: Vec<String> = kinds.iter().map(|(k, v)| format!("{v} by {k}")).collect();
    let mut line = format!(
        "edge {a} ↔ {b}: none of the {} candidate pairs can meet {} ({})",
        da.len() * db.len(),
        want.join(", "),
        why.join(", ")
    );
    if best_floor.is_finite() {
        line.push_str(&format!(
            "; the closest pair is {} ms apart at the speed of light",
            trim_float(best_floor)
        ));
    }
    if best_bound > 0.0 {
        line.push_str(&format!(
            "; the best TCP bound is {}",
            format_bandwidth(best_bound)
        ));
    }
    Some(line)
}
