//! Who may do what: capability tokens in NuNet's JSON shape (`{"dms": {act, iss, sub, aud,
//! topic, cap, nonce, exp, depth, chain, sig}}`), their deterministic signing bytes, and
//! verification of a token chain against a context's trust anchors (root DIDs, require and
//! provide tokens) and revocations.
//!
//! Two token formats are read, verified and issued ([`TokenFormat`]): this node's, signed
//! over fixed binary signing bytes, and NuNet's (`{"uri": …}` DIDs), signed over Go's JSON of
//! the token ([`gojson`]), so tokens issued by NuNet's DMS and its tools verify here and
//! tokens issued here in NuNet's format verify there. A chain may mix both: each link's
//! signature is checked by the rule of its own format.
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
pub mod gojson;
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
pub use token::{Action, DmsToken, Token, TokenError, TokenFormat, TokenId, TokenList};
pub use verify::{Anchor, Authorized, Denied, RULES, Request, Verifier};

/// Longest lifetime [`expiry_after`] gives a token or a message: 100 years. Expiries are
/// `u64` nanoseconds, which end in the year 2554; a longer lifetime cast to them would wrap
/// to an arbitrary, possibly past, instant.
pub const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// Why an expiry could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// The lifetime is longer than [`MAX_LIFETIME`].
    #[error(
        "a lifetime of {} s is longer than the longest allowed, {} s (100 years)",
        .0.as_secs(),
        MAX_LIFETIME.as_secs()
    )]
    TooLong(std::time::Duration),
    /// `now` plus the lifetime is past what an expiry can name (the year 2554).
    #[error("the expiry would be past the year 2554, the last one a token can name")]
    PastEnd,
}

/// The expiry (Unix ns) `ttl` after `now`: refused, never wrapped or clamped, when `ttl` is
/// longer than [`MAX_LIFETIME`] or the sum passes `u64`.
pub fn expiry_after(now: u64, ttl: std::time::Duration) -> Result<u64, ExpiryError> {
    if ttl > MAX_LIFETIME {
        return Err(ExpiryError::TooLong(ttl));
    }
    let ns = u64::try_from(ttl.as_nanos()).map_err(|_| ExpiryError::TooLong(ttl))?;
    now.checked_add(ns).ok_or(ExpiryError::PastEnd)
}

/// Now, in unix nanoseconds (the unit of `exp`).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn expiries_are_exact_or_refused() {
        assert_eq!(expiry_after(5, Duration::from_nanos(7)), Ok(12));
        assert_eq!(
            expiry_after(0, MAX_LIFETIME).ok(),
            u64::try_from(MAX_LIFETIME.as_nanos()).ok()
        );
        // 1e12 s is 1e21 ns: cast to u64 it wrapped to about 3,500 s.
        let huge = Duration::from_secs(1_000_000_000_000);
        assert_eq!(
            expiry_after(now_ns(), huge),
            Err(ExpiryError::TooLong(huge))
        );
        assert_eq!(
            expiry_after(0, Duration::MAX),
            Err(ExpiryError::TooLong(Duration::MAX))
        );
        assert_eq!(
            expiry_after(u64::MAX - 1, Duration::from_secs(1)),
            Err(ExpiryError::PastEnd)
        );
    }
}
