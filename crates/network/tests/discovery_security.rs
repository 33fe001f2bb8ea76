//! DHT discovery through a bootstrap node, private swarm keys, and hostile input.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Answer, addr, config, connected, echo_node, eventually, start};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{StreamProtocol, multiaddr::Protocol};
use nunet_network::{ACTOR_PROTOCOL, NetError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_only_know_the_bootstrap_node_find_each_other() {
    let a = echo_node().await;
    let a_addr = addr(&a.net, "tcp").await;
    let mut cfg_b = config();
    cfg_b.bootstrap = vec![a_addr.clone()];
    let mut cfg_c = config();
    cfg_c.bootstrap = vec![a_addr];
    let b = start(cfg_b, Answer::Echo).await;
    let c = start(cfg_c, Answer::Echo).await;
    let (a_id, b_id, c_id) = (
        a.net.local_peer_id(),
        b.net.local_peer_id(),
        c.net.local_peer_id(),
    );

    // Both reach the bootstrap node on their own.
    assert!(eventually(5, || async { connected(&b.net, a_id).await }).await);
    assert!(eventually(5, || async { connected(&c.net, a_id).await }).await);

    // Random walks through A put B and C in each other's routing tables.
    let found = eventually(15, || async {
        let b_knows = b.net.dht_peers().await.iter().any(|(p, _)| *p == c_id);
        let c_knows = c.net.dht_peers().await.iter().any(|(p, _)| *p == b_id);
        b_knows && c_knows
    })
    .await;
    assert!(
        found,
        "B: {:?}\nC: {:?}",
        b.net.dht_peers().await,
        c.net.dht_peers().await
    );
    // A learns B from identify once B's listen addresses arrive; give it the same patience.
    assert!(
        eventually(15, || async {
            a.net.dht_peers().await.iter().any(|(p, _)| *p == b_id)
        })
        .await,
        "A: {:?}",
        a.net.dht_peers().await
    );

    // A lookup gives dial-able addresses (loopback TCP/QUIC of C).
    let addrs = b.net.find_peer(c_id).await.unwrap();
    assert!(
        addrs.iter().any(|a| a
            .iter()
            .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_loopback()))),
        "{addrs:?}"
    );
    // And a request needs no explicit dial.
    let r = b.net.request(c_id, b"hi".to_vec(), T).await.unwrap();
    assert_eq!(r, b"echo:hi");
    assert!(eventually(5, || async { connected(&b.net, c_id).await }).await);

    // A peer nobody knows is not found.
    let nobody = libp2p::PeerId::random();
    let r = b.net.find_peer(nobody).await;
    assert!(
        matches!(r, Err(NetError::NotFound(p)) if p == nobody),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_swarm_keys_must_match() {
    let with_key = |k: [u8; 32]| {
        let mut cfg = config();
        cfg.swarm_key = Some(k);
        cfg
    };
    let a = start(with_key([1; 32]), Answer::Echo).await;
    // QUIC is not used in a private swarm.
    let listening = a.net.listen_addrs().await;
    assert!(
        listening.iter().all(|a| !a.to_string().contains("quic")),
        "{listening:?}"
    );
    let a_tcp = addr(&a.net, "tcp").await;
    let a_id = a.net.local_peer_id();

    let same = start(with_key([1; 32]), Answer::Echo).await;
    let other = start(with_key([2; 32]), Answer::Echo).await;
    let public = echo_node().await;

    // A mismatched key turns the stream into noise: the handshake fails or stalls until the
    // 10 s connection timeout, so run the three refused dials together.
    let public_tcp = addr(&public.net, "tcp").await;
    let (r1, r2, r3) = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::join!(
            other.net.dial(a_tcp.clone()),
            public.net.dial(a_tcp.clone()),
            same.net.dial(public_tcp),
        )
    })
    .await
    .unwrap();
    for r in [r1, r2, r3] {
        assert!(matches!(r, Err(NetError::Dial(_))), "{r:?}");
    }
    assert!(!connected(&a.net, other.net.local_peer_id()).await);
    assert!(!connected(&a.net, public.net.local_peer_id()).await);

    same.net.dial(a_tcp).await.unwrap();
    let r = same.net.request(a_id, b"psk".to_vec(), T).await.unwrap();
    assert_eq!(r, b"echo:psk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_does_not_hurt_the_node() {
    let a = echo_node().await;
    let b = echo_node().await;
    let a_id = a.net.local_peer_id();
    let a_tcp = addr(&a.net, "tcp").await;

    // 1. Raw TCP garbage instead of a libp2p handshake.
    let port = a_tcp
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    for junk in [
        vec![0xffu8; 4096],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0u8; 3],
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let _ = s.write_all(&junk).await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(300), s.read_to_end(&mut sink)).await;
    }

    // 2. Authenticated peer, raw streams on the actor protocol with broken frames.
    b.net.dial(a_tcp).await.unwrap();
    let proto = StreamProtocol::new(ACTOR_PROTOCOL);
    let frames: Vec<Vec<u8>> = vec![
        // Claims 2^63 bytes.
        vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3,
        ],
        // Claims 2 MiB (over the 1 MiB limit), sends 64 KiB.
        {
            let mut v = vec![0x80, 0x80, 0x80, 0x01];
            v.extend(std::iter::repeat_n(0xab, 64 * 1024));
            v
        },
        // Varint that never ends.
        vec![0x80; 64],
        // Truncated body.
        vec![100, 1, 2, 3],
        // Nothing at all.
        Vec::new(),
    ];
    let mut control = b.net.streams();
    for frame in frames {
        let mut s = control.open_stream(a_id, proto.clone()).await.unwrap();
        let _ = s.write_all(&frame).await;
        let _ = s.close().await;
        let mut back = Vec::new();
        let r = tokio::time::timeout(T, s.read_to_end(&mut back)).await;
        assert!(r.is_ok(), "the node kept a garbage stream open");
        assert!(back.is_empty(), "garbage got an answer: {back:?}");
    }

    // 3. A request over the receiver's limit, from a node with a larger limit.
    let mut big_cfg = config();
    big_cfg.max_message_bytes = 4 * 1024 * 1024;
    let big = start(big_cfg, Answer::Echo).await;
    big.net.dial(addr(&a.net, "tcp").await).await.unwrap();
    let r = big.net.request(a_id, vec![0u8; 2 * 1024 * 1024], T).await;
    assert!(matches!(r, Err(NetError::Request { .. })), "{r:?}");

    // The node still serves proper requests, on the same connections.
    assert_eq!(
        b.net.request(a_id, b"ok".to_vec(), T).await.unwrap(),
        b"echo:ok"
    );
    assert_eq!(
        big.net.request(a_id, b"ok".to_vec(), T).await.unwrap(),
        b"echo:ok"
    );
    assert!(b.net.ping(a_id).await.is_ok());
}
