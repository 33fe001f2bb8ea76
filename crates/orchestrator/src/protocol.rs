//! What orchestrators and providers send each other (NUNET-FORMATS §2.2): behavior names,
//! bid requests, signed bids, commit / allocate / revert requests, and the allocation ids
//! both sides derive.

use nunet_actor::Handle;
use nunet_did::{Did, Keypair, Signature};
use nunet_ensemble::spec::AllocationType;
use nunet_ensemble::spec::PortMapping;
use nunet_ensemble::{
    Execution, Location, LocationConstraint, Problem, Resources, Severity, check, limits,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Gossip topic of bid requests.
pub const DEPLOYMENT_TOPIC: &str = "/nunet/deployment";
/// Provider: answer a bid request (broadcast on [`DEPLOYMENT_TOPIC`]).
pub const BID_REQUEST: &str = "/dms/deployment/request";
/// Provider: answer a bid request sent directly (nodes pinned to that provider).
pub const BID_REQUEST_DIRECT: &str = "/dms/deployment/request/direct";
/// The capability a bid (or a decline) is sent under (NuNet's `/dms/deployment/bid`): the
/// orchestrating node collects only replies whose sender holds a chain for it that its own
/// anchors accept, so a node on the swarm that was granted nothing cannot win work.
pub const BID: &str = "/dms/deployment/bid";
/// Provider: lock resources for an ensemble's allocations (phase 1).
pub const COMMIT: &str = "/dms/deployment/commit";
/// Provider: create the allocation actors (phase 2).
pub const ALLOCATE: &str = "/dms/deployment/allocate";
/// Provider: undo commitments and allocations of an ensemble.
pub const REVERT: &str = "/dms/deployment/revert";
/// Allocation actor: start the execution.
pub const ALLOCATION_START: &str = "/dms/allocation/start";
/// Allocation actor: current status.
pub const ALLOCATION_STATUS: &str = "/dms/allocation/status";
/// Allocation actor: output so far.
pub const ALLOCATION_LOGS: &str = "/dms/allocation/logs";
/// Allocation actor: stop the execution and release its resources.
pub const ALLOCATION_SHUTDOWN: &str = "/dms/allocation/shutdown";

/// Most bids a provider gives per node of one request (NuNet `MaxBidMultiplier`); the
/// orchestrator also keeps at most this many bids per node.
pub const MAX_BIDS_PER_NODE: usize = 8;

/// Orchestrator actor: a provider reports that an allocation's execution ended. The full
/// name is [`allocation_exited`]`(ensemble id)`, under the `/dms/ensemble/<id>` capability.
pub fn allocation_exited(ensemble_id: &str) -> String {
    format!("/dms/ensemble/{ensemble_id}/allocation/exited")
}

/// Payload of [`allocation_exited`]: how the execution ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationExited {
    /// Ensemble id.
    pub ensemble_id: String,
    /// Allocation id (see [`allocation_id`]).
    pub allocation_id: String,
    /// `completed` or `failed`.
    pub status: String,
    /// Exit code, when there was one.
    pub exit_code: Option<i64>,
    /// Why it failed.
    pub reason: Option<String>,
}

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
    /// Signature over [`BID_SIGNING_PREFIX`] + this JSON with `signature` empty (hex).
    #[serde(default)]
    pub signature: String,
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
pub(crate) fn sign_message<T: Serialize>(prefix: &[u8], unsigned: &T, key: &Keypair) -> String {
    hex::encode(key.sign(&signing_bytes(prefix, unsigned)).0)
}

/// Checks `signature` over `unsigned` with the key inside `peer` (a base58 peer id) and
/// returns that peer's DID.
pub(crate) fn verify_message<T: Serialize>(
    prefix: &[u8],
    unsigned: &T,
    peer: &str,
    signature: &str,
) -> Result<Did, BidError> {
    let id = peer.parse().map_err(|_| BidError::BadPeer(peer.into()))?;
    let did = Did::from_peer_id(&id).map_err(|_| BidError::BadPeer(peer.into()))?;
    let sig = hex::decode(signature)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| BidError::BadSignature(peer.into()))?;
    did.public_key()
        .verify(&signing_bytes(prefix, unsigned), &sig)
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

/// One allocation in a commit request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitAllocation {
    /// Allocation name.
    pub name: String,
    /// Allocation id (see [`allocation_id`]).
    pub id: String,
    /// Resources to lock.
    pub resources: Resources,
    /// Static public ports of the node that go to this allocation (locked with it).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

/// `CommitDeploymentRequest`: lock resources for a node's allocations until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// Ensemble id.
    pub ensemble_id: String,
    /// Node name.
    pub node_id: String,
    /// Allocations.
    pub allocations: Vec<CommitAllocation>,
    /// When the commitment lapses unless allocated (Unix ms).
    pub expires_at_ms: i64,
}

/// One allocation in an allocate request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationRequest {
    /// Allocation name.
    pub name: String,
    /// Allocation id.
    pub id: String,
    /// Service or task.
    pub kind: AllocationType,
    /// What to run.
    pub execution: Execution,
    /// Resources (already committed).
    pub resources: Resources,
    /// Public → private port mappings of this allocation.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Provision scripts (name, body) to run in order before the workload.
    #[serde(default)]
    pub provision: Vec<(String, String)>,
}

/// `AllocationDeploymentRequest`: turn a node's commitments into allocation actors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocateRequest {
    /// Ensemble id.
    pub ensemble_id: String,
    /// Node name.
    pub node_id: String,
    /// The orchestrator (the only actor allocation actors answer).
    pub orchestrator: Handle,
    /// Allocations.
    pub allocations: Vec<AllocationRequest>,
}

