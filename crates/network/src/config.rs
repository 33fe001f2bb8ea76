use std::time::Duration;

use libp2p::{Multiaddr, identity::Keypair};

/// Default for [`NetConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`NetConfig::max_message_bytes`]: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Connections with no open stream are kept this long before closing.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Relay server: how long one relayed circuit may live by default (libp2p's default is 2 min).
pub const RELAY_MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(15 * 60);
/// Relay server: how many bytes one relayed circuit may carry by default, both directions
/// counted together (libp2p's default is 128 KiB).
pub const RELAY_MAX_CIRCUIT_BYTES: u64 = 256 * 1024 * 1024;
/// Default file-descriptor budget of the host (the `p2p.fd` default), see
/// [`NetLimits::from_budget`].
pub const DEFAULT_FD_BUDGET: u64 = 512;
/// Default memory budget of the host (the `p2p.memory` default, 1 GiB), see
/// [`NetLimits::max_memory_bytes`].
pub const DEFAULT_MEMORY_BUDGET: u64 = 1024 * 1024 * 1024;
/// Smallest file-descriptor budget [`NetLimits::from_budget`] works with.
pub const MIN_FD_BUDGET: u64 = 16;
/// Default for [`NetLimits::max_established_per_peer`]: room for TCP, QUIC, a relayed
/// connection and the direct one that replaces it, dialed from both sides at once.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: u32 = 8;
/// Default for [`NetLimits::max_streams_per_connection`] (yamux's own default is 512).
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 256;
/// Default for [`NetLimits::max_concurrent_requests`] (request-response's own default is 100).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;

/// Bounds on what remote peers can make the host hold: connections (each TCP connection,
/// pending or established, holds one file descriptor), streams per connection, requests in
/// flight per connection, and the process memory above which inbound connections are refused.
///
/// A connection over a limit is closed as soon as it is accepted, before any handshake; the
/// connections and streams already open are not affected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetLimits {
    /// Inbound connections still in their handshake (pnet, noise, yamux), at once.
    pub max_pending_incoming: u32,
    /// Outbound connections still being dialed or in their handshake, at once.
    pub max_pending_outgoing: u32,
    /// Established inbound connections.
    pub max_established_incoming: u32,
    /// Established outbound connections.
    pub max_established_outgoing: u32,
    /// Established connections, both directions.
    pub max_established: u32,
    /// Established connections with one peer.
    pub max_established_per_peer: u32,
    /// Streams open at once on one connection (yamux; QUIC keeps its own limit of 256).
    pub max_streams_per_connection: usize,
    /// Actor requests in flight at once on one connection, both directions; an inbound
    /// request over it is dropped (the sender gets an error), an outbound one fails.
    pub max_concurrent_requests: usize,
    /// Resident memory of the whole process above which new inbound connections are refused
    /// (`None`: never). Outbound connections are never refused for memory: the node's own
    /// work must go on.
    pub max_memory_bytes: Option<u64>,
}

impl NetLimits {
    /// Limits that keep the host within `fd` file descriptors (at least [`MIN_FD_BUDGET`]):
    /// 1/8 of them for pending inbound connections, 1/8 for pending outbound ones, and the
    /// other 3/4 for established connections, two thirds of those inbound and one third
    /// outbound. With the default budget of 512: 64 + 64 pending, 384 established (256 in,
    /// 128 out). New inbound connections are refused while the process uses more than
    /// `memory_bytes` of memory (`None`: never).
    pub fn from_budget(fd: u64, memory_bytes: Option<u64>) -> Self {
        let fd = u32::try_from(fd.max(MIN_FD_BUDGET)).unwrap_or(u32::MAX);
        let pending = fd / 8;
        let established = fd - 2 * pending;
        let established_incoming = established / 3 * 2;
        Self {
            max_pending_incoming: pending,
            max_pending_outgoing: pending,
            max_established_incoming: established_incoming,
            max_established_outgoing: established - established_incoming,
            max_established: established,
            max_established_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER.min(established),
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_memory_bytes: memory_bytes,
        }
    }

    /// File descriptors the host can hold for connections under these limits (pending plus
    /// established).
    pub fn fd_budget(&self) -> u64 {
        u64::from(self.max_pending_incoming)
            + u64::from(self.max_pending_outgoing)
            + u64::from(self.max_established)
    }
}

impl Default for NetLimits {
    /// [`NetLimits::from_budget`] with the defaults of `p2p.fd` and `p2p.memory`.
    fn default() -> Self {
        Self::from_budget(DEFAULT_FD_BUDGET, Some(DEFAULT_MEMORY_BUDGET))
    }
}

