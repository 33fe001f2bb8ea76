//! The DMS daemon (`nunet run`): loads the node's identity and anchors, starts the libp2p
//! host and the actor system, registers the node's behaviors, serves the local REST API, and
//! shuts everything down cleanly.
//!
//! This crate wires and exposes; it does not implement cryptography, capability rules,
//! networking, the provider side or orchestration itself (those live in `did`, `capability`,
//! `actor`, `network`, `provider` and `orchestrator`).

pub mod api;
/// The node's behaviors (`/public/*`, `/dms/node/peers/*`).
pub mod behaviors;
/// Starting and stopping a node.
pub mod daemon;
pub mod limits;
pub mod logger;
pub mod metrics;
mod nunet_wire;
pub mod orchestrator;
pub mod revocations;
pub mod swarm_key;
/// Adapter from the actor layer to the libp2p network.
pub mod transport;
pub mod vm;

pub use daemon::{Node, NodeError, NodeOptions};
