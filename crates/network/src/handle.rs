//! The public handle to a running host, and [`start`].

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use prometheus_client::registry::Registry;
use rand::RngCore;
use tokio::sync::{mpsc, oneshot};

use crate::{
    NetConfig, NetError, NetEvent, PeerInfo, Reachability, RosterInfo, behaviour,
    command::{Command, Reply},
    roster::ROSTER_PROTOCOL,
    swarm_task::SwarmTask,
};

/// Capacity of the command channel from handles to the swarm task.
const COMMAND_CAPACITY: usize = 256;
/// Capacity of the event channel from the swarm task to the layer above.
const EVENT_CAPACITY: usize = 1024;
/// On-demand ping protocol used by [`Network::ping`]: the libp2p ping wire format (32 bytes
/// echoed back) under a NuNet name. The standard `/ipfs/ping/1.0.0` handler keeps a single
/// inbound stream per connection, so an extra on-demand stream there would race with the
/// periodic pings that feed [`PeerInfo::rtt`].
pub const PING_PROTOCOL: StreamProtocol = StreamProtocol::new("/nunet/ping/1.0.0");
/// Payload size of the ping protocol.
const PING_SIZE: usize = 32;
/// How long an inbound ping stream may stay open.
const PING_SERVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most pings answered on one inbound stream.
const PING_MAX_PER_STREAM: usize = 64;

/// A cloneable handle to the libp2p host. Every method talks to the swarm task through a
/// bounded channel; once the host is shut down, methods fail with [`NetError::Closed`] (or
/// return empty lists).
#[derive(Clone)]
pub struct Network {
    local_peer_id: PeerId,
    default_timeout: Duration,
    max_message_bytes: usize,
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
    rtts: crate::Rtts,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("local_peer_id", &self.local_peer_id)
            .finish_non_exhaustive()
    }
}

/// Builds the swarm, starts listening on `cfg.listen`, dials the bootstrap peers and spawns
/// the swarm task on the current tokio runtime.
///
/// Returns the handle and the event stream. Events are dropped (with a warning) when the
/// receiver falls more than 1024 events behind; a dropped [`NetEvent::Request`] makes the
/// remote's request fail at once. Dropping every handle (or [`Network::shutdown`]) stops the
/// task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nunet_network::NetError> {
/// use nunet_network::{NetConfig, NetEvent};
///
/// let mut cfg = NetConfig::new(libp2p::identity::Keypair::generate_ed25519());
/// cfg.listen = NetConfig::loopback_listen();
/// let (net, mut events) = nunet_network::start(cfg).await?;
/// assert!(!net.listen_addrs().await.is_empty());
/// tokio::spawn(async move {
///     while let Some(ev) = events.recv().await {
///         if let NetEvent::Request { payload, reply, .. } = ev {
///             let _ = reply.send(payload); // the actor layer verifies and dispatches here
///         }
///     }
/// });
/// net.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub async fn start(cfg: NetConfig) -> Result<(Network, mpsc::Receiver<NetEvent>), NetError> {
    start_metered(cfg, &mut Registry::default()).await
}

/// [`start`], with libp2p's metrics (connections, bandwidth, gossipsub, kad, identify, ping,
/// relay, dcutr) registered in `registry` under `libp2p_`.
pub async fn start_metered(
    cfg: NetConfig,
    registry: &mut Registry,
) -> Result<(Network, mpsc::Receiver<NetEvent>), NetError> {
    let mut swarm = behaviour::build_swarm(&cfg, registry)?;
    let metrics = libp2p::metrics::Metrics::new(registry);
    let local_peer_id = *swarm.local_peer_id();
    let mut streams = swarm.behaviour().streams.new_control();
    let incoming_pings = streams
        .accept(PING_PROTOCOL)
        .map_err(|e| NetError::Setup(e.to_string()))?;
    let roster_pulls = streams
        .accept(StreamProtocol::new(ROSTER_PROTOCOL))
        .map_err(|e| NetError::Setup(e.to_string()))?;
    let mut listening = 0usize;
    for addr in &cfg.listen {
        let quic = addr
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1));
        if crate::swarm_task::is_circuit(addr) {
            continue; // reserved from the swarm task once the relay is reachable
        }
        if quic && cfg.swarm_key.is_some() {
            tracing::warn!(%addr, "QUIC cannot carry a private swarm key; not listening on it");
            continue;
        }
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        listening += 1;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_CAPACITY);
    let rtts = crate::Rtts::default();
    let mut task = SwarmTask::new(swarm, cmd_rx, ev_tx, &cfg, metrics, rtts.clone());
    // Resolve port-0 listeners before returning, so listen_addrs() is immediately useful.
    task.wait_listening(listening, Duration::from_secs(5)).await;
    tokio::spawn(task.run());
    tokio::spawn(serve_pings(incoming_pings));
    let net = Network {
        local_peer_id,
        default_timeout: cfg.request_timeout,
        max_message_bytes: cfg.max_message_bytes,
        commands: cmd_tx,
        streams,
        rtts,
    };
    tokio::spawn(serve_roster(roster_pulls, net.clone()));
    tokio::spawn(pull_roster(net.clone()));
    Ok((net, ev_rx))
}

