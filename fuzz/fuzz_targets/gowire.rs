//! NuNet's Go envelopes, as they arrive from a NuNet node on `actor/<inbox>/messages/0.0.1`
//! or on gossip: decoded, re-encoded the way a Go receiver re-encodes before verifying,
//! verified and converted to this node's envelope. Never panics; a decoded envelope
//! re-encodes to bytes that decode to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nunet_gowire::GoEnvelope;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = GoEnvelope::from_json(data) else {
        return;
    };
    let again = GoEnvelope::from_json(&env.to_json()).expect("our own encoding decodes");
    assert_eq!(again, env, "re-encoding changed the envelope");
    let _ = env.signing_bytes();
    let _ = env.verify(0);
    let _ = env.to_actor();
});
