//! The subnet wire format: the stream handshake, the packet frames, and the checks every
//! packet goes through.
//!
//! One stream of protocol [`PROTOCOL`] carries the packets of one ensemble in one direction
//! (sender → receiver). It starts with a handshake
//!
//! ```text
//! "NNSN" | version u8 (= 1) | name length u8 (1..=255) | ensemble name (UTF-8)
//! ```
//!
//! answered, when the sender is admitted, with [`ADMISSION_LEN`] bytes (admission byte and
//! the receiver's datagram offer, see the crate's datagram module), and
//! followed by frames `length u32 BE | payload`, where the payload is a virtio-net header
//! ([`VNET_HDR_LEN`] bytes, little-endian, as Linux TUN devices with `IFF_VNET_HDR` use it)
//! and one IPv4 packet, possibly a GSO super-packet of up to 64 KiB that the receiving
//! kernel segments. Many frames are written with one stream write.
//!
//! This module is pure (no IO). It must not trust anything it parses: every length is
//! bounded, and a malformed frame is an error, never a panic.

use std::net::Ipv4Addr;

use libp2p::StreamProtocol;

/// The libp2p protocol of the subnet data path.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/nunet/subnet/1.0.0");
/// Magic bytes at the start of a stream.
pub const MAGIC: &[u8; 4] = b"NNSN";
/// Wire format version (2: the acceptor answers with the admission byte and an offer).
pub const VERSION: u8 = 2;
/// Length of the acceptor's answer to an admitted handshake: the admission byte (1) and the
/// datagram offer (`0` × 39 for none, or `1 | udp port u16 | session u32 | key [u8; 32]`).
pub const ADMISSION_LEN: usize = 1 + 39;
/// Length of the virtio-net header in front of every packet.
pub const VNET_HDR_LEN: usize = 10;
/// Length of a frame's length prefix.
pub const LEN_PREFIX: usize = 4;
/// Largest IPv4 packet (the IPv4 total length is 16 bits).
pub const MAX_PACKET: usize = 65_535;
/// Largest frame payload: the virtio-net header and the largest IPv4 packet.
pub const MAX_FRAME: usize = VNET_HDR_LEN + MAX_PACKET;
/// Smallest frame payload: the virtio-net header and a bare IPv4 header.
pub const MIN_FRAME: usize = VNET_HDR_LEN + 20;

/// virtio-net GSO types accepted from a peer (none, TCPv4, UDP L4), ECN bit masked off.
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;
/// virtio-net header flags accepted from a peer (needs-csum, data-valid).
const VNET_FLAGS_ALLOWED: u8 = 0b11;

/// Encodes the handshake for `ensemble` into `out`. Fails when the name is empty or longer
/// than 255 bytes.
pub fn encode_handshake(ensemble: &str, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = u8::try_from(ensemble.len()).map_err(|_| FrameError::BadHandshake)?;
    if len == 0 {
        return Err(FrameError::BadHandshake);
    }
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(len);
    out.extend_from_slice(ensemble.as_bytes());
    Ok(())
}

/// Checks the fixed handshake prefix (`magic | version | name length`) and returns the
/// length of the ensemble name that follows.
pub fn decode_handshake_prefix(prefix: &[u8; 6]) -> Result<usize, FrameError> {
    if &prefix[..4] != MAGIC || prefix[4] != VERSION || prefix[5] == 0 {
        return Err(FrameError::BadHandshake);
    }
    Ok(usize::from(prefix[5]))
}

/// Appends one frame (`length | vnet header + packet`) to `out`. `payload` must already
/// hold the virtio-net header and the packet.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if payload.len() < MIN_FRAME {
        return Err(FrameError::TooShort(payload.len()));
    }
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLong(payload.len()));
    }
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLong(payload.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Splits the next complete frame off the front of `buf`: `Ok(Some((payload, consumed)))`,
/// `Ok(None)` when more bytes are needed, an error when the length is out of bounds (the
/// stream must then be closed).
pub fn decode_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    if len < MIN_FRAME {
        return Err(FrameError::TooShort(len));
    }
    let end = LEN_PREFIX + len;
    match buf.get(LEN_PREFIX..end) {
        Some(payload) => Ok(Some((payload, end))),
        None => Ok(None),
    }
}

