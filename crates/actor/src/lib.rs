//! The actor layer of the DMS: signed envelopes between handles, a behavior registry per
//! actor, and dispatch that authenticates every message (signature, expiry, replay,
//! capability chain against the node's anchors) **before** any behavior runs.
//!
//! Transport is pluggable ([`Transport`]): the node plugs in libp2p; tests can plug in
//! anything that moves bytes. Local actors are dispatched without any transport.
//!
//! This crate must not open sockets, read configuration or decide policy beyond the
//! capability rules: behaviors decide what they do, the network decides how bytes move.

pub mod broadcast;
pub mod dispatch;
pub mod envelope;
pub mod metrics;
/// Replies: the outcome of an invocation.
pub mod reply;
/// Replay protection and the checks run on every incoming envelope.
pub mod security;
/// The actor system: actors, behaviors, invoke / send / broadcast, dispatch.
pub mod system;
pub mod trace;

pub use broadcast::BroadcastReplies;
pub use envelope::{
    Address, Envelope, EnvelopeError, Handle, MAX_ENVELOPE_BYTES, Options, next_nonce,
};
pub use reply::{ActorError, ErrorKind, Reply};
pub use security::ReplayCache;
pub use system::{
    ActorSystem, Behavior, BehaviorKind, Incoming, SystemConfig, Transport, TransportError,
};
