use nunet_did::{Did, Signer};
use serde::{Deserialize, Serialize};

use crate::revocation::RevocationError;
use crate::token::Claims;
use crate::{Action, Capability, RevocationSet, Token, TokenError, TokenFormat, TokenId};

/// Problems managing anchors or building tokens from them.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// A token could not be built.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A revocation was not accepted.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// Anchors must be delegations.
    #[error("a {0} token cannot be an anchor: anchors must be delegate tokens")]
    NotDelegate(Action),
    /// The token has already expired.
    #[error("the token expired at {0} ns")]
    Expired(u64),
    /// A provide anchor must name this context as its subject.
    #[error(
        "this token's subject is {sub}, not this context's DID {ours}: it cannot be used to provide capabilities"
    )]
    NotOurs {
        /// Token subject.
        sub: Did,
        /// Our DID.
        ours: Did,
    },
    /// The token or its chain does not hold together.
    #[error("the token's chain is invalid: {0}")]
    BrokenChain(String),
    /// No provide anchor covers what was asked.
    #[error(
        "no provide anchor of this context grants {0}; add one with `nunet cap anchor --provide`, or use --self-sign also|only"
    )]
    NotCovered(String),
    /// The requested expiry is later than the anchor allows.
    #[error(
        "requested expiry {requested} ns is after the expiry {limit} ns of every provide anchor that covers it"
    )]
    ExpiryBeyondAnchor {
        /// Requested.
        requested: u64,
        /// Latest possible.
        limit: u64,
    },
    /// Nothing to remove.
    #[error("{0} is not an anchor of this context")]
    NotFound(String),
}

/// How `delegate` signs: chained on provide anchors (`no` self-signing), both, or only
/// self-signed (the context's own DID as the chain's root).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SelfSign {
    /// Only tokens chained on provide anchors.
    #[default]
    No,
    /// Chained tokens and a self-signed one.
    Also,
    /// Only a self-signed token.
    Only,
}

impl std::str::FromStr for SelfSign {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no" => Ok(Self::No),
            "also" => Ok(Self::Also),
            "only" => Ok(Self::Only),
            _ => Err(format!("--self-sign must be no, also or only (got {s:?})")),
        }
    }
}

/// What to put in a delegation or grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    /// Who receives it.
    pub sub: Did,
    /// Restrict to this receiver.
    pub aud: Option<Did>,
    /// Capabilities.
    pub cap: Vec<Capability>,
    /// Broadcast topics.
    pub topic: Vec<Capability>,
    /// Expiry, unix ns.
    pub exp: u64,
    /// Depth limit (0 = unlimited).
    pub depth: u64,
}

/// The trust anchors and revocations of one capability context.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchors {
    /// This context's DID (tokens it issued are trusted).
    pub did: Did,
    /// Fully trusted DIDs.
    #[serde(default)]
    pub roots: Vec<Did>,
    /// Side chains admitting chains rooted in their subject, within their capabilities.
    #[serde(default)]
    pub require: Vec<Token>,
    /// Delegations to this context that it chains its own tokens on.
    #[serde(default)]
    pub provide: Vec<Token>,
    /// Revocations received or issued.
    #[serde(default)]
    pub revocations: RevocationSet,
    /// The format of the tokens this context grants and delegates (`nunet` for a context
    /// imported from NuNet, so NuNet's nodes accept what it issues).
    #[serde(default, skip_serializing_if = "is_native")]
    pub token_format: TokenFormat,
}

fn is_native(f: &TokenFormat) -> bool {
    *f == TokenFormat::Native
}

impl Anchors {
    /// Empty anchors for a context with this DID.
    pub fn new(did: Did) -> Self {
        Self {
            did,
            roots: Vec::new(),
            require: Vec::new(),
            provide: Vec::new(),
            revocations: RevocationSet::default(),
            token_format: TokenFormat::Native,
        }
    }

    /// Adds a root DID (idempotent).
    pub fn add_root(&mut self, did: Did) {
        if !self.roots.contains(&did) {
            self.roots.push(did);
        }
    }

    /// Adds a require anchor after checking it is a live, well-formed delegation.
    pub fn add_require(&mut self, tok: Token, now: u64) -> Result<(), AnchorError> {
        check_anchor(&tok, now)?;
        push_unique(&mut self.require, tok);
        Ok(())
    }

    /// Adds a provide anchor: a live delegation whose subject is this context.
    pub fn add_provide(&mut self, tok: Token, now: u64) -> Result<(), AnchorError> {
        check_anchor(&tok, now)?;
        if tok.dms().sub != self.did {
            return Err(AnchorError::NotOurs {
                sub: tok.dms().sub.clone(),
                ours: self.did.clone(),
            });
        }
        push_unique(&mut self.provide, tok);
        Ok(())
    }

