use std::collections::HashMap;

use nunet_did::Did;
use serde::{Deserialize, Serialize};

use crate::{Action, DmsToken, Token, TokenFormat, TokenId};

/// Why a revocation token was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RevocationError {
    /// The token's action is not `revoke`.
    #[error("not a revoke token (action {0})")]
    NotRevoke(Action),
    /// A revoke token must name the token it revokes in `rev`.
    #[error("revoke token does not name a token id in `rev`")]
    MissingTarget,
    /// Revocations are single tokens, never chained.
    #[error("revoke tokens cannot be chained")]
    Chained,
    /// The revoker's signature does not verify.
    #[error("revoke token signature does not verify")]
    BadSignature,
}

/// Revocations a context knows: token id → the DIDs that revoked it.
///
/// A revocation only takes effect for a chain when its issuer is the issuer of the revoked
/// token or of one of the tokens it is chained on (or the verifying context itself); anybody
/// else's revocation is stored but ignored for that chain.
///
/// NuNet's revocations (NuNet's token format) name the revoked token by its issuer, subject
/// and nonce instead of its id, and are signed by that issuer, so they always count.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Vec<Token>", into = "Vec<Token>")]
pub struct RevocationSet {
    tokens: Vec<Token>,
    by_target: HashMap<TokenId, Vec<Did>>,
    /// NuNet's revocation keys: issuer, subject, nonce.
    by_nonce: std::collections::HashSet<(Did, Did, Vec<u8>)>,
}

impl RevocationSet {
    /// Checks and adds a revoke token; returns the id it revokes (for NuNet's revocations,
    /// which name no id, the id of the revoke token itself).
    pub fn add(&mut self, tok: Token) -> Result<TokenId, RevocationError> {
        let t = tok.dms();
        if t.act != Action::Revoke {
            return Err(RevocationError::NotRevoke(t.act));
        }
        if t.chain.is_some() {
            return Err(RevocationError::Chained);
        }
        if t.format == TokenFormat::NuNet {
            if !t.verify_signature(None) {
                return Err(RevocationError::BadSignature);
            }
            let id = tok.id();
            let key = (t.iss.clone(), t.sub.clone(), t.nonce.clone());
            if self.by_nonce.insert(key) {
                self.tokens.push(tok);
            } else if let Some(old) = self.tokens.iter_mut().find(|o| {
                let o = o.dms();
                o.format == TokenFormat::NuNet
                    && (&o.iss, &o.sub, &o.nonce) == (&t.iss, &t.sub, &t.nonce)
            }) {
                // The same revocation again: the one that lasts longest is kept, or it would
                // lapse (and the token come back) when the shorter one is collected.
                if t.exp > old.dms().exp {
                    *old = tok;
                }
            }
            return Ok(id);
        }
        let target = t.rev.ok_or(RevocationError::MissingTarget)?;
        if !t.verify_signature(None) {
            return Err(RevocationError::BadSignature);
        }
        let issuers = self.by_target.entry(target).or_default();
        if !issuers.contains(&t.iss) {
            issuers.push(t.iss.clone());
            self.tokens.push(tok);
        }
        Ok(target)
    }

    /// Whether NuNet's revocation of `t` (by its issuer, subject and nonce) is held.
    pub fn revoked_by_nonce(&self, t: &DmsToken) -> bool {
        !self.by_nonce.is_empty()
            && self
                .by_nonce
                .contains(&(t.iss.clone(), t.sub.clone(), t.nonce.clone()))
    }

    /// Who revoked `id`.
    pub fn revokers(&self, id: &TokenId) -> &[Did] {
        self.by_target.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The revoke tokens held.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Drops revocations of tokens that have expired anyway (a revoke token's `exp` is the
    /// revoked token's expiry).
    pub fn gc(&mut self, now: u64) {
        let keep: Vec<Token> = self
            .tokens
            .drain(..)
            .filter(|t| t.dms().exp > now)
            .collect();
        *self = Self::from(keep);
    }

    /// Number of revocations.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl From<Vec<Token>> for RevocationSet {
    fn from(v: Vec<Token>) -> Self {
        let mut s = Self::default();
        for t in v {
            // Invalid entries in a stored file are dropped rather than trusted.
            let _ = s.add(t);
        }
        s
    }
}

impl From<RevocationSet> for Vec<Token> {
    fn from(s: RevocationSet) -> Self {
        s.tokens
    }
}
