use std::time::Duration;

use libp2p::{Multiaddr, identity::Keypair};

/// Default for [`NetConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`NetConfig::max_message_bytes`]: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Connections with no open stream are kept this long before closing.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Relay server: how long one relayed circuit may live (libp2p's default is 2 min).
pub const RELAY_MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(15 * 60);
/// Relay server: how many bytes one relayed circuit may carry (libp2p's default is 128 KiB).
pub const RELAY_MAX_CIRCUIT_BYTES: u64 = 256 * 1024 * 1024;

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
    /// Default timeout for requests (the actor layer usually passes the message expiry).
    pub request_timeout: Duration,
    /// Largest request, response or gossip payload accepted or sent.
    pub max_message_bytes: usize,
}

impl NetConfig {
    /// A configuration with the defaults: no listen address, no bootstrap peer, public
    /// swarm, no relay server, 30 s request timeout, 1 MiB messages.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            swarm_key: None,
            relay_server: false,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
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
            .field("request_timeout", &self.request_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}
