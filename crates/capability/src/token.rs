//! Tokens and their signing bytes.
//!
//! Two formats ([`TokenFormat`]): this node's, described here, and NuNet's, whose signature
//! covers Go's JSON of the token with its parent inline ([`crate::gojson`]).
//!
//! # Signing bytes (version 1, this node's format)
//!
//! A token's signature covers these bytes, built field by field (never by re-serialising JSON,
//! so two implementations agree byte for byte):
//!
//! ```text
//! "dms:token:v1\0"
//! u8      act            invoke=1 delegate=2 broadcast=3 revoke=4
//! str     iss            str(s)   = u32be(len) ‖ UTF-8 bytes
//! str     sub
//! str     aud            "" when absent (anyone)
//! list    topic          list(xs) = u32be(count) ‖ str(x)…
//! list    cap
//! bytes   nonce          bytes(b) = u32be(len) ‖ b
//! u64be   exp            unix nanoseconds
//! u64be   depth          0 = unlimited
//! opt32   chain          0x00, or 0x01 ‖ id of the parent token (32 bytes)
//! opt32   rev            0x00, or 0x01 ‖ id of the revoked token (revoke tokens only)
//! ```
//!
//! A token's **id** is `SHA-256(signing bytes ‖ sig)` (in both formats). In this format the
//! chain is signed through its id; in NuNet's, inline. Either way a signature commits to the
//! whole chain below it, and a verified id can be cached. The two formats' signing bytes
//! differ from the 11th byte on (`dms:token:v1\0` against `dms:token:{`), so no signature
//! made for one can pass as the other's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nunet_did::{Did, Keypair, Signer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::Capability;

/// Domain separation prefix of token signatures.
pub const SIGNING_DOMAIN: &[u8] = b"dms:token:v1\0";
/// Largest serialized token list accepted from the wire (NuNet's `maxCapabilitySize`).
pub const MAX_TOKEN_LIST_BYTES: usize = 16 * 1024;
/// Length of a token nonce.
pub const NONCE_LEN: usize = 12;

/// Problems building or decoding tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// JSON that is not a token (list).
    #[error("not a valid capability token: {0}")]
    Json(String),
    /// Over [`MAX_TOKEN_LIST_BYTES`].
    #[error("capability payload of {0} bytes exceeds the {MAX_TOKEN_LIST_BYTES}-byte limit")]
    TooLarge(usize),
    /// Issuing on a chain whose subject is someone else.
    #[error("cannot issue on a chain whose subject is {chain_sub}: the issuer is {issuer}")]
    NotChainSubject {
        /// The chain's subject.
        chain_sub: Did,
        /// Who tried to issue.
        issuer: Did,
    },
    /// Issuing on a chain link that is not a delegation.
    #[error("cannot chain on a {0} token: only delegate tokens can be extended")]
    ChainNotDelegate(Action),
    /// The issuer's signer (an external wallet) gave no usable signature.
    #[error("signing failed: {0}")]
    Signer(String),
}

/// What a token lets its subject do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Invoke behaviors named by `cap`.
    Invoke,
    /// Issue further tokens chained on this one.
    Delegate,
    /// Broadcast on topics named by `topic`.
    Broadcast,
    /// Revoke a token: the one named by `rev` (this node's format), or the issuer's token of
    /// the same subject and nonce (NuNet's format).
    Revoke,
}

impl Action {
    fn code(self) -> u8 {
        match self {
            Action::Invoke => 1,
            Action::Delegate => 2,
            Action::Broadcast => 3,
            Action::Revoke => 4,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Invoke => "invoke",
            Action::Delegate => "delegate",
            Action::Broadcast => "broadcast",
            Action::Revoke => "revoke",
        })
    }
}

/// A token id: SHA-256 of the signing bytes and the signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub [u8; 32]);

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenId({})", &hex::encode(self.0)[..16])
    }
}

impl std::str::FromStr for TokenId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = hex::decode(s).map_err(|e| format!("token id {s:?}: {e}"))?;
        let arr: [u8; 32] = v
            .try_into()
            .map_err(|_| format!("token id {s:?} must be 32 bytes of hex"))?;
        Ok(Self(arr))
    }
}

