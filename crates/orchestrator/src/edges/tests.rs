//! Tests of placement with measured edges, against a fake link table.
#![allow(clippy::unwrap_used)]
use std::sync::Mutex;

use nunet_ensemble::{Location, Resources};
use nunet_placement::{EdgeRequirement, NodeRequest};

use super::*;

fn problem(rtt: Option<f64>, bw: Option<f64>) -> Problem {
    let node = |n: &str| NodeRequest {
        name: n.into(),
        resources: Resources::default(),
        location: Default::default(),
        peer: None,
    };
    Problem {
        nodes: vec![node("a"), node("b")],
        edges: vec![EdgeRequirement {
            a: 0,
            b: 1,
            max_rtt_ms: rtt,
            min_bw_bps: bw,
        }],
        exclude_peers: Vec::new(),
        distinct_peers: true,
    }
}

/// `a` only on p1; `b` on p2 (cheapest), p3, p4.
fn bids() -> Vec<Bid> {
    let bid = |n: &str, p: &str, price: f64| {
        let mut b = Bid::new(n, p, Location::default(), Resources::default());
        b.price = price;
        b
    };
    vec![
        bid("a", "p1", 0.0),
        bid("b", "p2", 1.0),
        bid("b", "p3", 2.0),
        bid("b", "p4", 3.0),
    ]
}

/// A fake link table: (rtt ms, Mbit/s) per peer other than p1, or an error.
fn link(peer: &str) -> Result<(f64, f64), String> {
    match peer {
        "p2" => Ok((50.0, 10.0)),
        "p3" => Ok((0.4, 850.0)),
        "p4" => Ok((0.3, 900.0)),
        _ => Err("unreachable".into()),
    }
}

struct Fake {
    calls: Mutex<Vec<(String, String, Option<f64>)>>,
    table: fn(&str) -> Result<(f64, f64), String>,
}

impl Fake {
    fn new(table: fn(&str) -> Result<(f64, f64), String>) -> Self {
        Fake {
            calls: Mutex::new(Vec::new()),
            table,
        }
    }
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

async fn run(
    fake: &Fake,
    p: &Problem,
    cache: &mut EdgeCache,
) -> (Result<Placement, EdgeError>, Vec<String>) {
    let mut events = Vec::new();
    let r = solve_measured(
        p,
        &bids(),
        cache,
        |t: EdgeToMeasure| {
            let (_, bw) = bounds_of(p, &t);
            let other = if t.peers.0 == "p1" {
                &t.peers.1
            } else {
                &t.peers.0
            };
            fake.calls
                .lock()
                .unwrap()
                .push((t.peers.0.clone(), t.peers.1.clone(), bw));
            let r = (fake.table)(other).map(|(rtt, mbps)| {
                measurement(&EdgeReply {
                    rtt_ms: rtt,
                    bandwidth_mbps: bw.map(|_| mbps),
                })
            });
            async move { r }
        },
        |m| events.push(m.to_string()),
    )
    .await;
    (r, events)
}

fn peer_of_b(p: &Placement) -> &str {
    &p.assignment[1].peer
}

#[tokio::test]
async fn a_violating_pair_is_forbidden_and_the_next_candidate_measured() {
    let p = problem(Some(10.0), None);
    let fake = Fake::new(link);
    let mut cache = EdgeCache::default();
    let (r, events) = run(&fake, &p, &mut cache).await;
    let placement = r.unwrap();
    assert_eq!(peer_of_b(&placement), "p3");
    assert_eq!(fake.calls(), 2, "p1–p2 then p1–p3");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].starts_with("edge a–b: rtt 50 ms"), "{events:?}");
    assert!(events[1].starts_with("edge a–b: rtt 0.4 ms"), "{events:?}");
    // No bandwidth bound: none asked, none reported.
    assert!(fake.calls.lock().unwrap().iter().all(|c| c.2.is_none()));
    assert!(!events[1].contains("Mbit/s"), "{events:?}");

    // Cached for the deployment: solving again measures nothing.
    let (r, events) = run(&fake, &p, &mut cache).await;
    assert_eq!(peer_of_b(&r.unwrap()), "p3");
    assert_eq!(fake.calls(), 2);
    assert!(events.is_empty());
}

#[tokio::test]
async fn an_unmeasurable_link_counts_as_violated() {
    fn table(peer: &str) -> Result<(f64, f64), String> {
        match peer {
            "p2" => Err("peer unreachable".into()),
            other => link(other),
        }
    }
    let p = problem(Some(10.0), Some(100e6));
    let fake = Fake::new(table);
    let mut cache = EdgeCache::default();
    let (r, events) = run(&fake, &p, &mut cache).await;
    assert_eq!(peer_of_b(&r.unwrap()), "p3");
    assert!(
        events[0].contains("not measurable (peer unreachable)"),
        "{events:?}"
    );
    assert!(events[1].contains("rtt 0.4 ms, 850 Mbit/s"), "{events:?}");
    // Bandwidth asked in Mbit/s.
    assert_eq!(fake.calls.lock().unwrap()[1].2, Some(100.0));
}

#[tokio::test]
async fn a_bound_no_pair_meets_fails_naming_the_edge_and_the_measurements() {
    let p = problem(None, Some(1e15));
    let fake = Fake::new(link);
    let mut cache = EdgeCache::default();
    let (r, events) = run(&fake, &p, &mut cache).await;
    let e = r.unwrap_err();
    assert!(matches!(e, EdgeError::NoPlacement { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("edge a ↔ b"), "{text}");
    assert!(text.contains("3 by measured bandwidth"), "{text}");
    assert!(
        text.contains("850 Mbit/s") && text.contains("900 Mbit/s"),
        "{text}"
    );
    assert_eq!(fake.calls(), 3, "each candidate pair measured once");
    assert_eq!(events.len(), 3);
    // A second attempt fails at once from the cache.
    let (r, _) = run(&fake, &p, &mut cache).await;
    assert!(r.is_err());
    assert_eq!(fake.calls(), 3);
}

#[tokio::test]
async fn a_later_rtt_only_measurement_keeps_the_bandwidth() {
    let mut cache = EdgeCache::default();
    let m = |bw: Option<f64>| MeasuredEdge {
        nodes: ("a".into(), "b".into()),
        peers: ("p1".into(), "p2".into()),
        result: Ok(LinkMeasurement {
            rtt_ms: 1.0,
            bw_bps: bw,
        }),
    };
    cache.record(m(Some(5e8)));
    cache.record(m(None));
    assert_eq!(
        cache.measurements.get("p2", "p1").unwrap().bw_bps,
        Some(5e8)
    );
}

#[test]
fn bounds_ask_for_bandwidth_only_when_the_link_needs_it() {
    let p = problem(Some(20.0), Some(100e6));
    let mut t = EdgeToMeasure {
        nodes: ("b".into(), "a".into()),
        peers: ("p2".into(), "p1".into()),
        rtt: true,
        bandwidth: false,
    };
    assert_eq!(bounds_of(&p, &t), (Some(20.0), None));
    t.bandwidth = true;
    assert_eq!(bounds_of(&p, &t), (Some(20.0), Some(100.0)));
    let wire = serde_json::to_value(EdgeRequest {
        peer: "p1".into(),
        rtt_ms: Some(20.0),
        bandwidth_mbps: None,
    })
    .unwrap();
    assert_eq!(wire, serde_json::json!({"peer": "p1", "rtt_ms": 20.0}));
}
