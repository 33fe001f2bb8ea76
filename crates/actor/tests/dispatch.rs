//! Dispatch between two actor systems joined by an in-memory transport: authorization
//! outcomes and that denied behaviors never run. (Real libp2p is exercised by the node's
//! multi-process tests.)
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use nunet_actor::{
    ActorSystem, Behavior, Envelope, ErrorKind, Handle, Options, SystemConfig, Transport,
    TransportError,
};
use nunet_capability::{Anchors, TokenSpec, now_ns};
use nunet_did::Keypair;
use serde_json::{Value, json};

/// Routes requests to systems by peer id, in process.
#[derive(Default, Clone)]
struct Mem(Arc<Mutex<Vec<ActorSystem>>>);

impl Transport for Mem {
    fn request(
        &self,
        peer: &str,
        bytes: Vec<u8>,
        _t: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let target = self
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.peer_id() == peer)
            .cloned();
        Box::pin(async move {
            match target {
                Some(s) => Ok(s.handle_bytes(&bytes).await),
                None => Err(TransportError("unknown peer".into())),
            }
        })
    }
    fn publish(
        &self,
        _topic: &str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let all = self.0.lock().unwrap().clone();
        Box::pin(async move {
            for s in all {
                s.handle_gossip(&bytes).await;
            }
            Ok(())
        })
    }
}

const HOUR: u64 = 3_600_000_000_000;

struct World {
    a: ActorSystem,
    b: ActorSystem,
    ran: Arc<AtomicUsize>,
}

/// Node B trusts an org; node A holds a delegation from the org for /public and /broadcast.
fn world() -> World {
    let org = Keypair::from_seed(&[1; 32]);
    let ka = Keypair::from_seed(&[2; 32]);
    let kb = Keypair::from_seed(&[3; 32]);
    let grant = Anchors::new(org.did())
        .grant(
            &org,
            &TokenSpec {
                sub: ka.did(),
                aud: None,
                cap: vec!["/public".parse().unwrap(), "/broadcast".parse().unwrap()],
                topic: vec!["/nunet".parse().unwrap()],
                exp: now_ns() + HOUR,
                depth: 0,
            },
        )
        .unwrap();
    let mut aa = Anchors::new(ka.did());
    aa.add_provide(grant, now_ns()).unwrap();
    let mut ab = Anchors::new(kb.did());
    ab.add_root(org.did());
    let mem = Mem::default();
    let a = ActorSystem::new(ka, aa, SystemConfig::default());
    let b = ActorSystem::new(kb, ab, SystemConfig::default());
    a.set_transport(Arc::new(mem.clone()));
    b.set_transport(Arc::new(mem.clone()));
    mem.0.lock().unwrap().extend([a.clone(), b.clone()]);
    let ran = Arc::new(AtomicUsize::new(0));
    for (name, kind_broadcast) in [
        ("/public/status", false),
        ("/dms/node/peers/list", false),
        ("/broadcast/hello", true),
    ] {
        let r = ran.clone();
        let f = move |m: nunet_actor::Incoming| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok(json!({"echo": m.payload}))
            }
        };
        let beh = if kind_broadcast {
            Behavior::broadcast(f)
        } else {
            Behavior::direct(f)
        };
        b.register("root", name, beh).unwrap();
    }
    World { a, b, ran }
}

