//! Envelope JSON follows NuNet: `{to, be, from, nonce, opt{exp, cont, topic}, msg, cap, sig}`
//! with handles `{id, did, addr{host, inbox}}`; `msg`, `cap` and `sig` are base64.
//!
//! # Signing bytes (v1)
//! ```text
//! "dms:msg:v1\0"
//! handle(to) handle(from)           handle = str(id) str(did) str(host) str(inbox)
//! str(be) u64be(nonce) u64be(exp) str(cont) str(topic)
//! bytes(msg) bytes(cap)             str/bytes = u32be(len) ‖ data
//! ```
//! The signer is the actor whose key is `from.id` (a `did:key`).

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nunet_did::{Did, Keypair, PublicKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest envelope accepted from anyone.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;
const DOMAIN: &[u8] = b"dms:msg:v1\0";

/// Problems decoding or checking an envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Over [`MAX_ENVELOPE_BYTES`].
    #[error("envelope of {0} bytes exceeds the {MAX_ENVELOPE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not an envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// `from.id` is not a did:key.
    #[error("sender id is not a did:key: {0}")]
    BadSender(String),
    /// The signature does not verify.
    #[error("envelope signature does not verify")]
    BadSignature,
}

/// Where an actor lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    /// libp2p peer id of the hosting node.
    #[serde(default)]
    pub host: String,
    /// Inbox name on that node (`root` for the node's root actor).
    #[serde(default)]
    pub inbox: String,
}

/// An actor's handle: its key id, its node's DID, and its address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Handle {
    /// The actor's own key, as a did:key.
    #[serde(default)]
    pub id: String,
    /// The DID of the node (root actor) the actor belongs to.
    #[serde(default)]
    pub did: String,
    /// Where to deliver.
    #[serde(default)]
    pub addr: Address,
}

impl Handle {
    /// The root actor handle of the node with this key (nodes are ed25519: the peer id is the
    /// key's).
    pub fn root_of(key: &PublicKey) -> Self {
        let did = key.did();
        Self {
            id: did.to_string(),
            did: did.to_string(),
            addr: Address {
                host: key.peer_id().to_base58(),
                inbox: "root".into(),
            },
        }
    }

    /// A handle from a DID, a peer id, or a JSON handle.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.starts_with('{') {
            return serde_json::from_str(s).map_err(|e| format!("not a handle: {e}"));
        }
        if s.starts_with("did:") {
            let did = Did::parse(s).map_err(|e| e.to_string())?;
            // Only ed25519 DIDs name a node; the error says what the DID is instead.
            let peer = did.peer_id().map_err(|e| e.to_string())?;
            return PublicKey::from_peer_id(&peer)
                .map(|k| Self::root_of(&k))
                .map_err(|e| e.to_string());
        }
        let peer: libp2p_identity::PeerId = s
            .parse()
            .map_err(|_| format!("{s:?} is not a DID, peer id or handle"))?;
        let key = PublicKey::from_peer_id(&peer).map_err(|e| e.to_string())?;
        Ok(Self::root_of(&key))
    }

    /// Whether this is the empty handle (broadcast destination).
    pub fn is_empty(&self) -> bool {
        self.id.is_empty() && self.addr.host.is_empty()
    }
}

/// Message options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Expiry, unix nanoseconds; also the deadline of an invocation.
    pub exp: u64,
    /// Behavior on the sender that replies go to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cont: String,
    /// Broadcast topic.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic: String,
    /// The sender's trace context (W3C `traceparent`), when it records traces; signed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace: String,
}

/// A signed actor message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Receiver (empty for broadcasts).
    #[serde(default)]
    pub to: Handle,
    /// Behavior invoked.
    pub be: String,
    /// Sender.
    pub from: Handle,
    /// Per-sender increasing number, seeded from the clock.
    pub nonce: u64,
    /// Expiry, reply behavior, topic.
    pub opt: Options,
    /// Payload (JSON bytes).
    #[serde(with = "b64", default)]
    pub msg: Vec<u8>,
    /// Capability tokens (`{"tok": [...]}` JSON bytes).
    #[serde(with = "b64", default)]
    pub cap: Vec<u8>,
    /// Signature of `from.id` over the signing bytes.
    #[serde(with = "b64", default)]
    pub sig: Vec<u8>,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// A fresh nonce: increasing within the process, seeded from unix time in ns.
pub fn next_nonce() -> u64 {
    let now = nunet_capability::now_ns();
    let mut cur = NONCE.load(Ordering::Relaxed);
    loop {
        let next = cur.max(now).saturating_add(1);
        match NONCE.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => cur = actual,
        }
    }
}

