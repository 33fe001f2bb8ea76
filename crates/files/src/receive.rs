//! The receiving end of a transfer, wherever it runs (a node writing into its area, the CLI
//! writing into the user's directory): where each entry lands, directories made without
//! following symlinks, and files written into a partial file beside their target that is
//! hashed as it grows, checked against the sender's digest and only then renamed into place.
//!
//! An interrupted transfer leaves its partial file (`.<name>.<digest prefix>.nunet-part`);
//! the next attempt for the same bytes continues from its end, after hashing what is there.
//! Partial files of other digests for the same name are removed when a new one starts.

use std::io::{Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::area::Destination;
use crate::manifest::{Kind, Manifest};

/// Suffix of partial files.
pub const PART_SUFFIX: &str = ".nunet-part";

/// Why receiving failed.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// A directory on the way is not one (or is a symlink, which is never followed).
    #[error("{0}: exists and is not a directory (symlinks are not followed)")]
    NotADirectory(String),
    /// The destination does not fit the source.
    #[error("{0}")]
    Placement(String),
    /// More bytes than the manifest said.
    #[error("{path}: more than the {size} bytes announced")]
    TooLong {
        /// The target.
        path: String,
        /// Announced size.
        size: u64,
    },
    /// The sender stopped early.
    #[error("{path}: {got} of {size} bytes arrived; run the copy again to resume")]
    Short {
        /// The target.
        path: String,
        /// Bytes held.
        got: u64,
        /// Announced size.
        size: u64,
    },
    /// The bytes do not hash to the digest announced; the partial file is removed.
    #[error(
        "{path}: the bytes received hash to {got}, not the sender's {want} (changed while copied, or corrupted); the partial file was removed, run the copy again"
    )]
    Mismatch {
        /// The target.
        path: String,
        /// Announced digest.
        want: String,
        /// Digest of what arrived.
        got: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReceiveError + '_ {
    move |source| ReceiveError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where every entry of `m` lands for `dest`: into an existing directory under the source's
/// name; as a new name; or (a single file) over an existing file.
pub fn targets(dest: &Destination, m: &Manifest) -> Result<Vec<PathBuf>, ReceiveError> {
    let top_is_dir = m.entries.first().is_some_and(|e| e.kind == Kind::Dir);
    let base: Box<dyn Fn(&str) -> PathBuf> = match dest {
        Destination::Into(dir) => {
            let dir = dir.clone();
            Box::new(move |p| dir.join(p))
        }
        Destination::File(f) if top_is_dir => {
            return Err(ReceiveError::Placement(format!(
                "{}: is a file; a directory cannot be copied onto it",
                f.display()
            )));
        }
        Destination::File(to) | Destination::New(to) => {
            let to = to.clone();
            Box::new(move |p| match p.split_once('/') {
                Some((_, rest)) => to.join(rest),
                None => to.clone(),
            })
        }
    };
    Ok(m.entries.iter().map(|e| base(&e.path)).collect())
}

/// Permission bits a received file or directory may get: the sender's, without write for
/// group and others (as `cp` under the usual umask), so a peer cannot make world-writable
/// files on this node.
pub const MODE_MASK: u32 = 0o755;

/// Makes directory `dir` (mode from the sender, masked by [`MODE_MASK`], owner access
/// always), or checks that it already is one (not a symlink).
pub fn make_dir(dir: &Path, mode: u32) -> Result<(), ReceiveError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(_) => Err(ReceiveError::NotADirectory(dir.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode((mode & MODE_MASK) | 0o700)
            .create(dir)
            .map_err(io(dir)),
        Err(e) => Err(io(dir)(e)),
    }
}

/// What receiving a manifest at `places` needs: per entry, the byte to start at (`None`
/// for directories and for files already there), and the bytes still to come. Reads only;
/// refuses a file whose place is a directory before anything is sent.
pub fn plan(m: &Manifest, places: &[PathBuf]) -> Result<(Vec<Option<u64>>, u64), ReceiveError> {
    let mut offsets = Vec::with_capacity(places.len());
    let mut need = 0u64;
    for (e, at) in m.entries.iter().zip(places) {
        let Some(digest) = e.blake3.as_deref().filter(|_| e.kind == Kind::File) else {
            offsets.push(None);
            continue;
        };
        if std::fs::symlink_metadata(at).is_ok_and(|md| md.is_dir()) {
            return Err(ReceiveError::Placement(format!(
                "{}: is a directory; the file {} cannot replace it",
                at.display(),
                e.path
            )));
        }
        let off = resume_offset(at, e.size, digest)?;
        need += off.map_or(0, |o| e.size - o);
        offsets.push(off);
    }
    Ok((offsets, need))
}

/// Makes the directories of `m` at `places`, parents first.
pub fn make_dirs(m: &Manifest, places: &[PathBuf]) -> Result<(), ReceiveError> {
    for (e, at) in m.entries.iter().zip(places) {
        if e.kind == Kind::Dir {
            make_dir(at, e.mode)?;
        }
    }
    Ok(())
}

/// The partial file for `target` receiving the bytes with digest `blake3`.
pub fn part_path(target: &Path, blake3: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = &blake3[..blake3.len().min(16)];
    target.with_file_name(format!(".{name}.{prefix}{PART_SUFFIX}"))
}

/// Where receiving `target` (`size` bytes, digest `blake3`) starts: `None` when the target
/// already holds exactly those bytes (nothing to send), else the length of a partial file
/// an earlier attempt left (at most `size`), else 0.
pub fn resume_offset(target: &Path, size: u64, blake3: &str) -> Result<Option<u64>, ReceiveError> {
    if let Ok(m) = std::fs::symlink_metadata(target)
        && m.file_type().is_file()
        && m.len() == size
    {
        let mut h = blake3::Hasher::new();
        crate::manifest::digest_into(target, size, &mut h, &mut |_| {}).map_err(io(target))?;
        if h.finalize().to_hex().to_string() == blake3 {
            return Ok(None);
        }
    }
    let part = part_path(target, blake3);
    match std::fs::symlink_metadata(&part) {
        Ok(m) if m.file_type().is_file() => Ok(Some(m.len().min(size))),
        _ => Ok(Some(0)),
    }
}

/// How long [`Receiver::open`] waits for another receiver of the same partial file (an
/// interrupted transfer whose writer is still draining) to let go.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One file being received. It holds an exclusive lock on its partial file, so two
/// transfers of the same bytes to the same place never write it at once.
pub struct Receiver {
    file: nix::fcntl::Flock<std::fs::File>,
    hasher: blake3::Hasher,
    written: u64,
    size: u64,
    want: String,
    mode: u32,
    part: PathBuf,
    target: PathBuf,
    /// Bytes before this offset were handed to the disk's writeback already.
    kicked: u64,
    /// Syncs the partial file in the background when asked (see [`WRITEBACK_EVERY`]).
    syncer: Option<Syncer>,
}

/// Every this many bytes received, the file is synced on a thread of its own, so the disk
/// writes while the network delivers and the final sync has only the tail left (without
/// dropping the data from the page cache, as `posix_fadvise` would).
const WRITEBACK_EVERY: u64 = 64 << 20;

/// A thread that syncs a file whenever it is asked (asks while it syncs fold into one).
struct Syncer {
    ask: std::sync::mpsc::SyncSender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(file: std::fs::File) -> Self {
        let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::spawn(move || {
            while asked.recv().is_ok() {
                let _ = file.sync_data();
            }
        });
        Self {
            ask,
            thread: Some(thread),
        }
    }

    fn kick(&self) {
        let _ = self.ask.try_send(());
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current sync.
        let (closed, _) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.ask, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Receiver {
    /// Opens the partial file of `target` and continues at `offset` (what
    /// [`resume_offset`] said; what lies beyond it is cut off, what lies before it is hashed
    /// again). Partial files of `target` for other digests are removed.
    pub fn open(
        target: &Path,
        size: u64,
        blake3: &str,
        mode: u32,
        offset: u64,
    ) -> Result<Self, ReceiveError> {
        let part = part_path(target, blake3);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&part)
            .map_err(io(&part))?;
        let file = lock_within(file, &part)?;
        remove_other_parts(target, &part);
        let mut hasher = blake3::Hasher::new();
        let have = file.metadata().map_err(io(&part))?.len();
        if offset > have.min(size) {
            return Err(ReceiveError::Placement(format!(
                "{}: cannot resume at byte {offset}: {have} are here; ask again",
                target.display()
            )));
        }
        file.set_len(offset).map_err(io(&part))?;
        if offset > 0 {
            let n = crate::manifest::digest_into(&part, offset, &mut hasher, &mut |_| {})
                .map_err(io(&part))?;
            if n != offset {
                return Err(ReceiveError::Short {
                    path: part.display().to_string(),
                    got: n,
                    size: offset,
                });
            }
        }
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(offset))
            .map_err(io(&part))?;
        Ok(Self {
            file,
            hasher,
            written: offset,
            size,
            want: blake3.to_string(),
            mode,
            part,
            target: target.to_path_buf(),
            kicked: offset,
            syncer: None,
        })
    }

    /// Bytes held so far (including what an earlier attempt left).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `buf`.
    pub fn write(&mut self, buf: &[u8]) -> Result<(), ReceiveError> {
        if self.written + buf.len() as u64 > self.size {
            return Err(ReceiveError::TooLong {
                path: self.target.display().to_string(),
                size: self.size,
            });
        }
        self.file.write_all(buf).map_err(io(&self.part))?;
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        if self.written - self.kicked >= WRITEBACK_EVERY {
            if self.syncer.is_none() {
                self.syncer = self.file.try_clone().ok().map(Syncer::start);
            }
            if let Some(s) = &self.syncer {
                s.kick();
            }
            self.kicked = self.written;
        }
        Ok(())
    }

    /// Checks size and digest, sets the mode, makes the bytes durable and renames the
    /// partial file onto the target. A digest mismatch removes the partial file.
    pub fn finish(self) -> Result<(), ReceiveError> {
        if self.written < self.size {
            return Err(ReceiveError::Short {
                path: self.target.display().to_string(),
                got: self.written,
                size: self.size,
            });
        }
        let got = self.hasher.finalize().to_hex().to_string();
        if got != self.want {
            let _ = std::fs::remove_file(&self.part);
            return Err(ReceiveError::Mismatch {
                path: self.target.display().to_string(),
                want: self.want,
                got,
            });
        }
        self.file
            .set_permissions(std::fs::Permissions::from_mode(self.mode & MODE_MASK))
            .map_err(io(&self.part))?;
        self.file.sync_all().map_err(io(&self.part))?;
        std::fs::rename(&self.part, &self.target).map_err(io(&self.target))?;
        // The rename itself is durable once the directory is.
        if let Some(dir) = self.target.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Ok(())
    }
}

/// `file` locked exclusively, waiting up to [`LOCK_WAIT`] for another holder.
fn lock_within(
    mut file: std::fs::File,
    part: &Path,
) -> Result<nix::fcntl::Flock<std::fs::File>, ReceiveError> {
    let t0 = std::time::Instant::now();
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if t0.elapsed() < LOCK_WAIT => {
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(ReceiveError::Placement(format!(
                    "{}: another transfer is receiving these bytes; try again when it ends",
                    part.display()
                )));
            }
            Err((_, e)) => return Err(io(part)(std::io::Error::from(e))),
        }
    }
}

