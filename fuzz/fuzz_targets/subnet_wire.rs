//! The subnet stream as an inbound reader sees it: the handshake (`NNSN`, version, ensemble
//! name), then length-prefixed frames, each payload checked (IPv4 header, virtio-net
//! header, source owned by the sending peer, destination inside the ensemble) before it
//! would reach the TUN device; and the acceptor's admission answer as a writer reads it.
//! Never panics; frames come out the same however the stream is split into reads, and
//! handshakes and admissions round-trip.
#![no_main]

use nunet_subnet::fuzzing::{self, decode_admission, encode_admission};
use nunet_subnet::wire::{self, ADMISSION_LEN, FrameError, LEN_PREFIX, MAX_FRAME};

/// Frames of `stream` handed over when it arrives in reads of `chunk` bytes, as the
/// reader's buffer loop does; `Err` once a frame is malformed.
fn in_reads(stream: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Result<usize, FrameError>) {
    let mut frames = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0;
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        match wire::decode_frames(&buf, |p| frames.push(p.to_vec())) {
            Ok(used) => {
                assert!(used <= buf.len());
                assert!(
                    buf.len() - used < LEN_PREFIX + MAX_FRAME,
                    "a whole frame was left"
                );
                buf.drain(..used);
                total += used;
            }
            Err(e) => return (frames, Err(e)),
        }
    }
    (frames, Ok(total))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The admission answer (first bytes) as the writer reads it.
    if let Some(ack) = data.first_chunk::<ADMISSION_LEN>()
        && let Some(a) = decode_admission(ack)
    {
        let again = decode_admission(&encode_admission(&a));
        assert_eq!(again.as_ref(), Some(&a), "admission round trip");
    }
    if let Some(block) = data.first_chunk() {
        let _ = fuzzing::decode_offer(block);
    }
    // The inbound stream: handshake, then frames.
    let Ok(name) = fuzzing::read_handshake(data) else {
        return;
    };
    let mut hello = Vec::new();
    wire::encode_handshake(&name, &mut hello).expect("a received name can be sent");
    assert_eq!(
        fuzzing::read_handshake(&hello).as_deref(),
        Ok(name.as_str())
    );
    let rest = &data[hello.len()..];
    let sender = rest.first().copied().unwrap_or(0);
    let (whole, r) = in_reads(rest, rest.len());
    let chunk = usize::from(sender) % 61 + 1;
    let (split, r2) = in_reads(rest, chunk);
    assert_eq!(
        r.is_err(),
        r2.is_err(),
        "a split stream decodes differently"
    );
    if r.is_ok() {
        assert_eq!(whole, split, "a split stream decodes differently");
    }
    for p in &whole {
        let _ = wire::check_payload(p);
        let _ = fuzzing::check_inbound(p, sender);
        let mut framed = Vec::new();
        if wire::encode_frame(p, &mut framed).is_ok() {
            assert_eq!(
                wire::decode_frame(&framed),
                Ok(Some((&p[..], framed.len())))
            );
        }
    }
});
