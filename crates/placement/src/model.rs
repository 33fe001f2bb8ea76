//! What the solver reads: the placement problem (from an ensemble), the bids providers sent,
//! and the link measurements made so far.

use std::collections::HashMap;

use nunet_ensemble::{Ensemble, Location, LocationConstraint, Resources};
use serde::{Deserialize, Serialize};

use crate::geo::{GeoPoint, find_city};

/// One ensemble node as the solver sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRequest {
    /// Node name.
    pub name: String,
    /// Aggregate resources of the node's allocations.
    pub resources: Resources,
    /// Location accept/reject.
    pub location: LocationConstraint,
    /// Pinned peer, if any.
    pub peer: Option<String>,
}

/// An edge constraint between two nodes (indices into [`Problem::nodes`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeRequirement {
    /// First node.
    pub a: usize,
    /// Second node.
    pub b: usize,
    /// Largest acceptable round trip, ms.
    pub max_rtt_ms: Option<f64>,
    /// Smallest acceptable bandwidth, bits/s.
    pub min_bw_bps: Option<f64>,
}

/// A placement problem.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Problem {
    /// Nodes to place.
    pub nodes: Vec<NodeRequest>,
    /// Edge constraints.
    pub edges: Vec<EdgeRequirement>,
    /// Peers never to use.
    pub exclude_peers: Vec<String>,
    /// Whether each node needs its own peer (NuNet: always).
    pub distinct_peers: bool,
}

impl Problem {
    /// Builds the problem of a (validated) ensemble. Edges naming unknown nodes are skipped
    /// (validation reports them).
    pub fn from_ensemble(e: &Ensemble) -> Problem {
        let nodes: Vec<NodeRequest> = e
            .nodes
            .iter()
            .map(|n| NodeRequest {
                name: n.name.clone(),
                resources: e.node_resources(n),
                location: n.location.clone(),
                peer: n.peer.clone(),
            })
            .collect();
        let idx = |name: &str| nodes.iter().position(|n| n.name == name);
        let edges = e
            .edges
            .iter()
            .filter_map(|c| {
                Some(EdgeRequirement {
                    a: idx(&c.source)?,
                    b: idx(&c.target)?,
                    max_rtt_ms: c.rtt_ms,
                    min_bw_bps: c.bw_bps,
                })
            })
            .filter(|c| c.a != c.b)
            .collect();
        Problem {
            nodes,
            edges,
            exclude_peers: e.exclude_peers.clone(),
            distinct_peers: e.distinct_peers,
        }
    }

    /// The index of a node by name.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

/// What a provider says about its network link, when it knows.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LinkHints {
    /// Capacity of its uplink, bits/s.
    pub uplink_bps: Option<f64>,
    /// Typical packet loss probability (0–1).
    pub loss: Option<f64>,
}

/// A provider's bid for one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bid {
    /// The node the bid is for.
    pub node: String,
    /// The bidding peer.
    pub peer: String,
    /// Where the peer is.
    pub location: Location,
    /// Coordinates, if the provider gave them (else looked up from the city).
    pub coordinates: Option<GeoPoint>,
    /// Free resources offered.
    pub free: Resources,
    /// Price in arbitrary units (lower is better); 0 when not priced.
    pub price: f64,
    /// Link hints.
    pub link: LinkHints,
}

impl Bid {
    /// A bid with a price of 0 and no link hints.
    pub fn new(
        node: impl Into<String>,
        peer: impl Into<String>,
        location: Location,
        free: Resources,
    ) -> Bid {
        Bid {
            node: node.into(),
            peer: peer.into(),
            location,
            coordinates: None,
            free,
            price: 0.0,
            link: LinkHints::default(),
        }
    }

    /// The coordinates given, or those of the bid's city in the built-in table.
    pub fn position(&self) -> Option<GeoPoint> {
        self.coordinates.filter(GeoPoint::is_valid).or_else(|| {
            let city = self.location.city.as_deref()?;
            find_city(city, self.location.country.as_deref()).map(|c| c.point)
        })
    }
}

/// A measured link between two peers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkMeasurement {
    /// Round trip, ms.
    pub rtt_ms: f64,
    /// Bandwidth, bits/s, when measured.
    pub bw_bps: Option<f64>,
}

/// Cache of link measurements, keyed by unordered peer pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    links: HashMap<(String, String), LinkMeasurement>,
}

fn key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl Measurements {
    /// Records (or replaces) a measurement.
    pub fn insert(&mut self, a: &str, b: &str, m: LinkMeasurement) {
        self.links.insert(key(a, b), m);
    }

    /// The measurement between two peers, in either direction.
    pub fn get(&self, a: &str, b: &str) -> Option<&LinkMeasurement> {
        if self.links.is_empty() {
            return None;
        }
        self.links.get(&key(a, b))
    }

    /// Number of measured pairs.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether nothing is measured.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}
