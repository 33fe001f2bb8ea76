//! [`RotatingFile`]: an append-only log file that is renamed aside when the next line would
//! take it past its size, as NuNet's DMS (lumberjack) does: `dms.log` becomes
//! `dms-2026-12-05T21-30-00.123.log` and a new `dms.log` starts. Old files beyond the count
//! or the age limit are deleted at each rotation.
//!
//! A line is never split across two files. A failed write is reported once on stderr and
//! the file is reopened at the next line, so a full disk that clears resumes logging.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// When to rotate and what to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rotate before a line would take the file past this many bytes (at least 1).
    pub max_bytes: u64,
    /// Rotated files kept, newest first (0: no limit by count).
    pub max_backups: usize,
    /// Rotated files older than this are deleted (`None`: no limit by age).
    pub max_age: Option<Duration>,
}

struct Open {
    file: File,
    size: u64,
}

struct State {
    open: Option<Open>,
    /// A write failed and was reported; reset after the next successful write.
    failing: bool,
    /// A rotation failed and was reported; lines go on into the current file meanwhile.
    rotation_failing: bool,
}

/// A size-rotated log file, shared by the threads that log.
pub struct RotatingFile {
    path: PathBuf,
    limits: Limits,
    state: Mutex<State>,
}

/// The name parts rotated files share: `dms.log` → (`dms-`, `.log`).
fn affixes(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (format!("{stem}-"), ext)
}

/// `2026-12-05T21-30-00.123`: UTC, sortable, no `:` (file names on every system).
fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t)
        .to_string()
        .trim_end_matches('Z')
        .replace(':', "-")
}

/// Whether `middle` is a [`stamp`], optionally followed by `-<n>`.
fn is_stamp(middle: &str) -> bool {
    let (s, n) = match middle.get(23..) {
        Some(rest) => (&middle[..23], rest),
        None => return false,
    };
    let shape = s.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 | 13 | 16 => b == b'-',
        10 => b == b'T',
        19 => b == b'.',
        _ => b.is_ascii_digit(),
    });
    shape
        && (n.is_empty()
            || n.strip_prefix('-')
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())))
}

