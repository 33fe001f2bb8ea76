use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use nunet_did::Did;

use crate::token::DmsToken;
use crate::{Action, Anchors, Capability, Token, TokenId, TokenList};

/// Longest chain (invocation included) a verifier will look at.
pub const MAX_CHAIN_LEN: usize = 16;

/// What the receiver is asked to allow.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `Invoke` for a behavior invocation, `Broadcast` for a broadcast.
    pub action: Action,
    /// The sender (the invocation token's subject must be this DID).
    pub subject: &'a Did,
    /// The receiver (tokens with an audience must name it).
    pub audience: &'a Did,
    /// The behavior invoked.
    pub capability: &'a Capability,
    /// The broadcast topic (broadcasts only).
    pub topic: Option<&'a Capability>,
}

/// Where an accepted chain is anchored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// Issued by the verifying context itself.
    SelfIssued,
    /// Issued by a root anchor DID.
    Root(Did),
    /// Admitted by the require anchor with this id.
    Require(TokenId),
}

/// A successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorized {
    /// The anchor the chain rests on.
    pub anchor: Anchor,
    /// When the authorization ends (unix ns): the invocation token's expiry.
    pub expires: u64,
    /// Tokens in the chain, invocation included.
    pub chain_len: usize,
}

/// Why a token was refused. `at` is the position in the chain: 0 is the invocation token,
/// 1 its parent, and so on; the require anchor (if any) sits one past the chain's root.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token was presented.
    #[error("no capability token presented")]
    NoToken,
    /// A token of the chain has expired.
    #[error("expired: token at position {at} expired at {exp} ns")]
    Expired {
        /// Position.
        at: usize,
        /// Its expiry.
        exp: u64,
    },
    /// A token expires after the token it is chained on.
    #[error("outlives-chain: token at position {at} expires after its parent")]
    OutlivesChain {
        /// Position of the child.
        at: usize,
    },
    /// A token's issuer is not the subject of its parent.
    #[error(
        "issuer-subject-mismatch: token at position {at} is issued by {iss}, but its parent's subject is {parent_sub}"
    )]
    IssuerSubjectMismatch {
        /// Position of the child.
        at: usize,
        /// Child issuer.
        iss: Did,
        /// Parent subject.
        parent_sub: Did,
    },
    /// A token claims a capability its parent does not hold.
    #[error(
        "capability-widened: token at position {at} claims {cap}, which its parent does not grant"
    )]
    CapabilityWidened {
        /// Position of the child.
        at: usize,
        /// The widened capability.
        cap: Capability,
    },
    /// A token claims a topic its parent does not hold.
    #[error(
        "topic-widened: token at position {at} claims topic {topic}, which its parent does not grant"
    )]
    TopicWidened {
        /// Position of the child.
        at: usize,
        /// The widened topic.
        topic: Capability,
    },
    /// A token changes or drops an audience its parent fixed.
    #[error(
        "audience-widened: token at position {at} changes the audience its parent fixed to {fixed}"
    )]
    AudienceWidened {
        /// Position of the child.
        at: usize,
        /// The parent's audience.
        fixed: Did,
    },
    /// A token is chained on a token that is not a delegation.
    #[error(
        "chain-not-delegate: token at position {at} is a {act} token; only delegate tokens can be chained on"
    )]
    ChainNotDelegate {
        /// Position of the parent.
        at: usize,
        /// Its action.
        act: Action,
    },
    /// A token appears deeper than its parent allows.
    #[error(
        "depth-exceeded: token at position {at} allows {depth} token(s) below it, but {below} are chained below it"
    )]
    DepthExceeded {
        /// Position of the limiting token.
        at: usize,
        /// Its depth limit.
        depth: u64,
        /// How many tokens are below it.
        below: usize,
    },
    /// A signature does not verify.
    #[error("bad-signature: the signature of the token at position {at} does not verify")]
    BadSignature {
        /// Position.
        at: usize,
    },
    /// A token has been revoked by an issuer on its chain.
    #[error("revoked: token at position {at} ({id}) was revoked by {by}")]
    Revoked {
        /// Position.
        at: usize,
        /// Its id.
        id: TokenId,
        /// The revoker.
        by: Did,
    },
    /// The chain's root issuer is neither this context, a root anchor, nor the subject of a
    /// require anchor.
    #[error(
        "not-anchored: the chain's root issuer {issuer} is not trusted by this context (no root or require anchor)"
    )]
    NotAnchored {
        /// Root issuer.
        issuer: Did,
    },
    /// The invocation token's action does not match the request.
    #[error("wrong-action: a {wanted} needs a {wanted} token, got a {got} token")]
    WrongAction {
        /// Needed.
        wanted: Action,
        /// Presented.
        got: Action,
    },
    /// The invocation token is for somebody else.
    #[error("subject-mismatch: the token's subject is {sub}, but the sender is {sender}")]
    SubjectMismatch {
        /// Token subject.
        sub: Did,
        /// Sender.
        sender: Did,
    },
    /// The invocation token is addressed to another receiver.
    #[error("audience-mismatch: the token is for audience {aud}, not this node")]
    AudienceMismatch {
        /// Token audience.
        aud: Did,
    },
    /// The token does not cover the behavior invoked.
    #[error("capability-not-granted: the token does not grant {cap}")]
    CapabilityNotGranted {
        /// Behavior.
        cap: Capability,
    },
    /// The token does not cover the broadcast topic.
    #[error("topic-not-granted: the token does not grant broadcasting on {topic}")]
    TopicNotGranted {
        /// Topic.
        topic: Capability,
    },
    /// Longer than [`MAX_CHAIN_LEN`].
    #[error("chain-too-long: {len} tokens (at most {MAX_CHAIN_LEN})")]
    ChainTooLong {
        /// Its length.
        len: usize,
    },
}

