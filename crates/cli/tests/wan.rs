//! WAN conditions on the namespace testbed (`nunet devnet up --netns --wan …`): every node's
//! link to the switch goes through the userspace link emulator (`nunet_linkem`) with delay,
//! jitter and 1 % loss, node 4's with a longer delay. The emulator is first checked against
//! `ping`; then deployments complete over those links, and edge constraints see the injected
//! round trips: a bound above the RTT between nodes 2 and 3 places there, a bound below the
//! RTT to node 4 fails with the measured value. Needs root, iproute2, iptables and dockerd
//! with the local image `nunet-test/busybox:latest` (`.ci/install-runtimes.sh`).
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::process::Command;

use netns_support::NsDevnet;
use serde_json::Value;

/// Mean RTT (ms) of `count` pings from node `from` to node `to`'s address, and how many
/// answered.
fn ping(dn: &NsDevnet, from: usize, to: usize, count: u32) -> (f64, u32) {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &dn.netns[from - 1],
            "ping",
            "-q",
            "-n",
            "-i",
            "0.2",
            "-W",
            "2",
        ])
        .args(["-c", &count.to_string(), &dn.lan(to)])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    // "20 packets transmitted, 19 received, …" and "rtt min/avg/max/mdev = a/b/c/d ms"
    let received: u32 = out
        .split(" received")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let avg = out
        .split(" = ")
        .nth(1)
        .and_then(|s| s.split('/').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no RTT in ping output: {out}"));
    (avg, received)
}

