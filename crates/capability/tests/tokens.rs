//! Token format, golden vectors, anchors (root / require / provide), revocation and cache.
#![allow(clippy::unwrap_used, missing_docs)]

use nunet_capability::token::Claims;
use nunet_capability::{
    Action, Anchor, Anchors, Capability, Request, SelfSign, Token, TokenList, TokenSpec, Verifier,
};
use nunet_did::{Did, Keypair};

const NOW: u64 = 1_800_000_000_000_000_000;
const HOUR: u64 = 3_600_000_000_000;

fn cap(s: &str) -> Capability {
    s.parse().unwrap()
}

fn spec(sub: &Did, caps: &[&str], exp: u64) -> TokenSpec {
    TokenSpec {
        sub: sub.clone(),
        aud: None,
        cap: caps.iter().map(|c| cap(c)).collect(),
        topic: vec![],
        exp,
        depth: 0,
    }
}

fn invoke_req<'a>(sender: &'a Did, node: &'a Did, c: &'a Capability) -> Request<'a> {
    Request {
        action: Action::Invoke,
        subject: sender,
        audience: node,
        capability: c,
        topic: None,
    }
}

/// Fixed keys, nonce and claims: the signing bytes, signature and id must never change, or
/// every token ever issued stops verifying.
#[test]
fn golden_vector() {
    let issuer = Keypair::from_seed(&[1; 32]);
    let subject = Keypair::from_seed(&[2; 32]);
    let claims = Claims {
        act: Action::Delegate,
        sub: subject.did(),
        aud: None,
        topic: vec![cap("/nunet")],
        cap: vec![cap("/dms/node"), cap("/public")],
        exp: NOW,
        depth: 3,
        rev: None,
    };
    let t = Token::issue_with_nonce(&issuer, claims, None, (0u8..12).collect());
    let d = t.dms();
    let sb = d.signing_bytes(None);
    assert!(sb.starts_with(b"dms:token:v1\0\x02"));
    assert_eq!(hex::encode(&sb), GOLDEN_SIGNING_BYTES);
    assert_eq!(hex::encode(&d.sig), GOLDEN_SIG);
    assert_eq!(t.id().to_string(), GOLDEN_ID);
    // The JSON form follows NuNet's shape.
    let v: serde_json::Value = serde_json::to_value(&t).unwrap();
    let body = v["dms"].as_object().unwrap();
    let mut keys: Vec<_> = body.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "act", "cap", "depth", "exp", "iss", "nonce", "sig", "sub", "topic"
        ]
    );
    assert_eq!(body["act"], "delegate");
    assert_eq!(body["nonce"], "AAECAwQFBgcICQoL");
    // Round trip through JSON keeps the signature valid.
    let back: Token = serde_json::from_value(v).unwrap();
    assert_eq!(back, t);
    assert!(back.dms().verify_signature(None));
}

const GOLDEN_SIGNING_BYTES: &str = "646d733a746f6b656e3a76310002000000386469643a6b65793a7a364d6b6f6e334e656364364e6b6b79666f476f48786964327a6e476335394c55334b376d756261526346624c664c58000000386469643a6b65793a7a364d6b6f39685467674d776a535445614a615055664536747163793278765536426e4e713365336f387156426979480000000000000001000000062f6e756e657400000002000000092f646d732f6e6f6465000000072f7075626c69630000000c000102030405060708090a0b18fae27693b4000000000000000000030000";
const GOLDEN_SIG: &str = "018a944154a1e1af31ffe4ce89a7a86f0af05ca99ec45216556fcc478a444993b1a9fca67f6e31b62567754df22e4ab5df937e97546837190ee16d85ae1efa0e";
const GOLDEN_ID: &str = "3b961bba344428746d99d807dd382900c108c34c4cde35318305c6a4c5bd3117";

