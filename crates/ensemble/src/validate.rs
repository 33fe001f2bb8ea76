//! Rules that relate fields to each other (NUNET-FORMATS §1): unique DNS-valid names, each
//! allocation on exactly one node, ports and dependencies on the right node, no dependency
//! cycles, references to scripts/keys/nodes/allocations that exist, pinned peers that are
//! neither excluded nor shared.

use std::collections::{HashMap, HashSet};

use crate::decode::Declared;
use crate::problem::{Collector, index, join};
use crate::resources::normalize_arch;
use crate::spec::{Allocation, AllocationKey, Ensemble, NodeConfig, Supervisor};

/// A DNS label: 1–63 letters, digits or `-`, not starting or ending with `-`.
pub fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A hostname: dot-separated DNS labels, at most 253 characters.
pub fn valid_hostname(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(valid_dns_label)
}

/// A libp2p peer ID as text: base58btc, 46 (`Qm…`) to 64 characters.
pub fn valid_peer_id(s: &str) -> bool {
    const B58: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    (40..=64).contains(&s.len()) && s.chars().all(|c| B58.contains(c))
}

pub(crate) fn validate(c: &mut Collector, e: &Ensemble, d: &Declared) {
    let ix = Index::new(e, d);
    names(c, e);
    placement(c, e, d, &ix);
    references(c, e, &ix);
    dependencies(c, e, &ix);
    peers(c, e);
    healthchecks(c, e);
    crate::volumes::rules(c, e);
    crate::data::rules(c, e);
}

/// Every allocation's health check ([`crate::check::healthcheck_rules`]).
fn healthchecks(c: &mut Collector, e: &Ensemble) {
    for a in &e.allocations {
        if let Some(h) = &a.healthcheck {
            let p = join(&join("allocations", &a.name), "healthcheck");
            crate::check::healthcheck_rules(c, h, &a.dns_name, &p);
        }
    }
}

fn names(c: &mut Collector, e: &Ensemble) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut dns: HashMap<String, &str> = HashMap::new();
    for a in &e.allocations {
        let p = join("allocations", &a.name);
        if !valid_dns_label(&a.name) {
            c.error(&p, format!("allocation name {:?} is not a valid DNS label (letters, digits and -, at most 63)", a.name));
        }
        if let Some(prev) = seen.insert(a.name.to_ascii_lowercase(), &a.name) {
            c.error(
                &p,
                format!(
                    "allocation names must be unique ignoring case; {:?} clashes with {prev:?}",
                    a.name
                ),
            );
        }
        if !valid_hostname(&a.dns_name) {
            c.error(
                &join(&p, "dns_name"),
                format!("{:?} is not a valid hostname", a.dns_name),
            );
        }
        if let Some(prev) = dns.insert(a.dns_name.to_ascii_lowercase(), &a.name) {
            c.error(
                &join(&p, "dns_name"),
                format!(
                    "dns_name {:?} is already used by allocation {prev:?}",
                    a.dns_name
                ),
            );
        }
    }
    let mut seen: HashMap<String, &str> = HashMap::new();
    for n in &e.nodes {
        let p = join("nodes", &n.name);
        if !valid_dns_label(&n.name) {
            c.error(
                &p,
                format!(
                    "node name {:?} is not a valid DNS label (letters, digits and -, at most 63)",
                    n.name
                ),
            );
        }
        if let Some(prev) = seen.insert(n.name.to_ascii_lowercase(), &n.name) {
            c.error(
                &p,
                format!(
                    "node names must be unique ignoring case; {:?} clashes with {prev:?}",
                    n.name
                ),
            );
        }
    }
}

/// Names and lookups built once, so that each check is linear in the ensemble.
struct Index<'e> {
    /// Allocation names written in the file (also those that did not decode).
    allocations: HashSet<&'e str>,
    /// Node names written in the file.
    nodes: HashSet<&'e str>,
    /// Decoded allocations by name (the first of a repeated name, as [`Ensemble::allocation`]).
    by_name: HashMap<&'e str, &'e Allocation>,
    /// The first node listing each allocation (as [`Ensemble::node_of`]).
    node_of: HashMap<&'e str, &'e NodeConfig>,
}

impl<'e> Index<'e> {
    fn new(e: &'e Ensemble, d: &'e Declared) -> Self {
        let mut by_name = HashMap::new();
        for a in &e.allocations {
            by_name.entry(a.name.as_str()).or_insert(a);
        }
        let mut node_of = HashMap::new();
        for n in &e.nodes {
            for a in &n.allocations {
                node_of.entry(a.as_str()).or_insert(n);
            }
        }
        Index {
            allocations: d.allocations.iter().map(String::as_str).collect(),
            nodes: d.nodes.iter().map(String::as_str).collect(),
            by_name,
            node_of,
        }
    }
}