/// Removes `.<name>.*.nunet-part` beside `target` other than `keep`.
fn remove_other_parts(target: &Path, keep: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        let p = e.path();
        // The digest part is 16 hex characters, so another file's partial never matches.
        if n.starts_with(&prefix)
            && n.ends_with(PART_SUFFIX)
            && n.len() == prefix.len() + 16 + PART_SUFFIX.len()
            && p != keep
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::manifest::build;

    fn sha(b: &[u8]) -> String {
        blake3::hash(b).to_hex().to_string()
    }

    #[test]
    fn an_interrupted_file_resumes_and_only_matching_bytes_land() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("big.bin");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let h = sha(&body);
        assert_eq!(
            resume_offset(&target, body.len() as u64, &h).unwrap(),
            Some(0)
        );
        // An empty file is not "already there" until it is.
        assert_eq!(resume_offset(&target, 0, &sha(b"")).unwrap(), Some(0));
        let mut r = Receiver::open(&target, body.len() as u64, &h, 0o640, 0).unwrap();
        r.write(&body[..100_000]).unwrap();
        drop(r); // interrupted
        let off = resume_offset(&target, body.len() as u64, &h)
            .unwrap()
            .unwrap();
        assert_eq!(off, 100_000);
        let mut r = Receiver::open(&target, body.len() as u64, &h, 0o640, off).unwrap();
        assert!(matches!(
            r.write(&vec![0; body.len()]),
            Err(ReceiveError::TooLong { .. })
        ));
        r.write(&body[100_000..]).unwrap();
        r.finish().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), body);
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(!part_path(&target, &h).exists());
        // Already there: nothing to send.
        assert_eq!(resume_offset(&target, body.len() as u64, &h).unwrap(), None);
        // A short sender leaves the partial file; wrong bytes remove it.
        let other = sha(b"abc");
        let mut r = Receiver::open(&target, 3, &other, 0o600, 0).unwrap();
        r.write(b"ab").unwrap();
        assert!(matches!(r.finish(), Err(ReceiveError::Short { .. })));
        assert_eq!(resume_offset(&target, 3, &other).unwrap(), Some(2));
        let mut r = Receiver::open(&target, 3, &other, 0o600, 2).unwrap();
        r.write(b"X").unwrap();
        assert!(matches!(r.finish(), Err(ReceiveError::Mismatch { .. })));
        assert!(!part_path(&target, &other).exists());
        assert_eq!(std::fs::read(&target).unwrap(), body, "target untouched");
        // A new digest for the same name removes the old partial file.
        let mut r = Receiver::open(&target, 3, &other, 0o600, 0).unwrap();
        r.write(b"a").unwrap();
        drop(r);
        let _r = Receiver::open(&target, 1, &sha(b"z"), 0o600, 0).unwrap();
        assert!(!part_path(&target, &other).exists());
    }

    #[test]
    fn sources_land_where_cp_would_put_them() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), b"f").unwrap();
        let m = build(&src, &mut |_| {}).unwrap();
        let into = targets(&Destination::Into("/d".into()), &m).unwrap();
        assert_eq!(
            into,
            [
                PathBuf::from("/d/src"),
                "/d/src/sub".into(),
                "/d/src/sub/f".into()
            ]
        );
        let new = targets(&Destination::New("/d/copy".into()), &m).unwrap();
        assert_eq!(
            new,
            [
                PathBuf::from("/d/copy"),
                "/d/copy/sub".into(),
                "/d/copy/sub/f".into()
            ]
        );
        assert!(targets(&Destination::File("/d/f".into()), &m).is_err());
        let one = build(&src.join("sub/f"), &mut |_| {}).unwrap();
        assert_eq!(
            targets(&Destination::File("/d/g".into()), &one).unwrap(),
            [PathBuf::from("/d/g")]
        );
        // Directories are made, never followed through a symlink.
        let link = d.path().join("link");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        assert!(matches!(
            make_dir(&link, 0o755),
            Err(ReceiveError::NotADirectory(_))
        ));
        make_dir(&d.path().join("made"), 0o750).unwrap();
        make_dir(&d.path().join("made"), 0o750).unwrap();
    }
}
