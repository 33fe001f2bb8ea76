//! Datagrams of the subnet's UDP fast path as the receive thread handles them: header,
//! session, replay window, AES-GCM authentication; the offers that key them; the replay
//! window against a model. Never panics; nothing unauthenticated is accepted or moves the
//! window, what a sender seals is accepted exactly once.
#![no_main]

use std::collections::HashSet;

use nunet_subnet::fuzzing::{Session, Window, check_inbound};

const SESSION: u32 = 0x0102_0304;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let s = Session::new(SESSION, [mode; 32]).expect("a key");
    match mode % 3 {
        // Forged datagrams: never accepted (no key), and they must not disturb the window.
        0 => {
            let mut d = rest.to_vec();
            assert!(
                s.receive(&mut d).is_none(),
                "a forged datagram was accepted"
            );
            let sealed = s.seal(1, 1, b"payload").expect("seals");
            assert!(
                s.receive(&mut sealed.clone()).is_some(),
                "a forgery moved the window"
            );
        }
        // Sealed by the sender: accepted once, then refused; tampering refused.
        1 => {
            let counter = rest
                .first_chunk::<8>()
                .map_or(1, |c| u64::from_be_bytes(*c));
            let payload = rest.get(8..).unwrap_or_default();
            let Some(sealed) = s.seal(1, counter, payload) else {
                return;
            };
            let got = s.receive(&mut sealed.clone());
            if counter == 0 {
                assert!(got.is_none(), "counter 0 accepted");
                return;
            }
            assert_eq!(
                got,
                Some((1, payload.to_vec())),
                "a sealed datagram was refused"
            );
            assert!(
                s.receive(&mut sealed.clone()).is_none(),
                "a replay was accepted"
            );
            let _ = check_inbound(payload, mode);
            if let Some(i) = rest.get(8).map(|b| usize::from(*b) % sealed.len()) {
                let mut t = sealed.clone();
                t[i] ^= 0x01;
                let s2 = Session::new(SESSION, [mode; 32]).expect("a key");
                assert!(
                    s2.receive(&mut t).is_none(),
                    "a tampered datagram was accepted"
                );
            }
        }
        // The replay window against a set of seen counters.
        _ => {
            let mut w = Window::default();
            let mut seen = HashSet::new();
            let mut highest = 0u64;
            for c in rest.chunks_exact(2) {
                // Small steps around a moving base, so the window edge gets exercised.
                let step = u64::from(u16::from_be_bytes([c[0], c[1]]));
                let counter = if step & 1 == 0 {
                    highest.saturating_add(step >> 4)
                } else {
                    highest.saturating_sub(step >> 4)
                };
                let fresh = counter != 0
                    && !seen.contains(&counter)
                    && (counter > highest || highest - counter < Window::WINDOW);
                assert_eq!(w.check(counter), fresh, "counter {counter} after {highest}");
                if fresh {
                    w.commit(counter);
                    seen.insert(counter);
                    highest = highest.max(counter);
                }
            }
        }
    }
});
