//! Two-phase commit messages: commit (lock resources), allocate (create the allocation
//! actors), revert; the checks a provider runs on them before anything else (every number
//! under the rules an ensemble file is held to); and the ids both sides derive.

use nunet_actor::Handle;
use nunet_ensemble::spec::{AllocationType, PortMapping};
use nunet_ensemble::{Execution, Problem, Resources, Severity, check, limits};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bid::BidRequest;

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
    /// The health check its provider runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<nunet_ensemble::spec::Healthcheck>,
    /// The provider keeps its resources, public ports and subnet address when its execution
    /// ends, because its orchestrator may restart it in place
    /// ([`crate::calls::AllocationRestart`]); they go with its shutdown or the revert.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_on_exit: bool,
    /// Volumes the provider mounts into it (local paths, named volumes, GlusterFS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<nunet_ensemble::spec::Volume>,
    /// Objects staged into it before it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<nunet_ensemble::spec::Input>,
    /// Directories published when it completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<nunet_ensemble::spec::Output>,
    /// The deployment's secrets its inputs and outputs name (only those): sent only to the
    /// provider that runs it, inside this capability-checked message, and kept there in
    /// memory only.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub credentials: std::collections::BTreeMap<String, nunet_ensemble::data::S3Credentials>,
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

/// `DeploymentRevertRequest`: undo everything of an ensemble on a provider, or only some of
/// its allocations (a live update that removes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevertRequest {
    /// Ensemble id.
    pub ensemble_id: String,
    /// Only these allocation ids (stopped, released, forgotten); empty: all of the ensemble,
    /// its commitments included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<String>,
}

impl RevertRequest {
    /// Everything of `ensemble_id`.
    pub fn all(ensemble_id: &str) -> Self {
        Self {
            ensemble_id: ensemble_id.to_string(),
            allocations: Vec::new(),
        }
    }
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
    /// Checks every allocation's resources, execution, port mappings and health check.
    pub fn check(&self) -> Result<(), InvalidRequest> {
        let mut problems = Vec::new();
        for (i, a) in self.allocations.iter().enumerate() {
            let p = format!("allocations[{i}]");
            problems.extend(a.resources.check_request(&format!("{p}.resources")));
            problems.extend(check::execution(&a.execution, &format!("{p}.execution")));
            for (j, port) in a.ports.iter().enumerate() {
                problems.extend(check::port(port, &format!("{p}.ports[{j}]")));
            }
            // The provider runs it: an interval of 0 would spin, an endpoint elsewhere would
            // make it fetch another host. (The orchestrator sends endpoints as :port/path.)
            if let Some(h) = &a.healthcheck {
                problems.extend(check::healthcheck(h, &a.name, &format!("{p}.healthcheck")));
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
    use crate::bid::NodeBidRequest;
    use nunet_ensemble::LocationConstraint;

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
                gpu_executors: Vec::new(),
            }],
            exclude: Vec::new(),
        };
        let e = bid.check().expect_err("refused");
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["nodes[0].resources.cpu.cores", "nodes[0].ports[0]"]);
    }

    /// A provider checks the health check it is asked to run, whoever sent it.
    #[test]
    fn allocate_requests_with_a_spinning_or_foreign_health_check_are_refused() {
        use nunet_ensemble::spec::{Healthcheck, HealthcheckKind};
        let mut r = Resources::default();
        r.cpu.cores = 0.5;
        r.ram.size = 1 << 20;
        let alloc = |check, interval_ms| AllocationRequest {
            name: "web".into(),
            id: "a-1".into(),
            kind: nunet_ensemble::spec::AllocationType::Service,
            execution: nunet_ensemble::Execution::Null,
            resources: r.clone(),
            ports: Vec::new(),
            provision: Vec::new(),
            healthcheck: Some(Healthcheck {
                check,
                interval_ms,
                timeout_ms: None,
                failure_threshold: None,
            }),
            keep_on_exit: true,
            volumes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            credentials: Default::default(),
        };
        let req = |a| AllocateRequest {
            ensemble_id: "e".into(),
            node_id: "n".into(),
            orchestrator: nunet_actor::Handle::default(),
            allocations: vec![a],
        };
        let http = |e: &str| HealthcheckKind::Http {
            endpoint: e.into(),
            response_type: None,
            response_value: None,
        };
        req(alloc(http(":8080/health"), Some(500)))
            .check()
            .expect("accepted");
        let e = req(alloc(http(":8080/health"), Some(0)))
            .check()
            .expect_err("refused");
        assert_eq!(e.problems[0].path, "allocations[0].healthcheck.interval");
        let e = req(alloc(http("http://10.0.0.1/"), None))
            .check()
            .expect_err("refused");
        assert_eq!(e.problems[0].path, "allocations[0].healthcheck.endpoint");
        let none = HealthcheckKind::Command {
            exec: Vec::new(),
            response_value: None,
        };
        let e = req(alloc(none, None)).check().expect_err("refused");
        assert_eq!(e.problems[0].path, "allocations[0].healthcheck.exec");
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
