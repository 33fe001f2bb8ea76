//! Data-path tests of the subnet: two libp2p hosts in two network namespaces joined by a
//! veth, each with a TUN device, and crafted peers attacking the subnet protocol.
//! Needs root and iproute2 (and ping for the ping test).
#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use common::{
    Netns, Node, NsRuntime, Pair, TUN, address_tun, eventually, ping, start_host, tcp_transfer,
    udp_payload,
};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::PeerId;
use nunet_subnet::wire::{self, PROTOCOL};

const ENS: &str = "ens-datapath";
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const X_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 4);

/// Two joined nodes with addressed TUNs; `extra` adds members to both route tables.
fn two_nodes(pair: &Pair, extra: &[(Ipv4Addr, PeerId)]) -> (Node, Node) {
    let a = Node::start(&pair.a, "10.99.0.1");
    let b = Node::start(&pair.b, "10.99.0.2");
    a.dial(&b.addr);
    let mut routes = BTreeMap::from([(A_IP, a.peer()), (B_IP, b.peer())]);
    routes.extend(extra.iter().copied());
    a.join(ENS, &routes);
    b.join(ENS, &routes);
    address_tun(&pair.a, "10.77.0.2", &["10.77.0.3"]);
    address_tun(&pair.b, "10.77.0.3", &["10.77.0.2"]);
    (a, b)
}

/// Opens a subnet stream from `rt`'s host to `to` and writes the handshake and `bytes`;
/// returns whether the remote closed the stream within 3 s afterwards.
fn attack(
    rt: &NsRuntime,
    net: &nunet_network::Network,
    to: PeerId,
    handshake: bool,
    bytes: Vec<u8>,
) -> bool {
    let mut control = net.streams();
    rt.run(async move {
        let mut s = control.open_stream(to, PROTOCOL).await.unwrap();
        let mut out = Vec::new();
        if handshake {
            wire::encode_handshake(ENS, &mut out).unwrap();
        }
        out.extend_from_slice(&bytes);
        let _ = s.write_all(&out).await;
        let _ = s.flush().await;
        // An admitted stream gets the admission answer (ACCEPTED byte + datagram offer)
        // first; then the stream must end.
        if handshake {
            let mut answer = [0u8; wire::ADMISSION_LEN];
            match tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut answer)).await {
                Ok(Ok(())) if answer[0] == 1 => {}
                Ok(Err(_)) => return true, // refused: closed before the answer
                _ => return false,
            }
        }
        let mut one = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(3), s.read(&mut one)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    })
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_frame(payload, &mut out).unwrap();
    out
}

#[test]
fn ping_across_two_namespaces_is_counted() {
    let pair = Pair::new();
    let (a, b) = two_nodes(&pair, &[]);
    // The first stream may be refused while b is still joining; the writer retries.
    assert!(
        eventually(10, || ping(&pair.a, "10.77.0.3", 1)),
        "subnet did not come up"
    );
    assert!(ping(&pair.a, "10.77.0.3", 5), "ping over the subnet failed");
    let (sa, sb) = (a.svc.stats(ENS).unwrap(), b.svc.stats(ENS).unwrap());
    assert!(sa.packets_out >= 5 && sa.packets_in >= 5, "{sa:?}");
    assert!(sb.packets_out >= 5 && sb.packets_in >= 5, "{sb:?}");
    assert_eq!(sa.dropped_spoofed + sb.dropped_spoofed, 0);
    assert!(sa.streams_opened >= 1);
    // a TCP transfer (GSO super-packets through the offload path) arrives intact
    assert!(
        tcp_transfer(&pair.a, &pair.b, "10.77.0.3", 7000, 4_000_000),
        "TCP payload lost or corrupted over the subnet"
    );
}

