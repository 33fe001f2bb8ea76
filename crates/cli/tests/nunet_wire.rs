//! A NuNet node's actor messages against a real daemon (issue 19, item 7).
//!
//! No Go node can be built here, so the peer is assembled from libp2p's transport pieces
//! (TCP, noise, yamux, no swarm) and speaks NuNet's wire as its Go source defines it, by
//! hand: go-multistream's plain negotiation of `actor/root/messages/0.0.1` (no leading
//! slash: `network/libp2p/handler_registry.go`, `actor/basic.go`), an 8-byte little-endian
//! length and the envelope JSON in one write (`network/libp2p/libp2p.go` `sendMessage`),
//! the envelope's fields in `actor/interface.go` order, signed over `"dms:msg:"` ‖ that JSON
//! (`actor/msg.go`), tokens as `lib/ucan/context.go` `Provide` writes them, and the reply
//! expected as a new message on the peer's own inbox to `opt.cont` (`actor/msg.go` `ReplyTo`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod deploy_support;

use std::collections::VecDeque;
use std::task::Poll;
use std::time::Duration;

use data_encoding::{BASE32, BASE64};
use deploy_support::{Devnet, devnet_manifest, nunet_cmd};
use ed25519_dalek::{Signer as _, Verifier as _};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::muxing::{StreamMuxerBox, StreamMuxerExt, SubstreamBox};
use libp2p::core::transport::{DialOpts, PortUse};
use libp2p::core::upgrade::Version;
use libp2p::core::{Endpoint, Transport};
use libp2p::{Multiaddr, PeerId, noise, tcp, yamux};
use nunet_capability::token::Claims;
use nunet_capability::{Action, Token, TokenFormat, TokenList};
use nunet_did::{Did, Keypair};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// One multistream-select message.
fn ms(line: &str) -> Vec<u8> {
    let len = line.len() + 1;
    assert!(len < 0x80);
    let mut v = vec![len as u8];
    v.extend_from_slice(line.as_bytes());
    v.push(b'\n');
    v
}

async fn read_ms(s: &mut SubstreamBox) -> Option<String> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.ok()?;
    let mut len = usize::from(b[0] & 0x7f);
    if b[0] & 0x80 != 0 {
        s.read_exact(&mut b).await.ok()?;
        len |= usize::from(b[0]) << 7;
    }
    let mut line = vec![0u8; len];
    s.read_exact(&mut line).await.ok()?;
    Some(
        String::from_utf8_lossy(&line)
            .trim_end_matches('\n')
            .to_string(),
    )
}

/// The peer: a libp2p connection to the daemon, and what arrived on its root inbox.
struct GoPeer {
    key: Keypair,
    open: mpsc::Sender<oneshot::Sender<SubstreamBox>>,
    inbox: mpsc::Receiver<Vec<u8>>,
    /// Every protocol the daemon proposed to us.
    proposals: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl GoPeer {
    async fn connect(seed: u8, addr: Multiaddr) -> (GoPeer, PeerId) {
        let key = Keypair::from_seed(&[seed; 32]);
        let lkey = key.to_libp2p();
        let mut transport = tcp::tokio::Transport::new(tcp::Config::default())
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(&lkey).unwrap())
            .multiplex(yamux::Config::default())
            .map(|(p, m), _| (p, StreamMuxerBox::new(m)))
            .boxed();
        let opts = DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::New,
        };
        let (remote, mut muxer) = transport.dial(addr, opts).unwrap().await.unwrap();
        let (open, mut open_rx) = mpsc::channel::<oneshot::Sender<SubstreamBox>>(4);
        let (in_tx, inbox) = mpsc::channel(16);
        let proposals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = proposals.clone();
        // Drives the connection: yamux makes progress only while polled.
        tokio::spawn(async move {
            let mut waiting: VecDeque<oneshot::Sender<SubstreamBox>> = VecDeque::new();
            futures::future::poll_fn(move |cx| {
                loop {
                    let mut progress = false;
                    match muxer.poll_unpin(cx) {
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Ready(Ok(_)) => progress = true,
                        Poll::Pending => {}
                    }
                    match muxer.poll_inbound_unpin(cx) {
                        Poll::Ready(Ok(s)) => {
                            tokio::spawn(serve_inbound(s, in_tx.clone(), seen.clone()));
                            progress = true;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Pending => {}
                    }
                    while let Poll::Ready(Some(tx)) = open_rx.poll_recv(cx) {
                        waiting.push_back(tx);
                    }
                    if !waiting.is_empty() {
                        match muxer.poll_outbound_unpin(cx) {
                            Poll::Ready(Ok(s)) => {
                                let _ = waiting.pop_front().unwrap().send(s);
                                progress = true;
                            }
                            Poll::Ready(Err(_)) => return Poll::Ready(()),
                            Poll::Pending => {}
                        }
                    }
                    if !progress {
                        return Poll::Pending;
                    }
                }
            })
            .await;
        });
        (
            GoPeer {
                key,
                open,
                inbox,
                proposals,
            },
            remote,
        )
    }

