//! The node's libp2p host: it moves bytes between DMS nodes and nothing more.
//!
//! [`start`] builds one libp2p swarm (TCP + QUIC, noise, yamux, or TCP only inside a private
//! swarm keyed by a pre-shared key), joins the `/nunet` Kademlia DHT through the configured
//! bootstrap peers, and hands back a cloneable [`Network`] handle plus a stream of
//! [`NetEvent`]s. A background task owns the swarm; the handle talks to it through a bounded
//! command channel, so every call is cheap to clone and safe to use from any task.
//!
//! What it carries:
//! - unicast requests on the request-response protocol [`ACTOR_PROTOCOL`]
//!   (`/nunet/actor/1.0.0`, varint length-prefixed raw bytes, at most
//!   [`NetConfig::max_message_bytes`] each way);
//! - gossipsub broadcasts (signed messages, strict validation, flood publish);
//! - raw libp2p streams for bulk transfers ([`Network::streams`]);
//! - NuNet's actor messages: one stream per message on `actor/<inbox>/messages/0.0.1`
//!   ([`Network::accept_nunet`], [`Network::send_nunet`]); NuNet's slash-less protocol names
//!   are translated on every substream ([`legacy_ids`]);
//! - a roster of the nodes on the swarm and the gossip topics they serve (announced on
//!   [`ROSTER_TOPIC`], pulled once on joining over [`ROSTER_PROTOCOL`]), so a broadcast's
//!   sender knows who should answer ([`Network::topic_peers`]);
//! - peer discovery and routing (identify, Kademlia with the private protocol
//!   [`KAD_PROTOCOL`], periodic random walks), liveness (ping), NAT traversal (relay client
//!   and optional relay server, DCUtR, AutoNAT).
//!
//! What it must not do: it never decodes actor envelopes, checks signatures on them, or
//! decides who may do what. Payloads are opaque bytes; authorization belongs to the actor
//! layer above, which must treat every byte that arrives here as untrusted.

mod behaviour;
mod codec;
mod command;
/// Configuration of the host: keys, addresses, bootstrap peers, limits.
pub mod config;
mod events;
mod handle;
pub mod legacy_ids;
mod limits;
mod nunet_wire;
pub mod paths;
mod reach;
pub mod roster;
pub mod rtt;
pub mod slots;
mod swarm_task;

use std::time::Duration;

pub use config::{NetConfig, NetLimits, RelayLimits};
pub use handle::{Network, PING_PROTOCOL, start, start_metered};
pub use libp2p::{Multiaddr, PeerId};
pub use nunet_wire::{MAX_NUNET_FRAME, NuNetFrame, nunet_protocol};
pub use paths::Paths;
pub use reach::{MAX_AUTO_RELAYS, NatStatus, Reachability, RelayInfo};
pub use roster::{
    ROSTER_PROTOCOL, ROSTER_TOPIC, RosterError, RosterInfo, decode_announcement, decode_snapshot,
};
pub use rtt::{RttEstimate, Rtts};

/// Request-response protocol that carries actor messages between nodes.
pub const ACTOR_PROTOCOL: &str = "/nunet/actor/1.0.0";
/// Kademlia protocol name: private to NuNet so that the DHT never mixes with the IPFS one.
pub const KAD_PROTOCOL: &str = "/nunet/kad/1.0.0";
/// Identify protocol version string announced by this host.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/nunet/1.0.0";

