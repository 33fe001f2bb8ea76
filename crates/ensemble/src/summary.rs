//! A short description of a valid ensemble, as `nunet validate` prints it: nodes, the
//! allocations on each, and the aggregate resources a provider must offer per node.

use std::fmt;

use serde::Serialize;

use crate::execution::Execution;
use crate::resources::Resources;
use crate::spec::Ensemble;
use crate::units::{format_bandwidth, format_frequency, format_size, trim_float};

/// Summary of an ensemble.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Per node, in file order.
    pub nodes: Vec<NodeSummary>,
    /// Edge constraints as text (`a ↔ b: rtt ≤ 20ms, bw ≥ 100Mbps`).
    pub edges: Vec<String>,
    /// Number of allocations.
    pub allocation_count: usize,
}

/// One node in a [`Summary`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    /// Node name.
    pub name: String,
    /// Pinned peer, if any.
    pub peer: Option<String>,
    /// `name (executor type: what)` per allocation.
    pub allocations: Vec<String>,
    /// Summed resources.
    pub resources: Resources,
    /// `public→allocation:private` per port.
    pub ports: Vec<String>,
    /// Location constraint text, if any.
    pub location: Option<String>,
}

/// Builds the summary.
pub fn summarize(e: &Ensemble) -> Summary {
    let nodes = e
        .nodes
        .iter()
        .map(|n| {
            let allocations = n
                .allocations
                .iter()
                .filter_map(|a| e.allocation(a))
                .map(|a| {
                    let what = match &a.execution {
                        Execution::Docker(d) => d.image.clone(),
                        Execution::Containerd(d) => d.image.clone(),
                        Execution::Firecracker(f) => f.kernel_image.clone(),
                        Execution::Wasm(w) => w.module.clone(),
                        Execution::Null => "-".to_string(),
                    };
                    let kind = format!("{:?}", a.kind).to_lowercase();
                    format!("{} ({} {kind}: {what})", a.name, a.executor)
                })
                .collect();
            let mut location = Vec::new();
            if !n.location.accept.is_empty() {
                let l: Vec<String> = n.location.accept.iter().map(|l| l.to_string()).collect();
                location.push(format!("accept {}", l.join(", ")));
            }
            if !n.location.reject.is_empty() {
                let l: Vec<String> = n.location.reject.iter().map(|l| l.to_string()).collect();
                location.push(format!("reject {}", l.join(", ")));
            }
            NodeSummary {
                name: n.name.clone(),
                peer: n.peer.clone(),
                allocations,
                resources: e.node_resources(n),
                ports: n
                    .ports
                    .iter()
                    .map(|p| format!("{}→{}:{}", p.public, p.allocation, p.private))
                    .collect(),
                location: (!location.is_empty()).then(|| location.join("; ")),
            }
        })
        .collect();
    let edges = e
        .edges
        .iter()
        .map(|edge| {
            let mut parts = Vec::new();
            if let Some(r) = edge.rtt_ms {
                parts.push(format!("rtt ≤ {}ms", trim_float(r)));
            }
            if let Some(b) = edge.bw_bps {
                parts.push(format!("bw ≥ {}", format_bandwidth(b)));
            }
            format!("{} ↔ {}: {}", edge.source, edge.target, parts.join(", "))
        })
        .collect();
    Summary {
        nodes,
        edges,
        allocation_count: e.allocations.len(),
    }
}

/// `2 cpu × 2.4GHz, 4GiB ram, 20GiB disk, 1 gpu (NVIDIA 24GiB)`.
pub fn describe_resources(r: &Resources) -> String {
    let mut s = format!("{} cpu", trim_float(r.cpu.cores));
    if let Some(hz) = r.cpu.clock_hz {
        s.push_str(&format!(" × {}", format_frequency(hz)));
    }
    if let Some(a) = &r.cpu.architecture {
        s.push_str(&format!(" ({a})"));
    }
    s.push_str(&format!(
        ", {} ram, {} disk",
        format_size(r.ram.size),
        format_size(r.disk.size)
    ));
    if !r.gpus.is_empty() {
        let gpus: Vec<String> = r
            .gpus
            .iter()
            .map(|g| {
                let mut parts = Vec::new();
                parts.extend(g.vendor.clone());
                parts.extend(g.model.clone());
                parts.extend(g.vram.map(format_size));
                if parts.is_empty() {
                    "any".to_string()
                } else {
                    parts.join(" ")
                }
            })
            .collect();
        s.push_str(&format!(", {} gpu ({})", r.gpus.len(), gpus.join(", ")));
    }
    s
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ensemble: {} node(s), {} allocation(s)",
            self.nodes.len(),
            self.allocation_count
        )?;
        for n in &self.nodes {
            write!(f, "node {}", n.name)?;
            if let Some(p) = &n.peer {
                write!(f, " (pinned to {p})")?;
            }
            writeln!(f, ": {}", describe_resources(&n.resources))?;
            for a in &n.allocations {
                writeln!(f, "  allocation {a}")?;
            }
            if !n.ports.is_empty() {
                writeln!(f, "  ports {}", n.ports.join(", "))?;
            }
            if let Some(l) = &n.location {
                writeln!(f, "  location {l}")?;
            }
        }
        for e in &self.edges {
            writeln!(f, "edge {e}")?;
        }
        Ok(())
    }
}

/// The outcome of validating a file, as `nunet validate --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// Whether the file has no errors.
    pub valid: bool,
    /// Errors and warnings.
    pub problems: Vec<crate::Problem>,
    /// The summary, when valid.
    pub summary: Option<Summary>,
}

impl Validation {
    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
