use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::PeerId;
use nunet_actor::{ActorSystem, Transport, TransportError};
use nunet_network::{NetEvent, Network};
use tokio::sync::mpsc;

/// Actor envelopes over libp2p: request-response for direct messages, gossipsub for
/// broadcasts.
#[derive(Clone)]
pub struct Libp2pTransport(pub Network);

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
        Box::pin(async move {
            net.publish(&topic, bytes)
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

/// Feeds network events into the actor system until the event stream ends. Each request is
/// handled in its own task so a slow behavior never blocks the others.
pub async fn pump(system: ActorSystem, mut events: mpsc::Receiver<NetEvent>) {
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
            NetEvent::Gossip { payload, .. } => {
                let sys = system.clone();
                tokio::spawn(async move { sys.handle_gossip(&payload).await });
            }
            NetEvent::PeerConnected(p) => tracing::debug!(peer = %p, "connected"),
            NetEvent::PeerDisconnected(p) => tracing::debug!(peer = %p, "disconnected"),
            _ => {}
        }
    }
}
