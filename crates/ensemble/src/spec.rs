//! The decoded ensemble: what the orchestrator deploys. Names and shapes follow NuNet's
//! `EnsembleConfigV1` (NUNET-FORMATS §1); units are already converted (bytes, hertz,
//! milliseconds, bits/s) and defaults already applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::execution::Execution;
use crate::resources::Resources;

/// A whole ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    /// `version:` as written (`V1` or `ensembleV1`), if given.
    pub version: Option<String>,
    /// Allocations in file order.
    pub allocations: Vec<Allocation>,
    /// Logical nodes in file order.
    pub nodes: Vec<NodeConfig>,
    /// `edge_constraints`.
    pub edges: Vec<EdgeConstraint>,
    /// Erlang-style supervision tree.
    pub supervisor: Option<Supervisor>,
    /// Named key material.
    pub keys: BTreeMap<String, String>,
    /// Named provisioning scripts.
    pub scripts: BTreeMap<String, String>,
    /// `subnet.join`: the orchestrator itself joins the ensemble's VPN.
    pub subnet_join: bool,
    /// Peers that must not be used.
    pub exclude_peers: Vec<String>,
    /// Free-form labels.
    pub metadata: BTreeMap<String, String>,
    /// Payment contracts.
    pub contracts: BTreeMap<String, Contract>,
    /// What to do when a node cannot be recovered.
    pub escalation_strategy: Option<EscalationStrategy>,
    /// Our extension (`placement.distinct_peers`, default true): whether every node needs its
    /// own peer. NuNet always requires distinct peers.
    pub distinct_peers: bool,
}

impl Ensemble {
    /// The allocation with this name.
    pub fn allocation(&self, name: &str) -> Option<&Allocation> {
        self.allocations.iter().find(|a| a.name == name)
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The allocations of node `node`, in the node's listing order (none for an unknown node).
    pub fn allocations_of(&self, node: &str) -> Vec<&Allocation> {
        self.node(node)
            .map(|n| {
                n.allocations
                    .iter()
                    .filter_map(|a| self.allocation(a))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The node that holds an allocation.
    pub fn node_of(&self, allocation: &str) -> Option<&NodeConfig> {
        self.nodes
            .iter()
            .find(|n| n.allocations.iter().any(|a| a == allocation))
    }

    /// The summed resources of all allocations on a node: what a provider must offer.
    pub fn node_resources(&self, node: &NodeConfig) -> Resources {
        let mut total = Resources::default();
        for a in node.allocations.iter().filter_map(|n| self.allocation(n)) {
            total.add(&a.resources);
        }
        total
    }
}

/// One compute job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// The allocation's name (a DNS label).
    pub name: String,
    /// `executor:` (equal to `execution.type`).
    pub executor: String,
    /// `type:` service or task.
    pub kind: AllocationType,
    /// Resources for this allocation.
    pub resources: Resources,
    /// Executor-specific settings.
    pub execution: Execution,
    /// DNS name inside the ensemble (`<dns_name>.internal`); defaults to the name.
    pub dns_name: String,
    /// Keys dropped into the allocation.
    pub keys: Vec<AllocationKey>,
    /// Script names from the top-level `scripts`, run in order.
    pub provision: Vec<String>,
    /// Application health check.
    pub healthcheck: Option<Healthcheck>,
    /// Volumes (`volume:`, list or single mapping).
    pub volumes: Vec<Volume>,
    /// Objects staged read-only into it before it starts (`inputs:`, this implementation's
    /// extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Input>,
    /// Directories of a task published to an object store when it completes (`outputs:`,
    /// this implementation's extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Output>,
    /// What the supervisor does when this allocation fails.
    pub failure_recovery: AllocationRecovery,
    /// Allocations (on the same node) that must start first.
    pub depends_on: Vec<String>,
}

/// `type:` of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocationType {
    /// Long running; an exit is a failure.
    Service,
    /// Runs to completion.
    Task,
}

/// An allocation `keys:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationKey {
    /// Newer format: `{type: ssh|gpg, file, dest}`.
    File {
        /// `ssh` or `gpg`.
        kind: String,
        /// The key material or path.
        file: String,
        /// Where to put it (required for gpg).
        dest: Option<String>,
    },
    /// Older format: the name of a top-level key.
    Named(String),
}

/// `healthcheck:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// How to check.
    pub check: HealthcheckKind,
    /// Interval between checks, if given ([`Healthcheck::DEFAULT_INTERVAL_MS`] otherwise).
    pub interval_ms: Option<u64>,
    /// Our extension `timeout`: longest one check may take
    /// ([`Healthcheck::DEFAULT_TIMEOUT_MS`] otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Our extension `failure_threshold`: consecutive failed checks that make the allocation
    /// unhealthy ([`Healthcheck::DEFAULT_FAILURE_THRESHOLD`] otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

impl Healthcheck {
    /// NuNet's interval: a check every 30 s.
    pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
    /// Default time limit of one check.
    pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
    /// Default number of consecutive failures that make an allocation unhealthy.
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
    /// Shortest interval accepted.
    pub const MIN_INTERVAL_MS: u64 = 100;

