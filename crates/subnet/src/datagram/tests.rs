//! Unit tests of the datagram path: offers, endpoints, liveness.
#![allow(clippy::unwrap_used)]

use super::*;
use libp2p::Multiaddr;

#[test]
fn offer_round_trips_and_rejects_garbage() {
    assert_eq!(OFFER_LEN, 1 + 2 + 4 + 32);
    let o = Offer {
        port: 4242,
        session: 7,
        key: [9u8; 32],
    };
    assert_eq!(Offer::decode(&Offer::encode(Some(&o))), Ok(Some(o)));
    assert_eq!(Offer::decode(&Offer::encode(None)), Ok(None));
    let mut bad = [0u8; OFFER_LEN];
    bad[0] = 7;
    assert!(Offer::decode(&bad).is_err());
    bad[0] = 1; // port 0
    assert!(Offer::decode(&bad).is_err());
}

#[test]
fn a_path_is_dead_only_after_unacknowledged_sends_for_a_while() {
    let hub = Hub::start(&DatagramConfig::default()).unwrap();
    let offer = Offer {
        port: 9,
        session: 1,
        key: [1; 32],
    };
    let path = hub.open_tx([127, 0, 0, 1].into(), &offer).unwrap();
    let mut live = Liveness::default();
    let t0 = std::time::Instant::now();
    let later = |s: u64| t0 + Duration::from_secs(s);
    assert!(!live.dead(&path, later(100)), "nothing sent: alive");
    path.send_probe().unwrap();
    assert!(!live.dead(&path, later(0)));
    assert!(!live.dead(&path, later(3)));
    assert!(
        live.dead(&path, later(4)),
        "unacknowledged for more than 3 s"
    );
    live.acked(&path);
    assert!(!live.dead(&path, later(10)));
    hub.stop();
}

#[test]
fn direct_ip_skips_relayed_endpoints() {
    use nunet_network::direct_ipv4 as direct_ip;
    let relayed: Multiaddr =
        "/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            .parse()
            .unwrap();
    let direct: Multiaddr = "/ip4/172.31.0.3/tcp/4001".parse().unwrap();
    let v6: Multiaddr = "/ip6/fd00::3/tcp/4001".parse().unwrap();
    assert_eq!(direct_ip(std::slice::from_ref(&relayed)), None);
    assert_eq!(direct_ip(std::slice::from_ref(&v6)), None);
    assert_eq!(
        direct_ip(&[relayed, v6, direct]),
        Some(IpAddr::V4([172, 31, 0, 3].into()))
    );
}
