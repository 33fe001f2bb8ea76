//! What an allocation needs besides its execution: the node's static port mappings that
//! target it, and its provision scripts (bodies from the ensemble's top-level `scripts`, in
//! the order of its `provision` list). Pure lookups; the provider runs them.

use std::collections::BTreeMap;

use nunet_ensemble::Ensemble;
use nunet_ensemble::spec::{Allocation, PortMapping};

/// The port mappings of node `node` that go to allocation `alloc`.
pub fn ports_of(e: &Ensemble, node: &str, alloc: &str) -> Vec<PortMapping> {
    e.node(node)
        .map(|n| {
            n.ports
                .iter()
                .filter(|p| p.allocation == alloc)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Host port → allocation port, as shown in the manifest.
pub fn port_map(ports: &[PortMapping]) -> BTreeMap<u16, u16> {
    ports.iter().map(|p| (p.public, p.private)).collect()
}

/// The allocation's provision scripts as (name, body), in order; a name missing from the
/// top-level `scripts` gets an empty body (validation reports it before deployment).
pub fn provision_of(e: &Ensemble, a: &Allocation) -> Vec<(String, String)> {
    a.provision
        .iter()
        .map(|n| (n.clone(), e.scripts.get(n).cloned().unwrap_or_default()))
        .collect()
}
