//! The DMS daemon (`nunet run`): loads the node's identity and anchors, starts the libp2p
//! host and the actor system, registers the node's behaviors, serves the local REST API, and
//! shuts everything down cleanly.
//!
//! This crate wires and exposes; it does not implement cryptography, capability rules or
//! networking itself (those live in `did`, `capability`, `actor` and `network`).

/// Local REST API (loopback only).
pub mod api;
/// The node's behaviors (`/public/*`, `/dms/node/peers/*`).
pub mod behaviors;
/// Starting and stopping a node.
pub mod daemon;
/// Deployments: provider behaviors, allocation actors, and the orchestrator's wiring.
pub mod deployment;
/// Onboarding, resources and hardware behaviors.
pub mod onboarding;
/// Link measurements for edge constraints: RTT and the `/nunet/probe/1.0.0` throughput probe.
pub mod probe;
/// Ensemble subnets on this provider: data path, host plumbing, DNS, sandboxes.
pub mod subnet;
/// Adapter from the actor layer to the libp2p network.
pub mod transport;
/// `/dms/node/vm/*`: custom microVMs through the VM executor.
pub mod vm;

pub use daemon::{Node, NodeError, NodeOptions};
