//! The envelope (`actor/interface.go`: `Envelope`, `Handle`, `Address`, `EnvelopeOptions`)
//! and Go's JSON of it. Go writes struct fields in declaration order, `[]byte` as padded
//! standard base64 (`null` for a nil slice), omits `omitempty` fields that are empty, and
//! escapes strings HTML-safely; [`GoEnvelope::to_json`] does the same, so that a Go node that
//! re-encodes what it parsed gets these bytes back.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nunet_actor::{Address, Envelope, Handle, Options};
use nunet_capability::gojson;
use nunet_did::{Did, Keypair};
use serde::Deserialize;

use crate::GoWireError;
use crate::id::{decode_b32, did_of_key_id, key_id, key_id_b32};

/// Domain prefix of envelope signatures (`actor/msg.go`, `signaturePrefix`).
pub const SIGNING_PREFIX: &[u8] = b"dms:msg:";
/// A NuNet node refuses a frame over 1 MiB including its 8-byte length
/// (`network/libp2p/libp2p.go`, `maxMessageLengthMB`).
pub const MAX_GO_ENVELOPE: usize = 1024 * 1024 - 8;

/// `actor.Handle`: an actor's key id, its node's DID and its address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoHandle {
    /// libp2p protobuf public key (`crypto.ID`); empty for a broadcast's receiver.
    pub id: Vec<u8>,
    /// `did.DID.URI`; empty encodes as `{}`.
    pub did: String,
    /// `Address.HostID`: the peer id.
    pub host: String,
    /// `Address.InboxAddress`.
    pub inbox: String,
}

impl GoHandle {
    /// The root actor of a node with this ed25519 key.
    pub fn root_of(key: &nunet_did::PublicKey) -> Self {
        Self {
            id: key_id(key),
            did: key.did().to_string(),
            host: key.peer_id().to_base58(),
            inbox: "root".into(),
        }
    }

    fn to_actor(&self) -> Result<Handle, GoWireError> {
        Ok(Handle {
            id: if self.id.is_empty() {
                String::new()
            } else {
                did_of_key_id(&self.id)?.to_string()
            },
            did: self.did.clone(),
            addr: Address {
                host: self.host.clone(),
                inbox: self.inbox.clone(),
            },
        })
    }
}

/// `actor.Envelope` with its options flattened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoEnvelope {
    /// Receiver (empty for a broadcast).
    pub to: GoHandle,
    /// Behavior.
    pub be: String,
    /// Sender; `from.id` is the signing key.
    pub from: GoHandle,
    /// Sender's counter, seeded from the clock in ns (above 2^53: never a float).
    pub nonce: u64,
    /// `opt.exp`: expiry, unix ns.
    pub exp: u64,
    /// `opt.cont`: the behavior replies go to.
    pub cont: String,
    /// `opt.topic`: broadcast topic.
    pub topic: String,
    /// Payload; `None` is Go's nil slice (`null`), `Some(empty)` is `""`.
    pub msg: Option<Vec<u8>>,
    /// Token list bytes (`{"tok": […]}`); omitted when empty.
    pub cap: Vec<u8>,
    /// Signature; omitted when empty.
    pub sig: Vec<u8>,
    /// This node's own envelope carried inside (`"native"`, after `sig`): how this node's
    /// broadcasts cross NuNet's topics without NuNet's validators rejecting them. Not signed
    /// by the outer signature (NuNet drops unknown fields before verifying); the carried
    /// envelope has its own.
    pub native: Option<Vec<u8>>,
}

/// Gossip topics NuNet's nodes subscribe to and validate (`dms/behaviors/behaviors.go`):
/// anything published there must be a valid NuNet envelope, or its publisher is penalised.
pub const NUNET_TOPICS: [&str; 3] = ["/nunet/hello", "/nunet/deployment", "/nunet/status"];

#[derive(Deserialize)]
struct WireId {
    #[serde(rename = "pub", default)]
    key: String,
}

#[derive(Deserialize, Default)]
struct WireDid {
    #[serde(default)]
    uri: String,
}

#[derive(Deserialize, Default)]
struct WireAddr {
    #[serde(default)]
    host: String,
    #[serde(default)]
    inbox: String,
}

