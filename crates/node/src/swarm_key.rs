//! `p2p.swarm_key`: the pre-shared key of a private swarm, as 64 hex characters or a path to
//! a `swarm.key` file.
//!
//! A file is read as libp2p's v1 format (go-libp2p `core/pnet/codec.go`, `DecodeV1PSK`):
//! `/key/swarm/psk/1.0.0/`, then `/base16/`, `/base64/` or `/bin/`, then the key; the first
//! 32 decoded bytes are the key and the rest is ignored, as go-libp2p does. NuNet's generator
//! (`network/libp2p/pnet.go`) writes base64 of a marshalled secp256k1 private key (36 bytes),
//! so its PSK is that encoding's first 32 bytes. A file without the header is read as one
//! line of 64 hex characters, as before.

const HEADER: &str = "/key/swarm/psk/1.0.0/";

/// The key, or `None` when unset.
pub fn parse(v: &str) -> Result<Option<[u8; 32]>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex_key(v).map(Some);
    }
    let bytes = std::fs::read(v).map_err(|e| format!("p2p.swarm_key file {v}: {e}"))?;
    decode_file(&bytes)
        .map(Some)
        .map_err(|e| format!("p2p.swarm_key file {v}: {e}"))
}

fn hex_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text).map_err(|e| format!("p2p.swarm_key: not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "p2p.swarm_key must be 32 bytes (64 hex characters)".to_string())
}

/// One line of the file, without its `\n` or `\r\n`, and the rest.
fn line(b: &[u8]) -> (&[u8], &[u8]) {
    let (l, rest) = match b.iter().position(|&c| c == b'\n') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[][..]),
    };
    (l.strip_suffix(b"\r").unwrap_or(l), rest)
}

/// Decodes a `swarm.key` file's bytes.
pub fn decode_file(bytes: &[u8]) -> Result<[u8; 32], String> {
    let (first, rest) = line(bytes);
    if first != HEADER.as_bytes() {
        // No header: one line of hex (the format this node wrote before).
        let text = String::from_utf8_lossy(bytes);
        let last = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or_default();
        return hex_key(last);
    }
    let (encoding, data) = line(rest);
    let key: Vec<u8> = match encoding {
        b"/bin/" => data.to_vec(),
        b"/base16/" => {
            let text: String = String::from_utf8_lossy(data)
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            hex::decode(text).map_err(|e| format!("/base16/ key: {e}"))?
        }
        b"/base64/" => {
            use base64::Engine;
            // go-libp2p streams the decoder (line ends skipped) and reads 32 bytes: the first
            // 44 characters hold them, and nothing after them is read.
            let text: String = String::from_utf8_lossy(data)
                .chars()
                .filter(|c| *c != '\r' && *c != '\n')
                .take(44)
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(text.trim_end())
                .map_err(|e| format!("/base64/ key: {e}"))?
        }
        other => {
            return Err(format!(
                "unknown encoding line {:?} (give /base16/, /base64/ or /bin/)",
                String::from_utf8_lossy(other)
            ));
        }
    };
    key.get(..32)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| format!("the key has {} bytes; at least 32 are needed", key.len()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nunets_generated_key_is_the_first_32_bytes_of_its_base64() {
        // pnet.go: base64 of a marshalled secp256k1 private key, 08 02 12 20 ‖ 32 bytes.
        let mut pb = vec![0x08, 0x02, 0x12, 0x20];
        pb.extend((0u8..32).map(|i| i.wrapping_mul(7)));
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pb);
        let file = format!("/key/swarm/psk/1.0.0/\n/base64/\n{b64}\n");
        let key = decode_file(file.as_bytes()).unwrap();
        assert_eq!(key[..], pb[..32]);
        // Windows line ends, as go-libp2p trims them.
        let crlf = file.replace('\n', "\r\n");
        assert_eq!(decode_file(crlf.as_bytes()).unwrap(), key);
        // Nothing after the 32nd byte is read, as in go-libp2p.
        let trailing = format!("{file}# a comment after the key\n");
        assert_eq!(decode_file(trailing.as_bytes()).unwrap(), key);
    }

    #[test]
    fn base16_bin_and_bare_hex() {
        let hex64 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let want = <[u8; 32]>::try_from(hex::decode(hex64).unwrap()).unwrap();
        let go_ipfs = format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex64}\n");
        assert_eq!(decode_file(go_ipfs.as_bytes()).unwrap(), want);
        let mut bin = b"/key/swarm/psk/1.0.0/\n/bin/\n".to_vec();
        bin.extend_from_slice(&want);
        bin.extend_from_slice(b"trailing bytes are ignored");
        assert_eq!(decode_file(&bin).unwrap(), want);
        assert_eq!(decode_file(format!("{hex64}\n").as_bytes()).unwrap(), want);
        assert_eq!(parse(hex64).unwrap(), Some(want));
        assert_eq!(parse("  ").unwrap(), None);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (file, why) in [
            (
                &b"/key/swarm/psk/1.0.0/\n/base32/\nAAAA\n"[..],
                "unknown encoding",
            ),
            (b"/key/swarm/psk/1.0.0/\n/base64/\nAAAA\n", "3 bytes"),
            (b"/key/swarm/psk/1.0.0/\n/base16/\nzz\n", "base16"),
            (b"/key/swarm/psk/1.0.0/\n/base64/\n%%%%\n", "base64"),
            (b"abcd\n", "32 bytes"),
        ] {
            let e = decode_file(file).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        assert!(
            parse("/nonexistent/swarm.key")
                .unwrap_err()
                .contains("/nonexistent")
        );
    }
}
