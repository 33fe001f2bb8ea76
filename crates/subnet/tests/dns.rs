//! The `.internal` responder over real UDP and TCP sockets on loopback, and through a real
//! resolver (busybox `nslookup`).
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use nunet_subnet::dns::{DNS_TTL, DnsResponder, Records};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const WEB: Ipv4Addr = Ipv4Addr::new(10, 42, 7, 2);
const DB: Ipv4Addr = Ipv4Addr::new(10, 42, 7, 3);

async fn responder() -> (DnsResponder, Records) {
    let records = Records::new();
    records.insert("web", WEB);
    records.insert("db.internal", DB);
    let r = DnsResponder::start("127.0.0.1:0".parse().unwrap(), records.clone())
        .await
        .unwrap();
    (r, records)
}

fn query(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m
}

async fn ask_raw(server: SocketAddr, bytes: &[u8]) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

async fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let q = query(name, rtype);
    let resp = ask_raw(server, &q.to_vec().unwrap())
        .await
        .unwrap_or_else(|| panic!("no answer for {name}"));
    assert_eq!(resp.id, q.id);
    assert_eq!(resp.message_type, MessageType::Response);
    resp
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn answers_internal_bare_and_uppercase_names() {
    let (r, _records) = responder().await;
    for name in ["web.internal.", "web.", "WEB.Internal.", "Web."] {
        let m = ask(r.local_addr(), name, RecordType::A).await;
        assert_eq!(m.response_code, ResponseCode::NoError, "{name}");
        assert!(m.authoritative, "{name}");
        assert_eq!(addresses(&m), vec![WEB], "{name}");
        assert_eq!(m.answers[0].ttl, DNS_TTL);
        assert_eq!(m.answers[0].name, Name::from_ascii(name).unwrap());
    }
    // A record inserted with the suffix answers both ways too.
    let m = ask(r.local_addr(), "db.", RecordType::A).await;
    assert_eq!(addresses(&m), vec![DB]);
    assert_eq!(r.stats().answered, 5);
    r.stop().await;
}

#[tokio::test]
async fn unknown_names_get_nxdomain_quickly_and_foreign_names_refused() {
    let (r, _records) = responder().await;
    let t = Instant::now();
    let m = ask(r.local_addr(), "nope.internal.", RecordType::A).await;
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(m.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    assert!(
        m.authorities
            .iter()
            .any(|a| a.record_type() == RecordType::SOA),
        "NXDOMAIN carries the zone SOA"
    );
    let m = ask(r.local_addr(), "nope.", RecordType::A).await;
    assert_eq!(m.response_code, ResponseCode::NXDomain);
    let m = ask(r.local_addr(), "example.com.", RecordType::A).await;
    assert_eq!(m.response_code, ResponseCode::Refused);
    let s = r.stats();
    assert_eq!((s.nxdomain, s.refused), (2, 1));
}

#[tokio::test]
async fn other_types_for_a_known_name_are_empty_noerror() {
    let (r, _records) = responder().await;
    for t in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let m = ask(r.local_addr(), "web.internal.", t).await;
        assert_eq!(m.response_code, ResponseCode::NoError, "{t}");
        assert!(m.answers.is_empty(), "{t}");
    }
    assert_eq!(r.stats().no_data, 3);
}

#[tokio::test]
async fn garbage_is_dropped_and_counted_and_the_next_query_answers() {
    let (r, _records) = responder().await;
    let good = query("web.internal.", RecordType::A).to_vec().unwrap();
    let mut as_response = Message::from_vec(&good).unwrap();
    as_response.metadata.message_type = MessageType::Response;
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 3],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        good[..good.len() - 3].to_vec(),
        (0..=255u8).cycle().take(1500).collect(),
        as_response.to_vec().unwrap(),
    ];
    for j in &junk {
        assert!(
            ask_raw(r.local_addr(), j).await.is_none(),
            "{j:?} got an answer"
        );
    }
    let m = ask(r.local_addr(), "web.internal.", RecordType::A).await;
    assert_eq!(addresses(&m), vec![WEB]);
    let s = r.stats();
    assert_eq!(s.malformed, junk.len() as u64);
    assert_eq!(s.udp_queries, junk.len() as u64 + 1);
}

#[tokio::test]
async fn record_updates_are_visible_at_once() {
    let (r, records) = responder().await;
    let addr = r.local_addr();
    assert_eq!(
        ask(addr, "api.internal.", RecordType::A)
            .await
            .response_code,
        ResponseCode::NXDomain
    );
    records.insert("API", Ipv4Addr::new(10, 42, 7, 9));
    assert_eq!(
        addresses(&ask(addr, "api.internal.", RecordType::A).await),
        vec![Ipv4Addr::new(10, 42, 7, 9)]
    );
    assert_eq!(records.remove("web.internal."), Some(WEB));
    assert_eq!(
        ask(addr, "web.internal.", RecordType::A)
            .await
            .response_code,
        ResponseCode::NXDomain
    );
    records.set([("web", Ipv4Addr::new(10, 42, 7, 20))]);
    assert_eq!(
        addresses(&ask(addr, "web.", RecordType::A).await),
        vec![Ipv4Addr::new(10, 42, 7, 20)]
    );
    assert_eq!(
        ask(addr, "api.internal.", RecordType::A)
            .await
            .response_code,
        ResponseCode::NXDomain,
        "set replaces the whole map"
    );
}

