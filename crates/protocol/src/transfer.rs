//! What a file transfer carries ([`Manifest`]): every directory and regular file under a
//! source with its size, permission bits and BLAKE3 digest, and the rules a receiver checks
//! before it creates anything. Here because manifests cross seams other than the transfer
//! itself (an orchestrator hands one allocation's output listing to another's provider);
//! building one from a filesystem is `nunet-files`' job.

use serde::{Deserialize, Serialize};

/// Most entries (files and directories) one transfer may carry.
pub const MAX_ENTRIES: usize = 2048;
/// Longest path of an entry, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Most bytes of all paths together. A manifest travels in one actor message (at most
/// 1 MiB, its payload base64-encoded): 2048 entries of ~135 bytes besides their paths, plus
/// this, stay under 750 KiB once encoded.
pub const MAX_TOTAL_PATH_BYTES: usize = 256 << 10;
/// Most skipped paths listed by name (the rest are counted).
pub const MAX_SKIPPED_LISTED: usize = 32;
/// A rule of [`Manifest::check`] that a manifest breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestRule {
    /// Too many entries, or too long paths together.
    #[error(
        "more than {MAX_ENTRIES} files and directories, or more than 256 KiB of paths; pack them into an archive first"
    )]
    TooMany,
    /// An entry breaks a rule; `index` is its position in the manifest.
    #[error("entry {index} ({path:?}): {reason}")]
    Entry {
        /// Position.
        index: usize,
        /// Its path as sent.
        path: String,
        /// The rule.
        reason: &'static str,
    },
    /// A manifest with no entry.
    #[error("the manifest lists nothing")]
    Empty,
}

/// Whether an entry is a directory or a regular file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A directory (created by the receiver before what it holds).
    Dir,
    /// A regular file.
    File,
}

/// One directory or file of a transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `/`-separated path; its first part is the source's own name, so the first entry is
    /// the source itself.
    pub path: String,
    /// Directory or file.
    pub kind: Kind,
    /// Bytes (0 for a directory).
    #[serde(default)]
    pub size: u64,
    /// Permission bits (`0o777` at most; set-id bits are never carried).
    pub mode: u32,
    /// Lowercase hex BLAKE3 of a file's bytes (absent for a directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

/// Everything one transfer carries, in the order a receiver creates it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Directories before their contents.
    pub entries: Vec<Entry>,
    /// Paths under the source that are not carried (symlinks, sockets, devices), the first
    /// [`MAX_SKIPPED_LISTED`] of them, each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// How many were skipped in all.
    #[serde(default)]
    pub skipped_total: u64,
}

impl Manifest {
    /// Bytes of all files.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// How many regular files.
    pub fn files(&self) -> usize {
        self.entries.iter().filter(|e| e.kind == Kind::File).count()
    }

    /// Checks every rule a receiver relies on: at least one entry, at most [`MAX_ENTRIES`];
    /// relative `/`-separated paths of plain names (no `.`, `..`, empty parts or NUL), at most
    /// [`MAX_PATH_BYTES`] each, all under the first entry's name, each listed once and after
    /// its directory; files with a digest, directories without bytes; no set-id bits.
    pub fn check(&self) -> Result<(), ManifestRule> {
        if self.entries.is_empty() {
            return Err(ManifestRule::Empty);
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(ManifestRule::TooMany);
        }
        if self.entries.iter().map(|e| e.path.len()).sum::<usize>() > MAX_TOTAL_PATH_BYTES {
            return Err(ManifestRule::TooMany);
        }
        let mut dirs = std::collections::HashSet::new();
        let mut seen = std::collections::HashSet::new();
        let top = self.entries[0].path.as_str();
        for (index, e) in self.entries.iter().enumerate() {
            let bad = |reason| ManifestRule::Entry {
                index,
                path: e.path.chars().take(120).collect(),
                reason,
            };
            if e.path.is_empty() || e.path.len() > MAX_PATH_BYTES {
                return Err(bad("a path must have 1 to 1024 bytes"));
            }
            if e.path.contains('\0') {
                return Err(bad("a path must not contain NUL"));
            }
            if e.path
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            {
                return Err(bad(
                    "a path must be relative, made of names (no '.', '..' or empty parts)",
                ));
            }
            if e.mode > 0o777 {
                return Err(bad("mode must be permission bits only (at most 0o777)"));
            }
            match (e.kind, &e.blake3) {
                (Kind::File, Some(h)) if is_digest(h) => {}
                (Kind::File, _) => return Err(bad("a file needs a lowercase hex BLAKE3 digest")),
                (Kind::Dir, None) if e.size == 0 => {}
                (Kind::Dir, _) => return Err(bad("a directory has no bytes and no digest")),
            }
            if !seen.insert(e.path.as_str()) {
                return Err(bad("listed twice"));
            }
            match e.path.rsplit_once('/') {
                None if index == 0 => {}
                None => return Err(bad("every entry must be under the first one")),
                Some(_) if index == 0 => {
                    return Err(bad("the first entry is the source itself: one name"));
                }
                Some((parent, _)) => {
                    if !(parent == top || parent.starts_with(&format!("{top}/")))
                        || !dirs.contains(parent)
                    {
                        return Err(bad("its directory must be listed before it"));
                    }
                }
            }
            if e.kind == Kind::Dir {
                dirs.insert(e.path.as_str());
            }
        }
        Ok(())
    }
}

/// Whether `s` is a lowercase hex BLAKE3 digest.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `/dms/allocation/output/share` (orchestrator → the allocation actor of a completed task):
/// let node `reader` fetch the task's output named `output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareOutput {
    /// The output's `name` in the task's `outputs:`.
    pub output: String,
    /// Peer id of the node that will fetch it (the ticket is valid for its streams only).
    pub reader: String,
}

/// What a shared output holds and the ticket that fetches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedOutput {
    /// 32 bytes, hex: the read ticket for `reader`'s streams to the sharing node.
    pub ticket: String,
    /// Every directory and file of the output (its first entry is the output directory).
    pub manifest: Manifest,
}

/// One input of an allocation that comes from another allocation's output, ready to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchInput {
    /// Position of the input in the allocation's `inputs:`.
    pub input: u32,
    /// Peer id of the node holding the output.
    pub peer: String,
    /// What that node shared.
    pub shared: SharedOutput,
}

/// `/dms/allocation/start`: what the allocation needs to start, beyond what it was allocated
/// with. Empty (`{}`) for an allocation without inputs from other allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Inputs fetched from other allocations' outputs, one per such input not staged yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<FetchInput>,
}

impl StartRequest {
    /// Entries of every manifest together (a start message carries at most
    /// [`MAX_ENTRIES`] of them, like one transfer).
    pub fn entries(&self) -> usize {
        self.inputs
            .iter()
            .map(|i| i.shared.manifest.entries.len())
            .sum()
    }
}