impl Envelope {
    /// Builds and signs an envelope.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        key: &Keypair,
        from: Handle,
        to: Handle,
        be: &str,
        opt: Options,
        msg: Vec<u8>,
        cap: Vec<u8>,
    ) -> Self {
        let mut e = Envelope {
            to,
            be: be.to_string(),
            from,
            nonce: next_nonce(),
            opt,
            msg,
            cap,
            sig: Vec::new(),
        };
        e.sig = key.sign(&e.signing_bytes()).to_bytes().to_vec();
        e
    }

    /// The bytes the sender signs.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(256 + self.msg.len() + self.cap.len());
        b.extend_from_slice(DOMAIN);
        for h in [&self.to, &self.from] {
            for s in [&h.id, &h.did, &h.addr.host, &h.addr.inbox] {
                put(&mut b, s.as_bytes());
            }
        }
        put(&mut b, self.be.as_bytes());
        b.extend_from_slice(&self.nonce.to_be_bytes());
        b.extend_from_slice(&self.opt.exp.to_be_bytes());
        put(&mut b, self.opt.cont.as_bytes());
        put(&mut b, self.opt.topic.as_bytes());
        put(&mut b, &self.msg);
        put(&mut b, &self.cap);
        // Only when present, so envelopes without it sign the same bytes as before.
        if !self.opt.trace.is_empty() {
            b.extend_from_slice(b"trace");
            put(&mut b, self.opt.trace.as_bytes());
        }
        b
    }

    /// The sender's DID (its key). Actors are ed25519: a token-only key type (an Ethereum
    /// wallet's, a secp256k1 identity's) never sends messages.
    pub fn sender(&self) -> Result<Did, EnvelopeError> {
        let did = Did::parse(&self.from.id).map_err(|e| EnvelopeError::BadSender(e.to_string()))?;
        did.peer_id()
            .map_err(|e| EnvelopeError::BadSender(e.to_string()))?;
        Ok(did)
    }

    /// Verifies the signature against `from.id`; returns the sender DID.
    pub fn verify_signature(&self) -> Result<Did, EnvelopeError> {
        let did = self.sender()?;
        did.verify(&self.signing_bytes(), &self.sig)
            .map_err(|_| EnvelopeError::BadSignature)?;
        Ok(did)
    }

    /// Encodes to JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes JSON bytes, enforcing the size limit first.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }
}

fn put(b: &mut Vec<u8>, v: &[u8]) {
    b.extend_from_slice(&(v.len() as u32).to_be_bytes());
    b.extend_from_slice(v);
}

mod b64 {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sign_verify_and_tamper() {
        let k = Keypair::from_seed(&[1; 32]);
        let from = Handle::root_of(&k.public());
        let to = Handle::root_of(&Keypair::from_seed(&[2; 32]).public());
        let e = Envelope::sign(
            &k,
            from,
            to,
            "/public/hello",
            Options {
                exp: 5,
                ..Default::default()
            },
            b"{}".to_vec(),
            vec![],
        );
        let back = Envelope::from_bytes(&e.to_bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.verify_signature().unwrap(), k.did());
        for mutate in [
            (|e: &mut Envelope| e.be = "/dms".into()) as fn(&mut Envelope),
            |e| e.nonce += 1,
            |e| e.opt.exp += 1,
            |e| e.msg.push(b' '),
            |e| e.to.addr.inbox = "x".into(),
            |e| e.from.did = "y".into(),
            |e| e.opt.trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        ] {
            let mut m = e.clone();
            mutate(&mut m);
            assert_eq!(m.verify_signature(), Err(EnvelopeError::BadSignature));
        }
        // A trace context is signed too, and only changes the signed bytes when present.
        let mut traced = e.clone();
        traced.opt.trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
        assert!(traced.signing_bytes().starts_with(&e.signing_bytes()));
        traced.sig = k.sign(&traced.signing_bytes()).to_bytes().to_vec();
        assert_eq!(traced.verify_signature().unwrap(), k.did());
        let mut stripped = traced.clone();
        stripped.opt.trace.clear();
        assert_eq!(
            stripped.verify_signature(),
            Err(EnvelopeError::BadSignature)
        );
        assert!(next_nonce() < next_nonce());
        // A message from a token-only key (a secp256k1 or Ethereum DID), validly signed by it,
        // is refused: actors are ed25519.
        let secp = nunet_did::SecpKeypair::from_secret(&[4; 32]).unwrap();
        for did in [
            Did::from_secp256k1(&secp.public()),
            Did::from_eth(&secp.public()),
        ] {
            let mut m = e.clone();
            m.from.id = did.to_string();
            m.sig = match did.kind() {
                nunet_did::KeyKind::Eth => secp.sign_eth(&m.signing_bytes()),
                _ => secp.sign_sha256(&m.signing_bytes()),
            };
            assert!(did.verify(&m.signing_bytes(), &m.sig).is_ok());
            assert!(
                matches!(m.verify_signature(), Err(EnvelopeError::BadSender(w)) if w.contains("ed25519 peers"))
            );
            let h = Handle::parse(did.as_str()).unwrap_err();
            assert!(h.contains("only talks to ed25519 peers"), "{h}");
        }
    }

    #[test]
    fn handles_from_did_peer_and_json() {
        let did = Keypair::from_seed(&[3; 32]).did();
        let h = Handle::parse(did.as_str()).unwrap();
        assert_eq!(h.addr.inbox, "root");
        assert_eq!(Handle::parse(&h.addr.host).unwrap(), h);
        assert_eq!(
            Handle::parse(&serde_json::to_string(&h).unwrap()).unwrap(),
            h
        );
        assert!(Handle::parse("nonsense").is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(e) = Envelope::from_bytes(&bytes) {
                let _ = e.verify_signature();
            }
        }
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let big = vec![b'{'; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(
            Envelope::from_bytes(&big),
            Err(EnvelopeError::TooLarge(_))
        ));
    }
}
