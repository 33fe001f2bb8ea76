//! A capability context on disk: `<dir>/<name>.json` holding its [`Anchors`], written
//! atomically (temp file, fsync, rename) with mode 0600.
//!
//! A context NuNet's DMS wrote, `<dir>/<name>.cap` (`{"did":{"uri":…},"roots":[…],
//! "require":{"tok":[…]},"provide":{…},"revoke":{…}}`, keys in any case as Go reads them), is
//! read when there is no `<name>.json`: its tokens keep NuNet's format and the context
//! issues in NuNet's format. It is never rewritten: a change is saved to `<name>.json`, which
//! is read from then on, and NuNet's file stays as NuNet left it. Revocations NuNet's tools
//! add to it later are still honoured (read at every load: they only take trust away).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Anchors, TokenFormat, TokenList};

/// Problems reading or writing a context file.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// No such context.
    #[error("no capability context named {name:?} (create it with `nunet cap new {name}`)")]
    NotFound {
        /// Context name.
        name: String,
    },
    /// The context exists already.
    #[error("capability context {0:?} already exists")]
    AlreadyExists(String),
    /// Unparseable file.
    #[error("capability context file {path} is corrupted: {reason}")]
    Corrupt {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Bad name.
    #[error(
        "invalid context name {0:?}: use 1-64 characters from A-Z a-z 0-9 . _ - (not starting with '.')"
    )]
    InvalidName(String),
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
}

/// Where the contexts of a node live.
#[derive(Clone, Debug)]
pub struct ContextFile {
    dir: PathBuf,
}