    /// Removes a root DID.
    pub fn remove_root(&mut self, did: &Did) -> Result<(), AnchorError> {
        let before = self.roots.len();
        self.roots.retain(|d| d != did);
        if self.roots.len() == before {
            return Err(AnchorError::NotFound(format!("root {did}")));
        }
        Ok(())
    }

    /// Removes a require anchor (matched by token id).
    pub fn remove_require(&mut self, id: &TokenId) -> Result<(), AnchorError> {
        remove_by_id(&mut self.require, id, "require")
    }

    /// Removes a provide anchor (matched by token id).
    pub fn remove_provide(&mut self, id: &TokenId) -> Result<(), AnchorError> {
        remove_by_id(&mut self.provide, id, "provide")
    }

    /// Issues a root (self-signed, unchained) delegation: an anchor-ready token.
    pub fn grant(&self, key: &dyn Signer, spec: &TokenSpec) -> Result<Token, AnchorError> {
        Ok(Token::issue_as(
            self.token_format,
            key,
            claims(Action::Delegate, spec),
            None,
        )?)
    }

    /// Delegates to `spec.sub`, chained on every provide anchor that covers the request
    /// and/or self-signed, as `self_sign` says.
    pub fn delegate(
        &self,
        key: &dyn Signer,
        spec: &TokenSpec,
        self_sign: SelfSign,
        now: u64,
    ) -> Result<Vec<Token>, AnchorError> {
        self.issue_from(key, Action::Delegate, spec, self_sign, now, 2)
    }

    /// Invocation (or broadcast) tokens for a message: one chained on each covering provide
    /// anchor (expiry clamped to the anchor's), plus a self-signed one.
    pub fn invocation_tokens(
        &self,
        key: &dyn Signer,
        act: Action,
        spec: &TokenSpec,
        now: u64,
    ) -> Vec<Token> {
        self.invocation_tokens_as(TokenFormat::Native, key, act, spec, now)
    }

    /// [`Self::invocation_tokens`] in `format`. In NuNet's format only anchors in NuNet's
    /// format are chained on: a NuNet node could not verify a link of this node's format.
    pub fn invocation_tokens_as(
        &self,
        format: TokenFormat,
        key: &dyn Signer,
        act: Action,
        spec: &TokenSpec,
        now: u64,
    ) -> Vec<Token> {
        let mut out = Vec::new();
        for anchor in self.covering(spec, now, 1) {
            if format == TokenFormat::NuNet && anchor.dms().format != TokenFormat::NuNet {
                continue;
            }
            let mut s = spec.clone();
            s.exp = s.exp.min(anchor.dms().exp);
            s.aud = s.aud.or_else(|| anchor.dms().aud.clone());
            if let Ok(t) = Token::issue_as(format, key, claims(act, &s), Some(anchor.clone())) {
                out.push(t);
            }
        }
        if let Ok(t) = Token::issue_as(format, key, claims(act, spec), None) {
            out.push(t);
        }
        out
    }

    /// Signs a revocation of `target` and records it here. Returns the revoke token, which
    /// can be handed to other nodes.
    ///
    /// A NuNet token issued by this context's key is revoked NuNet's way (same issuer,
    /// subject, nonce, capabilities and expiry, signed in NuNet's format), so NuNet's nodes
    /// honour the revocation too; any other token by its id.
    pub fn revoke(&mut self, key: &dyn Signer, target: &Token) -> Result<Token, AnchorError> {
        let t = target.dms();
        if t.format == TokenFormat::NuNet && t.iss == key.did() {
            let rev = Token::sign_with_nonce(
                TokenFormat::NuNet,
                key,
                Claims {
                    act: Action::Revoke,
                    sub: t.sub.clone(),
                    aud: None,
                    topic: Vec::new(),
                    cap: t.cap.clone(),
                    exp: t.exp,
                    depth: 0,
                    rev: None,
                },
                None,
                t.nonce.clone(),
            )?;
            self.revocations.add(rev.clone())?;
            return Ok(rev);
        }
        let rev = Token::issue(
            key,
            Claims {
                act: Action::Revoke,
                sub: key.did(),
                aud: None,
                topic: Vec::new(),
                cap: Vec::new(),
                exp: t.exp,
                depth: 0,
                rev: Some(target.id()),
            },
            None,
        )?;
        self.revocations.add(rev.clone())?;
        Ok(rev)
    }

