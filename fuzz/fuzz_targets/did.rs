//! DIDs (`did:key:z…`) as they arrive in envelopes, handles, tokens and CLI arguments:
//! parsing, then the key and peer id derived from them. Never panics; a parsed DID prints
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
        let key = did.public_key();
        assert_eq!(key.did(), did, "DID → key → DID changed it");
        let peer = did.peer_id();
        assert_eq!(Did::from_peer_id(&peer).ok().as_ref(), Some(&did));
    }
    let _ = nunet_actor::Handle::parse(text);
});
