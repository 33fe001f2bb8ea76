use std::fmt;
use std::str::FromStr;

use libp2p_identity::PeerId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secp::SecpPublicKey;
use crate::{KeyError, PublicKey};

const PREFIX: &str = "did:key:";

/// Multicodec of an ed25519 public key (`ed 01` as an unsigned varint).
const ED25519: u64 = 0xed;
/// Multicodec of a secp256k1 public key (`e7 01`).
const SECP256K1: u64 = 0xe7;
/// NuNet's multicodec for an Ethereum key held by a Ledger wallet (`81 de 03`).
const ETH: u64 = 0xef01;
/// NuNet's multicodec for a Cardano (Eternl wallet) key (`82 de 03`), recognised to name it.
const CARDANO: u64 = 0xef02;

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
    /// A key type this node cannot verify.
    #[error(
        "did:key multicodec {0} is not supported (ed25519 0xed, secp256k1 0xe7 and NuNet's Ethereum/Ledger 0xef01 are)"
    )]
    UnsupportedKeyType(String),
    /// A key type NuNet knows that this node does not verify yet.
    #[error("did:key names a {0} key, which this node cannot verify yet")]
    KnownButUnsupported(&'static str),
    /// The key bytes are of the wrong length or not a valid curve point.
    #[error("did:key carries an invalid {kind} public key ({len} bytes)")]
    InvalidKey {
        /// The key type the multicodec named.
        kind: KeyKind,
        /// Length of the key bytes after the multicodec.
        len: usize,
    },
    /// A peer id that does not embed an ed25519 key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Longer than any did:key this implementation accepts (checked before decoding:
    /// base58 decoding is quadratic in the input).
    #[error("DID is {0} bytes long; a did:key is at most {MAX_DID_LEN}")]
    TooLong(usize),
    /// A DID of a key type this node does not talk to as a peer (its nodes and actors are
    /// ed25519; NuNet's Ethereum and Cardano keys are never peers anywhere).
    #[error(
        "{did} holds a {kind} key: it can sign capability tokens, but this node only talks to ed25519 peers"
    )]
    NoPeer {
        /// The DID.
        did: String,
        /// Its key type.
        kind: KeyKind,
    },
}

/// Longest DID text accepted. An ed25519 did:key is 56 bytes, a secp256k1 or Ethereum one 57
/// or 58; the margin leaves room for nothing an attacker can use: base58 decoding costs grow
/// with the square of the length.
pub const MAX_DID_LEN: usize = 128;

/// The key type a DID names, which decides how its signatures are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// ed25519 (multicodec `0xed`): nodes, actors and this project's users.
    Ed25519,
    /// secp256k1 as libp2p signs with it (multicodec `0xe7`): DER over SHA-256.
    Secp256k1,
    /// An Ethereum key, as a Ledger wallet signs (NuNet's multicodec `0xef01`): DER over
    /// EIP-191 `personal_sign`.
    Eth,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Ed25519 => "ed25519",
            KeyKind::Secp256k1 => "secp256k1",
            KeyKind::Eth => "Ethereum (Ledger)",
        })
    }
}

/// A `did:key` identifier: an ed25519 key (every node and actor), or a secp256k1 or Ethereum
/// key (NuNet users and organisations, Ledger wallets) that signs capability tokens.
///
/// ```
/// use nunet_did::{Did, Keypair};
/// let key = Keypair::from_seed(&[1; 32]);
/// let did = key.did();
/// assert!(did.to_string().starts_with("did:key:z6Mk"));
/// assert_eq!(did.to_string().parse::<Did>().unwrap(), did);
/// assert_eq!(Did::from_peer_id(&did.peer_id().unwrap()).unwrap(), did);
/// ```
#[derive(Clone)]
pub struct Did(std::sync::Arc<DidInner>);

struct DidInner {
    uri: String,
    /// Decoded once at parse time, so verifying against a DID costs no point decompression.
    key: DidKey,
    /// The libp2p peer id (ed25519 only), computed on first use.
    peer: std::sync::OnceLock<PeerId>,
}

#[derive(Clone, Copy)]
enum DidKey {
    Ed25519(PublicKey),
    Secp256k1(SecpPublicKey),
    Eth(SecpPublicKey),
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

/// Appends `v` as an unsigned LEB128 varint (multicodec's encoding).
fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a multicodec varint of at most 3 bytes (every code used here fits).
fn take_uvarint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(3) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

impl Did {
    fn from_key(key: DidKey) -> Self {
        let (code, raw): (u64, Vec<u8>) = match &key {
            DidKey::Ed25519(k) => (ED25519, k.to_bytes().to_vec()),
            DidKey::Secp256k1(k) => (SECP256K1, k.to_compressed().to_vec()),
            DidKey::Eth(k) => (ETH, k.to_compressed().to_vec()),
        };
        let mut bytes = Vec::with_capacity(3 + raw.len());
        put_uvarint(&mut bytes, code);
        bytes.extend_from_slice(&raw);
        Self(std::sync::Arc::new(DidInner {
            uri: format!("{PREFIX}z{}", bs58::encode(bytes).into_string()),
            key,
            peer: std::sync::OnceLock::new(),
        }))
    }