#[derive(Deserialize, Default)]
struct WireHandle {
    #[serde(default)]
    id: Option<WireId>,
    #[serde(default)]
    did: Option<WireDid>,
    #[serde(default)]
    addr: Option<WireAddr>,
}

#[derive(Deserialize, Default)]
struct WireOpt {
    #[serde(default)]
    exp: u64,
    #[serde(default)]
    cont: String,
    #[serde(default)]
    topic: String,
}

#[derive(Deserialize)]
struct WireEnvelope {
    #[serde(default)]
    to: WireHandle,
    #[serde(default)]
    be: String,
    #[serde(default)]
    from: WireHandle,
    #[serde(default)]
    nonce: u64,
    #[serde(default)]
    opt: WireOpt,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    cap: Option<String>,
    #[serde(default)]
    sig: Option<String>,
    #[serde(default)]
    native: Option<String>,
}

fn bytes_field(what: &str, v: Option<&str>) -> Result<Vec<u8>, GoWireError> {
    v.map(|s| B64.decode(s))
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|e| GoWireError::Malformed(format!("`{what}` is not padded base64: {e}")))
}

impl WireHandle {
    fn into_go(self, what: &str) -> Result<GoHandle, GoWireError> {
        let id = match self.id {
            Some(i) if !i.key.is_empty() => decode_b32(&i.key)
                .map_err(|e| GoWireError::Malformed(format!("`{what}.id`: {e}")))?,
            _ => Vec::new(),
        };
        let addr = self.addr.unwrap_or_default();
        Ok(GoHandle {
            id,
            did: self.did.map(|d| d.uri).unwrap_or_default(),
            host: addr.host,
            inbox: addr.inbox,
        })
    }
}

impl GoEnvelope {
    /// Parses what a NuNet node sent. Unknown fields are dropped, as Go drops them (its
    /// signature check then fails on them, here as there).
    pub fn from_json(bytes: &[u8]) -> Result<Self, GoWireError> {
        if bytes.len() > MAX_GO_ENVELOPE {
            return Err(GoWireError::TooLarge(bytes.len()));
        }
        if !bytes.trim_ascii_start().starts_with(b"{") {
            // serde would read an array as a struct; Go's decoder refuses it.
            return Err(GoWireError::Malformed("not a JSON object".into()));
        }
        let w: WireEnvelope =
            serde_json::from_slice(bytes).map_err(|e| GoWireError::Malformed(e.to_string()))?;
        Ok(Self {
            to: w.to.into_go("to")?,
            be: w.be,
            from: w.from.into_go("from")?,
            nonce: w.nonce,
            exp: w.opt.exp,
            cont: w.opt.cont,
            topic: w.opt.topic,
            msg: w
                .msg
                .as_deref()
                .map(|m| bytes_field("msg", Some(m)))
                .transpose()?,
            cap: bytes_field("cap", w.cap.as_deref())?,
            sig: bytes_field("sig", w.sig.as_deref())?,
            native: w
                .native
                .as_deref()
                .map(|n| bytes_field("native", Some(n)))
                .transpose()?,
        })
    }

    /// A NuNet-valid broadcast that carries `native` (this node's envelope bytes) on
    /// `topic`, signed by the node key: `be` and `exp` are the carried message's, the
    /// payload and tokens stay inside (a NuNet node that gets it finds no tokens and drops
    /// it, as it drops any broadcast it may not act on).
    pub fn carrier(
        key: &Keypair,
        topic: &str,
        be: &str,
        exp: u64,
        nonce: u64,
        native: Vec<u8>,
    ) -> Result<Self, GoWireError> {
        let mut env = GoEnvelope {
            to: GoHandle::default(),
            be: be.to_string(),
            from: GoHandle::root_of(&key.public()),
            nonce,
            exp,
            cont: String::new(),
            topic: topic.to_string(),
            msg: None,
            cap: Vec::new(),
            sig: Vec::new(),
            native: Some(native),
        };
        env.sign(key)?;
        Ok(env)
    }

    /// Go's `json.Marshal` of the envelope.
    pub fn to_json(&self) -> Vec<u8> {
        self.encode(true).into_bytes()
    }

