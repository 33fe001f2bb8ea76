//! The protocol-name translation against libp2p's own multistream-select on one side and a
//! hand-written Go-style negotiation (go-multistream's `SelectOneOf` / `Negotiate`, plain
//! 1.0.0, one protocol) on the other, over real loopback TCP.

#![allow(clippy::unwrap_used)]

use futures::{AsyncReadExt, AsyncWriteExt};
use multistream_select::{Version, dialer_select_proto, listener_select_proto};
use nunet_network::legacy_ids::{Side, Translated};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

type Io = Compat<TcpStream>;

async fn pair() -> (Io, Io) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
    (a.unwrap().compat(), b.unwrap().0.compat())
}

/// One multistream message: varint length (including the newline), the line, a newline.
fn msg(line: &str) -> Vec<u8> {
    let len = line.len() + 1;
    let mut out = Vec::new();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.push((len & 0x7f) as u8 | 0x80);
        out.push((len >> 7) as u8);
    }
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    out
}

async fn read_msg(io: &mut Io) -> String {
    let mut b = [0u8; 1];
    io.read_exact(&mut b).await.unwrap();
    assert!(b[0] < 0x80, "short lines only in this test");
    let mut line = vec![0u8; usize::from(b[0])];
    io.read_exact(&mut line).await.unwrap();
    String::from_utf8(line).unwrap()
}

const HEADER: &str = "/multistream/1.0.0";

#[tokio::test]
async fn a_go_dialer_reaches_a_slashed_listener_and_sees_its_own_name_echoed() {
    let (mut go, ours) = pair().await;
    let server = tokio::spawn(async move {
        let io = Translated::new(ours, Side::Listener);
        let (proto, mut s) = listener_select_proto(io, vec!["/actor/root/messages/0.0.1"])
            .await
            .unwrap();
        let mut data = [0u8; 13];
        s.read_exact(&mut data).await.unwrap();
        (proto, data)
    });
    // go-multistream SelectOneOf: header, wait for the header, proposal, wait for the echo.
    go.write_all(&msg(HEADER)).await.unwrap();
    assert_eq!(read_msg(&mut go).await, format!("{HEADER}\n"));
    go.write_all(&msg("actor/root/messages/0.0.1"))
        .await
        .unwrap();
    assert_eq!(read_msg(&mut go).await, "actor/root/messages/0.0.1\n");
    go.write_all(b"\x05\0\0\0\0\0\0\0hello").await.unwrap();
    let (proto, data) = server.await.unwrap();
    assert_eq!(proto, "/actor/root/messages/0.0.1");
    assert_eq!(&data, b"\x05\0\0\0\0\0\0\0hello");
}

#[tokio::test]
async fn a_slashed_dialer_reaches_a_go_listener_with_the_slashless_name() {
    for version in [Version::V1, Version::V1Lazy] {
        let (ours, mut go) = pair().await;
        let client = tokio::spawn(async move {
            let io = Translated::new(ours, Side::Dialer);
            let (proto, mut s) =
                dialer_select_proto(io, vec!["/actor/abc-123/messages/0.0.1"], version)
                    .await
                    .unwrap();
            s.write_all(b"payload").await.unwrap();
            s.flush().await.unwrap();
            s.close().await.unwrap();
            // Reading on checks the (lazy) echo, then sees the Go side hang up.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            (proto, rest)
        });
        // go-multistream Negotiate: header both ways, then the proposal, then its echo.
        assert_eq!(read_msg(&mut go).await, format!("{HEADER}\n"));
        go.write_all(&msg(HEADER)).await.unwrap();
        assert_eq!(read_msg(&mut go).await, "actor/abc-123/messages/0.0.1\n");
        go.write_all(&msg("actor/abc-123/messages/0.0.1"))
            .await
            .unwrap();
        let mut rest = Vec::new();
        go.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"payload", "{version:?}");
        drop(go);
        let (proto, tail) = client.await.unwrap();
        assert_eq!(proto, "/actor/abc-123/messages/0.0.1");
        assert!(tail.is_empty());
    }
}

