//! One allocation's output on the provider's disk: per stream, append-only segment files
//! named by the byte offset they start at, so that any reader can resume at a byte offset,
//! across restarts of the allocation and of the daemon.
//!
//! Retention: each stream keeps at most `limit` bytes; when a new segment starts, the
//! oldest segments beyond that are deleted, and a reader behind them is told where output
//! resumes ([`Read::Skipped`]) instead of silently getting later bytes.
//!
//! Writers: one at a time ([`Spool::writer`]). An execution's output is written by a
//! writer for its generation; a writer for the same generation after a daemon restart
//! (which reads the execution's output again from its start) skips what was already
//! written, so nothing is kept twice and nothing is lost.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::sync::watch;

use crate::frame::{Channel, State};

/// Smallest retention per stream.
pub const MIN_LIMIT: u64 = 1 << 20;
/// Segments per retention limit (a stream keeps between 7/8 and all of its limit).
const SEGMENTS: u64 = 8;
/// What the spool's metadata file is called.
const META: &str = "spool.json";

/// What readers can wait on: how far each stream is written, and where the allocation
/// stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mark {
    /// Bytes of stdout written so far.
    pub stdout: u64,
    /// Bytes of stderr written so far.
    pub stderr: u64,
    /// The allocation's last reported state (a final one, or `None` while it runs).
    pub state: Option<State>,
    /// No more output will come: the allocation is gone.
    pub closed: bool,
}

impl Mark {
    /// Bytes written to `c` so far.
    pub fn size(&self, c: Channel) -> u64 {
        match c {
            Channel::Stdout => self.stdout,
            Channel::Stderr => self.stderr,
        }
    }
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Bytes from the offset asked for.
    Data(Vec<u8>),
    /// Bytes before this offset are no longer kept: resume here.
    Skipped(u64),
    /// Nothing new yet.
    Nothing,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    allocation: String,
    source: String,
    #[serde(default)]
    generation: Option<u64>,
    #[serde(default)]
    base: [u64; 2],
}

/// The segment files of one stream.
struct Segments {
    dir: PathBuf,
    /// (first offset, length), oldest first.
    list: VecDeque<(u64, u64)>,
    /// The newest segment, open for appending.
    file: Option<File>,
}

impl Segments {
    fn load(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut list = Vec::new();
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let Some(base) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            list.push((base, e.metadata()?.len()));
        }
        list.sort_unstable();
        Ok(Self {
            dir,
            list: list.into(),
            file: None,
        })
    }

    fn path(&self, base: u64) -> PathBuf {
        self.dir.join(format!("{base:020}"))
    }

    fn end(&self) -> u64 {
        self.list.back().map_or(0, |(b, l)| b + l)
    }

    fn append(&mut self, data: &[u8], limit: u64) -> std::io::Result<()> {
        let seg = (limit / SEGMENTS).max(64 << 10);
        let roll = self.list.back().is_none_or(|(_, l)| *l >= seg);
        if roll {
            let base = self.end();
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(base))?;
            self.list.push_back((base, 0));
            self.file = Some(f);
            // Keep at most `limit` bytes (the new segment is still empty).
            while self.list.len() > 1 && self.end() - self.list[0].0 > limit {
                let (old, _) = self.list[0];
                match std::fs::remove_file(self.path(old)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                self.list.pop_front();
            }
        }
        if self.file.is_none() {
            let base = self.list.back().map_or(0, |(b, _)| *b);
            self.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path(base))?,
            );
        }
        let (Some(f), Some(last)) = (self.file.as_mut(), self.list.back_mut()) else {
            return Ok(());
        };
        if let Err(e) = f.write_all(data) {
            // A part written (a full disk) is cut off again: offsets stay those recorded.
            let _ = f.set_len(last.1);
            return Err(e);
        }
        last.1 += data.len() as u64;
        Ok(())
    }

    /// Where to read `offset`: (path, position in the file, bytes there), or the answer.
    fn locate(&self, offset: u64, max: usize) -> Result<(PathBuf, u64, usize), Read> {
        let Some(&(first, _)) = self.list.front() else {
            return Err(Read::Nothing);
        };
        if offset < first {
            return Err(Read::Skipped(first));
        }
        if offset >= self.end() {
            return Err(Read::Nothing);
        }
        let i = self.list.partition_point(|(b, _)| *b <= offset) - 1;
        let (base, len) = self.list[i];
        let n = usize::try_from(base + len - offset)
            .unwrap_or(usize::MAX)
            .min(max);
        Ok((self.path(base), offset - base, n))
    }
}

