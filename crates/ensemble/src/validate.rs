//! Rules that relate fields to each other (NUNET-FORMATS §1): unique DNS-valid names, each
//! allocation on exactly one node, ports and dependencies on the right node, no dependency
//! cycles, references to scripts/keys/nodes/allocations that exist, pinned peers that are
//! neither excluded nor shared.

use std::collections::{HashMap, HashSet};

use crate::decode::Declared;
use crate::problem::{Collector, index, join};
use crate::resources::normalize_arch;
use crate::spec::{AllocationKey, Ensemble, Supervisor};

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
    names(c, e);
    placement(c, e, d);
    references(c, e, d);
    dependencies(c, e, d);
    peers(c, e);
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

fn placement(c: &mut Collector, e: &Ensemble, d: &Declared) {
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
            if !d.allocations.contains(a) {
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
        for (i, port) in n.ports.iter().enumerate() {
            let p = index(&join(&np, "ports"), i);
            if !public.insert(port.public) {
                c.error(
                    &join(&p, "public"),
                    format!("public port {} is mapped twice on this node", port.public),
                );
            }
            if !n.allocations.contains(&port.allocation) {
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
        for a in n.allocations.iter().filter_map(|a| e.allocation(a)) {
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

fn references(c: &mut Collector, e: &Ensemble, d: &Declared) {
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
            if !d.nodes.contains(n) {
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
        supervisor_refs(c, d, s, "supervisor");
    }
}

fn supervisor_refs(c: &mut Collector, d: &Declared, s: &Supervisor, path: &str) {
    for (i, a) in s.allocations.iter().enumerate() {
        if !d.allocations.contains(a) {
            c.error(
                &index(&join(path, "allocations"), i),
                format!("no allocation named {a:?}"),
            );
        }
    }
    for (i, child) in s.children.iter().enumerate() {
        supervisor_refs(c, d, child, &index(&join(path, "children"), i));
    }
}

fn dependencies(c: &mut Collector, e: &Ensemble, d: &Declared) {
    for a in &e.allocations {
        let p = join(&join("allocations", &a.name), "depends_on");
        for (i, dep) in a.depends_on.iter().enumerate() {
            let dp = index(&p, i);
            if *dep == a.name {
                c.error(&dp, "an allocation cannot depend on itself");
                continue;
            }
            if !d.allocations.contains(dep) {
                c.error(&dp, format!("no allocation named {dep:?}"));
                continue;
            }
            if let (Some(mine), Some(theirs)) = (e.node_of(&a.name), e.node_of(dep))
                && mine.name != theirs.name
            {
                c.error(&dp, format!("{dep:?} is on node {:?} but {:?} is on {:?}; dependencies must be on the same node", theirs.name, a.name, mine.name));
            }
        }
    }
    // Cycle detection: depth-first search with colours, reporting each cycle once.
    let deps: HashMap<&str, Vec<&str>> = e
        .allocations
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.depends_on
                    .iter()
                    .map(String::as_str)
                    .filter(|d| *d != a.name)
                    .collect(),
            )
        })
        .collect();
    let mut state: HashMap<&str, u8> = HashMap::new();
    for a in &e.allocations {
        let mut stack = vec![a.name.as_str()];
        visit(c, &deps, &mut state, &mut stack);
    }
}

fn visit<'a>(
    c: &mut Collector,
    deps: &HashMap<&'a str, Vec<&'a str>>,
    state: &mut HashMap<&'a str, u8>,
    stack: &mut Vec<&'a str>,
) {
    let Some(&node) = stack.last() else { return };
    match state.get(node) {
        Some(2) => return,
        Some(1) => {
            let start = stack.iter().position(|n| *n == node).unwrap_or(0);
            let cycle = stack[start..].join(" → ");
            c.error(
                &format!("allocations.{}.depends_on", stack[start]),
                format!("dependency cycle: {cycle}"),
            );
            return;
        }
        _ => {}
    }
    state.insert(node, 1);
    for next in deps.get(node).into_iter().flatten() {
        if !deps.contains_key(next) {
            continue;
        }
        stack.push(next);
        visit(c, deps, state, stack);
        stack.pop();
    }
    state.insert(node, 2);
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
        if e.exclude_peers.contains(peer) {
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
