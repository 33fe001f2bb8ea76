//! The search: backtracking over nodes with forward checking.
//!
//! * **Variable order**: the unassigned node with the fewest remaining candidates (most
//!   constrained first), ties broken by the most edge constraints.
//! * **Value order**: cheapest bid first.
//! * **Propagation**: after choosing a bid for a node, every constrained neighbour keeps only
//!   the candidates whose link to it is not ruled out (speed of light, TCP bound, uplink,
//!   measurements), and with distinct peers no other node keeps a bid from the same peer. An
//!   emptied candidate list backtracks at once.
//! * **Score** (lower is better): the sum of the chosen bids' prices plus `rtt_weight` × the
//!   sum over edge constraints of the best-known RTT (measured, else the speed-of-light floor).
//!   After the first solution the search continues as branch-and-bound (a partial cost plus
//!   the cheapest remaining candidate per node is a lower bound) for at most
//!   `improve_steps` more steps; `optimal` says whether it finished.

use nunet_ensemble::Resources;
use serde::Serialize;

use crate::PlacementError;
use crate::constraints::{LinkStatus, Prepared};
use crate::explain::explain;
use crate::measure::{EdgeToMeasure, edges_to_measure_prepared};
use crate::model::{Bid, Measurements, Problem};

/// Search limits and scoring weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Most search steps (bids tried) in total before giving up.
    pub max_steps: u64,
    /// Most steps spent looking for a better solution once one is found.
    pub improve_steps: u64,
    /// Price units per millisecond of RTT in the score.
    pub rtt_weight: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_steps: 200_000,
            improve_steps: 2_000,
            rtt_weight: 0.001,
        }
    }
}

/// Most nodes a problem may have (the search recurses once per node).
pub const MAX_NODES: usize = 4096;

/// A node and the bid chosen for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assigned {
    /// Node name.
    pub node: String,
    /// Chosen peer.
    pub peer: String,
    /// Index of the chosen bid in the input slice.
    pub bid: usize,
}

/// A found assignment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    /// One entry per node, in the problem's node order.
    pub assignment: Vec<Assigned>,
    /// Its score (lower is better; see the module docs).
    pub score: f64,
    /// Whether the search proved no better score exists.
    pub optimal: bool,
    /// Search steps used.
    pub steps: u64,
    /// Edges whose links are plausible but not measured yet: measure these, add the results
    /// to the [`Measurements`], and solve again.
    pub to_measure: Vec<EdgeToMeasure>,
}

impl Placement {
    /// The chosen bid index per node, in node order.
    pub fn bid_indices(&self) -> Vec<usize> {
        self.assignment.iter().map(|a| a.bid).collect()
    }
}

struct Search<'p, 'a> {
    p: &'p Prepared<'a>,
    opts: Options,
    domains: Vec<Vec<u32>>,
    chosen: Vec<Option<u32>>,
    /// Per peer (sharing mode): resources already placed on it.
    load: Vec<Resources>,
    steps: u64,
    first_at: Option<u64>,
    cut_short: bool,
    best: Option<(f64, Vec<u32>)>,
}

/// Finds the best assignment of bids to the problem's nodes.
pub fn solve(
    problem: &Problem,
    bids: &[Bid],
    meas: &Measurements,
    opts: &Options,
) -> Result<Placement, PlacementError> {
    if problem.nodes.is_empty() {
        return Err(PlacementError::InvalidProblem("no nodes to place".into()));
    }
    if problem.nodes.len() > MAX_NODES {
        return Err(PlacementError::InvalidProblem(format!(
            "more than {MAX_NODES} nodes"
        )));
    }
    if let Some(e) = problem
        .edges
        .iter()
        .find(|e| e.a >= problem.nodes.len() || e.b >= problem.nodes.len())
    {
        return Err(PlacementError::InvalidProblem(format!(
            "edge {}–{} names a node that does not exist",
            e.a, e.b
        )));
    }
    let p = Prepared::new(problem, bids, meas);
    let peers = p.peer.iter().map(|x| *x as usize + 1).max().unwrap_or(0);
    let mut s = Search {
        p: &p,
        opts: *opts,
        domains: p.candidates.clone(),
        chosen: vec![None; problem.nodes.len()],
        load: vec![Resources::default(); if problem.distinct_peers { 0 } else { peers }],
        steps: 0,
        first_at: None,
        cut_short: false,
        best: None,
    };
    if s.domains.iter().all(|d| !d.is_empty()) {
        s.dfs(0.0);
    }
    match s.best {
        Some((score, picks)) => {
            let assignment = picks
                .iter()
                .enumerate()
                .map(|(n, b)| Assigned {
                    node: problem.nodes[n].name.clone(),
                    peer: bids[*b as usize].peer.clone(),
                    bid: *b as usize,
                })
                .collect();
            let to_measure = edges_to_measure_prepared(&p, &picks);
            Ok(Placement {
                assignment,
                score,
                optimal: !s.cut_short,
                steps: s.steps,
                to_measure,
            })
        }
        None => {
            let explanation = explain(&p, s.steps, s.cut_short);
            if s.cut_short {
                Err(PlacementError::Exhausted {
                    steps: s.steps,
                    explanation,
                })
            } else {
                Err(PlacementError::Infeasible(explanation))
            }
        }
    }
}