    fn did(&self) -> Did {
        self.key.did()
    }

    fn handle(&self) -> String {
        handle_json(&self.key)
    }

    /// `SelectOneOf` + `sendMessage`: header, wait, proposal, wait for the echo, one write
    /// of length and bytes, close.
    async fn send(&self, json: &str) {
        let (tx, rx) = oneshot::channel();
        self.open.send(tx).await.unwrap();
        let mut s = rx.await.unwrap();
        s.write_all(&ms("/multistream/1.0.0")).await.unwrap();
        assert_eq!(read_ms(&mut s).await.unwrap(), "/multistream/1.0.0");
        s.write_all(&ms("actor/root/messages/0.0.1")).await.unwrap();
        assert_eq!(
            read_ms(&mut s).await.unwrap(),
            "actor/root/messages/0.0.1",
            "the daemon echoes NuNet's name as it was sent"
        );
        let mut frame = (json.len() as u64).to_le_bytes().to_vec();
        frame.extend_from_slice(json.as_bytes());
        s.write_all(&frame).await.unwrap();
        s.close().await.unwrap();
    }

    /// Asks for the daemon's identify message; returns its `protocols` (field 3).
    async fn identify(&self) -> Vec<String> {
        let (tx, rx) = oneshot::channel();
        self.open.send(tx).await.unwrap();
        let mut s = rx.await.unwrap();
        s.write_all(&ms("/multistream/1.0.0")).await.unwrap();
        assert_eq!(read_ms(&mut s).await.unwrap(), "/multistream/1.0.0");
        s.write_all(&ms("/ipfs/id/1.0.0")).await.unwrap();
        assert_eq!(read_ms(&mut s).await.unwrap(), "/ipfs/id/1.0.0");
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        let varint = |b: &[u8], at: &mut usize| {
            let mut v = 0usize;
            let mut shift = 0;
            loop {
                let byte = b[*at];
                *at += 1;
                v |= usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    return v;
                }
            }
        };
        let mut at = 0;
        let len = varint(&all, &mut at);
        let msg = &all[at..at + len];
        let mut at = 0;
        let mut protocols = Vec::new();
        while at < msg.len() {
            let tag = varint(msg, &mut at);
            match tag & 7 {
                0 => {
                    varint(msg, &mut at);
                }
                2 => {
                    let l = varint(msg, &mut at);
                    if tag >> 3 == 3 {
                        protocols.push(String::from_utf8_lossy(&msg[at..at + l]).to_string());
                    }
                    at += l;
                }
                other => panic!("wire type {other} in identify"),
            }
        }
        protocols
    }

    async fn next_message(&mut self, within: Duration) -> Option<String> {
        tokio::time::timeout(within, self.inbox.recv())
            .await
            .ok()
            .flatten()
            .map(|b| String::from_utf8(b).unwrap())
    }
}

/// go-multistream's listener: refuses everything but our root inbox, then reads one frame.
async fn serve_inbound(
    mut s: SubstreamBox,
    to: mpsc::Sender<Vec<u8>>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    if read_ms(&mut s).await.as_deref() != Some("/multistream/1.0.0") {
        return;
    }
    let mut header = Some(ms("/multistream/1.0.0"));
    while let Some(proposal) = read_ms(&mut s).await {
        seen.lock().unwrap().push(proposal.clone());
        let mut out = header.take().unwrap_or_default();
        if proposal != "actor/root/messages/0.0.1" {
            out.extend(ms("na"));
            if s.write_all(&out).await.is_err() {
                return;
            }
            continue;
        }
        out.extend(ms(&proposal));
        s.write_all(&out).await.unwrap();
        let mut len = [0u8; 8];
        s.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u64::from_le_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        let _ = to.send(body).await;
        return;
    }
}

