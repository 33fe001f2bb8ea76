//! The task that owns the [`Swarm`]: it executes [`Command`]s from the handles, turns swarm
//! events into [`NetEvent`]s, keeps bootstrap connections up and walks the DHT.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub,
    kad::QueryId,
    multiaddr::Protocol,
    request_response::{InboundRequestId, OutboundRequestId, ResponseChannel},
    swarm::{
        ConnectionId,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use crate::{
    NetConfig, NetError, NetEvent, PeerInfo,
    behaviour::NodeBehaviour,
    command::{Command, Reply},
    reach::ReachState,
    roster::{ROSTER_TOPIC, Roster, RosterInfo},
};

/// First retry delay for an unreachable bootstrap peer; doubles up to [`BOOTSTRAP_MAX_BACKOFF`].
const BOOTSTRAP_MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between two dials of a bootstrap peer.
const BOOTSTRAP_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First DHT random walk after start; the interval doubles up to [`WALK_MAX_INTERVAL`].
const WALK_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Steady-state interval between DHT random walks.
const WALK_MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Housekeeping tick (bootstrap redials, walks).
const TICK: Duration = Duration::from_millis(250);
/// Inbound connections refused by the limits are logged at most this often, as a count.
const DENIED_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// One open connection to a peer.
pub(crate) struct ConnInfo {
    /// The remote address (for an inbound relayed connection, just `/p2p/<peer>`).
    pub(crate) addr: Multiaddr,
    /// Whether it goes through a circuit relay.
    pub(crate) relayed: bool,
}

/// What we know about a connected peer.
#[derive(Default)]
pub(crate) struct PeerState {
    pub(crate) conns: HashMap<ConnectionId, ConnInfo>,
    pub(crate) listen_addrs: Vec<Multiaddr>,
    pub(crate) rtt: Option<Duration>,
    pub(crate) agent_version: Option<String>,
    pub(crate) protocols: Vec<String>,
}

/// A bootstrap peer and its redial schedule.
struct BootstrapPeer {
    peer: PeerId,
    addr: Multiaddr,
    backoff: Duration,
    next_dial: Instant,
}

/// Answer channel of a [`Command::Request`].
type BytesReply = Reply<Result<Vec<u8>, NetError>>;

/// Answer channel of a [`Command::FindPeer`].
type AddrsReply = Reply<Result<Vec<Multiaddr>, NetError>>;

type PendingReply =
    BoxFuture<'static, (InboundRequestId, Result<Vec<u8>, oneshot::error::RecvError>)>;

/// State of the swarm task.
pub(crate) struct SwarmTask {
    /// libp2p's own counters (connections, gossip, kad, identify, ping, relay, dcutr).
    pub(crate) metrics: libp2p::metrics::Metrics,
    pub(crate) swarm: Swarm<NodeBehaviour>,
    commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<NetEvent>,
    pub(crate) max_message_bytes: usize,
    /// Relay servers declare their listen addresses as external (see `NetConfig::relay_server`).
    pub(crate) relay_server: bool,
    pub(crate) peers: HashMap<PeerId, PeerState>,
    /// Round-trip estimates, shared with the handles.
    pub(crate) rtts: crate::Rtts,
    /// Actor requests sent and not answered yet, with the peer they went to.
    pub(crate) outbound: HashMap<OutboundRequestId, (PeerId, BytesReply)>,
    /// Actor requests received and not answered yet, with the peer they came from.
    pub(crate) inbound: HashMap<InboundRequestId, (PeerId, ResponseChannel<Vec<u8>>)>,
    pub(crate) pending_replies: FuturesUnordered<PendingReply>,
    pub(crate) dials: HashMap<ConnectionId, Reply<Result<(), NetError>>>,
    pub(crate) finds: HashMap<QueryId, (PeerId, AddrsReply)>,
    bootstrap: Vec<BootstrapPeer>,
    pub(crate) bootstrap_ids: HashSet<PeerId>,
    walk_interval: Duration,
    next_walk: Instant,
    /// Circuit (relayed) listen addresses and the reservation each currently holds.
    pub(crate) relayed: Vec<RelayedListen>,
    /// AutoNAT's verdict, automatic relays, hole punching.
    pub(crate) reach: ReachState,
    /// Who else is on the swarm and which topics they serve.
    pub(crate) roster: Roster,
    /// Inbound connections refused by the limits since the last report.
    pub(crate) denied_inbound: u64,
    next_denied_report: Instant,
}

/// A `/…/p2p/<relay>/p2p-circuit` listen address. The reservation is (re)made from the tick,
/// with backoff, so it survives a relay restart and never races the first dial to the relay.
pub(crate) struct RelayedListen {
    pub(crate) addr: Multiaddr,
    pub(crate) listener: Option<libp2p::core::transport::ListenerId>,
    pub(crate) backoff: Duration,
    pub(crate) next_try: Instant,
    /// Picked because the node is private (not from the configured listen addresses).
    pub(crate) automatic: bool,
    /// The relay accepted the reservation and it has not ended since.
    pub(crate) reserved: bool,
    /// Attempts that failed or ended since the last accepted reservation.
    pub(crate) failures: u32,
}

/// First retry delay of a relay reservation; doubles up to a minute.
pub(crate) const RELAY_MIN_BACKOFF: Duration = Duration::from_secs(1);

impl RelayedListen {
    pub(crate) fn new(addr: Multiaddr, automatic: bool, next_try: Instant) -> Self {
        Self {
            addr,
            listener: None,
            backoff: RELAY_MIN_BACKOFF,
            next_try,
            automatic,
            reserved: false,
            failures: 0,
        }
    }
}

/// Whether an address is a relayed (circuit) address.
pub(crate) fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Splits `/…/p2p/<id>` into the transport address and the peer id.
pub(crate) fn split_p2p(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(peer)) => (a, Some(peer)),
        _ => (addr.clone(), None),
    }
}

