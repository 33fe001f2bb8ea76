//! Property tests: on random small ensembles and bid sets, every placement the solver returns
//! passes an independent checker (written here from the rules, sharing no code with the
//! solver), and whenever brute force finds a valid assignment the solver finds one too, with
//! the same best price when it claims optimality.
#![allow(clippy::unwrap_used, missing_docs)]

use nunet_ensemble::resources::{Cpu, Disk, Ram};
use nunet_ensemble::{Location, LocationConstraint, Resources};
use nunet_placement::{
    Bid, EdgeRequirement, LinkHints, LinkMeasurement, Measurements, NodeRequest, Options,
    PlacementError, Problem, solve,
};
use proptest::prelude::*;

const GIB: u64 = 1 << 30;
/// (city, country, continent, lat, lon), a private copy so the checker does not share data.
const PLACES: &[(&str, &str, &str, f64, f64)] = &[
    ("Lisbon", "PT", "EU", 38.72, -9.14),
    ("Madrid", "ES", "EU", 40.42, -3.70),
    ("London", "GB", "EU", 51.51, -0.13),
    ("Tokyo", "JP", "AS", 35.68, 139.69),
    ("New York", "US", "NA", 40.71, -74.01),
    ("Sydney", "AU", "OC", -33.87, 151.21),
];

// ---------- independent checker ----------

fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let r = 6371.0_f64;
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let dp = p2 - p1;
    let dl = (b.1 - a.1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * r * h.sqrt().asin()
}

fn coords(bid: &Bid) -> Option<(f64, f64)> {
    let city = bid.location.city.as_deref()?;
    PLACES.iter().find(|p| p.0 == city).map(|p| (p.3, p.4))
}

fn field_ok(want: &Option<String>, have: &Option<String>) -> bool {
    want.as_ref()
        .is_none_or(|w| have.as_ref().is_some_and(|h| h.eq_ignore_ascii_case(w)))
}

fn loc_matches(pattern: &Location, l: &Location) -> bool {
    field_ok(&pattern.continent, &l.continent)
        && field_ok(&pattern.country, &l.country)
        && field_ok(&pattern.city, &l.city)
}

fn fits(need: (f64, u64, u64), free: &Resources) -> bool {
    free.cpu.cores + 1e-9 >= need.0 && free.ram.size >= need.1 && free.disk.size >= need.2
}

fn need_of(r: &Resources) -> (f64, u64, u64) {
    (r.cpu.cores, r.ram.size, r.disk.size)
}

fn link_ok(edge: &EdgeRequirement, x: &Bid, y: &Bid, meas: &Measurements) -> bool {
    if x.peer == y.peer {
        return true;
    }
    let mss_bits = 1460.0 * 8.0;
    let tcp = |rtt_ms: f64, loss: f64| {
        if rtt_ms <= 0.0 || loss <= 0.0 {
            f64::INFINITY
        } else {
            mss_bits / (rtt_ms / 1000.0) * 1.5f64.sqrt() / loss.sqrt()
        }
    };
    let loss = x.link.loss.unwrap_or(0.0).max(y.link.loss.unwrap_or(0.0));
    if let Some(m) = meas.get(&x.peer, &y.peer) {
        if edge.max_rtt_ms.is_some_and(|r| m.rtt_ms > r) {
            return false;
        }
        return match (edge.min_bw_bps, m.bw_bps) {
            (None, _) => true,
            (Some(want), Some(have)) => have >= want,
            (Some(want), None) => {
                let up = [x.link.uplink_bps, y.link.uplink_bps]
                    .into_iter()
                    .flatten()
                    .fold(f64::INFINITY, f64::min);
                up >= want && tcp(m.rtt_ms, loss) >= want
            }
        };
    }
    let floor = match (coords(x), coords(y)) {
        (Some(a), Some(b)) => haversine_km(a, b) / 100.0,
        _ => 0.0,
    };
    if edge.max_rtt_ms.is_some_and(|r| floor > r) {
        return false;
    }
    if let Some(want) = edge.min_bw_bps {
        let up = [x.link.uplink_bps, y.link.uplink_bps]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min);
        if up < want || tcp(floor, loss) < want {
            return false;
        }
    }
    true
}