/// `crypto.ID`: base32 of the libp2p protobuf public key.
fn key_id(k: &Keypair) -> String {
    let mut pb = vec![0x08, 0x01, 0x12, 0x20];
    pb.extend_from_slice(&k.public().to_bytes());
    BASE32.encode(&pb)
}

fn handle_json(k: &Keypair) -> String {
    format!(
        r#"{{"id":{{"pub":"{}"}},"did":{{"uri":"{}"}},"addr":{{"host":"{}","inbox":"root"}}}}"#,
        key_id(k),
        k.did(),
        k.public().peer_id().to_base58()
    )
}

/// The node's root handle as the peer writes it (key from the DID).
fn node_handle(did: &str) -> (String, [u8; 32]) {
    let key = Did::parse(did).unwrap().ed25519().unwrap();
    let mut pb = vec![0x08, 0x01, 0x12, 0x20];
    pb.extend_from_slice(&key.to_bytes());
    (
        format!(
            r#"{{"id":{{"pub":"{}"}},"did":{{"uri":"{did}"}},"addr":{{"host":"{}","inbox":"root"}}}}"#,
            BASE32.encode(&pb),
            key.peer_id().to_base58()
        ),
        key.to_bytes(),
    )
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A hello as `Invoke` writes it, with the tokens `Provide` adds, signed by `signer`.
fn hello_request(
    peer: &GoPeer,
    node_did: &str,
    from: &str,
    nonce: u64,
    signer: &Keypair,
) -> (String, String, Token) {
    let (to, _) = node_handle(node_did);
    let exp = now_ns() + 10_000_000_000;
    let cont = format!("/dms/actor/replyto/{}", nonce - 1);
    let node = Did::parse(node_did).unwrap();
    let claims = |act, sub: Did, aud: Did, cap: &str, depth| Claims {
        act,
        sub,
        aud: Some(aud),
        topic: vec![],
        cap: vec![cap.parse().unwrap()],
        exp,
        depth,
        rev: None,
    };
    let invoke = Token::issue_as(
        TokenFormat::NuNet,
        &peer.key,
        claims(Action::Invoke, peer.did(), node.clone(), "/public/hello", 0),
        None,
    )
    .unwrap();
    let delegation = Token::issue_as(
        TokenFormat::NuNet,
        &peer.key,
        claims(Action::Delegate, node, peer.did(), &cont, 1),
        None,
    )
    .unwrap();
    let cap = TokenList {
        tok: vec![invoke, delegation.clone()],
    }
    .to_json();
    let unsigned = format!(
        r#"{{"to":{to},"be":"/public/hello","from":{from},"nonce":{nonce},"opt":{{"exp":{exp},"cont":"{cont}"}},"msg":"","cap":"{}"}}"#,
        BASE64.encode(cap.as_bytes())
    );
    let sig = ed25519_dalek::SigningKey::from_bytes(&signer.seed())
        .sign(format!("dms:msg:{unsigned}").as_bytes());
    let signed = format!(
        r#"{},"sig":"{}"}}"#,
        &unsigned[..unsigned.len() - 1],
        BASE64.encode(&sig.to_bytes())
    );
    (signed, cont, delegation)
}

/// Verifies a NuNet envelope as a Go node does: the signature of `did`'s key over
/// `"dms:msg:"` ‖ the JSON up to `sig` (Go re-encodes what it parsed, and `sig` is its last
/// field; anything after it, such as `native`, is dropped).
fn verify_go(raw: &str, did: &str, what: &str) {
    let (_, key) = node_handle(did);
    let at = raw.rfind(r#","sig":""#).expect("a signature");
    let v: Value = serde_json::from_str(raw).unwrap();
    let sig = BASE64
        .decode(v["sig"].as_str().unwrap().as_bytes())
        .unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&key)
        .unwrap()
        .verify(
            format!("dms:msg:{}}}", &raw[..at]).as_bytes(),
            &ed25519_dalek::Signature::from_slice(&sig).unwrap(),
        )
        .unwrap_or_else(|e| {
            panic!("{what}: the signature does not verify over Go's encoding: {e}")
        });
}

/// Node `n` of the devnet (from 0): its DID and its TCP address without `/p2p`.
fn node_addr(m: &Value, n: usize) -> (String, Multiaddr) {
    let node = &m["nodes"][n];
    let p2p: Multiaddr = node["p2p"].as_str().unwrap().parse().unwrap();
    let tcp = p2p
        .iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect();
    (node["did"].as_str().unwrap().to_string(), tcp)
}

/// Checks a reply as a Go node would, by hand: signature over the JSON without `sig`, the
/// field order, the reply convention, the payload and the token chain.
fn check_reply(raw: &str, node_did: &str, peer: &GoPeer, cont: &str, delegation: &Token) {
    verify_go(raw, node_did, "the reply");
    // Go's field order, so that a Go node's re-encoding gives these bytes.
    let order: Vec<usize> = [
        r#"{"to":"#,
        r#","be":"#,
        r#","from":"#,
        r#","nonce":"#,
        r#","opt":{"exp":"#,
        r#"},"msg":"#,
        r#","cap":"#,
    ]
    .iter()
    .map(|k| raw.find(k).unwrap_or_else(|| panic!("{k} in {raw}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{raw}");
    let v: Value = serde_json::from_str(raw).unwrap();
    assert_eq!(v["be"], cont);
    assert_eq!(v["to"]["id"]["pub"], key_id(&peer.key));
    assert_eq!(v["to"]["addr"]["inbox"], "root");
    assert_eq!(v["from"]["did"]["uri"], node_did);
    let msg: Value = serde_json::from_slice(
        &BASE64
            .decode(v["msg"].as_str().unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(msg["DID"]["uri"], node_did, "NuNet's HelloResponse: {msg}");
    let cap: Value = serde_json::from_slice(
        &BASE64
            .decode(v["cap"].as_str().unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    let tok = &cap["tok"][0]["dms"];
    assert_eq!(tok["act"], "invoke");
    assert_eq!(tok["iss"]["uri"], node_did);
    assert_eq!(tok["aud"]["uri"], peer.did().to_string());
    assert_eq!(tok["cap"], serde_json::json!([cont]));
    assert_eq!(
        tok["chain"]["dms"]["sig"],
        BASE64.encode(&delegation.dms().sig),
        "chained on the peer's own delegation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nunet_node_says_hello_and_gets_nunets_answer() {
    let dn = Devnet::up(0);
    let m = devnet_manifest(&dn);
    let node = &m["nodes"][0];
    let (node_did, tcp) = node_addr(&m, 0);
    let (mut peer, remote) = GoPeer::connect(41, tcp).await;
    assert_eq!(remote.to_base58(), node["peer_id"].as_str().unwrap());
    // includesRootProtocol: a NuNet node sees a DMS peer in the identify answer.
    let protocols = peer.identify().await;
    assert!(
        protocols.iter().any(|p| p == "actor/root/messages/0.0.1"),
        "{protocols:?}"
    );
    let me = peer.handle();
    let mut nonce = now_ns();

    // A stranger's self-signed invocation is refused, and NuNet answers refusals with
    // silence.
    nonce += 2;
    let (req, _, _) = hello_request(&peer, &node_did, &me, nonce, &peer.key.clone());
    peer.send(&req).await;
    assert_eq!(peer.next_message(Duration::from_secs(3)).await, None);

    // Trusted as a root of the node's context: answered.
    let (code, out) = dn.run(
        1,
        &[
            "cap",
            "anchor",
            "-c",
            "dms",
            "--root",
            &peer.did().to_string(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let mut answered = None;
    for _ in 0..15 {
        nonce += 2;
        let (req, cont, delegation) =
            hello_request(&peer, &node_did, &me, nonce, &peer.key.clone());
        peer.send(&req).await;
        if let Some(reply) = peer.next_message(Duration::from_secs(2)).await {
            answered = Some((req, reply, cont, delegation));
            break;
        }
    }
    let (answered_req, reply, cont, delegation) =
        answered.expect("a reply once the peer is trusted");
    check_reply(&reply, &node_did, &peer, &cont, &delegation);
    let proposals = peer.proposals.lock().unwrap().clone();
    assert!(
        proposals.iter().all(|p| !p.starts_with("/actor/")),
        "the daemon proposed NuNet's name without a slash: {proposals:?}"
    );

    // Forged: signed by another key. Spoofed: `from.addr.host` names another peer.
    nonce += 2;
    let other = Keypair::from_seed(&[42; 32]);
    let (forged, _, _) = hello_request(&peer, &node_did, &me, nonce, &other);
    peer.send(&forged).await;
    nonce += 2;
    let spoofed_from = me.replace(
        &peer.key.public().peer_id().to_base58(),
        &other.public().peer_id().to_base58(),
    );
    let (spoofed, _, _) = hello_request(&peer, &node_did, &spoofed_from, nonce, &peer.key.clone());
    peer.send(&spoofed).await;
    // Garbage in a frame, and a replay of the answered request.
    peer.send("{not json").await;
    peer.send(&answered_req).await;
    assert_eq!(peer.next_message(Duration::from_secs(3)).await, None);

    // The node is still answering.
    nonce += 2;
    let (req, cont, delegation) = hello_request(&peer, &node_did, &me, nonce, &peer.key.clone());
    peer.send(&req).await;
    let reply = peer
        .next_message(Duration::from_secs(5))
        .await
        .expect("answered after the bad messages");
    check_reply(&reply, &node_did, &peer, &cont, &delegation);
}

/// Signs a Go envelope written by hand (`unsigned` is its JSON without `sig`).
fn go_signed(unsigned: &str, key: &Keypair) -> String {
    let sig = ed25519_dalek::SigningKey::from_bytes(&key.seed())
        .sign(format!("dms:msg:{unsigned}").as_bytes());
    format!(
        r#"{},"sig":"{}"}}"#,
        &unsigned[..unsigned.len() - 1],
        BASE64.encode(&sig.to_bytes())
    )
}

fn b64_json(v: &Value) -> Value {
    serde_json::from_slice(&BASE64.decode(v.as_str().unwrap().as_bytes()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_invokes_a_nunet_node_and_takes_only_the_callees_answer() {
    let dn = Devnet::up(0);
    let m = devnet_manifest(&dn);
    let (node_did, tcp) = node_addr(&m, 0);
    let (mut peer, _) = GoPeer::connect(43, tcp).await;
    let peer_id = peer.key.public().peer_id().to_base58();
    let cmd = nunet_cmd(
        &dn.dir,
        None,
        Some("node-1"),
        &[
            "actor",
            "cmd",
            "--json",
            "/dms/node/nunet/invoke",
            "--host",
            &peer_id,
            "--behavior",
            "/dms/node/peers/self",
            "--message",
            r#"{"verbose":true}"#,
            "--timeout",
            "20",
        ],
    );
    let cli = tokio::spawn(tokio::process::Command::from(cmd).output());

    // The request, as a Go node's dispatcher checks it.
    let raw = peer
        .next_message(Duration::from_secs(20))
        .await
        .expect("the daemon's request arrives on our root inbox");
    let req: Value = serde_json::from_str(&raw).unwrap();
    verify_go(&raw, &node_did, "signed over Go's encoding");
    assert_eq!(req["be"], "/dms/node/peers/self");
    assert_eq!(req["to"]["id"]["pub"], key_id(&peer.key));
    assert_eq!(req["from"]["did"]["uri"], node_did);
    assert_eq!(b64_json(&req["msg"]), serde_json::json!({"verbose": true}));
    let cont = req["opt"]["cont"].as_str().unwrap().to_string();
    assert!(cont.starts_with("/dms/actor/replyto/"), "{cont}");
    let exp = req["opt"]["exp"].as_u64().unwrap();
    let tokens = TokenList::from_json(
        &BASE64
            .decode(req["cap"].as_str().unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    let invoke = tokens
        .tok
        .iter()
        .find(|t| t.dms().act == Action::Invoke)
        .expect("an invocation token");
    assert_eq!(invoke.dms().format, TokenFormat::NuNet);
    assert_eq!(invoke.dms().aud.as_ref(), Some(&peer.did()));
    let delegation = tokens
        .tok
        .iter()
        .find(|t| t.dms().act == Action::Delegate)
        .expect("a delegation of the reply name")
        .clone();
    assert_eq!(delegation.dms().sub, peer.did());
    assert_eq!(delegation.dms().depth, 1);
    assert_eq!(delegation.dms().cap[0].to_string(), cont);

    // ReplyTo, by hand: to = the request's sender, from = its receiver, be = cont, the
    // request's expiry, an invocation chained on the requester's delegation.
    let node_did_parsed = Did::parse(&node_did).unwrap();
    let answer = |signer: &Keypair, payload: &str, nonce: u64| {
        let chained = Token::issue_as(
            TokenFormat::NuNet,
            signer,
            Claims {
                act: Action::Invoke,
                sub: signer.did(),
                aud: Some(node_did_parsed.clone()),
                topic: vec![],
                cap: vec![cont.parse().unwrap()],
                exp,
                depth: 0,
                rev: None,
            },
            Some(delegation.clone()),
        )
        .ok();
        let cap = TokenList {
            tok: chained.into_iter().collect(),
        }
        .to_json();
        let unsigned = format!(
            r#"{{"to":{},"be":"{cont}","from":{},"nonce":{nonce},"opt":{{"exp":{exp}}},"msg":"{}","cap":"{}"}}"#,
            node_handle(&node_did).0,
            handle_json(signer).replace(&signer.public().peer_id().to_base58(), &peer_id),
            BASE64.encode(payload.as_bytes()),
            BASE64.encode(cap.as_bytes())
        );
        go_signed(&unsigned, signer)
    };
    // An answer on the reply name signed by a key that was not asked is not taken.
    let other = Keypair::from_seed(&[44; 32]);
    peer.send(&answer(&other, r#"{"forged":true}"#, 5)).await;
    peer.send(&answer(&peer.key.clone(), r#"{"peer_id":"go-node"}"#, 6))
        .await;
    let out = cli.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v, serde_json::json!({"peer_id": "go-node"}));

    // A callee that never answers: the invocation times out and says why.
    let cmd = nunet_cmd(
        &dn.dir,
        None,
        Some("node-1"),
        &[
            "actor",
            "cmd",
            "/dms/node/nunet/invoke",
            "--host",
            &peer_id,
            "--behavior",
            "/public/hello",
            "--timeout",
            "2",
        ],
    );
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains("no answer from") && text.contains("anchored"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nunet_broadcasts_are_answered_and_ours_pass_nunets_validator() {
    use nunet_network::{NetConfig, NetEvent};
    let dn = Devnet::up(0);
    let m = devnet_manifest(&dn);
    let node = &m["nodes"][0];
    let node_did = node["did"].as_str().unwrap().to_string();
    let node_peer = node["peer_id"].as_str().unwrap().to_string();

    // The NuNet node's gossip: a libp2p host with gossipsub, publishing NuNet's JSON.
    let key = Keypair::from_seed(&[45; 32]);
    let mut cfg = NetConfig::new(key.to_libp2p());
    cfg.listen = NetConfig::loopback_listen();
    cfg.bootstrap = vec![node["p2p"].as_str().unwrap().parse().unwrap()];
    let (net, mut events) = nunet_network::start(cfg).await.unwrap();
    net.subscribe("/nunet/hello").await.unwrap();
    let mut inbox = net.accept_nunet("root").unwrap();
    let me = handle_json(&key);
    let peer_did = key.did();
    let (code, out) = dn.run(
        1,
        &[
            "cap",
            "anchor",
            "-c",
            "dms",
            "--root",
            &peer_did.to_string(),
        ],
    );
    assert_eq!(code, 0, "{out}");

    // A broadcast as ProvideBroadcast and Publish write it: empty receiver, the topic in
    // `opt`, a self-signed broadcast token.
    let broadcast = |nonce: u64| {
        let exp = now_ns() + 10_000_000_000;
        let cont = format!("/dms/actor/replyto/{}", nonce - 1);
        let token = Token::issue_as(
            TokenFormat::NuNet,
            &key,
            Claims {
                act: Action::Broadcast,
                sub: peer_did.clone(),
                aud: None,
                topic: vec!["/nunet/hello".parse().unwrap()],
                cap: vec!["/broadcast/hello".parse().unwrap()],
                exp,
                depth: 0,
                rev: None,
            },
            None,
        )
        .unwrap();
        let cap = TokenList { tok: vec![token] }.to_json();
        let unsigned = format!(
            r#"{{"to":{{"id":{{"pub":""}},"did":{{}},"addr":{{}}}},"be":"/broadcast/hello","from":{me},"nonce":{nonce},"opt":{{"exp":{exp},"cont":"{cont}","topic":"/nunet/hello"}},"msg":"","cap":"{}"}}"#,
            BASE64.encode(cap.as_bytes())
        );
        (go_signed(&unsigned, &key), cont)
    };
    let mut nonce = now_ns();
    let mut got = None;
    for _ in 0..20 {
        nonce += 2;
        let (msg, cont) = broadcast(nonce);
        // Until the gossip mesh has formed, a publish may find no peer.
        let _ = net.publish("/nunet/hello", msg.into_bytes()).await;
        if let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(2), inbox.recv()).await {
            got = Some((frame, cont));
            break;
        }
    }
    let (frame, cont) = got.expect("the trusting node answers the broadcast");
    assert_eq!(
        frame.peer.to_base58(),
        node_peer,
        "only the node that trusts us answers"
    );
    let raw = String::from_utf8(frame.payload).unwrap();
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["be"], cont);
    assert_eq!(v["to"]["id"]["pub"], key_id(&key));
    assert_eq!(v["from"]["did"]["uri"], node_did);
    assert_eq!(v["from"]["addr"]["inbox"], "root");
    assert_eq!(b64_json(&v["msg"])["DID"]["uri"], node_did);
    verify_go(&raw, &node_did, "signed over Go's encoding");
    let tok = &b64_json(&v["cap"])["tok"][0]["dms"];
    assert_eq!(tok["act"], "invoke");
    assert_eq!(tok["cap"], serde_json::json!([cont]));
    assert_eq!(tok["aud"]["uri"], peer_did.to_string());
    // The two nodes that do not trust us stay silent.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), inbox.recv())
            .await
            .is_err()
    );

    // The same broadcast published by another host (someone replaying it to aim the
    // answers at us): refused, because the answer would go to a peer other than the
    // publisher. Node-1's log shows it arrived and why it was not answered.
    let mut other_cfg = NetConfig::new(Keypair::from_seed(&[46; 32]).to_libp2p());
    other_cfg.listen = NetConfig::loopback_listen();
    other_cfg.bootstrap = vec![node["p2p"].as_str().unwrap().parse().unwrap()];
    let (other, _other_events) = nunet_network::start(other_cfg).await.unwrap();
    other.subscribe("/nunet/hello").await.unwrap();
    let log = dn.dir.join("node-1/nunet.log");
    let refused = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("is not the peer that published it")
            .count()
    };
    let before = refused(&log);
    let mut seen = false;
    for _ in 0..20 {
        nonce += 2;
        let (msg, _) = broadcast(nonce);
        let _ = other.publish("/nunet/hello", msg.into_bytes()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if refused(&log) > before {
            seen = true;
            break;
        }
    }
    assert!(
        seen,
        "node-1 received the replayed broadcast and said why it refused it"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), inbox.recv())
            .await
            .is_err(),
        "no answer reached the broadcast's author"
    );
    other.shutdown().await;

    // Our own broadcast on /nunet/hello, as a NuNet node's validator sees it: a broadcast
    // for this topic, signed by the publishing node over Go's encoding. The daemons still
    // read the message it carries and answer it.
    let node2 = &m["nodes"][1];
    let (code, out) = dn.run(
        2,
        &["actor", "cmd", "--json", "-t", "5s", "/broadcast/hello"],
    );
    assert_eq!(code, 0, "{out}");
    for n in [0, 2] {
        let did = m["nodes"][n]["did"].as_str().unwrap();
        assert!(out.contains(did), "node-{} answers: {out}", n + 1);
    }
    let seen = loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("our broadcast reaches the NuNet node")
            .unwrap();
        if let NetEvent::Gossip { topic, payload, .. } = ev
            && topic == "/nunet/hello"
        {
            let v: Value = serde_json::from_slice(&payload).unwrap();
            if v["from"]["did"]["uri"] == node2["did"] {
                break (String::from_utf8(payload).unwrap(), v);
            }
        }
    };
    let (raw, v) = seen;
    assert_eq!(
        v["to"],
        serde_json::json!({"id": {"pub": ""}, "did": {}, "addr": {}})
    );
    assert_eq!(v["opt"]["topic"], "/nunet/hello");
    assert_eq!(v["be"], "/broadcast/hello");
    // NuNet re-encodes what it parsed: everything up to `sig`; `native` is dropped.
    verify_go(
        &raw,
        node2["did"].as_str().unwrap(),
        "NuNet's validator would accept it",
    );
    let inner = b64_json(&v["native"]);
    assert_eq!(inner["be"], "/broadcast/hello");
    assert_eq!(
        inner["opt"]["exp"], v["opt"]["exp"],
        "the carried message's expiry"
    );
    net.shutdown().await;
}
