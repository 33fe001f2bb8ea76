//! Placement: choosing which bidding peer runs each node of an ensemble.
//!
//! Input: a [`Problem`] (from an ensemble: per-node aggregate resources, location accept /
//! reject, pinned peers, excluded peers, edge constraints), the [`Bid`]s providers sent, and
//! the link [`Measurements`] made so far. Output: the best [`Placement`] by a documented score,
//! with the links still to measure, or a [`PlacementError`] whose [`Explanation`] says why
//! nothing fits ("node gpu-1: 0 of 7 bids fit: 7 fail vram ≥ 24GiB; 3 rejected by location
//! reject CN/AS").
//!
//! The search is backtracking with forward checking and a most-constrained-first node order
//! (see [`solve()`]), not random sampling. Before anything is measured, pairs are ruled out
//! physically: an RTT bound below the speed-of-light floor for the two peers' locations, or a
//! bandwidth above the TCP throughput bound for that RTT and loss (see [`geo`]).
//!
//! This crate is pure logic: no IO, no clocks, no randomness, no network. It must not
//! measure links or talk to peers; the orchestrator does that and feeds results back in. It
//! lives outside `orchestrator` so that its tests and benchmark build without the network
//! stack.
//!
//! ```
//! use nunet_ensemble::{Location, Resources};
//! use nunet_placement::{Bid, Measurements, Options, Problem, solve};
//!
//! let yaml = "allocations:\n  a: {executor: null, type: task, execution: {type: null},\n      resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}}\nnodes:\n  n1: {allocations: [a]}\n";
//! let ensemble = nunet_ensemble::parse_str(yaml, &Default::default()).unwrap().ensemble;
//! let problem = Problem::from_ensemble(&ensemble);
//! let mut free = Resources::default();
//! free.cpu.cores = 4.0;
//! free.ram.size = 8 << 30;
//! free.disk.size = 100 << 30;
//! let bids = vec![Bid::new("n1", "peer-a", Location::default(), free)];
//! let placement = solve(&problem, &bids, &Measurements::default(), &Options::default()).unwrap();
//! assert_eq!(placement.assignment[0].peer, "peer-a");
//! ```

pub mod constraints;
pub mod explain;
pub mod geo;
pub mod measure;
pub mod model;
pub mod solve;

pub use explain::Explanation;
pub use measure::{EdgeToMeasure, edges_to_measure};
pub use model::{
    Bid, EdgeRequirement, LinkHints, LinkMeasurement, Measurements, NodeRequest, Problem,
};
pub use solve::{Assigned, Options, Placement, solve};

/// Why no placement was returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// The search proved that no assignment satisfies the constraints.
    #[error("no placement satisfies the constraints:\n{0}")]
    Infeasible(Explanation),
    /// The step budget ran out before a placement was found.
    #[error("no placement found within {steps} search steps:\n{explanation}")]
    Exhausted {
        /// Steps searched.
        steps: u64,
        /// What is known about why.
        explanation: Explanation,
    },
    /// The problem itself is malformed.
    #[error("invalid placement problem: {0}")]
    InvalidProblem(String),
}
