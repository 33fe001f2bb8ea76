//! The provider side of a node: what a machine that rents out CPU, RAM, GPUs and disk does.
//! Onboarding and the resource behaviours over the node's accounting ([`onboarding`]);
//! bidding, the two-phase commit, allocation actors and their executions, per-ensemble
//! control and reconciliation after a restart ([`deployment`]); membership in ensemble
//! subnets ([`subnet`]); and link probes for edge constraints ([`probe`]). Messages are the
//! types of `nunet-protocol`.
//!
//! It must not orchestrate: it never asks for bids, places, or decides what an ensemble
//! needs (that is `nunet-orchestrator`, which this crate does not depend on); it answers the
//! orchestrator that allocated here and nobody else. Wiring it into a daemon is `nunet-node`'s
//! job.

pub mod deployment;
pub mod onboarding;
pub mod probe;
pub mod subnet;

pub use deployment::Provider;
