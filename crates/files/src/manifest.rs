//! What a transfer carries: the directories and regular files under a source, each with its
//! size, permission bits and (files) BLAKE3 digest, built by walking the source without
//! following symlinks, and checked again by whoever receives one.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub use nunet_protocol::transfer::{
    Entry, Kind, MAX_ENTRIES, MAX_PATH_BYTES, MAX_SKIPPED_LISTED, MAX_TOTAL_PATH_BYTES, Manifest,
    ManifestRule, is_digest,
};

/// Read size when hashing.
const HASH_BUF: usize = 1 << 20;

/// Why a manifest could not be built or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The source could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// The source is neither a regular file nor a directory.
    #[error("{0}: not a regular file or a directory")]
    NotCopyable(String),
    /// The source has no name of its own (`/`).
    #[error("{0}: name a file or a directory under it, not the root itself")]
    NoName(String),
    /// A rule of a manifest is broken (too many entries, a bad path).
    #[error(transparent)]
    Rule(#[from] ManifestRule),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ManifestError + '_ {
    move |source| ManifestError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Feeds `path`'s bytes (at most `limit` of them) to `h`; returns how many there were.
/// `progress` is called with the bytes read so far.
pub(crate) fn digest_into(
    path: &Path,
    limit: u64,
    h: &mut blake3::Hasher,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?.take(limit);
    let mut buf = vec![0u8; HASH_BUF];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        h.update(&buf[..got]);
        n += got as u64;
        progress(n);
    }
}

/// BLAKE3 of `path`'s bytes (lowercase hex) and how many there were; `progress` is called
/// with the bytes read so far.
pub fn hash_file(
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(String, u64), ManifestError> {
    let mut h = blake3::Hasher::new();
    let n = digest_into(path, u64::MAX, &mut h, progress).map_err(io(path))?;
    Ok((h.finalize().to_hex().to_string(), n))
}

/// Where entry `path` of a manifest built from `src` is on the sending side (its first part
/// is `src`'s own name).
pub fn source_path(src: &Path, path: &str) -> std::path::PathBuf {
    match path.split_once('/') {
        Some((_, rest)) => src.join(rest),
        None => src.to_path_buf(),
    }
}

/// Walks `src` (a regular file or a directory, reached however the caller resolved it) and
/// lists it with digests. Symlinks inside a directory and anything that is not a regular
/// file or a directory are skipped and listed in [`Manifest::skipped`]; directories are
/// listed before their contents, names in byte order. `progress` gets the bytes hashed so
/// far, over all files.
pub fn build(src: &Path, progress: &mut dyn FnMut(u64)) -> Result<Manifest, ManifestError> {
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ManifestError::NoName(src.display().to_string()))?
        .to_string();
    let mut m = Manifest::default();
    let mut done = 0u64;
    walk(src, name, &mut m, &mut done, progress)?;
    if m.entries.iter().map(|e| e.path.len()).sum::<usize>() > MAX_TOTAL_PATH_BYTES {
        return Err(ManifestRule::TooMany.into());
    }
    Ok(m)
}

fn mode_of(meta: &std::fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o777
}

fn skip(m: &mut Manifest, rel: &str, why: &str) {
    m.skipped_total += 1;
    if m.skipped.len() < MAX_SKIPPED_LISTED {
        m.skipped.push(format!("{rel}: {why}"));
    }
}