    /// The DID of an ed25519 public key.
    pub fn from_public_key(key: &PublicKey) -> Self {
        Self::from_key(DidKey::Ed25519(*key))
    }

    /// The DID of a libp2p secp256k1 key (`did:key:zQ3s…`).
    pub fn from_secp256k1(key: &SecpPublicKey) -> Self {
        Self::from_key(DidKey::Secp256k1(*key))
    }

    /// The DID NuNet gives an Ethereum (Ledger) key (`did:key:zzCH…`).
    pub fn from_eth(key: &SecpPublicKey) -> Self {
        Self::from_key(DidKey::Eth(*key))
    }

    /// Parses `did:key:z…` (ed25519, secp256k1 or NuNet's Ethereum keys). Recently parsed
    /// DIDs are remembered, so the base58 decoding and curve point decompression are paid once
    /// per peer, not per message.
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
        let unsupported = || {
            let code = bytes.iter().take(3).map(|b| format!("{b:02x}"));
            DidError::UnsupportedKeyType(format!("0x{}", code.collect::<String>()))
        };
        let (code, raw) = take_uvarint(&bytes).ok_or_else(unsupported)?;
        let secp = |kind| {
            SecpPublicKey::from_compressed(raw).map_err(|_| DidError::InvalidKey {
                kind,
                len: raw.len(),
            })
        };
        let key =
            match code {
                ED25519 => DidKey::Ed25519(PublicKey::from_bytes(raw).map_err(|_| {
                    DidError::InvalidKey {
                        kind: KeyKind::Ed25519,
                        len: raw.len(),
                    }
                })?),
                SECP256K1 => DidKey::Secp256k1(secp(KeyKind::Secp256k1)?),
                ETH => DidKey::Eth(secp(KeyKind::Eth)?),
                CARDANO => return Err(DidError::KnownButUnsupported("Cardano (Eternl wallet)")),
                _ => return Err(unsupported()),
            };
        let did = Self::from_key(key);
        // Reject non-canonical spellings (leading zero padding, an overlong varint, an
        // uncompressed point) so a DID has one string form.
        if did.0.uri != s {
            return Err(DidError::Base58("non-canonical encoding".into()));
        }
        Ok(did)
    }

    /// The key type this DID names.
    pub fn kind(&self) -> KeyKind {
        match self.0.key {
            DidKey::Ed25519(_) => KeyKind::Ed25519,
            DidKey::Secp256k1(_) => KeyKind::Secp256k1,
            DidKey::Eth(_) => KeyKind::Eth,
        }
    }

    /// The ed25519 public key this DID names, or `None` for other key types.
    pub fn ed25519(&self) -> Option<PublicKey> {
        match self.0.key {
            DidKey::Ed25519(k) => Some(k),
            _ => None,
        }
    }

