//! The dashboard's access token: 32 random bytes (64 hex characters), new at every start of
//! the daemon, written to `<data_dir>/dashboard.token` with mode `0600` inside the `0700`
//! data dir. `nunet dashboard` reads it and prints the URL to open; the page sends it as
//! `Authorization: Bearer <token>` (never a cookie, so no other site can make the browser send
//! it).

use std::io::Write;
use std::path::Path;

use crate::DashboardError;

/// The token file's name under the data dir.
pub const TOKEN_FILE: &str = "dashboard.token";

/// One run's token.
pub struct Token {
    hex: String,
}

impl Token {
    /// 32 bytes from the OS's random source.
    pub fn generate() -> Result<Self, DashboardError> {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).map_err(|e| DashboardError::Random(e.to_string()))?;
        Ok(Self {
            hex: hex::encode(b),
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
        let (a, b) = (given.trim().as_bytes(), self.hex.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