#[test]
fn accepts_nunet_style_json_and_rejects_garbage() {
    let issuer = Keypair::from_seed(&[1; 32]);
    let t = Token::issue(
        &issuer,
        Claims {
            act: Action::Invoke,
            sub: issuer.did(),
            aud: None,
            topic: vec![],
            cap: vec![cap("/public")],
            exp: NOW,
            depth: 0,
            rev: None,
        },
        None,
    )
    .unwrap();
    let mut v = serde_json::to_value(&t).unwrap();
    // NuNet writes empty audiences as "" and empty lists as null.
    v["dms"]["aud"] = "".into();
    v["dms"]["topic"] = serde_json::Value::Null;
    let back: Token = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(back, t);
    let list = TokenList::parse_any(&format!("{{\"tok\":[{v}]}}")).unwrap();
    assert_eq!(list.tok.len(), 1);
    assert_eq!(TokenList::parse_any(&v.to_string()).unwrap().tok.len(), 1);
    for bad in [
        "",
        "{}",
        "[1,2]",
        "{\"ucan\":{}}",
        "{\"dms\":{\"act\":\"fly\"}}",
        "\u{0}\u{ff}",
    ] {
        assert!(TokenList::parse_any(bad).is_err(), "{bad:?}");
    }
    let mut v2 = v.clone();
    v2["dms"]["cap"] = serde_json::json!(["not/a/path"]);
    let err = TokenList::parse_any(&v2.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("must start with '/'"), "{err}");
    assert!(TokenList::from_json(&vec![b' '; 20_000]).is_err());
    // Deep nesting is refused by the decoder, not a stack overflow.
    let deep = format!(
        "{}{}",
        "{\"dms\":{\"chain\":".repeat(5000),
        "}".repeat(10000)
    );
    assert!(serde_json::from_str::<Token>(&deep).is_err());
}

/// The restricted-network shape: the node trusts an organisation only for /dms/deployment
/// through a require anchor; the org's grant to a user reaches the node through the user's
/// provide anchor.
#[test]
fn require_and_provide_anchors() {
    let node = Keypair::from_seed(&[10; 32]);
    let org = Keypair::from_seed(&[11; 32]);
    let user = Keypair::from_seed(&[12; 32]);
    let mut node_ctx = Anchors::new(node.did());
    let admit_org = node_ctx
        .grant(
            &node,
            &spec(&org.did(), &["/dms/deployment"], NOW + 100 * HOUR),
        )
        .unwrap();
    node_ctx.add_require(admit_org.clone(), NOW).unwrap();

    let org_ctx = Anchors::new(org.did());
    let to_user = org_ctx
        .grant(
            &org,
            &spec(&user.did(), &["/dms/deployment"], NOW + 10 * HOUR),
        )
        .unwrap();
    let mut user_ctx = Anchors::new(user.did());
    user_ctx.add_provide(to_user.clone(), NOW).unwrap();

    let invs = user_ctx.invocation_tokens(
        &user,
        Action::Invoke,
        &spec(&user.did(), &["/dms/deployment/bid"], NOW + HOUR),
        NOW,
    );
    assert_eq!(
        invs.len(),
        2,
        "one chained on the provide anchor, one self-signed"
    );
    let list = TokenList { tok: invs };
    let v = Verifier::default();
    let c = cap("/dms/deployment/bid");
    let (u, n) = (user.did(), node.did());
    let ok = v
        .verify_any(&list, &invoke_req(&u, &n, &c), &node_ctx, NOW)
        .unwrap();
    assert_eq!(ok.anchor, Anchor::Require(admit_org.id()));
    assert_eq!(ok.chain_len, 2);
    // Outside what the require anchor admits: denied although the org granted it... (it did not).
    let c2 = cap("/dms/node/onboarding/onboard");
    let e = v
        .verify_any(&list, &invoke_req(&u, &n, &c2), &node_ctx, NOW)
        .unwrap_err();
    assert_eq!(e.rule(), "capability-not-granted");
    // A node with no anchor for the org denies.
    let other = Anchors::new(Keypair::from_seed(&[13; 32]).did());
    let e = v
        .verify_any(&list, &invoke_req(&u, &other.did, &c), &other, NOW)
        .unwrap_err();
    assert_eq!(e.rule(), "not-anchored");
    // The org grants more than the node admits: the require anchor attenuates.
    let wide = org_ctx
        .grant(&org, &spec(&user.did(), &["/dms"], NOW + 10 * HOUR))
        .unwrap();
    let mut user2 = Anchors::new(user.did());
    user2.add_provide(wide, NOW).unwrap();
    let c3 = cap("/dms/node/peers/list");
    let toks = TokenList {
        tok: user2.invocation_tokens(
            &user,
            Action::Invoke,
            &spec(&user.did(), &["/dms/node/peers/list"], NOW + HOUR),
            NOW,
        ),
    };
    let e = v
        .verify_any(&toks, &invoke_req(&u, &n, &c3), &node_ctx, NOW)
        .unwrap_err();
    assert_eq!(e.rule(), "capability-widened");
    // Revoking the require anchor (by the node itself) closes the door.
    node_ctx.revoke(&node, &admit_org).unwrap();
    let e = Verifier::default()
        .verify_any(&list, &invoke_req(&u, &n, &c), &node_ctx, NOW)
        .unwrap_err();
    assert_eq!(e.rule(), "revoked");
}

