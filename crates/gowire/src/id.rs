//! `crypto.ID` (`lib/crypto/id.go`, `lib/crypto/key.go`): the libp2p protobuf encoding of a
//! public key (`08 <type> 12 <len> <key>`; type 1 Ed25519 with 32 bytes, type 2 secp256k1
//! with 33 compressed bytes), written in JSON as `{"pub": base32}` with RFC 4648's alphabet
//! and padding. NuNet's actors may only use those two key types (`AllowedKey`).

use data_encoding::BASE32;
use nunet_did::{Did, PublicKey, SecpPublicKey};

use crate::GoWireError;

const ED25519: u8 = 1;
const SECP256K1: u8 = 2;

/// The protobuf key id of an ed25519 key.
pub fn key_id(key: &PublicKey) -> Vec<u8> {
    let mut out = vec![0x08, ED25519, 0x12, 32];
    out.extend_from_slice(&key.to_bytes());
    out
}

/// The id as it appears in JSON.
pub fn key_id_b32(id: &[u8]) -> String {
    BASE32.encode(id)
}

/// Decodes `{"pub": …}`'s string (strict: upper case, padded, as Go writes it).
pub(crate) fn decode_b32(s: &str) -> Result<Vec<u8>, GoWireError> {
    BASE32
        .decode(s.as_bytes())
        .map_err(|e| GoWireError::BadKeyId(format!("not padded RFC 4648 base32: {e}")))
}

/// The `did:key` of a protobuf key id.
pub fn did_of_key_id(id: &[u8]) -> Result<Did, GoWireError> {
    let bad = |why: &str| GoWireError::BadKeyId(why.to_string());
    match id {
        [0x08, t, 0x12, len, key @ ..] if usize::from(*len) == key.len() => match *t {
            ED25519 if key.len() == 32 => PublicKey::from_bytes(key)
                .map(|k| Did::from_public_key(&k))
                .map_err(|e| bad(&e.to_string())),
            SECP256K1 if key.len() == 33 => SecpPublicKey::from_compressed(key)
                .map(|k| Did::from_secp256k1(&k))
                .map_err(|e| bad(&e.to_string())),
            ED25519 | SECP256K1 => Err(bad("key of the wrong length for its type")),
            _ => Err(bad(
                "key type other than Ed25519 (1) or secp256k1 (2), which NuNet's actors refuse",
            )),
        },
        [] => Err(bad("empty key id")),
        _ => Err(bad("not a libp2p protobuf public key")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nunet_did::Keypair;

    #[test]
    fn ed25519_ids_are_64_characters_starting_baarei() {
        // id.go: base32 of 08 01 12 20 ‖ key: 36 bytes → 64 characters with padding.
        let k = Keypair::from_seed(&[7; 32]).public();
        let s = key_id_b32(&key_id(&k));
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("BAAREI") && s.ends_with("======"), "{s}");
        let back = did_of_key_id(&decode_b32(&s).unwrap()).unwrap();
        assert_eq!(back, k.did());
    }

    #[test]
    fn bad_ids_are_named() {
        for (id, why) in [
            (vec![], "empty"),
            (vec![0x08, 0x00, 0x12, 0x01, 0], "key type"),
            (vec![0x08, 0x01, 0x12, 0x02, 1, 2], "wrong length"),
            (vec![1, 2, 3], "protobuf"),
        ] {
            let e = did_of_key_id(&id).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        assert!(decode_b32("baarei").is_err());
    }
}