/// Checks an assignment (bid index per node) against every rule.
fn check(p: &Problem, bids: &[Bid], meas: &Measurements, pick: &[usize]) -> Result<(), String> {
    if pick.len() != p.nodes.len() {
        return Err("wrong length".into());
    }
    for (n, &b) in pick.iter().enumerate() {
        let (node, bid) = (&p.nodes[n], &bids[b]);
        if bid.node != node.name {
            return Err(format!("bid {b} is for {}, not {}", bid.node, node.name));
        }
        if p.exclude_peers.contains(&bid.peer) {
            return Err(format!("{} excluded", bid.peer));
        }
        if node.peer.as_ref().is_some_and(|pin| *pin != bid.peer) {
            return Err("pin violated".into());
        }
        if !node.location.accept.is_empty()
            && !node
                .location
                .accept
                .iter()
                .any(|l| loc_matches(l, &bid.location))
        {
            return Err("accept violated".into());
        }
        if node
            .location
            .reject
            .iter()
            .any(|l| loc_matches(l, &bid.location))
        {
            return Err("reject violated".into());
        }
        // Resources: everything placed on this peer must fit its offer.
        let mut total = (0.0, 0, 0);
        for (m, &c) in pick.iter().enumerate() {
            if bids[c].peer == bid.peer {
                let r = need_of(&p.nodes[m].resources);
                total = (total.0 + r.0, total.1 + r.1, total.2 + r.2);
            }
        }
        if !fits(total, &bid.free) {
            return Err(format!("{} over capacity", bid.peer));
        }
        if p.distinct_peers
            && pick
                .iter()
                .enumerate()
                .any(|(m, &c)| m != n && bids[c].peer == bid.peer)
        {
            return Err(format!("{} used twice", bid.peer));
        }
    }
    for e in &p.edges {
        if !link_ok(e, &bids[pick[e.a]], &bids[pick[e.b]], meas) {
            return Err(format!("edge {}-{} violated", e.a, e.b));
        }
    }
    Ok(())
}

/// All assignments, cheapest valid price first.
fn brute_force(p: &Problem, bids: &[Bid], meas: &Measurements) -> Option<f64> {
    let per_node: Vec<Vec<usize>> = p
        .nodes
        .iter()
        .map(|n| {
            (0..bids.len())
                .filter(|b| bids[*b].node == n.name)
                .collect()
        })
        .collect();
    if per_node.iter().any(Vec::is_empty) {
        return None;
    }
    let mut idx = vec![0usize; per_node.len()];
    let mut best: Option<f64> = None;
    loop {
        let pick: Vec<usize> = idx
            .iter()
            .enumerate()
            .map(|(n, i)| per_node[n][*i])
            .collect();
        if check(p, bids, meas, &pick).is_ok() {
            let price: f64 = pick.iter().map(|b| bids[*b].price).sum();
            best = Some(best.map_or(price, |b| b.min(price)));
        }
        let mut k = 0;
        loop {
            if k == idx.len() {
                return best;
            }
            idx[k] += 1;
            if idx[k] < per_node[k].len() {
                break;
            }
            idx[k] = 0;
            k += 1;
        }
    }
}

// ---------- generators ----------

fn res(cores: u8, ram: u8, disk: u8) -> Resources {
    Resources {
        cpu: Cpu {
            cores: f64::from(cores),
            ..Cpu::default()
        },
        ram: Ram {
            size: u64::from(ram) * GIB,
            ..Ram::default()
        },
        disk: Disk {
            size: u64::from(disk) * GIB,
            ..Disk::default()
        },
        gpus: vec![],
    }
}

fn place(i: usize) -> Location {
    let p = PLACES[i % PLACES.len()];
    Location {
        continent: Some(p.2.into()),
        country: Some(p.1.into()),
        city: Some(p.0.into()),
        asn: None,
        isp: None,
    }
}

#[derive(Debug, Clone)]
struct Instance {
    problem: Problem,
    bids: Vec<Bid>,
    meas: Measurements,
}

