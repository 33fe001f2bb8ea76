//! Byte-exact vectors of NuNet's envelope, written out by hand from the Go definitions
//! (`actor/interface.go` field order and tags; Go's `encoding/json` rules for `[]byte`,
//! `omitempty` and HTML-safe escaping; `actor/msg.go` signing prefix), and the reply
//! convention (`actor/msg.go` `ReplyTo`, `lib/ucan/context.go` `Provide`).

#![allow(clippy::unwrap_used)]

use ed25519_dalek::Signer as _;
use nunet_capability::token::Claims;
use nunet_capability::{
    Action, Anchors, Capability, Request, Token, TokenFormat, TokenList, Verifier,
};
use nunet_did::Keypair;
use nunet_gowire::{GoEnvelope, GoHandle, GoWireError, key_id, key_id_b32, reply_to};

const NONCE: u64 = 1_717_000_000_000_000_123;
const EXP: u64 = 4_000_000_000_000_000_000;

fn keys() -> (Keypair, Keypair) {
    (Keypair::from_seed(&[1; 32]), Keypair::from_seed(&[2; 32]))
}

fn hello(a: &Keypair, b: &Keypair) -> GoEnvelope {
    GoEnvelope {
        to: GoHandle::root_of(&b.public()),
        be: "/public/hello".into(),
        from: GoHandle::root_of(&a.public()),
        nonce: NONCE,
        exp: EXP,
        cont: "/dms/actor/replyto/1717000000000000122".into(),
        topic: String::new(),
        msg: Some(Vec::new()),
        cap: Vec::new(),
        sig: Vec::new(),
        native: None,
    }
}

/// The Go JSON of a root handle, written out field by field.
fn go_handle(k: &Keypair) -> String {
    format!(
        r#"{{"id":{{"pub":"{}"}},"did":{{"uri":"{}"}},"addr":{{"host":"{}","inbox":"root"}}}}"#,
        key_id_b32(&key_id(&k.public())),
        k.did(),
        k.public().peer_id().to_base58()
    )
}