    /// The interval in force.
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.interval_ms.unwrap_or(Self::DEFAULT_INTERVAL_MS))
    }

    /// The time limit of one check in force (never longer than the interval).
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(Self::DEFAULT_TIMEOUT_MS))
            .min(self.interval())
    }

    /// The failure threshold in force (at least 1).
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold
            .unwrap_or(Self::DEFAULT_FAILURE_THRESHOLD)
            .max(1)
    }
}

/// Where an `http` health check connects: a port and a path of the allocation itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// TCP port inside the allocation (80 when the endpoint names none).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parses an `http` health check's `endpoint`: a path (`/health`), a port and path
/// (`:8080/health`) or a URL whose host is the allocation itself (`localhost`, `127.0.0.1`,
/// its `dns_name`, with or without `.internal`). A check reaches only its own allocation,
/// never another host: the provider runs it, and must not be made to fetch other addresses.
pub fn http_target(endpoint: &str, dns_name: &str) -> Result<HttpTarget, String> {
    let e = endpoint.trim();
    let rest = if let Some(r) = e.strip_prefix("http://") {
        let (authority, path) = r.split_at(r.find('/').unwrap_or(r.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let own = host.eq_ignore_ascii_case("localhost")
            || host == "127.0.0.1"
            || host.eq_ignore_ascii_case(dns_name)
            || host.eq_ignore_ascii_case(&format!("{dns_name}.internal"));
        if !own {
            return Err(format!(
                "endpoint {endpoint:?}: an http health check reaches only its own allocation \
                 (host localhost, 127.0.0.1 or {dns_name}), not {host:?}"
            ));
        }
        format!(":{}{path}", port.unwrap_or("80"))
    } else if e.contains("://") {
        return Err(format!(
            "endpoint {endpoint:?}: only http:// endpoints are checked (no TLS)"
        ));
    } else {
        e.to_string()
    };
    let (port, path) = match rest.strip_prefix(':') {
        Some(r) => {
            let (p, path) = r.split_at(r.find('/').unwrap_or(r.len()));
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("endpoint {endpoint:?}: {p:?} is not a TCP port"))?;
            (port, path.to_string())
        }
        None => (80, rest),
    };
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    if !path.starts_with('/') {
        return Err(format!(
            "endpoint {endpoint:?}: expected a path (/health), :port/path or http://localhost:port/path"
        ));
    }
    if path.len() > 2048 || path.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(format!(
            "endpoint {endpoint:?}: the path must be at most 2048 characters without spaces or control characters"
        ));
    }
    Ok(HttpTarget { port, path })
}

/// The kinds of health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthcheckKind {
    /// Run a command inside the allocation; healthy when it exits 0 and (if given) its
    /// output (stdout then stderr, as NuNet reads it) contains `response_value`.
    Command {
        /// argv.
        exec: Vec<String>,
        /// `response.value`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_value: Option<String>,
    },
    /// GET an endpoint; healthy when the body equals `response_value` (if given).
    Http {
        /// URL or path.
        endpoint: String,
        /// `response.type`.
        response_type: Option<String>,
        /// `response.value`.
        response_value: Option<String>,
    },
}

/// A volume mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Where it is mounted inside the allocation (absolute path).
    pub mount_destination: String,
    /// Read-only mount.
    pub read_only: bool,
    /// Encrypted at rest on the provider (named `local` volumes only; this implementation's
    /// extension, `encrypted: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// The backing store.
    pub source: VolumeSource,
}

