//! Reachability: what AutoNAT says about this node, the relay reservations a private node
//! makes on its own, hole punching (DCUtR), and closing relayed connections once a direct
//! one replaces them.
//!
//! A node behind NAT learns it is private from AutoNAT (peers try to dial it back), then
//! reserves a slot on up to [`MAX_AUTO_RELAYS`] of its bootstrap peers that offer relay
//! service and listens on their circuit addresses, which identify announces and the DHT
//! spreads. A peer that dials such an address reaches the node through the relay; DCUtR then
//! tries a direct connection through both NATs (and, when that fails, again a few times over
//! a new relayed connection, with backoff). Once a direct connection to a peer is up,
//! the relayed ones are closed as soon as no actor request is in flight on the peer, so that
//! traffic does not keep going through the relay.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::{
    Multiaddr, PeerId, autonat, dcutr,
    multiaddr::Protocol,
    relay,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use tokio::time::Instant;

use crate::swarm_task::{RelayedListen, SwarmTask, is_circuit};

/// Most relays a private node reserves a slot on by itself.
pub const MAX_AUTO_RELAYS: usize = 2;
/// An automatic reservation that failed this many times in a row while its relay is not
/// connected is given up, so another relay can take its place.
const AUTO_RELAY_MAX_FAILURES: u32 = 3;
/// A relay given up is not picked again for this long.
const AUTO_RELAY_QUARANTINE: Duration = Duration::from_secs(60);
/// A failed hole punch is tried again this many times, over a new relayed connection
/// (DCUtR only starts on one), after [`PUNCH_RETRY_FIRST`], then three times as long each.
const PUNCH_RETRIES: u32 = 3;
/// Delay before the first retry of a failed hole punch.
const PUNCH_RETRY_FIRST: Duration = Duration::from_secs(5);

/// The next retry of a failed hole punch to one peer.
struct PunchRetry {
    /// Retries started so far.
    started: u32,
    /// When the next one starts (`None`: one is under way, or none is left).
    next: Option<Instant>,
}

/// What AutoNAT concluded about this node's listen addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatStatus {
    /// No probe has answered yet (or no peer can act as a probe server).
    #[default]
    Unknown,
    /// A peer dialed this node back on one of its addresses.
    Public,
    /// Peers could not dial this node back: it is behind NAT or a firewall.
    Private,
}

impl NatStatus {
    /// `unknown`, `public` or `private`.
    pub fn as_str(self) -> &'static str {
        match self {
            NatStatus::Unknown => "unknown",
            NatStatus::Public => "public",
            NatStatus::Private => "private",
        }
    }
}

/// A circuit relay this node listens through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInfo {
    /// The relay's peer id.
    pub relay: PeerId,
    /// The circuit address peers dial (`…/p2p/<relay>/p2p-circuit`).
    pub addr: Multiaddr,
    /// Whether the relay currently holds a reservation for this node.
    pub reserved: bool,
    /// Picked by this node because it is private (`false`: configured in `listen`).
    pub automatic: bool,
}

/// How this node can be reached, as [`Network::reachability`](crate::Network::reachability)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// AutoNAT's verdict.
    pub nat: NatStatus,
    /// Addresses peers confirmed they could dial (empty unless public; circuit addresses
    /// are in [`relays`](Self::relays)).
    pub public_addrs: Vec<Multiaddr>,
    /// Relays this node listens through.
    pub relays: Vec<RelayInfo>,
    /// Hole punches (DCUtR) that ended in a direct connection, since start.
    pub hole_punches_succeeded: u64,
    /// Hole punches that failed (the peers stay connected through the relay), since start.
    pub hole_punches_failed: u64,
}

impl Reachability {
    /// Whether peers that are not already connected can reach this node: it is public, or
    /// it holds at least one relay reservation (or AutoNAT has not decided yet).
    pub fn reachable(&self) -> bool {
        match self.nat {
            NatStatus::Public | NatStatus::Unknown => true,
            NatStatus::Private => self.relays.iter().any(|r| r.reserved),
        }
    }

    /// One sentence for an operator.
    pub fn summary(&self) -> String {
        let reserved = self.relays.iter().filter(|r| r.reserved).count();
        match self.nat {
            NatStatus::Public => "public: peers dial this node directly".into(),
            NatStatus::Unknown => {
                "unknown: no peer has probed this node's addresses yet (AutoNAT)".into()
            }
            NatStatus::Private if reserved > 0 => format!(
                "private (behind NAT or a firewall): reachable through {reserved} relay(s); \
                 direct connections by hole punching where the NAT allows"
            ),
            NatStatus::Private => "private (behind NAT or a firewall) and no relay holds a \
                 reservation: peers cannot reach this node until it connects to them \
                 (configure bootstrap peers that run a relay, p2p.relay_server)"
                .into(),
        }
    }
}