/// Every name [`Denied::rule`] can return: a closed set (metric labels, docs).
pub const RULES: [&str; 18] = [
    "no-token",
    "expired",
    "outlives-chain",
    "issuer-subject-mismatch",
    "capability-widened",
    "topic-widened",
    "audience-widened",
    "chain-not-delegate",
    "depth-exceeded",
    "bad-signature",
    "revoked",
    "not-anchored",
    "wrong-action",
    "subject-mismatch",
    "audience-mismatch",
    "capability-not-granted",
    "topic-not-granted",
    "chain-too-long",
];

impl Denied {
    /// The short name of the rule that failed (the prefix of the message).
    pub fn rule(&self) -> &'static str {
        match self {
            Denied::NoToken => "no-token",
            Denied::Expired { .. } => "expired",
            Denied::OutlivesChain { .. } => "outlives-chain",
            Denied::IssuerSubjectMismatch { .. } => "issuer-subject-mismatch",
            Denied::CapabilityWidened { .. } => "capability-widened",
            Denied::TopicWidened { .. } => "topic-widened",
            Denied::AudienceWidened { .. } => "audience-widened",
            Denied::ChainNotDelegate { .. } => "chain-not-delegate",
            Denied::DepthExceeded { .. } => "depth-exceeded",
            Denied::BadSignature { .. } => "bad-signature",
            Denied::Revoked { .. } => "revoked",
            Denied::NotAnchored { .. } => "not-anchored",
            Denied::WrongAction { .. } => "wrong-action",
            Denied::SubjectMismatch { .. } => "subject-mismatch",
            Denied::AudienceMismatch { .. } => "audience-mismatch",
            Denied::CapabilityNotGranted { .. } => "capability-not-granted",
            Denied::TopicNotGranted { .. } => "topic-not-granted",
            Denied::ChainTooLong { .. } => "chain-too-long",
        }
    }
}

/// Verifies token chains; remembers the ids of tokens whose signature it has checked, so a
/// chain seen before costs only the signature of its new invocation token.
pub struct Verifier {
    cache: Mutex<SigCache>,
}

struct SigCache {
    set: HashSet<TokenId>,
    order: VecDeque<TokenId>,
    cap: usize,
}

impl SigCache {
    fn insert(&mut self, id: TokenId) {
        if self.cap == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Self::with_cache_capacity(65_536)
    }
}