/// What went wrong in a network operation.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The transport or swarm could not be built (bad key, unsupported address…).
    #[error("cannot build the libp2p host: {0}")]
    Setup(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address that was refused.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Dialing failed; the peer is unreachable on the given addresses.
    #[error("dial failed: {0}")]
    Dial(String),
    /// The remote peer did not answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A request failed on the way out or back (connection closed, unsupported protocol,
    /// the remote handler dropped the request without answering…).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer we asked.
        peer: PeerId,
        /// Why it failed.
        reason: String,
    },
    /// A payload exceeds [`NetConfig::max_message_bytes`].
    #[error("payload of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Subscribing to or publishing on a gossip topic failed (for example no peer is
    /// subscribed to the topic yet: wait for [`NetEvent::Subscribed`]).
    #[error("gossip on {topic}: {reason}")]
    Gossip {
        /// The topic.
        topic: String,
        /// Why it failed.
        reason: String,
    },
    /// The DHT lookup did not find the peer.
    #[error("peer {0} not found in the DHT")]
    NotFound(PeerId),
    /// Opening a raw stream (ping, bulk) failed.
    #[error("stream to {peer} failed: {reason}")]
    Stream {
        /// The peer.
        peer: PeerId,
        /// Why it failed.
        reason: String,
    },
    /// The swarm task has stopped ([`Network::shutdown`] was called or it crashed).
    #[error("the network host is shut down")]
    Closed,
}

/// An event from the swarm to the layer above.
#[derive(Debug)]
pub enum NetEvent {
    /// A remote peer sent a request on [`ACTOR_PROTOCOL`]. Answer through `reply`; dropping
    /// `reply` closes the stream, and the remote sees an error at once instead of a timeout.
    Request {
        /// The authenticated (noise) sender of the request.
        peer: PeerId,
        /// The request bytes, at most [`NetConfig::max_message_bytes`]. Untrusted.
        payload: Vec<u8>,
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<Vec<u8>>,
    },
    /// A gossip message arrived on a subscribed topic (each message is delivered once).
    Gossip {
        /// The topic it was published on.
        topic: String,
        /// The signed author of the message (always present with strict validation).
        source: Option<PeerId>,
        /// The message bytes. Untrusted.
        payload: Vec<u8>,
    },
    /// The first connection to a peer was established.
    PeerConnected(PeerId),
    /// The last connection to a peer was closed.
    PeerDisconnected(PeerId),
    /// A remote peer subscribed to a gossip topic.
    Subscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: String,
    },
}

/// What this host knows about a connected peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    /// The peer's id (derived from its DID key).
    pub peer_id: PeerId,
    /// Addresses: the remote endpoints of open connections, then the listen addresses the
    /// peer announced through identify.
    pub addrs: Vec<Multiaddr>,
    /// The remote ends of open direct (not relayed) connections only: addresses this node
    /// actually reached the peer at, never ones the peer only announced.
    pub endpoints: Vec<Multiaddr>,
    /// Round-trip time of the latest successful ping, if any.
    pub rtt: Option<Duration>,
    /// Every open connection to the peer goes through a circuit relay (no direct one).
    pub relayed: bool,
    /// Agent version from identify (e.g. `nunet-rs/0.1.0`).
    pub agent_version: Option<String>,
    /// Protocols the peer announced through identify.
    pub protocols: Vec<String>,
    /// The peer's gossipsub score (0 for a fresh, well-behaved peer; negative when it
    /// misbehaves), if gossipsub knows the peer.
    pub gossip_score: Option<f64>,
}

impl PeerInfo {
    /// The IPv4 address this node reached the peer at over a direct (not relayed)
    /// connection, if any: for side channels that must go to the peer itself, never to an
    /// address it only announced.
    pub fn direct_ipv4(&self) -> Option<std::net::IpAddr> {
        direct_ipv4(&self.endpoints)
    }
}

/// The first IPv4 address among `addrs` that is not a relay circuit.
pub fn direct_ipv4(addrs: &[Multiaddr]) -> Option<std::net::IpAddr> {
    use libp2p::multiaddr::Protocol;
    addrs.iter().find_map(|a| {
        if a.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            return None;
        }
        a.iter().find_map(|p| match p {
            Protocol::Ip4(ip) if !ip.is_unspecified() => Some(std::net::IpAddr::V4(ip)),
            _ => None,
        })
    })
}