#[test]
fn delegate_modes_and_errors() {
    let root = Keypair::from_seed(&[20; 32]);
    let me = Keypair::from_seed(&[21; 32]);
    let friend = Keypair::from_seed(&[22; 32]);
    let mut ctx = Anchors::new(me.did());
    // No provide anchor: `no` fails with a clear error, `only` self-signs.
    let err = ctx
        .delegate(
            &me,
            &spec(&friend.did(), &["/dms/node"], NOW + HOUR),
            SelfSign::No,
            NOW,
        )
        .unwrap_err();
    assert!(err.to_string().contains("no provide anchor"), "{err}");
    let only = ctx
        .delegate(
            &me,
            &spec(&friend.did(), &["/dms/node"], NOW + HOUR),
            SelfSign::Only,
            NOW,
        )
        .unwrap();
    assert_eq!(only.len(), 1);
    assert!(only[0].dms().chain.is_none());
    // A provide anchor from root lets `no` chain on it, `also` adds a self-signed one.
    let g = Anchors::new(root.did())
        .grant(&root, &spec(&me.did(), &["/dms"], NOW + 2 * HOUR))
        .unwrap();
    // Somebody else's token cannot be our provide anchor.
    assert!(
        Anchors::new(friend.did())
            .add_provide(g.clone(), NOW)
            .is_err()
    );
    ctx.add_provide(g.clone(), NOW).unwrap();
    let chained = ctx
        .delegate(
            &me,
            &spec(&friend.did(), &["/dms/node"], NOW + HOUR),
            SelfSign::No,
            NOW,
        )
        .unwrap();
    assert_eq!(chained.len(), 1);
    assert_eq!(chained[0].dms().chain.as_deref(), Some(&g));
    let also = ctx
        .delegate(
            &me,
            &spec(&friend.did(), &["/dms/node"], NOW + HOUR),
            SelfSign::Also,
            NOW,
        )
        .unwrap();
    assert_eq!(also.len(), 2);
    // Asking for more than the anchor holds, or for longer, is refused.
    assert!(
        ctx.delegate(
            &me,
            &spec(&friend.did(), &["/public"], NOW + HOUR),
            SelfSign::No,
            NOW
        )
        .is_err()
    );
    let err = ctx
        .delegate(
            &me,
            &spec(&friend.did(), &["/dms"], NOW + 3 * HOUR),
            SelfSign::No,
            NOW,
        )
        .unwrap_err();
    assert!(err.to_string().contains("after the expiry"), "{err}");
    // The friend can invoke on a node rooted in `root`.
    let node = Keypair::from_seed(&[23; 32]);
    let mut node_ctx = Anchors::new(node.did());
    node_ctx.add_root(root.did());
    let mut fctx = Anchors::new(friend.did());
    fctx.add_provide(chained[0].clone(), NOW).unwrap();
    let inv = TokenList {
        tok: fctx.invocation_tokens(
            &friend,
            Action::Invoke,
            &spec(&friend.did(), &["/dms/node/peers/ping"], NOW + HOUR),
            NOW,
        ),
    };
    let c = cap("/dms/node/peers/ping");
    let (f, n) = (friend.did(), node.did());
    let ok = Verifier::default()
        .verify_any(&inv, &invoke_req(&f, &n, &c), &node_ctx, NOW)
        .unwrap();
    assert_eq!(ok.anchor, Anchor::Root(root.did()));
    assert_eq!(ok.chain_len, 3);
}

