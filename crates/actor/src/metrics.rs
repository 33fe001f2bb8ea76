//! Admission counters: every envelope that reaches [`ActorSystem`](crate::ActorSystem)
//! dispatch is counted once, admitted or denied, with the rule that denied it.
//!
//! The counters are process-wide (one daemon per process); [`register`] adds them to the
//! node's registry. Label values come from closed sets (capability rules, error kinds), so
//! the number of series stays bounded whatever arrives.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::{ActorError, ErrorKind};

/// How an envelope arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Channel {
    /// Addressed to one actor (request-response, REST bridge, in-process).
    Direct,
    /// Published on a gossip topic.
    Broadcast,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Broadcast => "broadcast",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Admitted {
    channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Denied {
    channel: &'static str,
    rule: &'static str,
}

struct Metrics {
    admitted: Family<Admitted, Counter>,
    denied: Family<Denied, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    admitted: Family::default(),
    denied: Family::default(),
});

/// Adds the admission counters to `registry` (`actor_messages_admitted_total`,
/// `actor_messages_denied_total`, under the registry's prefix).
pub fn register(registry: &mut Registry) {
    registry.register(
        "actor_messages_admitted",
        "Envelopes that passed every admission check and were dispatched",
        METRICS.admitted.clone(),
    );
    registry.register(
        "actor_messages_denied",
        "Envelopes refused before dispatch, by the rule that refused them (a capability rule, or rejected / not-found / undecodable)",
        METRICS.denied.clone(),
    );
}

pub(crate) fn admitted(channel: Channel) {
    METRICS
        .admitted
        .get_or_create(&Admitted {
            channel: channel.as_str(),
        })
        .inc();
}

pub(crate) fn denied(channel: Channel, e: &ActorError) {
    METRICS
        .denied
        .get_or_create(&Denied {
            channel: channel.as_str(),
            rule: rule_of(e),
        })
        .inc();
}

pub(crate) fn undecodable(channel: Channel) {
    METRICS
        .denied
        .get_or_create(&Denied {
            channel: channel.as_str(),
            rule: "undecodable",
        })
        .inc();
}

/// The label for a denial: the capability rule when there is one (a closed set, matched
/// here so that no other text can become a label value), else the error's kind.
fn rule_of(e: &ActorError) -> &'static str {
    if let Some(r) = e.rule.as_deref()
        && let Some(known) = nunet_capability::RULES.iter().find(|k| **k == r)
    {
        return known;
    }
    match e.kind {
        ErrorKind::Denied => "denied",
        ErrorKind::Rejected => "rejected",
        ErrorKind::NotFound => "not-found",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Failed => "failed",
        ErrorKind::Unreachable => "unreachable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_outside_the_known_set_is_not_a_label_value() {
        let mut e = ActorError::new(ErrorKind::Denied, "x");
        e.rule = Some("expired".into());
        assert_eq!(rule_of(&e), "expired");
        e.rule = Some("made-up rule from a peer".into());
        assert_eq!(rule_of(&e), "denied");
        let e = ActorError::new(ErrorKind::Rejected, "message expired");
        assert_eq!(rule_of(&e), "rejected");
    }
}
