//! NuNet's token format: tokens made by an independent implementation of NuNet's Go rules
//! (`fixtures/make-nunet-tokens.py`) parse, keep their shape, verify, chain and revoke here;
//! tokens issued here in NuNet's format are byte-identical to it; and chains mixing both
//! formats verify exactly when each link verifies by its own rule.
#![allow(clippy::unwrap_used, missing_docs)]

use nunet_capability::token::Claims;
use nunet_capability::{
    Action, Anchors, Capability, Denied, Request, Token, TokenFormat, TokenList, Verifier,
};
use nunet_did::{Did, Keypair, SecpKeypair, Signer, SignerError};
use proptest::prelude::*;
use serde_json::Value;

const NOW: u64 = 1_800_000_000_000_000_000;

fn fixtures() -> Value {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nunet-tokens.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn key(f: &Value, name: &str) -> Keypair {
    let seed: [u8; 32] = hex::decode(f["keys"][name].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    Keypair::from_seed(&seed)
}

fn token(f: &Value, name: &str) -> (Token, String) {
    let wire = f["tokens"][name]["wire"].as_str().unwrap().to_string();
    (serde_json::from_str(&wire).unwrap(), wire)
}

fn cap(s: &str) -> Capability {
    s.parse().unwrap()
}

#[test]
fn nunet_tokens_parse_keep_their_shape_and_sign_the_same_bytes() {
    let f = fixtures();
    for name in ["root", "leaf", "odd", "revoke"] {
        let (t, wire) = token(&f, name);
        let d = t.dms();
        assert_eq!(d.format, TokenFormat::NuNet, "{name}");
        // Go's bytes, reproduced from the decoded token.
        let signing = f["tokens"][name]["signing"].as_str().unwrap();
        assert_eq!(
            String::from_utf8(d.signing_bytes(None)).unwrap(),
            signing,
            "{name}"
        );
        assert!(d.verify_signature(None), "{name}");
        // Written back in NuNet's shape (null cap, {} aud, no depth 0, …).
        let back: Value = serde_json::to_value(&t).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<Value>(&wire).unwrap(),
            "{name}"
        );
        // A flipped byte anywhere signed fails.
        let mut bad = t.clone();
        bad.dms_mut().exp -= 1;
        assert!(!bad.dms().verify_signature(None), "{name}");
    }
    let (revoke, _) = token(&f, "revoke");
    assert!(revoke.dms().cap_null, "\"cap\":null is kept as signed");
}

#[test]
fn tokens_issued_here_in_nunet_format_are_byte_identical() {
    let f = fixtures();
    let alice = key(&f, "alice");
    let (root, wire) = token(&f, "root");
    let d = root.dms();
    let again = Token::sign_with_nonce(
        TokenFormat::NuNet,
        &alice,
        Claims {
            act: d.act,
            sub: d.sub.clone(),
            aud: None,
            topic: d.topic.clone(),
            cap: d.cap.clone(),
            exp: d.exp,
            depth: d.depth,
            rev: None,
        },
        None,
        d.nonce.clone(),
    )
    .unwrap();
    assert_eq!(serde_json::to_string(&again).unwrap(), wire);
    // NuNet's revocation of it, made here, is the one NuNet's tool makes (apart from `cap`,
    // which the newest NuNet copies and an older one left null).
    let mut anchors = Anchors::new(alice.did());
    let rev = anchors.revoke(&alice, &root).unwrap();
    let r = rev.dms();
    assert_eq!(
        (r.act, &r.iss, &r.sub, &r.nonce, r.exp, r.format),
        (
            Action::Revoke,
            &d.iss,
            &d.sub,
            &d.nonce,
            d.exp,
            TokenFormat::NuNet
        )
    );
    assert!(r.verify_signature(None));
}

#[test]
fn a_nunet_chain_verifies_and_nunet_revocations_apply() {
    let f = fixtures();
    let alice = key(&f, "alice");
    let carol = key(&f, "carol");
    let (leaf, _) = token(&f, "leaf");
    let ping = cap("/dms/node/peers/ping");
    let req = Request {
        action: Action::Invoke,
        subject: &carol.did(),
        audience: &alice.did(),
        capability: &ping,
        topic: None,
    };
    let mut anchors = Anchors::new(alice.did());
    let v = Verifier::default();
    v.verify(&leaf, &req, &anchors, NOW).unwrap();
    // Attenuation still holds: the chain does not grant another path.
    let other = cap("/public");
    let req2 = Request {
        capability: &other,
        ..req
    };
    assert!(v.verify(&leaf, &req2, &anchors, NOW).is_err());
    // NuNet's revocation of the root (by issuer, subject and nonce) denies the whole chain.
    let (revoke, _) = token(&f, "revoke");
    anchors.revocations.add(revoke).unwrap();
    assert!(matches!(
        Verifier::default().verify(&leaf, &req, &anchors, NOW),
        Err(Denied::Revoked { at: 1, .. })
    ));
    // A token list in NuNet's shape parses as one.
    let (root, wire) = token(&f, "root");
    let list = TokenList::parse_any(&format!("{{\"tok\":[{wire}]}}")).unwrap();
    assert_eq!(list.tok, vec![root]);
}

#[test]
fn mixed_did_spellings_and_nunet_rev_are_refused() {
    let f = fixtures();
    let (_, wire) = token(&f, "root");
    let mut v: Value = serde_json::from_str(&wire).unwrap();
    v["dms"]["sub"] = Value::from(v["dms"]["sub"]["uri"].as_str().unwrap());
    let e = serde_json::from_value::<Token>(v).unwrap_err().to_string();
    assert!(e.contains("every DID the same way"), "{e}");
    let mut v: Value = serde_json::from_str(&wire).unwrap();
    v["dms"]["rev"] = Value::from("00".repeat(32));
    assert!(serde_json::from_value::<Token>(v).is_err());
}

/// Unchained claims valid until `NOW` + 1000 s, with no audience, depth or `rev`.
fn claims(act: Action, sub: Did, topic: Vec<Capability>, cap: Vec<Capability>) -> Claims {
    Claims {
        act,
        sub,
        aud: None,
        topic,
        cap,
        exp: NOW + 1_000_000_000_000,
        depth: 0,
        rev: None,
    }
}

/// A signer of any key type NuNet's DIDs use: ed25519, libp2p secp256k1, or an Ethereum
/// wallet's key (what a Ledger signs with).
enum AnyKey {
    Ed(Keypair),
    Secp(SecpKeypair),
    Eth(SecpKeypair),
}

impl AnyKey {
    fn new(kind: u8, i: u8) -> Self {
        let secret = [i + 40; 32];
        match kind % 3 {
            0 => AnyKey::Ed(Keypair::from_seed(&secret)),
            1 => AnyKey::Secp(SecpKeypair::from_secret(&secret).unwrap()),
            _ => AnyKey::Eth(SecpKeypair::from_secret(&secret).unwrap()),
        }
    }
}

impl Signer for AnyKey {
    fn did(&self) -> Did {
        match self {
            AnyKey::Ed(k) => k.did(),
            AnyKey::Secp(k) => Did::from_secp256k1(&k.public()),
            AnyKey::Eth(k) => Did::from_eth(&k.public()),
        }
    }
    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(match self {
            AnyKey::Ed(k) => k.sign(msg).to_bytes().to_vec(),
            AnyKey::Secp(k) => k.sign_sha256(msg),
            AnyKey::Eth(k) => k.sign_eth(msg),
        })
    }
}

