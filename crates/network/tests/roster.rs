//! The roster (real hosts on loopback): who serves a topic is known beyond the connected
//! peers, a node that joins late pulls it at once, and silent peers are left out.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Answer, addr, config, connected, echo_node, eventually, start};
use nunet_network::ROSTER_PROTOCOL;

const TOPIC: &str = "/nunet/deployment";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_servers_are_known_without_a_connection_and_late_joiners_pull_the_roster() {
    let boot = echo_node().await;
    let boot_addr = addr(&boot.net, "tcp").await;
    let joined = || {
        let mut cfg = config();
        cfg.bootstrap = vec![boot_addr.clone()];
        start(cfg, Answer::Echo)
    };
    let a = joined().await;
    let c = joined().await;
    a.net.subscribe(TOPIC).await.unwrap();
    c.net.subscribe(TOPIC).await.unwrap();
    let (a_id, c_id) = (a.net.local_peer_id(), c.net.local_peer_id());

    // A and C announce themselves once they have a peer; each learns the other's topic
    // (the bootstrap node serves no topic and announces nothing).
    assert!(
        eventually(15, || async {
            a.net.roster().await.unwrap().peers == 1
                && c.net.roster().await.unwrap().peers == 1
                && a.net.topic_peers(TOPIC).await.contains(&c_id)
                && c.net.topic_peers(TOPIC).await.contains(&a_id)
        })
        .await,
        "A: {:?}",
        a.net.roster().await
    );
    // Without a connection, gossipsub alone would not know C serves the topic; the roster does.
    for _ in 0..3 {
        a.net.disconnect(c_id).await.unwrap();
        c.net.disconnect(a_id).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if !connected(&a.net, c_id).await {
            break;
        }
    }
    assert!(a.net.topic_peers(TOPIC).await.contains(&c_id));
    let info = a.net.roster().await.unwrap();
    assert!(info.peers >= 1, "{info:?}");
    assert_eq!(info.topics.len(), 1, "{info:?}");
    assert_eq!(info.topics[0].0, TOPIC);

    // The bootstrap node hands the roster out: its peers list it in identify.
    let peers = a.net.peers().await;
    let b = peers
        .iter()
        .find(|p| p.peer_id == boot.net.local_peer_id())
        .unwrap();
    assert!(
        b.protocols.iter().any(|p| p == ROSTER_PROTOCOL),
        "{:?}",
        b.protocols
    );

    // D joins after A and C announced (their next announcement is a minute away): it knows
    // both within seconds, from the roster it pulled.
    let d = joined().await;
    assert!(
        eventually(10, || async { d.net.roster().await.unwrap().peers >= 2 }).await,
        "D: {:?}",
        d.net.roster().await
    );
    d.net.subscribe(TOPIC).await.unwrap();
    let known = d.net.topic_peers(TOPIC).await;
    assert!(known.contains(&a_id) && known.contains(&c_id), "{known:?}");

    // A peer that stayed silent is quarantined (it stays out of the roster's answers; a
    // connected subscriber is still reported by gossipsub).
    d.net.quiet_topic_peers(vec![c_id]).await;
    let info = d.net.roster().await.unwrap();
    assert_eq!(info.quiet, 1, "{info:?}");
    let known = d.net.topic_peers(TOPIC).await;
    assert!(
        !known.contains(&c_id) || connected(&d.net, c_id).await,
        "{known:?}"
    );
    assert!(known.contains(&a_id));
}
