use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::Did;

/// Errors about keys and signatures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The bytes are not a valid ed25519 public key.
    #[error("invalid ed25519 public key")]
    InvalidPublicKey,
    /// A signature had the wrong length.
    #[error("invalid signature length {0} (expected 64 bytes)")]
    InvalidSignatureLength(usize),
    /// The signature does not verify for this key and message.
    #[error("signature does not verify")]
    BadSignature,
    /// A libp2p peer id that does not embed an ed25519 public key.
    #[error("peer id {0} does not embed an ed25519 public key")]
    PeerIdNotEd25519(String),
    /// Not a compressed secp256k1 point (33 bytes, on the curve).
    #[error("invalid secp256k1 public key ({0} bytes; a compressed key is 33)")]
    InvalidSecp256k1Key(usize),
    /// A secp256k1 secret of zero or not below the group order.
    #[error("invalid secp256k1 secret key")]
    InvalidSecp256k1Secret,
    /// An ECDSA signature that is not strict DER (compact `r‖s` and `r‖s‖v` forms included).
    #[error("ECDSA signature of {0} bytes is not strict DER")]
    NotDerSignature(usize),
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// Parses a signature from a byte slice of length 64.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 64] = bytes
            .try_into()
            .map_err(|_| KeyError::InvalidSignatureLength(bytes.len()))?;
        Ok(Self(arr))
    }
    /// The raw signature bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

/// An ed25519 public key: the identity behind a DID and a peer id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 32 raw public key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidPublicKey)?;
        VerifyingKey::from_bytes(&arr)
            .map(Self)
            .map_err(|_| KeyError::InvalidPublicKey)
    }
    /// The 32 raw public key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    /// Verifies `sig` over `msg` (strict: rejects malleable and small-order forms).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| KeyError::BadSignature)
    }
    /// The DID of this key.
    pub fn did(&self) -> Did {
        Did::from_public_key(self)
    }
    /// The libp2p peer id of this key.
    pub fn peer_id(&self) -> PeerId {
        self.to_libp2p().to_peer_id()
    }
    /// The libp2p form of this public key.
    pub fn to_libp2p(&self) -> libp2p_identity::PublicKey {
        // 32 valid bytes from a VerifyingKey always decode.
        match libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.to_bytes()) {
            Ok(k) => k.into(),
            Err(_) => unreachable!("a verifying key is always a valid libp2p ed25519 key"),
        }
    }
    /// Recovers the public key embedded in a peer id (ed25519 peer ids inline their key).
    pub fn from_peer_id(peer: &PeerId) -> Result<Self, KeyError> {
        let not_ed = || KeyError::PeerIdNotEd25519(peer.to_base58());
        let mh = peer.as_ref();
        // Identity multihash (code 0x00) carries the protobuf-encoded public key.
        if mh.code() != 0 {
            return Err(not_ed());
        }
        let pk =
            libp2p_identity::PublicKey::try_decode_protobuf(mh.digest()).map_err(|_| not_ed())?;
        let ed = pk.try_into_ed25519().map_err(|_| not_ed())?;
        Self::from_bytes(&ed.to_bytes())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.did())
    }
}

/// An ed25519 key pair. The secret half is wiped from memory on drop.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// Generates a fresh key pair from the operating system's RNG.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }
    /// Builds the key pair of a 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }
    /// The 32-byte secret seed (wiped when the returned value drops).
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }
    /// A key derived from this one for `label` (a child actor's inbox): the same secret and
    /// label always give the same key, and nothing about this key or other labels' keys can
    /// be learnt from it. Lets a node re-create its child actors' keys after a restart
    /// without storing them.
    pub fn derive(&self, label: &str) -> Keypair {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"nunet/derived-actor-key/v1\0");
        h.update(self.0.to_bytes());
        h.update((label.len() as u64).to_be_bytes());
        h.update(label.as_bytes());
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&h.finalize());
        Self::from_seed(&seed)
    }
    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
    /// The DID of this key pair.
    pub fn did(&self) -> Did {
        self.public().did()
    }
    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }
    /// The same key as a libp2p identity (used by the network host).
    pub fn to_libp2p(&self) -> libp2p_identity::Keypair {
        let mut seed = self.0.to_bytes();
        match libp2p_identity::Keypair::ed25519_from_bytes(&mut seed) {
            Ok(k) => k,
            Err(_) => unreachable!("32 bytes are always a valid ed25519 seed"),
        }
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.did())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn derived_keys_are_stable_per_label_and_differ_across_labels_and_parents() {
        let a = Keypair::from_seed(&[7; 32]);
        let b = Keypair::from_seed(&[8; 32]);
        assert_eq!(a.derive("x").did(), a.derive("x").did());
        assert_ne!(a.derive("x").did(), a.derive("y").did());
        assert_ne!(a.derive("x").did(), b.derive("x").did());
        assert_ne!(a.derive("x").did(), a.did());
    }

    #[test]
    fn sign_verify_and_tamper() {
        let k = Keypair::from_seed(&[7; 32]);
        let sig = k.sign(b"hello");
        k.public().verify(b"hello", &sig).unwrap();
        assert_eq!(
            k.public().verify(b"hellO", &sig),
            Err(KeyError::BadSignature)
        );
        let mut bad = sig;
        bad.0[10] ^= 1;
        assert_eq!(
            k.public().verify(b"hello", &bad),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn libp2p_key_is_the_same_key() {
        let k = Keypair::generate();
        let lk = k.to_libp2p();
        assert_eq!(lk.public().to_peer_id(), k.public().peer_id());
        let sig = lk.sign(b"m").unwrap();
        k.public()
            .verify(b"m", &Signature::from_slice(&sig).unwrap())
            .unwrap();
    }

    #[test]
    fn peer_id_round_trip() {
        let k = Keypair::generate();
        let pid = k.public().peer_id();
        assert!(pid.to_base58().starts_with("12D3KooW"));
        assert_eq!(PublicKey::from_peer_id(&pid).unwrap(), k.public());
        // A peer id hashed with sha256 (non-ed25519 style) is rejected, not panicking.
        let random = PeerId::random();
        assert!(PublicKey::from_peer_id(&random).is_err());
    }
}