impl Serialize for TokenId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How a token is written and what its signature covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// This node's format: DIDs as strings, signed over the field-by-field bytes of the
    /// module docs, a revocation naming the revoked token's id in `rev`.
    #[default]
    Native,
    /// NuNet's format: DIDs as `{"uri": …}`, signed over Go's JSON of the token
    /// ([`crate::gojson`]), a revocation naming the revoked token by issuer, subject and nonce.
    #[serde(rename = "nunet")]
    NuNet,
}

impl std::fmt::Display for TokenFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenFormat::Native => "native",
            TokenFormat::NuNet => "nunet",
        })
    }
}

/// The body of a DMS token. Field names follow NuNet's JSON; the JSON shape (and what the
/// signature covers) follows [`DmsToken::format`], which is read from the shape of the DIDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmsToken {
    /// Action conferred.
    pub act: Action,
    /// Issuer (signer).
    pub iss: Did,
    /// Subject (who receives the capability).
    pub sub: Did,
    /// Audience: the only receiver invocations may go to; absent = anyone.
    pub aud: Option<Did>,
    /// Broadcast topics.
    pub topic: Vec<Capability>,
    /// Capabilities (behavior paths).
    pub cap: Vec<Capability>,
    /// Random nonce (base64 in JSON).
    pub nonce: Vec<u8>,
    /// Expiry, unix nanoseconds.
    pub exp: u64,
    /// Most tokens that may be chained below this one (0 = unlimited).
    pub depth: u64,
    /// The parent token, inline.
    pub chain: Option<Box<Token>>,
    /// For revoke tokens of this node's format: the id of the revoked token.
    pub rev: Option<TokenId>,
    /// The issuer's signature over the signing bytes, in its key type's scheme (base64 in
    /// JSON).
    pub sig: Vec<u8>,
    /// Which format the token is in.
    pub format: TokenFormat,
    /// NuNet format: the token was signed with `"cap":null` (Go's nil slice), not `[]`.
    pub cap_null: bool,
    /// NuNet format: the token was signed with `"nonce":null`.
    pub nonce_null: bool,
}

/// A DID on the wire: a string (this node's format) or `{"uri": …}` (NuNet's `did.DID`;
/// Go matches the key case-insensitively and ignores other keys).
enum WireDid {
    Str(String),
    Obj { uri: String },
}

