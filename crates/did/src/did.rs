use std::fmt;
use std::str::FromStr;

use libp2p_identity::PeerId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{KeyError, PublicKey};

/// Multicodec prefix of an ed25519 public key (`0xed` as an unsigned varint: `ed 01`).
const ED25519_PUB_MULTICODEC: [u8; 2] = [0xed, 0x01];
const PREFIX: &str = "did:key:";

/// Why a string is not a DID we can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DidError {
    /// Not of the form `did:key:z…`.
    #[error("{0:?} is not a did:key DID (expected \"did:key:z6Mk…\")")]
    NotDidKey(String),
    /// Only base58btc (`z`) multibase is used by did:key.
    #[error("did:key must use base58btc multibase ('z' prefix), got {0:?}")]
    UnsupportedMultibase(char),
    /// The base58 text does not decode.
    #[error("did:key value is not valid base58btc: {0}")]
    Base58(String),
    /// The key type is not ed25519.
    #[error("did:key multicodec {0} is not supported (only ed25519-pub 0xed01)")]
    UnsupportedKeyType(String),
    /// The key bytes are of the wrong length or not a valid curve point.
    #[error("did:key carries an invalid ed25519 public key ({0} bytes)")]
    InvalidKey(usize),
    /// A peer id that does not embed an ed25519 key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Longer than any did:key this implementation accepts (checked before decoding:
    /// base58 decoding is quadratic in the input).
    #[error("DID is {0} bytes long; a did:key is at most {MAX_DID_LEN}")]
    TooLong(usize),
}

/// Longest DID text accepted. An ed25519 did:key is 56 bytes; the margin leaves room for
/// nothing an attacker can use: base58 decoding costs grow with the square of the length.
pub const MAX_DID_LEN: usize = 128;

/// A `did:key` identifier of an ed25519 public key.
///
/// ```
/// use nunet_did::{Did, Keypair};
/// let key = Keypair::from_seed(&[1; 32]);
/// let did = key.did();
/// assert!(did.to_string().starts_with("did:key:z6Mk"));
/// assert_eq!(did.to_string().parse::<Did>().unwrap(), did);
/// assert_eq!(Did::from_peer_id(&did.peer_id()).unwrap(), did);
/// ```
#[derive(Clone)]
pub struct Did(std::sync::Arc<DidInner>);

struct DidInner {
    uri: String,
    /// Decoded once at parse time, so verifying against a DID costs no point decompression.
    key: PublicKey,
    /// The libp2p peer id, computed on first use.
    peer: std::sync::OnceLock<PeerId>,
}

impl PartialEq for Did {
    fn eq(&self, other: &Self) -> bool {
        self.0.uri == other.0.uri
    }
}
impl Eq for Did {}
impl std::hash::Hash for Did {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.uri.hash(state)
    }
}
impl PartialOrd for Did {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Did {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.uri.cmp(&other.0.uri)
    }
}

impl Did {
    /// The DID of a public key.
    pub fn from_public_key(key: &PublicKey) -> Self {
        let raw = key.to_bytes();
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&ED25519_PUB_MULTICODEC);
        bytes.extend_from_slice(&raw);
        Self(std::sync::Arc::new(DidInner {
            uri: format!("{PREFIX}z{}", bs58::encode(bytes).into_string()),
            key: *key,
            peer: std::sync::OnceLock::new(),
        }))
    }

    /// Parses `did:key:z…` (ed25519 only). Recently parsed DIDs are remembered, so the
    /// base58 decoding and curve point decompression are paid once per peer, not per message.
    pub fn parse(s: &str) -> Result<Self, DidError> {
        if s.len() > MAX_DID_LEN {
            return Err(DidError::TooLong(s.len()));
        }
        static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Did>>> =
            std::sync::OnceLock::new();
        let seen = SEEN.get_or_init(Default::default);
        if let Some(d) = seen.lock().ok().and_then(|m| m.get(s).cloned()) {
            return Ok(d);
        }
        let did = Self::parse_uncached(s)?;
        if let Ok(mut m) = seen.lock() {
            if m.len() >= 4096 {
                m.clear();
            }
            m.insert(s.to_string(), did.clone());
        }
        Ok(did)
    }

    fn parse_uncached(s: &str) -> Result<Self, DidError> {
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| DidError::NotDidKey(truncate(s)))?;
        let mut chars = rest.chars();
        match chars.next() {
            Some('z') => {}
            Some(c) => return Err(DidError::UnsupportedMultibase(c)),
            None => return Err(DidError::NotDidKey(truncate(s))),
        }
        let bytes = bs58::decode(chars.as_str())
            .into_vec()
            .map_err(|e| DidError::Base58(e.to_string()))?;
        if bytes.len() < 2 || bytes[..2] != ED25519_PUB_MULTICODEC {
            let code = bytes
                .iter()
                .take(2)
                .map(|b| format!("{b:02x}"))
                .collect::<String>();
            return Err(DidError::UnsupportedKeyType(format!("0x{code}")));
        }
        let key = PublicKey::from_bytes(&bytes[2..])
            .map_err(|_| DidError::InvalidKey(bytes.len() - 2))?;
        let did = Self::from_public_key(&key);
        // Reject non-canonical spellings (e.g. leading zero padding) so a DID has one string form.
        if did.0.uri != s {
            return Err(DidError::Base58("non-canonical encoding".into()));
        }
        Ok(did)
    }

    /// The public key this DID names.
    pub fn public_key(&self) -> PublicKey {
        self.0.key
    }

    /// The libp2p peer id of the same key.
    pub fn peer_id(&self) -> PeerId {
        *self.0.peer.get_or_init(|| self.0.key.peer_id())
    }

    /// The DID of the key inlined in an ed25519 peer id.
    pub fn from_peer_id(peer: &PeerId) -> Result<Self, DidError> {
        Ok(PublicKey::from_peer_id(peer)?.did())
    }

    /// The DID string.
    pub fn as_str(&self) -> &str {
        &self.0.uri
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.uri)
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.uri)
    }
}