#[test]
fn nunet_public_did_can_be_granted_to_and_its_grants_verify() {
    // NuNet's onboarding: the user grants /public and /broadcast to NuNet's DID (an Ethereum
    // key on a Ledger), and NuNet's DID grants back. The grant to it is an ordinary token
    // whose subject is that DID; what it signs verifies by EIP-191.
    let nunet: Did = "did:key:zzCHUybNYmK8QsttZwXqUX8aDLoBGHnMCakDX2RpsGwmXmYHEW"
        .parse()
        .unwrap();
    let user = Keypair::from_seed(&[5; 32]);
    let c = claims(
        Action::Delegate,
        nunet.clone(),
        vec![cap("/nunet")],
        vec![cap("/public"), cap("/broadcast")],
    );
    let grant = Token::issue_as(TokenFormat::NuNet, &user, c, None).unwrap();
    let text = serde_json::to_string(&grant).unwrap();
    assert!(text.contains(&format!("{{\"uri\":\"{nunet}\"}}")), "{text}");
    let back: Token = serde_json::from_str(&text).unwrap();
    assert!(back.dms().verify_signature(None));
    // A Ledger user (Ethereum key) delegating to a node: the node verifies the chain.
    let ledger = AnyKey::new(2, 1);
    let node = Keypair::from_seed(&[6; 32]);
    let ping = cap("/dms/node/peers/ping");
    let c = claims(Action::Invoke, node.did(), vec![], vec![ping.clone()]);
    let t = Token::issue_as(TokenFormat::NuNet, &ledger, c, None).unwrap();
    assert_eq!(t.dms().iss.kind(), nunet_did::KeyKind::Eth);
    let req = Request {
        action: Action::Invoke,
        subject: &node.did(),
        audience: &node.did(),
        capability: &ping,
        topic: None,
    };
    let mut anchors = Anchors::new(node.did());
    assert!(Verifier::default().verify(&t, &req, &anchors, NOW).is_err());
    anchors.add_root(ledger.did());
    Verifier::default().verify(&t, &req, &anchors, NOW).unwrap();
}

