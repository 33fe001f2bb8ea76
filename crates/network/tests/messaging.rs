//! Request-response, gossip and ping between real swarms on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Answer, addr, config, echo_node, start, wait_event};
use nunet_network::{NetError, NetEvent};

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_round_trip_over_tcp_and_quic() {
    let a = echo_node().await;
    let b = echo_node().await;
    let c = echo_node().await;
    let a_id = a.net.local_peer_id();

    b.net.dial(addr(&a.net, "tcp").await).await.unwrap();
    let answer = b.net.request(a_id, b"hello".to_vec(), T).await.unwrap();
    assert_eq!(answer, b"echo:hello");

    // QUIC, and an empty payload.
    let quic = addr(&a.net, "quic").await;
    assert!(quic.to_string().contains("quic-v1"));
    c.net.dial(quic).await.unwrap();
    let peers = c.net.peers().await;
    let via = &peers.iter().find(|p| p.peer_id == a_id).unwrap().addrs;
    assert!(
        via.iter().any(|a| a.to_string().contains("quic-v1")),
        "{via:?}"
    );
    assert_eq!(c.net.request(a_id, Vec::new(), T).await.unwrap(), b"echo:");

    // Both directions on one connection: A asks B.
    let back = a
        .net
        .request(b.net.local_peer_id(), b"x".to_vec(), T)
        .await
        .unwrap();
    assert_eq!(back, b"echo:x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_times_out_or_fails_fast_when_the_peer_does_not_answer() {
    let silent = start(config(), Answer::Never).await;
    let dropping = start(config(), Answer::Drop).await;
    let b = echo_node().await;
    b.net.dial(addr(&silent.net, "tcp").await).await.unwrap();
    b.net.dial(addr(&dropping.net, "tcp").await).await.unwrap();

    let t0 = Instant::now();
    let r = b
        .net
        .request(
            silent.net.local_peer_id(),
            b"?".to_vec(),
            Duration::from_millis(500),
        )
        .await;
    assert!(matches!(r, Err(NetError::Timeout(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    // A handler that drops `reply` makes the request fail at once, not time out.
    let t0 = Instant::now();
    let r = b
        .net
        .request(
            dropping.net.local_peer_id(),
            b"?".to_vec(),
            Duration::from_secs(10),
        )
        .await;
    assert!(matches!(r, Err(NetError::Request { .. })), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_every_subscriber_exactly_once() {
    let mut a = echo_node().await;
    let mut b = echo_node().await;
    let mut c = echo_node().await;
    let (a_id, b_id, c_id) = (
        a.net.local_peer_id(),
        b.net.local_peer_id(),
        c.net.local_peer_id(),
    );
    // A full triangle, so every message has two ways to reach each node.
    b.net.dial(addr(&a.net, "tcp").await).await.unwrap();
    c.net.dial(addr(&a.net, "tcp").await).await.unwrap();
    c.net.dial(addr(&b.net, "tcp").await).await.unwrap();
    let topic = "/nunet/deployment";
    for n in [&a, &b, &c] {
        n.net.subscribe(topic).await.unwrap();
    }
    // Wait until A knows that B and C subscribed, and B and C know about each other.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let ev = wait_event(&mut a.events, 10, |e| {
            matches!(e, NetEvent::Subscribed { .. })
        })
        .await
        .expect("A never saw the subscriptions");
        if let NetEvent::Subscribed { peer, topic: t } = ev {
            assert_eq!(t, topic);
            if !seen.contains(&peer) {
                seen.push(peer);
            }
        }
    }
    assert!(seen.contains(&b_id) && seen.contains(&c_id));
    for (n, other) in [(&mut b, c_id), (&mut c, b_id)] {
        wait_event(
            &mut n.events,
            10,
            |e| matches!(e, NetEvent::Subscribed { peer, .. } if *peer == other),
        )
        .await
        .expect("subscription not seen");
    }

    a.net.publish(topic, b"bid request".to_vec()).await.unwrap();
    for n in [&mut b, &mut c] {
        let ev = wait_event(&mut n.events, 10, |e| matches!(e, NetEvent::Gossip { .. }))
            .await
            .expect("gossip not delivered");
        match ev {
            NetEvent::Gossip {
                topic: t,
                source,
                payload,
            } => {
                assert_eq!(t, topic);
                assert_eq!(source, Some(a_id));
                assert_eq!(payload, b"bid request");
            }
            _ => unreachable!(),
        }
    }
    // Nothing more arrives: each subscriber got it exactly once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in [&mut b, &mut c] {
        while let Ok(ev) = n.events.try_recv() {
            assert!(!matches!(ev, NetEvent::Gossip { .. }), "duplicate: {ev:?}");
        }
    }
    // The publisher does not receive its own message.
    while let Ok(ev) = a.events.try_recv() {
        assert!(
            !matches!(ev, NetEvent::Gossip { .. }),
            "self-delivery: {ev:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_are_refused_locally() {
    let a = echo_node().await;
    let b = echo_node().await;
    b.net.dial(addr(&a.net, "tcp").await).await.unwrap();
    let big = vec![0u8; 1024 * 1024 + 1];
    let r = b.net.request(a.net.local_peer_id(), big.clone(), T).await;
    assert!(matches!(r, Err(NetError::TooLarge { .. })), "{r:?}");
    let r = b.net.publish("/nunet/hello", big).await;
    assert!(matches!(r, Err(NetError::TooLarge { .. })), "{r:?}");
    // Up to the limit is fine: the 5-byte `echo:` prefix makes the answer exactly 1 MiB.
    let ok = vec![7u8; 1024 * 1024 - 5];
    let back = b.net.request(a.net.local_peer_id(), ok, T).await.unwrap();
    assert_eq!(back.len(), 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_returns_a_fresh_rtt_and_peers_show_identify_info() {
    let mut relay_cfg = config();
    relay_cfg.relay_server = true;
    let a = start(relay_cfg, Answer::Echo).await;
    let b = echo_node().await;
    let a_id = a.net.local_peer_id();
    b.net.dial(addr(&a.net, "tcp").await).await.unwrap();
    let rtt = b.net.ping(a_id).await.unwrap();
    assert!(rtt < Duration::from_secs(1), "{rtt:?}");
    let rtt2 = b.net.ping(a_id).await.unwrap();
    assert!(rtt2 < Duration::from_secs(1));

    let ok = common::eventually(5, || async {
        b.net.peers().await.iter().any(|p| {
            p.peer_id == a_id
                && p.rtt.is_some()
                && p.agent_version
                    .as_deref()
                    .is_some_and(|v| v.starts_with("nunet-rs/"))
                && p.protocols
                    .iter()
                    .any(|x| x == nunet_network::ACTOR_PROTOCOL)
                && p.protocols
                    .iter()
                    .any(|x| x == "/libp2p/circuit/relay/0.2.0/hop")
                && p.gossip_score.is_some()
        })
    })
    .await;
    assert!(ok, "{:?}", b.net.peers().await);

    // Shut down: the handle reports Closed afterwards.
    a.net.shutdown().await;
    let r = a.net.request(b.net.local_peer_id(), vec![1], T).await;
    assert!(matches!(r, Err(NetError::Closed)), "{r:?}");
    assert!(
        common::eventually(5, || async { !common::connected(&b.net, a_id).await }).await,
        "B still sees A after A shut down"
    );
}
