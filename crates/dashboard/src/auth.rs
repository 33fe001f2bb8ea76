//! The dashboard's access token: 32 random bytes (64 hex characters), new at every start of
//! the daemon, written to `<data_dir>/dashboard.token` with mode `0600` inside the `0700`
//! data dir. The page sends it as `Authorization: Bearer <token>` (never a cookie, so no other
//! site can make the browser send it).
//!
//! The token itself never goes into a URL. `nunet dashboard` reads it, asks the daemon for a
//! one-time [`Codes`] entry (used once, within [`CODE_TTL`]) and prints a URL with that code;
//! the page trades the code for the token. A URL left in a browser's history, a command line or
//! a terminal's scrollback is spent.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::DashboardError;

/// The token file's name under the data dir.
pub const TOKEN_FILE: &str = "dashboard.token";

/// How long a one-time code may wait for its page.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// Codes waiting at once; beyond it the oldest is dropped.
pub const MAX_CODES: usize = 16;

fn random_hex<const N: usize>() -> Result<String, DashboardError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| DashboardError::Random(e.to_string()))?;
    Ok(hex::encode(b))
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One-time codes that a page trades for the token.
#[derive(Default)]
pub struct Codes {
    issued: Mutex<HashMap<String, Instant>>,
}

impl Codes {
    /// A new code (128 random bits, 32 hex characters), valid once within [`CODE_TTL`].
    pub fn issue(&self) -> Result<String, DashboardError> {
        let code = random_hex::<16>()?;
        let now = Instant::now();
        let mut m = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, at| now.duration_since(*at) < CODE_TTL);
        while m.len() >= MAX_CODES {
            let Some(oldest) = m.iter().min_by_key(|(_, at)| **at).map(|(c, _)| c.clone()) else {
                break;
            };
            m.remove(&oldest);
        }
        m.insert(code.clone(), now);
        Ok(code)
    }

    /// Whether `code` was issued and has not lapsed; it is spent either way.
    pub fn redeem(&self, code: &str) -> bool {
        let mut m = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let found = m
            .keys()
            .find(|c| same(c.as_bytes(), code.as_bytes()))
            .cloned();
        found
            .and_then(|c| m.remove(&c))
            .is_some_and(|at| at.elapsed() < CODE_TTL)
    }
}

/// One run's token.
pub struct Token {
    hex: String,
}

impl Token {
    /// 32 bytes from the OS's random source.
    pub fn generate() -> Result<Self, DashboardError> {
        Ok(Self {
            hex: random_hex::<32>()?,
        })
    }

    /// The token as the page sends it.
    pub fn as_str(&self) -> &str {
        &self.hex
    }

    /// Writes the token to `path`, readable by this user only; replaces an older one.
    pub fn write(&self, path: &Path) -> Result<(), DashboardError> {
        let err = |source| DashboardError::TokenFile {
            path: path.display().to_string(),
            source,
        };
        // A new file (mode 0600 from creation) renamed over the old one: no moment where the
        // token sits in a file others could read, and a reader never sees half of it.
        let tmp = path.with_extension("token.tmp");
        let _ = std::fs::remove_file(&tmp);
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(self.hex.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Whether an `Authorization` header value carries this token (compared in constant time).
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        same(given.trim().as_bytes(), self.hex.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once_and_only_the_latest_are_kept() {
        let c = Codes::default();
        let a = c.issue().expect("code");
        assert_eq!(a.len(), 32);
        assert!(!c.redeem("0".repeat(32).as_str()));
        assert!(c.redeem(&a));
        assert!(!c.redeem(&a), "spent");
        let first = c.issue().expect("code");
        let rest: Vec<String> = (0..MAX_CODES).map(|_| c.issue().expect("code")).collect();
        assert!(!c.redeem(&first), "the oldest went at the limit");
        assert!(rest.iter().all(|r| c.redeem(r)));
        // A lapsed code is refused (and spent).
        let old = c.issue().expect("code");
        if let Some(at) = c.issued.lock().expect("lock").get_mut(&old) {
            *at -= CODE_TTL;
        }
        assert!(!c.redeem(&old));
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted_and_the_file_is_private() {
        let t = Token::generate().expect("token");
        assert_eq!(t.as_str().len(), 64);
        assert!(t.admits(Some(&format!("Bearer {}", t.as_str()))));
        assert!(!t.admits(None));
        assert!(!t.admits(Some(t.as_str())), "no scheme");
        assert!(!t.admits(Some(&format!("Basic {}", t.as_str()))));
        assert!(!t.admits(Some(&format!("Bearer {}", &t.as_str()[..63]))));
        let mut wrong = t.as_str().to_string();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(!t.admits(Some(&format!("Bearer {wrong}"))));
        assert_ne!(t.as_str(), Token::generate().expect("token").as_str());

        let d = tempfile::tempdir().expect("dir");
        let p = d.path().join(TOKEN_FILE);
        std::fs::write(&p, "old").expect("old");
        t.write(&p).expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), t.as_str());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
