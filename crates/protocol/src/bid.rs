//! Bids: what a provider receives in a bid request, the signed bid it answers with, and the
//! signed decline when it will not bid (NUNET-FORMATS §2.2). Bids and declines are signed with
//! the provider's node key over their JSON, so the orchestrator can check them whatever path
//! they took.

use std::collections::BTreeMap;
use std::fmt;

use nunet_actor::Handle;
use nunet_did::{Did, Keypair};
use nunet_ensemble::{Location, LocationConstraint, Resources};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most bids a provider gives per node of one request (NuNet `MaxBidMultiplier`); the
/// orchestrator also keeps at most this many bids per node.
pub const MAX_BIDS_PER_NODE: usize = 8;

/// Prefix signed in front of a bid's JSON (NuNet's `dms-bid-`).
pub const BID_SIGNING_PREFIX: &[u8] = b"dms-bid-";

/// One node of the ensemble as a provider sees it in a bid request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeBidRequest {
    /// Node name.
    pub node_id: String,
    /// Executors the node's allocations need (`docker`, `wasm`, …).
    pub executors: Vec<String>,
    /// Summed resources of the node's allocations.
    pub resources: Resources,
    /// Location accept / reject.
    pub location: LocationConstraint,
    /// Pinned peer id: only that peer may bid for this node.
    pub peer: Option<String>,
    /// Static public ports the node needs.
    pub ports: Vec<u16>,
    /// Executors of the node's allocations that ask for GPUs: the provider bids only if
    /// each of them can hand the matched GPUs to its workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_executors: Vec<String>,
}

/// `EnsembleBidRequest`: one request per ensemble, listing the nodes still to place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BidRequest {
    /// Ensemble id.
    pub ensemble_id: String,
    /// Changes per round so a provider can bid again after a failed round.
    pub nonce: u64,
    /// Nodes to bid for.
    pub nodes: Vec<NodeBidRequest>,
    /// Peers that must not bid.
    pub exclude: Vec<String>,
}

/// A provider's bid for one node (`BidV1`), signed with the provider's node key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bid {
    /// Ensemble id.
    pub ensemble_id: String,
    /// Node bid for.
    pub node_id: String,
    /// The provider's libp2p peer id.
    pub peer: String,
    /// The provider's root handle (commit / allocate / revert go there).
    pub handle: Handle,
    /// Where the provider is.
    pub location: Location,
    /// Resources free on the provider when it bid.
    pub free: Resources,
    /// Executors available there.
    pub executors: Vec<String>,
    /// 10/8 ranges the provider already uses (host routes, other ensembles), for the
    /// subnet plan to avoid; empty when it has no ensemble subnets.
    #[serde(default)]
    pub used_subnets: Vec<String>,
    /// The GPUs (devices or MIG instances) the provider would reserve for the node's
    /// requested GPUs, in request order; `free.gpus` lists every free one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<OfferedGpu>,
    /// Signature over [`BID_SIGNING_PREFIX`] + this JSON with `signature` empty (hex).
    #[serde(default)]
    pub signature: String,
}

/// One GPU a bid offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedGpu {
    /// Its UUID (`GPU-…`, `MIG-…`) or `pci:<address>`.
    pub device: String,
    /// `NVIDIA`, `AMD/ATI`, `Intel`.
    pub vendor: String,
    /// Model.
    pub model: String,
    /// VRAM offered, bytes.
    pub vram: u64,
}

/// Why a bid was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BidError {
    /// The peer id is not an ed25519 key.
    #[error("bid peer {0:?} is not an ed25519 peer id")]
    BadPeer(String),
    /// The handle does not belong to the peer.
    #[error("bid handle {handle} does not belong to peer {peer}")]
    HandleMismatch {
        /// Handle DID.
        handle: String,
        /// Peer.
        peer: String,
    },
    /// Signature missing or wrong.
    #[error("bid signature from {0} does not verify")]
    BadSignature(String),
}

/// `prefix` + the JSON of `unsigned` (the message with an empty `signature`): what bids and
/// declines sign.
fn signing_bytes<T: Serialize>(prefix: &[u8], unsigned: &T) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.extend(serde_json::to_vec(unsigned).unwrap_or_default());
    out
}

/// Hex signature of `unsigned` (see [`signing_bytes`]) by `key`.
fn sign_message<T: Serialize>(prefix: &[u8], unsigned: &T, key: &Keypair) -> String {
    hex::encode(key.sign(&signing_bytes(prefix, unsigned)).0)
}

/// Checks `signature` over `unsigned` with the key inside `peer` (a base58 peer id) and
/// returns that peer's DID.
fn verify_message<T: Serialize>(
    prefix: &[u8],
    unsigned: &T,
    peer: &str,
    signature: &str,
) -> Result<Did, BidError> {
    let id = peer.parse().map_err(|_| BidError::BadPeer(peer.into()))?;
    let did = Did::from_peer_id(&id).map_err(|_| BidError::BadPeer(peer.into()))?;
    let sig = hex::decode(signature).map_err(|_| BidError::BadSignature(peer.into()))?;
    did.verify(&signing_bytes(prefix, unsigned), &sig)
        .map_err(|_| BidError::BadSignature(peer.into()))?;
    Ok(did)
}

impl Bid {
    /// Signs the bid with the provider's node key.
    pub fn sign(mut self, key: &Keypair) -> Bid {
        self.signature.clear();
        self.signature = sign_message(BID_SIGNING_PREFIX, &self, key);
        self
    }