    fn issue_from(
        &self,
        key: &dyn Signer,
        act: Action,
        spec: &TokenSpec,
        self_sign: SelfSign,
        now: u64,
        room: u64,
    ) -> Result<Vec<Token>, AnchorError> {
        let mut out = Vec::new();
        if self_sign != SelfSign::Only {
            let covering = self.covering(spec, now, room);
            if covering.is_empty() {
                if self_sign == SelfSign::No {
                    return Err(AnchorError::NotCovered(describe(spec)));
                }
            } else {
                let limit = covering.iter().map(|a| a.dms().exp).max().unwrap_or(0);
                let usable: Vec<_> = covering
                    .into_iter()
                    .filter(|a| a.dms().exp >= spec.exp)
                    .collect();
                if usable.is_empty() && self_sign == SelfSign::No {
                    return Err(AnchorError::ExpiryBeyondAnchor {
                        requested: spec.exp,
                        limit,
                    });
                }
                for anchor in usable {
                    let mut s = spec.clone();
                    s.aud = s.aud.or_else(|| anchor.dms().aud.clone());
                    out.push(Token::issue_as(
                        self.token_format,
                        key,
                        claims(act, &s),
                        Some(anchor.clone()),
                    )?);
                }
            }
        }
        if self_sign != SelfSign::No {
            out.push(Token::issue_as(
                self.token_format,
                key,
                claims(act, spec),
                None,
            )?);
        }
        Ok(out)
    }

    /// Provide anchors able to parent a token for `spec` with `room` tokens (the new one
    /// included) still to come below the anchor.
    fn covering(&self, spec: &TokenSpec, now: u64, room: u64) -> Vec<&Token> {
        self.provide
            .iter()
            .filter(|a| {
                let t = a.dms();
                t.act == Action::Delegate
                    && t.sub == self.did
                    && t.exp > now
                    && (t.depth == 0 || t.depth >= room)
                    && spec.cap.iter().all(|c| Capability::any_implies(&t.cap, c))
                    && spec
                        .topic
                        .iter()
                        .all(|c| Capability::any_implies(&t.topic, c))
                    && match (&t.aud, &spec.aud) {
                        (Some(fixed), Some(want)) => fixed == want,
                        _ => true,
                    }
            })
            .collect()
    }
}

fn claims(act: Action, s: &TokenSpec) -> Claims {
    Claims {
        act,
        sub: s.sub.clone(),
        aud: s.aud.clone(),
        topic: s.topic.clone(),
        cap: s.cap.clone(),
        exp: s.exp,
        depth: s.depth,
        rev: None,
    }
}

fn describe(s: &TokenSpec) -> String {
    let mut parts: Vec<String> = s.cap.iter().map(|c| c.to_string()).collect();
    parts.extend(s.topic.iter().map(|t| format!("topic {t}")));
    if parts.is_empty() {
        "the requested capabilities".into()
    } else {
        parts.join(", ")
    }
}

fn check_anchor(tok: &Token, now: u64) -> Result<(), AnchorError> {
    let t = tok.dms();
    if t.act != Action::Delegate {
        return Err(AnchorError::NotDelegate(t.act));
    }
    if t.exp <= now {
        return Err(AnchorError::Expired(t.exp));
    }
    check_integrity(tok, now).map_err(AnchorError::BrokenChain)
}

/// Signatures and link rules of a token and its chain, without asking who anchors it.
fn check_integrity(tok: &Token, now: u64) -> Result<(), String> {
    let links = tok.links();
    let n = links.len();
    if n > crate::verify::MAX_CHAIN_LEN {
        return Err(format!("{n} tokens in the chain"));
    }
    // The same link rules the verifier applies, then every signature (root first, since
    // each token signs its parent's id).
    crate::verify::check_structure(&links, now).map_err(|d| d.to_string())?;
    let mut parent: Option<TokenId> = None;
    for (i, t) in links.iter().enumerate().rev() {
        let bytes = t.signing_bytes(parent.as_ref());
        if !t.verify_signature_of(&bytes) {
            return Err(format!("bad signature at position {i}"));
        }
        parent = Some(t.id_of(&bytes));
    }
    Ok(())
}

fn push_unique(v: &mut Vec<Token>, tok: Token) {
    if !v.contains(&tok) {
        v.push(tok);
    }
}

fn remove_by_id(v: &mut Vec<Token>, id: &TokenId, kind: &str) -> Result<(), AnchorError> {
    let before = v.len();
    v.retain(|t| &t.id() != id);
    if v.len() == before {
        return Err(AnchorError::NotFound(format!("{kind} token {id}")));
    }
    Ok(())
}
