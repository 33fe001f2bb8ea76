//! The constraints, prepared for fast checking: which bids may serve which node (resources,
//! location, pinning, exclusion) and whether two bids may serve the two ends of an edge
//! (measurements when present, physical bounds otherwise).

use std::collections::HashMap;
use std::fmt;

use nunet_ensemble::Shortfall;
use nunet_ensemble::units::{format_bandwidth, trim_float};

use crate::geo::{EARTH_RADIUS_KM, KM_PER_RTT_MS, min_dot_for_rtt, tcp_throughput_bound_bps};
use crate::model::{Bid, LinkMeasurement, Measurements, Problem};

/// Why a bid cannot serve a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// The bid is for another node name.
    OtherNode,
    /// Resources fall short.
    Resources(Vec<Shortfall>),
    /// The location is refused (the text names the rule).
    Location(String),
    /// The peer is in `exclude_peers`.
    Excluded,
    /// The node is pinned to another peer.
    NotPinned(String),
}

/// Why two bids cannot serve the ends of an edge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkFailure {
    /// The speed-of-light floor already exceeds the allowed RTT.
    SpeedOfLight {
        /// Floor, ms.
        floor_ms: f64,
    },
    /// The TCP throughput bound for the link's RTT and loss is below the bandwidth asked.
    TcpBound {
        /// Bound, bits/s.
        bound_bps: f64,
    },
    /// An uplink is slower than the bandwidth asked.
    Uplink {
        /// Slowest uplink, bits/s.
        uplink_bps: f64,
    },
    /// The measured RTT is too high.
    MeasuredRtt {
        /// Measured, ms.
        rtt_ms: f64,
    },
    /// The measured bandwidth is too low.
    MeasuredBw {
        /// Measured, bits/s.
        bw_bps: f64,
    },
}

impl fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkFailure::SpeedOfLight { floor_ms } => {
                write!(f, "speed-of-light floor {} ms", trim_float(*floor_ms))
            }
            LinkFailure::TcpBound { bound_bps } => {
                write!(f, "TCP throughput bound {}", format_bandwidth(*bound_bps))
            }
            LinkFailure::Uplink { uplink_bps } => {
                write!(f, "uplink {}", format_bandwidth(*uplink_bps))
            }
            LinkFailure::MeasuredRtt { rtt_ms } => {
                write!(f, "measured rtt {} ms", trim_float(*rtt_ms))
            }
            LinkFailure::MeasuredBw { bw_bps } => {
                write!(f, "measured bandwidth {}", format_bandwidth(*bw_bps))
            }
        }
    }
}

/// The state of one edge for one pair of bids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkStatus {
    /// Known to hold (measured, or both ends on the same peer).
    Satisfied,
    /// Not excluded by any bound, but not measured yet.
    Plausible,
    /// Cannot hold.
    Infeasible(LinkFailure),
}

/// Bids and measurements indexed for the search.
pub(crate) struct Prepared<'a> {
    pub problem: &'a Problem,
    pub bids: &'a [Bid],
    /// Interned peer per bid.
    pub peer: Vec<u32>,
    /// Unit vector per bid, when its position is known.
    unit: Vec<Option<[f64; 3]>>,
    /// Per node: bids that pass the unary constraints, cheapest first.
    pub candidates: Vec<Vec<u32>>,
    /// Per node: bids for this node that were rejected, with why.
    pub rejected: Vec<Vec<(u32, Vec<Rejection>)>>,
    /// Per node: (other node, edge index).
    pub adj: Vec<Vec<(usize, usize)>>,
    min_dot: Vec<f64>,
    measured: HashMap<(u32, u32), LinkMeasurement>,
}

impl<'a> Prepared<'a> {
    pub fn new(problem: &'a Problem, bids: &'a [Bid], meas: &Measurements) -> Self {
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let peer: Vec<u32> = bids
            .iter()
            .map(|b| {
                let n = ids.len() as u32;
                *ids.entry(b.peer.as_str()).or_insert(n)
            })
            .collect();
        let unit = bids
            .iter()
            .map(|b| b.position().map(|p| p.unit()))
            .collect();
        let mut measured = HashMap::new();
        if !meas.is_empty() {
            let names: Vec<(&str, u32)> = ids.iter().map(|(k, v)| (*k, *v)).collect();
            for (i, (a, ia)) in names.iter().enumerate() {
                for (b, ib) in &names[i + 1..] {
                    if let Some(m) = meas.get(a, b) {
                        measured.insert(((*ia).min(*ib), (*ia).max(*ib)), *m);
                    }
                }
            }
        }
        let mut candidates = vec![Vec::new(); problem.nodes.len()];
        let mut rejected = vec![Vec::new(); problem.nodes.len()];
        for (i, bid) in bids.iter().enumerate() {
            let Some(n) = problem.node_index(&bid.node) else {
                continue;
            };
            let why = unary(problem, n, bid);
            if why.is_empty() {
                candidates[n].push(i as u32)
            } else {
                rejected[n].push((i as u32, why))
            }
        }
        for c in &mut candidates {
            c.sort_by(|x, y| bids[*x as usize].price.total_cmp(&bids[*y as usize].price));
        }
        let mut adj = vec![Vec::new(); problem.nodes.len()];
        for (e, edge) in problem.edges.iter().enumerate() {
            if edge.a < adj.len() && edge.b < adj.len() && edge.a != edge.b {
                adj[edge.a].push((edge.b, e));
                adj[edge.b].push((edge.a, e));
            }
        }
        let min_dot = problem
            .edges
            .iter()
            .map(|e| e.max_rtt_ms.map_or(-2.0, min_dot_for_rtt))
            .collect();
        Prepared {
            problem,
            bids,
            peer,
            unit,
            candidates,
            rejected,
            adj,
            min_dot,
            measured,
        }
    }

