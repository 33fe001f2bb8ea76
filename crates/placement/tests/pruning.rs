//! Physical pruning with known city pairs, measurement feedback, and explanations.
#![allow(clippy::unwrap_used, missing_docs)]

use nunet_ensemble::resources::{Cpu, Disk, Gpu, Ram};
use nunet_ensemble::{Location, LocationConstraint, Resources};
use nunet_placement::{
    Bid, EdgeRequirement, LinkMeasurement, Measurements, NodeRequest, Options, PlacementError,
    Problem, edges_to_measure, solve,
};

const GIB: u64 = 1 << 30;

fn res(cores: f64, ram_gib: u64, vram_gib: Option<u64>) -> Resources {
    Resources {
        cpu: Cpu {
            cores,
            ..Cpu::default()
        },
        ram: Ram {
            size: ram_gib * GIB,
            ..Ram::default()
        },
        disk: Disk {
            size: 10 * GIB,
            ..Disk::default()
        },
        gpus: vram_gib
            .map(|v| Gpu {
                vendor: Some("NVIDIA".into()),
                model: None,
                vram: Some(v * GIB),
            })
            .into_iter()
            .collect(),
    }
}

fn at(city: &str, country: &str, continent: &str) -> Location {
    Location {
        continent: Some(continent.into()),
        country: Some(country.into()),
        city: Some(city.into()),
        asn: None,
        isp: None,
    }
}

fn node(name: &str, r: Resources) -> NodeRequest {
    NodeRequest {
        name: name.into(),
        resources: r,
        location: LocationConstraint::default(),
        peer: None,
    }
}

fn two_nodes(rtt: Option<f64>, bw: Option<f64>) -> Problem {
    Problem {
        nodes: vec![node("a", res(1.0, 1, None)), node("b", res(1.0, 1, None))],
        edges: vec![EdgeRequirement {
            a: 0,
            b: 1,
            max_rtt_ms: rtt,
            min_bw_bps: bw,
        }],
        exclude_peers: vec![],
        distinct_peers: true,
    }
}

fn bid(node: &str, peer: &str, loc: Location) -> Bid {
    let mut free = res(8.0, 32, Some(16));
    free.disk.size = 100 * GIB;
    Bid::new(node, peer, loc, free)
}

fn lisbon() -> Location {
    at("Lisbon", "PT", "EU")
}
fn tokyo() -> Location {
    at("Tokyo", "JP", "AS")
}

#[test]
fn rtt_of_20ms_between_lisbon_and_tokyo_is_infeasible() {
    let bids = vec![bid("a", "p-lis", lisbon()), bid("b", "p-tyo", tokyo())];
    let err = solve(
        &two_nodes(Some(20.0), None),
        &bids,
        &Measurements::default(),
        &Options::default(),
    )
    .unwrap_err();
    let PlacementError::Infeasible(ex) = err else {
        panic!("{err}")
    };
    let text = ex.to_string();
    assert!(text.contains("edge a ↔ b"), "{text}");
    assert!(text.contains("speed of light"), "{text}");
    assert!(text.contains("111"), "floor ≈ 111 ms: {text}");
}

