//! Capability contexts held by a Ledger wallet, named as NuNet names them: `ledger` (account
//! 0), `ledger:<n>` (account n) or `ledger:<alias>` (an account named in
//! `<user_dir>/ledger_aliases.json`, set with `nunet key ledger-alias set`). The context file
//! is `cap/<n or alias>` (`cap/ledger` for the bare name), as NuNet's `cap new` writes it.
//!
//! Signing goes through NuNet's `ledger-cli` (found on PATH, or at `NUNET_LEDGER_CLI`), see
//! `nunet_did::signer`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nunet_did::{ExternalSigner, signer::DEFAULT_TIMEOUT};

/// Environment variable naming the signer program (default: `ledger-cli` on PATH).
pub const PROGRAM_ENV: &str = "NUNET_LEDGER_CLI";
/// Environment variable overriding how long the wallet may take per signature (seconds).
const TIMEOUT_ENV: &str = "NUNET_LEDGER_TIMEOUT_SECS";
/// NuNet's alias table, under the user directory.
const ALIASES: &str = "ledger_aliases.json";

/// What a context name means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextRef {
    /// The file name under `cap/` (without extension).
    pub file: String,
    /// The Ledger account, for a Ledger context.
    pub ledger: Option<u32>,
}

/// Resolves `ledger`, `ledger:<n>` and `ledger:<alias>`; any other name is a keystore context
/// of that name.
pub fn resolve(name: &str, user_dir: &Path) -> Result<ContextRef> {
    let rest = match name.strip_prefix("ledger") {
        Some("") => {
            return Ok(ContextRef {
                file: "ledger".into(),
                ledger: Some(0),
            });
        }
        Some(r) => match r.strip_prefix(':') {
            Some(r) => r.trim(),
            None => {
                return Ok(ContextRef {
                    file: name.into(),
                    ledger: None,
                });
            }
        },
        None => {
            return Ok(ContextRef {
                file: name.into(),
                ledger: None,
            });
        }
    };
    if rest.is_empty() {
        bail!("{name:?}: give an account number or alias after `ledger:`");
    }
    let account = match rest.parse::<u32>() {
        Ok(n) => n,
        Err(_) if rest.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'+') => {
            bail!("{name:?}: a Ledger account is a number from 0 to {}", u32::MAX)
        }
        Err(_) => *read_aliases(user_dir)?.get(rest).with_context(|| {
            format!(
                "ledger alias {rest:?} not found in {} (set it with `nunet key ledger-alias set {rest} <account>`)",
                user_dir.join(ALIASES).display()
            )
        })?,
    };
    Ok(ContextRef {
        file: rest.into(),
        ledger: Some(account),
    })
}

/// Opens the Ledger signer for `account`.
pub fn open(account: u32) -> Result<ExternalSigner> {
    let program = std::env::var_os(PROGRAM_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ledger-cli"));
    let timeout = match std::env::var(TIMEOUT_ENV) {
        Ok(s) => match s.parse::<u64>() {
            Ok(n) if n > 0 => Duration::from_secs(n),
            _ => bail!("{TIMEOUT_ENV}={s:?}: give a number of seconds above 0"),
        },
        Err(_) => DEFAULT_TIMEOUT,
    };
    let signer = ExternalSigner::open(&program, account, timeout).with_context(|| {
        format!(
            "opening Ledger account {account} (NuNet's ledger-cli on PATH, or the program in {PROGRAM_ENV})"
        )
    })?;
    eprintln!(
        "Ledger account {account} ({}): confirm each signature on the device",
        nunet_did::Signer::did(&signer)
    );
    Ok(signer)
}

fn read_aliases(user_dir: &Path) -> Result<BTreeMap<String, u32>> {
    let path = user_dir.join(ALIASES);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{}: expected {{\"alias\": account, …}}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Sets `alias` to `account` in the alias table (written whole, 0600, through a rename).
pub fn set_alias(user_dir: &Path, alias: &str, account: u32) -> Result<()> {
    if alias.is_empty()
        || alias.contains(':')
        || alias.bytes().all(|b| b.is_ascii_digit())
        || !alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || alias.starts_with('.')
    {
        bail!(
            "{alias:?} cannot be a Ledger alias: use letters, digits, '.', '_' or '-', not only digits"
        );
    }
    let mut table = read_aliases(user_dir)?;
    table.insert(alias.into(), account);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(user_dir)
            .with_context(|| format!("creating {}", user_dir.display()))?;
    }
    let path = user_dir.join(ALIASES);
    let tmp = user_dir.join(format!(".{ALIASES}.tmp{}", std::process::id()));
    // Left by a process of the same pid that died mid-write: ours to replace.
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(&table)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_resolve_as_nunet_resolves_them() {
        let top = tempfile::tempdir().unwrap();
        // A user directory that does not exist yet (a fresh ~/.nunet).
        let d = top.path().join("home");
        let d = d.as_path();
        let r = |n: &str| resolve(n, d);
        assert_eq!(
            r("ledger").unwrap(),
            ContextRef {
                file: "ledger".into(),
                ledger: Some(0)
            }
        );
        assert_eq!(r("ledger:3").unwrap().ledger, Some(3));
        assert_eq!(r("ledger:3").unwrap().file, "3");
        assert_eq!(r("user").unwrap().ledger, None);
        assert_eq!(r("ledgers").unwrap().ledger, None);
        assert!(r("ledger:").is_err());
        assert!(r("ledger:-1").is_err());
        let e = r("ledger:finance").unwrap_err().to_string();
        assert!(e.contains("ledger-alias set finance"), "{e}");
        set_alias(d, "finance", 7).unwrap();
        set_alias(d, "ops", 2).unwrap();
        assert_eq!(
            r("ledger:finance").unwrap(),
            ContextRef {
                file: "finance".into(),
                ledger: Some(7)
            }
        );
        assert_eq!(r("ledger:ops").unwrap().ledger, Some(2));
        assert!(set_alias(d, "12", 1).is_err());
        assert!(set_alias(d, "a:b", 1).is_err());
        // NuNet's own file shape reads back.
        std::fs::write(d.join(ALIASES), "{\"x\": 4}\n").unwrap();
        assert_eq!(r("ledger:x").unwrap().ledger, Some(4));
    }
}
