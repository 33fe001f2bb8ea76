//! A provider daemon that crashes while it runs an ensemble allocation cleans up after itself
//! at its next start. On the namespace testbed (`nunet devnet up --netns`, three daemons in
//! three network namespaces), `examples/web-and-client.yaml` runs with `client` on node-2;
//! node-2's daemon is SIGKILLed, which leaves its container, network sandbox, veth, policy
//! rules and `NUNET` firewall chains behind; the orchestrator (node-1) marks the deployment
//! Failed. node-2 is then started again, as devnet starts it: it asks the orchestrator about
//! the allocation, learns it is no longer wanted, and within 30 s nothing of the ensemble is
//! left on node-2 and its free resources equal the onboarded ones. Needs root, iproute2,
//! iptables and dockerd with the local image `nunet-test/busybox:latest`. A second test (on
//! the loopback devnet) checks the other side: a provider that crashes and comes back while
//! its deployment still runs keeps its allocation.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::process::Command;
use std::time::{Duration, Instant};

use deploy_support::{Containers, containers_of};
use netns_support::{NsDevnet, in_ns};

/// What of ours is on a node: ensemble interfaces, policy rules, firewall chains.
struct Traces {
    links: Vec<String>,
    rules: usize,
    firewall: bool,
}

fn traces(ns: &str) -> Traces {
    let links = in_ns(ns, &["ip", "-o", "link"])
        .lines()
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .filter(|n| n.starts_with("nn") || n.starts_with("nv"))
        .collect();
    let rules = in_ns(ns, &["ip", "rule"]).lines().count();
    let fw = in_ns(ns, &["iptables-save"]) + &in_ns(ns, &["iptables-save", "-t", "nat"]);
    Traces {
        links,
        rules,
        firewall: fw.contains("NUNET"),
    }
}

fn sandboxes_of(ensemble: &str) -> String {
    let o = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=nunet.ensemble={ensemble}"))
        .args(["--filter", "label=nunet.sandbox=1"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

const WEB_AND_CLIENT: &str = include_str!("../../../examples/web-and-client.yaml");

#[test]
fn a_restarted_provider_removes_what_its_crash_left_behind() {
    let dn = NsDevnet::up(3);
    dn.onboard_all();
    // `back` (the client) is pinned off node-1, which orchestrates and must survive.
    let pinned = format!("  back:\n    peer: {}\n", dn.peer(2));
    let yaml = WEB_AND_CLIENT.replacen("  back:\n", &pinned, 1);
    assert_ne!(
        yaml, WEB_AND_CLIENT,
        "examples/web-and-client.yaml has no `back` node"
    );
    let file = dn.dir.join("web-and-client.yaml");
    std::fs::write(&file, yaml).unwrap();
    let f = file.to_str().unwrap();
    let v = dn.json(1, &["deploy", "-f", f, "-t", "90s", "--json"]);
    assert_eq!(v["status"], "Running", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let _containers = Containers(id.clone());

    let m = dn.deployment_manifest(&id);
    let back = dn.node_of(
        m["nodes"]["back"]["peer"]
            .as_str()
            .unwrap_or_else(|| panic!("{m}")),
    );
    assert_eq!(back, 2, "the pinned peer was not used: {m}");
    let ns = dn.netns[back - 1].clone();
    let onboarded = dn.resources(back, "onboarded");
    assert_ne!(
        dn.resources(back, "free"),
        onboarded,
        "client holds nothing"
    );

    // Crash: everything the daemon made stays behind.
    dn.crash(back);
    let t = traces(&ns);
    assert!(
        t.links.iter().any(|l| l.starts_with("nv")),
        "no veth: {:?}",
        t.links
    );
    assert!(t.rules > 3, "no policy rules of ours ({} lines)", t.rules);
    assert!(t.firewall, "no NUNET chains in {ns}");
    assert!(
        !sandboxes_of(&id).is_empty(),
        "no sandbox container left by the crash"
    );

    // The orchestrator notices the dead allocation, gives the deployment up and reverts its
    // providers; the revert of the dead one fails. (Restarting sooner would let that revert
    // reach the new daemon, and this test is about the daemon cleaning up by itself.)
    let t0 = Instant::now();
    loop {
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        let over = s["status"] == "Failed" || s["status"] == "ShuttingDown";
        let events = s["events"].to_string();
        if over && events.contains("revert of node back") {
            break;
        }
        assert!(
            !events.contains("reverted node back"),
            "the dead node answered a revert: {s}"
        );
        assert!(t0.elapsed() < Duration::from_secs(90), "still {s}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Restart: within 30 s nothing of the ensemble is left on that node.
    dn.restart(back);
    let t0 = Instant::now();
    let mut last;
    loop {
        let t = traces(&ns);
        let left = containers_of(&id);
        let free = dn.resources(back, "free");
        last = format!(
            "containers [{left}], links {:?}, {} rule lines, NUNET chains: {}, free {free} vs onboarded {onboarded}",
            t.links, t.rules, t.firewall
        );
        if left.is_empty() && t.links.is_empty() && t.rules == 3 && !t.firewall && free == onboarded
        {
            eprintln!("node-{back} clean {:.1?} after its restart", t0.elapsed());
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "after the restart: {last}\nlog:\n{}",
            dn.log(back)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = dn.log(back);
    assert!(
        log.contains("no longer wants"),
        "cleaned ({last}), but not by reconciliation:\n{log}"
    );
    // The record is gone: the node no longer lists the allocation.
    let list = dn.json(
        back,
        &["actor", "cmd", "--json", "/dms/node/allocations/list"],
    );
    assert!(!list.to_string().contains(&id), "{list}");
}

const SLEEPER: &str = r#"version: V1
allocations:
  sleeper:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "3600"]
nodes:
  only:
    allocations: [sleeper]
"#;

/// The other side: a provider that crashes and comes back while its deployment still runs
/// keeps the allocation (the orchestrator still wants it), and the deployment stays Running.
/// On the loopback devnet (no subnet): needs dockerd and the local busybox image.
#[test]
fn a_quickly_restarted_provider_keeps_what_is_still_wanted() {
    let dn = deploy_support::Devnet::up(0);
    dn.onboard(2);
    let file = dn.dir.join("sleeper.yaml");
    std::fs::write(&file, SLEEPER).unwrap();
    let f = file.to_str().unwrap();
    let v = dn.json(1, &["deploy", "-f", f, "-t", "60s", "--json"]);
    assert_eq!(v["status"], "Running", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let _containers = Containers(id.clone());
    let before = containers_of(&id);
    assert!(!before.is_empty(), "no container for {id}");

    deploy_support::kill(&dn.dir, 2, "-KILL");
    deploy_support::restart(&dn, 2);
    let log =
        || std::fs::read_to_string(dn.dir.join("node-2/nunet-restarted.log")).unwrap_or_default();
    let t0 = Instant::now();
    while !log().contains("restored allocation kept") {
        assert!(
            !log().contains("no longer wants"),
            "a wanted allocation was dropped:\n{}",
            log()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no verdict after the restart:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still supervised and healthy a few polls later, on the same container.
    std::thread::sleep(Duration::from_secs(6));
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");
    assert_eq!(containers_of(&id), before);
    let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(containers_of(&id).is_empty(), "left after shutdown");
    assert_eq!(dn.resources(2, "free"), dn.resources(2, "onboarded"));
}