#[test]
fn a_reachable_rtt_is_accepted_but_must_be_measured() {
    let bids = vec![bid("a", "p-lis", lisbon()), bid("b", "p-tyo", tokyo())];
    let placement = solve(
        &two_nodes(Some(150.0), None),
        &bids,
        &Measurements::default(),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(placement.to_measure.len(), 1);
    let m = &placement.to_measure[0];
    assert!(m.rtt && !m.bandwidth);
    assert_eq!(m.peers, ("p-lis".to_string(), "p-tyo".to_string()));
}

#[test]
fn lisbon_madrid_floor_is_about_5ms() {
    let bids = vec![
        bid("a", "p-lis", lisbon()),
        bid("b", "p-mad", at("Madrid", "ES", "EU")),
    ];
    let m = Measurements::default();
    assert!(solve(&two_nodes(Some(6.0), None), &bids, &m, &Options::default()).is_ok());
    assert!(solve(&two_nodes(Some(4.5), None), &bids, &m, &Options::default()).is_err());
}

#[test]
fn tcp_bound_rules_out_fast_links_over_lossy_long_paths() {
    let mut bids = vec![bid("a", "p-lis", lisbon()), bid("b", "p-tyo", tokyo())];
    let m = Measurements::default();
    // Unknown loss: no bound, plausible.
    assert!(solve(&two_nodes(None, Some(10e6)), &bids, &m, &Options::default()).is_ok());
    // 1% loss over ≥ 111 ms: at most ~1.3 Mbit/s per TCP flow.
    bids[1].link.loss = Some(0.01);
    let err = solve(&two_nodes(None, Some(10e6)), &bids, &m, &Options::default()).unwrap_err();
    assert!(err.to_string().contains("TCP throughput bound"), "{err}");
    assert!(solve(&two_nodes(None, Some(1e6)), &bids, &m, &Options::default()).is_ok());
    // London–Paris with the same loss: ~3.4 ms floor allows ~40 Mbit/s.
    let near = vec![
        bid("a", "p-lon", at("London", "GB", "EU")),
        Bid {
            link: bids[1].link,
            ..bid("b", "p-par", at("Paris", "FR", "EU"))
        },
    ];
    assert!(solve(&two_nodes(None, Some(10e6)), &near, &m, &Options::default()).is_ok());
    // An uplink slower than asked is ruled out too.
    let mut slow = near.clone();
    slow[0].link.uplink_bps = Some(5e6);
    assert!(solve(&two_nodes(None, Some(10e6)), &slow, &m, &Options::default()).is_err());
}

#[test]
fn measurements_replace_bounds_and_are_not_requested_twice() {
    let problem = two_nodes(Some(30.0), None);
    let bids = vec![
        bid("a", "p-lis", lisbon()),
        Bid {
            price: 1.0,
            ..bid("b", "p-mad", at("Madrid", "ES", "EU"))
        },
        Bid {
            price: 2.0,
            ..bid("b", "p-par", at("Paris", "FR", "EU"))
        },
    ];
    let mut meas = Measurements::default();
    let first = solve(&problem, &bids, &meas, &Options::default()).unwrap();
    assert_eq!(first.assignment[1].peer, "p-mad", "cheapest first");
    assert_eq!(first.to_measure.len(), 1);
    // Madrid turns out to be slow in practice: 45 ms.
    meas.insert(
        "p-mad",
        "p-lis",
        LinkMeasurement {
            rtt_ms: 45.0,
            bw_bps: None,
        },
    );
    let second = solve(&problem, &bids, &meas, &Options::default()).unwrap();
    assert_eq!(second.assignment[1].peer, "p-par");
    assert_eq!(second.to_measure[0].peers.1, "p-par");
    meas.insert(
        "p-lis",
        "p-par",
        LinkMeasurement {
            rtt_ms: 25.0,
            bw_bps: None,
        },
    );
    let third = solve(&problem, &bids, &meas, &Options::default()).unwrap();
    assert!(third.to_measure.is_empty());
    assert!(edges_to_measure(&problem, &bids, &third.bid_indices(), &meas).is_empty());
    assert_eq!(
        edges_to_measure(&problem, &bids, &[0, 1], &Measurements::default()).len(),
        1
    );
}

#[test]
fn explanation_counts_resource_and_location_rejections() {
    let mut gpu_node = node("gpu-1", res(1.0, 1, Some(24)));
    gpu_node.location.reject = vec![Location {
        continent: Some("AS".into()),
        country: Some("CN".into()),
        ..Location::default()
    }];
    let problem = Problem {
        nodes: vec![gpu_node],
        edges: vec![],
        exclude_peers: vec![],
        distinct_peers: true,
    };
    let mut bids: Vec<Bid> = (0..7)
        .map(|i| bid("gpu-1", &format!("p{i}"), lisbon()))
        .collect();
    for b in bids.iter_mut().take(3) {
        b.location = at("Beijing", "CN", "AS");
    }
    let err = solve(
        &problem,
        &bids,
        &Measurements::default(),
        &Options::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("node gpu-1: 0 of 7 bids fit"), "{text}");
    assert!(
        text.contains("7 fail vendor = NVIDIA, vram ≥ 24GiB"),
        "{text}"
    );
    assert!(
        text.contains("3 rejected by location reject CN/AS"),
        "{text}"
    );
}

#[test]
fn pinning_exclusion_and_distinct_peers() {
    let mut problem = two_nodes(None, None);
    problem.edges.clear();
    let bids = vec![
        bid("a", "p1", lisbon()),
        bid("b", "p1", lisbon()),
        bid("b", "p2", lisbon()),
    ];
    let m = Measurements::default();
    let placed = solve(&problem, &bids, &m, &Options::default()).unwrap();
    assert_eq!(placed.assignment[1].peer, "p2", "p1 already serves a");

    problem.exclude_peers = vec!["p2".into()];
    let err = solve(&problem, &bids, &m, &Options::default()).unwrap_err();
    assert!(err.to_string().contains("own peer"), "{err}");

    problem.distinct_peers = false;
    let shared = solve(&problem, &bids, &m, &Options::default()).unwrap();
    assert_eq!(shared.assignment[1].peer, "p1");

    problem.exclude_peers.clear();
    problem.nodes[0].peer = Some("p9".into());
    let err = solve(&problem, &bids, &m, &Options::default()).unwrap_err();
    assert!(
        err.to_string().contains("not from the pinned peer p9"),
        "{err}"
    );
}

#[test]
fn shared_peers_must_fit_both_nodes() {
    let problem = Problem {
        nodes: vec![node("a", res(6.0, 1, None)), node("b", res(6.0, 1, None))],
        edges: vec![],
        exclude_peers: vec![],
        distinct_peers: false,
    };
    // One 8-core peer cannot hold 6 + 6 cores.
    let bids = vec![bid("a", "p1", lisbon()), bid("b", "p1", lisbon())];
    assert!(
        solve(
            &problem,
            &bids,
            &Measurements::default(),
            &Options::default()
        )
        .is_err()
    );
}

#[test]
fn malformed_problems_are_errors_not_panics() {
    let mut p = two_nodes(None, None);
    p.edges[0].b = 7;
    assert!(matches!(
        solve(&p, &[], &Measurements::default(), &Options::default()),
        Err(PlacementError::InvalidProblem(_))
    ));
    let empty = Problem::default();
    assert!(solve(&empty, &[], &Measurements::default(), &Options::default()).is_err());
    let no_bids = solve(
        &two_nodes(None, None),
        &[],
        &Measurements::default(),
        &Options::default(),
    )
    .unwrap_err();
    assert!(no_bids.to_string().contains("node a: no bids"), "{no_bids}");
}
