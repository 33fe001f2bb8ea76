//! Circuit relay v2: a node that only listens through a relay is reachable through it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Answer, addr, config, eventually, start};
use libp2p::multiaddr::Protocol;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_behind_a_relay_is_reachable_through_the_circuit() {
    // R serves as relay.
    let mut cfg_r = config();
    cfg_r.relay_server = true;
    let r = start(cfg_r, Answer::Echo).await;
    let r_addr = addr(&r.net, "tcp").await;

    // B reserves a slot on R and listens on the circuit address.
    let mut cfg_b = config();
    cfg_b.listen = vec![r_addr.clone().with(Protocol::P2pCircuit)];
    // The relay is also a bootstrap peer: both dials race at start; the reservation must win.
    cfg_b.bootstrap = vec![r_addr.clone()];
    let b = start(cfg_b, Answer::Echo).await;
    let b_id = b.net.local_peer_id();
    let reserved = eventually(10, || async {
        b.net
            .listen_addrs()
            .await
            .iter()
            .any(|a| a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
    })
    .await;
    assert!(
        reserved,
        "no relayed listen address: {:?}",
        b.net.listen_addrs().await
    );

    // C knows only the circuit address of B, and reaches it through R.
    let c = start(config(), Answer::Echo).await;
    let circuit = r_addr.with(Protocol::P2pCircuit).with(Protocol::P2p(b_id));
    c.net.dial(circuit).await.unwrap();
    let reply = c
        .net
        .request(b_id, b"via relay".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, b"echo:via relay");
    let peer = c
        .net
        .peers()
        .await
        .into_iter()
        .find(|p| p.peer_id == b_id)
        .unwrap();
    assert!(
        peer.addrs
            .iter()
            .any(|a| a.iter().any(|p| matches!(p, Protocol::P2pCircuit))),
        "{:?}",
        peer.addrs
    );
}