#[test]
fn non_member_streams_are_rejected() {
    let pair = Pair::new();
    let (_a, b) = two_nodes(&pair, &[]);
    let rt = NsRuntime::new(&pair.a);
    let (mallory, _) = start_host(&rt, "10.99.0.1");
    let m = mallory.clone();
    let baddr = b.addr.clone();
    rt.run(async move { m.dial(baddr).await.unwrap() });
    let rx_before = pair.b.rx_packets(TUN);
    let in_before = b.svc.stats(ENS).unwrap().packets_in;
    // crafted packets claiming A's and the unassigned address as source
    let mut bytes = frame(&udp_payload(A_IP, B_IP, b"evil"));
    bytes.extend(frame(&udp_payload(X_IP, B_IP, b"evil")));
    assert!(
        attack(&rt, &mallory, b.peer(), true, bytes.clone()),
        "stream not closed"
    );
    assert!(attack(
        &rt,
        &mallory,
        b.peer(),
        false,
        b"GET / HTTP/1.1\r\n\r\n".to_vec()
    ));
    assert!(eventually(3, || b.svc.rejected_streams() >= 2));
    assert_eq!(b.svc.stats(ENS).unwrap().packets_in, in_before);
    assert_eq!(
        pair.b.rx_packets(TUN),
        rx_before,
        "a packet reached the TUN"
    );
    // the subnet still works (it may still be coming up: a's first stream can be refused
    // while b joins)
    assert!(eventually(10, || ping(&pair.a, "10.77.0.3", 1)));
    mallory_shutdown(&rt, mallory);
}

fn mallory_shutdown(rt: &NsRuntime, net: nunet_network::Network) {
    rt.run(async move { net.shutdown().await });
}

#[test]
fn member_malformed_traffic_is_dropped_and_counted() {
    let pair = Pair::new();
    let rt = NsRuntime::new(&pair.a);
    let (eve, _) = start_host(&rt, "10.99.0.1");
    let (_a, b) = two_nodes(&pair, &[(X_IP, eve.local_peer_id())]);
    let (e, baddr) = (eve.clone(), b.addr.clone());
    rt.run(async move { e.dial(baddr).await.unwrap() });
    // Once a↔b carry traffic, a's first stream (maybe refused because b had not joined yet)
    // is behind us: from here on, nothing may be refused.
    assert!(
        eventually(10, || ping(&pair.a, "10.77.0.3", 1)),
        "subnet did not come up"
    );
    let rejected_before = b.svc.rejected_streams();
    let s0 = b.svc.stats(ENS).unwrap();
    let rx_before = pair.b.rx_packets(TUN);

    let mut v6 = udp_payload(X_IP, B_IP, b"six");
    v6[wire::VNET_HDR_LEN] = 0x60;
    let mut bytes = frame(&udp_payload(A_IP, B_IP, b"spoofed"));
    bytes.extend(frame(&v6));
    bytes.extend(frame(&udp_payload(X_IP, Ipv4Addr::new(8, 8, 8, 8), b"out")));
    bytes.extend(frame(&udp_payload(X_IP, B_IP, b"legit")));
    bytes.extend(((wire::MAX_FRAME + 1) as u32).to_be_bytes()); // oversized length
    assert!(
        attack(&rt, &eve, b.peer(), true, bytes),
        "oversized frame did not close the stream"
    );
    let s = b.svc.stats(ENS).unwrap();
    assert_eq!(
        (
            s.dropped_spoofed - s0.dropped_spoofed,
            s.dropped_not_ipv4_in - s0.dropped_not_ipv4_in,
            s.dropped_bad_destination - s0.dropped_bad_destination,
            s.packets_in - s0.packets_in,
            s.bad_frames - s0.bad_frames
        ),
        (1, 1, 1, 1, 1),
        "{s:?}"
    );
    // a frame cut short by the end of the stream
    let mut cut = frame(&udp_payload(X_IP, B_IP, b"truncated"));
    cut.truncate(cut.len() - 3);
    let e = eve.clone();
    let bp = b.peer();
    rt.run(async move {
        let mut s = e.streams().open_stream(bp, PROTOCOL).await.unwrap();
        let mut out = Vec::new();
        wire::encode_handshake(ENS, &mut out).unwrap();
        out.extend_from_slice(&cut);
        s.write_all(&out).await.unwrap();
        s.close().await.unwrap();
    });
    assert!(eventually(3, || b.svc.stats(ENS).unwrap().bad_frames
        == s0.bad_frames + 2));
    assert_eq!(b.svc.rejected_streams(), rejected_before);
    assert_eq!(
        pair.b.rx_packets(TUN),
        rx_before + 1,
        "only the legitimate packet is written"
    );
    assert!(
        ping(&pair.a, "10.77.0.3", 2),
        "service broken after malformed input"
    );
    mallory_shutdown(&rt, eve);
}