/// Counters and per-relay bookkeeping of the automatic relay logic.
#[derive(Default)]
pub(crate) struct ReachState {
    pub(crate) nat: NatStatus,
    pub(crate) punched: u64,
    pub(crate) punch_failed: u64,
    /// Relays given up recently, and when.
    quarantined: HashMap<PeerId, Instant>,
    /// Peers whose hole punch failed, and when to try again.
    punch_retries: HashMap<PeerId, PunchRetry>,
}

/// The relay a circuit address goes through (the `/p2p/` before `/p2p-circuit`).
pub(crate) fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(id) => last = Some(id),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

impl SwarmTask {
    pub(crate) fn nat_status(&self) -> NatStatus {
        self.reach.nat
    }

    pub(crate) fn on_autonat(&mut self, ev: autonat::Event) {
        let autonat::Event::StatusChanged { new, .. } = ev else {
            tracing::trace!(?ev, "autonat");
            return;
        };
        let status = match new {
            autonat::NatStatus::Public(addr) => {
                tracing::info!(%addr, "reachability: public (AutoNAT: a peer dialed this node back)");
                NatStatus::Public
            }
            autonat::NatStatus::Private => {
                tracing::info!(
                    "reachability: private (AutoNAT: peers cannot dial this node); reserving relay slots"
                );
                NatStatus::Private
            }
            autonat::NatStatus::Unknown => NatStatus::Unknown,
        };
        self.reach.nat = status;
        if status == NatStatus::Public {
            // Reachable on its own: free the relays' slots.
            let auto: Vec<_> = self.relayed.iter().filter(|r| r.automatic).collect();
            for r in auto {
                if let Some(id) = r.listener {
                    self.swarm.remove_listener(id);
                }
            }
            self.relayed.retain(|r| !r.automatic);
        }
    }

    pub(crate) fn on_relay_client(&mut self, ev: relay::client::Event) {
        if let relay::client::Event::ReservationReqAccepted {
            relay_peer_id,
            renewal,
            ..
        } = ev
        {
            if !renewal {
                tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
            }
            for r in self
                .relayed
                .iter_mut()
                .filter(|r| relay_of(&r.addr) == Some(relay_peer_id))
            {
                r.reserved = true;
                r.failures = 0;
                r.backoff = crate::swarm_task::RELAY_MIN_BACKOFF;
            }
        }
    }

    pub(crate) fn on_dcutr(&mut self, ev: dcutr::Event) {
        let peer = ev.remote_peer_id;
        match ev.result {
            Ok(_) => {
                self.reach.punched += 1;
                self.reach.punch_retries.remove(&peer);
                tracing::info!(%peer, "hole punch succeeded: direct connection");
            }
            Err(e) => {
                self.reach.punch_failed += 1;
                let retry = self.reach.punch_retries.entry(peer).or_insert(PunchRetry {
                    started: 0,
                    next: None,
                });
                if retry.started < PUNCH_RETRIES {
                    let wait = PUNCH_RETRY_FIRST * 3u32.pow(retry.started);
                    retry.next = Some(Instant::now() + wait);
                    tracing::info!(%peer, "hole punch failed; staying on the relay, trying again in {wait:?}: {e}");
                } else {
                    tracing::info!(%peer, "hole punch failed; staying on the relay: {e}");
                }
            }
        }
    }

