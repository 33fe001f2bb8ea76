//! Replay protection: every admitted `(sender, nonce)` is remembered until its message
//! expires, so a captured message cannot be delivered twice — also not after a restart.
//!
//! Only messages that passed authentication and authorization are recorded (a stranger's
//! denied messages cost nothing here). Memory is bounded in total and per sender; expired
//! entries leave in expiry order, a few per insert, so no call ever scans the whole set.
//! When a log file is given, each admitted pair is appended to it before the message runs,
//! and a restarted node loads the pairs whose messages have not expired yet.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Longest lifetime an envelope may claim; bounds how long nonces must be remembered.
pub const MAX_TTL_NS: u64 = 24 * 3600 * 1_000_000_000;
/// Most remembered (sender, nonce) pairs; beyond it new messages are refused (fail closed).
pub const MAX_REPLAY_ENTRIES: usize = 1_000_000;
/// Most remembered pairs of one sender: one authorized sender cannot fill the cache for all.
pub const MAX_REPLAY_ENTRIES_PER_SENDER: usize = 100_000;
/// Longest sender id stored (DIDs are bounded far below this before admission).
const MAX_SENDER_LEN: usize = 255;

type Key = (Arc<str>, u64);

struct State {
    seen: HashMap<Key, u64>,
    by_exp: BTreeSet<(u64, Arc<str>, u64)>,
    per_sender: HashMap<Arc<str>, usize>,
    log: Option<Log>,
}

struct Log {
    path: PathBuf,
    file: File,
    /// Records in the file (live or not); the file is rewritten when it is mostly dead.
    records: usize,
    /// The last write error, logged once until a write succeeds again.
    failing: bool,
}

/// Remembers `(sender, nonce)` pairs until their message expires.
pub struct ReplayCache {
    state: Mutex<State>,
    max_total: usize,
    max_per_sender: usize,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::with_limits(MAX_REPLAY_ENTRIES, MAX_REPLAY_ENTRIES_PER_SENDER)
    }
}

fn record_bytes(sender: &str, nonce: u64, exp: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(17 + sender.len());
    b.push(sender.len() as u8);
    b.extend_from_slice(sender.as_bytes());
    b.extend_from_slice(&nonce.to_le_bytes());
    b.extend_from_slice(&exp.to_le_bytes());
    b
}

/// Reads the records of a log; a torn last record (crash mid-write) ends the list.
fn read_records(path: &Path) -> std::io::Result<Vec<(String, u64, u64)>> {
    let mut bytes = Vec::new();
    BufReader::new(File::open(path)?).read_to_end(&mut bytes)?;
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if tail.len() < len + 16 {
            break;
        }
        let sender = String::from_utf8_lossy(&tail[..len]).into_owned();
        let mut n = [0u8; 8];
        n.copy_from_slice(&tail[len..len + 8]);
        let mut e = [0u8; 8];
        e.copy_from_slice(&tail[len + 8..len + 16]);
        out.push((sender, u64::from_le_bytes(n), u64::from_le_bytes(e)));
        rest = &tail[len + 16..];
    }
    Ok(out)
}

impl ReplayCache {
    /// An in-memory cache with these bounds (nothing survives a restart).
    pub fn with_limits(max_total: usize, max_per_sender: usize) -> Self {
        Self {
            state: Mutex::new(State {
                seen: HashMap::new(),
                by_exp: BTreeSet::new(),
                per_sender: HashMap::new(),
                log: None,
            }),
            max_total: max_total.max(1),
            max_per_sender: max_per_sender.max(1),
        }
    }

    /// A cache kept in the log file at `path` (created 0600 if missing): the pairs of
    /// messages not yet expired at `now` are loaded, and every new pair is appended.
    pub fn open(path: &Path, now: u64) -> std::io::Result<Self> {
        let cache = Self::default();
        cache.keep_in(path, now)?;
        Ok(cache)
    }

