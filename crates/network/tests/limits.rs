//! Connection and stream limits: floods of raw TCP connections, too many peers, too many
//! streams. Real swarms on 127.0.0.1, real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Answer, addr, config, connected, echo_node, eventually, start};
use libp2p::multiaddr::Protocol;
use nunet_network::{Multiaddr, PING_PROTOCOL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(5);
/// Safety net for reads that must end promptly either way; never reached when the node works.
const HANG: Duration = Duration::from_secs(30);
/// The dialer side of multistream-select's header (`/multistream/1.0.0\n`, length-prefixed):
/// a listener that took the connection into its handshake answers with the same bytes.
const MSS_HEADER: &[u8] = b"\x13/multistream/1.0.0\n";

fn tcp_port(a: &Multiaddr) -> u16 {
    a.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap()
}

/// What the node did with one raw TCP connection.
enum Raw {
    /// It started a libp2p handshake on it (answered the multistream header).
    Held(tokio::net::TcpStream),
    /// It closed it without a word.
    Refused,
}

async fn raw_connection(port: u16) -> Raw {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return Raw::Refused;
    };
    if s.write_all(MSS_HEADER).await.is_err() {
        return Raw::Refused;
    }
    let mut back = vec![0u8; MSS_HEADER.len()];
    match tokio::time::timeout(HANG, s.read_exact(&mut back)).await {
        Ok(Ok(_)) => {
            assert_eq!(back, MSS_HEADER);
            Raw::Held(s)
        }
        Ok(Err(_)) => Raw::Refused,
        Err(_) => panic!("the node neither answered nor closed a raw connection in {HANG:?}"),
    }
}

/// Whether the node still keeps this connection open (no EOF, no reset pending).
fn still_open(s: tokio::net::TcpStream) -> bool {
    let s = s.into_std().unwrap();
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_tcp_flood_is_capped_and_the_node_keeps_answering() {
    const PENDING: u32 = 8;
    const FLOOD: usize = 120;
    let mut cfg = config();
    cfg.limits.max_pending_incoming = PENDING;
    let a = start(cfg, Answer::Echo).await;
    let a_id = a.net.local_peer_id();
    let a_tcp = addr(&a.net, "tcp").await;
    let b = echo_node().await;
    let c = echo_node().await;
    b.net.dial(a_tcp.clone()).await.unwrap();
    assert_eq!(
        b.net.request(a_id, b"before".to_vec(), T).await.unwrap(),
        b"echo:before"
    );

    // Far more half-open connections than the node takes into handshakes at once.
    let port = tcp_port(&a_tcp);
    let outcomes = futures::future::join_all((0..FLOOD).map(|_| raw_connection(port))).await;
    let mut held = Vec::new();
    let mut refused = 0usize;
    for o in outcomes {
        match o {
            Raw::Held(s) => held.push(s),
            Raw::Refused => refused += 1,
        }
    }
    assert!(
        refused >= FLOOD / 2,
        "only {refused} of {FLOOD} raw connections were refused"
    );

    // While the flood holds its connections: the connected peer is still answered, and the
    // node still dials out and is answered.
    assert_eq!(
        b.net.request(a_id, b"during".to_vec(), T).await.unwrap(),
        b"echo:during"
    );
    a.net.ping(b.net.local_peer_id()).await.unwrap();
    let c_id = c.net.local_peer_id();
    a.net.dial(addr(&c.net, "tcp").await).await.unwrap();
    assert_eq!(
        a.net.request(c_id, b"out".to_vec(), T).await.unwrap(),
        b"echo:out"
    );

    // Never more handshakes in progress than the limit.
    let open = held.into_iter().map(still_open).filter(|o| *o).count();
    assert!(
        open <= PENDING as usize,
        "{open} raw connections held at once, limit {PENDING}"
    );

    // Once the flood is gone, new peers get in again.
    let d = echo_node().await;
    assert!(
        eventually(20, || async { d.net.dial(a_tcp.clone()).await.is_ok() }).await,
        "a new peer could not connect after the flood"
    );
    assert_eq!(
        d.net.request(a_id, b"after".to_vec(), T).await.unwrap(),
        b"echo:after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_peers_over_the_limit_are_turned_away() {
    let mut cfg = config();
    cfg.limits.max_established_incoming = 2;
    let a = start(cfg, Answer::Echo).await;
    let a_id = a.net.local_peer_id();
    let a_tcp = addr(&a.net, "tcp").await;
    let p1 = echo_node().await;
    let p2 = echo_node().await;
    let p3 = echo_node().await;
    p1.net.dial(a_tcp.clone()).await.unwrap();
    p2.net.dial(a_tcp.clone()).await.unwrap();
    assert!(eventually(5, || async { a.net.peers().await.len() == 2 }).await);

    // The third peer's handshake may complete on its side, but the node closes the
    // connection at once and never counts it.
    let _ = p3.net.dial(a_tcp.clone()).await;
    let r = p3.net.request(a_id, b"three".to_vec(), T).await;
    assert!(r.is_err(), "a peer over the limit was answered: {r:?}");
    assert!(eventually(5, || async { !connected(&p3.net, a_id).await }).await);
    assert!(!connected(&a.net, p3.net.local_peer_id()).await);

    // The first two are still served.
    for p in [&p1, &p2] {
        assert_eq!(
            p.net.request(a_id, b"ok".to_vec(), T).await.unwrap(),
            b"echo:ok"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_opening_too_many_streams_is_disconnected() {
    const STREAMS: usize = 8;
    let mut cfg = config();
    cfg.limits.max_streams_per_connection = STREAMS;
    let a = start(cfg, Answer::Echo).await;
    let a_id = a.net.local_peer_id();
    let a_tcp = addr(&a.net, "tcp").await;
    let greedy = echo_node().await;
    let polite = echo_node().await;
    greedy.net.dial(a_tcp.clone()).await.unwrap();
    polite.net.dial(a_tcp).await.unwrap();

    // Ping streams stay open (the node waits for 32-byte blocks); keep opening them. Past
    // the limit the node ends the whole connection, and the open fails.
    let mut control = greedy.net.streams();
    let mut open = Vec::new();
    let mut refused = false;
    for _ in 0..4 * STREAMS {
        match tokio::time::timeout(HANG, control.open_stream(a_id, PING_PROTOCOL)).await {
            Ok(Ok(s)) => open.push(s),
            Ok(Err(_)) => {
                refused = true;
                break;
            }
            Err(_) => panic!("opening a stream hung"),
        }
    }
    assert!(
        refused && open.len() <= STREAMS,
        "{} streams opened on one connection, limit {STREAMS}",
        open.len()
    );
    drop(open);

    // Everyone else is still served.
    assert_eq!(
        polite.net.request(a_id, b"ok".to_vec(), T).await.unwrap(),
        b"echo:ok"
    );
}