#[tokio::test]
async fn invoke_with_capability_runs_and_replies() {
    let w = world();
    let v =
        w.a.invoke(
            "root",
            w.b.root(),
            "/public/status",
            json!({"x": 1}),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(v, json!({"echo": {"x": 1}}));
    assert_eq!(w.ran.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn denials_name_the_rule_and_do_not_run() {
    let w = world();
    // No capability for /dms/node: only a self-signed token, which B does not anchor.
    let e =
        w.a.invoke(
            "root",
            w.b.root(),
            "/dms/node/peers/list",
            Value::Null,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Denied);
    assert_eq!(e.rule.as_deref(), Some("not-anchored"), "{e:?}");
    // Wrong audience: tokens made for another node.
    let other = Handle::root_of(&Keypair::from_seed(&[9; 32]).public());
    let exp = now_ns() + 5_000_000_000;
    let mut env =
        w.a.envelope(
            "root",
            other,
            "/public/status",
            &Value::Null,
            Options {
                exp,
                cont: "/reply".into(),
                topic: String::new(),
                ..Default::default()
            },
        )
        .unwrap();
    env.to = w.b.root();
    let key = Keypair::from_seed(&[2; 32]);
    let resigned = Envelope::sign(
        &key,
        env.from.clone(),
        env.to.clone(),
        &env.be,
        env.opt.clone(),
        env.msg.clone(),
        env.cap.clone(),
    );
    let r = w.a.deliver(resigned).await.unwrap();
    let e = nunet_actor::system::decode_reply(&r).unwrap_err();
    assert_eq!(e.rule.as_deref(), Some("audience-mismatch"), "{e:?}");
    // Expired message.
    let mut env =
        w.a.envelope(
            "root",
            w.b.root(),
            "/public/status",
            &Value::Null,
            Options {
                exp,
                cont: "/reply".into(),
                topic: String::new(),
                ..Default::default()
            },
        )
        .unwrap();
    env.opt.exp = now_ns() - 1;
    let env = Envelope::sign(
        &key,
        env.from.clone(),
        env.to.clone(),
        &env.be,
        env.opt.clone(),
        env.msg.clone(),
        env.cap.clone(),
    );
    let r = w.b.handle_envelope(env).await;
    let e = nunet_actor::system::decode_reply(&r).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    assert!(e.message.contains("expired"), "{e:?}");
    // Replayed message: the first delivery runs, the second is refused.
    let env =
        w.a.envelope(
            "root",
            w.b.root(),
            "/public/status",
            &Value::Null,
            Options {
                exp,
                cont: "/reply".into(),
                topic: String::new(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(nunet_actor::system::decode_reply(&w.b.handle_envelope(env.clone()).await).is_ok());
    let e = nunet_actor::system::decode_reply(&w.b.handle_envelope(env).await).unwrap_err();
    assert!(e.message.contains("replayed"), "{e:?}");
    // Forged signature.
    let mut env =
        w.a.envelope(
            "root",
            w.b.root(),
            "/public/status",
            &Value::Null,
            Options {
                exp,
                cont: "/reply".into(),
                topic: String::new(),
                ..Default::default()
            },
        )
        .unwrap();
    env.msg = b"{\"evil\":true}".to_vec();
    let e = nunet_actor::system::decode_reply(&w.b.handle_envelope(env).await).unwrap_err();
    assert!(e.message.contains("signature"), "{e:?}");
    // A stranger claiming to be B's own node in its handle gets no shortcut.
    let stranger = Keypair::from_seed(&[7; 32]);
    let mut from = Handle::root_of(&stranger.public());
    from.did = w.b.did().to_string();
    let env = Envelope::sign(
        &stranger,
        from,
        w.b.root(),
        "/public/status",
        Options {
            exp,
            cont: "/reply".into(),
            topic: String::new(),
            ..Default::default()
        },
        b"null".to_vec(),
        vec![],
    );
    let e = nunet_actor::system::decode_reply(&w.b.handle_envelope(env).await).unwrap_err();
    assert_eq!(e.rule.as_deref(), Some("no-token"), "{e:?}");
    // Only the one legitimate call ran.
    assert_eq!(w.ran.load(Ordering::SeqCst), 1);
    // Garbage bytes: a signed rejection, no panic.
    let r = Envelope::from_bytes(&w.b.handle_bytes(b"\x00garbage").await).unwrap();
    assert!(nunet_actor::system::decode_reply(&r).is_err());
}

/// An envelope that has expired before it is handed over for delivery is refused as the
/// receiver would refuse it (Rejected, an HTTP 400 at the REST API), not reported as a
/// delivery timeout (a 504, a server error).
#[tokio::test]
async fn an_envelope_expired_on_arrival_is_rejected_before_it_is_sent() {
    let w = world();
    let mut env =
        w.a.envelope(
            "root",
            w.b.root(),
            "/public/status",
            &Value::Null,
            Options {
                exp: now_ns() + HOUR,
                cont: "/reply".into(),
                topic: String::new(),
                ..Default::default()
            },
        )
        .unwrap();
    for exp in [0, now_ns() - 1] {
        env.opt.exp = exp;
        let e = w.a.deliver(env.clone()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "{e:?}");
        assert!(e.message.contains("expired"), "{e:?}");
    }
    assert_eq!(w.ran.load(Ordering::SeqCst), 0);
}

/// A destination host that is not a peer id is the sender's mistake (Rejected, HTTP 400),
/// not an unreachable network (HTTP 502).
#[tokio::test]
async fn an_envelope_to_a_host_that_is_no_peer_id_is_rejected() {
    let w = world();
    let mut env =
        w.a.envelope(
            "root",
            w.b.root(),
            "/public/status",
            &Value::Null,
            Options {
                exp: now_ns() + HOUR,
                cont: "/reply".into(),
                topic: String::new(),
                ..Default::default()
            },
        )
        .unwrap();
    for host in ["", "not-a-peer", "did:key:z6Mk"] {
        env.to.addr.host = host.into();
        let e = w.a.deliver(env.clone()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "{host:?}: {e:?}");
        assert!(e.message.contains("not a peer id"), "{e:?}");
    }
    assert_eq!(w.ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn broadcast_collects_one_reply_per_subscriber() {
    let w = world();
    let replies =
        w.a.broadcast(
            "root",
            "/nunet",
            "/broadcast/hello",
            json!("hi"),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    // B answers once; A has no /broadcast/hello behavior (and its own message is not for it).
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].0.did, w.b.did().to_string());
    assert_eq!(w.ran.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn same_node_and_child_actors() {
    let w = world();
    // Local delivery without the network: B invokes its own behavior with no tokens.
    let v =
        w.b.invoke(
            "root",
            w.b.root(),
            "/dms/node/peers/list",
            json!(1),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(v, json!({"echo": 1}));
    // A child actor of A, granted /public by A's node key: the grant is chained on A's own
    // delegation from the org, so B (which trusts the org) trusts the child at once.
    let child = w.a.spawn_child(
        Keypair::generate(),
        &["/public".parse().unwrap()],
        Duration::from_secs(60),
    );
    w.a.invoke(
        &child.addr.inbox,
        w.b.root(),
        "/public/status",
        Value::Null,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    // Granted /dms, which A's delegation does not cover: only A's own signature vouches for
    // it, so B trusts the child only once it trusts A.
    let child = w.a.spawn_child(
        Keypair::generate(),
        &["/dms".parse().unwrap()],
        Duration::from_secs(60),
    );
    let e =
        w.a.invoke(
            &child.addr.inbox,
            w.b.root(),
            "/dms/node/peers/list",
            Value::Null,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert_eq!(e.rule.as_deref(), Some("not-anchored"), "{e:?}");
    let mut anchors = Anchors::new(w.b.did().clone());
    anchors.add_root(w.a.did().clone());
    w.b.set_anchors(anchors);
    w.a.invoke(
        &child.addr.inbox,
        w.b.root(),
        "/dms/node/peers/list",
        Value::Null,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
}

/// A leaked child key (or the node's own key used by a local client) gives no shortcut past
/// the capability checks once the envelope comes from outside the process: over the
/// network, or through the REST bridge (`deliver`). Inside the process it still does.
#[tokio::test]
async fn own_keys_are_checked_like_anyone_elses_when_the_envelope_comes_from_outside() {
    let w = world();
    let inbox = "alloc-x";
    let child =
        w.b.spawn_child_at(inbox, w.b.child_key(inbox), &[], &[], Duration::ZERO);
    // The attacker holds the child's key (e.g. read from a database) and signs a call to a
    // behavior nobody granted it, with no tokens.
    let stolen = w.b.child_key(inbox);
    let forged = |be: &str| {
        Envelope::sign(
            &stolen,
            child.clone(),
            w.b.root(),
            be,
            Options {
                exp: now_ns() + 5_000_000_000,
                ..Default::default()
            },
            b"{}".to_vec(),
            Vec::new(),
        )
    };
    let over_network =
        w.b.handle_bytes(&forged("/dms/node/peers/list").to_bytes())
            .await;
    let e = nunet_actor::system::decode_reply(&Envelope::from_bytes(&over_network).unwrap())
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Denied, "{e:?}");
    let via_rest = w.b.deliver(forged("/dms/node/peers/list")).await.unwrap();
    let e = nunet_actor::system::decode_reply(&via_rest).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Denied, "{e:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 0, "a denied behavior ran");
    // The child's own in-process calls keep the shortcut.
    w.b.invoke(
        inbox,
        w.b.root(),
        "/dms/node/peers/list",
        Value::Null,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(w.ran.load(Ordering::SeqCst), 1);
    // Child keys are derived, not random: the same inbox gives the same identity after a
    // restart, different inboxes give different ones.
    assert_eq!(w.b.child_key(inbox).did(), child.id.parse().unwrap());
    assert_ne!(w.b.child_key("other").did(), w.b.child_key(inbox).did());
}

/// Oversized sender-controlled fields are refused before any decoding: an 80 kB `from.id`
/// used to cost ~20 s of base58 decoding per envelope, before authentication.
#[tokio::test]
async fn oversized_ids_and_names_are_refused_before_parsing() {
    let w = world();
    let key = Keypair::from_seed(&[9; 32]);
    let mut from = Handle::root_of(&key.public());
    from.id = format!("did:key:z{}", "2".repeat(80_000));
    let env = Envelope::sign(
        &key,
        from,
        w.b.root(),
        "/public/status",
        Options {
            exp: now_ns() + 5_000_000_000,
            ..Default::default()
        },
        b"{}".to_vec(),
        Vec::new(),
    );
    let reply = w.b.handle_bytes(&env.to_bytes()).await;
    let e = nunet_actor::system::decode_reply(&Envelope::from_bytes(&reply).unwrap()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "{e:?}");
    assert!(
        e.message.contains("from.id") && e.message.contains("at most"),
        "{e:?}"
    );
    let mut long_be = Envelope::sign(
        &key,
        Handle::root_of(&key.public()),
        w.b.root(),
        &format!("/public/{}", "x".repeat(10_000)),
        Options {
            exp: now_ns() + 5_000_000_000,
            ..Default::default()
        },
        Vec::new(),
        Vec::new(),
    );
    long_be.nonce += 1;
    let reply = w.b.handle_bytes(&long_be.to_bytes()).await;
    let e = nunet_actor::system::decode_reply(&Envelope::from_bytes(&reply).unwrap()).unwrap_err();
    assert!(e.message.contains("be is"), "{e:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 0);
}

/// Replies that carry a decision (bids) are authorized like any message: a node on the
/// swarm that was granted nothing by the organisation the orchestrator trusts can answer,
/// but its reply is refused and reported, never collected.
#[tokio::test]
async fn authorized_broadcast_replies_drop_and_report_strangers() {
    let org = Keypair::from_seed(&[11; 32]);
    let (ko, kp, ks) = (
        Keypair::from_seed(&[12; 32]),
        Keypair::from_seed(&[13; 32]),
        Keypair::from_seed(&[14; 32]),
    );
    let grant = |to: &Keypair, caps: &[&str]| {
        Anchors::new(org.did())
            .grant(
                &org,
                &TokenSpec {
                    sub: to.did(),
                    aud: None,
                    cap: caps.iter().map(|c| c.parse().unwrap()).collect(),
                    topic: vec!["/nunet".parse().unwrap()],
                    exp: now_ns() + HOUR,
                    depth: 0,
                },
            )
            .unwrap()
    };
    let anchors = |k: &Keypair, g: Option<nunet_capability::Token>| {
        let mut a = Anchors::new(k.did());
        a.add_root(org.did());
        if let Some(g) = g {
            a.add_provide(g, now_ns()).unwrap();
        }
        a
    };
    let o = ActorSystem::new(
        ko.clone(),
        anchors(&ko, Some(grant(&ko, &["/broadcast"]))),
        SystemConfig::default(),
    );
    let p = ActorSystem::new(
        kp.clone(),
        anchors(&kp, Some(grant(&kp, &["/dms"]))),
        SystemConfig::default(),
    );
    // The stranger trusts the organisation (so it admits the bid request) but holds no grant.
    let s = ActorSystem::new(ks.clone(), anchors(&ks, None), SystemConfig::default());
    let mem = Mem::default();
    for sys in [&o, &p, &s] {
        sys.set_transport(Arc::new(mem.clone()));
        sys.register(
            "root",
            "/broadcast/bid",
            Behavior::broadcast(|_m| async { Ok(json!({"price": 1})) })
                .replying_as("/dms/deployment/bid".parse().unwrap()),
        )
        .unwrap();
    }
    mem.0
        .lock()
        .unwrap()
        .extend([o.clone(), p.clone(), s.clone()]);
    let got = o
        .broadcast_authorized(
            "root",
            "/nunet",
            "/broadcast/bid",
            json!({}),
            Duration::from_millis(500),
            "/dms/deployment/bid".parse().unwrap(),
            |_| None,
        )
        .await
        .unwrap();
    // (The in-memory transport also hands the broadcast to its sender, which answers itself.)
    let repliers: Vec<&str> = got
        .replies
        .iter()
        .map(|(h, _)| h.did.as_str())
        .filter(|d| *d != o.did().as_str())
        .collect();
    assert_eq!(repliers, vec![p.did().as_str()], "{got:?}");
    assert_eq!(got.denied.len(), 1, "{got:?}");
    assert_eq!(got.denied[0].0.did, s.did().as_str());
    assert_eq!(got.denied[0].1.kind, ErrorKind::Denied);
    // Without the requirement, both replies are collected (the old behaviour).
    let all = o
        .broadcast_with(
            "root",
            "/nunet",
            "/broadcast/bid",
            json!({}),
            Duration::from_millis(500),
            |_| None,
        )
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .filter(|(h, _)| h.did != o.did().as_str())
            .count(),
        2
    );
}

/// Replay state: only admitted messages are remembered (a stranger's denied flood costs
/// nothing), and a message admitted before a restart is refused after it.
#[tokio::test]
async fn replay_state_holds_only_admitted_messages_and_survives_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("replay.log");
    let w = world();
    w.b.keep_replay_state_in(&log).unwrap();
    for _ in 0..50 {
        let e =
            w.a.invoke(
                "root",
                w.b.root(),
                "/dms/node/peers/list",
                Value::Null,
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied);
    }
    assert_eq!(w.b.replay_entries(), 0, "denied messages were recorded");
    let env =
        w.a.envelope(
            "root",
            w.b.root(),
            "/public/status",
            &json!(1),
            Options {
                exp: now_ns() + 60_000_000_000,
                cont: "/reply".into(),
                topic: String::new(),
                ..Default::default()
            },
        )
        .unwrap();
    let ok = w.b.handle_bytes(&env.to_bytes()).await;
    nunet_actor::system::decode_reply(&Envelope::from_bytes(&ok).unwrap()).unwrap();
    assert_eq!(w.b.replay_entries(), 1);
    // B restarts: a new system with the same key, anchors and replay log.
    let (kb, ab) = (Keypair::from_seed(&[3; 32]), {
        let mut a = Anchors::new(Keypair::from_seed(&[3; 32]).did());
        a.add_root(Keypair::from_seed(&[1; 32]).did());
        a
    });
    let b2 = ActorSystem::new(kb, ab, SystemConfig::default());
    b2.register(
        "root",
        "/public/status",
        Behavior::direct(|_m| async { Ok(Value::Null) }),
    )
    .unwrap();
    b2.keep_replay_state_in(&log).unwrap();
    let again = b2.handle_bytes(&env.to_bytes()).await;
    let e = nunet_actor::system::decode_reply(&Envelope::from_bytes(&again).unwrap()).unwrap_err();
    assert!(e.message.contains("replayed"), "{e:?}");
}

/// A retired child keeps answering at its inbox (signed by the node) but can no longer send,
/// and nothing counts as coming from it; bringing it back keeps its behaviors.
#[tokio::test]
async fn a_retired_child_answers_but_holds_no_key() {
    let w = world();
    let inbox = "ens-1";
    let child =
        w.b.spawn_child_at(inbox, w.b.child_key(inbox), &[], &[], Duration::ZERO);
    w.b.register(
        inbox,
        "/public/check",
        Behavior::direct(|_m| async { Ok(json!({"wanted": false})) }),
    )
    .unwrap();
    w.b.retire_child(inbox);
    assert!(!w.b.has_key(inbox));
    let e =
        w.b.invoke(
            inbox,
            w.a.root(),
            "/public/status",
            Value::Null,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("cannot send"), "{e:?}");
    let v =
        w.a.invoke(
            "root",
            child.clone(),
            "/public/check",
            Value::Null,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(v, json!({"wanted": false}));
    // Brought back (same derived key): the behavior is still there.
    w.b.spawn_child_at(inbox, w.b.child_key(inbox), &[], &[], Duration::ZERO);
    assert!(w.b.has_key(inbox));
    let v =
        w.a.invoke(
            "root",
            child,
            "/public/check",
            Value::Null,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(v, json!({"wanted": false}));
}

/// A child actor's grant is renewed before it runs out: a child spawned with a 1-second
/// grant still invokes (and is admitted by another node) long after that second.
#[tokio::test]
async fn a_child_grant_is_renewed_for_as_long_as_the_child_lives() {
    let w = world();
    let child = w.a.spawn_child(
        Keypair::generate(),
        &["/public".parse().unwrap()],
        Duration::from_secs(1),
    );
    for _ in 0..3 {
        w.a.invoke(
            &child.addr.inbox,
            w.b.root(),
            "/public/status",
            Value::Null,
            Duration::from_millis(500),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
}