/// What a circuit relay server ([`NetConfig::relay_server`]) grants other peers. A
/// reservation lets a private peer be reached through this node; a circuit is one relayed
/// connection, reset when it has carried [`circuit_bytes`](Self::circuit_bytes) (both
/// directions together) or outlives [`circuit_duration`](Self::circuit_duration). A peer may then open
/// another circuit (in bursts of 120 per peer, then one every 5 s; 480 per IP address, then
/// one a second), so these bound one circuit and the relay's load, not what a peer may move
/// through the relay in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once (4 per peer at most).
    pub max_reservations: usize,
    /// Circuits open at once.
    pub max_circuits: usize,
    /// Circuits open at once with one peer at either end.
    pub max_circuits_per_peer: usize,
    /// Bytes one circuit may carry, both directions counted together.
    pub circuit_bytes: u64,
    /// How long one circuit may live.
    pub circuit_duration: Duration,
}

impl Default for RelayLimits {
    /// 128 reservations, 256 circuits (32 per peer), each circuit
    /// [`RELAY_MAX_CIRCUIT_BYTES`] and [`RELAY_MAX_CIRCUIT_DURATION`].
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_circuits: 256,
            max_circuits_per_peer: 32,
            circuit_bytes: RELAY_MAX_CIRCUIT_BYTES,
            circuit_duration: RELAY_MAX_CIRCUIT_DURATION,
        }
    }
}

/// How the libp2p host is set up.
///
/// Private swarms: when [`swarm_key`](Self::swarm_key) is set, every connection is TCP
/// wrapped in libp2p's pre-shared-key protocol (pnet, XSalsa20) before noise. QUIC cannot
/// carry pnet, so in that mode QUIC is not built at all: `/quic-v1` listen addresses are
/// skipped (with a warning) and QUIC addresses cannot be dialed. Nodes with different keys,
/// or one with a key and one without, cannot connect.
#[derive(Clone)]
pub struct NetConfig {
    /// The node's identity (from `nunet_did::Keypair::to_libp2p()`); the peer id derives from it.
    pub keypair: Keypair,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/9000`, `/ip4/0.0.0.0/udp/9000/quic-v1`
    /// (port 0 picks a free port; [`Network::listen_addrs`](crate::Network::listen_addrs)
    /// returns the bound ones).
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers, each ending in `/p2p/<peer id>`; dialed at start and re-dialed with
    /// backoff while disconnected.
    pub bootstrap: Vec<Multiaddr>,
    /// Pre-shared key of a private swarm (pnet). `Some` means TCP only (see above).
    pub swarm_key: Option<[u8; 32]>,
    /// Also act as a circuit relay (v2) server for other peers. A relay server must be
    /// reachable, so its listen addresses are declared external (announced to peers) without
    /// waiting for AutoNAT to confirm them.
    pub relay_server: bool,
    /// What the relay server grants (unused unless [`relay_server`](Self::relay_server)).
    pub relay_limits: RelayLimits,
    /// AutoNAT also works between peers at private addresses (10/8, 172.16/12, 192.168/16,
    /// loopback): a peer seen at such an address may probe this node and be probed by it.
    /// For LANs and testbeds whose whole network is private. Off on the internet, where a
    /// LAN neighbour dialing back says nothing about reachability from outside.
    pub probe_private_addrs: bool,
    /// Default timeout for requests (the actor layer usually passes the message expiry).
    pub request_timeout: Duration,
    /// Largest request, response or gossip payload accepted or sent.
    pub max_message_bytes: usize,
    /// Connection, stream and memory limits.
    pub limits: NetLimits,
}

impl NetConfig {
    /// A configuration with the defaults: no listen address, no bootstrap peer, public
    /// swarm, no relay server, 30 s request timeout, 1 MiB messages, default
    /// [`NetLimits`].
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            swarm_key: None,
            relay_server: false,
            relay_limits: RelayLimits::default(),
            probe_private_addrs: false,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            limits: NetLimits::default(),
        }
    }

    /// Loopback listen addresses with OS-chosen ports (TCP and QUIC): handy for tests and
    /// local devnets.
    pub fn loopback_listen() -> Vec<Multiaddr> {
        ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("swarm_key", &self.swarm_key.map(|_| "<set>"))
            .field("relay_server", &self.relay_server)
            .field("relay_limits", &self.relay_limits)
            .field("probe_private_addrs", &self.probe_private_addrs)
            .field("request_timeout", &self.request_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("limits", &self.limits)
            .finish()
    }
}