    /// From now on keeps this cache in the log file at `path` (see [`Self::open`]), after
    /// loading what it holds.
    pub fn keep_in(&self, path: &Path, now: u64) -> std::io::Result<()> {
        let records = match read_records(path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut st = self.lock_state();
        for (sender, nonce, exp) in records {
            if exp > now && st.seen.len() < self.max_total {
                Self::insert(&mut st, &sender, nonce, exp);
            }
        }
        st.log = Some(Self::rewrite(path, &st)?);
        Ok(())
    }

    /// The state, also after a panic elsewhere while it was held: every update below keeps
    /// it consistent between statements that can panic (none do), so a poisoned lock holds
    /// nothing half-done.
    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the live pairs to a fresh log and swaps it in atomically.
    fn rewrite(path: &Path, st: &State) -> std::io::Result<Log> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut buf = Vec::new();
        for ((sender, nonce), exp) in &st.seen {
            buf.extend_from_slice(&record_bytes(sender, *nonce, *exp));
        }
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Log {
            path: path.to_path_buf(),
            file,
            records: st.seen.len(),
            failing: false,
        })
    }

    fn insert(st: &mut State, sender: &str, nonce: u64, exp: u64) {
        let s: Arc<str> = st
            .per_sender
            .get_key_value(sender)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(sender));
        if st.seen.insert((s.clone(), nonce), exp).is_none() {
            st.by_exp.insert((exp, s.clone(), nonce));
            *st.per_sender.entry(s).or_default() += 1;
        }
    }

    /// Drops the entries whose messages expired by `now`, oldest first.
    fn expire(st: &mut State, now: u64) {
        while let Some(first) = st.by_exp.first() {
            if first.0 > now {
                break;
            }
            let Some((_, s, nonce)) = st.by_exp.pop_first() else {
                break;
            };
            st.seen.remove(&(s.clone(), nonce));
            if let Some(n) = st.per_sender.get_mut(&s) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.per_sender.remove(&s);
                }
            }
        }
    }

    /// Records an authenticated, authorized message; `Err` with the reason if it was seen
    /// before or cannot be tracked.
    pub fn check(&self, sender: &str, nonce: u64, exp: u64, now: u64) -> Result<(), &'static str> {
        if sender.len() > MAX_SENDER_LEN {
            return Err("sender id too long to track");
        }
        let mut st = self.lock_state();
        Self::expire(&mut st, now);
        if st.seen.contains_key(&(Arc::from(sender), nonce)) {
            return Err("replayed message (nonce seen before)");
        }
        if st.seen.len() >= self.max_total {
            return Err("too many messages in flight; replay cache full");
        }
        if st.per_sender.get(sender).copied().unwrap_or(0) >= self.max_per_sender {
            return Err("too many messages in flight from this sender");
        }
        Self::insert(&mut st, sender, nonce, exp);
        let live = st.seen.len();
        let mut compact = None;
        if let Some(log) = st.log.as_mut() {
            match log.file.write_all(&record_bytes(sender, nonce, exp)) {
                Ok(()) => {
                    log.records += 1;
                    log.failing = false;
                }
                Err(e) => {
                    if !log.failing {
                        tracing::error!(path = %log.path.display(), error = %e,
                            "cannot record an admitted message in the replay log: it could be replayed after a restart");
                    }
                    log.failing = true;
                }
            }
            if log.records > 2 * live + 10_000 {
                compact = Some(log.path.clone());
            }
        }
        if let Some(path) = compact {
            match Self::rewrite(&path, &st) {
                Ok(l) => st.log = Some(l),
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "replay log not compacted"),
            }
        }
        Ok(())
    }

    /// Forgets expired entries.
    pub fn purge(&self, now: u64) {
        Self::expire(&mut self.lock_state(), now);
    }

    /// Number of remembered pairs.
    pub fn len(&self) -> usize {
        self.lock_state().seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replays_are_refused_until_expiry_then_forgotten() {
        let c = ReplayCache::default();
        c.check("a", 1, 100, 10).unwrap();
        assert!(c.check("a", 1, 100, 10).is_err());
        c.check("a", 2, 100, 10).unwrap();
        c.check("b", 1, 100, 10).unwrap();
        c.purge(200);
        assert!(c.is_empty());
        // Expired entries leave on the next check, without a purge.
        c.check("a", 3, 300, 10).unwrap();
        c.check("a", 4, 400, 350).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn one_sender_cannot_fill_the_cache_for_everyone() {
        let c = ReplayCache::with_limits(10, 3);
        for n in 0..3 {
            c.check("flood", n, 1_000, 1).unwrap();
        }
        assert_eq!(
            c.check("flood", 99, 1_000, 1),
            Err("too many messages in flight from this sender")
        );
        for n in 0..7 {
            c.check(&format!("s{n}"), 0, 1_000, 1).unwrap();
        }
        assert_eq!(
            c.check("late", 0, 1_000, 1),
            Err("too many messages in flight; replay cache full")
        );
        // Once the flood's messages expire, there is room again.
        c.check("late", 0, 2_000, 1_000).unwrap();
    }

    /// A refused replay stays refused after the daemon restarts (it was accepted before).
    #[test]
    fn the_log_keeps_live_pairs_across_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("replay.log");
        {
            let c = ReplayCache::open(&p, 10).unwrap();
            c.check("did:key:a", 7, 1_000, 10).unwrap();
            c.check("did:key:a", 8, 50, 10).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let c = ReplayCache::open(&p, 100).unwrap();
        assert_eq!(
            c.check("did:key:a", 7, 1_000, 100),
            Err("replayed message (nonce seen before)")
        );
        assert_eq!(c.len(), 1, "the expired pair was not loaded");
        c.check("did:key:a", 8, 1_000, 100).unwrap();
        // A torn last record (crash mid-write) is ignored, the rest loads.
        drop(c);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[9, b'x']).unwrap();
        drop(f);
        let c = ReplayCache::open(&p, 100).unwrap();
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn the_log_is_compacted_when_mostly_expired() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("replay.log");
        let c = ReplayCache::open(&p, 1).unwrap();
        for n in 0..30_000u64 {
            c.check("s", n, 10 + n, 10 + n).unwrap();
        }
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size < 30_000 * 18, "not compacted: {size} bytes");
        assert!(c.len() <= 1);
    }
}