/// `DeploymentRevertRequest`: undo everything of an ensemble on a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevertRequest {
    /// Ensemble id.
    pub ensemble_id: String,
}

/// A deployment message whose numbers (or other fields) break the rules an ensemble file is
/// held to: every problem names its field (`allocations[0].resources.cpu.cores`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidRequest {
    /// The message (`bid request`, `commit request`, …).
    pub what: &'static str,
    /// What is wrong, field by field.
    pub problems: Vec<Problem>,
}

fn invalid(what: &'static str, problems: Vec<Problem>) -> Result<(), InvalidRequest> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidRequest { what, problems })
    }
}

/// A bare public port (bid requests list them without mappings).
fn public_port(port: u16, path: String) -> Option<Problem> {
    limits::within(u64::from(port), &limits::PUBLIC_PORTS)
        .err()
        .map(|message| Problem {
            severity: Severity::Error,
            path,
            line: None,
            message,
        })
}

impl BidRequest {
    /// Checks every node's summed resources (zero allowed: a node may hold no allocation)
    /// and ports with the ensemble rules.
    pub fn check(&self) -> Result<(), InvalidRequest> {
        let mut problems = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            problems.extend(n.resources.check_amount(&format!("nodes[{i}].resources")));
            for (j, p) in n.ports.iter().enumerate() {
                problems.extend(public_port(*p, format!("nodes[{i}].ports[{j}]")));
            }
        }
        invalid("bid request", problems)
    }
}

impl CommitRequest {
    /// Checks every allocation's resources (as an allocation request) and port mappings.
    pub fn check(&self) -> Result<(), InvalidRequest> {
        let mut problems = Vec::new();
        for (i, a) in self.allocations.iter().enumerate() {
            let p = format!("allocations[{i}]");
            problems.extend(a.resources.check_request(&format!("{p}.resources")));
            for (j, port) in a.ports.iter().enumerate() {
                problems.extend(check::port(port, &format!("{p}.ports[{j}]")));
            }
        }
        invalid("commit request", problems)
    }
}

impl AllocateRequest {
    /// Checks every allocation's resources, execution and port mappings.
    pub fn check(&self) -> Result<(), InvalidRequest> {
        let mut problems = Vec::new();
        for (i, a) in self.allocations.iter().enumerate() {
            let p = format!("allocations[{i}]");
            problems.extend(a.resources.check_request(&format!("{p}.resources")));
            problems.extend(check::execution(&a.execution, &format!("{p}.execution")));
            for (j, port) in a.ports.iter().enumerate() {
                problems.extend(check::port(port, &format!("{p}.ports[{j}]")));
            }
        }
        invalid("allocate request", problems)
    }
}

/// The id of allocation `alloc` on node `node` of an ensemble: `a-` + 32 hex digits of
/// SHA-256, short enough for container names and executor ids.
pub fn allocation_id(ensemble_id: &str, node: &str, alloc: &str) -> String {
    let mut h = Sha256::new();
    h.update(ensemble_id.as_bytes());
    h.update([0]);
    h.update(node.as_bytes());
    h.update([0]);
    h.update(alloc.as_bytes());
    format!("a-{}", &hex::encode(h.finalize())[..32])
}

/// A fresh ensemble id: hex(sha256(host peer id + random)), as NuNet computes it.
pub fn new_ensemble_id(host_peer: &str) -> String {
    let mut h = Sha256::new();
    h.update(host_peer.as_bytes());
    h.update(rand::random::<[u8; 16]>());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nunet_actor::Handle;

    fn bid(key: &Keypair) -> Bid {
        let did = key.did();
        Bid {
            ensemble_id: "e".into(),
            node_id: "n1".into(),
            peer: did.peer_id().to_base58(),
            handle: Handle::root_of(&did),
            location: Location::default(),
            free: Resources::default(),
            executors: vec!["docker".into()],
            used_subnets: Vec::new(),
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
    fn requests_with_impossible_numbers_name_the_field() {
        let mut r = Resources::default();
        r.cpu.cores = -4.0;
        let commit = CommitRequest {
            ensemble_id: "e".into(),
            node_id: "n".into(),
            allocations: vec![CommitAllocation {
                name: "a".into(),
                id: "a-1".into(),
                resources: r.clone(),
                ports: Vec::new(),
            }],
            expires_at_ms: 0,
        };
        let e = commit.check().expect_err("refused");
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "allocations[0].resources.cpu.cores",
                "allocations[0].resources.ram.size"
            ]
        );
        assert!(e.to_string().contains("got -4"), "{e}");
        let bid = BidRequest {
            ensemble_id: "e".into(),
            nonce: 1,
            nodes: vec![NodeBidRequest {
                node_id: "n".into(),
                executors: Vec::new(),
                resources: r,
                location: LocationConstraint::default(),
                peer: None,
                ports: vec![22],
            }],
            exclude: Vec::new(),
        };
        let e = bid.check().expect_err("refused");
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["nodes[0].resources.cpu.cores", "nodes[0].ports[0]"]);
    }

    #[test]
    fn allocation_ids_are_short_stable_and_distinct() {
        let a = allocation_id(&"f".repeat(64), "node-1", "hello");
        assert_eq!(a, allocation_id(&"f".repeat(64), "node-1", "hello"));
        assert_ne!(a, allocation_id(&"f".repeat(64), "node-1", "hello2"));
        assert_eq!(a.len(), 34);
        assert_eq!(new_ensemble_id("p").len(), 64);
    }
}
