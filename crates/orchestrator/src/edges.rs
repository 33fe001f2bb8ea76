//! Placement with edge constraints measured on real links (NUNET-FORMATS §2.2 step 1):
//! solve → measure the links the candidate assignment needs (by invoking
//! [`EDGE_CONSTRAINT`](nunet_protocol::names::EDGE_CONSTRAINT) on one end, [`EDGE_TIMEOUT`] each) → add the results to the
//! deployment's cache → solve again. A measured link that misses its bound rules that peer
//! pair out in the solver, so the next solution avoids it; pairs already measured are never
//! measured again for the deployment. Bounded by [`MAX_EDGE_ITERATIONS`].
//!
//! This module decides and records; it does not measure (the provider does, on
//! `/dms/deployment/constraint/edge`) and keeps no state of its own beyond the cache it is
//! given.

use std::collections::BTreeMap;
use std::future::Future;

use futures::future::join_all;
use nunet_ensemble::units::trim_float;
use nunet_placement::{
    Bid, EdgeToMeasure, LinkMeasurement, Measurements, Options, Placement, PlacementError, Problem,
    solve,
};
use nunet_protocol::calls::EdgeConstraint;
use nunet_protocol::{EDGE_TIMEOUT, EdgeReply, EdgeRequest};

/// Most solve → measure iterations per placement.
pub const MAX_EDGE_ITERATIONS: usize = 16;
/// Most measured links named in a failure reason.
const MAX_REASON_LINKS: usize = 8;

/// A provider's edge reply as a placement measurement.
pub fn measurement(r: &EdgeReply) -> LinkMeasurement {
    LinkMeasurement {
        rtt_ms: r.rtt_ms,
        bw_bps: r.bandwidth_mbps.map(|m| m * 1e6),
    }
}

/// One link measured (or that could not be) for a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredEdge {
    /// The two ensemble nodes of the edge.
    pub nodes: (String, String),
    /// The two peers measured.
    pub peers: (String, String),
    /// What was measured, or why it could not be.
    pub result: Result<LinkMeasurement, String>,
}

impl std::fmt::Display for MeasuredEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "edge {}–{}: ", self.nodes.0, self.nodes.1)?;
        match &self.result {
            Ok(m) => {
                write!(f, "rtt {} ms", trim_float(round2(m.rtt_ms)))?;
                if let Some(bw) = m.bw_bps {
                    write!(f, ", {} Mbit/s", trim_float((bw / 1e6).round()))?;
                }
                Ok(())
            }
            Err(e) => write!(f, "not measurable ({e})"),
        }?;
        write!(
            f,
            " between {} and {}",
            short(&self.peers.0),
            short(&self.peers.1)
        )
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The end of a peer id, enough to tell peers apart in a message.
fn short(peer: &str) -> &str {
    let n = peer.len();
    peer.get(n.saturating_sub(8)..).unwrap_or(peer)
}

/// A deployment's link measurements: the solver's cache plus what was measured, in order.
#[derive(Debug, Clone, Default)]
pub struct EdgeCache {
    /// What the solver reads.
    pub measurements: Measurements,
    /// Every link measured so far, in order.
    pub log: Vec<MeasuredEdge>,
}

impl EdgeCache {
    fn record(&mut self, m: MeasuredEdge) {
        let link = match &m.result {
            Ok(l) => {
                // A later RTT-only measurement keeps an earlier bandwidth.
                let earlier = self.measurements.get(&m.peers.0, &m.peers.1).copied();
                LinkMeasurement {
                    rtt_ms: l.rtt_ms,
                    bw_bps: l.bw_bps.or(earlier.and_then(|e| e.bw_bps)),
                }
            }
            // An unmeasurable link meets no bound.
            Err(_) => LinkMeasurement {
                rtt_ms: f64::INFINITY,
                bw_bps: Some(0.0),
            },
        };
        self.measurements.insert(&m.peers.0, &m.peers.1, link);
        self.log.push(m);
    }

    /// The last measurement of each measured pair, as text (at most a few).
    fn summary(&self) -> String {
        let mut last: BTreeMap<(String, String), &MeasuredEdge> = BTreeMap::new();
        for m in &self.log {
            let (a, b) = &m.peers;
            let k = if a <= b {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            last.insert(k, m);
        }
        let mut lines: Vec<String> = last
            .values()
            .take(MAX_REASON_LINKS)
            .map(|m| m.to_string())
            .collect();
        if last.len() > MAX_REASON_LINKS {
            lines.push(format!("… and {} more", last.len() - MAX_REASON_LINKS));
        }
        lines.join("; ")
    }
}

/// Why placement with measured edges failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EdgeError {
    /// No assignment meets every constraint with the links measured so far.
    #[error("{source}{}", measured_suffix(.measured))]
    NoPlacement {
        /// The solver's explanation (names the edge).
        source: PlacementError,
        /// The measured links, as text.
        measured: String,
    },
    /// Every iteration found new links to measure.
    #[error("edge measurements did not settle after {iterations} placements; measured: {measured}")]
    NotSettled {
        /// Iterations run.
        iterations: usize,
        /// The measured links, as text.
        measured: String,
    },
}

