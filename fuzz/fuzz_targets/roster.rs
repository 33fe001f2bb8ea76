//! Roster announcements (gossip) and snapshots (pulled from a peer): bytes from any peer on the
//! swarm. Never panics; what decodes stays within the bounds (topics per announcement, entries
//! per snapshot) and every topic is a well-formed name.
#![no_main]

use nunet_network::roster::{
    MAX_ENTRIES, MAX_TOPIC_LEN, MAX_TOPICS, decode_announcement, decode_snapshot,
};

/// What a topic name may be (the decoders' rule, written out independently).
fn well_formed(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TOPIC_LEN && t.chars().all(|c| c.is_ascii_graphic() && c != ',')
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(topics) = decode_announcement(data) {
        assert!(topics.len() <= MAX_TOPICS);
        assert!(topics.iter().all(|t| well_formed(t)), "{topics:?}");
    }
    if let Ok(entries) = decode_snapshot(data) {
        assert!(entries.len() <= MAX_ENTRIES);
        for (_, _, topics) in &entries {
            assert!(topics.len() <= MAX_TOPICS);
            assert!(topics.iter().all(|t| well_formed(t)), "{topics:?}");
        }
    }
});