#[test]
fn leave_removes_the_tun_device_and_is_idempotent() {
    let pair = Pair::new();
    let (a, _b) = two_nodes(&pair, &[]);
    assert!(pair.a.has_link(TUN));
    // joining again with the same spec is a no-op that keeps the device
    let routes = BTreeMap::from([(A_IP, a.peer())]);
    a.join(ENS, &routes);
    assert!(pair.a.has_link(TUN));
    a.leave(ENS);
    assert!(
        !pair.a.has_link(TUN),
        "TUN device still present after leave"
    );
    assert!(a.svc.stats(ENS).is_none());
    a.leave(ENS);
    // and it can be joined again
    a.join(ENS, &routes);
    assert!(pair.a.has_link(TUN));
    a.leave(ENS);
    assert!(!Netns::new().has_link(TUN));
}

/// A node that joins before its peer: its first stream is refused (the peer does not know the
/// ensemble yet). The writer must notice and reopen once the peer has joined, instead of
/// writing into the refused stream for ever.
#[test]
fn joining_before_the_peer_recovers_once_the_peer_joins() {
    let pair = Pair::new();
    let a = Node::start(&pair.a, "10.99.0.1");
    let b = Node::start(&pair.b, "10.99.0.2");
    a.dial(&b.addr);
    let routes = BTreeMap::from([(A_IP, a.peer()), (B_IP, b.peer())]);
    a.join(ENS, &routes);
    address_tun(&pair.a, "10.77.0.2", &["10.77.0.3"]);
    assert!(
        !ping(&pair.a, "10.77.0.3", 1),
        "reached a peer that has not joined"
    );
    b.join(ENS, &routes);
    address_tun(&pair.b, "10.77.0.3", &["10.77.0.2"]);
    assert!(
        eventually(10, || ping(&pair.a, "10.77.0.3", 1)),
        "the subnet never came up after the peer joined"
    );
}

/// Four TCP flows at once in both directions share one stream per direction: the router's
/// direct write and the writer task take turns on it without stalling or corrupting data.
#[test]
fn concurrent_flows_both_ways_arrive_intact() {
    let pair = Pair::new();
    let (_a, _b) = two_nodes(&pair, &[]);
    assert!(
        eventually(10, || ping(&pair.a, "10.77.0.3", 1)),
        "subnet did not come up"
    );
    let rt_a = NsRuntime::new(&pair.a);
    let rt_b = NsRuntime::new(&pair.b);
    let payload = |seed: u32| -> Vec<u8> {
        (0..2_000_000u32)
            .map(|i| (i.wrapping_mul(seed) % 253) as u8)
            .collect()
    };
    let mut checks = Vec::new();
    for (k, (server_rt, server_ip, client_rt)) in
        [(&rt_b, "10.77.0.3", &rt_a), (&rt_a, "10.77.0.2", &rt_b)]
            .into_iter()
            .enumerate()
    {
        for f in 0..4u32 {
            let port = 7100 + (k as u32) * 10 + f;
            let addr = format!("{server_ip}:{port}");
            let listener = server_rt.run({
                let addr = addr.clone();
                async move { tokio::net::TcpListener::bind(addr).await.unwrap() }
            });
            let recv = server_rt.rt_spawn(async move {
                let (mut c, _) = listener.accept().await.unwrap();
                let mut got = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut c, &mut got)
                    .await
                    .unwrap();
                got
            });
            let data = payload(f + 7 * k as u32 + 3);
            let send = client_rt.rt_spawn({
                let data = data.clone();
                async move {
                    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
                    tokio::io::AsyncWriteExt::write_all(&mut c, &data)
                        .await
                        .unwrap();
                    tokio::io::AsyncWriteExt::shutdown(&mut c).await.unwrap();
                }
            });
            checks.push((recv, send, data));
        }
    }
    for (recv, send, data) in checks {
        let got = rt_a
            .run(async move {
                tokio::time::timeout(std::time::Duration::from_secs(60), async {
                    send.await.unwrap();
                    recv.await.unwrap()
                })
                .await
            })
            .expect("a flow stalled over the subnet");
        assert!(
            got == data,
            "a flow arrived corrupted ({} of {} bytes)",
            got.len(),
            data.len()
        );
    }
}