fn measured_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!("\nmeasured: {m}")
    }
}

/// The bounds of the edges between the two nodes of `t`: (max RTT ms, min bandwidth Mbit/s).
/// The bandwidth bound is only given when `t` asks for bandwidth.
pub fn bounds_of(problem: &Problem, t: &EdgeToMeasure) -> (Option<f64>, Option<f64>) {
    let (a, b) = (
        problem.node_index(&t.nodes.0),
        problem.node_index(&t.nodes.1),
    );
    let between = problem
        .edges
        .iter()
        .filter(|e| (Some(e.a), Some(e.b)) == (a, b) || (Some(e.b), Some(e.a)) == (a, b));
    let mut rtt: Option<f64> = None;
    let mut bw: Option<f64> = None;
    for e in between {
        if let Some(r) = e.max_rtt_ms {
            rtt = Some(rtt.map_or(r, |x| x.min(r)));
        }
        if let Some(w) = e.min_bw_bps {
            bw = Some(bw.map_or(w, |x| x.max(w)));
        }
    }
    if t.bandwidth && bw.is_none() {
        // The pair also serves another edge that asks for bandwidth.
        bw = problem
            .edges
            .iter()
            .filter_map(|e| e.min_bw_bps)
            .reduce(f64::max);
    }
    (rtt, bw.filter(|_| t.bandwidth).map(|b| b / 1e6))
}

/// Solves `problem`, measuring the links each candidate needs with `measure` (all links of
/// one candidate at once) until a candidate needs no more, recording every measurement in
/// `cache` and reporting it to `on_measured` as it arrives.
pub async fn solve_measured<M, Fut>(
    problem: &Problem,
    bids: &[Bid],
    cache: &mut EdgeCache,
    measure: M,
    mut on_measured: impl FnMut(&MeasuredEdge),
) -> Result<Placement, EdgeError>
where
    M: Fn(EdgeToMeasure) -> Fut,
    Fut: Future<Output = Result<LinkMeasurement, String>>,
{
    for _ in 0..MAX_EDGE_ITERATIONS {
        let placement =
            solve(problem, bids, &cache.measurements, &Options::default()).map_err(|source| {
                EdgeError::NoPlacement {
                    source,
                    measured: cache.summary(),
                }
            })?;
        if placement.to_measure.is_empty() {
            return Ok(placement);
        }
        let todo = placement.to_measure.clone();
        let results = join_all(todo.iter().cloned().map(&measure)).await;
        for (t, result) in todo.into_iter().zip(results) {
            let m = MeasuredEdge {
                nodes: t.nodes,
                peers: t.peers,
                result,
            };
            on_measured(&m);
            cache.record(m);
        }
    }
    Err(EdgeError::NotSettled {
        iterations: MAX_EDGE_ITERATIONS,
        measured: cache.summary(),
    })
}

impl crate::engine::Engine {
    /// Places with the deployment's edge cache, invoking [`EDGE_CONSTRAINT`](nunet_protocol::names::EDGE_CONSTRAINT) on the first
    /// peer of each link to measure (`offers` are the verified bids behind `bids`, for their
    /// handles). Every measurement becomes a deployment event.
    pub(crate) async fn solve_with_edges(
        &self,
        problem: &Problem,
        bids: &[Bid],
        offers: &[&nunet_protocol::Bid],
    ) -> Result<Placement, crate::engine::RoundError> {
        let mut cache = self.edges.lock().map(|c| c.clone()).unwrap_or_default();
        let measure = |t: EdgeToMeasure| {
            let from = offers
                .iter()
                .find(|b| b.peer == t.peers.0)
                .map(|b| b.handle.clone());
            let (rtt_ms, bandwidth_mbps) = bounds_of(problem, &t);
            let req = EdgeRequest {
                peer: t.peers.1.clone(),
                rtt_ms,
                bandwidth_mbps,
            };
            async move {
                let from = from.ok_or_else(|| format!("no bid from {}", t.peers.0))?;
                let r = self
                    .call::<EdgeConstraint>(&from, &req, EDGE_TIMEOUT)
                    .await
                    .map_err(|e| e.message)?;
                check_reply(&r, req.bandwidth_mbps.is_some())?;
                Ok(measurement(&r))
            }
        };
        let r = solve_measured(problem, bids, &mut cache, measure, |m| {
            self.event(m.to_string())
        })
        .await;
        if let Ok(mut c) = self.edges.lock() {
            *c = cache;
        }
        r.map_err(|e| crate::engine::RoundError::Retry(e.to_string(), Vec::new()))
    }
}

/// Refuses replies no honest measurement produces.
fn check_reply(r: &EdgeReply, bandwidth_asked: bool) -> Result<(), String> {
    if !r.rtt_ms.is_finite() || r.rtt_ms < 0.0 {
        return Err(format!("bad edge reply: rtt {}", r.rtt_ms));
    }
    match r.bandwidth_mbps {
        Some(b) if !b.is_finite() || b < 0.0 => Err(format!("bad edge reply: bandwidth {b}")),
        None if bandwidth_asked => Err("bad edge reply: bandwidth not measured".into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
