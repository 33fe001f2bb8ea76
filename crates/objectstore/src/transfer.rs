//! Moving whole inputs and outputs: an object or every object under a prefix into a local
//! directory, and every regular file of a local directory under a prefix.

use std::path::{Path, PathBuf};

use nunet_ensemble::data::{is_prefix, key_parts};

use crate::store::{Store, StoreError};

/// Most objects one input or output moves.
pub const MAX_OBJECTS: usize = 10_000;
/// Deepest directory nesting of an output.
const MAX_DEPTH: usize = 64;

/// What an input or output moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Objects (files).
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

fn io(what: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        what: what.display().to_string(),
        source: e,
    }
}

/// Downloads the object `key` into `dir` under its last name, or, when `key` is a prefix
/// (empty or ending with `/`), every object under it at its path relative to the prefix.
/// At most `max_bytes` in all; a prefix with no objects is an error, as is a key that cannot
/// be a relative file path (empty, `.` or `..` parts).
pub fn stage(store: &Store, key: &str, dir: &Path, max_bytes: u64) -> Result<Moved, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let what = |k: &str| format!("s3://{}/{k}", store.bucket_name());
    let objects: Vec<(String, PathBuf)> = if is_prefix(key) {
        let listed = store.list(key, MAX_OBJECTS)?;
        let total = listed.iter().fold(0u64, |t, o| t.saturating_add(o.size));
        if total > max_bytes {
            return Err(StoreError::Limit {
                what: what(key),
                reason: format!(
                    "{total} bytes under the prefix; the allocation's disk leaves {max_bytes}"
                ),
            });
        }
        let mut v = Vec::new();
        for o in listed {
            let rel = o
                .key
                .strip_prefix(key)
                .ok_or_else(|| StoreError::Protocol {
                    what: what(key),
                    reason: format!(
                        "the listing holds {:?}, which is not under the prefix",
                        o.key
                    ),
                })?;
            // Zero-byte "directory" markers that some tools write (the prefix's own too).
            if (rel.is_empty() || rel.ends_with('/')) && o.size == 0 {
                continue;
            }
            let parts = key_parts(rel).ok_or_else(|| StoreError::Limit {
                what: what(&o.key),
                reason: "this key cannot be a file path (empty, . or .. parts)".into(),
            })?;
            v.push((o.key.clone(), parts.iter().collect()));
        }
        if v.is_empty() {
            return Err(StoreError::NotFound {
                what: what(key),
                code: "-".into(),
                message: "no objects under this prefix".into(),
            });
        }
        v
    } else {
        let name = key.rsplit('/').next().unwrap_or(key);
        vec![(key.to_string(), PathBuf::from(name))]
    };
    let mut moved = Moved::default();
    for (k, rel) in objects {
        let dest = dir.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let n = store.get_to(&k, &dest, max_bytes.saturating_sub(moved.bytes))?;
        moved.files += 1;
        moved.bytes += n;
    }
    Ok(moved)
}

/// Every regular file under `dir`, with its key-relative path. Symbolic links and special
/// files are refused (they would let the writer of `dir` publish files outside it).
fn files_of(dir: &Path) -> Result<Vec<(String, PathBuf, u64)>, StoreError> {
    let mut out = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((d, rel, depth)) = todo.pop() {
        if depth > MAX_DEPTH {
            return Err(StoreError::Limit {
                what: d.display().to_string(),
                reason: format!("nested deeper than {MAX_DEPTH} directories"),
            });
        }
        for entry in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let entry = entry.map_err(|e| io(&d, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(StoreError::Limit {
                    what: path.display().to_string(),
                    reason: "file names of outputs must be UTF-8 (they become object keys)".into(),
                });
            };
            let r = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            if meta.is_dir() {
                todo.push((path, r, depth + 1));
            } else if meta.is_file() {
                out.push((r, path, meta.len()));
                if out.len() > MAX_OBJECTS {
                    return Err(StoreError::Limit {
                        what: dir.display().to_string(),
                        reason: format!("more than {MAX_OBJECTS} files"),
                    });
                }
            } else {
                return Err(StoreError::Limit {
                    what: format!("output file {r}"),
                    reason: "is a symbolic link or a special file; outputs publish regular files and directories only".into(),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Uploads every regular file under `dir` as `prefix` + its relative path (a `/` is put
/// between them when `prefix` is not empty and has none), at most `max_bytes` in all. The
/// directory must not change meanwhile (its writer has exited).
pub fn publish(
    store: &Store,
    prefix: &str,
    dir: &Path,
    max_bytes: u64,
) -> Result<Moved, StoreError> {
    let files = files_of(dir)?;
    let total = files.iter().fold(0u64, |t, f| t.saturating_add(f.2));
    if total > max_bytes {
        return Err(StoreError::Limit {
            what: dir.display().to_string(),
            reason: format!(
                "{total} bytes of outputs; at most {max_bytes} (the allocation's disk)"
            ),
        });
    }
    let sep = if prefix.is_empty() || prefix.ends_with('/') {
        ""
    } else {
        "/"
    };
    let mut moved = Moved::default();
    for (rel, path, _) in files {
        moved.bytes += store.put_from(&format!("{prefix}{sep}{rel}"), &path)?;
        moved.files += 1;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn outputs_are_regular_files_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/c.txt"), "x").unwrap();
        std::fs::write(d.path().join("top"), "yy").unwrap();
        let f = files_of(d.path()).unwrap();
        let rels: Vec<&str> = f.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(rels, ["a/b/c.txt", "top"]);
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("a/leak")).unwrap();
        let e = files_of(d.path()).unwrap_err().to_string();
        assert!(e.contains("a/leak") && e.contains("symbolic link"), "{e}");
    }
}