#[test]
fn a_high_s_twin_keeps_the_token_id_and_its_revocation() {
    // ECDSA signatures verify in both S forms (NuNet accepts high-S). The id must not depend on
    // the form, or the holder of a token revoked by id could flip S and use it again.
    for kind in [1, 2] {
        let issuer = AnyKey::new(kind, 3);
        let node = Keypair::from_seed(&[7; 32]);
        let ping = cap("/dms/node/peers/ping");
        let c = claims(Action::Invoke, node.did(), vec![], vec![ping.clone()]);
        let t = Token::issue(&issuer, c, None).unwrap();
        let sig = k256::ecdsa::Signature::from_der(&t.dms().sig).unwrap();
        let high = k256::ecdsa::Signature::from_scalars(sig.r(), -*sig.s()).unwrap();
        let mut twin = t.clone();
        twin.dms_mut().sig = high.to_der().as_bytes().to_vec();
        assert_ne!(twin.dms().sig, t.dms().sig);
        assert!(twin.dms().verify_signature(None), "high-S verifies");
        assert_eq!(twin.id(), t.id());
        let mut anchors = Anchors::new(node.did());
        anchors.add_root(issuer.did());
        let rev = Token::issue(
            &issuer,
            Claims {
                act: Action::Revoke,
                sub: issuer.did(),
                aud: None,
                topic: vec![],
                cap: vec![],
                exp: NOW + 1_000_000_000_000,
                depth: 0,
                rev: Some(t.id()),
            },
            None,
        )
        .unwrap();
        anchors.revocations.add(rev).unwrap();
        let req = Request {
            action: Action::Invoke,
            subject: &node.did(),
            audience: &node.did(),
            capability: &ping,
            topic: None,
        };
        for tok in [&t, &twin] {
            assert!(matches!(
                Verifier::default().verify(tok, &req, &anchors, NOW),
                Err(Denied::Revoked { .. })
            ));
        }
    }
}

