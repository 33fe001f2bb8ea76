//! Actor envelopes as the daemon receives them (libp2p messages, REST bodies): decoding with
//! its size limit, then what dispatch checks first (sender DID, signature, behavior name and
//! topic as capabilities, the capability tokens, the trace context). Never panics; a decoded envelope
//! re-encodes to an envelope equal to it, with the same signing bytes.
#![no_main]

use nunet_actor::{Envelope, Handle};
use nunet_capability::{Capability, TokenList};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::from_bytes(data) else {
        return;
    };
    let again = Envelope::from_bytes(&env.to_bytes()).expect("a re-encoded envelope decodes");
    assert_eq!(again, env, "decode → encode → decode changed the envelope");
    assert_eq!(again.signing_bytes(), env.signing_bytes());
    let _ = env.verify_signature();
    let _ = Handle::parse(&env.from.id);
    let _ = env.be.parse::<Capability>();
    let _ = env.opt.topic.parse::<Capability>();
    // A trace context from a peer: parsed, and a parsed one prints back as it came.
    if let Some(c) = nunet_traces::SpanContext::parse(&env.opt.trace) {
        assert_eq!(
            nunet_traces::SpanContext::parse(&c.traceparent()),
            Some(c)
        );
    }
    if !env.cap.is_empty()
        && let Ok(list) = TokenList::from_json(&env.cap)
    {
        for t in &list.tok {
            let _ = t.id();
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&env.msg) {
        let _ = nunet_protocol::Decline::is_decline(&v);
    }
});
