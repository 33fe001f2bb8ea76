use std::collections::HashMap;
use std::sync::Mutex;

/// Longest lifetime an envelope may claim; bounds how long nonces must be remembered.
pub const MAX_TTL_NS: u64 = 24 * 3600 * 1_000_000_000;
/// Most remembered (sender, nonce) pairs; beyond it new messages are refused (fail closed).
pub const MAX_REPLAY_ENTRIES: usize = 1_000_000;

/// Remembers `(sender, nonce)` pairs until their message expires, so a captured message
/// cannot be delivered twice.
#[derive(Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<(String, u64), u64>>,
}

impl ReplayCache {
    /// Records a message; `Err` with the reason if it was seen before or cannot be tracked.
    pub fn check(&self, sender: &str, nonce: u64, exp: u64, now: u64) -> Result<(), &'static str> {
        let Ok(mut seen) = self.seen.lock() else {
            return Err("replay cache unavailable");
        };
        if seen.len() >= MAX_REPLAY_ENTRIES / 2 {
            seen.retain(|_, e| *e > now);
        }
        if seen.len() >= MAX_REPLAY_ENTRIES {
            return Err("too many messages in flight; replay cache full");
        }
        match seen.entry((sender.to_string(), nonce)) {
            std::collections::hash_map::Entry::Occupied(_) => {
                Err("replayed message (nonce seen before)")
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(exp);
                Ok(())
            }
        }
    }

    /// Forgets expired entries.
    pub fn purge(&self, now: u64) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|_, e| *e > now);
        }
    }

    /// Number of remembered pairs.
    pub fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
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
    }
}