/// How long a roster pull or hand-out may take.
const ROSTER_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Roster pulls tried after start (one peer each) before relying on announcements alone.
const ROSTER_PULL_TRIES: u32 = 5;

/// Hands out this node's roster, one puller at a time (a snapshot costs one pass over it).
async fn serve_roster(mut incoming: libp2p_stream::IncomingStreams, net: Network) {
    use futures::StreamExt;
    while let Some((peer, mut stream)) = incoming.next().await {
        let Ok(bytes) = net.call(Command::RosterSnapshot).await else {
            return;
        };
        let send = async {
            stream.write_all(&bytes).await?;
            stream.close().await
        };
        match tokio::time::timeout(ROSTER_IO_TIMEOUT, send).await {
            Ok(Ok(())) => tracing::debug!(%peer, bytes = bytes.len(), "roster handed out"),
            Ok(Err(e)) => tracing::debug!(%peer, "roster hand-out failed: {e}"),
            Err(_) => tracing::debug!(%peer, "roster hand-out timed out"),
        }
    }
}

/// Once connected, pulls the roster of a connected peer that serves it (directly, not through
/// a relay), so this node knows who is out there before the next announcements come round.
/// One try per second, a different peer each time, [`ROSTER_PULL_TRIES`] in all; after that
/// the node learns the others from their announcements (within a minute).
async fn pull_roster(net: Network) {
    let mut tried = std::collections::HashSet::new();
    for _ in 0..ROSTER_PULL_TRIES {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(peers) = net.call(Command::Peers).await else {
            return; // shut down
        };
        let Some(peer) = peers
            .iter()
            .filter(|p| !tried.contains(&p.peer_id) && !p.relayed)
            .filter(|p| p.protocols.iter().any(|x| x == ROSTER_PROTOCOL))
            .map(|p| p.peer_id)
            .next()
        else {
            continue;
        };
        tried.insert(peer);
        let fetch = async {
            let mut stream = net
                .streams
                .clone()
                .open_stream(peer, StreamProtocol::new(ROSTER_PROTOCOL))
                .await
                .map_err(|e| e.to_string())?;
            let mut bytes = Vec::new();
            let limit = u64::try_from(crate::roster::MAX_SNAPSHOT_BYTES + 1).unwrap_or(u64::MAX);
            (&mut stream)
                .take(limit)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(bytes)
        };
        match tokio::time::timeout(ROSTER_IO_TIMEOUT, fetch).await {
            // A peer busy with other pullers drops the stream (its queue of incoming
            // streams is full): nothing to merge; another peer is asked.
            Ok(Ok(bytes)) if bytes.is_empty() => {
                tracing::debug!(%peer, "roster pull got nothing (the peer was busy)");
            }
            Ok(Ok(bytes)) => {
                let _ = net
                    .commands
                    .send(Command::RosterMerge { from: peer, bytes })
                    .await;
                return;
            }
            Ok(Err(e)) => tracing::debug!(%peer, "roster pull failed: {e}"),
            Err(_) => tracing::debug!(%peer, "roster pull timed out"),
        }
    }
}