    /// Starts the hole-punch retries that are due: a new relayed connection to the peer, on
    /// which DCUtR tries again (a timing slip or a NAT mapping in flux can fail one attempt
    /// where the next succeeds). Peers that went direct or away are forgotten.
    fn retry_hole_punches(&mut self, now: Instant) {
        let mut due = Vec::new();
        let peers = &self.peers;
        self.reach.punch_retries.retain(|peer, r| {
            let Some(st) = peers.get(peer) else {
                return false;
            };
            if st.conns.values().any(|c| !c.relayed) {
                return false;
            }
            if r.next.is_some_and(|t| now >= t)
                && let Some(addr) = st.listen_addrs.iter().find(|a| is_circuit(a))
            {
                due.push((*peer, addr.clone()));
                r.started += 1;
                r.next = None;
            }
            true
        });
        for (peer, addr) in due {
            tracing::debug!(%peer, %addr, "hole punch: trying again over a new relayed connection");
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, "hole punch retry not started: {e}");
            }
        }
    }

    /// From the tick: pick relays while private, give up failing ones, close relayed
    /// connections that a direct one replaced.
    pub(crate) fn tend_reachability(&mut self, now: Instant) {
        self.reach
            .quarantined
            .retain(|_, since| now.duration_since(*since) < AUTO_RELAY_QUARANTINE);
        let connected = |t: &Self, r: &RelayedListen| {
            relay_of(&r.addr).is_some_and(|p| t.swarm.is_connected(&p))
        };
        let given_up: Vec<PeerId> = self
            .relayed
            .iter()
            .filter(|r| r.automatic && r.failures >= AUTO_RELAY_MAX_FAILURES && !connected(self, r))
            .filter_map(|r| relay_of(&r.addr))
            .collect();
        for p in given_up {
            tracing::warn!(relay = %p, "relay unreachable; looking for another");
            self.reach.quarantined.insert(p, now);
            let dropped = self
                .relayed
                .iter()
                .filter(|r| r.automatic && relay_of(&r.addr) == Some(p))
                .filter_map(|r| r.listener);
            for id in dropped.collect::<Vec<_>>() {
                self.swarm.remove_listener(id);
            }
            self.relayed
                .retain(|r| !(r.automatic && relay_of(&r.addr) == Some(p)));
        }
        if self.nat_status() == NatStatus::Private {
            self.pick_relays(now);
        }
        self.retry_hole_punches(now);
        self.close_superseded_relayed();
    }

    fn pick_relays(&mut self, now: Instant) {
        let have = self.relayed.iter().filter(|r| r.automatic).count();
        if have >= MAX_AUTO_RELAYS {
            return;
        }
        let hop = relay::HOP_PROTOCOL_NAME.to_string();
        let candidates: Vec<Multiaddr> = self
            .bootstrap_addrs()
            .into_iter()
            .filter(|(peer, _)| {
                self.peers
                    .get(peer)
                    .is_some_and(|st| st.protocols.contains(&hop))
                    && !self.reach.quarantined.contains_key(peer)
                    && !self
                        .relayed
                        .iter()
                        .any(|r| relay_of(&r.addr) == Some(*peer))
            })
            .map(|(peer, addr)| addr.with(Protocol::P2p(peer)).with(Protocol::P2pCircuit))
            .take(MAX_AUTO_RELAYS - have)
            .collect();
        for addr in candidates {
            tracing::info!(%addr, "private node: reserving a slot on a bootstrap relay");
            self.relayed.push(RelayedListen::new(addr, true, now));
        }
    }

    /// Closes relayed connections to peers that also have a direct connection, once no
    /// actor request to or from the peer is in flight (a request on the relayed connection
    /// would fail if it were closed under it).
    fn close_superseded_relayed(&mut self) {
        let mut close = Vec::new();
        for (peer, st) in &self.peers {
            let direct = st.conns.values().any(|c| !c.relayed);
            if !direct || self.requests_in_flight(peer) {
                continue;
            }
            close.extend(
                st.conns
                    .iter()
                    .filter(|(_, c)| c.relayed)
                    .map(|(id, _)| (*peer, *id)),
            );
        }
        for (peer, id) in close {
            tracing::debug!(%peer, "closing a relayed connection: a direct one replaced it");
            self.swarm.close_connection(id);
        }
    }

    pub(crate) fn reachability(&self) -> Reachability {
        Reachability {
            nat: self.nat_status(),
            // The relay client declares circuit addresses external too; they are in `relays`.
            public_addrs: self
                .swarm
                .external_addresses()
                .filter(|a| !crate::swarm_task::is_circuit(a))
                .cloned()
                .collect(),
            relays: self
                .relayed
                .iter()
                .filter_map(|r| {
                    Some(RelayInfo {
                        relay: relay_of(&r.addr)?,
                        addr: r.addr.clone(),
                        reserved: r.reserved,
                        automatic: r.automatic,
                    })
                })
                .collect(),
            hole_punches_succeeded: self.reach.punched,
            hole_punches_failed: self.reach.punch_failed,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_of_a_circuit_address_is_the_peer_before_the_circuit() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let a: Multiaddr = format!("/ip4/1.2.3.4/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}")
            .parse()
            .unwrap();
        assert_eq!(relay_of(&a), Some(relay));
        let direct: Multiaddr = format!("/ip4/1.2.3.4/tcp/4001/p2p/{relay}")
            .parse()
            .unwrap();
        assert_eq!(relay_of(&direct), None);
    }

    fn reach(nat: NatStatus, reserved: &[bool]) -> Reachability {
        Reachability {
            nat,
            public_addrs: vec![],
            relays: reserved
                .iter()
                .map(|r| RelayInfo {
                    relay: PeerId::random(),
                    addr: "/ip4/1.2.3.4/tcp/1/p2p-circuit".parse().unwrap(),
                    reserved: *r,
                    automatic: true,
                })
                .collect(),
            hole_punches_succeeded: 0,
            hole_punches_failed: 0,
        }
    }

    #[test]
    fn a_private_node_is_reachable_only_while_a_relay_holds_its_reservation() {
        assert!(reach(NatStatus::Public, &[]).reachable());
        assert!(!reach(NatStatus::Private, &[]).reachable());
        assert!(!reach(NatStatus::Private, &[false, false]).reachable());
        assert!(reach(NatStatus::Private, &[false, true]).reachable());
        assert!(
            reach(NatStatus::Private, &[])
                .summary()
                .contains("cannot reach")
        );
        assert!(
            reach(NatStatus::Private, &[true])
                .summary()
                .contains("1 relay")
        );
    }
}
