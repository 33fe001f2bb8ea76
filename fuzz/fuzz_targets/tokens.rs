//! Token list decoding, DID parsing and id computation must never panic on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(list) = nunet_capability::TokenList::from_json(data) {
        for t in &list.tok {
            let _ = t.id();
            let _ = t.dms().verify_signature(None);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = nunet_did::Did::parse(s);
        let _ = nunet_capability::Capability::parse(s);
    }
});