/// The backing store of a [`Volume`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeSource {
    /// A host path or a named local volume.
    Local {
        /// Absolute path or volume name.
        src: String,
    },
    /// A GlusterFS volume.
    Glusterfs {
        /// Server addresses.
        servers: Vec<String>,
        /// Volume name.
        name: String,
        /// TLS client key (PEM), if any.
        client_private_key: Option<String>,
        /// TLS client certificate, if any.
        client_pem: Option<String>,
        /// TLS CA, if any.
        client_ca: Option<String>,
    },
}

/// Objects of an S3-compatible store: `s3://bucket/key` on `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLocation {
    /// `http(s)://host[:port]` of the store (path-style requests).
    pub endpoint: String,
    /// Signing region (`us-east-1` unless given).
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Object key, or a prefix (empty, or ending with `/`).
    pub key: String,
}

impl ObjectLocation {
    /// `s3://bucket/key` as written.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// Where an input comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InputSource {
    /// An object, or every object under a prefix, of an S3-compatible store (`source:`).
    Object(ObjectLocation),
    /// The output of another allocation of the ensemble, a task (`from: <allocation>/<name>`),
    /// fetched from its provider once it completed.
    Output(OutputRef),
}

impl Allocation {
    /// The allocations whose outputs this one's inputs name (it starts after they complete).
    pub fn producers(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().filter_map(|i| match &i.source {
            InputSource::Output(r) => Some(r.allocation.as_str()),
            InputSource::Object(_) => None,
        })
    }
}

impl InputSource {
    /// How an entry names its source: `s3://bucket/key` or `output <allocation>/<name>`.
    pub fn describe(&self) -> String {
        match self {
            InputSource::Object(o) => o.url(),
            InputSource::Output(r) => format!("output {}/{}", r.allocation, r.output),
        }
    }
}

/// A named output of an allocation of the same ensemble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRef {
    /// The allocation (a task) that leaves it.
    pub allocation: String,
    /// The `name` of one of its `outputs:`.
    pub output: String,
}

/// An `inputs:` entry: what `source` names is fetched by the provider before the allocation
/// starts and mounted read-only under `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// What to fetch.
    pub source: InputSource,
    /// Directory inside the allocation (absolute) that holds what was fetched.
    pub path: String,
    /// Name of the deployment secret holding the store's credentials; none: anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// An `outputs:` entry: the files a task leaves under `path` are uploaded under the prefix
/// `target` when it completes successfully, and kept on its provider for the allocations
/// whose inputs name it (`name`) until the ensemble ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Directory inside the allocation (absolute), empty and writable when it starts.
    pub path: String,
    /// Name other allocations fetch it by (`from: <allocation>/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where its files go (`key` is the prefix of their keys); none: nowhere but to the
    /// allocations that fetch it by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ObjectLocation>,
    /// Name of the deployment secret holding the store's credentials; none: anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// Allocation-level `failure_recovery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationRecovery {
    /// Leave it down (default).
    #[default]
    StayDown,
    /// Restart only this allocation.
    OneForOne,
    /// Restart all allocations.
    OneForAll,
    /// Restart this one and those started after it.
    RestForOne,
}

/// Node-level `failure_recovery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRecovery {
    /// Leave it down (default).
    #[default]
    StayDown,
    /// Restart on the same peer.
    Restart,
    /// Place it again, possibly on another peer.
    Redeploy,
}

/// A logical node: one peer runs all its allocations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The node's name.
    pub name: String,
    /// Names of the allocations placed here.
    pub allocations: Vec<String>,
    /// Public → private port mappings.
    pub ports: Vec<PortMapping>,
    /// Where the peer may (not) be.
    pub location: LocationConstraint,
    /// A pinned peer ID.
    pub peer: Option<String>,
    /// Number of standby copies.
    pub redundancy: u32,
    /// What the supervisor does when the node fails.
    pub failure_recovery: NodeRecovery,
}

/// `ports:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the provider's host (1025–65535).
    pub public: u16,
    /// Port inside the allocation.
    pub private: u16,
    /// The allocation that receives the traffic.
    pub allocation: String,
}

/// `location: {accept, reject}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LocationConstraint {
    /// If non-empty, the peer must match one of these.
    pub accept: Vec<Location>,
    /// The peer must match none of these.
    pub reject: Vec<Location>,
}

/// A location pattern or a peer's actual location. Empty fields are wildcards in patterns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Location {
    /// Continent code (`EU`, `AS`, …); names like `Europe` are normalised to codes.
    pub continent: Option<String>,
    /// Country (ISO code or name, compared case-insensitively).
    pub country: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// Internet service provider.
    pub isp: Option<String>,
}