fn format(nunet: bool) -> TokenFormat {
    if nunet {
        TokenFormat::NuNet
    } else {
        TokenFormat::Native
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A chain of 1–5 links, each in a random format and signed by a random key type
    /// (ed25519, secp256k1, Ethereum), verifies exactly when every link would verify in its
    /// own format: untouched it verifies; with one link's signed content changed it is
    /// denied at that link's signature.
    #[test]
    fn mixed_chains_verify_link_by_link(
        formats in proptest::collection::vec(any::<bool>(), 1..=5),
        kinds in proptest::collection::vec(0u8..3, 6),
        tamper in proptest::option::of(0usize..5),
        through_json in any::<bool>(),
    ) {
        let keys: Vec<AnyKey> = (0..=formats.len()).map(|i| AnyKey::new(kinds[i], i as u8)).collect();
        // keys[0] is the root issuer (anchored), keys[n] the invoker.
        let n = formats.len();
        let ping = cap("/dms/node/peers/ping");
        let mut chain: Option<Token> = None;
        for (i, nunet) in formats.iter().enumerate() {
            let last = i == n - 1;
            let claims = Claims {
                act: if last { Action::Invoke } else { Action::Delegate },
                sub: keys[i + 1].did(),
                aud: None,
                topic: vec![],
                cap: vec![if last { ping.clone() } else { cap("/dms") }],
                exp: NOW + 1_000_000_000_000 - i as u64,
                depth: 0,
                rev: None,
            };
            chain = Some(Token::issue_as(format(*nunet), &keys[i], claims, chain.take()).unwrap());
        }
        let mut leaf = chain.unwrap();
        if through_json {
            let text = serde_json::to_string(&leaf).unwrap();
            leaf = serde_json::from_str(&text).unwrap();
        }
        // Link `tamper` counted from the root: change what it signs, keep its signature.
        let tampered = tamper.filter(|t| *t < n);
        if let Some(t) = tampered {
            let mut cur = &mut leaf;
            for _ in 0..(n - 1 - t) {
                cur = cur.dms_mut().chain.as_mut().unwrap();
            }
            cur.dms_mut().exp -= 1;
        }
        let invoker: Did = keys[n].did();
        let node = keys[0].did();
        let req = Request {
            action: Action::Invoke,
            subject: &invoker,
            audience: &node,
            capability: &ping,
            topic: None,
        };
        let anchors = Anchors::new(keys[0].did());
        let r = Verifier::default().verify(&leaf, &req, &anchors, NOW);
        match tampered {
            None => prop_assert!(r.is_ok(), "{r:?}"),
            Some(t) => {
                let at = n - 1 - t;
                prop_assert!(
                    matches!(r, Err(Denied::BadSignature { at: a }) if a == at),
                    "tampered link {at} of {n}: {r:?}"
                );
            }
        }
    }
}

/// A context NuNet's DMS saved (`cap/<name>.cap`, both key spellings) opens as it is, issues
/// in NuNet's format, and is never rewritten: a save goes to `<name>.json`.
#[test]
fn nunet_context_files_open_and_are_not_rewritten() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bob = key(&f, "bob");
    for file in ["nunet-bob.cap", "nunet-bob-old.cap"] {
        std::fs::copy(src.join(file), dir.path().join("bob.cap")).unwrap();
        let ctx = nunet_capability::ContextFile::new(dir.path());
        assert!(ctx.exists("bob"));
        assert_eq!(ctx.list(), vec!["bob".to_string()]);
        let a = ctx.load("bob").unwrap();
        assert_eq!(a.did, bob.did(), "{file}");
        assert_eq!(a.roots, vec![key(&f, "alice").did()], "{file}");
        assert_eq!(a.provide, vec![token(&f, "root").0], "{file}");
        assert_eq!(a.token_format, TokenFormat::NuNet);
        // Delegations chain on NuNet's provide anchor and come out in NuNet's format.
        let carol = key(&f, "carol");
        let spec = nunet_capability::TokenSpec {
            sub: carol.did(),
            aud: None,
            cap: vec![cap("/dms/node")],
            topic: vec![],
            exp: NOW,
            depth: 0,
        };
        let out = a
            .delegate(
                &bob,
                &spec,
                nunet_capability::SelfSign::No,
                NOW - 1_000_000_000,
            )
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dms().format, TokenFormat::NuNet);
        assert!(
            serde_json::to_string(&out[0])
                .unwrap()
                .contains("\"iss\":{\"uri\":")
        );
        let before = std::fs::read(dir.path().join("bob.cap")).unwrap();
        ctx.save("bob", &a).unwrap();
        assert_eq!(std::fs::read(dir.path().join("bob.cap")).unwrap(), before);
        assert_eq!(ctx.load("bob").unwrap().token_format, TokenFormat::NuNet);
        std::fs::remove_file(dir.path().join("bob.json")).unwrap();
    }
    // Once the context lives in bob.json, a revocation NuNet's tools add to bob.cap still counts.
    std::fs::copy(src.join("nunet-bob.cap"), dir.path().join("bob.cap")).unwrap();
    let ctx = nunet_capability::ContextFile::new(dir.path());
    let a = ctx.load("bob").unwrap();
    ctx.save("bob", &a).unwrap();
    assert!(ctx.load("bob").unwrap().revocations.is_empty());
    let text = std::fs::read_to_string(src.join("nunet-bob.cap"))
        .unwrap()
        .replace(
            "\"revoke\":{}",
            &format!("\"revoke\":{{\"tok\":[{}]}}", token(&f, "revoke").1),
        );
    std::fs::write(dir.path().join("bob.cap"), text).unwrap();
    assert_eq!(ctx.load("bob").unwrap().revocations.len(), 1);
    // A context of a secp256k1 key (NuNet's PRISM identities) opens.
    std::fs::write(
        dir.path().join("prism.cap"),
        br#"{"did":{"uri":"did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"},"roots":[]}"#,
    )
    .unwrap();
    assert_eq!(
        ctx.load("prism").unwrap().did.kind(),
        nunet_did::KeyKind::Secp256k1
    );
    // A context whose DID type is not read here (a Cardano wallet's) is refused with the
    // reason, not half-read.
    std::fs::write(
        dir.path().join("bad.cap"),
        br#"{"did":{"uri":"did:key:zE4Mr8HxBNPPsjzZtQrNcDgYwJW1qogzvx7eA2VAuhoJhyAx7"},"roots":[]}"#,
    )
    .unwrap();
    let e = nunet_capability::ContextFile::new(dir.path())
        .load("bad")
        .unwrap_err()
        .to_string();
    assert!(e.contains("NuNet context") && e.contains("Cardano"), "{e}");
}