impl RotatingFile {
    /// A log file at `path` (its directory is created when missing); nothing is opened until
    /// the first line.
    pub fn new(path: PathBuf, limits: Limits) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            path,
            limits: Limits {
                max_bytes: limits.max_bytes.max(1),
                ..limits
            },
            state: Mutex::new(State {
                open: None,
                failing: false,
                rotation_failing: false,
            }),
        })
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) -> io::Result<Open> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        let size = file.metadata()?.len();
        Ok(Open { file, size })
    }

    /// Appends one line (or any buffer, kept whole in one file).
    pub fn write_line(&self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        let r = self.write_locked(&mut st, buf);
        match &r {
            Ok(()) => st.failing = false,
            Err(e) => {
                st.open = None; // reopened at the next line
                if !st.failing {
                    st.failing = true;
                    eprintln!(
                        "log file {}: {e}; lines are lost until writing works again",
                        self.path.display()
                    );
                }
            }
        }
        r
    }

    fn write_locked(&self, st: &mut State, buf: &[u8]) -> io::Result<()> {
        if st.open.is_none() {
            st.open = Some(self.open()?);
        }
        let len = buf.len() as u64;
        if st
            .open
            .as_ref()
            .is_some_and(|o| o.size > 0 && o.size + len > self.limits.max_bytes)
        {
            st.open = None;
            match self.rotate() {
                Ok(()) => st.rotation_failing = false,
                // Appending may still work (the directory refuses the rename): go on in the
                // current file and try again at the next line.
                Err(e) if !st.rotation_failing => {
                    st.rotation_failing = true;
                    eprintln!(
                        "log file {}: rotating it: {e}; it grows past its size until rotation works",
                        self.path.display()
                    );
                }
                Err(_) => {}
            }
            st.open = Some(self.open()?);
        }
        let o = st
            .open
            .as_mut()
            .ok_or_else(|| io::Error::other("log file not open"))?;
        if let Err(e) = o.file.write_all(buf) {
            // Part of the line may be on disk: cut it off, so the next line starts clean.
            let _ = o.file.set_len(o.size);
            return Err(e);
        }
        o.size += len;
        Ok(())
    }

    /// Deletes what the limits will no longer keep once one more file is rotated, then
    /// renames the current file aside: there are never more rotated files than
    /// `max_backups`, not even for a moment.
    fn rotate(&self) -> io::Result<()> {
        self.prune(self.limits.max_backups.saturating_sub(1));
        let (prefix, ext) = affixes(&self.path);
        let dir = self.dir();
        let base = stamp(SystemTime::now());
        // Rotations within one millisecond: number them after the highest taken, so that a
        // name freed by pruning is never reused for a newer file.
        let taken = self
            .backups()
            .iter()
            .filter_map(|p| Self::order_of(&p.file_name()?.to_string_lossy(), &prefix, &ext))
            .filter(|(s, _)| *s == base)
            .map(|(_, n)| n)
            .max();
        let target = match taken {
            None => dir.join(format!("{prefix}{base}{ext}")),
            Some(n) => dir.join(format!("{prefix}{base}-{}{ext}", n + 1)),
        };
        std::fs::rename(&self.path, &target)
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// `(stamp, n)` of a rotated file's name (`n` = 0 without a `-<n>` suffix), or `None`
    /// for any other name.
    fn order_of(name: &str, prefix: &str, ext: &str) -> Option<(String, u64)> {
        let middle = name.strip_prefix(prefix)?.strip_suffix(ext)?;
        if !is_stamp(middle) {
            return None;
        }
        let n = middle.get(24..).and_then(|d| d.parse().ok()).unwrap_or(0);
        Some((middle[..23].to_string(), n))
    }

    /// Rotated files of this log, newest first.
    pub fn backups(&self) -> Vec<PathBuf> {
        let (prefix, ext) = affixes(&self.path);
        let mut found: Vec<((String, u64), PathBuf)> = std::fs::read_dir(self.dir())
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        Some((Self::order_of(&name, &prefix, &ext)?, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by(|a, b| b.0.cmp(&a.0));
        found.into_iter().map(|(_, p)| p).collect()
    }

    /// Deletes rotated files older than the age limit, and all but the newest `keep` when
    /// the count is limited (age: the file's last change, i.e. when it was rotated).
    fn prune(&self, keep: usize) {
        let now = SystemTime::now();
        for (i, p) in self.backups().into_iter().enumerate() {
            let too_many = self.limits.max_backups > 0 && i >= keep;
            let too_old = self.limits.max_age.is_some_and(|age| {
                std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|d| d > age)
            });
            if (too_many || too_old)
                && let Err(e) = std::fs::remove_file(&p)
            {
                eprintln!("log file {}: removing it: {e}", p.display());
            }
        }
    }
}

/// What `tracing_subscriber` writes through: one event per `write` call, passed to
/// [`RotatingFile::write_line`].
pub struct LineWriter<'a>(pub &'a RotatingFile);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, max_backups: usize) -> Limits {
        Limits {
            max_bytes,
            max_backups,
            max_age: None,
        }
    }

    #[test]
    fn rotates_before_a_line_would_pass_the_size_and_never_splits_a_line() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = RotatingFile::new(d.path().join("logs/dms.log"), limits(100, 0)).expect("new");
        let line = [b'x'; 39]; // + newline = 40 bytes: two fit in 100, a third does not
        for _ in 0..5 {
            let mut l = line.to_vec();
            l.push(b'\n');
            f.write_line(&l).expect("write");
        }
        let current = std::fs::read(f.path()).expect("read");
        assert_eq!(current.len(), 40, "the fifth line started a new file");
        let backups = f.backups();
        assert_eq!(backups.len(), 2, "{backups:?}");
        for b in &backups {
            assert_eq!(std::fs::read(b).expect("backup").len(), 80, "{b:?}");
            let name = b
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            assert!(name.starts_with("dms-") && name.ends_with(".log"), "{name}");
        }
        // A line larger than the limit still goes whole into a file of its own.
        f.write_line(&[b'y'; 300]).expect("big line");
        assert_eq!(std::fs::read(f.path()).expect("read").len(), 300);
    }

    #[test]
    fn keeps_only_the_newest_backups() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = RotatingFile::new(d.path().join("dms.log"), limits(10, 2)).expect("new");
        for i in 0..6u8 {
            f.write_line(&[b'0' + i; 10]).expect("write");
        }
        let backups = f.backups();
        assert_eq!(backups.len(), 2, "{backups:?}");
        // Newest first: the lines written just before the current one.
        assert_eq!(std::fs::read(&backups[0]).expect("read"), vec![b'4'; 10]);
        assert_eq!(std::fs::read(&backups[1]).expect("read"), vec![b'3'; 10]);
        assert_eq!(std::fs::read(f.path()).expect("read"), vec![b'5'; 10]);
    }

    #[test]
    fn deletes_backups_older_than_the_age_limit() {
        let d = tempfile::tempdir().expect("tempdir");
        let old = d.path().join("dms-2020-01-01T00-00-00.000.log");
        std::fs::write(&old, "old").expect("old");
        let t = SystemTime::now() - Duration::from_secs(40 * 24 * 3600);
        File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(t))
            .expect("age it");
        let unrelated = d.path().join("dms-notes.log");
        std::fs::write(&unrelated, "mine").expect("unrelated");
        let f = RotatingFile::new(
            d.path().join("dms.log"),
            Limits {
                max_bytes: 10,
                max_backups: 0,
                max_age: Some(Duration::from_secs(28 * 24 * 3600)),
            },
        )
        .expect("new");
        f.write_line(&[b'a'; 10]).expect("write");
        f.write_line(&[b'b'; 10]).expect("rotate");
        assert!(!old.exists(), "an old backup is deleted at rotation");
        assert!(
            unrelated.exists(),
            "files that are not backups are left alone"
        );
        assert_eq!(f.backups().len(), 1);
    }

    #[test]
    fn stamps_are_recognised_and_other_names_are_not() {
        assert!(is_stamp("2026-12-05T21-30-00.123"));
        assert!(is_stamp("2026-12-05T21-30-00.123-4"));
        assert!(!is_stamp("2026-12-05T21-30-00.123-"));
        assert!(!is_stamp("2026-12-05 21-30-00.123"));
        assert!(!is_stamp("notes"));
        assert!(is_stamp(&stamp(SystemTime::now())));
    }

    #[test]
    fn a_failed_write_is_an_error_and_writing_resumes_when_the_file_can_be_opened() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("dms.log");
        std::fs::create_dir(&path).expect("a directory where the file should be");
        let f = RotatingFile::new(path.clone(), limits(100, 0)).expect("new");
        assert!(f.write_line(b"lost\n").is_err());
        std::fs::remove_dir(&path).expect("clear the way");
        f.write_line(b"kept\n").expect("resumes");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "kept\n");
    }
}