#[test]
fn a_hello_encodes_as_go_does_and_signs_over_those_bytes() {
    let (a, b) = keys();
    let mut env = hello(&a, &b);
    let unsigned = format!(
        r#"{{"to":{},"be":"/public/hello","from":{},"nonce":1717000000000000123,"opt":{{"exp":4000000000000000000,"cont":"/dms/actor/replyto/1717000000000000122"}},"msg":""}}"#,
        go_handle(&b),
        go_handle(&a)
    );
    assert_eq!(String::from_utf8(env.to_json()).unwrap(), unsigned);
    env.sign(&a).unwrap();
    // The signature is plain Ed25519 over "dms:msg:" ‖ the JSON without `sig`.
    let dalek = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let expect = dalek.sign(format!("dms:msg:{unsigned}").as_bytes());
    assert_eq!(env.sig, expect.to_bytes().to_vec());
    let wire = String::from_utf8(env.to_json()).unwrap();
    assert!(wire.starts_with(&unsigned[..unsigned.len() - 1]));
    assert!(wire.ends_with(&format!(r#","sig":"{}"}}"#, base64_std(&env.sig))));
    // What a Go node parses and re-encodes verifies.
    let back = GoEnvelope::from_json(wire.as_bytes()).unwrap();
    assert_eq!(back, env);
    assert_eq!(back.verify(EXP - 1).unwrap(), a.did());
    assert_eq!(back.verify(EXP + 1), Err(GoWireError::Expired));
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn go_rules_for_empty_fields_and_escapes() {
    let (a, b) = keys();
    let mut env = hello(&a, &b);
    // A broadcast's empty receiver, a nil payload, a topic, Go's HTML-safe escapes.
    env.to = GoHandle::default();
    env.msg = None;
    env.cont.clear();
    env.topic = "/nunet/hello".into();
    env.be = "/x<&>\u{2028}\"\\\n\u{1}".into();
    env.cap = b"{\"tok\":[]}".to_vec();
    let json = String::from_utf8(env.to_json()).unwrap();
    assert!(
        json.starts_with(r#"{"to":{"id":{"pub":""},"did":{},"addr":{}},"be":"/x\u003c\u0026\u003e\u2028\"\\\n\u0001","#),
        "{json}"
    );
    assert!(
        json.ends_with(r#""opt":{"exp":4000000000000000000,"topic":"/nunet/hello"},"msg":null,"cap":"eyJ0b2siOltdfQ=="}"#),
        "{json}"
    );
    // An address with an inbox only has no leading comma.
    env.to.inbox = "root".into();
    assert!(
        String::from_utf8(env.to_json())
            .unwrap()
            .contains(r#""addr":{"inbox":"root"}"#)
    );
}

#[test]
fn tampering_unknown_fields_and_wrong_keys_fail_verification() {
    let (a, b) = keys();
    let mut env = hello(&a, &b);
    env.sign(&a).unwrap();
    let wire = String::from_utf8(env.to_json()).unwrap();
    // Go drops an unknown field when parsing, so the re-encoded bytes differ from what was
    // signed only if the field was signed: here it was not, and the envelope still verifies.
    let extra = wire.replacen(r#""be":"#, r#""zz":1,"be":"#, 1);
    assert!(
        GoEnvelope::from_json(extra.as_bytes())
            .unwrap()
            .verify(0)
            .is_ok()
    );
    for (from, to) in [
        ("/public/hello", "/public/hellp"),
        ("1717000000000000123", "1717000000000000124"),
        (r#""msg":"""#, r#""msg":null"#),
    ] {
        let bad = wire.replacen(from, to, 1);
        let e = GoEnvelope::from_json(bad.as_bytes()).unwrap().verify(0);
        assert_eq!(e, Err(GoWireError::BadSignature), "{from} → {to}");
    }
    // Signed by b while claiming to be a.
    let mut forged = hello(&a, &b);
    forged.from.id = key_id(&b.public());
    forged.sign(&b).unwrap();
    forged.from.id = key_id(&a.public());
    assert_eq!(forged.verify(0), Err(GoWireError::BadSignature));
    assert!(
        hello(&a, &b).sign(&b).is_err(),
        "signing as another key is refused"
    );
    for garbage in [
        &b"{"[..],
        b"[]",
        br#"{"nonce":-1}"#,
        br#"{"msg":"%%%"}"#,
        br#"{"from":{"id":{"pub":"abc"}}}"#,
    ] {
        assert!(
            matches!(
                GoEnvelope::from_json(garbage),
                Err(GoWireError::Malformed(_))
            ),
            "{garbage:?}"
        );
    }
    let big = vec![b' '; nunet_gowire::MAX_GO_ENVELOPE + 1];
    assert!(matches!(
        GoEnvelope::from_json(&big),
        Err(GoWireError::TooLarge(_))
    ));
}

#[test]
fn a_reply_goes_to_cont_chained_on_the_requesters_delegation() {
    let (a, b) = keys();
    let mut req = hello(&a, &b);
    // What Provide puts in a NuNet request: a self-signed invocation and a delegation of
    // the reply behavior to the receiver's DID.
    let cont: Capability = req.cont.parse().unwrap();
    let delegation = Token::issue_as(
        TokenFormat::NuNet,
        &a,
        Claims {
            act: Action::Delegate,
            sub: b.did(),
            aud: Some(a.did()),
            topic: vec![],
            cap: vec![cont.clone()],
            exp: EXP,
            depth: 1,
            rev: None,
        },
        None,
    )
    .unwrap();
    req.cap = TokenList {
        tok: vec![delegation.clone()],
    }
    .to_json()
    .into_bytes();
    req.sign(&a).unwrap();

    let reply = reply_to(&req, &b, br#"{"DID":{"uri":"x"}}"#.to_vec(), 7).unwrap();
    assert_eq!(reply.be, req.cont);
    assert_eq!(reply.to, req.from);
    assert_eq!(reply.from, req.to);
    assert_eq!(reply.exp, req.exp);
    assert_eq!(reply.verify(0).unwrap(), b.did());
    let wire = reply.to_json();
    let back = GoEnvelope::from_json(&wire).unwrap();
    assert_eq!(back.verify(0).unwrap(), b.did());
    // The requester's own anchors accept the reply's token for the reply behavior.
    let list = TokenList::from_json(&back.cap).unwrap();
    assert_eq!(list.tok.len(), 1);
    let t = list.tok[0].dms();
    assert_eq!(t.format, TokenFormat::NuNet);
    assert_eq!(t.chain.as_deref(), Some(&delegation));
    let req_check = Request {
        action: Action::Invoke,
        subject: &b.did(),
        audience: &a.did(),
        capability: &cont,
        topic: None,
    };
    Verifier::default()
        .verify_any(&list, &req_check, &Anchors::new(a.did()), 0)
        .unwrap();
    // A stranger's anchors do not.
    let stranger = Keypair::from_seed(&[9; 32]).did();
    assert!(
        Verifier::default()
            .verify_any(&list, &req_check, &Anchors::new(stranger), 0)
            .is_err()
    );

    // No reply behavior, or a request for someone else: no reply.
    let mut no_cont = req.clone();
    no_cont.cont.clear();
    assert!(reply_to(&no_cont, &b, vec![], 8).is_err());
    assert!(reply_to(&req, &a, vec![], 9).is_err());
}