fn field_matches(pattern: &Option<String>, actual: &Option<String>) -> bool {
    match (pattern, actual) {
        (None, _) => true,
        (Some(p), Some(a)) => p.eq_ignore_ascii_case(a),
        (Some(_), None) => false,
    }
}

impl Location {
    /// Whether `actual` matches this pattern (empty pattern fields match anything).
    pub fn matches(&self, actual: &Location) -> bool {
        field_matches(&self.continent, &actual.continent)
            && field_matches(&self.country, &actual.country)
            && field_matches(&self.city, &actual.city)
            && self.asn.is_none_or(|a| actual.asn == Some(a))
            && field_matches(&self.isp, &actual.isp)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for v in [&self.city, &self.country, &self.continent]
            .into_iter()
            .flatten()
        {
            parts.push(v.clone());
        }
        if let Some(asn) = self.asn {
            parts.push(format!("AS{asn}"));
        }
        if let Some(isp) = &self.isp {
            parts.push(isp.clone());
        }
        if parts.is_empty() {
            parts.push("anywhere".to_string());
        }
        write!(f, "{}", parts.join("/"))
    }
}

impl LocationConstraint {
    /// Why `actual` is refused, or `None` when it is acceptable. Unlike NuNet (which ignores
    /// `reject` when `accept` is set), both lists apply.
    pub fn refusal(&self, actual: &Location) -> Option<String> {
        if !self.accept.is_empty() && !self.accept.iter().any(|p| p.matches(actual)) {
            let list: Vec<String> = self.accept.iter().map(|l| l.to_string()).collect();
            return Some(format!("location accept {}", list.join(", ")));
        }
        self.reject
            .iter()
            .find(|p| p.matches(actual))
            .map(|p| format!("location reject {p}"))
    }
}

/// `edge_constraints[]`: limits between the peers of two nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeConstraint {
    /// First node.
    pub source: String,
    /// Second node.
    pub target: String,
    /// Maximum round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Minimum bandwidth in bits per second.
    pub bw_bps: Option<f64>,
}

/// `supervisor:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supervisor {
    /// Restart strategy.
    pub strategy: SupervisorStrategy,
    /// Supervised allocations.
    pub allocations: Vec<String>,
    /// Nested supervisors.
    pub children: Vec<Supervisor>,
}

/// Erlang-style restart strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorStrategy {
    /// Restart the failed child only.
    OneForOne,
    /// Restart all children.
    AllForOne,
    /// Restart the failed child and those after it.
    RestForOne,
}

/// `contracts.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    /// The contract's DID.
    pub did: String,
    /// The contract host's DID, if any.
    pub host: Option<String>,
}

/// `escalation_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EscalationStrategy {
    /// Place the ensemble again.
    Redeploy,
    /// Shut the ensemble down.
    Teardown,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod health_tests {
    use super::*;

    #[test]
    fn http_endpoints_name_a_port_and_path_of_the_allocation_itself() {
        let t = |e: &str| http_target(e, "web").map(|t| (t.port, t.path));
        assert_eq!(t("/health"), Ok((80, "/health".into())));
        assert_eq!(t(":8080/h?x=1"), Ok((8080, "/h?x=1".into())));
        assert_eq!(t(":8080"), Ok((8080, "/".into())));
        assert_eq!(t("http://localhost:9000/ok"), Ok((9000, "/ok".into())));
        assert_eq!(t("http://web.internal/ok"), Ok((80, "/ok".into())));
        assert_eq!(t("http://WEB:81"), Ok((81, "/".into())));
        assert!(
            t("http://db.internal/ok")
                .unwrap_err()
                .contains("only its own")
        );
        assert!(
            t("http://10.0.0.1:80/")
                .unwrap_err()
                .contains("only its own")
        );
        assert!(t("health").unwrap_err().contains("expected a path"));
        assert!(t(":0/x").unwrap_err().contains("not a TCP port"));
        assert!(t("/a b").unwrap_err().contains("without spaces"));
        let h = Healthcheck {
            check: HealthcheckKind::Command {
                exec: vec!["true".into()],
                response_value: None,
            },
            interval_ms: Some(1000),
            timeout_ms: Some(5000),
            failure_threshold: Some(0),
        };
        assert_eq!(h.timeout(), std::time::Duration::from_secs(1));
        assert_eq!(h.failure_threshold(), 1);
    }
}
