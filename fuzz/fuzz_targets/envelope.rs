//! Envelope decoding and signature checking must never panic on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(env) = nunet_actor::Envelope::from_bytes(data) {
        let _ = env.verify_signature();
        let _ = nunet_actor::Handle::parse(&env.from.id);
    }
});
