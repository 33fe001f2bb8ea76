//! Smoothed round-trip times of connected peers, for timeouts sized to the path instead of a
//! LAN's: every libp2p ping (every 15 s per connection, and at once on a new one) and every
//! [`Network::ping`](crate::Network::ping) feeds RFC 6298's estimator. Read without a round
//! trip to the swarm task; a peer's estimate is dropped when its last connection closes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use libp2p::PeerId;

/// One peer's round-trip estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttEstimate {
    /// Smoothed round-trip time.
    pub srtt: Duration,
    /// Its mean deviation.
    pub rttvar: Duration,
    /// Samples seen.
    pub samples: u32,
}

impl RttEstimate {
    /// The estimate after a first sample `r`.
    pub fn first(r: Duration) -> Self {
        Self {
            srtt: r,
            rttvar: r / 2,
            samples: 1,
        }
    }

    /// Takes in a new sample `r` (RFC 6298 §2.3: α = 1/8, β = 1/4).
    pub fn update(&mut self, r: Duration) {
        let delta = self.srtt.abs_diff(r);
        self.rttvar = (self.rttvar * 3 + delta) / 4;
        self.srtt = (self.srtt * 7 + r) / 8;
        self.samples = self.samples.saturating_add(1);
    }

    /// How long one round trip may take before it counts as lost: `srtt + 4·rttvar`, as a
    /// TCP retransmission timeout (without TCP's 1 s floor: callers add their own base).
    pub fn rto(&self) -> Duration {
        self.srtt.saturating_add(self.rttvar.saturating_mul(4))
    }
}

/// The estimates of every connected peer; cheap to clone (one shared table).
#[derive(Debug, Clone, Default)]
pub struct Rtts(Arc<RwLock<HashMap<PeerId, RttEstimate>>>);

impl Rtts {
    /// `peer`'s estimate, when it was measured.
    pub fn get(&self, peer: &PeerId) -> Option<RttEstimate> {
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        m.get(peer).copied()
    }

    /// Records a round trip of `r` to `peer`.
    pub fn record(&self, peer: PeerId, r: Duration) {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        m.entry(peer)
            .and_modify(|e| e.update(r))
            .or_insert_with(|| RttEstimate::first(r));
    }

    /// Forgets `peer` (its last connection closed).
    pub fn forget(&self, peer: &PeerId) {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        m.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_estimate_follows_rfc_6298() {
        let mut e = RttEstimate::first(ms(100));
        assert_eq!((e.srtt, e.rttvar, e.rto()), (ms(100), ms(50), ms(300)));
        e.update(ms(180));
        // rttvar = (3·50 + 80) / 4 = 57.5; srtt = (7·100 + 180) / 8 = 110.
        assert_eq!(e.srtt, ms(110));
        assert_eq!(e.rttvar, Duration::from_micros(57_500));
        assert_eq!(e.rto(), ms(340));
        // Steady samples pull the deviation down and the timeout towards the RTT.
        for _ in 0..50 {
            e.update(ms(150));
        }
        assert!(e.srtt.abs_diff(ms(150)) < ms(1), "{e:?}");
        assert!(e.rto() < ms(160), "{e:?}");
        assert_eq!(e.samples, 52);
    }

    #[test]
    fn peers_are_recorded_and_forgotten() {
        let r = Rtts::default();
        let p = PeerId::random();
        assert!(r.get(&p).is_none());
        r.record(p, ms(40));
        r.clone().record(p, ms(40));
        assert_eq!(r.get(&p).map(|e| e.samples), Some(2));
        r.forget(&p);
        assert!(r.get(&p).is_none());
    }
}
