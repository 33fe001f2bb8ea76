//! The datagram fast path between two namespaces: traffic moves to UDP once a probe is
//! confirmed, a path that drops UDP stays on the libp2p stream, the stream path alone still
//! carries bulk traffic, and garbage on the datagram port is counted and harmless.
//! Needs root, iproute2, iptables and ping.
#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use common::{Node, NsRuntime, Pair, address_tun, eventually, ping, sh, tcp_transfer};
use nunet_subnet::DatagramConfig;

const ENS: &str = "ens-datagram";
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

fn nodes(pair: &Pair, cfg: DatagramConfig, before_join: impl FnOnce(&Node, &Node)) -> (Node, Node) {
    let a = Node::start_with(&pair.a, "10.99.0.1", cfg);
    let b = Node::start_with(&pair.b, "10.99.0.2", cfg);
    a.dial(&b.addr);
    before_join(&a, &b);
    let routes = BTreeMap::from([(A_IP, a.peer()), (B_IP, b.peer())]);
    a.join(ENS, &routes);
    b.join(ENS, &routes);
    address_tun(&pair.a, "10.77.0.2", &["10.77.0.3"]);
    address_tun(&pair.b, "10.77.0.3", &["10.77.0.2"]);
    assert!(
        eventually(10, || ping(&pair.a, "10.77.0.3", 1)),
        "subnet did not come up"
    );
    (a, b)
}

#[test]
fn traffic_moves_to_the_confirmed_datagram_path() {
    let pair = Pair::new();
    let (a, b) = nodes(&pair, DatagramConfig::default(), |_, _| {});
    assert!(
        eventually(5, || {
            let (sa, sb) = (a.svc.stats(ENS).unwrap(), b.svc.stats(ENS).unwrap());
            sa.datagram_paths >= 1 && sb.datagram_paths >= 1
        }),
        "datagram paths not confirmed: {:?} {:?}",
        a.svc.stats(ENS),
        b.svc.stats(ENS)
    );
    let (a0, b0) = (a.svc.stats(ENS).unwrap(), b.svc.stats(ENS).unwrap());
    assert!(ping(&pair.a, "10.77.0.3", 5));
    assert!(
        tcp_transfer(&pair.a, &pair.b, "10.77.0.3", 7001, 4_000_000),
        "TCP payload lost or corrupted over datagrams"
    );
    let (a1, b1) = (a.svc.stats(ENS).unwrap(), b.svc.stats(ENS).unwrap());
    assert!(a1.datagrams_out - a0.datagrams_out >= 5, "{a1:?}");
    assert!(b1.datagrams_in - b0.datagrams_in >= 5, "{b1:?}");
    // Bulk went as datagrams too: more than 4 MB arrived that way.
    assert!(b1.bytes_in - b0.bytes_in > 4_000_000, "{b1:?}");
    assert_eq!(
        b1.datagrams_in - b0.datagrams_in,
        b1.packets_in - b0.packets_in
    );
    assert_eq!(a1.dropped_datagram_send + b1.dropped_bad_datagram, 0);
}

#[test]
fn a_path_that_drops_udp_stays_on_the_stream() {
    let pair = Pair::new();
    let ns_b = pair.b.0.clone();
    let (a, b) = nodes(&pair, DatagramConfig::default(), |_, b| {
        let port = b.svc.datagram_port().unwrap().to_string();
        sh(&[
            "ip", "netns", "exec", &ns_b, "iptables", "-I", "INPUT", "-p", "udp", "--dport", &port,
            "-j", "DROP",
        ]);
    });
    // b → a is confirmed; a → b never is (its probes are dropped), and traffic still flows.
    assert!(eventually(5, || b.svc.stats(ENS).unwrap().datagram_paths >= 1));
    std::thread::sleep(Duration::from_millis(2500)); // every probe of a has been sent
    assert_eq!(a.svc.stats(ENS).unwrap().datagram_paths, 0);
    let a0 = a.svc.stats(ENS).unwrap();
    assert!(
        ping(&pair.a, "10.77.0.3", 3),
        "ping failed on the stream fallback"
    );
    assert!(tcp_transfer(&pair.a, &pair.b, "10.77.0.3", 7002, 1_000_000));
    let a1 = a.svc.stats(ENS).unwrap();
    assert_eq!(a1.datagrams_out, 0, "{a1:?}");
    assert!(a1.packets_out - a0.packets_out >= 3);
}

/// A confirmed path that starts dropping datagrams (a firewall appears) is given up within
/// seconds: traffic goes back to the stream instead of vanishing.
#[test]
fn a_confirmed_path_that_goes_silent_falls_back_to_the_stream() {
    let pair = Pair::new();
    let (a, b) = nodes(&pair, DatagramConfig::default(), |_, _| {});
    assert!(eventually(5, || a.svc.stats(ENS).unwrap().datagram_paths >= 1));
    let port = b.svc.datagram_port().unwrap().to_string();
    sh(&[
        "ip", "netns", "exec", &pair.b.0, "iptables", "-I", "INPUT", "-p", "udp", "--dport", &port,
        "-j", "DROP",
    ]);
    assert!(
        !ping(&pair.a, "10.77.0.3", 1),
        "the ping went through although datagrams are dropped"
    );
    assert!(
        eventually(12, || ping(&pair.a, "10.77.0.3", 1)),
        "traffic did not come back over the stream: {:?}",
        a.svc.stats(ENS)
    );
    let s = a.svc.stats(ENS).unwrap();
    assert!(s.datagram_paths_lost >= 1, "{s:?}");
    assert!(s.streams_opened >= 2, "the stream was not reopened: {s:?}");
}

#[test]
fn with_datagrams_off_the_stream_carries_everything() {
    let pair = Pair::new();
    let off = DatagramConfig {
        enabled: false,
        ..DatagramConfig::default()
    };
    let (a, b) = nodes(&pair, off, |_, _| {});
    assert!(a.svc.datagram_port().is_none());
    assert!(tcp_transfer(&pair.b, &pair.a, "10.77.0.2", 7003, 4_000_000));
    let (sa, sb) = (a.svc.stats(ENS).unwrap(), b.svc.stats(ENS).unwrap());
    assert_eq!(sa.datagram_paths + sb.datagram_paths, 0);
    assert_eq!(sa.datagrams_in + sb.datagrams_out, 0);
    assert!(sa.bytes_in > 4_000_000, "{sa:?}");
}

#[test]
fn garbage_on_the_datagram_port_is_counted_and_harmless() {
    let pair = Pair::new();
    let (_a, b) = nodes(&pair, DatagramConfig::default(), |_, _| {});
    let to = format!("10.99.0.2:{}", b.svc.datagram_port().unwrap());
    let rt = NsRuntime::new(&pair.a);
    rt.run(async move {
        let s = tokio::net::UdpSocket::bind("10.99.0.1:0").await.unwrap();
        s.send_to(&[1, 2, 3], &to).await.unwrap(); // runt
        let mut forged = vec![0u8; 200]; // a data datagram of a session nobody has
        forged[0] = 1;
        forged[4..8].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
        forged[15] = 1;
        s.send_to(&forged, &to).await.unwrap();
        s.send_to(&vec![0xff; 60_000], &to).await.unwrap(); // large garbage
    });
    assert!(
        eventually(3, || b.svc.unclaimed_datagrams() == 3),
        "unclaimed: {}",
        b.svc.unclaimed_datagrams()
    );
    let s = b.svc.stats(ENS).unwrap();
    assert_eq!(s.dropped_bad_datagram, 0, "{s:?}");
    assert!(ping(&pair.a, "10.77.0.3", 2), "subnet broken by garbage");
}
