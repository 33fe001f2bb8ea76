//! Static public ports of deployments: which ports a provider may hand out (config
//! `port_available_range_from..=to`), which are locked by a commitment or allocation, and the
//! lock file (`<data_dir>/port-locks.json`) that keeps them across restarts.
//!
//! A lock belongs to a resource reservation id (the allocation id): it is dropped when that
//! reservation is released, expires, or is gone after a restart. This module does not open
//! ports itself; the executor publishes them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

/// Port locks of one provider.
pub(super) struct PortLocks {
    path: PathBuf,
    range: (u16, u16),
    locks: Mutex<BTreeMap<String, Vec<u16>>>,
}

fn clamp(v: u32) -> u16 {
    u16::try_from(v.min(u32::from(u16::MAX))).unwrap_or(u16::MAX)
}

impl PortLocks {
    /// Locks read back from `data_dir`, for ports in `from..=to`.
    pub(super) fn load(data_dir: &std::path::Path, from: u32, to: u32) -> Self {
        let path = data_dir.join("port-locks.json");
        let locks = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path,
            range: (clamp(from.max(1)), clamp(to)),
            locks: Mutex::new(locks),
        }
    }

    fn save(&self, locks: &BTreeMap<String, Vec<u16>>) {
        let r = serde_json::to_vec(locks)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&self.path, b));
        if let Err(e) = r {
            tracing::error!(path = %self.path.display(), error = %e, "could not persist port locks");
        }
    }

    /// Drops locks whose reservation is no longer `live`; returns the ports still locked.
    pub(super) fn locked(&self, live: &dyn Fn(&str) -> bool) -> BTreeSet<u16> {
        let Ok(mut g) = self.locks.lock() else {
            return BTreeSet::new();
        };
        let before = g.len();
        g.retain(|id, _| live(id));
        if g.len() != before {
            self.save(&g);
        }
        g.values().flatten().copied().collect()
    }

    /// Why `ports` cannot be given out now, if they cannot.
    pub(super) fn refusal(&self, ports: &[u16], live: &dyn Fn(&str) -> bool) -> Option<String> {
        let locked = self.locked(live);
        let (lo, hi) = self.range;
        for &p in ports {
            if p < lo || p > hi {
                return Some(format!(
                    "port {p} is outside this provider's range {lo}-{hi}"
                ));
            }
            if locked.contains(&p) {
                return Some(format!("port {p} is locked by another deployment"));
            }
            if std::net::TcpListener::bind(("0.0.0.0", p)).is_err() {
                return Some(format!("port {p} is in use on this host"));
            }
        }
        None
    }

    /// Locks `ports` for reservation `id`, unless one is refused.
    pub(super) fn lock(
        &self,
        id: &str,
        ports: &[u16],
        live: &dyn Fn(&str) -> bool,
    ) -> Result<(), String> {
        if ports.is_empty() {
            return Ok(());
        }
        if let Some(why) = self.refusal(ports, live) {
            return Err(why);
        }
        let mut g = self.locks.lock().map_err(|_| "port locks poisoned")?;
        g.insert(id.to_string(), ports.to_vec());
        self.save(&g);
        Ok(())
    }

    /// The ports locked for reservation `id`, sorted (none when it locked none).
    pub(super) fn ports_of(&self, id: &str) -> Vec<u16> {
        let mut ports = self
            .locks
            .lock()
            .ok()
            .and_then(|g| g.get(id).cloned())
            .unwrap_or_default();
        ports.sort_unstable();
        ports
    }

    /// Unlocks the ports of reservation `id`.
    pub(super) fn unlock(&self, id: &str) {
        if let Ok(mut g) = self.locks.lock()
            && g.remove(id).is_some()
        {
            self.save(&g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_refuse_conflicts_persist_and_follow_reservations() {
        let dir = tempfile::tempdir().expect("tmp");
        let all = |_: &str| true;
        let l = PortLocks::load(dir.path(), 16384, 65535);
        assert!(l.refusal(&[80], &all).is_some_and(|w| w.contains("range")));
        // A port held by a listener on this host is refused.
        let busy = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        let bp = busy.local_addr().expect("addr").port();
        if bp >= 16384 {
            assert!(l.refusal(&[bp], &all).is_some_and(|w| w.contains("in use")));
        }
        drop(busy);
        let free = {
            let s = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
            s.local_addr().expect("addr").port()
        };
        l.lock("r1", &[free], &all).expect("lock");
        assert!(l.lock("r2", &[free], &all).is_err(), "second lock refused");
        // Persisted: a fresh instance sees the lock while r1 lives, not once it is gone.
        let again = PortLocks::load(dir.path(), 16384, 65535);
        assert!(again.locked(&all).contains(&free));
        assert!(again.locked(&|id: &str| id != "r1").is_empty());
        l.unlock("r1");
        assert!(l.lock("r2", &[free], &all).is_ok());
    }
}
