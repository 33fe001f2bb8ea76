//! A capability context on disk: `<dir>/<name>.json` holding its [`Anchors`], written
//! atomically (temp file, fsync, rename) with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Anchors;

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

    /// Whether the context exists.
    pub fn exists(&self, name: &str) -> bool {
        self.path(name).map(|p| p.exists()).unwrap_or(false)
    }

    /// Names of all contexts.
    pub fn list(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|f| f.strip_suffix(".json"))
                    .map(String::from)
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        out.sort();
        out
    }

    /// Loads a context.
    pub fn load(&self, name: &str) -> Result<Anchors, ContextError> {
        let path = self.path(name)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContextError::NotFound { name: name.into() });
            }
            Err(source) => return Err(ContextError::Io { path, source }),
        };
        serde_json::from_slice(&bytes).map_err(|e| ContextError::Corrupt {
            path,
            reason: e.to_string(),
        })
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
