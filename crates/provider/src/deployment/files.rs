//! Which provider files an ensemble may name: microVM kernels, initrds and root filesystems,
//! and WASM modules, only from under the directories the operator allows
//! (`<data_dir>/images` and `job.image_roots`).
//!
//! A path is judged twice: as written (normalised without touching the disk, so a refused
//! path tells a deployer nothing about what exists on the host), then as resolved by the
//! filesystem (symlinks), and the resolved path is what the executor gets.

use std::path::{Component, Path, PathBuf};

use nunet_actor::ActorError;

use super::failed;

/// The allowed roots, resolved once at start.
#[derive(Clone, Debug)]
pub(crate) struct LocalFiles {
    roots: Vec<PathBuf>,
}

/// `p` with `.` and `..` folded away lexically; `None` when `..` would leave `/`.
fn normalise(p: &Path) -> Option<PathBuf> {
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

impl LocalFiles {
    /// `<data_dir>/images` plus `extra` (the operator's `job.image_roots`). Roots are
    /// resolved when they exist, so a root reached through a symlink still matches.
    pub(crate) fn new(data_dir: &Path, extra: &[PathBuf]) -> Self {
        let roots = std::iter::once(data_dir.join("images"))
            .chain(extra.iter().cloned())
            .filter_map(|r| r.canonicalize().ok().or_else(|| normalise(&r)))
            .collect();
        Self { roots }
    }

    fn allowed(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r) && p != r)
    }

    /// The resolved path of `p` (field `what` of the ensemble), or why it is refused.
    pub(crate) fn resolve(&self, what: &str, p: &str) -> Result<PathBuf, ActorError> {
        let raw = Path::new(p.trim());
        if p.contains("://") || !raw.is_absolute() {
            return Err(failed(format!(
                "{what} {p:?}: name an absolute path on the provider (URLs are not fetched)"
            )));
        }
        let roots = || {
            self.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let outside = || {
            failed(format!(
                "{what} {p:?}: this provider serves files only from under {} (job.image_roots)",
                roots()
            ))
        };
        match normalise(raw) {
            Some(n) if self.allowed(&n) => {}
            _ => return Err(outside()),
        }
        let real = raw
            .canonicalize()
            .map_err(|_| failed(format!("{what} {p:?}: no such file on this provider")))?;
        if !self.allowed(&real) {
            return Err(outside()); // a symlink out of the root
        }
        if !real.is_file() {
            return Err(failed(format!("{what} {p:?}: not a regular file")));
        }
        Ok(real)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_files_under_the_roots_resolve() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let images = data.join("images");
        let extra = d.path().join("extra");
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(images.join("k"), b"k").unwrap();
        std::fs::write(extra.join("r"), b"r").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), images.join("link")).unwrap();
        let f = LocalFiles::new(&data, std::slice::from_ref(&extra));
        let ok = |p: &Path| f.resolve("kernel_image", p.to_str().unwrap());
        assert!(ok(&images.join("k")).is_ok());
        assert!(ok(&extra.join("r")).is_ok());
        for bad in [
            PathBuf::from("/etc/shadow"),
            d.path().join("secret"),
            images.join("../../secret"),
            images.join("link"),
            images.clone(),
        ] {
            let e = ok(&bad).unwrap_err();
            assert!(
                e.message.contains("serves files only from under")
                    || e.message.contains("not a regular file"),
                "{bad:?}: {}",
                e.message
            );
        }
        // A path outside the roots is refused before the disk is asked, so the answer is the
        // same whether the file exists or not.
        let gone = ok(Path::new("/nonexistent/x")).unwrap_err().message;
        let there = ok(Path::new("/etc/hostname")).unwrap_err().message;
        assert_eq!(
            gone.replace("/nonexistent/x", "P"),
            there.replace("/etc/hostname", "P")
        );
        assert!(
            ok(&images.join("missing"))
                .unwrap_err()
                .message
                .contains("no such file")
        );
        assert!(f.resolve("module", "https://x/y.wasm").is_err());
        assert!(f.resolve("module", "relative.wasm").is_err());
    }
}