#[test]
fn broadcast_needs_topic_and_broadcast_token() {
    let root = Keypair::from_seed(&[30; 32]);
    let node = Keypair::from_seed(&[31; 32]);
    let mut ctx = Anchors::new(node.did());
    ctx.add_root(root.did());
    let mut s = spec(&root.did(), &["/broadcast"], NOW + HOUR);
    s.topic = vec![cap("/nunet")];
    let own = Anchors::new(root.did());
    let toks = TokenList {
        tok: own.invocation_tokens(&root, Action::Broadcast, &s, NOW),
    };
    let (r, n, b, t) = (
        root.did(),
        node.did(),
        cap("/broadcast/hello"),
        cap("/nunet/hello"),
    );
    let req = Request {
        action: Action::Broadcast,
        subject: &r,
        audience: &n,
        capability: &b,
        topic: Some(&t),
    };
    Verifier::default()
        .verify_any(&toks, &req, &ctx, NOW)
        .unwrap();
    let other_topic = cap("/other");
    let req2 = Request {
        topic: Some(&other_topic),
        ..req
    };
    assert_eq!(
        Verifier::default()
            .verify_any(&toks, &req2, &ctx, NOW)
            .unwrap_err()
            .rule(),
        "topic-not-granted"
    );
    let req3 = Request {
        action: Action::Invoke,
        topic: None,
        ..req
    };
    assert_eq!(
        Verifier::default()
            .verify_any(&toks, &req3, &ctx, NOW)
            .unwrap_err()
            .rule(),
        "wrong-action"
    );
    assert_eq!(
        Verifier::default()
            .verify_any(&TokenList::default(), &req, &ctx, NOW)
            .unwrap_err()
            .rule(),
        "no-token"
    );
}

#[test]
fn cache_skips_known_signatures_but_not_rules() {
    let keys: Vec<Keypair> = (0..5u8)
        .map(|i| Keypair::from_seed(&[40 + i; 32]))
        .collect();
    let node = Keypair::from_seed(&[50; 32]);
    let mut ctx = Anchors::new(node.did());
    ctx.add_root(keys[0].did());
    let mut tok = Anchors::new(keys[0].did())
        .grant(&keys[0], &spec(&keys[1].did(), &["/dms"], NOW + HOUR))
        .unwrap();
    for i in 1..4 {
        let mut a = Anchors::new(keys[i].did());
        a.add_provide(tok, NOW).unwrap();
        tok = a
            .delegate(
                &keys[i],
                &spec(&keys[i + 1].did(), &["/dms"], NOW + HOUR),
                SelfSign::No,
                NOW,
            )
            .unwrap()
            .remove(0);
    }
    let mut a = Anchors::new(keys[4].did());
    a.add_provide(tok, NOW).unwrap();
    let inv = a
        .invocation_tokens(
            &keys[4],
            Action::Invoke,
            &spec(&keys[4].did(), &["/dms/x"], NOW + HOUR),
            NOW,
        )
        .remove(0);
    let v = Verifier::default();
    let (s, n, c) = (keys[4].did(), node.did(), cap("/dms/x"));
    v.verify(&inv, &invoke_req(&s, &n, &c), &ctx, NOW).unwrap();
    assert_eq!(v.cached(), 5);
    // Cached signatures do not bypass time: the same chain later is expired.
    assert_eq!(
        v.verify(&inv, &invoke_req(&s, &n, &c), &ctx, NOW + 2 * HOUR)
            .unwrap_err()
            .rule(),
        "expired"
    );
    // A forged leaf on a cached chain still has its own signature checked.
    let mut forged = inv.clone();
    forged.dms_mut().cap = vec![cap("/dms/y")];
    let c2 = cap("/dms/y");
    assert_eq!(
        v.verify(&forged, &invoke_req(&s, &n, &c2), &ctx, NOW)
            .unwrap_err()
            .rule(),
        "bad-signature"
    );
}
