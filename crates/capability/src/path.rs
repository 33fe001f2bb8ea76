use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest capability path accepted.
pub const MAX_PATH_LEN: usize = 256;

/// Why a string is not a capability path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// Paths are absolute.
    #[error("capability {0:?} must start with '/'")]
    NotAbsolute(String),
    /// `//`, a trailing `/` or a control character.
    #[error(
        "capability {0:?} is malformed: no empty segments, trailing '/', spaces or control characters"
    )]
    Malformed(String),
    /// Over [`MAX_PATH_LEN`] bytes.
    #[error("capability is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
}

/// A capability (or broadcast topic): a path in a UNIX-like hierarchy.
///
/// `/` is the root capability and implies every other; `/a` implies `/a` and `/a/b`, but
/// neither `/ab` nor `/b`.
///
/// ```
/// use nunet_capability::Capability;
/// let node: Capability = "/dms/node".parse().unwrap();
/// assert!(node.implies(&"/dms/node/peers/ping".parse().unwrap()));
/// assert!(!node.implies(&"/dms/nodes".parse().unwrap()));
/// assert!(Capability::root().implies(&node));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Capability(String);

impl Capability {
    /// The root capability `/`.
    pub fn root() -> Self {
        Self("/".into())
    }

    /// Parses and checks a path.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        if s.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        if !s.starts_with('/') {
            return Err(PathError::NotAbsolute(s.into()));
        }
        if s == "/" {
            return Ok(Self::root());
        }
        let bad = s.ends_with('/')
            || s.contains("//")
            || s.chars().any(|c| c.is_control() || c.is_whitespace());
        if bad {
            return Err(PathError::Malformed(s.into()));
        }
        Ok(Self(s.into()))
    }

    /// Whether holding `self` grants `other`.
    pub fn implies(&self, other: &Capability) -> bool {
        self.0 == "/"
            || self.0 == other.0
            || (other.0.len() > self.0.len()
                && other.0.starts_with(&self.0)
                && other.0.as_bytes()[self.0.len()] == b'/')
    }

    /// Whether some capability in `held` implies `wanted`.
    pub fn any_implies(held: &[Capability], wanted: &Capability) -> bool {
        held.iter().any(|h| h.implies(wanted))
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl FromStr for Capability {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Capability {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Capability {
        Capability::parse(s).unwrap()
    }

    #[test]
    fn implication_table() {
        let cases = [
            ("/", "/", true),
            ("/", "/a/b", true),
            ("/a", "/a", true),
            ("/a", "/a/b", true),
            ("/a", "/a/b/c", true),
            ("/a", "/ab", false),
            ("/a", "/b", false),
            ("/a/b", "/a", false),
            ("/a", "/", false),
            ("/dms/node", "/dms/node/peers/ping", true),
            ("/dms/node", "/dms/nodeX/peers", false),
        ];
        for (held, wanted, expect) in cases {
            assert_eq!(
                c(held).implies(&c(wanted)),
                expect,
                "{held} implies {wanted}"
            );
        }
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            Capability::parse("a/b"),
            Err(PathError::NotAbsolute(_))
        ));
        assert!(matches!(
            Capability::parse(""),
            Err(PathError::NotAbsolute(_))
        ));
        for bad in ["/a/", "//", "/a//b", "/a b", "/a\n"] {
            assert!(
                matches!(Capability::parse(bad), Err(PathError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Capability::parse(&format!("/{}", "x".repeat(300))),
            Err(PathError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn prefix_implies_extension(a in "(/[a-z]{1,3}){1,3}", b in "(/[a-z]{1,3}){0,3}") {
            let parent = c(&a);
            let child = c(&format!("{a}{b}"));
            prop_assert!(parent.implies(&child));
            // Implication is never upward unless equal.
            prop_assert_eq!(child.implies(&parent), b.is_empty());
        }
    }
}
