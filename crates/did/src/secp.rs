//! ECDSA over secp256k1, in the two ways NuNet's DIDs use it:
//!
//! - **libp2p secp256k1 keys** (`did:key` multicodec `0xe7`): the signature is DER over the
//!   SHA-256 of the data.
//! - **Ethereum keys** (multicodec `0xef01`, what a Ledger wallet holds): the signature is DER
//!   over EIP-191 `personal_sign`'s hash, keccak-256 of `"\x19Ethereum Signed Message:\n"`, the
//!   decimal length and the data. There is no recovery id: the key comes from the DID.
//!
//! Signatures are parsed as strict DER (minimal integers, exact length); a 64-byte compact or a
//! 65-byte `r‖s‖v` signature is refused, as NuNet refuses them. A high-S signature is accepted,
//! as NuNet's verifier accepts it; signatures made here are always low-S.

use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use k256::ecdsa::{Signature as EcdsaSignature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use sha3::Keccak256;

use crate::KeyError;

/// Length of a compressed SEC1 public key, the form NuNet puts in its DIDs.
pub const COMPRESSED_LEN: usize = 33;

/// The prefix EIP-191 puts before a personal message.
const ETH_SIGN_MAGIC: &[u8] = b"\x19Ethereum Signed Message:\n";

/// A secp256k1 public key (the curve point; which hash it verifies with is the DID's kind).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecpPublicKey(VerifyingKey);

impl SecpPublicKey {
    /// Parses a compressed SEC1 key (33 bytes, `02`/`03` then x).
    pub fn from_compressed(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != COMPRESSED_LEN {
            return Err(KeyError::InvalidSecp256k1Key(bytes.len()));
        }
        VerifyingKey::from_sec1_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidSecp256k1Key(bytes.len()))
    }

    /// The 33-byte compressed form.
    pub fn to_compressed(&self) -> [u8; COMPRESSED_LEN] {
        let point = self.0.to_encoded_point(true);
        let mut out = [0u8; COMPRESSED_LEN];
        // A compressed point of a valid key is always 33 bytes.
        out.copy_from_slice(point.as_bytes());
        out
    }

    /// Verifies a libp2p secp256k1 signature: DER over SHA-256(`msg`).
    pub fn verify_sha256(&self, msg: &[u8], der: &[u8]) -> Result<(), KeyError> {
        self.verify_prehash(&Sha256::digest(msg), der)
    }

    /// Verifies an Ethereum `personal_sign` signature in DER (see [`eth_message_hash`]).
    pub fn verify_eth(&self, msg: &[u8], der: &[u8]) -> Result<(), KeyError> {
        self.verify_prehash(&eth_message_hash(msg), der)
    }

    fn verify_prehash(&self, hash: &[u8], der: &[u8]) -> Result<(), KeyError> {
        let sig = parse_der(der)?;
        // k256 refuses high-S; NuNet's verifier (decred) accepts it, and (r, n-s) verifies
        // exactly when (r, s) does.
        let sig = sig.normalize_s().unwrap_or(sig);
        self.0
            .verify_prehash(hash, &sig)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl std::fmt::Debug for SecpPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecpPublicKey({})", hex::encode(self.to_compressed()))
    }
}

/// EIP-191 `personal_sign` hash of `msg`: keccak-256 of the magic prefix, the decimal length
/// of `msg` and `msg` itself.
pub fn eth_message_hash(msg: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(ETH_SIGN_MAGIC);
    h.update(msg.len().to_string().as_bytes());
    h.update(msg);
    h.finalize().into()
}

/// The low-S form of a DER signature, when `der` is a valid signature in its high-S form
/// (`None` when it is already low-S or not a signature). Both forms verify, so anything that
/// names a signed object by its signature (token ids) must use one of them.
pub fn low_s_twin(der: &[u8]) -> Option<Vec<u8>> {
    let sig = parse_der(der).ok()?;
    sig.normalize_s()
        .map(|low| low.to_der().as_bytes().to_vec())
}

/// Strict DER: `from_der` checks minimal integers and the exact length; the length bound keeps
/// garbage from the wire cheap to refuse.
fn parse_der(der: &[u8]) -> Result<EcdsaSignature, KeyError> {
    if !(8..=72).contains(&der.len()) || der[0] != 0x30 {
        return Err(KeyError::NotDerSignature(der.len()));
    }
    EcdsaSignature::from_der(der).map_err(|_| KeyError::NotDerSignature(der.len()))
}

/// A secp256k1 key pair held in software. It signs as a libp2p secp256k1 key or as an Ethereum
/// wallet does; the test signer of the external signer interface is built on it. The secret is
/// wiped on drop.
#[derive(Clone)]
pub struct SecpKeypair(SigningKey);