/// Hands every complete frame at the front of `buf` to `each`, in order; returns how many
/// bytes they took (what follows is the start of an incomplete frame), or the error of the
/// first malformed frame (the frames before it have been handed over; the stream must then
/// be closed).
pub fn decode_frames(buf: &[u8], mut each: impl FnMut(&[u8])) -> Result<usize, FrameError> {
    let mut start = 0;
    while let Some((payload, used)) = decode_frame(buf.get(start..).unwrap_or_default())? {
        each(payload);
        start += used;
    }
    Ok(start)
}

/// A frame or handshake that makes the stream unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The handshake is not `NNSN`, version 1, with a 1..=255 byte name.
    #[error("bad handshake")]
    BadHandshake,
    /// A frame length below the smallest possible frame.
    #[error("frame of {0} bytes is too short")]
    TooShort(usize),
    /// A frame length above [`MAX_FRAME`].
    #[error("frame of {0} bytes is too long")]
    TooLong(usize),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
}

/// Why a single packet was dropped (the stream stays open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// Not an IPv4 packet, or a malformed IPv4 header.
    NotIpv4,
    /// The virtio-net header asks for something other than none/TCPv4/UDP GSO, or does not
    /// match the packet's protocol.
    BadOffload,
}

/// The addresses of a checked IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
}

/// Checks the IPv4 header of `packet` (no virtio-net header in front) and returns its
/// addresses and protocol number.
pub fn ipv4_header(packet: &[u8]) -> Result<(Addrs, u8), PacketError> {
    let Some(h) = packet.first_chunk::<20>() else {
        return Err(PacketError::NotIpv4);
    };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl || total > packet.len() {
        return Err(PacketError::NotIpv4);
    }
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    Ok((Addrs { src, dst }, h[9]))
}

