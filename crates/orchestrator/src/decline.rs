//! Explicit bid declines: a provider that will not bid on a request answers with a signed
//! [`Decline`] saying why (not onboarded, excluded, no executor, resources, ports, location,
//! pinned elsewhere), so the orchestrator can close a bid round as soon as every subscribed
//! peer has answered, and users see why a node did not bid. A decline never places anything:
//! it only ends the wait for that peer and is shown in the deployment's events.

use std::collections::BTreeMap;
use std::fmt;

use nunet_did::{Did, Keypair};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::{BidError, sign_message, verify_message};

/// Prefix signed in front of a decline's JSON.
pub const DECLINE_SIGNING_PREFIX: &[u8] = b"dms-bid-decline-";

/// Why a provider did not bid (for the whole request or for one node of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// The provider has not onboarded its machine.
    NotOnboarded,
    /// The request excludes this provider.
    Excluded,
    /// The node is pinned to another peer.
    PinnedElsewhere,
    /// An executor the node needs is not available here.
    NoExecutor,
    /// Not enough free resources.
    Resources,
    /// A static public port is taken or outside the provider's range.
    Ports,
    /// The provider's location is outside the node's `location` constraint.
    Location,
}

impl fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOnboarded => "not onboarded",
            Self::Excluded => "excluded",
            Self::PinnedElsewhere => "pinned to another peer",
            Self::NoExecutor => "executor not available",
            Self::Resources => "not enough free resources",
            Self::Ports => "ports unavailable",
            Self::Location => "location not accepted",
        })
    }
}

/// A provider's signed refusal to bid on one bid request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decline {
    /// Always `true`: tells a decline from a bid in a reply.
    pub declined: bool,
    /// Ensemble id.
    pub ensemble_id: String,
    /// Nonce of the request declined.
    pub nonce: u64,
    /// The provider's libp2p peer id.
    pub peer: String,
    /// Why, for the whole request (`not_onboarded`, `excluded`); `None` when per node.
    pub reason: Option<DeclineReason>,
    /// Why, per node of the request.
    #[serde(default)]
    pub nodes: BTreeMap<String, DeclineReason>,
    /// Signature over [`DECLINE_SIGNING_PREFIX`] + this JSON with `signature` empty (hex).
    #[serde(default)]
    pub signature: String,
}

impl Decline {
    /// An unsigned decline.
    pub fn new(
        ensemble_id: &str,
        nonce: u64,
        peer: &str,
        reason: Option<DeclineReason>,
        nodes: BTreeMap<String, DeclineReason>,
    ) -> Self {
        Self {
            declined: true,
            ensemble_id: ensemble_id.to_string(),
            nonce,
            peer: peer.to_string(),
            reason,
            nodes,
            signature: String::new(),
        }
    }

    /// Whether a reply is a decline (rather than a bid).
    pub fn is_decline(v: &Value) -> bool {
        v.get("declined").and_then(Value::as_bool) == Some(true)
    }

    /// Signs the decline with the provider's node key.
    pub fn sign(mut self, key: &Keypair) -> Self {
        self.signature.clear();
        self.signature = sign_message(DECLINE_SIGNING_PREFIX, &self, key);
        self
    }

    /// Checks the signature with the key inside the decline's peer id.
    pub fn verify(&self) -> Result<Did, BidError> {
        let unsigned = Decline {
            signature: String::new(),
            ..self.clone()
        };
        verify_message(
            DECLINE_SIGNING_PREFIX,
            &unsigned,
            &self.peer,
            &self.signature,
        )
    }

    /// `not onboarded`, or `node-a: not enough free resources; node-b: location not accepted`.
    pub fn summary(&self) -> String {
        match self.reason {
            Some(r) => r.to_string(),
            None if self.nodes.is_empty() => "no reason given".into(),
            None => self
                .nodes
                .iter()
                .map(|(n, r)| format!("{n}: {r}"))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_decline_verifies_and_tampering_is_caught() {
        let key = Keypair::generate();
        let peer = key.did().peer_id().to_base58();
        let nodes = BTreeMap::from([("n1".to_string(), DeclineReason::Resources)]);
        let d = Decline::new("e", 3, &peer, None, nodes).sign(&key);
        assert_eq!(d.verify().expect("verifies"), key.did());
        let v = serde_json::to_value(&d).expect("json");
        assert!(Decline::is_decline(&v));
        assert_eq!(v["nodes"]["n1"], "resources");
        assert_eq!(d.summary(), "n1: not enough free resources");
        let mut t = d.clone();
        t.reason = Some(DeclineReason::NotOnboarded);
        assert!(matches!(t.verify(), Err(BidError::BadSignature(_))));
        let other = Keypair::generate();
        let forged = Decline::new("e", 3, &peer, None, BTreeMap::new()).sign(&other);
        assert!(forged.verify().is_err());
        assert!(!Decline::is_decline(&serde_json::json!({"node_id": "n1"})));
    }
}