impl ContextFile {
    /// Contexts stored in `dir` (created 0700 on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, name: &str) -> Result<PathBuf, ContextError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(ContextError::InvalidName(name.into()));
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// The file of a context (None for an invalid name).
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        self.path(name).ok()
    }

    /// Whether the context exists (in this node's file or NuNet's).
    pub fn exists(&self, name: &str) -> bool {
        self.path(name)
            .map(|p| p.exists() || p.with_extension("cap").exists())
            .unwrap_or(false)
    }

    /// Names of all contexts.
    pub fn list(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name().to_str().and_then(|f| {
                    f.strip_suffix(".json")
                        .or_else(|| f.strip_suffix(".cap"))
                        .map(String::from)
                })
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Loads a context (this node's file, else NuNet's `<name>.cap`).
    pub fn load(&self, name: &str) -> Result<Anchors, ContextError> {
        let path = self.path(name)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let cap = path.with_extension("cap");
                return match fs::read(&cap) {
                    Ok(b) => nunet_context(&cap, &b, crate::now_ns()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Err(ContextError::NotFound { name: name.into() })
                    }
                    Err(source) => Err(ContextError::Io { path: cap, source }),
                };
            }
            Err(source) => return Err(ContextError::Io { path, source }),
        };
        let mut anchors: Anchors =
            serde_json::from_slice(&bytes).map_err(|e| ContextError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        // NuNet's tools may still add revocations to NuNet's file after this node moved the
        // context to its own: those are honoured too (a revocation only takes trust away).
        let cap = path.with_extension("cap");
        match fs::read(&cap) {
            Ok(b) => {
                let view = nunet_view(&cap, &b)?;
                add_nunet_revocations(&cap, &view, &mut anchors, crate::now_ns())?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ContextError::Io { path: cap, source }),
        }
        Ok(anchors)
    }

    /// Creates a new context; refuses to replace one.
    pub fn create(&self, name: &str, anchors: &Anchors) -> Result<(), ContextError> {
        if self.exists(name) {
            return Err(ContextError::AlreadyExists(name.into()));
        }
        self.save(name, anchors)
    }

    /// Saves (replaces) a context atomically.
    pub fn save(&self, name: &str, anchors: &Anchors) -> Result<(), ContextError> {
        let path = self.path(name)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContextError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(io(&self.dir))?;
        let json = serde_json::to_vec_pretty(anchors).map_err(|e| ContextError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self
            .dir
            .join(format!(".{name}.json.tmp{}", std::process::id()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Reads NuNet's context file. NuNet drops expired tokens when it loads one, and so does this;
/// anything else that cannot be used (a DID of a key type this node does not read, a token
/// that is not a valid anchor) is an error naming it, never skipped.
fn nunet_context(path: &Path, bytes: &[u8], now: u64) -> Result<Anchors, ContextError> {
    let corrupt = |reason: String| ContextError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("NuNet context: {reason}"),
    };
    let view = nunet_view(path, bytes)?;
    let uri = |v: &serde_json::Value, what: &str| -> Result<nunet_did::Did, ContextError> {
        let s = v
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("uri")))
            .and_then(|(_, u)| u.as_str())
            .ok_or_else(|| corrupt(format!("{what} is not a DID ({{\"uri\": …}})")))?;
        s.parse().map_err(|e| corrupt(format!("{what} {s:?}: {e}")))
    };
    let did = uri(view.get("did").unwrap_or(&serde_json::Value::Null), "did")?;
    let mut a = Anchors::new(did);
    a.token_format = TokenFormat::NuNet;
    if let Some(roots) = view.get("roots").filter(|r| !r.is_null()) {
        for (i, r) in roots
            .as_array()
            .ok_or_else(|| corrupt("roots is not a list".into()))?
            .iter()
            .enumerate()
        {
            a.add_root(uri(r, &format!("roots[{i}]"))?);
        }
    }
    add_nunet_revocations(path, &view, &mut a, now)?;
    let tokens = |key: &str| nunet_tokens(path, &view, key);
    for (i, t) in tokens("require")?.tok.into_iter().enumerate() {
        if t.dms().exp > now {
            a.add_require(t, now)
                .map_err(|e| corrupt(format!("require[{i}]: {e}")))?;
        }
    }
    for (i, t) in tokens("provide")?.tok.into_iter().enumerate() {
        if t.dms().exp > now {
            a.add_provide(t, now)
                .map_err(|e| corrupt(format!("provide[{i}]: {e}")))?;
        }
    }
    Ok(a)
}

fn nunet_corrupt(path: &Path, reason: String) -> ContextError {
    ContextError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("NuNet context: {reason}"),
    }
}

/// NuNet's context file as an object with lower-cased top-level keys (Go matches keys
/// case-insensitively: NuNet's older files say "DID", "Roots", …).
fn nunet_view(
    path: &Path,
    bytes: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, ContextError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| nunet_corrupt(path, e.to_string()))?;
    let serde_json::Value::Object(m) = v else {
        return Err(nunet_corrupt(path, "not a JSON object".into()));
    };
    Ok(m.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect())
}

/// One of the token lists of NuNet's context (`{}` is NuNet's empty list: `tok` is omitempty).
fn nunet_tokens(
    path: &Path,
    view: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<TokenList, ContextError> {
    match view.get(key) {
        None | Some(serde_json::Value::Null) => Ok(TokenList::default()),
        Some(v) => {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut()
                && !o.contains_key("tok")
            {
                o.insert("tok".into(), serde_json::Value::Array(Vec::new()));
            }
            serde_json::from_value(v).map_err(|e| nunet_corrupt(path, format!("{key}: {e}")))
        }
    }
}

/// Adds the live revocations of NuNet's context to `a`.
fn add_nunet_revocations(
    path: &Path,
    view: &serde_json::Map<String, serde_json::Value>,
    a: &mut Anchors,
    now: u64,
) -> Result<(), ContextError> {
    for t in nunet_tokens(path, view, "revoke")?.tok {
        if t.dms().exp > now {
            a.revocations
                .add(t)
                .map_err(|e| nunet_corrupt(path, format!("revoke: {e}")))?;
        }
    }
    Ok(())
}
