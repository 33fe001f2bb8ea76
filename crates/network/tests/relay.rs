//! Circuit relay v2: a node that only listens through a relay is reachable through it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Answer, addr, config, eventually, start};
use libp2p::multiaddr::Protocol;

/// A relay R with `limits`, its TCP address, and a node B that listens only on R's circuit
/// address, once B holds its reservation.
async fn relay_and_private(
    limits: nunet_network::RelayLimits,
) -> (common::Node, libp2p::Multiaddr, common::Node) {
    let mut cfg_r = config();
    cfg_r.relay_server = true;
    cfg_r.relay_limits = limits;
    let r = start(cfg_r, Answer::Echo).await;
    let r_addr = addr(&r.net, "tcp").await;
    let mut cfg_b = config();
    cfg_b.listen = vec![r_addr.clone().with(Protocol::P2pCircuit)];
    // The relay is also a bootstrap peer: both dials race at start; the reservation must win.
    cfg_b.bootstrap = vec![r_addr.clone()];
    let b = start(cfg_b, Answer::Echo).await;
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
    (r, r_addr, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_behind_a_relay_is_reachable_through_the_circuit() {
    // R serves as relay; B reserves a slot on R and listens on the circuit address.
    let (_r, r_addr, b) = relay_and_private(nunet_network::RelayLimits::default()).await;
    let b_id = b.net.local_peer_id();

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

/// Sends `bytes` from `c` to `b` over a fresh stream (through the relay: `c` has no listen
/// address, so no hole punch can give them a direct connection) and returns what `b` read
/// before the stream ended.
async fn relayed_bytes(relay_limits: nunet_network::RelayLimits, bytes: usize) -> usize {
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    let proto = libp2p::StreamProtocol::new("/nunet/test/sink/1");
    let (_r, r_addr, b) = relay_and_private(relay_limits).await;
    let b_id = b.net.local_peer_id();
    let mut incoming = b.net.streams().accept(proto.clone()).unwrap();
    let reader = tokio::spawn(async move {
        let (_, mut s) = incoming.next().await.unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        // A closed circuit ends the stream with EOF or a reset: both end the count.
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    let mut cfg_c = config();
    cfg_c.listen = Vec::new();
    let c = start(cfg_c, Answer::Echo).await;
    c.net
        .dial(r_addr.with(Protocol::P2pCircuit).with(Protocol::P2p(b_id)))
        .await
        .unwrap();
    let mut s = c.net.open_stream(b_id, proto).await.unwrap();
    let chunk = vec![7u8; 16 << 10];
    let mut sent = 0;
    while sent < bytes {
        if s.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = s.close().await;
    tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the reader never saw the stream end")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_closes_a_circuit_at_its_configured_byte_limit() {
    let total = 1 << 20;
    // The default limit (256 MiB a circuit) lets the whole MiB through…
    let all = relayed_bytes(nunet_network::RelayLimits::default(), total).await;
    assert_eq!(all, total);
    // …and a 64 KiB limit (`p2p.relay_circuit_mb` in MiB on a node; bytes here) ends the
    // circuit once it is exceeded. The relay checks after each copy of its buffer and then
    // resets both sides, so the receiver gets part of the limit (what arrived before the
    // reset; 48 KiB here) and never more than the limit and a buffer or two.
    let limit = 64 << 10;
    let cut = relayed_bytes(
        nunet_network::RelayLimits {
            circuit_bytes: limit,
            ..Default::default()
        },
        total,
    )
    .await;
    assert!(
        cut > 0 && cut < limit as usize + (256 << 10),
        "{cut} bytes crossed a relay limited to {limit}"
    );
}