async fn tcp_ask(stream: &mut TcpStream, m: &Message) -> Message {
    let bytes = m.to_vec().unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

#[tokio::test]
async fn tcp_answers_framed_queries_and_bounds_connections() {
    let (r, _records) = responder().await;
    let mut s = TcpStream::connect(r.local_addr()).await.unwrap();
    let m = tcp_ask(&mut s, &query("web.internal.", RecordType::A)).await;
    assert_eq!(addresses(&m), vec![WEB]);
    // A second query on the same connection.
    let m = tcp_ask(&mut s, &query("nope.internal.", RecordType::A)).await;
    assert_eq!(m.response_code, ResponseCode::NXDomain);
    assert_eq!(r.stats().tcp_queries, 2);

    // Fill every slot (one is `s`), then one more is closed at once.
    let mut held = Vec::new();
    for _ in 0..63 {
        held.push(TcpStream::connect(r.local_addr()).await.unwrap());
    }
    // Let the accept loop take them all before the extra one arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(r.local_addr()).await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut b))
        .await
        .expect("the extra connection is closed, not left hanging")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(r.stats().tcp_rejected, 1);
    // The connections already open still answer.
    let m = tcp_ask(&mut s, &query("Web.", RecordType::A)).await;
    assert_eq!(addresses(&m), vec![WEB]);
    // A framed message of garbage closes that connection only.
    let mut bad = held.pop().unwrap();
    bad.write_all(&[0, 4, 1, 2, 3, 4]).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), bad.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(r.stats().malformed, 1);
}

/// Whether this process holds a socket bound to `addr` (`proto`: `tcp` or `udp`): the bound
/// sockets of /proc/net/<proto> whose inode is one of this process's file descriptors.
fn holds(proto: &str, addr: SocketAddr) -> bool {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let SocketAddr::V4(a) = addr else {
        panic!("{addr} is not IPv4")
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    );
    std::fs::read_to_string(format!("/proc/net/{proto}"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .any(|f| f.get(1) == Some(&local.as_str()) && f.get(9).is_some_and(|i| inodes.contains(*i)))
}

#[tokio::test]
async fn stop_closes_the_sockets() {
    let (r, _records) = responder().await;
    let addr = r.local_addr();
    assert!(holds("udp", addr) && holds("tcp", addr));
    r.stop().await;
    let q = query("web.internal.", RecordType::A).to_vec().unwrap();
    assert!(ask_raw(addr, &q).await.is_none());
    assert!(TcpStream::connect(addr).await.is_err());
    // Both sockets are closed. (Not checked by binding the port again: once released, another
    // process may take it first.)
    assert!(!holds("udp", addr), "UDP socket still open on {addr}");
    assert!(!holds("tcp", addr), "TCP socket still open on {addr}");
}

#[tokio::test]
async fn busybox_nslookup_resolves_through_the_responder() {
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("busybox is missing on this machine: install busybox-static (CI does)")
        });
    let (r, _records) = responder().await;
    let server = r.local_addr().to_string();
    let run = |name: &'static str| {
        let (busybox, server) = (busybox.to_string(), server.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(busybox)
                .args(["nslookup", "-type=a", name, &server])
                .output()
                .unwrap()
        })
    };
    let out = run("web.internal").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("10.42.7.2"), "{text}");
    let out = run("missing.internal").await.unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("NXDOMAIN"), "{text}");
}

#[test]
fn record_names_are_matched_in_every_spelling() {
    let r = Records::new();
    r.insert("Web.Internal.", WEB);
    for n in ["web", "WEB", "web.", "web.internal", "web.INTERNAL."] {
        assert_eq!(r.get(n), Some(WEB), "{n}");
    }
    r.insert("a.b", DB);
    assert_eq!(r.get("a.b.internal."), Some(DB));
    r.insert(".", DB);
    assert_eq!(r.len(), 2, "an empty name is not stored");
    assert_eq!(r.remove("WEB.internal"), Some(WEB));
    assert!(r.get("web").is_none());
}

#[tokio::test]
async fn the_zone_apex_answers_its_soa() {
    let (r, _records) = responder().await;
    let m = ask(r.local_addr(), "internal.", RecordType::SOA).await;
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    let m = ask(r.local_addr(), ".", RecordType::NS).await;
    assert_eq!(m.response_code, ResponseCode::Refused);
}
