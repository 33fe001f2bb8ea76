//! Places for streams served to peers: at most so many at once in all and per peer, so that
//! one peer cannot take every place. A place is given back when its [`Slot`] is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use tokio::sync::Semaphore;

/// Streams being served, in all (a semaphore) and per peer.
#[derive(Clone, Debug)]
pub struct Slots {
    all: Arc<Semaphore>,
    per_peer: Arc<Mutex<HashMap<PeerId, usize>>>,
    most_per_peer: usize,
}

/// One served stream's place; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _all: tokio::sync::OwnedSemaphorePermit,
    per_peer: Arc<Mutex<HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}

impl Slots {
    /// At most `all` places, `per_peer` of them for one peer.
    pub fn new(all: usize, per_peer: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(all)),
            per_peer: Arc::default(),
            most_per_peer: per_peer,
        }
    }

    /// A place for `peer`, or `None` when it or everyone has too many.
    pub fn take(&self, peer: PeerId) -> Option<Slot> {
        let mut m = self
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(peer).or_insert(0);
        if *n >= self.most_per_peer {
            return None;
        }
        let permit = self.all.clone().try_acquire_owned().ok()?;
        *n += 1;
        Some(Slot {
            _all: permit,
            per_peer: self.per_peer.clone(),
            peer,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_in_all_and_per_peer_and_come_back() {
        let s = Slots::new(3, 2);
        let (a, b) = (PeerId::random(), PeerId::random());
        let a1 = s.take(a).unwrap();
        let _a2 = s.take(a).unwrap();
        assert!(s.take(a).is_none(), "a third for one peer");
        let _b1 = s.take(b).unwrap();
        assert!(s.take(b).is_none(), "none left in all");
        drop(a1);
        assert!(s.take(b).is_some());
    }
}