impl FromStr for Did {
    type Err = DidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Did {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.uri)
    }
}

/// Accepts the plain string form and NuNet's `{"URI": "did:key:…"}` struct form.
impl<'de> Deserialize<'de> for Did {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Plain(String),
            Struct {
                #[serde(rename = "URI")]
                uri: String,
            },
        }
        let s = match Form::deserialize(d)? {
            Form::Plain(s) => s,
            Form::Struct { uri } => uri,
        };
        Did::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Keypair;
    use proptest::prelude::*;

    /// Vectors published with the did:key method (W3C CCG test suite): DID ↔ base58 public key.
    const VECTORS: &[(&str, &str)] = &[
        (
            "did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th",
            "8HH5gYEeNc3z7PYXmd54d4x6qAfCNrqQqEB3nS7Zfu7K",
        ),
        (
            "did:key:z6MkwJSaEMnE4u6LiqrZV1BJHSkc9x8S4mTm3ArNL1m19BZR",
            "HrBXe7XnjMbscM1roSDTSMCcLNraetDQM9wSVjnzDxn3",
        ),
    ];

    /// An 80 kB id used to cost ~20 s of CPU in base58 decoding before any authentication.
    #[test]
    fn overlong_dids_are_refused_before_decoding() {
        let long = format!("did:key:z{}", "2".repeat(80_000));
        assert!(matches!(Did::parse(&long), Err(DidError::TooLong(n)) if n == long.len()));
        let d = Keypair::from_seed(&[9; 32]).did();
        assert!(d.as_str().len() <= MAX_DID_LEN);
        assert_eq!(Did::parse(d.as_str()).unwrap(), d);
    }

    #[test]
    fn published_vectors_decode_and_encode() {
        for (did, pk58) in VECTORS {
            let pk = bs58::decode(pk58).into_vec().unwrap();
            let parsed = Did::parse(did).unwrap();
            assert_eq!(parsed.public_key().to_bytes().to_vec(), pk);
            let enc = PublicKey::from_bytes(&pk).unwrap().did();
            assert_eq!(enc.as_str(), *did);
        }
    }

    #[test]
    fn published_private_key_vector_gives_its_did() {
        // privateKeyBase58 of the second vector is seed(32) ‖ public(32).
        let sk = bs58::decode("3FFXDEFub6DPDX9CEZugQKAFikm1rfnNFwdycUGksAWhrs6BNca6USdttMcyx6oAdKmtnFBQijgisU58r26JfXJF")
            .into_vec()
            .unwrap();
        let seed: [u8; 32] = sk[..32].try_into().unwrap();
        let k = Keypair::from_seed(&seed);
        assert_eq!(k.did().as_str(), VECTORS[1].0);
        assert_eq!(k.public().to_bytes().to_vec(), sk[32..].to_vec());
    }

    #[test]
    fn rejects_bad_dids_with_reasons() {
        assert!(matches!(
            Did::parse("did:web:example.org"),
            Err(DidError::NotDidKey(_))
        ));
        assert!(matches!(
            Did::parse("did:key:"),
            Err(DidError::NotDidKey(_))
        ));
        assert!(matches!(
            Did::parse("did:key:m6Mk"),
            Err(DidError::UnsupportedMultibase('m'))
        ));
        assert!(matches!(
            Did::parse("did:key:z0OIl"),
            Err(DidError::Base58(_))
        ));
        // Too short for an ed25519 key (from the did:key test suite).
        assert!(Did::parse("did:key:zTjsVPtY").is_err());
        // secp256k1 (0xe7 0x01) is recognised as unsupported, not mis-parsed.
        let mut secp = vec![0xe7, 0x01];
        secp.extend_from_slice(&[2u8; 33]);
        let s = format!("did:key:z{}", bs58::encode(secp).into_string());
        assert!(matches!(Did::parse(&s), Err(DidError::UnsupportedKeyType(c)) if c == "0xe701"));
    }

    #[test]
    fn json_forms() {
        let d = Keypair::from_seed(&[3; 32]).did();
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Did>(&j).unwrap(), d);
        let nunet_form = format!("{{\"URI\":\"{d}\"}}");
        assert_eq!(serde_json::from_str::<Did>(&nunet_form).unwrap(), d);
        assert!(serde_json::from_str::<Did>("\"did:key:zzz\"").is_err());
    }

    proptest! {
        #[test]
        fn did_peer_id_round_trip(seed in any::<[u8; 32]>()) {
            let k = Keypair::from_seed(&seed);
            let did = k.did();
            prop_assert!(did.as_str().starts_with("did:key:z6Mk"));
            prop_assert_eq!(Did::parse(did.as_str()).unwrap(), did.clone());
            let pid = did.peer_id();
            prop_assert_eq!(pid, k.to_libp2p().public().to_peer_id());
            prop_assert_eq!(Did::from_peer_id(&pid).unwrap(), did);
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,80}") {
            let _ = Did::parse(&s);
            let _ = Did::parse(&format!("did:key:z{s}"));
        }
    }
}