fn instance() -> impl Strategy<Value = Instance> {
    let peer = (
        0..PLACES.len(),
        2u8..10,
        2u8..12,
        4u8..40,
        prop_oneof![Just(None), Just(Some(0.001)), Just(Some(0.02))],
        prop_oneof![Just(None), Just(Some(5e7)), Just(Some(1e9))],
    );
    let node = (1u8..5, 1u8..8, 1u8..20, 0usize..12, 0usize..8);
    let edge = (
        0usize..4,
        0usize..4,
        prop_oneof![
            Just(None),
            Just(Some(4.0)),
            Just(Some(12.0)),
            Just(Some(40.0)),
            Just(Some(130.0)),
            Just(Some(400.0))
        ],
        prop_oneof![
            Just(None),
            Just(Some(1e6)),
            Just(Some(1e7)),
            Just(Some(1e8))
        ],
    );
    (
        prop::collection::vec(peer, 1..6),
        prop::collection::vec(node, 1..5),
        prop::collection::vec(edge, 0..5),
        prop::collection::vec((0usize..5, 0usize..4, 0u8..4), 0..14),
        prop::collection::vec(
            (0usize..6, 0usize..6, 1u8..200, prop::option::of(1u8..200)),
            0..4,
        ),
        any::<bool>(),
        prop::option::of(0usize..6),
    )
        .prop_map(
            |(peers, nodes, edges, bids, measured, distinct, excluded)| {
                let peer_name = |i: usize| format!("peer{}", i % peers.len());
                let nodes: Vec<NodeRequest> = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, (c, r, d, loc, pin))| {
                        let mut location = LocationConstraint::default();
                        match loc {
                            0 => {
                                location.accept = vec![Location {
                                    continent: Some("EU".into()),
                                    ..Location::default()
                                }]
                            }
                            1 => {
                                location.reject = vec![Location {
                                    continent: Some("AS".into()),
                                    ..Location::default()
                                }]
                            }
                            2 => location.reject = vec![place(0)],
                            _ => {}
                        }
                        NodeRequest {
                            name: format!("n{i}"),
                            resources: res(*c, *r, *d),
                            location,
                            peer: (*pin == 0).then(|| peer_name(i)),
                        }
                    })
                    .collect();
                let n = nodes.len();
                let edges = edges
                    .into_iter()
                    .filter(|(a, b, _, _)| a % n != b % n)
                    .map(|(a, b, rtt, bw)| EdgeRequirement {
                        a: a % n,
                        b: b % n,
                        max_rtt_ms: rtt,
                        min_bw_bps: bw,
                    })
                    .collect();
                let bids = bids
                    .into_iter()
                    .map(|(p, nd, price)| {
                        let pi = p % peers.len();
                        let (city, c, r, d, loss, up) = peers[pi];
                        Bid {
                            node: format!("n{}", nd % n),
                            peer: peer_name(pi),
                            location: place(city),
                            coordinates: None,
                            free: res(c, r, d),
                            price: f64::from(price),
                            link: LinkHints {
                                uplink_bps: up,
                                loss,
                            },
                        }
                    })
                    .collect();
                let mut meas = Measurements::default();
                for (a, b, rtt, bw) in measured {
                    meas.insert(
                        &peer_name(a),
                        &peer_name(b),
                        LinkMeasurement {
                            rtt_ms: f64::from(rtt),
                            bw_bps: bw.map(|x| f64::from(x) * 1e6),
                        },
                    );
                }
                let exclude_peers = excluded.map(peer_name).into_iter().collect();
                Instance {
                    problem: Problem {
                        nodes,
                        edges,
                        exclude_peers,
                        distinct_peers: distinct,
                    },
                    bids,
                    meas,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn solver_agrees_with_checker_and_brute_force(inst in instance()) {
        let opts = Options { rtt_weight: 0.0, ..Options::default() };
        let result = solve(&inst.problem, &inst.bids, &inst.meas, &opts);
        let brute = brute_force(&inst.problem, &inst.bids, &inst.meas);
        match result {
            Ok(placement) => {
                let pick = placement.bid_indices();
                prop_assert_eq!(check(&inst.problem, &inst.bids, &inst.meas, &pick), Ok(()));
                let best = brute.unwrap_or(f64::NAN);
                prop_assert!(brute.is_some(), "solver found what brute force says is impossible");
                if placement.optimal {
                    prop_assert!((placement.score - best).abs() < 1e-9, "score {} vs brute force {}", placement.score, best);
                }
            }
            Err(PlacementError::Infeasible(ex)) => {
                prop_assert!(brute.is_none(), "brute force found price {:?} but solver said: {}", brute, ex);
                prop_assert!(!ex.lines.is_empty());
            }
            Err(other) => prop_assert!(false, "unexpected {}", other),
        }
    }
}