    /// `"dms:msg:"` ‖ Go's JSON of the envelope without its signature.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = SIGNING_PREFIX.to_vec();
        out.extend_from_slice(self.encode(false).as_bytes());
        out
    }

    fn encode(&self, with_sig: bool) -> String {
        let mut o = String::with_capacity(512 + (self.cap.len() + self.msg_len()) * 4 / 3);
        o.push_str("{\"to\":");
        handle(&mut o, &self.to);
        o.push_str(",\"be\":");
        gojson::string(&mut o, &self.be);
        o.push_str(",\"from\":");
        handle(&mut o, &self.from);
        o.push_str(&format!(
            ",\"nonce\":{},\"opt\":{{\"exp\":{}",
            self.nonce, self.exp
        ));
        if !self.cont.is_empty() {
            o.push_str(",\"cont\":");
            gojson::string(&mut o, &self.cont);
        }
        if !self.topic.is_empty() {
            o.push_str(",\"topic\":");
            gojson::string(&mut o, &self.topic);
        }
        o.push_str("},\"msg\":");
        match &self.msg {
            None => o.push_str("null"),
            Some(m) => b64(&mut o, m),
        }
        if !self.cap.is_empty() {
            o.push_str(",\"cap\":");
            b64(&mut o, &self.cap);
        }
        if with_sig && !self.sig.is_empty() {
            o.push_str(",\"sig\":");
            b64(&mut o, &self.sig);
        }
        if let (true, Some(n)) = (with_sig, &self.native) {
            o.push_str(",\"native\":");
            b64(&mut o, n);
        }
        o.push('}');
        o
    }

    fn msg_len(&self) -> usize {
        self.msg.as_ref().map_or(0, Vec::len)
    }

    /// Signs as the actor whose ed25519 key this is; `from.id` must be that key.
    pub fn sign(&mut self, key: &Keypair) -> Result<(), GoWireError> {
        if self.from.id != key_id(&key.public()) {
            // security.go: Sign refuses a `from.id` other than the signer's.
            return Err(GoWireError::Reply("from.id is not the signing key".into()));
        }
        self.sig = key.sign(&self.signing_bytes()).to_bytes().to_vec();
        Ok(())
    }

    /// The sender's DID (from `from.id`, never from `from.did`, as `Verify` does) once its
    /// signature and expiry check out at `now_ns`.
    pub fn verify(&self, now_ns: u64) -> Result<Did, GoWireError> {
        if now_ns > self.exp {
            return Err(GoWireError::Expired);
        }
        let did = did_of_key_id(&self.from.id)?;
        did.verify(&self.signing_bytes(), &self.sig)
            .map_err(|_| GoWireError::BadSignature)?;
        Ok(did)
    }

    /// This node's envelope with the same content, for dispatch after [`Self::verify`]. It
    /// carries no signature of this node's format: only the actor system's entry for
    /// messages authenticated by a wire adapter may take it.
    pub fn to_actor(&self) -> Result<Envelope, GoWireError> {
        Ok(Envelope {
            to: self.to.to_actor()?,
            be: self.be.clone(),
            from: self.from.to_actor()?,
            nonce: self.nonce,
            opt: Options {
                exp: self.exp,
                cont: self.cont.clone(),
                topic: self.topic.clone(),
                trace: String::new(),
            },
            msg: self.msg.clone().unwrap_or_default(),
            cap: self.cap.clone(),
            sig: Vec::new(),
        })
    }
}

fn b64(o: &mut String, b: &[u8]) {
    o.push('"');
    o.push_str(&B64.encode(b));
    o.push('"');
}

/// `{"id":{"pub":…},"did":{"uri":…}|{},"addr":{"host"?,"inbox"?}}`.
fn handle(o: &mut String, h: &GoHandle) {
    o.push_str("{\"id\":{\"pub\":\"");
    o.push_str(&key_id_b32(&h.id));
    o.push_str("\"},\"did\":");
    if h.did.is_empty() {
        o.push_str("{}");
    } else {
        o.push_str("{\"uri\":");
        gojson::string(o, &h.did);
        o.push('}');
    }
    o.push_str(",\"addr\":{");
    let mut first = true;
    for (k, v) in [("host", &h.host), ("inbox", &h.inbox)] {
        if v.is_empty() {
            continue;
        }
        if !first {
            o.push(',');
        }
        first = false;
        o.push('"');
        o.push_str(k);
        o.push_str("\":");
        gojson::string(o, v);
    }
    o.push_str("}}");
}
