//! Swarm events → state updates, replies to pending commands and [`NetEvent`]s.

use futures::FutureExt;
use libp2p::metrics::Recorder;
use libp2p::{
    PeerId, gossipsub, identify, kad, ping,
    request_response::{self, Message},
    swarm::{ListenError, SwarmEvent},
};
use tokio::sync::{mpsc::error::TrySendError, oneshot};

use crate::{
    KAD_PROTOCOL, NetError, NetEvent,
    behaviour::NodeBehaviourEvent,
    swarm_task::{ConnInfo, SwarmTask, is_circuit},
};

impl SwarmTask {
    /// Hands an event to the layer above without ever blocking the swarm.
    fn emit(&self, ev: NetEvent) {
        match self.events.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => {
                tracing::warn!(?ev, "event receiver is lagging; event dropped");
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    pub(crate) fn on_swarm_event(&mut self, ev: SwarmEvent<NodeBehaviourEvent>) {
        self.metrics.record(&ev);
        match ev {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if self.relay_server {
                    // A relay only serves reservations on confirmed external addresses.
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(r) = self
                    .relayed
                    .iter_mut()
                    .find(|r| r.listener == Some(listener_id))
                {
                    tracing::info!(addr = %r.addr, ?reason, "relay reservation ended; will retry");
                    r.listener = None;
                    r.reserved = false;
                    r.failures += 1;
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let st = self.peers.entry(peer_id).or_default();
                st.conns.insert(
                    connection_id,
                    ConnInfo {
                        addr: endpoint.get_remote_address().clone(),
                        relayed: endpoint.is_relayed(),
                    },
                );
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
                if num_established.get() == 1 {
                    if self.bootstrap_ids.contains(&peer_id) {
                        // Learn the bootstrap node's neighbourhood right away.
                        self.walk();
                    }
                    self.emit(NetEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(st) = self.peers.get_mut(&peer_id)
                    && let Some(conn) = st.conns.remove(&connection_id)
                    && !conn.relayed
                    && st.listen_addrs.iter().any(is_circuit)
                    && !st.listen_addrs.contains(&conn.addr)
                {
                    // A direct connection to a peer behind NAT (hole punched): the address
                    // it came from is a NAT mapping that is gone with it. Dialing it later
                    // would stall until a timeout and, holding the reused port, block the
                    // next hole punch to that peer.
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .remove_address(&peer_id, &conn.addr);
                }
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    self.rtts.forget(&peer_id);
                    self.emit(NetEvent::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(?peer_id, "outgoing connection failed: {error}");
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetError::Dial(error.to_string())));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                if matches!(error, ListenError::Denied { .. }) {
                    // Summarised from the tick: a flood must not flood the log too.
                    self.denied_inbound += 1;
                }
                tracing::debug!(%send_back_addr, "incoming connection failed: {error}");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: NodeBehaviourEvent) {
        match &ev {
            NodeBehaviourEvent::Gossipsub(e) => self.metrics.record(e),
            NodeBehaviourEvent::Kad(e) => self.metrics.record(e),
            // Not identify: its metrics label series with addresses peers advertise.
            NodeBehaviourEvent::Ping(e) => self.metrics.record(e),
            NodeBehaviourEvent::RelayServer(e) => self.metrics.record(e),
            NodeBehaviourEvent::Dcutr(e) => self.metrics.record(e),
            _ => {}
        }
        match ev {
            NodeBehaviourEvent::Actor(ev) => self.on_actor_event(ev),
            NodeBehaviourEvent::Gossipsub(ev) => self.on_gossip_event(ev),
            NodeBehaviourEvent::Kad(ev) => self.on_kad_event(ev),
            NodeBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, info)
            }
            NodeBehaviourEvent::Ping(ping::Event { peer, result, .. }) => match result {
                Ok(rtt) => {
                    if let Some(st) = self.peers.get_mut(&peer) {
                        st.rtt = Some(rtt);
                    }
                    self.rtts.record(peer, rtt);
                }
                Err(e) => tracing::debug!(%peer, "ping failed: {e}"),
            },
            NodeBehaviourEvent::Autonat(ev) => self.on_autonat(ev),
            NodeBehaviourEvent::RelayClient(ev) => self.on_relay_client(ev),
            NodeBehaviourEvent::Dcutr(ev) => self.on_dcutr(ev),
            other => tracing::trace!(?other, "behaviour event"),
        }
    }

    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        let speaks_kad = info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL);
        if speaks_kad {
            for addr in &info.listen_addrs {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
        }
        let st = self.peers.entry(peer).or_default();
        st.agent_version = Some(info.agent_version);
        st.protocols = info.protocols.iter().map(|p| p.to_string()).collect();
        st.listen_addrs = info.listen_addrs;
    }

    fn on_actor_event(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request_id: id,
                        request,
                        channel,
                    },
                ..
            } => {
                self.inbound.insert(id, (peer, channel));
                let (tx, rx) = oneshot::channel();
                self.pending_replies
                    .push(async move { (id, rx.await) }.boxed());
                self.emit(NetEvent::Request {
                    peer,
                    payload: request,
                    reply: tx,
                });
            }
            request_response::Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, reply)) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, reply)) = self.outbound.remove(&request_id) {
                    let err = match error {
                        request_response::OutboundFailure::DialFailure => {
                            NetError::Dial(format!("cannot reach {peer}"))
                        }
                        e => NetError::Request {
                            peer,
                            reason: e.to_string(),
                        },
                    };
                    let _ = reply.send(Err(err));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                // Garbage, oversized frames and timed-out handlers end up here.
                self.inbound.remove(&request_id);
                tracing::debug!(%peer, "inbound request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_gossip_event(&mut self, ev: gossipsub::Event) {
        match ev {
            gossipsub::Event::Message { message, .. }
                if message.topic.as_str() == crate::roster::ROSTER_TOPIC =>
            {
                if let Some(from) = message.source {
                    self.roster
                        .heard(from, &message.data, tokio::time::Instant::now());
                }
            }
            gossipsub::Event::Message { message, .. } => self.emit(NetEvent::Gossip {
                topic: message.topic.into_string(),
                source: message.source,
                payload: message.data,
            }),
            gossipsub::Event::Subscribed { topic, .. }
                if topic.as_str() == crate::roster::ROSTER_TOPIC => {}
            gossipsub::Event::Subscribed { peer_id, topic, .. } => {
                self.emit(NetEvent::Subscribed {
                    peer: peer_id,
                    topic: topic.into_string(),
                })
            }
            other => tracing::trace!(?other, "gossipsub event"),
        }
    }

    fn on_kad_event(&mut self, ev: kad::Event) {
        if let kad::Event::OutboundQueryProgressed {
            id,
            result: kad::QueryResult::GetClosestPeers(result),
            step,
            ..
        } = ev
        {
            if !step.last || !self.finds.contains_key(&id) {
                return;
            }
            let Some((target, reply)) = self.finds.remove(&id) else {
                return;
            };
            let found = match result {
                Ok(ok) => ok.peers,
                Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
            };
            let mut addrs: Vec<_> = found
                .into_iter()
                .filter(|p| p.peer_id == target)
                .flat_map(|p| p.addrs)
                .collect();
            for a in self.known_addrs(&target) {
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            let r = if addrs.is_empty() {
                Err(NetError::NotFound(target))
            } else {
                Ok(addrs)
            };
            let _ = reply.send(r);
        }
    }
}
