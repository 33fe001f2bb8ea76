//! Timeouts sized to the path to each peer. A call's base timeout is what the work takes
//! on the callee (an orchestrator's commit, allocation or status call to a provider; a
//! provider's report back to its orchestrator); the path adds a number of
//! round trips, each allowed a retransmission timeout of that peer's measured RTT
//! ([`crate::RttEstimate::rto`]). On a LAN that adds next to nothing; on a 150 ms
//! path with jitter and loss it keeps calls from timing out, and providers from being counted
//! as lost, where they are merely far away. A peer not measured yet (or no longer connected)
//! gets the base alone: a new connection is pinged at once, so only the call that opened it
//! goes without, and a provider that just died is noticed as fast as before. What a path adds
//! is at most four times the base (and [`MAX_PATH_EXTRA`]), so one inflated sample cannot make
//! a dead provider take half a minute to notice.

use std::time::Duration;

use crate::{PeerId, Rtts};

/// Most a path may add to one call's timeout.
pub const MAX_PATH_EXTRA: Duration = Duration::from_secs(30);

/// The measured paths to peers (none: every call gets its base timeout).
#[derive(Debug, Clone, Default)]
pub struct Paths(Option<Rtts>);

impl Paths {
    /// Paths measured by the libp2p host.
    pub fn new(rtts: Rtts) -> Self {
        Self(Some(rtts))
    }

    /// What `trips` round trips to `peer` (a peer id) may take, when it was measured.
    pub fn extra(&self, peer: &str, trips: u32) -> Duration {
        let Some(rtts) = &self.0 else {
            return Duration::ZERO;
        };
        peer.parse::<PeerId>()
            .ok()
            .and_then(|p| rtts.get(&p))
            .map_or(Duration::ZERO, |e| {
                e.rto().saturating_mul(trips).min(MAX_PATH_EXTRA)
            })
    }

    /// `base` plus what `trips` round trips to `peer` may take, at most four times `base`.
    pub fn timeout(&self, base: Duration, peer: &str, trips: u32) -> Duration {
        base.saturating_add(self.extra(peer, trips).min(base.saturating_mul(4)))
    }

    /// `base` plus what `trips` round trips to the farthest of `peers` may take (at most
    /// four times `base`).
    pub fn slowest<'a>(
        &self,
        base: Duration,
        peers: impl IntoIterator<Item = &'a str>,
        trips: u32,
    ) -> Duration {
        let extra = peers
            .into_iter()
            .map(|p| self.extra(p, trips))
            .max()
            .unwrap_or_default();
        base.saturating_add(extra.min(base.saturating_mul(4)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timeouts_grow_with_the_measured_path_only() {
        let rtts = Rtts::default();
        let (near, far, unknown) = (PeerId::random(), PeerId::random(), PeerId::random());
        rtts.record(near, ms(1));
        rtts.record(far, ms(150)); // rto = 150 + 4·75 = 450 ms
        let p = Paths::new(rtts.clone());
        let base = ms(1000);
        assert_eq!(p.timeout(base, &near.to_string(), 2), ms(1006));
        assert_eq!(p.timeout(base, &far.to_string(), 2), ms(1900));
        // Not measured (or gone): the base alone, so a dead provider is noticed as fast as
        // on a LAN.
        assert_eq!(p.timeout(base, &unknown.to_string(), 2), base);
        assert_eq!(p.timeout(base, "not a peer id", 2), base);
        assert_eq!(Paths::default().timeout(base, &far.to_string(), 2), base);
        let measured = [near.to_string(), far.to_string()];
        assert_eq!(
            p.slowest(base, measured.iter().map(String::as_str), 1),
            ms(1450)
        );
        assert_eq!(p.slowest(base, std::iter::empty(), 1), base);
        // A wild estimate adds at most four times the base, and never more than
        // MAX_PATH_EXTRA.
        rtts.record(unknown, Duration::from_secs(60));
        assert_eq!(p.timeout(base, &unknown.to_string(), 3), ms(5000));
        let long = Duration::from_secs(20);
        assert_eq!(
            p.timeout(long, &unknown.to_string(), 3),
            long + MAX_PATH_EXTRA
        );
    }
}
