//! Bid-round counters for the node's metrics endpoint: rounds, their duration, and what
//! came back (bids accepted, declines, bids refused). Process-wide; [`register`] adds them
//! to a registry.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

struct Metrics {
    rounds: Counter,
    seconds: Histogram,
    replies: Family<Outcome, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    rounds: Counter::default(),
    // 50 ms … ~30 s: a round closes when every node has a bid, or at its collect window.
    seconds: Histogram::new(exponential_buckets(0.05, 2.0, 10)),
    replies: Family::default(),
});

/// Adds `bid_rounds_total`, `bid_round_duration_seconds` and `bid_replies_total` to
/// `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "bid_rounds",
        "Bid rounds this node ran as an orchestrator",
        METRICS.rounds.clone(),
    );
    registry.register_with_unit(
        "bid_round_duration",
        "From publishing a bid request to closing the round",
        Unit::Seconds,
        METRICS.seconds.clone(),
    );
    registry.register(
        "bid_replies",
        "Replies to bid requests: accepted bids, declines, and bids refused (malformed, unauthorized, wrong signer or GPUs)",
        METRICS.replies.clone(),
    );
}

/// One finished round: how long it took and what came back.
pub(crate) fn round(took: Duration, accepted: usize, declined: usize, refused: usize) {
    let m = &*METRICS;
    m.rounds.inc();
    m.seconds.observe(took.as_secs_f64());
    for (outcome, n) in [
        ("accepted", accepted),
        ("declined", declined),
        ("refused", refused),
    ] {
        m.replies
            .get_or_create(&Outcome { outcome })
            .inc_by(n as u64);
    }
}