impl Search<'_, '_> {
    fn out_of_steps(&self) -> bool {
        self.steps >= self.opts.max_steps
            || self
                .first_at
                .is_some_and(|f| self.steps - f >= self.opts.improve_steps)
    }

    fn pick_node(&self) -> Option<usize> {
        let mut best: Option<(usize, usize, usize)> = None;
        for (n, d) in self.domains.iter().enumerate() {
            if self.chosen[n].is_some() {
                continue;
            }
            let key = (d.len(), usize::MAX - self.p.adj[n].len(), n);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        best.map(|(_, _, n)| n)
    }

    fn lower_bound(&self, cost: f64) -> f64 {
        let bids = self.p.bids;
        cost + self
            .domains
            .iter()
            .zip(&self.chosen)
            .filter(|(_, c)| c.is_none())
            .map(|(d, _)| d.first().map_or(0.0, |b| bids[*b as usize].price))
            .sum::<f64>()
    }

    fn dfs(&mut self, cost: f64) {
        let Some(u) = self.pick_node() else {
            if self.best.as_ref().is_none_or(|(b, _)| cost < *b) {
                let picks = self.chosen.iter().map(|c| c.unwrap_or_default()).collect();
                self.best = Some((cost, picks));
                self.first_at.get_or_insert(self.steps);
            }
            return;
        };
        let options = self.domains[u].clone();
        for b in options {
            if self.out_of_steps() {
                self.cut_short = true;
                return;
            }
            self.steps += 1;
            let mut c = cost + self.p.bids[b as usize].price;
            for &(v, e) in &self.p.adj[u] {
                if let Some(bv) = self.chosen[v] {
                    c += self.opts.rtt_weight
                        * self.p.rtt_estimate(b, bv)
                        * f64::from(self.p.problem.edges[e].max_rtt_ms.is_some());
                }
            }
            if let Some((best, _)) = &self.best {
                // `lower_bound` counts u's cheapest candidate too; u is priced in `c` already.
                let own_min = self.domains[u]
                    .first()
                    .map_or(0.0, |f| self.p.bids[*f as usize].price);
                if self.lower_bound(c) - own_min >= *best {
                    continue;
                }
            }
            if !self.fits_shared(u, b) {
                continue;
            }
            let saved: Vec<(usize, Vec<u32>)> = self.assign(u, b);
            let alive = saved.iter().all(|(v, _)| !self.domains[*v].is_empty());
            if alive {
                self.dfs(c);
            }
            self.unassign(u, b, saved);
            if self.cut_short {
                return;
            }
        }
    }

    fn fits_shared(&self, u: usize, b: u32) -> bool {
        if self.p.problem.distinct_peers {
            return true;
        }
        let peer = self.p.peer[b as usize] as usize;
        let mut total = self.load[peer].clone();
        total.add(&self.p.problem.nodes[u].resources);
        total.satisfied_by(&self.p.bids[b as usize].free).is_ok()
    }

    /// Chooses `b` for `u` and filters the other domains; returns what to restore.
    fn assign(&mut self, u: usize, b: u32) -> Vec<(usize, Vec<u32>)> {
        self.chosen[u] = Some(b);
        if !self.p.problem.distinct_peers {
            let peer = self.p.peer[b as usize] as usize;
            self.load[peer].add(&self.p.problem.nodes[u].resources);
        }
        let mut saved = Vec::new();
        let p = self.p;
        for &(v, e) in &p.adj[u] {
            if self.chosen[v].is_some() {
                continue;
            }
            let keep: Vec<u32> = self.domains[v]
                .iter()
                .copied()
                .filter(|c| p.compatible(e, b, *c))
                .collect();
            if keep.len() != self.domains[v].len() {
                saved.push((v, std::mem::replace(&mut self.domains[v], keep)));
                if self.domains[v].is_empty() {
                    return saved;
                }
            }
        }
        if p.problem.distinct_peers {
            let peer = p.peer[b as usize];
            for v in 0..self.domains.len() {
                if self.chosen[v].is_some()
                    || !self.domains[v].iter().any(|c| p.peer[*c as usize] == peer)
                {
                    continue;
                }
                let keep: Vec<u32> = self.domains[v]
                    .iter()
                    .copied()
                    .filter(|c| p.peer[*c as usize] != peer)
                    .collect();
                saved.push((v, std::mem::replace(&mut self.domains[v], keep)));
                if self.domains[v].is_empty() {
                    return saved;
                }
            }
        }
        saved
    }

    fn unassign(&mut self, u: usize, b: u32, saved: Vec<(usize, Vec<u32>)>) {
        for (v, d) in saved.into_iter().rev() {
            self.domains[v] = d;
        }
        self.chosen[u] = None;
        if !self.p.problem.distinct_peers {
            let peer = self.p.peer[b as usize] as usize;
            let mut rest = Resources::default();
            // Rebuild the peer's load from the nodes still placed on it.
            for (n, c) in self.chosen.iter().enumerate() {
                if c.is_some_and(|c| self.p.peer[c as usize] as usize == peer) {
                    rest.add(&self.p.problem.nodes[n].resources);
                }
            }
            self.load[peer] = rest;
        }
    }
}

/// Whether `status` needs no further measurement.
pub(crate) fn settled(status: LinkStatus) -> bool {
    matches!(status, LinkStatus::Satisfied)
}