struct Inner {
    streams: [Segments; 2],
    meta: Meta,
}

fn idx(c: Channel) -> usize {
    match c {
        Channel::Stdout => 0,
        Channel::Stderr => 1,
    }
}

/// One allocation's spooled output.
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    source: String,
    inner: Mutex<Inner>,
    mark: watch::Sender<Mark>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.dir).finish()
    }
}

fn write_meta(dir: &Path, meta: &Meta) -> std::io::Result<()> {
    let tmp = dir.join(format!("{META}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec(meta).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, dir.join(META))
}

impl Spool {
    /// Opens (or creates) the spool in `dir` for `allocation`.
    fn open(dir: PathBuf, allocation: &str, limit: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let meta = match std::fs::read(dir.join(META)) {
            Ok(b) => serde_json::from_slice::<Meta>(&b).ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let meta = match meta {
            Some(m) if m.allocation == allocation => m,
            // New, or unreadable: a new source, so followers start again at 0.
            _ => {
                for c in Channel::BOTH {
                    let _ = std::fs::remove_dir_all(dir.join(c.as_str()));
                }
                let m = Meta {
                    allocation: allocation.to_string(),
                    source: hex::encode(rand::random::<[u8; 8]>()),
                    generation: None,
                    base: [0, 0],
                };
                write_meta(&dir, &m)?;
                m
            }
        };
        let streams = [
            Segments::load(dir.join("stdout"))?,
            Segments::load(dir.join("stderr"))?,
        ];
        let mark = Mark {
            stdout: streams[0].end(),
            stderr: streams[1].end(),
            ..Mark::default()
        };
        Ok(Self {
            source: meta.source.clone(),
            dir,
            limit: limit.max(MIN_LIMIT),
            inner: Mutex::new(Inner { streams, meta }),
            mark: watch::Sender::new(mark),
            turn: Arc::default(),
        })
    }

    /// The name of this output's source: offsets of another source do not apply to it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Waits for where output and state stand.
    pub fn subscribe(&self) -> watch::Receiver<Mark> {
        self.mark.subscribe()
    }

    /// Where output and state stand now.
    pub fn mark(&self) -> Mark {
        self.mark.borrow().clone()
    }

    /// Records the allocation's state (a final one, or `None` when it runs again).
    pub fn set_state(&self, state: Option<State>) {
        self.mark.send_if_modified(|m| {
            let changed = m.state != state;
            m.state = state;
            changed
        });
    }

    /// No more output will come.
    pub fn close(&self) {
        self.mark.send_modify(|m| m.closed = true);
    }

    /// At most `max` bytes of `c` from `offset`.
    pub fn read(&self, c: Channel, offset: u64, max: usize) -> std::io::Result<Read> {
        for _ in 0..3 {
            let at = match self.inner.lock() {
                Ok(i) => i.streams[idx(c)].locate(offset, max),
                Err(_) => return Err(std::io::Error::other("spool lock poisoned")),
            };
            let (path, pos, n) = match at {
                Ok(at) => at,
                Err(r) => return Ok(r),
            };
            let f = match File::open(&path) {
                Ok(f) => f,
                // Deleted by retention meanwhile: look again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut buf = vec![0u8; n];
            f.read_exact_at(&mut buf, pos)?;
            return Ok(Read::Data(buf));
        }
        Ok(Read::Nothing)
    }

    /// The last `max` bytes of `c` (at most), as text.
    pub fn tail(&self, c: Channel, max: usize) -> String {
        let end = self.mark().size(c);
        let mut at = end.saturating_sub(max as u64);
        let mut out = Vec::new();
        while at < end {
            match self.read(c, at, end.saturating_sub(at) as usize) {
                Ok(Read::Data(d)) if !d.is_empty() => {
                    at += d.len() as u64;
                    out.extend_from_slice(&d);
                }
                Ok(Read::Skipped(to)) => at = to,
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The writer for execution `generation`: waits for an earlier writer to finish. A
    /// writer for the generation last written skips the bytes that generation already
    /// wrote (its output is read again from the start after a daemon restart).
    pub async fn writer(self: &Arc<Self>, generation: u64) -> std::io::Result<Writer> {
        let turn = self.turn.clone().lock_owned().await;
        let mut i = self
            .inner
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
        let ends = [i.streams[0].end(), i.streams[1].end()];
        if i.meta.generation.is_some_and(|g| g > generation) {
            return Err(std::io::Error::other(format!(
                "output of generation {generation} comes after generation {:?} was written",
                i.meta.generation
            )));
        }
        let skip = if i.meta.generation == Some(generation) {
            [
                ends[0].saturating_sub(i.meta.base[0]),
                ends[1].saturating_sub(i.meta.base[1]),
            ]
        } else {
            i.meta.generation = Some(generation);
            i.meta.base = ends;
            write_meta(&self.dir, &i.meta)?;
            [0, 0]
        };
        drop(i);
        Ok(Writer {
            spool: self.clone(),
            skip,
            _turn: turn,
        })
    }

    fn append(&self, c: Channel, data: &[u8]) -> std::io::Result<()> {
        let end = {
            let mut i = self
                .inner
                .lock()
                .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
            let s = &mut i.streams[idx(c)];
            s.append(data, self.limit)?;
            s.end()
        };
        self.mark.send_modify(|m| match c {
            Channel::Stdout => m.stdout = end,
            Channel::Stderr => m.stderr = end,
        });
        Ok(())
    }
}

/// Appends one execution's output ([`Spool::writer`]).
pub struct Writer {
    spool: Arc<Spool>,
    skip: [u64; 2],
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Writer {
    /// Appends `data`, the next bytes `c` of the execution produced (after those a
    /// restarted daemon already has).
    pub fn append(&mut self, c: Channel, mut data: &[u8]) -> std::io::Result<()> {
        let skip = &mut self.skip[idx(c)];
        let n = usize::try_from(*skip).unwrap_or(usize::MAX).min(data.len());
        *skip -= n as u64;
        data = &data[n..];
        if data.is_empty() {
            return Ok(());
        }
        self.spool.append(c, data)
    }
}

/// Every allocation's spool under one directory (`<data_dir>/output`).
pub struct Spools {
    root: PathBuf,
    limit: u64,
    open: Mutex<HashMap<String, Arc<Spool>>>,
}

impl std::fmt::Debug for Spools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spools").field("root", &self.root).finish()
    }
}

impl Spools {
    /// Spools under `root`, each stream keeping at most `limit` bytes (at least
    /// [`MIN_LIMIT`]).
    pub fn new(root: PathBuf, limit: u64) -> Self {
        Self {
            root,
            limit,
            open: Mutex::default(),
        }
    }

    /// A directory name for an allocation id from the network: never a path.
    fn dir(&self, allocation: &str) -> PathBuf {
        let h = sha2::Sha256::digest(allocation.as_bytes());
        self.root.join(hex::encode(&h[..16]))
    }

    /// The spool of `allocation`, opened (and made) when needed.
    pub fn open(&self, allocation: &str) -> std::io::Result<Arc<Spool>> {
        let mut m = self
            .open
            .lock()
            .map_err(|_| std::io::Error::other("spools lock poisoned"))?;
        if let Some(s) = m.get(allocation) {
            return Ok(s.clone());
        }
        let s = Arc::new(Spool::open(self.dir(allocation), allocation, self.limit)?);
        m.insert(allocation.to_string(), s.clone());
        Ok(s)
    }

    /// The spool of `allocation` if it is open (never makes one).
    pub fn get(&self, allocation: &str) -> Option<Arc<Spool>> {
        self.open.lock().ok()?.get(allocation).cloned()
    }

    /// Closes the spool of `allocation` and deletes its files.
    pub fn remove(&self, allocation: &str) {
        let s = self.open.lock().ok().and_then(|mut m| m.remove(allocation));
        if let Some(s) = s {
            s.close();
        }
        let dir = self.dir(allocation);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot delete an allocation's output");
        }
    }

    /// Deletes the spools of allocations `keep` does not want (left by records that are
    /// gone); returns how many.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let allocation = std::fs::read(e.path().join(META))
                .ok()
                .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
                .map(|m| m.allocation);
            if allocation.as_deref().is_some_and(&keep) {
                continue;
            }
            if let Some(a) = allocation {
                self.remove(&a);
            } else {
                let _ = std::fs::remove_dir_all(e.path());
            }
            n += 1;
        }
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all(s: &Spool, c: Channel, mut at: u64) -> (Vec<u8>, u64) {
        let mut v = Vec::new();
        loop {
            match s.read(c, at, 1000).unwrap() {
                Read::Data(d) => {
                    at += d.len() as u64;
                    v.extend(d);
                }
                Read::Skipped(to) => at = to,
                Read::Nothing => return (v, at),
            }
        }
    }

    #[tokio::test]
    async fn output_resumes_at_any_offset_and_a_restarted_writer_skips_what_it_has() {
        let d = tempfile::tempdir().unwrap();
        let spools = Spools::new(d.path().to_path_buf(), 0);
        let s = spools.open("../../etc/x").unwrap();
        // The allocation id never becomes a path.
        assert!(std::fs::read_dir(d.path()).unwrap().count() == 1);
        let source = s.source().to_string();
        let mut w = s.writer(1).await.unwrap();
        w.append(Channel::Stdout, b"hello ").unwrap();
        w.append(Channel::Stderr, b"oops\n").unwrap();
        w.append(Channel::Stdout, b"world\n").unwrap();
        drop(w);
        assert_eq!(all(&s, Channel::Stdout, 0).0, b"hello world\n");
        assert_eq!(all(&s, Channel::Stdout, 6).0, b"world\n");
        assert_eq!(all(&s, Channel::Stderr, 0).0, b"oops\n");
        assert_eq!(s.mark().stdout, 12);

        // The daemon restarts: the same execution's output is read again from its start,
        // in other chunks, with more after it.
        drop(spools);
        drop(s);
        let spools = Spools::new(d.path().to_path_buf(), 0);
        let s = spools.open("../../etc/x").unwrap();
        assert_eq!(s.source(), source);
        let mut w = s.writer(1).await.unwrap();
        for chunk in [&b"hel"[..], b"lo world\nmore\n"] {
            w.append(Channel::Stdout, chunk).unwrap();
        }
        w.append(Channel::Stderr, b"oops\nagain\n").unwrap();
        drop(w);
        assert_eq!(all(&s, Channel::Stdout, 0).0, b"hello world\nmore\n");
        assert_eq!(all(&s, Channel::Stderr, 0).0, b"oops\nagain\n");
        // A restart of the allocation (a new generation) appends all of its output.
        let mut w = s.writer(2).await.unwrap();
        w.append(Channel::Stdout, b"second run\n").unwrap();
        drop(w);
        assert_eq!(
            all(&s, Channel::Stdout, 12).0,
            b"more\nsecond run\n".to_vec()
        );
        assert_eq!(s.tail(Channel::Stdout, 4), "run\n");
        // Another allocation with the same directory name would be a new source.
        spools.remove("../../etc/x");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let again = spools.open("../../etc/x").unwrap();
        assert_ne!(again.source(), source);
        assert_eq!(again.mark(), Mark::default());
    }

    #[tokio::test]
    async fn retention_drops_the_oldest_bytes_and_says_where_output_resumes() {
        let d = tempfile::tempdir().unwrap();
        let spools = Spools::new(d.path().to_path_buf(), MIN_LIMIT);
        let s = spools.open("a").unwrap();
        let mut w = s.writer(1).await.unwrap();
        let chunk = vec![b'x'; 100_000];
        for _ in 0..30 {
            w.append(Channel::Stdout, &chunk).unwrap();
        }
        let end = s.mark().stdout;
        assert_eq!(end, 3_000_000);
        let first = match s.read(Channel::Stdout, 0, 10).unwrap() {
            Read::Skipped(to) => to,
            other => panic!("{other:?}"),
        };
        assert!(end - first <= MIN_LIMIT + (MIN_LIMIT / SEGMENTS).max(64 << 10) + 100_000);
        assert!(end - first >= MIN_LIMIT - (MIN_LIMIT / SEGMENTS), "{first}");
        let (bytes, at) = all(&s, Channel::Stdout, 0);
        assert_eq!(at, end);
        assert_eq!(bytes.len() as u64, end - first);
        // Retention is per allocation; `retain` deletes spools nobody wants.
        spools.open("b").unwrap();
        assert_eq!(spools.retain(|a| a == "b"), 1);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn writers_take_turns_and_readers_wake_on_new_output() {
        let d = tempfile::tempdir().unwrap();
        let spools = Spools::new(d.path().to_path_buf(), 0);
        let s = spools.open("a").unwrap();
        let mut rx = s.subscribe();
        let w1 = s.writer(1).await.unwrap();
        let s2 = s.clone();
        let second = tokio::spawn(async move {
            let mut w = s2.writer(2).await.unwrap();
            w.append(Channel::Stdout, b"two\n").unwrap();
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !second.is_finished(),
            "the second writer waits for the first"
        );
        let mut w1 = w1;
        w1.append(Channel::Stdout, b"one\n").unwrap();
        drop(w1);
        second.await.unwrap();
        assert_eq!(all(&s, Channel::Stdout, 0).0, b"one\ntwo\n");
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().stdout, 8);
        s.set_state(Some(State {
            status: nunet_protocol::AllocationStatus::Completed,
            exit_code: Some(0),
        }));
        s.close();
        assert!(rx.borrow_and_update().closed);
    }
}
