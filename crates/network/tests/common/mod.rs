//! Helpers shared by the integration tests: real swarms on 127.0.0.1.
#![allow(clippy::unwrap_used, dead_code)]

use std::{future::Future, time::Duration};

use libp2p::{Multiaddr, PeerId, identity::Keypair, multiaddr::Protocol};
use nunet_network::{NetConfig, NetEvent, Network};
use tokio::sync::{mpsc, oneshot};

/// A started node, its events (other than requests, which `answer` handles) and a few
/// handy addresses.
pub struct Node {
    pub net: Network,
    pub events: mpsc::UnboundedReceiver<NetEvent>,
}

/// How a node answers requests.
#[derive(Clone, Copy)]
pub enum Answer {
    /// `echo:` + the request.
    Echo,
    /// Keeps the reply sender without answering.
    Never,
    /// Drops the reply sender.
    Drop,
}

pub fn config() -> NetConfig {
    let mut cfg = NetConfig::new(Keypair::generate_ed25519());
    cfg.listen = NetConfig::loopback_listen();
    cfg
}

pub async fn start(cfg: NetConfig, answer: Answer) -> Node {
    let (net, mut rx) = nunet_network::start(cfg).await.unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut parked: Vec<oneshot::Sender<Vec<u8>>> = Vec::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                NetEvent::Request { payload, reply, .. } => match answer {
                    Answer::Echo => {
                        let mut out = b"echo:".to_vec();
                        out.extend_from_slice(&payload);
                        let _ = reply.send(out);
                    }
                    Answer::Never => parked.push(reply),
                    Answer::Drop => drop(reply),
                },
                other => {
                    let _ = tx.send(other);
                }
            }
        }
    });
    Node { net, events }
}

pub async fn echo_node() -> Node {
    start(config(), Answer::Echo).await
}

/// The node's listen address of the given transport (`"tcp"` or `"quic"`) with `/p2p/<id>`.
pub async fn addr(net: &Network, transport: &str) -> Multiaddr {
    let want_quic = transport == "quic";
    let a = net
        .listen_addrs()
        .await
        .into_iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == want_quic)
        .unwrap();
    a.with(Protocol::P2p(net.local_peer_id()))
}

/// Polls `check` every 100 ms until it is true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub async fn connected(net: &Network, peer: PeerId) -> bool {
    net.peers().await.iter().any(|p| p.peer_id == peer)
}

/// Waits for an event matching `pred`, up to `secs`.
pub async fn wait_event(
    events: &mut mpsc::UnboundedReceiver<NetEvent>,
    secs: u64,
    mut pred: impl FnMut(&NetEvent) -> bool,
) -> Option<NetEvent> {
    tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(ev) = events.recv().await {
            if pred(&ev) {
                return Some(ev);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}