/// Two busybox tasks `x` on node `a` and `y` on node `b` (unpinned when `None`) joined by
/// an edge bound of `rtt` ms.
fn edge_yaml(dn: &NsDevnet, a: usize, b: Option<usize>, rtt: u32) -> String {
    let pin = |n: Option<usize>| {
        n.map(|n| format!(", peer: {}", dn.peer(n)))
            .unwrap_or_default()
    };
    format!(
        r#"version: V1
allocations:
  x:
    executor: docker
    type: task
    resources: {{cpu: {{cores: 0.25}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution: {{type: docker, image: nunet-test/busybox:latest, cmd: [echo, wan-x]}}
  y:
    executor: docker
    type: task
    resources: {{cpu: {{cores: 0.25}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution: {{type: docker, image: nunet-test/busybox:latest, cmd: [echo, wan-y]}}
nodes:
  a: {{allocations: [x]{pa}}}
  b: {{allocations: [y]{pb}}}
edge_constraints:
  - {{edges: [a, b], rtt: {rtt}}}
"#,
        pa = pin(Some(a)),
        pb = pin(b),
    )
}

fn deploy(dn: &NsDevnet, yaml: &str, name: &str, timeout: &str) -> (i32, Value) {
    let p = dn.dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    let (code, out) = dn.run(
        1,
        &["deploy", "-f", p.to_str().unwrap(), "-t", timeout, "--json"],
    );
    let v = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    (code, v)
}

#[test]
fn deployments_complete_over_delayed_lossy_links_and_edges_see_the_injected_rtt() {
    // Each direction of each node's link: 5 ms ±1 ms (node 4: 40 ms ±2 ms), 1 % loss.
    // A round trip crosses four link directions: nodes 2–3 ≈ 20 ms, any node–4 ≈ 90 ms.
    let dn = NsDevnet::up_with(
        4,
        &[
            "--wan",
            "delay=5ms,jitter=1ms,loss=1%",
            "--wan",
            "4:delay=40ms,jitter=2ms,loss=1%",
        ],
    );
    // The emulator against ping, before trusting it.
    let (near, got) = ping(&dn, 2, 3, 20);
    eprintln!("ping 2→3: {near:.1} ms avg, {got}/20 answered");
    assert!(
        (18.0..35.0).contains(&near),
        "2→3 RTT {near} ms, expected ≈ 20"
    );
    assert!(got >= 15, "{got}/20 pings answered at 1 % loss");
    let (far, got) = ping(&dn, 2, 4, 20);
    eprintln!("ping 2→4: {far:.1} ms avg, {got}/20 answered");
    assert!(
        (85.0..120.0).contains(&far),
        "2→4 RTT {far} ms, expected ≈ 90"
    );

    // Node 1 orchestrates; 2, 3 and 4 provide.
    for n in 2..=4 {
        dn.onboard(n);
    }

    // A bound between the two RTTs, `x` on node 2: `y` can only go to node 3.
    let (code, v) = deploy(&dn, &edge_yaml(&dn, 2, None, 50), "near.yaml", "120s");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["status"], "Completed", "{v}");
    assert_eq!(
        v["manifest"]["nodes"]["b"]["peer"],
        dn.peer(3).as_str(),
        "{v}"
    );
    let id = v["id"].as_str().unwrap();
    let (code, logs) = dn.run(1, &["deployment", "logs", id]);
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("wan-x") && logs.contains("wan-y"), "{logs}");

    // The same bound with `y` pinned to node 4: Failed, with the measured RTT in the reason.
    let (code, v) = deploy(&dn, &edge_yaml(&dn, 2, Some(4), 50), "far.yaml", "30s");
    assert_ne!(code, 0, "{v}");
    assert_eq!(v["status"], "Failed", "{v}");
    let reason = v["reason"].as_str().unwrap_or("");
    assert!(reason.contains("edge a ↔ b"), "{reason}");
    let measured: f64 = reason
        .split("measured: edge a–b: rtt ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no measured rtt in {reason}"));
    eprintln!("measured rtt 2–4: {measured} ms (bound 50 ms)");
    assert!((80.0..150.0).contains(&measured), "{reason}");
}

/// A provider about 600 ms away (each direction of its link 300 ms; the orchestrator's 2 ms):
/// a deployment pinned to it completes, and the heartbeats of its `failure_recovery: restart`
/// node, whose deadlines grow with the measured path, never count it as lost. With the LAN
/// deadline alone (1 s for a call that takes two round trips, ≈ 1.2 s here) every heartbeat
/// would fail and the node would be declared lost within a second or two of Running.
#[test]
fn a_far_provider_is_slow_not_lost() {
    let dn = NsDevnet::up_with(
        3,
        &["--wan", "delay=2ms", "--wan", "3:delay=300ms,jitter=5ms"],
    );
    let (rtt, got) = ping(&dn, 1, 3, 10);
    eprintln!("ping 1→3: {rtt:.1} ms avg, {got}/10 answered");
    assert!(
        (590.0..700.0).contains(&rtt),
        "1→3 RTT {rtt} ms, expected ≈ 604"
    );
    dn.onboard(3);

    let yaml = format!(
        r#"version: V1
allocations:
  svc:
    executor: docker
    type: service
    resources: {{cpu: {{cores: 0.25}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution: {{type: docker, image: nunet-test/busybox:latest, cmd: [sleep, "3600"]}}
nodes:
  far:
    allocations: [svc]
    peer: {peer}
    failure_recovery: restart
"#,
        peer = dn.peer(3)
    );
    let (code, v) = deploy(&dn, &yaml, "far-service.yaml", "120s");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["status"], "Running", "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    // Twenty heartbeat periods and more: still Running, and no heartbeat went missing.
    std::thread::sleep(std::time::Duration::from_secs(12));
    let s = dn.json(
        1,
        &[
            "actor",
            "cmd",
            "--json",
            "/dms/node/deployment/status",
            "--id",
            &id,
        ],
    );
    assert_eq!(s["status"], "Running", "{s}");
    let events: Vec<&str> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        !events.iter().any(|m| m.contains("heartbeat")
            || m.contains("lost")
            || m.contains("unreachable")
            || m.contains("waiting for its provider")),
        "the far provider was counted as lost or unreachable: {events:#?}"
    );
    let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
    assert_eq!(code, 0, "{out}");
}
