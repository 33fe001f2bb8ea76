//! What a peer sends for a transfer: the 52-byte stream header, and the manifest of a
//! `/dms/node/files/write` call (or a `read` reply). Never panics; a manifest that passes its
//! check only places entries inside the destination, whatever the paths say.
#![no_main]

use std::path::{Path, PathBuf};

use nunet_files::receive::targets;
use nunet_files::wire::{HEADER_LEN, Header};
use nunet_files::{Destination, Manifest};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(b) = <[u8; HEADER_LEN]>::try_from(data.get(..HEADER_LEN).unwrap_or_default()) {
        if let Ok(h) = Header::decode(&b) {
            assert_eq!(h.encode(), b);
        }
    }
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    if m.check().is_err() {
        return;
    }
    for dest in [
        Destination::Into(PathBuf::from("/d")),
        Destination::New(PathBuf::from("/d/new")),
    ] {
        let Ok(places) = targets(&dest, &m) else {
            continue;
        };
        assert_eq!(places.len(), m.entries.len());
        for p in places {
            let folded = nunet_files::area::normalise(&p).expect("stays under /");
            assert!(folded.starts_with(Path::new("/d")) && folded == p, "{p:?}");
        }
    }
});
