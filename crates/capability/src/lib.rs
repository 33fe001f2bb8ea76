//! Who may do what: capability tokens in NuNet's JSON shape (`{"dms": {act, iss, sub, aud,
//! topic, cap, nonce, exp, depth, chain, sig}}`), their deterministic signing bytes, and
//! verification of a token chain against a context's trust anchors (root DIDs, require and
//! provide tokens) and revocations.
//!
//! The entry points are [`Token::issue`] to make tokens, [`Anchors`] for a context's trust
//! anchors (and to build tokens chained on its provide anchors), and [`Verifier::verify`],
//! which answers [`Authorized`] or a [`Denied`] naming the rule that failed.
//!
//! This crate decides; it does not move messages, read the network or prompt anyone. Its only
//! I/O is the capability context file ([`ContextFile`]).

/// Anchors of a capability context and building tokens from them.
pub mod anchors;
pub mod context;
/// Hierarchical capability paths (`/a` implies `/a/b`).
pub mod path;
/// Revocations and the set of them a context holds.
pub mod revocation;
pub mod token;
/// Chain verification with a cache of verified signatures.
pub mod verify;

pub use anchors::{Anchors, SelfSign, TokenSpec};
pub use context::{ContextError, ContextFile};
pub use path::{Capability, PathError};
pub use revocation::RevocationSet;
pub use token::{Action, DmsToken, Token, TokenError, TokenId, TokenList};
pub use verify::{Anchor, Authorized, Denied, Request, Verifier};

/// Now, in unix nanoseconds (the unit of `exp`).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}
