//! What a provider pushes on an output stream (and the local API passes on to the CLI):
//! frames. Never panics, never buffers past the limits, and a frame that decodes encodes
//! back to the same bytes unless its text was cut to a limit.
#![no_main]

use nunet_output::Frame;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut buf = bytes::BytesMut::from(data);
    let mut whole = Vec::new();
    while let Ok(Some(f)) = Frame::take(&mut buf) {
        whole.push(f);
    }
    // The stream reader agrees with the buffer reader.
    let mut r = futures::io::Cursor::new(data.to_vec());
    let mut streamed = Vec::new();
    futures::executor::block_on(async {
        while let Ok(Some(f)) = Frame::read(&mut r).await {
            streamed.push(f);
        }
    });
    assert_eq!(whole, streamed);
    for f in whole {
        let mut again = bytes::BytesMut::from(&f.to_bytes()[..]);
        assert_eq!(Frame::take(&mut again).ok().flatten(), Some(f));
    }
});