    /// Checks `sig` over `msg` the way this DID's key type signs: a 64-byte ed25519 signature,
    /// or a DER ECDSA signature over SHA-256 (secp256k1) or EIP-191 (Ethereum).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        match &self.0.key {
            DidKey::Ed25519(k) => k.verify(msg, &crate::Signature::from_slice(sig)?),
            DidKey::Secp256k1(k) => k.verify_sha256(msg, sig),
            DidKey::Eth(k) => k.verify_eth(msg, sig),
        }
    }

    /// `sig` in the one form that names it: ECDSA signatures (secp256k1, Ethereum) are
    /// accepted high-S too, as NuNet accepts them, so anything that identifies a signed object
    /// by its signature (a token id, a revocation by id) uses the low-S form. Other signatures,
    /// and bytes that are not a signature, are returned as they are.
    pub fn canonical_signature<'a>(&self, sig: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self.0.key {
            DidKey::Secp256k1(_) | DidKey::Eth(_) => match crate::secp::low_s_twin(sig) {
                Some(low) => std::borrow::Cow::Owned(low),
                None => std::borrow::Cow::Borrowed(sig),
            },
            DidKey::Ed25519(_) => std::borrow::Cow::Borrowed(sig),
        }
    }

    /// The libp2p peer id of the same key. This node talks to ed25519 peers only (a NuNet node
    /// with a secp256k1 host key is not reachable from here), so other key types give
    /// [`DidError::NoPeer`].
    pub fn peer_id(&self) -> Result<PeerId, DidError> {
        match self.0.key {
            DidKey::Ed25519(k) => Ok(*self.0.peer.get_or_init(|| k.peer_id())),
            _ => Err(DidError::NoPeer {
                did: self.0.uri.clone(),
                kind: self.kind(),
            }),
        }
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
            assert_eq!(parsed.ed25519().unwrap().to_bytes().to_vec(), pk);
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
        // An unknown multicodec is named; a secp256k1 DID whose bytes are no curve point is
        // refused as such, not mis-parsed.
        let coded = |code: &[u8], key: &[u8]| {
            format!(
                "did:key:z{}",
                bs58::encode([code, key].concat()).into_string()
            )
        };
        assert!(
            matches!(Did::parse(&coded(&[0x12, 0x00], &[1; 32])), Err(DidError::UnsupportedKeyType(c)) if c == "0x120001")
        );
        assert!(matches!(
            Did::parse(&coded(&[0xe7, 0x01], &[5; 33])),
            Err(DidError::InvalidKey {
                kind: KeyKind::Secp256k1,
                len: 33
            })
        ));
        assert!(matches!(
            Did::parse(&coded(&[0x82, 0xde, 0x03], &[1; 32])),
            Err(DidError::KnownButUnsupported(_))
        ));
        // An uncompressed point is a second spelling of the same key: refused.
        let k = crate::SecpKeypair::from_secret(&[3; 32]).unwrap();
        let p = k256::ecdsa::VerifyingKey::from_sec1_bytes(&k.public().to_compressed()).unwrap();
        let long = p.to_encoded_point(false);
        assert!(matches!(
            Did::parse(&coded(&[0xe7, 0x01], long.as_bytes())),
            Err(DidError::InvalidKey {
                kind: KeyKind::Secp256k1,
                len: 65
            })
        ));
        // An overlong varint (0xed as `ed 81 00`) is a second spelling too.
        let key = Keypair::from_seed(&[1; 32]).public().to_bytes();
        let padded = coded(&[0xed, 0x81, 0x00], &key);
        assert!(matches!(Did::parse(&padded), Err(DidError::Base58(_))));
        assert!(Did::parse(&coded(&[0xed, 0x01], &key)).is_ok());
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

    #[test]
    fn nunet_public_did_is_an_ethereum_key() {
        // The DID NuNet's README asks users to grant /public and /broadcast to.
        let d = Did::parse("did:key:zzCHUybNYmK8QsttZwXqUX8aDLoBGHnMCakDX2RpsGwmXmYHEW").unwrap();
        assert_eq!(d.kind(), KeyKind::Eth);
        // Its key, decoded independently (Python base58): 81 de 03 ‖ compressed point.
        let expected =
            hex::decode("02f42bec4eee1e73912f9d4c88c3d89abdc6c7d3993c5493ed40b2705bcecd20a7")
                .unwrap();
        let key = crate::SecpPublicKey::from_compressed(&expected).unwrap();
        assert_eq!(Did::from_eth(&key), d);
        assert!(d.ed25519().is_none());
        assert!(matches!(
            d.peer_id(),
            Err(DidError::NoPeer {
                kind: KeyKind::Eth,
                ..
            })
        ));
    }

    #[test]
    fn secp256k1_and_eth_dids_round_trip_and_verify_their_own_signatures() {
        let k = crate::SecpKeypair::from_secret(&[11; 32]).unwrap();
        let secp = Did::from_secp256k1(&k.public());
        let eth = Did::from_eth(&k.public());
        // libp2p secp256k1 DIDs read zQ3s…; NuNet's Ethereum DIDs zzCH… (the 0x81 byte).
        assert!(secp.as_str().starts_with("did:key:zQ3s"), "{secp}");
        assert!(eth.as_str().starts_with("did:key:zzCH"), "{eth}");
        assert_eq!(Did::parse(secp.as_str()).unwrap(), secp);
        assert_eq!(Did::parse(eth.as_str()).unwrap().kind(), KeyKind::Eth);
        secp.verify(b"m", &k.sign_sha256(b"m")).unwrap();
        eth.verify(b"m", &k.sign_eth(b"m")).unwrap();
        assert!(secp.verify(b"m", &k.sign_eth(b"m")).is_err());
        assert!(eth.verify(b"m", &k.sign_sha256(b"m")).is_err());
        let ed = Keypair::from_seed(&[1; 32]);
        assert!(ed.did().verify(b"m", &ed.sign(b"m").0).is_ok());
        assert_eq!(
            ed.did().verify(b"m", &k.sign_sha256(b"m")),
            Err(KeyError::InvalidSignatureLength(k.sign_sha256(b"m").len()))
        );
    }

    proptest! {
        #[test]
        fn did_peer_id_round_trip(seed in any::<[u8; 32]>()) {
            let k = Keypair::from_seed(&seed);
            let did = k.did();
            prop_assert!(did.as_str().starts_with("did:key:z6Mk"));
            prop_assert_eq!(Did::parse(did.as_str()).unwrap(), did.clone());
            let pid = did.peer_id().unwrap();
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