/// Answers inbound on-demand pings: echoes 32-byte blocks until the stream closes.
async fn serve_pings(mut incoming: libp2p_stream::IncomingStreams) {
    use futures::StreamExt;
    while let Some((peer, mut stream)) = incoming.next().await {
        tokio::spawn(async move {
            let echo = async {
                let mut buf = [0u8; PING_SIZE];
                for _ in 0..PING_MAX_PER_STREAM {
                    if stream.read_exact(&mut buf).await.is_err() {
                        break;
                    }
                    if stream.write_all(&buf).await.is_err() || stream.flush().await.is_err() {
                        break;
                    }
                }
                let _ = stream.close().await;
            };
            if tokio::time::timeout(PING_SERVE_TIMEOUT, echo)
                .await
                .is_err()
            {
                tracing::debug!(%peer, "ping stream timed out");
            }
        });
    }
}

impl Network {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Closed)?;
        rx.await.map_err(|_| NetError::Closed)
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The default request timeout from [`NetConfig::request_timeout`].
    pub fn default_timeout(&self) -> Duration {
        self.default_timeout
    }

    /// The addresses the host actually listens on (port 0 resolved), each without `/p2p/`.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.call(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Sends `payload` to `peer` on [`ACTOR_PROTOCOL`](crate::ACTOR_PROTOCOL) and waits at
    /// most `timeout` for the answer. Dials the peer when needed (addresses from the DHT or
    /// an earlier [`dial`](Self::dial)).
    pub async fn request(
        &self,
        peer: PeerId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError> {
        if payload.len() > self.max_message_bytes {
            return Err(NetError::TooLarge {
                size: payload.len(),
                limit: self.max_message_bytes,
            });
        }
        let fut = async {
            // Connected first (known addresses, then the DHT), so the request neither waits
            // behind another dial to the peer nor fails for want of an address.
            self.ensure_connected(peer).await?;
            self.call(|reply| Command::Request {
                peer,
                payload,
                reply,
            })
            .await?
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout(timeout)),
        }
    }

    /// Makes sure a connection to `peer` exists: dials it on the addresses the swarm knows,
    /// then through the DHT when those fail.
    async fn ensure_connected(&self, peer: PeerId) -> Result<(), NetError> {
        if peer == self.local_peer_id {
            return Ok(());
        }
        match self.call(|reply| Command::Connect { peer, reply }).await? {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(%peer, "dial on known addresses failed ({e}); asking the DHT");
                self.connect_through_dht(peer).await
            }
        }
    }

    /// Looks `peer` up in the DHT and dials the addresses found (its circuit addresses
    /// included, when it listens through relays) until one connects.
    pub async fn connect_through_dht(&self, peer: PeerId) -> Result<(), NetError> {
        let addrs = self.find_peer(peer).await?;
        let mut last = NetError::NotFound(peer);
        for a in addrs {
            let a = match a.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(p)) if p == peer => a,
                _ => a.with(libp2p::multiaddr::Protocol::P2p(peer)),
            };
            match self.dial(a).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Subscribes to a gossip topic; messages arrive as [`NetEvent::Gossip`].
    pub async fn subscribe(&self, topic: &str) -> Result<(), NetError> {
        let topic = topic.to_string();
        self.call(|reply| Command::Subscribe { topic, reply })
            .await?
    }

    /// Publishes on a gossip topic (signed with the node key, flooded to every subscribed
    /// peer). Fails when no connected peer is subscribed to the topic.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), NetError> {
        if payload.len() > self.max_message_bytes {
            return Err(NetError::TooLarge {
                size: payload.len(),
                limit: self.max_message_bytes,
            });
        }
        let topic = topic.to_string();
        self.call(|reply| Command::Publish {
            topic,
            payload,
            reply,
        })
        .await?
    }

    /// Peers known to serve a gossip topic: connected peers that told us they are subscribed,
    /// and peers whose roster announcement (or a pulled roster) lists it and has not expired.
    pub async fn topic_peers(&self, topic: &str) -> Vec<PeerId> {
        let topic = topic.to_string();
        self.call(|reply| Command::TopicPeers { topic, reply })
            .await
            .unwrap_or_default()
    }

    /// `peers` did not answer a broadcast they should have: [`Self::topic_peers`] leaves
    /// their roster entries out for a while (5 min), announcements or not. Connected
    /// subscribers stay (gossipsub still reports them).
    pub async fn quiet_topic_peers(&self, peers: Vec<PeerId>) {
        let _ = self.commands.send(Command::QuietTopicPeers(peers)).await;
    }

    /// How many peers the roster knows, and per topic this node serves how many serve it.
    pub async fn roster(&self) -> Result<RosterInfo, NetError> {
        self.call(Command::Roster).await
    }

    /// Dials an address (with or without `/p2p/<peer id>`); resolves once connected (at once
    /// if already connected to that peer) or when the dial fails.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// The smoothed round-trip times of connected peers (shared: it follows new samples).
    pub fn rtts(&self) -> crate::Rtts {
        self.rtts.clone()
    }

    /// Connected peers with what ping and identify told about them.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.call(Command::Peers).await.unwrap_or_default()
    }

    /// Closes every connection to `peer` (requests in flight on them fail); `false` when
    /// there was none. The peer may dial again, and so may this node on the next request.
    pub async fn disconnect(&self, peer: PeerId) -> Result<bool, NetError> {
        self.call(|reply| Command::Disconnect { peer, reply }).await
    }

    /// How this node can be reached: AutoNAT's verdict, the relays it listens through,
    /// hole punches so far.
    pub async fn reachability(&self) -> Result<Reachability, NetError> {
        self.call(Command::Reachability).await
    }

    /// The Kademlia routing table: peers and their known addresses.
    pub async fn dht_peers(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.call(Command::DhtPeers).await.unwrap_or_default()
    }

    /// Measures one fresh round trip to `peer` on [`PING_PROTOCOL`] (dialing it if needed),
    /// bounded by the default request timeout.
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, NetError> {
        let err = |reason: String| NetError::Stream { peer, reason };
        let timeout = self.default_timeout;
        let fut = async {
            let mut stream = self
                .open_stream(peer, PING_PROTOCOL)
                .await
                .map_err(|e| err(e.to_string()))?;
            let mut out = [0u8; PING_SIZE];
            rand::thread_rng().fill_bytes(&mut out);
            let started = Instant::now();
            stream
                .write_all(&out)
                .await
                .map_err(|e| err(e.to_string()))?;
            stream.flush().await.map_err(|e| err(e.to_string()))?;
            let mut back = [0u8; PING_SIZE];
            stream
                .read_exact(&mut back)
                .await
                .map_err(|e| err(e.to_string()))?;
            let rtt = started.elapsed();
            let _ = stream.close().await;
            if back != out {
                return Err(err("ping payload mismatch".into()));
            }
            self.rtts.record(peer, rtt);
            Ok(rtt)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| NetError::Timeout(timeout))?
    }

    /// Looks `peer` up in the DHT (an iterative closest-peers query) and returns the
    /// addresses it can be dialed on.
    pub async fn find_peer(&self, peer: PeerId) -> Result<Vec<Multiaddr>, NetError> {
        self.call(|reply| Command::FindPeer { peer, reply }).await?
    }

    /// Opens a raw stream to `peer`, connecting first (known addresses, then the DHT). A
    /// stream that lands on a connection closing under it (a relayed connection a direct one
    /// replaced) is opened once more.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<libp2p::Stream, libp2p_stream::OpenStreamError> {
        let mut control = self.streams.clone();
        if let Err(e) = self.ensure_connected(peer).await {
            tracing::debug!(%peer, "stream: {e}");
        }
        match control.open_stream(peer, protocol.clone()).await {
            Err(libp2p_stream::OpenStreamError::Io(e)) => {
                tracing::debug!(%peer, "stream open failed ({e}); once more");
                if let Err(e) = self.ensure_connected(peer).await {
                    tracing::debug!(%peer, "stream: {e}");
                }
                control.open_stream(peer, protocol).await
            }
            other => other,
        }
    }

    /// Raw libp2p streams for bulk transfers: `open_stream(peer, protocol)` and
    /// `accept(protocol)`. Stream contents are not limited by `max_message_bytes`.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    /// Stops the swarm task and closes all connections. Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.call(Command::Shutdown).await;
    }
}