impl SwarmTask {
    pub(crate) fn new(
        mut swarm: Swarm<NodeBehaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        cfg: &NetConfig,
        metrics: libp2p::metrics::Metrics,
        rtts: crate::Rtts,
    ) -> Self {
        let now = Instant::now();
        let mut bootstrap = Vec::new();
        for addr in &cfg.bootstrap {
            match split_p2p(addr) {
                (transport, Some(peer)) if peer != *swarm.local_peer_id() => {
                    swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, transport.clone());
                    bootstrap.push(BootstrapPeer {
                        peer,
                        addr: transport,
                        backoff: BOOTSTRAP_MIN_BACKOFF,
                        next_dial: now,
                    });
                }
                (_, Some(_)) => {}
                (_, None) => {
                    tracing::warn!(%addr, "bootstrap address without /p2p/<peer id>; ignored")
                }
            }
        }
        let bootstrap_ids = bootstrap.iter().map(|b| b.peer).collect();
        let relayed = cfg
            .listen
            .iter()
            .filter(|a| is_circuit(a))
            .map(|addr| RelayedListen::new(addr.clone(), false, now + Duration::from_millis(500)))
            .collect();
        let mut task = Self {
            metrics,
            relayed,
            reach: ReachState::default(),
            roster: Roster::new(now),
            swarm,
            commands,
            events,
            max_message_bytes: cfg.max_message_bytes,
            relay_server: cfg.relay_server,
            peers: HashMap::new(),
            rtts,
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            pending_replies: FuturesUnordered::new(),
            dials: HashMap::new(),
            finds: HashMap::new(),
            bootstrap,
            bootstrap_ids,
            walk_interval: WALK_MIN_INTERVAL,
            next_walk: now + WALK_MIN_INTERVAL,
            denied_inbound: 0,
            next_denied_report: now,
        };
        if let Err(e) = task
            .swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&gossipsub::IdentTopic::new(ROSTER_TOPIC))
        {
            tracing::warn!("cannot subscribe to the roster topic: {e}");
        }
        task.redial_bootstrap(now);
        task
    }

    /// Drives the swarm until `n` listeners reported an address, or `timeout`.
    pub(crate) async fn wait_listening(&mut self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.swarm.listeners().count() < n {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("not every listener came up within {timeout:?}");
                    return;
                }
            }
        }
    }

    /// The task's main loop; ends on [`Command::Shutdown`] or when every handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown_reply = loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.commands.recv() => match cmd {
                    None => break None,
                    Some(Command::Shutdown(reply)) => break Some(reply),
                    Some(cmd) => self.on_command(cmd),
                },
                Some((id, answer)) = self.pending_replies.next(), if !self.pending_replies.is_empty() => {
                    self.on_reply(id, answer);
                }
                _ = tick.tick() => self.on_tick(),
            }
        };
        tracing::debug!("network task stopping");
        drop(self);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.redial_bootstrap(now);
        for r in self
            .relayed
            .iter_mut()
            .filter(|r| r.listener.is_none() && now >= r.next_try)
        {
            match self.swarm.listen_on(r.addr.clone()) {
                Ok(id) => r.listener = Some(id),
                Err(e) => {
                    r.failures += 1;
                    tracing::warn!(addr = %r.addr, error = %e, "relay reservation failed")
                }
            }
            r.next_try = now + r.backoff;
            r.backoff = (r.backoff * 2).min(Duration::from_secs(60));
        }
        if self.denied_inbound > 0 && now >= self.next_denied_report {
            tracing::warn!(
                refused = self.denied_inbound,
                "inbound connections refused: over the connection or memory limits (p2p.fd, p2p.memory)"
            );
            self.denied_inbound = 0;
            self.next_denied_report = now + DENIED_REPORT_INTERVAL;
        }
        self.tend_reachability(now);
        self.tend_roster(now);
        if now >= self.next_walk {
            self.walk();
            self.walk_interval = (self.walk_interval * 2).min(WALK_MAX_INTERVAL);
            self.next_walk = now + self.walk_interval;
        }
    }

    /// Peers known to serve `topic`: connected subscribers (gossipsub) and live roster
    /// entries.
    fn topic_peers(&self, topic: &str) -> HashSet<PeerId> {
        let hash = gossipsub::IdentTopic::new(topic).hash();
        let mut peers: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&hash))
            .map(|(p, _)| *p)
            .collect();
        peers.extend(self.roster.peers_on(topic, Instant::now()));
        peers
    }

    /// Publishes the roster announcement when one is due; drops expired entries.
    fn tend_roster(&mut self, now: Instant) {
        self.roster.prune(now);
        let Some(bytes) = self.roster.due(now) else {
            return;
        };
        let r = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(gossipsub::IdentTopic::new(ROSTER_TOPIC), bytes);
        match r {
            Ok(_) => self.roster.announced(true, now),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                self.roster.announced(false, now)
            }
            Err(e) => {
                tracing::warn!("roster announcement not published: {e}");
                self.roster.announced(false, now);
            }
        }
    }

    /// One DHT refresh: a bootstrap (own-id lookup + bucket refresh) and a lookup of a random
    /// id, so the node learns peers beyond those it is connected to.
    pub(crate) fn walk(&mut self) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        if kad.bootstrap().is_ok() {
            kad.get_closest_peers(PeerId::random());
        }
    }

    /// The bootstrap peers and the address each is dialed on.
    pub(crate) fn bootstrap_addrs(&self) -> Vec<(PeerId, Multiaddr)> {
        self.bootstrap
            .iter()
            .map(|b| (b.peer, b.addr.clone()))
            .collect()
    }

    /// Whether an actor request to or from `peer` waits for its answer.
    pub(crate) fn requests_in_flight(&self, peer: &PeerId) -> bool {
        self.outbound.values().any(|(p, _)| p == peer)
            || self.inbound.values().any(|(p, _)| p == peer)
    }

    fn redial_bootstrap(&mut self, now: Instant) {
        for bp in &mut self.bootstrap {
            if self.swarm.is_connected(&bp.peer) {
                bp.backoff = BOOTSTRAP_MIN_BACKOFF;
                bp.next_dial = now + BOOTSTRAP_MIN_BACKOFF;
                continue;
            }
            if now < bp.next_dial {
                continue;
            }
            let opts = DialOpts::peer_id(bp.peer)
                .addresses(vec![bp.addr.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(peer = %bp.peer, "bootstrap dial not started: {e}");
            }
            bp.next_dial = now + bp.backoff;
            bp.backoff = (bp.backoff * 2).min(BOOTSTRAP_MAX_BACKOFF);
        }
    }

    fn on_reply(
        &mut self,
        id: InboundRequestId,
        answer: Result<Vec<u8>, oneshot::error::RecvError>,
    ) {
        let Some((_, channel)) = self.inbound.remove(&id) else {
            return;
        };
        match answer {
            Ok(bytes) if bytes.len() <= self.max_message_bytes => {
                if self
                    .swarm
                    .behaviour_mut()
                    .actor
                    .send_response(channel, bytes)
                    .is_err()
                {
                    tracing::debug!("response not sent: the requester is gone");
                }
            }
            Ok(bytes) => {
                tracing::warn!(
                    size = bytes.len(),
                    "response over max_message_bytes dropped; the requester gets an error"
                );
            }
            // The handler dropped `reply`: dropping the channel closes the stream, so the
            // requester fails at once.
            Err(_) => {}
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Request {
                peer,
                payload,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .actor
                    .send_request(&peer, payload);
                self.outbound.insert(id, (peer, reply));
            }
            Command::Subscribe { topic, reply } => {
                let t = gossipsub::IdentTopic::new(topic.clone());
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&t)
                    .map(|_| ())
                    .map_err(|e| NetError::Gossip {
                        topic: topic.clone(),
                        reason: e.to_string(),
                    });
                if r.is_ok() {
                    self.roster.subscribed(&topic, Instant::now());
                }
                let _ = reply.send(r);
            }
            Command::Publish {
                topic,
                payload,
                reply,
            } => {
                let t = gossipsub::IdentTopic::new(topic.clone());
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(t, payload)
                    .map(|_| ())
                    .map_err(|e| NetError::Gossip {
                        topic,
                        reason: e.to_string(),
                    });
                let _ = reply.send(r);
            }
            Command::TopicPeers { topic, reply } => {
                let _ = reply.send(self.topic_peers(&topic).into_iter().collect());
            }
            Command::QuietTopicPeers(peers) => self.roster.quiet(&peers, Instant::now()),
            Command::RosterSnapshot(reply) => {
                let me = *self.swarm.local_peer_id();
                let _ = reply.send(self.roster.snapshot(me, Instant::now()));
            }
            Command::RosterMerge { from, bytes } => {
                let me = *self.swarm.local_peer_id();
                match self.roster.merge(me, &bytes, Instant::now()) {
                    Ok(n) => tracing::debug!(peer = %from, entries = n, "roster pulled"),
                    Err(e) => {
                        tracing::warn!(peer = %from, "roster pulled from a peer refused: {e}")
                    }
                }
            }
            Command::Roster(reply) => {
                let now = Instant::now();
                let topics = self
                    .roster
                    .own_topics()
                    .iter()
                    .map(|t| (t.clone(), self.topic_peers(t).len()))
                    .collect();
                let _ = reply.send(RosterInfo {
                    peers: self.roster.len(now),
                    quiet: self.roster.quiet_len(now),
                    topics,
                });
            }
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::Connect { peer, reply } => self.connect(peer, reply),
            Command::Disconnect { peer, reply } => {
                let _ = reply.send(self.swarm.disconnect_peer_id(peer).is_ok());
            }
            Command::Reachability(reply) => {
                let _ = reply.send(self.reachability());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_infos());
            }
            Command::DhtPeers(reply) => {
                let _ = reply.send(self.routing_table());
            }
            Command::FindPeer { peer, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.finds.insert(id, (peer, reply));
            }
            Command::Shutdown(reply) => {
                // Handled in `run`; answering here keeps the match exhaustive.
                let _ = reply.send(());
            }
        }
    }

    /// Connects to `peer` on the addresses the behaviours know (the DHT's, identify's), even
    /// while another dial to it is in flight: a hole punch's direct dial to a peer whose
    /// relayed connection went away would otherwise hold every request until it timed out.
    fn connect(&mut self, peer: PeerId, reply: Reply<Result<(), NetError>>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::Always)
            .build();
        self.start_dial(opts, reply);
    }

    /// Starts a dial; `reply` gets its outcome (from the connection events) or its error.
    fn start_dial(&mut self, opts: DialOpts, reply: Reply<Result<(), NetError>>) {
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(NetError::Dial(e.to_string())));
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: Reply<Result<(), NetError>>) {
        let (transport, peer) = split_p2p(&addr);
        let opts = match peer {
            Some(peer) if self.swarm.is_connected(&peer) => {
                let _ = reply.send(Ok(()));
                return;
            }
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![transport])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr).build(),
        };
        self.start_dial(opts, reply);
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(id, st)| {
                let mut addrs: Vec<Multiaddr> = Vec::new();
                for a in st
                    .conns
                    .values()
                    .map(|c| &c.addr)
                    .chain(st.listen_addrs.iter())
                {
                    if !addrs.contains(a) {
                        addrs.push(a.clone());
                    }
                }
                let mut endpoints: Vec<Multiaddr> = Vec::new();
                for c in st.conns.values().filter(|c| !c.relayed) {
                    if !endpoints.contains(&c.addr) {
                        endpoints.push(c.addr.clone());
                    }
                }
                PeerInfo {
                    peer_id: *id,
                    addrs,
                    endpoints,
                    rtt: st.rtt,
                    relayed: !st.conns.is_empty() && st.conns.values().all(|c| c.relayed),
                    agent_version: st.agent_version.clone(),
                    protocols: st.protocols.clone(),
                    gossip_score: self.swarm.behaviour().gossipsub.peer_score(id),
                }
            })
            .collect()
    }

    pub(crate) fn routing_table(&mut self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut out = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                out.push((
                    *entry.node.key.preimage(),
                    entry.node.value.iter().cloned().collect(),
                ));
            }
        }
        out
    }

    /// Addresses we know for `peer` without asking the network.
    pub(crate) fn known_addrs(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut addrs: Vec<Multiaddr> = self
            .routing_table()
            .into_iter()
            .filter(|(p, _)| p == peer)
            .flat_map(|(_, a)| a)
            .collect();
        if let Some(st) = self.peers.get(peer) {
            for a in &st.listen_addrs {
                if !addrs.contains(a) {
                    addrs.push(a.clone());
                }
            }
        }
        addrs
    }
}