    fn dot(&self, i: u32, j: u32) -> Option<f64> {
        let (a, b) = (self.unit[i as usize]?, self.unit[j as usize]?);
        Some(a[0] * b[0] + a[1] * b[1] + a[2] * b[2])
    }

    /// Speed-of-light floor between two bids, ms (0 when a position is unknown).
    pub fn floor_ms(&self, i: u32, j: u32) -> f64 {
        self.dot(i, j).map_or(0.0, |d| {
            d.clamp(-1.0, 1.0).acos() * EARTH_RADIUS_KM / KM_PER_RTT_MS
        })
    }

    pub fn measurement(&self, i: u32, j: u32) -> Option<&LinkMeasurement> {
        if self.measured.is_empty() {
            return None;
        }
        let (a, b) = (self.peer[i as usize], self.peer[j as usize]);
        self.measured.get(&(a.min(b), a.max(b)))
    }

    /// Best-known RTT estimate: measured, else the physical floor.
    pub fn rtt_estimate(&self, i: u32, j: u32) -> f64 {
        if self.peer[i as usize] == self.peer[j as usize] {
            return 0.0;
        }
        self.measurement(i, j)
            .map_or_else(|| self.floor_ms(i, j), |m| m.rtt_ms)
    }

    /// The status of edge `e` when bids `i` and `j` serve its two ends (either order).
    pub fn link(&self, e: usize, i: u32, j: u32) -> LinkStatus {
        if self.peer[i as usize] == self.peer[j as usize] {
            return LinkStatus::Satisfied;
        }
        let edge = &self.problem.edges[e];
        if let Some(m) = self.measurement(i, j) {
            if edge.max_rtt_ms.is_some_and(|max| m.rtt_ms > max) {
                return LinkStatus::Infeasible(LinkFailure::MeasuredRtt { rtt_ms: m.rtt_ms });
            }
            let Some(min_bw) = edge.min_bw_bps else {
                return LinkStatus::Satisfied;
            };
            return match m.bw_bps {
                Some(bw) if bw < min_bw => {
                    LinkStatus::Infeasible(LinkFailure::MeasuredBw { bw_bps: bw })
                }
                Some(_) => LinkStatus::Satisfied,
                None => self.bandwidth_bound(i, j, min_bw, m.rtt_ms),
            };
        }
        if edge.max_rtt_ms.is_some()
            && let Some(d) = self.dot(i, j)
            && d < self.min_dot[e]
        {
            return LinkStatus::Infeasible(LinkFailure::SpeedOfLight {
                floor_ms: self.floor_ms(i, j),
            });
        }
        match edge.min_bw_bps {
            Some(min_bw) => self.bandwidth_bound(i, j, min_bw, self.floor_ms(i, j)),
            None if edge.max_rtt_ms.is_none() => LinkStatus::Satisfied,
            None => LinkStatus::Plausible,
        }
    }

    fn bandwidth_bound(&self, i: u32, j: u32, min_bw: f64, rtt_ms: f64) -> LinkStatus {
        let (a, b) = (&self.bids[i as usize].link, &self.bids[j as usize].link);
        let uplink = match (a.uplink_bps, b.uplink_bps) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        if let Some(u) = uplink
            && u < min_bw
        {
            return LinkStatus::Infeasible(LinkFailure::Uplink { uplink_bps: u });
        }
        let loss = a.loss.unwrap_or(0.0).max(b.loss.unwrap_or(0.0));
        let bound = tcp_throughput_bound_bps(rtt_ms, loss);
        if bound < min_bw {
            return LinkStatus::Infeasible(LinkFailure::TcpBound { bound_bps: bound });
        }
        LinkStatus::Plausible
    }

    /// Whether the pair may serve edge `e`.
    #[inline]
    pub fn compatible(&self, e: usize, i: u32, j: u32) -> bool {
        !matches!(self.link(e, i, j), LinkStatus::Infeasible(_))
    }
}

/// Every reason a bid cannot serve node `n` (empty when it can).
pub fn unary(problem: &Problem, n: usize, bid: &Bid) -> Vec<Rejection> {
    let node = &problem.nodes[n];
    let mut why = Vec::new();
    if bid.node != node.name {
        why.push(Rejection::OtherNode);
        return why;
    }
    if problem.exclude_peers.contains(&bid.peer) {
        why.push(Rejection::Excluded);
    }
    if let Some(pin) = &node.peer
        && *pin != bid.peer
    {
        why.push(Rejection::NotPinned(pin.clone()));
    }
    if let Some(r) = node.location.refusal(&bid.location) {
        why.push(Rejection::Location(r));
    }
    if let Err(s) = node.resources.satisfied_by(&bid.free) {
        why.push(Rejection::Resources(s));
    }
    why
}