fn placement(c: &mut Collector, e: &Ensemble, d: &Declared, ix: &Index<'_>) {
    let mut placed: HashMap<&str, &str> = HashMap::new();
    for n in &e.nodes {
        let np = join("nodes", &n.name);
        if n.allocations.is_empty() {
            c.warn(
                &join(&np, "allocations"),
                "node has no allocations; a peer will be reserved for nothing",
            );
        }
        for (i, a) in n.allocations.iter().enumerate() {
            let p = index(&join(&np, "allocations"), i);
            if !ix.allocations.contains(a.as_str()) {
                c.error(&p, format!("no allocation named {a:?}"));
            } else if let Some(other) = placed.insert(a, &n.name) {
                let msg = if other == n.name {
                    format!("allocation {a:?} is listed twice on this node")
                } else {
                    format!(
                        "allocation {a:?} is already on node {other:?}; an allocation goes on exactly one node"
                    )
                };
                c.error(&p, msg);
            }
        }
        let mut public = HashSet::new();
        let here: HashSet<&str> = n.allocations.iter().map(String::as_str).collect();
        for (i, port) in n.ports.iter().enumerate() {
            let p = index(&join(&np, "ports"), i);
            if !public.insert(port.public) {
                c.error(
                    &join(&p, "public"),
                    format!("public port {} is mapped twice on this node", port.public),
                );
            }
            if !here.contains(port.allocation.as_str()) {
                c.error(
                    &join(&p, "allocation"),
                    format!(
                        "allocation {:?} is not on node {:?}",
                        port.allocation, n.name
                    ),
                );
            }
        }
        let mut arch: Option<(String, &str)> = None;
        for a in n
            .allocations
            .iter()
            .filter_map(|a| ix.by_name.get(a.as_str()))
        {
            if let Some(want) = a.resources.cpu.architecture.as_deref().map(normalize_arch) {
                match &arch {
                    Some((have, other)) if *have != want => c.error(
                        &format!("allocations.{}.resources.cpu.architecture", a.name),
                        format!(
                            "{want} conflicts with {have} of {other:?} on the same node {:?}",
                            n.name
                        ),
                    ),
                    Some(_) => {}
                    None => arch = Some((want, &a.name)),
                }
            }
        }
    }
    for a in &d.allocations {
        if !placed.contains_key(a.as_str()) && !d.nodes.is_empty() {
            c.error(
                &join("allocations", a),
                format!("allocation {a:?} is on no node; list it under one node's allocations"),
            );
        }
    }
}

fn references(c: &mut Collector, e: &Ensemble, ix: &Index<'_>) {
    for a in &e.allocations {
        let p = join("allocations", &a.name);
        for (i, s) in a.provision.iter().enumerate() {
            if !e.scripts.contains_key(s) {
                c.error(
                    &index(&join(&p, "provision"), i),
                    format!("no script named {s:?} in the top-level scripts"),
                );
            }
        }
        for (i, k) in a.keys.iter().enumerate() {
            if let AllocationKey::Named(name) = k
                && !e.keys.contains_key(name)
            {
                c.error(
                    &index(&join(&p, "keys"), i),
                    format!("no key named {name:?} in the top-level keys"),
                );
            }
        }
    }
    let mut pairs = HashSet::new();
    for (i, edge) in e.edges.iter().enumerate() {
        let p = index("edge_constraints", i);
        for n in [&edge.source, &edge.target] {
            if !ix.nodes.contains(n.as_str()) {
                c.error(&join(&p, "edges"), format!("no node named {n:?}"));
            }
        }
        if edge.source == edge.target {
            c.error(&join(&p, "edges"), "an edge needs two different nodes");
        }
        let key = if edge.source < edge.target {
            (edge.source.clone(), edge.target.clone())
        } else {
            (edge.target.clone(), edge.source.clone())
        };
        if !pairs.insert(key) {
            c.warn(
                &p,
                format!(
                    "second constraint between {:?} and {:?}; both apply",
                    edge.source, edge.target
                ),
            );
        }
    }
    if let Some(s) = &e.supervisor {
        supervisor_refs(c, ix, s, "supervisor");
    }
}

fn supervisor_refs(c: &mut Collector, ix: &Index<'_>, s: &Supervisor, path: &str) {
    for (i, a) in s.allocations.iter().enumerate() {
        if !ix.allocations.contains(a.as_str()) {
            c.error(
                &index(&join(path, "allocations"), i),
                format!("no allocation named {a:?}"),
            );
        }
    }
    for (i, child) in s.children.iter().enumerate() {
        supervisor_refs(c, ix, child, &index(&join(path, "children"), i));
    }
}

