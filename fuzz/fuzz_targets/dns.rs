//! The `.internal` DNS responder of an ensemble subnet, fed packets from its containers:
//! decoding, answering and size-limited encoding, over UDP and TCP. Never panics; every
//! answer decodes, fits the transport (4096 bytes over UDP at most, 65535 over TCP) and is
//! counted.
#![no_main]

use nunet_subnet::fuzzing::{dns_answer, dns_decodes};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for (tcp, limit) in [(false, 4096), (true, usize::from(u16::MAX))] {
        if let Some(answer) = dns_answer(data, tcp) {
            assert!(answer.len() <= limit, "{} bytes over the limit", answer.len());
            assert!(dns_decodes(&answer), "an answer does not decode");
        }
    }
});
