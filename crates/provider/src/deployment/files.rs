//! Which provider paths an ensemble may name: microVM kernels, initrds and root filesystems,
//! and WASM modules, only from under the directories the operator allows
//! (`<data_dir>/images` and `job.image_roots`); host directories mounted as `local` volumes,
//! only from under `job.volume_roots`.
//!
//! A path is judged twice: as written (normalised without touching the disk, so a refused
//! path tells a deployer nothing about what exists on the host), then as resolved by the
//! filesystem (symlinks), and the resolved path is what the executor gets.

use std::path::{Path, PathBuf};

use nunet_actor::ActorError;

use super::failed;

/// The allowed roots, resolved once at start.
#[derive(Clone, Debug)]
pub(crate) struct LocalFiles {
    roots: Vec<PathBuf>,
    /// The config key that lists the roots (named in refusals).
    key: &'static str,
    /// Directories (volumes) rather than regular files (images, modules).
    dirs: bool,
}

pub(crate) use nunet_files::area::normalise;

/// Roots resolved when they exist, so a root reached through a symlink still matches.
fn resolved(roots: impl Iterator<Item = PathBuf>) -> Vec<PathBuf> {
    roots
        .filter_map(|r| r.canonicalize().ok().or_else(|| normalise(&r)))
        .collect()
}

impl LocalFiles {
    /// Files: `<data_dir>/images` plus `extra` (the operator's `job.image_roots`).
    pub(crate) fn new(data_dir: &Path, extra: &[PathBuf]) -> Self {
        Self {
            roots: resolved(std::iter::once(data_dir.join("images")).chain(extra.iter().cloned())),
            key: "job.image_roots",
            dirs: false,
        }
    }

    /// Directories under the operator's `job.volume_roots`.
    pub(crate) fn volumes(roots: &[PathBuf]) -> Self {
        Self {
            roots: resolved(roots.iter().cloned()),
            key: "job.volume_roots",
            dirs: true,
        }
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
        let outside = || {
            let roots = self
                .roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let served = if self.dirs {
                "mounts directories"
            } else {
                "serves files"
            };
            if roots.is_empty() {
                failed(format!(
                    "{what} {p:?}: this provider allows no host path here ({} is empty)",
                    self.key
                ))
            } else {
                failed(format!(
                    "{what} {p:?}: this provider {served} only from under {roots} ({})",
                    self.key
                ))
            }
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
        match (self.dirs, real.is_dir(), real.is_file()) {
            (true, true, _) | (false, _, true) => Ok(real),
            (true, false, _) => Err(failed(format!("{what} {p:?}: not a directory"))),
            (false, _, false) => Err(failed(format!("{what} {p:?}: not a regular file"))),
        }
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

    #[test]
    fn only_directories_under_the_volume_roots_resolve() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("shared");
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::fs::write(root.join("file"), b"f").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        let v = LocalFiles::volumes(std::slice::from_ref(&root));
        assert_eq!(
            v.resolve("src", root.join("in").to_str().unwrap()).unwrap(),
            root.join("in").canonicalize().unwrap()
        );
        let refused = |p: &str| v.resolve("src", p).unwrap_err().message;
        assert!(refused(root.join("file").to_str().unwrap()).contains("not a directory"));
        for bad in [
            "/etc".to_string(),
            format!("{}/../", root.display()),
            root.join("etc").display().to_string(),
            root.display().to_string(),
        ] {
            assert!(
                refused(&bad).contains("only from under"),
                "{bad}: {}",
                refused(&bad)
            );
            assert!(refused(&bad).contains("job.volume_roots"), "{bad}");
        }
        let none = LocalFiles::volumes(&[]);
        assert!(
            none.resolve("src", "/srv")
                .unwrap_err()
                .message
                .contains("job.volume_roots is empty")
        );
    }
}