    /// Checks the signature with the key inside the bid's peer id, and that the handle is
    /// that peer's root.
    pub fn verify(&self) -> Result<Did, BidError> {
        let did = self
            .peer
            .parse()
            .ok()
            .and_then(|p| Did::from_peer_id(&p).ok())
            .ok_or_else(|| BidError::BadPeer(self.peer.clone()))?;
        if self.handle.did != did.as_str() || self.handle.addr.host != self.peer {
            return Err(BidError::HandleMismatch {
                handle: self.handle.did.clone(),
                peer: self.peer.clone(),
            });
        }
        let unsigned = Bid {
            signature: String::new(),
            ..self.clone()
        };
        verify_message(BID_SIGNING_PREFIX, &unsigned, &self.peer, &self.signature)
    }
}

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
    /// The node needs an executor ensembles may name but this DMS does not implement
    /// (NuNet's `containerd`; see `nunet_ensemble::execution::NOT_RUN_HERE`).
    ExecutorNotImplemented,
    /// Not enough free resources.
    Resources,
    /// A static public port is taken or outside the provider's range.
    Ports,
    /// The provider's location is outside the node's `location` constraint.
    Location,
    /// No free GPU here matches the node's GPU requirements (vendor, model, VRAM, count).
    Gpu,
    /// GPUs match, but the executor cannot hand them to the workload here (no NVIDIA
    /// container runtime, or a microVM / WASM executor).
    GpuRuntime,
}

impl fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOnboarded => "not onboarded",
            Self::Excluded => "excluded",
            Self::PinnedElsewhere => "pinned to another peer",
            Self::NoExecutor => "executor not available",
            Self::ExecutorNotImplemented => {
                "executor not implemented by this DMS (NuNet's containerd: use docker)"
            }
            Self::Resources => "not enough free resources",
            Self::Ports => "ports unavailable",
            Self::Location => "location not accepted",
            Self::Gpu => "no free GPU matches",
            Self::GpuRuntime => "GPUs match but the executor cannot use them here",
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

/// One reply to a bid request: a bid for one node, or a decline of the whole request.
#[derive(Debug, Clone, PartialEq)]
pub enum BidReply {
    /// A bid.
    Bid(Box<Bid>),
    /// A decline.
    Decline(Decline),
}

impl BidReply {
    /// Decodes a reply as it arrived (declines carry `"declined": true`).
    pub fn from_value(v: Value) -> Result<Self, serde_json::Error> {
        if Decline::is_decline(&v) {
            serde_json::from_value(v).map(Self::Decline)
        } else {
            serde_json::from_value(v).map(|b| Self::Bid(Box::new(b)))
        }
    }
}

impl Serialize for BidReply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bid(b) => b.serialize(s),
            Self::Decline(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for BidReply {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_value(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(key: &Keypair) -> Bid {
        Bid {
            ensemble_id: "e".into(),
            node_id: "n1".into(),
            peer: key.public().peer_id().to_base58(),
            handle: Handle::root_of(&key.public()),
            location: Location::default(),
            free: Resources::default(),
            executors: vec!["docker".into()],
            used_subnets: Vec::new(),
            gpus: vec![OfferedGpu {
                device: "GPU-1".into(),
                vendor: "NVIDIA".into(),
                model: "NVIDIA L4".into(),
                vram: 24 << 30,
            }],
            signature: String::new(),
        }
    }

    #[test]
    fn signed_bid_verifies_and_tampering_is_caught() {
        let key = Keypair::generate();
        let b = bid(&key).sign(&key);
        assert_eq!(b.verify().expect("verifies"), key.did());
        let mut t = b.clone();
        t.node_id = "n2".into();
        assert!(matches!(t.verify(), Err(BidError::BadSignature(_))));
        // The devices offered are signed too.
        let mut t = b.clone();
        t.gpus[0].device = "GPU-2".into();
        assert!(matches!(t.verify(), Err(BidError::BadSignature(_))));
        // Signed by another key than the one in the peer id.
        let other = Keypair::generate();
        let forged = bid(&key).sign(&other);
        assert!(matches!(forged.verify(), Err(BidError::BadSignature(_))));
        assert!(matches!(bid(&key).verify(), Err(BidError::BadSignature(_))));
    }

    /// A bid is signed over its JSON as the provider prints it and checked over the JSON
    /// the orchestrator prints from what it parsed: every float must parse back to itself
    /// (1.4000000000000001 did not, with serde_json's default float parsing).
    #[test]
    fn bids_with_any_float_verify_after_the_trip_through_json() {
        let key = Keypair::generate();
        for cores in [14.0 * 0.1, 1.0715660391465826e-75, 0.1 + 0.2, 7.0 / 3.0] {
            let mut b = bid(&key);
            b.free.cpu.cores = cores;
            let sent = serde_json::to_vec(&b.sign(&key)).expect("json");
            let got: Bid = serde_json::from_slice(&sent).expect("json");
            assert_eq!(got.free.cpu.cores.to_bits(), cores.to_bits(), "{cores}");
            assert_eq!(got.verify().expect("verifies"), key.did(), "{cores}");
        }
    }

    #[test]
    fn signed_decline_verifies_and_tampering_is_caught() {
        let key = Keypair::generate();
        let peer = key.public().peer_id().to_base58();
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
