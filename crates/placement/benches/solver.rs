//! Solver benchmark: p50/p99 solve times for 2, 10 and 50 nodes with 10, 100 and 1,000 bids
//! per node and RTT constraints between all node pairs, against NuNet's method (uniform random
//! sampling of candidate assignments, capped at 1,000,000) on the same inputs. Both accept a
//! candidate when every link is plausible (speed-of-light floor within the RTT bound), so
//! "found" counts are comparable. Plain `std::time`, no bench framework; run with
//! `cargo bench -p nunet-placement --bench solver` (or `bench/solver.sh`).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nunet_ensemble::resources::{Cpu, Disk, Ram};
use nunet_ensemble::{Location, LocationConstraint, Resources};
use nunet_placement::geo::{CITIES, GeoPoint, rtt_floor_ms};
use nunet_placement::{Bid, EdgeRequirement, Measurements, NodeRequest, Options, Problem, solve};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GIB: u64 = 1 << 30;
const BASELINE_CAP: u64 = 1_000_000;

fn res(cores: f64, ram: u64, disk: u64) -> Resources {
    Resources {
        cpu: Cpu {
            cores,
            ..Cpu::default()
        },
        ram: Ram {
            size: ram * GIB,
            ..Ram::default()
        },
        disk: Disk {
            size: disk * GIB,
            ..Disk::default()
        },
        gpus: vec![],
    }
}

struct Instance {
    problem: Problem,
    bids: Vec<Bid>,
}

fn instance(rng: &mut StdRng, nodes: usize, per_node: usize) -> Instance {
    let reject_asia = LocationConstraint {
        accept: vec![],
        reject: vec![Location {
            continent: Some("AS".into()),
            ..Location::default()
        }],
    };
    let problem_nodes: Vec<NodeRequest> = (0..nodes)
        .map(|i| NodeRequest {
            name: format!("n{i}"),
            resources: res(
                f64::from(rng.gen_range(1..=4u8)),
                rng.gen_range(1..=8),
                rng.gen_range(5..=50),
            ),
            location: if i % 3 == 0 {
                reject_asia.clone()
            } else {
                LocationConstraint::default()
            },
            peer: None,
        })
        .collect();
    // One RTT bound per instance, from tight (one metro area) to loose (one continent).
    let rtt = [15.0, 30.0, 60.0, 120.0][rng.gen_range(0..4)];
    let mut edges = Vec::new();
    for a in 0..nodes {
        for b in a + 1..nodes {
            edges.push(EdgeRequirement {
                a,
                b,
                max_rtt_ms: Some(rtt),
                min_bw_bps: None,
            });
        }
    }
    let mut bids = Vec::with_capacity(nodes * per_node);
    let mut peer = 0usize;
    for n in &problem_nodes {
        for _ in 0..per_node {
            let city = &CITIES[rng.gen_range(0..CITIES.len())];
            let point = GeoPoint {
                lat: city.point.lat + rng.gen_range(-1.0..1.0),
                lon: city.point.lon + rng.gen_range(-1.0..1.0),
            };
            let location = Location {
                continent: Some(city.continent.into()),
                country: Some(city.country.into()),
                city: Some(city.name.into()),
                ..Location::default()
            };
            // About one bid in five is too small for the node.
            let scale = if rng.gen_bool(0.2) { 0.5 } else { 2.0 };
            let free = res(n.resources.cpu.cores * scale, 64, 500);
            let mut bid = Bid::new(&n.name, format!("peer{peer}"), location, free);
            bid.coordinates = Some(point);
            bid.price = f64::from(rng.gen_range(1..100u8));
            bids.push(bid);
            peer += 1;
        }
    }
    Instance {
        problem: Problem {
            nodes: problem_nodes,
            edges,
            exclude_peers: vec![],
            distinct_peers: true,
        },
        bids,
    }
}

/// NuNet's method: keep the bids that fit each node, then draw random assignments until one
/// satisfies every edge (checked with the same speed-of-light floor), at most `BASELINE_CAP`.
fn naive_random(inst: &Instance, rng: &mut StdRng) -> bool {
    let p = &inst.problem;
    let per_node: Vec<Vec<usize>> = p
        .nodes
        .iter()
        .map(|n| {
            (0..inst.bids.len())
                .filter(|b| {
                    let bid = &inst.bids[*b];
                    bid.node == n.name
                        && n.location.refusal(&bid.location).is_none()
                        && n.resources.satisfied_by(&bid.free).is_ok()
                })
                .collect()
        })
        .collect();
    if per_node.iter().any(Vec::is_empty) {
        return false;
    }
    let pos: Vec<GeoPoint> = inst.bids.iter().map(|b| b.position().unwrap()).collect();
    let mut pick = vec![0usize; p.nodes.len()];
    for _ in 0..BASELINE_CAP {
        for (n, c) in per_node.iter().enumerate() {
            pick[n] = c[rng.gen_range(0..c.len())];
        }
        let distinct = (0..pick.len()).all(|i| {
            (i + 1..pick.len()).all(|j| inst.bids[pick[i]].peer != inst.bids[pick[j]].peer)
        });
        if distinct
            && p.edges.iter().all(|e| {
                e.max_rtt_ms
                    .is_none_or(|r| rtt_floor_ms(pos[pick[e.a]], pos[pick[e.b]]) <= r)
            })
        {
            return true;
        }
    }
    false
}

fn percentile(times: &mut [Duration], q: f64) -> f64 {
    times.sort();
    let i = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
    times[i].as_secs_f64() * 1e6
}

fn main() {
    let mut rng = StdRng::seed_from_u64(7);
    let opts = Options::default();
    let meas = Measurements::default();
    for nodes in [2usize, 10, 50] {
        for per_node in [10usize, 100, 1000] {
            let runs = if nodes * per_node >= 50_000 { 8 } else { 20 };
            let baseline_runs = if nodes >= 50 { 4 } else { runs };
            let instances: Vec<Instance> = (0..runs)
                .map(|_| instance(&mut rng, nodes, per_node))
                .collect();
            let mut solver_times = Vec::new();
            let mut found = 0;
            for inst in &instances {
                let t = Instant::now();
                let r = solve(&inst.problem, &inst.bids, &meas, &opts);
                solver_times.push(t.elapsed());
                found += usize::from(r.is_ok());
            }
            let mut base_times = Vec::new();
            let mut base_found = 0;
            let mut solver_found_same = 0;
            for (i, inst) in instances.iter().take(baseline_runs).enumerate() {
                let t = Instant::now();
                base_found += usize::from(naive_random(inst, &mut rng));
                base_times.push(t.elapsed());
                solver_found_same +=
                    usize::from(i < runs && solve(&inst.problem, &inst.bids, &meas, &opts).is_ok());
            }
            let p50 = percentile(&mut solver_times, 0.5);
            let p99 = percentile(&mut solver_times, 0.99);
            let b99 = percentile(&mut base_times, 0.99);
            println!(
                "solve/{nodes}n/{per_node}b p50: {p50:.0} us p99: {p99:.0} us (baseline naive-random p99: {b99:.0} us, ratio: {:.1}, found: {found}/{runs} vs {base_found}/{baseline_runs}; solver on the baseline's {baseline_runs}: {solver_found_same})",
                b99 / p99.max(1.0)
            );
        }
    }
}