impl<'de> Deserialize<'de> for WireDid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = WireDid;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a DID string or {\"uri\": \"did:…\"}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WireDid, E> {
                Ok(WireDid::Str(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<WireDid, A::Error> {
                let mut uri = None;
                while let Some(k) = m.next_key::<String>()? {
                    if k.eq_ignore_ascii_case("uri") {
                        uri = Some(m.next_value::<String>()?);
                    } else {
                        m.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(WireDid::Obj {
                    uri: uri.unwrap_or_default(),
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl WireDid {
    fn is_obj(&self) -> bool {
        matches!(self, WireDid::Obj { .. })
    }
    fn text(&self) -> &str {
        match self {
            WireDid::Str(s) | WireDid::Obj { uri: s } => s,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDms {
    act: Action,
    iss: WireDid,
    sub: WireDid,
    #[serde(default)]
    aud: Option<WireDid>,
    #[serde(default)]
    topic: Option<Vec<Capability>>,
    #[serde(default)]
    cap: Option<Vec<Capability>>,
    #[serde(default)]
    nonce: Option<String>,
    exp: u64,
    #[serde(default)]
    depth: Option<u64>,
    #[serde(default)]
    chain: Option<Box<Token>>,
    #[serde(default)]
    rev: Option<TokenId>,
    #[serde(default)]
    sig: Option<String>,
}

impl<'de> Deserialize<'de> for DmsToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let r = RawDms::deserialize(d)?;
        let format = if r.iss.is_obj() {
            TokenFormat::NuNet
        } else {
            TokenFormat::Native
        };
        let nunet = format == TokenFormat::NuNet;
        if r.sub.is_obj() != nunet || (nunet && r.aud.as_ref().is_some_and(|a| !a.is_obj())) {
            return Err(D::Error::custom(
                "a token must write every DID the same way: as strings, or as {\"uri\": …} (NuNet)",
            ));
        }
        if nunet && r.rev.is_some() {
            return Err(D::Error::custom(
                "`rev` is not a field of NuNet's tokens (its revocations name issuer, subject and nonce)",
            ));
        }
        let did = |w: &WireDid, field: &str| {
            Did::parse(w.text()).map_err(|e| D::Error::custom(format!("{field}: {e}")))
        };
        let aud = match &r.aud {
            Some(w) if !w.text().is_empty() => Some(did(w, "aud")?),
            _ => None,
        };
        let b64 = |s: &Option<String>, field: &str| {
            B64.decode(s.as_deref().unwrap_or_default())
                .map_err(|e| D::Error::custom(format!("{field}: {e}")))
        };
        Ok(DmsToken {
            act: r.act,
            iss: did(&r.iss, "iss")?,
            sub: did(&r.sub, "sub")?,
            aud,
            topic: r.topic.unwrap_or_default(),
            cap_null: nunet && r.cap.is_none(),
            cap: r.cap.unwrap_or_default(),
            nonce_null: nunet && r.nonce.is_none(),
            nonce: b64(&r.nonce, "nonce")?,
            exp: r.exp,
            depth: r.depth.unwrap_or(0),
            chain: r.chain,
            rev: r.rev,
            sig: b64(&r.sig, "sig")?,
            format,
        })
    }
}

impl Serialize for DmsToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let nunet = self.format == TokenFormat::NuNet;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("act", &self.act)?;
        if nunet {
            let uri = |d: Option<&Did>| match d {
                Some(d) => serde_json::json!({ "uri": d.as_str() }),
                None => serde_json::json!({}),
            };
            m.serialize_entry("iss", &uri(Some(&self.iss)))?;
            m.serialize_entry("sub", &uri(Some(&self.sub)))?;
            m.serialize_entry("aud", &uri(self.aud.as_ref()))?;
        } else {
            m.serialize_entry("iss", &self.iss)?;
            m.serialize_entry("sub", &self.sub)?;
            if let Some(a) = &self.aud {
                m.serialize_entry("aud", a)?;
            }
        }
        if !self.topic.is_empty() {
            m.serialize_entry("topic", &self.topic)?;
        }
        if nunet && self.cap.is_empty() && self.cap_null {
            m.serialize_entry("cap", &())?;
        } else if nunet || !self.cap.is_empty() {
            m.serialize_entry("cap", &self.cap)?;
        }
        if nunet && self.nonce.is_empty() && self.nonce_null {
            m.serialize_entry("nonce", &())?;
        } else {
            m.serialize_entry("nonce", &B64.encode(&self.nonce))?;
        }
        m.serialize_entry("exp", &self.exp)?;
        if !nunet || self.depth != 0 {
            m.serialize_entry("depth", &self.depth)?;
        }
        if let Some(c) = &self.chain {
            m.serialize_entry("chain", c)?;
        }
        if let Some(r) = &self.rev {
            m.serialize_entry("rev", r)?;
        }
        if !(nunet && self.sig.is_empty()) {
            m.serialize_entry("sig", &B64.encode(&self.sig))?;
        }
        m.end()
    }
}

/// A token: `{"dms": {...}}` on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Token {
    /// The DMS token format.
    Dms(DmsToken),
}

/// A list of tokens: `{"tok": [...]}` on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenList {
    /// The tokens.
    #[serde(deserialize_with = "null_vec")]
    pub tok: Vec<Token>,
}

impl TokenList {
    /// Decodes a list from wire bytes, enforcing the size limit first.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.len() > MAX_TOKEN_LIST_BYTES {
            return Err(TokenError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| TokenError::Json(e.to_string()))
    }

    /// Reads either a single token or a list, as users paste either.
    pub fn parse_any(text: &str) -> Result<Self, TokenError> {
        if text.len() > MAX_TOKEN_LIST_BYTES {
            return Err(TokenError::TooLarge(text.len()));
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            List(TokenList),
            One(Token),
        }
        match serde_json::from_str::<Either>(text.trim()) {
            Ok(Either::List(l)) => Ok(l),
            Ok(Either::One(t)) => Ok(TokenList { tok: vec![t] }),
            // Report the error of the single-token reading: it names the bad field.
            Err(_) => serde_json::from_str::<Token>(text.trim())
                .map(|t| TokenList { tok: vec![t] })
                .map_err(|e| TokenError::Json(e.to_string())),
        }
    }

    /// JSON text of the list.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What a new token says (everything but issuer, chain, nonce and signature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Action.
    pub act: Action,
    /// Subject.
    pub sub: Did,
    /// Audience.
    pub aud: Option<Did>,
    /// Topics.
    pub topic: Vec<Capability>,
    /// Capabilities.
    pub cap: Vec<Capability>,
    /// Expiry (unix ns).
    pub exp: u64,
    /// Depth limit (0 = unlimited).
    pub depth: u64,
    /// Revoked token id (revoke only).
    pub rev: Option<TokenId>,
}

impl Token {
    /// The token body.
    pub fn dms(&self) -> &DmsToken {
        match self {
            Token::Dms(t) => t,
        }
    }

    /// Mutable body (used by tests that forge tokens).
    pub fn dms_mut(&mut self) -> &mut DmsToken {
        match self {
            Token::Dms(t) => t,
        }
    }

    /// Signs a new token in this node's format, chained on `chain` when given.
    pub fn issue(
        issuer: &dyn Signer,
        claims: Claims,
        chain: Option<Token>,
    ) -> Result<Token, TokenError> {
        Self::issue_as(TokenFormat::Native, issuer, claims, chain)
    }

    /// Signs a new token in `format`, chained on `chain` when given.
    pub fn issue_as(
        format: TokenFormat,
        issuer: &dyn Signer,
        claims: Claims,
        chain: Option<Token>,
    ) -> Result<Token, TokenError> {
        if let Some(parent) = &chain {
            let p = parent.dms();
            if p.sub != issuer.did() {
                return Err(TokenError::NotChainSubject {
                    chain_sub: p.sub.clone(),
                    issuer: issuer.did(),
                });
            }
            if p.act != Action::Delegate {
                return Err(TokenError::ChainNotDelegate(p.act));
            }
        }
        let mut nonce = vec![0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        Self::sign_with_nonce(format, issuer, claims, chain, nonce)
    }

    /// Signs with a caller-chosen nonce (deterministic: for test vectors). An ed25519 key
    /// always signs, so this cannot fail.
    pub fn issue_with_nonce(
        issuer: &Keypair,
        claims: Claims,
        chain: Option<Token>,
        nonce: Vec<u8>,
    ) -> Token {
        let mut t = Self::unsigned(issuer.did(), claims, chain, nonce, TokenFormat::Native);
        t.sig = issuer.sign(&t.signing_bytes_here()).to_bytes().to_vec();
        Token::Dms(t)
    }

    /// Signs a token in `format` with a caller-chosen nonce. A NuNet revoke token carries the
    /// revoked token's nonce: that is how NuNet names what it revokes. NuNet's format has no
    /// `rev`: claims naming one are refused for it.
    pub fn sign_with_nonce(
        format: TokenFormat,
        issuer: &dyn Signer,
        claims: Claims,
        chain: Option<Token>,
        nonce: Vec<u8>,
    ) -> Result<Token, TokenError> {
        if format == TokenFormat::NuNet && claims.rev.is_some() {
            return Err(TokenError::Json(
                "NuNet's revoke tokens name the revoked token by issuer, subject and nonce, not by id"
                    .into(),
            ));
        }
        let mut t = Self::unsigned(issuer.did(), claims, chain, nonce, format);
        t.sig = issuer
            .sign_bytes(&t.signing_bytes_here())
            .map_err(|e| TokenError::Signer(e.to_string()))?;
        Ok(Token::Dms(t))
    }

    fn unsigned(
        iss: Did,
        claims: Claims,
        chain: Option<Token>,
        nonce: Vec<u8>,
        format: TokenFormat,
    ) -> DmsToken {
        DmsToken {
            act: claims.act,
            iss,
            sub: claims.sub,
            aud: claims.aud,
            topic: claims.topic,
            cap: claims.cap,
            nonce,
            exp: claims.exp,
            depth: claims.depth,
            chain: chain.map(Box::new),
            rev: claims.rev,
            sig: Vec::new(),
            format,
            cap_null: false,
            nonce_null: false,
        }
    }

    /// The token id (computes the ids of the whole chain).
    pub fn id(&self) -> TokenId {
        let t = self.dms();
        let chain_id = t.chain.as_ref().map(|c| c.id());
        t.id_with(chain_id.as_ref())
    }

    /// The chain from this token down to its root: `[self, parent, …, root]`.
    pub fn links(&self) -> Vec<&DmsToken> {
        let mut out = vec![self.dms()];
        let mut cur = self.dms();
        while let Some(p) = &cur.chain {
            cur = p.dms();
            out.push(cur);
        }
        out
    }

    /// Pretty JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl DmsToken {
    /// The signing bytes, given the id of the parent token (NuNet's format signs over the
    /// parent itself, inline, so it does not use the id).
    pub fn signing_bytes(&self, chain_id: Option<&TokenId>) -> Vec<u8> {
        if self.format == TokenFormat::NuNet {
            return crate::gojson::signing_bytes(self);
        }
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(SIGNING_DOMAIN);
        b.push(self.act.code());
        put_str(&mut b, self.iss.as_str());
        put_str(&mut b, self.sub.as_str());
        put_str(&mut b, self.aud.as_ref().map(|d| d.as_str()).unwrap_or(""));
        put_list(&mut b, &self.topic);
        put_list(&mut b, &self.cap);
        put_bytes(&mut b, &self.nonce);
        b.extend_from_slice(&self.exp.to_be_bytes());
        b.extend_from_slice(&self.depth.to_be_bytes());
        put_opt(&mut b, chain_id);
        put_opt(&mut b, self.rev.as_ref());
        b
    }

    /// The signing bytes, computing the parent's id when there is one.
    fn signing_bytes_here(&self) -> Vec<u8> {
        let chain_id = self.chain.as_ref().map(|c| c.id());
        self.signing_bytes(chain_id.as_ref())
    }

    /// The id, given the id of the parent token.
    pub fn id_with(&self, chain_id: Option<&TokenId>) -> TokenId {
        self.id_of(&self.signing_bytes(chain_id))
    }

    /// The id, given this token's signing bytes. An ECDSA signature counts in its low-S form:
    /// its high-S twin verifies too, and must not give the token a second id that escapes a
    /// revocation by id.
    pub fn id_of(&self, signing_bytes: &[u8]) -> TokenId {
        let mut h = Sha256::new();
        h.update(signing_bytes);
        h.update(self.iss.canonical_signature(&self.sig));
        TokenId(h.finalize().into())
    }

    /// Checks the issuer's signature, given the id of the parent token.
    pub fn verify_signature(&self, chain_id: Option<&TokenId>) -> bool {
        self.verify_signature_of(&self.signing_bytes(chain_id))
    }

    /// Checks the issuer's signature over already computed signing bytes, in the scheme of the
    /// issuer's key type (ed25519, secp256k1 or an Ethereum wallet's).
    pub fn verify_signature_of(&self, signing_bytes: &[u8]) -> bool {
        self.iss.verify(signing_bytes, &self.sig).is_ok()
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_bytes(b, s.as_bytes());
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.extend_from_slice(&(v.len() as u32).to_be_bytes());
    b.extend_from_slice(v);
}

fn put_list(b: &mut Vec<u8>, xs: &[Capability]) {
    b.extend_from_slice(&(xs.len() as u32).to_be_bytes());
    for x in xs {
        put_str(b, x.as_str());
    }
}

fn put_opt(b: &mut Vec<u8>, id: Option<&TokenId>) {
    match id {
        None => b.push(0),
        Some(id) => {
            b.push(1);
            b.extend_from_slice(&id.0);
        }
    }
}

fn null_vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}