fn dependencies(c: &mut Collector, e: &Ensemble, ix: &Index<'_>) {
    for a in &e.allocations {
        let p = join(&join("allocations", &a.name), "depends_on");
        for (i, dep) in a.depends_on.iter().enumerate() {
            let dp = index(&p, i);
            if *dep == a.name {
                c.error(&dp, "an allocation cannot depend on itself");
                continue;
            }
            if !ix.allocations.contains(dep.as_str()) {
                c.error(&dp, format!("no allocation named {dep:?}"));
                continue;
            }
            if let (Some(mine), Some(theirs)) = (
                ix.node_of.get(a.name.as_str()),
                ix.node_of.get(dep.as_str()),
            ) && mine.name != theirs.name
            {
                c.error(&dp, format!("{dep:?} is on node {:?} but {:?} is on {:?}; dependencies must be on the same node", theirs.name, a.name, mine.name));
            }
        }
    }
    let deps: HashMap<&str, Vec<&str>> = e
        .allocations
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                // Inputs from another allocation's output wait for it as dependencies do.
                a.depends_on
                    .iter()
                    .map(String::as_str)
                    .chain(a.producers())
                    .filter(|d| *d != a.name)
                    .collect(),
            )
        })
        .collect();
    cycles(c, e, &deps);
}

/// Most names spelled out in a dependency cycle's message.
const CYCLE_NAMES: usize = 8;

/// Cycle detection: depth-first search with colours (on an explicit stack, so that a long
/// chain of dependencies needs no deep call stack), reporting each cycle found once.
fn cycles(c: &mut Collector, e: &Ensemble, deps: &HashMap<&str, Vec<&str>>) {
    // Absent: not seen; `Some(i)`: on the current path at depth `i`; `None`: done.
    let mut state: HashMap<&str, Option<usize>> = HashMap::new();
    for a in &e.allocations {
        let root = a.name.as_str();
        if state.contains_key(root) {
            continue;
        }
        // The current path: each allocation and how many of its dependencies were followed.
        let mut path: Vec<(&str, usize)> = vec![(root, 0)];
        state.insert(root, Some(0));
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let Some(&dep) = deps.get(node).and_then(|d| d.get(*next)) else {
                state.insert(node, None);
                path.pop();
                continue;
            };
            *next += 1;
            if !deps.contains_key(dep) {
                continue;
            }
            match state.get(dep) {
                Some(None) => {}
                Some(Some(start)) => {
                    let names: Vec<&str> = path[*start..].iter().map(|(n, _)| *n).collect();
                    c.error(
                        &format!("allocations.{dep}.depends_on"),
                        cycle_message(&names),
                    );
                }
                None => {
                    state.insert(dep, Some(path.len()));
                    path.push((dep, 0));
                }
            }
        }
    }
}

/// `dependency cycle: a → b → a`; a long cycle is named by its first and last members.
fn cycle_message(names: &[&str]) -> String {
    let first = names.first().copied().unwrap_or_default();
    if names.len() <= CYCLE_NAMES {
        let mut all = names.to_vec();
        all.push(first);
        return format!("dependency cycle: {}", all.join(" → "));
    }
    let half = CYCLE_NAMES / 2;
    format!(
        "dependency cycle of {} allocations: {} → … → {} → {first}",
        names.len(),
        names[..half].join(" → "),
        names[names.len() - half..].join(" → "),
    )
}

fn peers(c: &mut Collector, e: &Ensemble) {
    for (i, p) in e.exclude_peers.iter().enumerate() {
        if !valid_peer_id(p) {
            c.warn(
                &index("exclude_peers", i),
                format!("{p:?} does not look like a peer ID (base58, like 12D3KooW…)"),
            );
        }
    }
    let excluded: HashSet<&str> = e.exclude_peers.iter().map(String::as_str).collect();
    let mut pinned: HashMap<&str, &str> = HashMap::new();
    for n in &e.nodes {
        let Some(peer) = &n.peer else { continue };
        let p = join(&join("nodes", &n.name), "peer");
        if !valid_peer_id(peer) {
            c.error(
                &p,
                format!("{peer:?} is not a peer ID (base58, like 12D3KooW…)"),
            );
        }
        if excluded.contains(peer.as_str()) {
            c.error(
                &p,
                format!("peer {peer:?} is pinned here but listed in exclude_peers"),
            );
        }
        if let Some(other) = pinned.insert(peer, &n.name)
            && e.distinct_peers
        {
            c.error(&p, format!("peer {peer:?} is also pinned to node {other:?}; each node needs its own peer (set placement.distinct_peers: false to allow sharing)"));
        }
    }
}