impl SecpKeypair {
    /// A fresh key from the operating system's RNG.
    pub fn generate() -> Self {
        Self(SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// The key of a 32-byte secret scalar (refused when zero or not below the group order).
    pub fn from_secret(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        SigningKey::from_bytes(bytes.into())
            .map(Self)
            .map_err(|_| KeyError::InvalidSecp256k1Secret)
    }

    /// The public half.
    pub fn public(&self) -> SecpPublicKey {
        SecpPublicKey(*self.0.verifying_key())
    }

    /// A libp2p secp256k1 signature (DER over SHA-256, low-S).
    pub fn sign_sha256(&self, msg: &[u8]) -> Vec<u8> {
        self.sign_prehash(&Sha256::digest(msg))
    }

    /// An Ethereum `personal_sign` signature as NuNet carries it (DER, low-S, no recovery id).
    pub fn sign_eth(&self, msg: &[u8]) -> Vec<u8> {
        self.sign_prehash(&eth_message_hash(msg))
    }

    fn sign_prehash(&self, hash: &[u8]) -> Vec<u8> {
        // A 32-byte prehash always signs: the only failure is a hash shorter than half the
        // field size.
        let sig: EcdsaSignature = match self.0.sign_prehash(hash) {
            Ok(s) => s,
            Err(_) => unreachable!("32-byte prehash"),
        };
        let sig = sig.normalize_s().unwrap_or(sig);
        sig.to_der().as_bytes().to_vec()
    }
}

impl std::fmt::Debug for SecpKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecpKeypair({:?})", self.public())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn personal_sign_hash_matches_published_vector() {
        // ethers.js `hashMessage("Hello World")`, as given in its documentation.
        assert_eq!(
            hex::encode(eth_message_hash(b"Hello World")),
            "a1de988600a42c4b4ab089b619297c17d53cffae5d5120d82d8a92d0bb3b78f2"
        );
    }

    #[test]
    fn signatures_verify_only_with_their_hash_and_message() {
        let k = SecpKeypair::from_secret(&[7; 32]).unwrap();
        let p = k.public();
        let s = k.sign_sha256(b"hello");
        let e = k.sign_eth(b"hello");
        p.verify_sha256(b"hello", &s).unwrap();
        p.verify_eth(b"hello", &e).unwrap();
        assert_eq!(p.verify_eth(b"hello", &s), Err(KeyError::BadSignature));
        assert_eq!(p.verify_sha256(b"hello", &e), Err(KeyError::BadSignature));
        assert_eq!(p.verify_sha256(b"hellO", &s), Err(KeyError::BadSignature));
        let other = SecpKeypair::from_secret(&[8; 32]).unwrap().public();
        assert_eq!(
            other.verify_sha256(b"hello", &s),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn high_s_is_accepted_and_non_der_forms_are_refused() {
        let k = SecpKeypair::from_secret(&[9; 32]).unwrap();
        let der = k.sign_sha256(b"m");
        let sig = EcdsaSignature::from_der(&der).unwrap();
        // (r, n - s): the high-S twin of a low-S signature.
        let high = EcdsaSignature::from_scalars(sig.r(), -*sig.s()).unwrap();
        assert!(high.normalize_s().is_some(), "the twin is high-S");
        k.public()
            .verify_sha256(b"m", high.to_der().as_bytes())
            .unwrap();
        // Compact r‖s and r‖s‖v are not DER.
        let compact = sig.to_bytes();
        assert_eq!(
            k.public().verify_sha256(b"m", &compact),
            Err(KeyError::NotDerSignature(64))
        );
        let mut rsv = compact.to_vec();
        rsv.push(27);
        assert!(k.public().verify_sha256(b"m", &rsv).is_err());
        // Trailing bytes and a non-minimal integer break strict DER.
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(k.public().verify_sha256(b"m", &trailing).is_err());
        // One more leading zero before r is never minimal, whatever r's first byte.
        let mut padded = vec![0x30, der[1] + 1, 0x02, der[3] + 1, 0x00];
        padded.extend_from_slice(&der[4..]);
        assert_eq!(
            k.public().verify_sha256(b"m", &padded),
            Err(KeyError::NotDerSignature(padded.len()))
        );
    }

    #[test]
    fn keys_are_checked() {
        assert!(SecpKeypair::from_secret(&[0; 32]).is_err());
        assert!(SecpKeypair::from_secret(&[0xff; 32]).is_err());
        assert_eq!(
            SecpPublicKey::from_compressed(&[4; 65]),
            Err(KeyError::InvalidSecp256k1Key(65))
        );
        assert_eq!(
            SecpPublicKey::from_compressed(&[5; 33]),
            Err(KeyError::InvalidSecp256k1Key(33))
        );
        let k = SecpKeypair::generate();
        let c = k.public().to_compressed();
        assert_eq!(SecpPublicKey::from_compressed(&c).unwrap(), k.public());
    }
}
