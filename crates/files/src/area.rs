//! Which paths of this node a peer may read or write: its file area (`<data_dir>/files`,
//! where relative paths point) and the directories the operator lists in `files.roots`.
//!
//! A path is judged twice: as written (folded without touching the disk, so a refused path
//! tells the peer nothing about what exists here), then as the filesystem resolves it
//! (symlinks), and only the resolved path is used.

use std::path::{Component, Path, PathBuf};

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AreaError {
    /// Outside the area and the roots (as written or once resolved).
    #[error("{path:?}: outside what this node shares ({shared}; see files.roots)")]
    Outside {
        /// The path as given.
        path: String,
        /// The area and the roots.
        shared: String,
    },
    /// Nothing there.
    #[error("{0:?}: no such file or directory on this node")]
    Missing(String),
    /// A path ending in `/` that is not an existing directory.
    #[error("{0:?}: no such directory on this node (a path ending in / names one)")]
    NotADirectory(String),
    /// The directory a new destination would go into does not exist.
    #[error("{0:?}: its directory does not exist on this node")]
    NoParent(String),
    /// The area could not be made or read.
    #[error("{path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Where a transfer goes, as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An existing directory: the source goes into it under its own name.
    Into(PathBuf),
    /// An existing regular file: a file source replaces it.
    File(PathBuf),
    /// A new name in an existing directory: the source takes that name.
    New(PathBuf),
}

/// This node's shared paths.
#[derive(Debug, Clone)]
pub struct Area {
    home: PathBuf,
    roots: Vec<PathBuf>,
}

/// `p` with `.` and `..` folded away lexically; `None` when `..` would leave `/`.
pub fn normalise(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

impl Area {
    /// The area `home` (made `0700` when first needed) and the operator's `roots` (absolute
    /// directories; resolved now when they exist).
    pub fn new(home: PathBuf, roots: &[PathBuf]) -> Self {
        let roots = roots
            .iter()
            .filter_map(|r| r.canonicalize().ok().or_else(|| normalise(r)))
            .collect();
        Self { home, roots }
    }

    fn home_dir(&self) -> Result<PathBuf, AreaError> {
        use std::os::unix::fs::DirBuilderExt;
        let fail = |e: std::io::Error| AreaError::Io {
            path: self.home.display().to_string(),
            reason: e.to_string(),
        };
        if !self.home.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.home)
                .map_err(fail)?;
        }
        self.home.canonicalize().map_err(fail)
    }

    fn bases(&self) -> Result<Vec<PathBuf>, AreaError> {
        let mut b = vec![self.home_dir()?];
        b.extend(self.roots.iter().cloned());
        Ok(b)
    }

    fn shared(&self) -> String {
        std::iter::once(&self.home)
            .chain(&self.roots)
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn outside(&self, p: &str) -> AreaError {
        AreaError::Outside {
            path: p.to_string(),
            shared: self.shared(),
        }
    }

    /// `p` as written, made absolute (relative paths are in the area) and checked against
    /// the bases; `""` and `.` are the area itself.
    fn lexical(&self, p: &str, bases: &[PathBuf]) -> Result<PathBuf, AreaError> {
        let raw = Path::new(p);
        let joined = if raw.is_absolute() {
            raw.to_path_buf()
        } else {
            bases[0].join(raw)
        };
        match normalise(&joined) {
            Some(n) if within(&n, bases) => Ok(n),
            _ => Err(self.outside(p)),
        }
    }

    /// The file or directory a peer asks to read, resolved.
    pub fn source(&self, p: &str) -> Result<PathBuf, AreaError> {
        let bases = self.bases()?;
        let n = self.lexical(p, &bases)?;
        let real = n
            .canonicalize()
            .map_err(|_| AreaError::Missing(p.to_string()))?;
        if !within(&real, &bases) {
            return Err(self.outside(p)); // a symlink out of the area
        }
        Ok(real)
    }

    /// Where a peer asks to write, resolved: an existing directory, an existing file, or a
    /// new name in an existing directory.
    pub fn destination(&self, p: &str) -> Result<Destination, AreaError> {
        let bases = self.bases()?;
        let n = self.lexical(p, &bases)?;
        let wants_dir = p.ends_with('/');
        if let Ok(real) = n.canonicalize() {
            if !within(&real, &bases) {
                return Err(self.outside(p));
            }
            return match (real.is_dir(), wants_dir) {
                (true, _) => Ok(Destination::Into(real)),
                (false, true) => Err(AreaError::NotADirectory(p.to_string())),
                (false, false) => Ok(Destination::File(real)),
            };
        }
        if wants_dir {
            return Err(AreaError::NotADirectory(p.to_string()));
        }
        let (Some(parent), Some(name)) = (n.parent(), n.file_name()) else {
            return Err(self.outside(p));
        };
        let parent = parent
            .canonicalize()
            .map_err(|_| AreaError::NoParent(p.to_string()))?;
        if !within(&parent, &bases) {
            return Err(self.outside(p));
        }
        if !parent.is_dir() {
            return Err(AreaError::NoParent(p.to_string()));
        }
        Ok(Destination::New(parent.join(name)))
    }
}

/// Whether `p` is one of `bases` or under one.
fn within(p: &Path, bases: &[PathBuf]) -> bool {
    bases.iter().any(|b| p.starts_with(b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peers_reach_the_area_and_the_roots_only() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("data/files");
        let root = d.path().join("shared");
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        let a = Area::new(home.clone(), std::slice::from_ref(&root));
        // The area is made on first use, root's only.
        let src = a.source("").unwrap();
        assert_eq!(src, home.canonicalize().unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&home).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::write(home.join("f"), b"f").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), home.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", home.join("etc")).unwrap();
        assert!(a.source("f").is_ok());
        assert!(a.source(root.join("in").to_str().unwrap()).is_ok());
        for bad in [
            "../secret",
            "/etc/passwd",
            "link",
            "etc/passwd",
            "f/../../secret",
        ] {
            assert!(
                matches!(a.source(bad), Err(AreaError::Outside { .. })),
                "{bad}: {:?}",
                a.source(bad)
            );
        }
        assert_eq!(a.source("nope"), Err(AreaError::Missing("nope".into())));
        // The same answer whether the outside path exists or not.
        let there = a.source("/etc/hostname").unwrap_err().to_string();
        let gone = a.source("/nonexistent/x").unwrap_err().to_string();
        assert_eq!(
            there.replace("/etc/hostname", "P"),
            gone.replace("/nonexistent/x", "P")
        );

        let home_c = home.canonicalize().unwrap();
        assert_eq!(
            a.destination("").unwrap(),
            Destination::Into(home_c.clone())
        );
        assert_eq!(
            a.destination("f").unwrap(),
            Destination::File(home_c.join("f"))
        );
        assert_eq!(
            a.destination("new").unwrap(),
            Destination::New(home_c.join("new"))
        );
        assert_eq!(
            a.destination("no/such"),
            Err(AreaError::NoParent("no/such".into()))
        );
        // A trailing / names a directory, as with cp: never a new file of that name.
        assert_eq!(
            a.destination("models/"),
            Err(AreaError::NotADirectory("models/".into()))
        );
        assert_eq!(
            a.destination("f/"),
            Err(AreaError::NotADirectory("f/".into()))
        );
        for bad in ["etc/x", "../x", "/tmp/x", "link"] {
            assert!(
                matches!(a.destination(bad), Err(AreaError::Outside { .. })),
                "{bad}: {:?}",
                a.destination(bad)
            );
        }
    }
}