fn walk(
    path: &Path,
    rel: String,
    m: &mut Manifest,
    done: &mut u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ManifestError> {
    if m.entries.len() >= MAX_ENTRIES {
        return Err(ManifestRule::TooMany.into());
    }
    if rel.len() > MAX_PATH_BYTES {
        return Err(ManifestRule::Entry {
            index: m.entries.len(),
            path: rel.chars().take(120).collect(),
            reason: "a path must have 1 to 1024 bytes",
        }
        .into());
    }
    // The top is followed if it is a link (the caller named it); nothing below it is.
    let meta = if m.entries.is_empty() {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(io(path))?;
    let ft = meta.file_type();
    if ft.is_file() {
        let base = *done;
        let (sha, size) = hash_file(path, &mut |n| progress(base + n))?;
        *done += size;
        m.entries.push(Entry {
            path: rel,
            kind: Kind::File,
            size,
            mode: mode_of(&meta),
            blake3: Some(sha),
        });
        return Ok(());
    }
    if !ft.is_dir() {
        if m.entries.is_empty() {
            return Err(ManifestError::NotCopyable(path.display().to_string()));
        }
        let why = if ft.is_symlink() {
            "a symlink (not followed)"
        } else {
            "not a regular file or a directory"
        };
        skip(m, &rel, why);
        return Ok(());
    }
    m.entries.push(Entry {
        path: rel.clone(),
        kind: Kind::Dir,
        size: 0,
        mode: mode_of(&meta),
        blake3: None,
    });
    let mut names = Vec::new();
    for d in std::fs::read_dir(path).map_err(io(path))? {
        names.push(d.map_err(io(path))?.file_name());
    }
    names.sort();
    for n in names {
        let Some(s) = n.to_str() else {
            skip(
                m,
                &format!("{rel}/{}", n.to_string_lossy()),
                "name is not UTF-8",
            );
            continue;
        };
        walk(&path.join(&n), format!("{rel}/{s}"), m, done, progress)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(path: &str, body: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            size: body.len() as u64,
            mode: 0o644,
            blake3: Some(blake3::hash(body).to_hex().to_string()),
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Dir,
            size: 0,
            mode: 0o755,
            blake3: None,
        }
    }

    #[test]
    fn a_walk_lists_directories_first_skips_links_and_hashes_files() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("data");
        std::fs::create_dir_all(top.join("b/c")).unwrap();
        std::fs::write(top.join("a.txt"), b"alpha").unwrap();
        std::fs::write(top.join("b/c/z"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", top.join("b/link")).unwrap();
        let mut last = 0;
        let m = build(&top, &mut |n| last = n).unwrap();
        m.check().unwrap();
        let paths: Vec<_> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["data", "data/a.txt", "data/b", "data/b/c", "data/b/c/z"]
        );
        assert_eq!(m.entries[1], {
            let mut e = file("data/a.txt", b"alpha");
            e.mode = m.entries[1].mode;
            e
        });
        assert_eq!(m.skipped, ["data/b/link: a symlink (not followed)"]);
        assert_eq!((m.bytes(), m.files(), last), (5, 2, 5));
        // A single file is one entry under its own name.
        let one = build(&top.join("a.txt"), &mut |_| {}).unwrap();
        assert_eq!(one.entries.len(), 1);
        assert_eq!(one.entries[0].path, "a.txt");
        assert!(matches!(
            build(Path::new("/"), &mut |_| {}),
            Err(ManifestError::NoName(_))
        ));
    }

    #[test]
    fn receivers_refuse_paths_that_could_leave_the_destination() {
        let ok = Manifest {
            entries: vec![dir("t"), dir("t/d"), file("t/d/f", b"x")],
            ..Default::default()
        };
        ok.check().unwrap();
        let bad = |entries: Vec<Entry>| {
            Manifest {
                entries,
                ..Default::default()
            }
            .check()
            .unwrap_err()
            .to_string()
        };
        for (entries, why) in [
            (vec![dir("t"), file("t/../x", b"")], "relative"),
            (vec![dir("t"), file("/etc/x", b"")], "relative"),
            (vec![dir("t"), file("t//x", b"")], "relative"),
            (vec![dir("t"), file("u/x", b"")], "listed before"),
            (vec![dir("t"), file("t/d/x", b"")], "listed before"),
            (vec![file("t", b""), file("t/x", b"")], "listed before"),
            (vec![dir("t"), file("x", b"")], "under the first"),
            (vec![dir("a/b")], "one name"),
            (vec![dir("t"), file("t/x", b""), file("t/x", b"")], "twice"),
            (vec![], "lists nothing"),
        ] {
            let e = bad(entries);
            assert!(e.contains(why), "{e} (wanted {why})");
        }
        let mut setuid = file("f", b"");
        setuid.mode = 0o4755;
        assert!(bad(vec![setuid]).contains("permission bits"));
        let mut nodigest = file("f", b"");
        nodigest.blake3 = Some("ABC".into());
        assert!(bad(vec![nodigest]).contains("BLAKE3"));
        let too_many = (0..=MAX_ENTRIES)
            .map(|i| {
                if i == 0 {
                    dir("t")
                } else {
                    dir(&format!("t/{i}"))
                }
            })
            .collect();
        assert!(bad(too_many).contains("more than"));
    }
}
