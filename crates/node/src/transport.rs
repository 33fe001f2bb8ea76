use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::PeerId;
use nunet_actor::{ActorSystem, Envelope, Transport, TransportError, next_nonce};
use nunet_did::Keypair;
use nunet_gowire::{GoEnvelope, MAX_GO_ENVELOPE, NUNET_TOPICS};
use nunet_network::{NetEvent, Network};
use tokio::sync::mpsc;

/// Actor envelopes over libp2p: request-response for direct messages, gossipsub for
/// broadcasts. On the topics NuNet's nodes validate ([`NUNET_TOPICS`]) a broadcast travels
/// inside a NuNet envelope signed by the node key (`key`), so that NuNet's nodes accept it
/// rather than penalise this node for it.
#[derive(Clone)]
pub struct Libp2pTransport(pub Network, pub Keypair);

impl Transport for Libp2pTransport {
    fn request(
        &self,
        peer: &str,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let net = self.0.clone();
        let peer: Result<PeerId, _> = peer.parse();
        Box::pin(async move {
            let peer = peer.map_err(|_| TransportError("not a peer id".into()))?;
            net.request(peer, bytes, timeout)
                .await
                .map_err(|e| TransportError(e.to_string()))
        })
    }

    fn publish(
        &self,
        topic: &str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let net = self.0.clone();
        let topic = topic.to_string();
        let bytes = if NUNET_TOPICS.contains(&topic.as_str()) {
            carried(&self.1, &topic, bytes)
        } else {
            Ok(bytes)
        };
        Box::pin(async move {
            net.publish(&topic, bytes?)
                .await
                .map_err(|e| TransportError(e.to_string()))
        })
    }

    fn topic_peers(&self, topic: &str) -> BoxFuture<'static, Option<Vec<String>>> {
        let net = self.0.clone();
        let topic = topic.to_string();
        Box::pin(async move {
            let peers = net.topic_peers(&topic).await;
            Some(peers.iter().map(|p| p.to_base58()).collect())
        })
    }

    fn quiet_topic_peers(&self, peers: Vec<String>) -> BoxFuture<'static, ()> {
        let net = self.0.clone();
        let peers = peers.iter().filter_map(|p| p.parse().ok()).collect();
        Box::pin(async move { net.quiet_topic_peers(peers).await })
    }
}

/// This node's broadcast `bytes` inside a NuNet envelope for `topic`.
fn carried(key: &Keypair, topic: &str, bytes: Vec<u8>) -> Result<Vec<u8>, TransportError> {
    let env = Envelope::from_bytes(&bytes).map_err(|e| TransportError(e.to_string()))?;
    let out = GoEnvelope::carrier(key, topic, &env.be, env.opt.exp, next_nonce(), bytes)
        .map(|g| g.to_json())
        .map_err(|e| TransportError(e.to_string()))?;
    if out.len() > MAX_GO_ENVELOPE {
        return Err(TransportError(format!(
            "a broadcast on {topic} is {} bytes once carried in a NuNet envelope; at most {} \
             are sent",
            out.len(),
            MAX_GO_ENVELOPE
        )));
    }
    Ok(out)
}

/// What arrived on a gossip topic.
enum Gossip {
    /// This node's format, as it is or carried inside a NuNet envelope.
    Native(Vec<u8>),
    /// A NuNet node's broadcast.
    NuNet(Box<GoEnvelope>),
}

fn classify(payload: Vec<u8>) -> Gossip {
    match GoEnvelope::from_json(&payload) {
        Ok(GoEnvelope {
            native: Some(inner),
            ..
        }) => Gossip::Native(inner),
        Ok(go) if Envelope::from_bytes(&payload).is_err() => Gossip::NuNet(Box::new(go)),
        _ => Gossip::Native(payload),
    }
}

/// Feeds network events into the actor system until the event stream ends. Each request is
/// handled in its own task so a slow behavior never blocks the others.
pub(crate) async fn pump(
    system: ActorSystem,
    wire: crate::nunet_wire::Wire,
    mut events: mpsc::Receiver<NetEvent>,
) {
    while let Some(ev) = events.recv().await {
        match ev {
            NetEvent::Request {
                peer: _,
                payload,
                reply,
            } => {
                let sys = system.clone();
                tokio::spawn(async move {
                    let out = sys.handle_bytes(&payload).await;
                    let _ = reply.send(out);
                });
            }
            NetEvent::Gossip {
                payload,
                topic,
                source,
            } => match classify(payload) {
                Gossip::Native(bytes) => {
                    let sys = system.clone();
                    tokio::spawn(async move { sys.handle_gossip(&bytes).await });
                }
                Gossip::NuNet(go) => {
                    let wire = wire.clone();
                    tokio::spawn(async move { wire.broadcast(*go, &topic, source).await });
                }
            },
            NetEvent::PeerConnected(p) => tracing::debug!(peer = %p, "connected"),
            NetEvent::PeerDisconnected(p) => tracing::debug!(peer = %p, "disconnected"),
            _ => {}
        }
    }
}
