//! The system tools and kernel views volumes need: running `mount`/`mkfs`/`gocryptfs` with
//! a deadline, this process's mount points (`/proc/self/mountinfo`), whether a FUSE mount
//! still answers, and deleting a directory tree without leaving its filesystem.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nunet_actor::ActorError;

use super::super::failed;
use super::MOUNT_TIMEOUT;

pub(super) fn path_arg(p: &Path) -> Result<&str, ActorError> {
    p.to_str()
        .ok_or_else(|| failed(format!("{} is not UTF-8", p.display())))
}

/// Runs a system tool; its stderr is the error.
pub(super) async fn run(tool: &str, args: &[&str]) -> Result<(), String> {
    let out = tokio::time::timeout(
        MOUNT_TIMEOUT,
        tokio::process::Command::new(tool)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{tool} did not finish in {}s", MOUNT_TIMEOUT.as_secs()))?
    .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let err = err.trim();
    Err(format!(
        "{tool} failed ({}): {}",
        out.status,
        if err.is_empty() { "no message" } else { err }
    ))
}

/// Runs a tool that reads `key` from its stdin and may leave a daemon behind (gocryptfs): no
/// pipe stays open to that daemon (stdout is discarded, stderr goes to `err`, which is the
/// error when the tool fails).
pub(super) async fn run_keyed(
    tool: &str,
    args: &[&str],
    key: &str,
    err: &Path,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let errf = std::fs::File::create(err).map_err(|e| format!("{}: {e}", err.display()))?;
    let mut child = tokio::process::Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(errf)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A tool that exits before reading says why in `err`; its exit status decides.
        let _ = stdin.write_all(format!("{key}\n").as_bytes()).await;
    }
    let status = tokio::time::timeout(MOUNT_TIMEOUT, child.wait())
        .await
        .map_err(|_| format!("{tool} did not finish in {}s", MOUNT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{tool}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let msg = std::fs::read_to_string(err).unwrap_or_default();
    Err(format!("{tool} failed ({status}): {}", msg.trim()))
}

pub(super) async fn unmount(p: &Path) -> Result<(), String> {
    let arg = p.to_str().ok_or("not UTF-8")?;
    match run("umount", &[arg]).await {
        Ok(()) => Ok(()),
        // Busy (a process still holds a file): detach it now, the kernel finishes later.
        Err(_) => run("umount", &["-l", arg]).await,
    }
}

/// Mount points of this process's mount namespace (`/proc/self/mountinfo`, field 5, with
/// its octal escapes undone), in mount order. An error when the kernel's view cannot be read:
/// callers must then assume anything may be mounted.
fn mount_points() -> std::io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect())
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (b[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What is at a mount point the provider uses.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum MountState {
    /// Nothing is mounted there.
    Absent,
    /// Mounted and answering.
    Live,
    /// Mounted, but its FUSE daemon is gone (`ENOTCONN`): unmount before mounting again.
    Dead,
}

/// Whether something is mounted at `p` (a path under the provider's canonical volume base).
pub(super) fn mount_state(p: &Path) -> Result<MountState, ActorError> {
    let points = mount_points().map_err(|e| failed(format!("reading mountinfo: {e}")))?;
    if !points.iter().any(|m| m == p) {
        return Ok(MountState::Absent);
    }
    Ok(match std::fs::metadata(p) {
        Err(e) if e.raw_os_error() == Some(107) => MountState::Dead, // ENOTCONN
        _ => MountState::Live,
    })
}

/// Whether a live mount is at `p`; a dead one is detached first.
pub(super) async fn is_mounted(p: &Path) -> Result<bool, ActorError> {
    match mount_state(p)? {
        MountState::Live => Ok(true),
        MountState::Absent => Ok(false),
        MountState::Dead => {
            tracing::warn!(mount = %p.display(), "dead FUSE mount detached");
            let arg = path_arg(p)?;
            run("umount", &["-l", arg]).await.map_err(failed)?;
            Ok(false)
        }
    }
}

/// What is mounted under `dir`, last mounted first (an encrypted volume's plaintext view
/// before the image holding its ciphertext).
pub(super) fn mounted_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect();
    v.reverse();
    Ok(v)
}

/// Deletes `dir` and what is under it on `dir`'s own filesystem, never descending into
/// another (a mount point left behind, whatever the mount table said a moment ago): what is
/// on another filesystem, and the directories holding it, stay. Returns how many entries
/// were kept.
pub(super) fn remove_tree_one_fs(dir: &Path) -> std::io::Result<usize> {
    let dev = std::fs::symlink_metadata(dir)?.dev();
    let kept = remove_below(dir, dev)?;
    if kept == 0 {
        std::fs::remove_dir(dir)?;
    }
    Ok(kept)
}

fn remove_below(dir: &Path, dev: u64) -> std::io::Result<usize> {
    let mut kept = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.dev() != dev {
            kept += 1; // another filesystem mounted here: never touched
        } else if meta.is_dir() {
            let below = remove_below(&path, dev)?;
            if below == 0 {
                std::fs::remove_dir(&path)?;
            }
            kept += below;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(kept)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A tmpfs mounted inside the tree survives the deletion, with its contents.
    #[test]
    fn removal_stays_on_one_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("ens");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), b"x").unwrap();
        std::fs::create_dir_all(tree.join("mnt/vol")).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(tree.join("mnt/vol"))
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert_eq!(remove_tree_one_fs(&tree).unwrap(), 0);
            assert!(!tree.exists());
            return; // not root: the one-filesystem part needs a mount
        }
        std::fs::write(tree.join("mnt/vol/data"), b"keep").unwrap();
        let kept = remove_tree_one_fs(&tree).unwrap();
        let data = std::fs::read(tree.join("mnt/vol/data"));
        let _ = std::process::Command::new("umount")
            .arg(tree.join("mnt/vol"))
            .status();
        assert_eq!(kept, 1);
        assert_eq!(data.unwrap(), b"keep");
        assert!(!tree.join("a").exists(), "the tree's own files go");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
    }
}