#[tokio::test]
async fn a_refused_go_proposal_is_answered_na() {
    let (mut go, ours) = pair().await;
    let server = tokio::spawn(async move {
        let io = Translated::new(ours, Side::Listener);
        listener_select_proto(io, vec!["/actor/root/messages/0.0.1"]).await
    });
    go.write_all(&msg(HEADER)).await.unwrap();
    read_msg(&mut go).await;
    go.write_all(&msg("actor/other/messages/0.0.1"))
        .await
        .unwrap();
    assert_eq!(read_msg(&mut go).await, "na\n");
    drop(go);
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn other_protocols_pass_untouched_through_both_ends() {
    for version in [Version::V1, Version::V1Lazy] {
        let (a, b) = pair().await;
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let expect = big.clone();
        let server = tokio::spawn(async move {
            let io = Translated::new(b, Side::Listener);
            let (proto, mut s) =
                listener_select_proto(io, vec!["/nunet/actor/1.0.0", "actor/x"]).await?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await?;
            Ok::<_, std::io::Error>((proto, got))
        });
        let io = Translated::new(a, Side::Dialer);
        // The first proposal is refused, the second taken: the refusal path is untouched too.
        let (proto, mut s) =
            dialer_select_proto(io, vec!["/nope/1.0.0", "/nunet/actor/1.0.0"], version)
                .await
                .unwrap();
        assert_eq!(proto, "/nunet/actor/1.0.0");
        s.write_all(&big).await.unwrap();
        s.close().await.unwrap();
        let (p, got) = server.await.unwrap().unwrap();
        assert_eq!(p, "/nunet/actor/1.0.0");
        assert!(got == expect, "payload changed in transit ({version:?})");
    }
}

#[tokio::test]
async fn garbage_instead_of_a_negotiation_is_passed_on_for_multistream_to_refuse() {
    let (mut raw, ours) = pair().await;
    let server = tokio::spawn(async move {
        let io = Translated::new(ours, Side::Listener);
        listener_select_proto(io, vec!["/actor/root/messages/0.0.1"]).await
    });
    raw.write_all(&[0xff, 0xff, 0xff, 1, 2, 3]).await.unwrap();
    let res = tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("no hang on garbage")
        .unwrap();
    assert!(res.is_err());
}

/// Identify's protobuf: tag, length, bytes.
fn field(tag: u8, v: &[u8]) -> Vec<u8> {
    let mut out = vec![tag, v.len() as u8];
    out.extend_from_slice(v);
    out
}

fn protocols_of(msg: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < msg.len() {
        let (tag, len) = (msg[at], usize::from(msg[at + 1]));
        if tag == 0x1a {
            out.push(String::from_utf8(msg[at + 2..at + 2 + len].to_vec()).unwrap());
        }
        at += 2 + len;
    }
    out
}

#[tokio::test]
async fn our_identify_answer_also_names_nunets_actor_protocols_without_the_slash() {
    let (mut go, ours) = pair().await;
    let mut info = field(0x2a, b"ipfs/0.1.0");
    info.extend(field(0x1a, b"/ipfs/ping/1.0.0"));
    info.extend(field(0x1a, b"/actor/root/messages/0.0.1"));
    info.extend(field(0x0a, &[8, 1, 18, 0]));
    let sent = info.clone();
    let server = tokio::spawn(async move {
        let io = Translated::new(ours, Side::Listener);
        let (_, mut s) = listener_select_proto(io, vec!["/ipfs/id/1.0.0"])
            .await
            .unwrap();
        let mut framed = vec![sent.len() as u8];
        framed.extend_from_slice(&sent);
        s.write_all(&framed).await.unwrap();
        s.flush().await.unwrap();
        s.close().await.unwrap();
    });
    go.write_all(&msg(HEADER)).await.unwrap();
    read_msg(&mut go).await;
    go.write_all(&msg("/ipfs/id/1.0.0")).await.unwrap();
    assert_eq!(read_msg(&mut go).await, "/ipfs/id/1.0.0\n");
    let mut rest = Vec::new();
    go.read_to_end(&mut rest).await.unwrap();
    server.await.unwrap();
    let len = usize::from(rest[0]);
    assert_eq!(rest.len(), 1 + len, "one length-prefixed message");
    let body = &rest[1..];
    assert!(
        body.starts_with(&info),
        "the original fields come first, unchanged"
    );
    assert_eq!(
        protocols_of(body),
        [
            "/ipfs/ping/1.0.0",
            "/actor/root/messages/0.0.1",
            "actor/root/messages/0.0.1"
        ]
    );
}

#[tokio::test]
async fn an_identify_we_receive_is_not_touched() {
    // Only what this node writes is amended: a remote's identify answer reaches the swarm
    // as it was sent.
    let (ours, mut go) = pair().await;
    let mut body = field(0x1a, b"/actor/root/messages/0.0.1");
    body.extend(field(0x1a, b"actor/root/messages/0.0.1"));
    let mut framed = vec![body.len() as u8];
    framed.extend_from_slice(&body);
    let expect = framed.clone();
    let client = tokio::spawn(async move {
        let io = Translated::new(ours, Side::Dialer);
        let (_, mut s) = dialer_select_proto(io, vec!["/ipfs/id/1.0.0"], Version::V1)
            .await
            .unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    assert_eq!(read_msg(&mut go).await, format!("{HEADER}\n"));
    go.write_all(&msg(HEADER)).await.unwrap();
    assert_eq!(read_msg(&mut go).await, "/ipfs/id/1.0.0\n");
    go.write_all(&msg("/ipfs/id/1.0.0")).await.unwrap();
    go.write_all(&framed).await.unwrap();
    drop(go);
    assert_eq!(client.await.unwrap(), expect);
}