impl Verifier {
    /// A verifier remembering at most `cap` verified token ids (0 = no cache).
    pub fn with_cache_capacity(cap: usize) -> Self {
        Self {
            cache: Mutex::new(SigCache {
                set: HashSet::new(),
                order: VecDeque::new(),
                cap,
            }),
        }
    }

    /// Number of cached token ids.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.set.len()).unwrap_or(0)
    }

    fn signature_ok(&self, t: &DmsToken, id: &TokenId, signing_bytes: &[u8]) -> bool {
        if let Ok(c) = self.cache.lock()
            && c.set.contains(id)
        {
            return true;
        }
        let ok = t.verify_signature_of(signing_bytes);
        if ok && let Ok(mut c) = self.cache.lock() {
            c.insert(*id);
        }
        ok
    }

    /// Verifies the first token of `list` that authorizes the request; if none does, returns
    /// the denial of the first token.
    pub fn verify_any(
        &self,
        list: &TokenList,
        req: &Request<'_>,
        anchors: &Anchors,
        now: u64,
    ) -> Result<Authorized, Denied> {
        let mut first = None;
        for t in &list.tok {
            match self.verify(t, req, anchors, now) {
                Ok(a) => return Ok(a),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or(Denied::NoToken))
    }

    /// Verifies that `token` authorizes `req` for a receiver holding `anchors`, at time `now`
    /// (unix ns). Checks, for every link: expiry, outliving the parent, issuer = parent's
    /// subject, parent is a delegation, attenuation of capabilities, topics and audience,
    /// depth limits, revocation and signature; then that the chain is anchored.
    pub fn verify(
        &self,
        token: &Token,
        req: &Request<'_>,
        anchors: &Anchors,
        now: u64,
    ) -> Result<Authorized, Denied> {
        let links = token.links();
        let n = links.len();
        if n > MAX_CHAIN_LEN {
            return Err(Denied::ChainTooLong { len: n });
        }
        let leaf = links[0];
        if leaf.act != req.action {
            return Err(Denied::WrongAction {
                wanted: req.action,
                got: leaf.act,
            });
        }
        if &leaf.sub != req.subject {
            return Err(Denied::SubjectMismatch {
                sub: leaf.sub.clone(),
                sender: req.subject.clone(),
            });
        }
        if let Some(aud) = &leaf.aud
            && aud != req.audience
        {
            return Err(Denied::AudienceMismatch { aud: aud.clone() });
        }
        if !Capability::any_implies(&leaf.cap, req.capability) {
            return Err(Denied::CapabilityNotGranted {
                cap: req.capability.clone(),
            });
        }
        if let Some(topic) = req.topic
            && !Capability::any_implies(&leaf.topic, topic)
        {
            return Err(Denied::TopicNotGranted {
                topic: topic.clone(),
            });
        }
        // Structural rules first: they are cheap and need no crypto.
        check_structure(&links, now)?;
        // Bottom-up: each token signs its parent's id, so ids and signatures go root first.
        let mut ids = [TokenId([0; 32]); MAX_CHAIN_LEN];
        for i in (0..n).rev() {
            let cid = if i + 1 < n { Some(ids[i + 1]) } else { None };
            let bytes = links[i].signing_bytes(cid.as_ref());
            ids[i] = links[i].id_of(&bytes);
            if !self.signature_ok(links[i], &ids[i], &bytes) {
                return Err(Denied::BadSignature { at: i });
            }
            check_revoked(&links, i, &ids[i], anchors)?;
        }
        let root = links[n - 1];
        let done = |anchor| {
            Ok(Authorized {
                anchor,
                expires: leaf.exp,
                chain_len: n,
            })
        };
        if root.iss == anchors.did {
            return done(Anchor::SelfIssued);
        }
        if anchors.roots.contains(&root.iss) {
            return done(Anchor::Root(root.iss.clone()));
        }
        let mut first_err = None;
        for a in anchors.require.iter().filter(|a| a.dms().sub == root.iss) {
            match self.check_require(a, root, n, anchors, now) {
                Ok(id) => return done(Anchor::Require(id)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(Denied::NotAnchored {
            issuer: root.iss.clone(),
        }))
    }

    /// A require anchor acts as the parent of the chain's root.
    fn check_require(
        &self,
        anchor: &Token,
        root: &DmsToken,
        n: usize,
        anchors: &Anchors,
        now: u64,
    ) -> Result<TokenId, Denied> {
        let a = anchor.dms();
        if a.exp <= now {
            return Err(Denied::Expired { at: n, exp: a.exp });
        }
        check_depth(a, n, n)?;
        check_link(root, a, n - 1)?;
        let cid = a.chain.as_ref().map(|c| c.id());
        let bytes = a.signing_bytes(cid.as_ref());
        let id = a.id_of(&bytes);
        if !self.signature_ok(a, &id, &bytes) {
            return Err(Denied::BadSignature { at: n });
        }
        if anchors.revocations.revoked_by_nonce(a) {
            return Err(Denied::Revoked {
                at: n,
                id,
                by: a.iss.clone(),
            });
        }
        for by in anchors.revocations.revokers(&id) {
            if by == &a.iss || by == &anchors.did {
                return Err(Denied::Revoked {
                    at: n,
                    id,
                    by: by.clone(),
                });
            }
        }
        Ok(id)
    }
}

/// Expiry, depth and link rules of every token of a chain (`[leaf, …, root]`), no crypto.
pub(crate) fn check_structure(links: &[&DmsToken], now: u64) -> Result<(), Denied> {
    for (i, t) in links.iter().enumerate() {
        if t.exp <= now {
            return Err(Denied::Expired { at: i, exp: t.exp });
        }
        check_depth(t, i, i)?;
        if let Some(parent) = links.get(i + 1) {
            check_link(t, parent, i)?;
        }
    }
    Ok(())
}

/// `t` sits at position `at` with `below` tokens chained below it.
fn check_depth(t: &DmsToken, at: usize, below: usize) -> Result<(), Denied> {
    if t.depth > 0 && below as u64 > t.depth {
        return Err(Denied::DepthExceeded {
            at,
            depth: t.depth,
            below,
        });
    }
    Ok(())
}

/// Rules between a child at position `at` and its parent.
fn check_link(child: &DmsToken, parent: &DmsToken, at: usize) -> Result<(), Denied> {
    if parent.act != Action::Delegate {
        return Err(Denied::ChainNotDelegate {
            at: at + 1,
            act: parent.act,
        });
    }
    if child.exp > parent.exp {
        return Err(Denied::OutlivesChain { at });
    }
    if child.iss != parent.sub {
        return Err(Denied::IssuerSubjectMismatch {
            at,
            iss: child.iss.clone(),
            parent_sub: parent.sub.clone(),
        });
    }
    if let Some(cap) = child
        .cap
        .iter()
        .find(|c| !Capability::any_implies(&parent.cap, c))
    {
        return Err(Denied::CapabilityWidened {
            at,
            cap: cap.clone(),
        });
    }
    if let Some(topic) = child
        .topic
        .iter()
        .find(|c| !Capability::any_implies(&parent.topic, c))
    {
        return Err(Denied::TopicWidened {
            at,
            topic: topic.clone(),
        });
    }
    if let Some(fixed) = &parent.aud
        && child.aud.as_ref() != Some(fixed)
    {
        return Err(Denied::AudienceWidened {
            at,
            fixed: fixed.clone(),
        });
    }
    Ok(())
}

/// A revocation counts when issued by the token's issuer, an issuer above it, or this context.
fn check_revoked(
    links: &[&DmsToken],
    i: usize,
    id: &TokenId,
    anchors: &Anchors,
) -> Result<(), Denied> {
    if anchors.revocations.revoked_by_nonce(links[i]) {
        return Err(Denied::Revoked {
            at: i,
            id: *id,
            by: links[i].iss.clone(),
        });
    }
    for by in anchors.revocations.revokers(id) {
        if by == &anchors.did || links[i..].iter().any(|t| &t.iss == by) {
            return Err(Denied::Revoked {
                at: i,
                id: *id,
                by: by.clone(),
            });
        }
    }
    Ok(())
}
