//! Edge constraints on a real 3-node devnet (real daemons, real dockerd,
//! `nunet-test/busybox:latest`): the orchestrator has the two candidate providers measure
//! the link between them (`/dms/deployment/constraint/edge`: pings + the
//! `/nunet/probe/1.0.0` throughput probe), records the measurement as a deployment event and
//! places accordingly; a bandwidth no link can carry fails with the edge and the measured
//! values in the reason.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::path::{Path, PathBuf};

use deploy_support::*;
use serde_json::Value;

/// Two one-line busybox tasks on nodes `a` and `b`, joined by `edge`, each pinned to a
/// peer when `pins` says so.
fn two_nodes(dir: &Path, name: &str, edge: &str, pins: Option<[&str; 2]>) -> PathBuf {
    let pin = |i: usize| {
        pins.map(|p| format!(", peer: {}", p[i]))
            .unwrap_or_default()
    };
    let yaml = format!(
        r#"version: V1
allocations:
  x:
    executor: docker
    type: task
    resources: {{cpu: {{cores: 0.25}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution: {{type: docker, image: nunet-test/busybox:latest, cmd: [echo, edge-from-a]}}
  y:
    executor: docker
    type: task
    resources: {{cpu: {{cores: 0.25}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution: {{type: docker, image: nunet-test/busybox:latest, cmd: [echo, edge-from-b]}}
nodes:
  a: {{allocations: [x]{pa}}}
  b: {{allocations: [y]{pb}}}
edge_constraints:
  - {edge}
"#,
        pa = pin(0),
        pb = pin(1),
    );
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

/// The deployment's event messages.
fn events(dn: &Devnet, id: &str) -> Vec<String> {
    let s = dn.json(1, &["deployment", "status", id, "--json"]);
    s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

/// A number that follows `key` in `text` (`"rtt 0.41 ms"` → 0.41).
fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[test]
fn edges_are_measured_between_the_candidates_and_enforced() {
    let dn = Devnet::up(0);
    // Node-1 orchestrates; nodes 2 and 3 are the only providers, one per ensemble node.
    dn.onboard(2);
    dn.onboard(3);

    // (a) A loose bound: placed, and the measured link is an event.
    let ok = two_nodes(
        &dn.dir,
        "edge-ok.yaml",
        "{edges: [a, b], rtt: 1000, bw: 1Mbps}",
        None,
    );
    let v = dn.json(
        1,
        &["deploy", "-f", ok.to_str().unwrap(), "-t", "60s", "--json"],
    );
    assert_eq!(v["status"], "Completed", "{v}");
    let id = v["id"].as_str().unwrap();
    let m = &v["manifest"]["nodes"];
    assert_ne!(m["a"]["peer"], m["b"]["peer"], "{v}");
    let peers = [peer_of(&dn, 2), peer_of(&dn, 3)];
    assert!(peers.contains(&m["a"]["peer"]) && peers.contains(&m["b"]["peer"]));
    let ev = events(&dn, id);
    let edge = ev
        .iter()
        .find(|e| e.starts_with("edge a–b: rtt "))
        .unwrap_or_else(|| panic!("no measured edge in {ev:#?}"));
    let rtt = number_after(edge, "rtt ").unwrap();
    let mbps = number_after(edge, "ms, ").unwrap();
    assert!(rtt > 0.0 && rtt < 1000.0, "{edge}");
    assert!(mbps >= 1.0, "{edge}");
    eprintln!("measured: {edge}");
    let (code, logs) = dn.run(1, &["deployment", "logs", id]);
    assert_eq!(code, 0, "{logs}");
    assert!(
        logs.contains("edge-from-a") && logs.contains("edge-from-b"),
        "{logs}"
    );
    assert_eq!(dn.resources(2, "free"), dn.resources(2, "onboarded"));
    assert_eq!(dn.resources(3, "free"), dn.resources(3, "onboarded"));

    // (b) A bandwidth no link carries: Failed, the reason names the edge and what was
    // measured; nothing was committed. Pinned, so that every round fails on the edge (not
    // on both providers happening to bid for the same node).
    let (p2, p3) = (peer_of(&dn, 2), peer_of(&dn, 3));
    let bad = two_nodes(
        &dn.dir,
        "edge-bad.yaml",
        "{edges: [a, b], bw: 1000000Gbps}",
        Some([p2.as_str().unwrap(), p3.as_str().unwrap()]),
    );
    let (code, out) = dn.run(
        1,
        &["deploy", "-f", bad.to_str().unwrap(), "-t", "16s", "--json"],
    );
    assert_ne!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"], "Failed", "{v}");
    let id = v["id"].as_str().unwrap();
    let ev = events(&dn, id);
    let reason = v["reason"].as_str().unwrap_or("");
    assert!(reason.contains("edge a ↔ b"), "{reason}\n{ev:#?}");
    assert!(reason.contains("measured bandwidth"), "{reason}\n{ev:#?}");
    assert!(
        reason.contains("measured: edge a–b: rtt") && reason.contains("Mbit/s"),
        "{reason}\n{ev:#?}"
    );
    assert!(
        !ev.iter().any(|e| e.starts_with("committed")),
        "committed despite the edge: {ev:#?}"
    );
    // Measured once per pair for the deployment, however many rounds ran.
    let measured = ev.iter().filter(|e| e.starts_with("edge a–b: ")).count();
    assert_eq!(measured, 1, "{ev:#?}");
    assert!(containers_of(id).is_empty());
}
