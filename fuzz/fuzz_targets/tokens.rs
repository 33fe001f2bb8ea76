//! Capability token lists (an envelope's `cap`, `nunet cap` input, revocations) decoded and
//! then verified the way dispatch verifies them: chain links, ids, signatures, anchors,
//! revocation sets. Never panics; a decoded list re-encodes to an equal list with the same
//! token ids.
#![no_main]

use std::sync::OnceLock;

use nunet_capability::{
    Action, Anchors, Capability, Request, RevocationSet, TokenList, Verifier, now_ns,
};
use nunet_did::{Did, Keypair};

struct Fixture {
    node: Did,
    anchors: Anchors,
    verifier: Verifier,
    cap: Capability,
    topic: Capability,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let node = Keypair::from_seed(&[1; 32]).did();
        let mut anchors = Anchors::new(node.clone());
        anchors.add_root(Keypair::from_seed(&[2; 32]).did());
        Fixture {
            node,
            anchors,
            verifier: Verifier::with_cache_capacity(0),
            cap: Capability::parse("/dms/deployment/bid").expect("capability"),
            topic: Capability::parse("/nunet/deployment").expect("topic"),
        }
    })
}

fn check(list: &TokenList) {
    let again = TokenList::from_json(list.to_json().as_bytes()).expect("a re-encoded list decodes");
    assert_eq!(&again, list, "decode → encode → decode changed the list");
    let f = fixture();
    let mut revoked = RevocationSet::default();
    for (t, t2) in list.tok.iter().zip(&again.tok) {
        assert_eq!(t.id(), t2.id(), "the id changed across a round trip");
        let _ = t.links();
        let _ = t.dms().verify_signature(None);
        let _ = revoked.add(t.clone());
        let subject = t.dms().sub.clone();
        for (action, topic) in [(Action::Invoke, None), (Action::Broadcast, Some(&f.topic))] {
            let req = Request {
                action,
                subject: &subject,
                audience: &f.node,
                capability: &f.cap,
                topic,
            };
            let _ = f.verifier.verify_any(list, &req, &f.anchors, now_ns());
        }
    }
    revoked.gc(now_ns());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(list) = TokenList::from_json(data) {
        check(&list);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(list) = TokenList::parse_any(text)
    {
        check(&list);
    }
});
