//! DIDs (`did:key:z…`) as they arrive in envelopes, handles, tokens and CLI arguments:
//! parsing, then the key and peer id derived from them, and signature checks by their key
//! type. Never panics; a parsed DID prints
//! back to text that parses to the same DID, and its peer id maps back to it.
#![no_main]

use nunet_did::Did;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(did) = Did::parse(text) {
        let again = Did::parse(did.as_str()).expect("a printed DID parses");
        assert_eq!(again, did);
        assert_eq!(again.as_str(), did.as_str());
        // Only ed25519 DIDs name a peer; their key and peer id map back to them.
        match did.ed25519() {
            Some(key) => {
                assert_eq!(key.did(), did, "DID → key → DID changed it");
                let peer = did.peer_id().expect("an ed25519 DID names a peer");
                assert_eq!(Did::from_peer_id(&peer).ok().as_ref(), Some(&did));
            }
            None => assert!(did.peer_id().is_err()),
        }
        // Whatever the bytes, checking them as a signature never panics (DER, ECDSA paths).
        let _ = did.verify(data, data);
        let _ = did.verify(b"m", &data[data.len().saturating_sub(72)..]);
    }
    let _ = nunet_actor::Handle::parse(text);
});
