//! Against a real socket and TUN device (root): what the receive thread accepts and drops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::{router::SharedTable, stats::Counters};
use std::time::Instant;

fn udp_payload() -> Vec<u8> {
    let mut p = vec![0u8; VNET_HDR_LEN + 28];
    let ip = &mut p[VNET_HDR_LEN..];
    ip[0] = 0x45;
    ip[3] = 28;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 1, 2, 9]);
    ip[16..20].copy_from_slice(&[10, 1, 2, 2]);
    p
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(3), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn only_authentic_fresh_datagrams_of_a_live_session_get_through() {
    let hub = Hub::start(&DatagramConfig::default()).unwrap();
    let name = format!("nndg{}", std::process::id() % 100_000);
    let counters = Arc::new(Counters::default());
    let peer = PeerId::random();
    let table = Arc::new(SharedTable::default());
    let routes = std::collections::BTreeMap::from([([10, 1, 2, 5].into(), peer)]);
    table.store(crate::router::Table::new(&routes, HashMap::new()));
    let ctx = Inbound {
        dev: tun::open(&name, 1420).expect("TUN (run as root)"),
        reader: Arc::new(crate::router::TunReader::new(peer)),
        table,
        network: "10.1.2.0/24".parse().unwrap(),
        counters: counters.clone(),
    };
    let guard = hub.register(peer, ctx).unwrap();
    // Seal datagrams towards a capture socket, then replay them at the hub by hand.
    let cap = UdpSocket::bind("127.0.0.1:0").unwrap();
    cap.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let offer = Offer {
        port: cap.local_addr().unwrap().port(),
        ..guard.offer().clone()
    };
    let tx = hub.open_tx([127, 0, 0, 1].into(), &offer).unwrap();
    let sealed = || {
        let p = udp_payload();
        let mut buf = vec![0u8; HDR + p.len() + TAG];
        buf[HDR..HDR + p.len()].copy_from_slice(&p);
        tx.send_data(&mut buf, p.len()).unwrap();
        let mut got = vec![0u8; 2048];
        let n = cap.recv(&mut got).unwrap();
        got.truncate(n);
        got
    };
    let to = SocketAddr::from(([127, 0, 0, 1], hub.port()));
    let send = |d: &[u8]| {
        cap.send_to(d, to).unwrap();
    };
    let snap = || counters.snapshot();

    // Authentic: passes authentication, then the packet checks (its source is nobody's).
    let d1 = sealed();
    send(&d1);
    until("authentic datagram checked", || snap().dropped_spoofed == 1);
    // The same datagram again: a replay.
    send(&d1);
    until("replay dropped", || snap().dropped_bad_datagram == 1);
    // A flipped ciphertext bit: fails authentication and does not move the window.
    let mut d2 = sealed();
    d2[HDR + 3] ^= 1;
    send(&d2);
    until("forgery dropped", || snap().dropped_bad_datagram == 2);
    // Unknown session and runt datagrams are nobody's.
    let mut d3 = sealed();
    d3[4] ^= 0xff;
    send(&d3);
    send(&[1, 2, 3]);
    until("unclaimed counted", || hub.unclaimed() == 2);
    assert_eq!(snap().dropped_spoofed, 1);
    // A probe confirms the session once.
    tx.send_probe().unwrap();
    let mut probe = vec![0u8; HDR + PROBE_LEN + TAG];
    let n = cap.recv(&mut probe).unwrap();
    send(&probe[..n]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(3), guard.confirmed())
            .await
            .expect("probe confirmed the session")
    });
    // After the session ends, its datagrams are nobody's.
    let d4 = sealed();
    drop(guard);
    send(&d4);
    until("ended session", || hub.unclaimed() == 3);
    hub.stop();
}