/// Checks a frame payload (virtio-net header + IPv4 packet) received from a peer: an IPv4
/// packet and a virtio-net header the local kernel may act on.
pub fn check_payload(payload: &[u8]) -> Result<Addrs, PacketError> {
    let (hdr, packet) = payload
        .split_first_chunk::<VNET_HDR_LEN>()
        .ok_or(PacketError::NotIpv4)?;
    let (addrs, proto) = ipv4_header(packet)?;
    let flags = hdr[0];
    let gso = hdr[1] & !GSO_ECN;
    let gso_size = u16::from_le_bytes([hdr[4], hdr[5]]);
    let csum_start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
    let csum_offset = usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
    if flags & !VNET_FLAGS_ALLOWED != 0 {
        return Err(PacketError::BadOffload);
    }
    let proto_ok = match gso {
        GSO_NONE => true,
        GSO_TCPV4 => proto == 6,
        GSO_UDP_L4 => proto == 17,
        _ => false,
    };
    if !proto_ok || (gso != GSO_NONE && gso_size == 0) {
        return Err(PacketError::BadOffload);
    }
    if flags & 1 != 0 && csum_start + csum_offset + 2 > packet.len() {
        return Err(PacketError::BadOffload);
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn packet(src: [u8; 4], dst: [u8; 4], body: usize) -> Vec<u8> {
        let total = 20 + body;
        let mut p = vec![0u8; VNET_HDR_LEN + total];
        let ip = &mut p[VNET_HDR_LEN..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn handshake_round_trip_and_rejects() {
        let mut out = Vec::new();
        encode_handshake("ens-1", &mut out).unwrap();
        let prefix: [u8; 6] = out[..6].try_into().unwrap();
        assert_eq!(decode_handshake_prefix(&prefix).unwrap(), 5);
        assert_eq!(&out[6..], b"ens-1");
        assert!(encode_handshake("", &mut Vec::new()).is_err());
        assert!(encode_handshake(&"x".repeat(256), &mut Vec::new()).is_err());
        let mut bad = prefix;
        bad[4] = 1; // version 1 peers (no datagram offer) are refused
        assert_eq!(decode_handshake_prefix(&bad), Err(FrameError::BadHandshake));
        assert_eq!(
            decode_handshake_prefix(b"GET / "),
            Err(FrameError::BadHandshake)
        );
    }

    #[test]
    fn frame_bounds() {
        let mut out = Vec::new();
        assert!(encode_frame(&[0; MIN_FRAME - 1], &mut out).is_err());
        assert!(encode_frame(&vec![0; MAX_FRAME + 1], &mut out).is_err());
        assert!(out.is_empty());
        let oversize = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(
            decode_frame(&oversize),
            Err(FrameError::TooLong(MAX_FRAME + 1))
        );
        assert_eq!(
            decode_frame(&[0, 0, 0, 3, 1, 2, 3]),
            Err(FrameError::TooShort(3))
        );
        assert_eq!(decode_frame(&[0, 0]), Ok(None));
    }

    #[test]
    fn frames_are_handed_over_until_an_incomplete_or_bad_one() {
        let p = packet([10, 0, 0, 1], [10, 0, 0, 2], 4);
        let mut stream = Vec::new();
        encode_frame(&p, &mut stream).unwrap();
        encode_frame(&p, &mut stream).unwrap();
        let whole = stream.len();
        stream.extend_from_slice(&[0, 0]); // the start of a third frame
        let mut n = 0;
        assert_eq!(
            decode_frames(&stream, |f| n += usize::from(f == &p[..])),
            Ok(whole)
        );
        assert_eq!(n, 2);
        stream.truncate(whole);
        stream.extend_from_slice(&[0, 0, 0, 1]); // a frame of 1 byte
        let mut n = 0;
        assert_eq!(
            decode_frames(&stream, |_| n += 1),
            Err(FrameError::TooShort(1))
        );
        assert_eq!(n, 2, "the frames before the bad one are handed over");
    }

    #[test]
    fn payload_checks() {
        let p = packet([10, 77, 0, 1], [10, 77, 0, 2], 8);
        let a = check_payload(&p).unwrap();
        assert_eq!(a.src, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(a.dst, Ipv4Addr::new(10, 77, 0, 2));
        let mut v6 = p.clone();
        v6[VNET_HDR_LEN] = 0x60;
        assert_eq!(check_payload(&v6), Err(PacketError::NotIpv4));
        let mut long = p.clone();
        long[VNET_HDR_LEN + 3] = 200; // total length beyond the buffer
        assert_eq!(check_payload(&long), Err(PacketError::NotIpv4));
        let mut tcp_gso_on_udp = p.clone();
        tcp_gso_on_udp[1] = GSO_TCPV4;
        tcp_gso_on_udp[4] = 100;
        assert_eq!(check_payload(&tcp_gso_on_udp), Err(PacketError::BadOffload));
        let mut v6gso = p.clone();
        v6gso[1] = 4;
        assert_eq!(check_payload(&v6gso), Err(PacketError::BadOffload));
        let mut csum = p;
        csum[0] = 1;
        csum[6] = 200;
        assert_eq!(check_payload(&csum), Err(PacketError::BadOffload));
        assert_eq!(check_payload(&[0; 5]), Err(PacketError::NotIpv4));
    }

    proptest! {
        #[test]
        fn frames_round_trip(bodies in proptest::collection::vec(0usize..3000, 1..8), cut in 0usize..20000) {
            let mut stream = Vec::new();
            let packets: Vec<Vec<u8>> =
                bodies.iter().map(|b| packet([10, 0, 0, 1], [10, 0, 0, 2], *b)).collect();
            for p in &packets {
                encode_frame(p, &mut stream).unwrap();
            }
            let mut rest = &stream[..];
            let mut got = Vec::new();
            while let Some((payload, used)) = decode_frame(rest).unwrap() {
                got.push(payload.to_vec());
                rest = &rest[used..];
            }
            prop_assert!(rest.is_empty());
            prop_assert_eq!(&got, &packets);
            // any truncation yields only complete frames, never an error or a panic
            let cut = cut.min(stream.len());
            let mut rest = &stream[..cut];
            let mut n = 0;
            while let Some((_, used)) = decode_frame(rest).unwrap() {
                rest = &rest[used..];
                n += 1;
            }
            prop_assert!(n <= packets.len());
            prop_assert!(rest.len() < stream.len() || cut == 0 || n == 0);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame(&bytes);
            let _ = check_payload(&bytes);
        }
    }
}
