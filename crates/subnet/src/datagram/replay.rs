//! Replay protection for one datagram session: a sliding window over the 64-bit counters
//! the sender puts in every datagram (like IPsec/WireGuard). A counter is accepted once, and
//! only when it is newer than `highest - WINDOW`.
//!
//! Pure logic; it must only be updated after the datagram authenticated, so a forged
//! datagram cannot move the window.

/// How far behind the newest counter a datagram may arrive (reordering tolerance).
pub(crate) const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// Which counters of the last [`WINDOW`] were seen.
#[derive(Debug, Default)]
pub(crate) struct ReplayWindow {
    highest: u64,
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// Whether `counter` may be accepted (not seen, not too old). Counter 0 never is.
    pub fn check(&self, counter: u64) -> bool {
        if counter == 0 {
            return false;
        }
        if counter > self.highest {
            return true;
        }
        if self.highest - counter >= WINDOW {
            return false;
        }
        let (w, b) = slot(counter);
        self.bits[w] & (1 << b) == 0
    }

    /// Records `counter` as seen (call only after [`check`](Self::check) and authentication).
    pub fn commit(&mut self, counter: u64) {
        if counter > self.highest {
            let advance = counter - self.highest;
            if advance >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for c in self.highest + 1..counter {
                    let (w, b) = slot(c);
                    self.bits[w] &= !(1 << b);
                }
            }
            self.highest = counter;
        }
        let (w, b) = slot(counter);
        self.bits[w] |= 1 << b;
    }
}

fn slot(counter: u64) -> (usize, u64) {
    let i = counter % WINDOW;
    ((i / 64) as usize, i % 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn accept(w: &mut ReplayWindow, c: u64) -> bool {
        let ok = w.check(c);
        if ok {
            w.commit(c);
        }
        ok
    }

    #[test]
    fn accepts_each_counter_once_within_the_window() {
        let mut w = ReplayWindow::default();
        assert!(!accept(&mut w, 0));
        assert!(accept(&mut w, 1));
        assert!(!accept(&mut w, 1));
        assert!(accept(&mut w, 5));
        assert!(accept(&mut w, 3), "late but inside the window");
        assert!(!accept(&mut w, 3));
        assert!(accept(&mut w, 2000));
        assert!(!accept(&mut w, 5), "too old now");
        assert!(accept(&mut w, 2000 - WINDOW + 1));
        assert!(!accept(&mut w, 2000 - WINDOW));
    }

    proptest! {
        /// Against a model (a set of seen counters): same answers for any arrival order.
        #[test]
        fn matches_a_set_model(seq in proptest::collection::vec(1u64..3000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::HashSet::new();
            let mut highest = 0u64;
            for c in seq {
                let fresh = !seen.contains(&c) && (c > highest || highest - c < WINDOW);
                prop_assert_eq!(accept(&mut w, c), fresh, "counter {}", c);
                if fresh {
                    seen.insert(c);
                    highest = highest.max(c);
                }
            }
        }
    }
}
