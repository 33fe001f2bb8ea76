//! Tickets (handed to peers) and sessions (handed to the CLI) are leases: bounded in number,
//! per owner and in all, kept while a stream uses them, and dropped [`IDLE`] after their last
//! use. At a limit, the owner's (then anyone's) least recently used idle lease makes room;
//! when every lease is busy the new one is refused.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A lease unused this long (and not in use) is dropped.
pub const IDLE: Duration = Duration::from_secs(600);

struct Lease<O, V> {
    owner: O,
    value: V,
    touched: Instant,
    active: usize,
}

impl<O, V> Lease<O, V> {
    fn live(&self) -> bool {
        self.active > 0 || self.touched.elapsed() < IDLE
    }
}

type Map<K, O, V> = Arc<Mutex<HashMap<K, Lease<O, V>>>>;

/// A bounded table of leases.
pub(crate) struct Leases<K, O, V> {
    map: Map<K, O, V>,
    max: usize,
    per_owner: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks a lease in use until dropped; then it is touched.
pub(crate) struct InUse<K: Eq + Hash, O, V> {
    map: Map<K, O, V>,
    key: K,
}

impl<K: Eq + Hash, O, V> Drop for InUse<K, O, V> {
    fn drop(&mut self) {
        if let Some(l) = lock(&self.map).get_mut(&self.key) {
            l.active = l.active.saturating_sub(1);
            l.touched = Instant::now();
        }
    }
}

impl<K: Eq + Hash + Clone, O: Eq + Clone, V: Clone> Leases<K, O, V> {
    /// At most `max` leases, `per_owner` of them one owner's.
    pub(crate) fn new(max: usize, per_owner: usize) -> Self {
        Self {
            map: Arc::default(),
            max,
            per_owner,
        }
    }

    /// Adds a lease; at a limit, the least recently used idle one (the owner's first) goes.
    pub(crate) fn insert(&self, key: K, owner: O, value: V) -> Result<(), &'static str> {
        let mut m = lock(&self.map);
        m.retain(|_, l| l.live());
        let oldest_idle = |m: &HashMap<K, Lease<O, V>>, of: Option<&O>| {
            m.iter()
                .filter(|(_, l)| l.active == 0 && of.is_none_or(|o| &l.owner == o))
                .min_by_key(|(_, l)| l.touched)
                .map(|(k, _)| k.clone())
        };
        if m.values().filter(|l| l.owner == owner).count() >= self.per_owner {
            let k = oldest_idle(&m, Some(&owner)).ok_or("every transfer of this peer is busy")?;
            m.remove(&k);
        }
        if m.len() >= self.max {
            let k = oldest_idle(&m, None).ok_or("every transfer on this node is busy")?;
            m.remove(&k);
        }
        m.insert(
            key,
            Lease {
                owner,
                value,
                touched: Instant::now(),
                active: 0,
            },
        );
        Ok(())
    }

    /// The lease under `key` if it is live and `ok(owner, value)`, marked in use.
    pub(crate) fn take(
        &self,
        key: &K,
        ok: impl FnOnce(&O, &V) -> bool,
    ) -> Option<(V, InUse<K, O, V>)> {
        let mut m = lock(&self.map);
        let l = m.get_mut(key).filter(|l| l.live())?;
        if !ok(&l.owner, &l.value) {
            return None;
        }
        l.active += 1;
        l.touched = Instant::now();
        Some((
            l.value.clone(),
            InUse {
                map: self.map.clone(),
                key: key.clone(),
            },
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn idle_leases_make_room_busy_ones_do_not() {
        let l: Leases<u32, char, u32> = Leases::new(3, 2);
        l.insert(1, 'a', 10).unwrap();
        l.insert(2, 'a', 20).unwrap();
        // a's third lease pushes out its least recently used one.
        let (_, busy) = l.take(&2, |_, _| true).unwrap();
        l.insert(3, 'a', 30).unwrap();
        assert!(l.take(&1, |_, _| true).is_none());
        assert_eq!(l.take(&2, |_, _| true).unwrap().0, 20);
        // Both of a's are busy now: a fourth is refused, b's still fits.
        let (_, busy3) = l.take(&3, |_, _| true).unwrap();
        assert!(l.insert(4, 'a', 40).is_err());
        l.insert(5, 'b', 50).unwrap();
        // The table is full (2, 3, 5): a new owner takes the idle one (5).
        l.insert(6, 'c', 60).unwrap();
        assert!(l.take(&5, |_, _| true).is_none());
        // The owner check.
        assert!(l.take(&6, |o, _| *o == 'a').is_none());
        assert!(l.take(&6, |o, _| *o == 'c').is_some());
        drop((busy, busy3));
    }
}
