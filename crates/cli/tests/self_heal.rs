//! Self-healing with real daemons and real dockerd (issue 16): a supervised allocation whose
//! container is killed, or whose health check turns failing, is restarted in place by its
//! orchestrator: a new container at the same subnet address and `.internal` name, while the
//! rest of the ensemble keeps running untouched; one that keeps failing is given up after the
//! restart limit and everything it held is released.
//!
//! The first test runs on the namespace testbed (`nunet devnet up --netns`: root, iproute2,
//! iptables); the second on the loopback devnet. Both need dockerd and the local image
//! `nunet-test/busybox:latest`.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::process::Command;
use std::time::{Duration, Instant};

use deploy_support::{Containers, containers_of};
use netns_support::{NsDevnet, container, exec, http_get, running, wait_for};
use serde_json::Value;

/// `nunet deploy --json` of `yaml` (written to file `name`) from node-1 of a loopback devnet.
fn deploy_json(dn: &deploy_support::Devnet, name: &str, yaml: &str, timeout: &str) -> Value {
    let file = dn.dir.join(name);
    std::fs::write(&file, yaml).unwrap();
    let f = file.to_str().unwrap();
    dn.json(1, &["deploy", "-f", f, "-t", timeout, "--json"])
}

/// [`deploy_json`] of a deployment that must run: its id and the guard of its containers.
fn deploy_running(dn: &deploy_support::Devnet, name: &str, yaml: &str) -> (String, Containers) {
    let v = deploy_json(dn, name, yaml, "60s");
    assert_eq!(v["status"], "Running", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    (id.clone(), Containers(id))
}

/// Waits until `resources` (a node's `/dms/node/resources/<which>`) says free = onboarded.
fn released(node: usize, resources: impl Fn(usize, &str) -> Value) {
    wait_for("resources released", Duration::from_secs(20), |seen| {
        let (free, onboarded) = (resources(node, "free"), resources(node, "onboarded"));
        *seen = format!("node-{node}: free {free} onboarded {onboarded}");
        (free == onboarded).then_some(())
    });
}

const WEB_AND_CLIENT: &str = r#"version: V1
allocations:
  web:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sh, -c, "mkdir -p /www && echo hello-subnet > /www/index.html && exec httpd -f -p 8080 -h /www"]
    failure_recovery: one_for_one
    healthcheck:
      type: http
      endpoint: "http://web.internal:8080/index.html"
      response: {value: hello-subnet}
      interval: 500ms
      timeout: 400ms
      failure_threshold: 2
  client:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "3600"]
nodes:
  front:
    allocations: [web]
    peer: PEER2
  back:
    allocations: [client]
"#;

fn web_of(dn: &NsDevnet, id: &str) -> Value {
    dn.deployment_manifest(id)["allocations"]["front.web"].clone()
}

#[test]
fn killed_or_unhealthy_allocations_restart_in_place_at_the_same_address() {
    let dn = NsDevnet::up(3);
    dn.onboard_all();
    let id = dn.deploy(&WEB_AND_CLIENT.replace("PEER2", &dn.peer(2)), "heal.yaml");
    let _containers = Containers(id.clone());
    let client = container(&id, "client");
    let web = container(&id, "web");
    let before = web_of(&dn, &id);
    let ip = before["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("{before}"))
        .to_string();
    assert_eq!(before["restarts"], 0, "{before}");
    // The check runs and passes: a few checks, healthy.
    wait_for("first health checks", Duration::from_secs(20), |seen| {
        let w = web_of(&dn, &id);
        *seen = w.to_string();
        (w["health"]["healthy"] == true && w["health"]["message"] == "ok").then_some(())
    });

    // 1. The container is killed: restarted in place.
    let killed = Command::new("docker")
        .args(["kill", &web])
        .output()
        .unwrap();
    assert!(killed.status.success());
    let web2 = wait_for(
        "restart after docker kill",
        Duration::from_secs(30),
        |seen| {
            let w = web_of(&dn, &id);
            *seen = format!("{w} container {:?}", running(&id, "web"));
            let c = running(&id, "web")?;
            (c != web && w["restarts"] == 1 && w["status"] == "running").then_some(c)
        },
    );
    let after = web_of(&dn, &id);
    assert_eq!(after["ip"].as_str(), Some(ip.as_str()), "{after}");
    assert_eq!(
        container(&id, "client"),
        client,
        "the client was restarted too"
    );
    wait_for(
        "web.internal answers again",
        Duration::from_secs(20),
        |seen| {
            let (ok, out) = http_get(&client, "web.internal");
            *seen = out.clone();
            (ok && out.contains("hello-subnet")).then_some(())
        },
    );

    // 2. The health check turns failing: unhealthy, then restarted (the new container writes
    // the page again).
    let (ok, out) = exec(&web2, &["sh", "-c", "echo broken > /www/index.html"]);
    assert!(ok, "{out}");
    let web3 = wait_for(
        "restart after failing checks",
        Duration::from_secs(30),
        |seen| {
            let w = web_of(&dn, &id);
            *seen = format!("{w} container {:?}", running(&id, "web"));
            let c = running(&id, "web")?;
            (c != web2 && w["restarts"] == 2).then_some(c)
        },
    );
    wait_for("healthy again", Duration::from_secs(20), |seen| {
        let w = web_of(&dn, &id);
        *seen = w.to_string();
        (w["health"]["healthy"] == true && w["health"]["message"] == "ok").then_some(())
    });
    assert_eq!(web_of(&dn, &id)["ip"].as_str(), Some(ip.as_str()));
    assert_eq!(container(&id, "client"), client);
    let (ok, out) = http_get(&client, "web.internal");
    assert!(ok && out.contains("hello-subnet"), "{out}");
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");
    let events = s["events"].to_string();
    assert!(events.contains("unhealthy"), "{events}");
    assert!(events.contains("restarted front.web in place"), "{events}");
    assert_ne!(web3, web);
    // The human manifest says it too.
    let (code, out) = dn.run(1, &["deployment", "manifest", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("healthy: ok, 2 restart(s)"), "{out}");

    // Shut down: every resource back, nothing of the subnet left.
    dn.shutdown_clean(&id);
}

const CRASH_LOOP: &str = r#"version: V1
allocations:
  flaky:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sh, -c, "sleep 1; exit 3"]
    failure_recovery: one_for_one
  steady:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "3600"]
nodes:
  only:
    allocations: [flaky, steady]
"#;

/// A service that keeps crashing is restarted with back-off until the restart limit, then the
/// deployment fails (escalation_strategy teardown) and everything is released.
#[test]
fn a_crash_loop_is_restarted_with_back_off_then_given_up() {
    let dn = deploy_support::Devnet::up(0);
    dn.onboard(2);
    let v = deploy_json(&dn, "crash-loop.yaml", CRASH_LOOP, "90s");
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let _containers = Containers(id.clone());
    let t0 = Instant::now();
    let s = wait_for("given up", Duration::from_secs(90), |seen| {
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        *seen = s.to_string();
        (s["status"] == "Failed").then_some(s)
    });
    let took = t0.elapsed();
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("restarted 5 times within 60s"), "{s}");
    assert!(reason.contains("escalation_strategy teardown"), "{s}");
    let events = s["events"].to_string();
    for n in 1..=5 {
        assert!(
            events.contains(&format!("restart {n} of at most 5")),
            "{events}"
        );
    }
    // Back-off: 0 + 1 + 2 + 4 + 8 s of pauses, plus 6 one-second runs.
    assert!(took >= Duration::from_secs(15), "gave up after {took:?}");
    released(2, |n, w| dn.resources(n, w));
    wait_for("containers removed", Duration::from_secs(20), |seen| {
        *seen = containers_of(&id);
        seen.is_empty().then_some(())
    });
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
      cmd: [sh, -c, "while true; do echo tick; sleep 1; done"]
nodes:
  only:
    allocations: [sleeper]
"#;

/// The orchestrator's delegations last 2 s here (a test knob; a day in production) and are
/// renewed while the deployment lives: after several lifetimes it is still supervised,
/// its logs are read, and it shuts down, releasing everything.
#[test]
fn a_deployment_outlives_several_grant_lifetimes() {
    let dn = deploy_support::Devnet::up_with_env(0, &[("DMS_TEST_ORCHESTRATOR_TTL_MS", "2000")]);
    dn.onboard(2);
    let (id, _containers) = deploy_running(&dn, "sleeper.yaml", SLEEPER);
    // Five lifetimes; the supervisor polls every 5 s and gives up after 3 refused polls.
    std::thread::sleep(Duration::from_secs(10));
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");
    let logs = dn.run(1, &["deployment", "logs", &id]).1;
    assert!(logs.contains("tick"), "{logs}");
    let down = dn.json(1, &["deployment", "shutdown", &id, "--json"]);
    assert_eq!(down["status"], "ShuttingDown", "{down}");
    let events = dn.json(1, &["deployment", "status", &id, "--json"])["events"].to_string();
    assert!(events.contains("stopped node only"), "{events}");
    released(2, |n, w| dn.resources(n, w));
}

/// NuNet's restoration scenario: the provider is hard-killed and its container is gone when
/// it comes back (as after a reboot). The supervised allocation keeps its resources through
/// the restart, the orchestrator restarts it in place, and the same allocation id runs again.
#[test]
fn a_provider_that_lost_its_container_in_a_crash_gets_it_restarted_in_place() {
    let dn = deploy_support::Devnet::up(0);
    dn.onboard(2);
    let yaml = SLEEPER.replace(
        "    execution:\n",
        "    failure_recovery: one_for_one\n    execution:\n",
    );
    let (id, _containers) = deploy_running(&dn, "supervised.yaml", &yaml);
    let manifest = |dn: &deploy_support::Devnet| {
        dn.json(1, &["deployment", "manifest", &id, "--json"])["manifest"]["allocations"]
            ["only.sleeper"]
            .clone()
    };
    let alloc_id = manifest(&dn)["id"].as_str().unwrap().to_string();
    let old = running(&id, "sleeper").unwrap();

    deploy_support::kill(&dn.dir, 2, "-KILL");
    let rm = Command::new("docker")
        .args(["rm", "-f", &old])
        .output()
        .unwrap();
    assert!(rm.status.success());
    deploy_support::restart(&dn, 2);
    let new = wait_for(
        "restarted after the crash",
        Duration::from_secs(60),
        |seen| {
            let m = manifest(&dn);
            *seen = format!("{m} container {:?}", running(&id, "sleeper"));
            let c = running(&id, "sleeper")?;
            (m["restarts"] == 1 && m["status"] == "running").then_some(c)
        },
    );
    assert_ne!(new, old);
    assert_eq!(manifest(&dn)["id"].as_str(), Some(alloc_id.as_str()));
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");
    dn.json(1, &["deployment", "shutdown", &id, "--json"]);
    released(2, |n, w| dn.resources(n, w));
}

const REDEPLOYED: &str = r#"version: V1
allocations:
  web:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sh, -c, "mkdir -p /www && echo hello-subnet > /www/index.html && exec httpd -f -p 8080 -h /www"]
  client:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "3600"]
nodes:
  front:
    allocations: [web]
    failure_recovery: redeploy
  back:
    allocations: [client]
"#;

/// Node `failure_recovery: redeploy`: the provider of `front` dies with its machine (daemon
/// SIGKILLed, its containers gone). The orchestrator places `front` on another provider,
/// gives `web` its old address and `.internal` name, and the client (untouched, same
/// container) reaches it again; the dead provider, started again, drops what it held.
#[test]
fn a_lost_node_is_redeployed_on_another_provider_at_the_same_address() {
    let dn = NsDevnet::up(4);
    dn.onboard_all();
    let id = dn.deploy(REDEPLOYED, "redeploy.yaml");
    let _containers = Containers(id.clone());
    let m = dn.deployment_manifest(&id);
    let old_peer = m["nodes"]["front"]["peer"].as_str().unwrap().to_string();
    let old_did = m["nodes"]["front"]["did"].as_str().unwrap().to_string();
    let ip = m["allocations"]["front.web"]["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("{m}"))
        .to_string();
    let lost = dn.node_of(&old_peer);
    assert_ne!(lost, 1, "the orchestrator does not bid on its own request");
    let client = container(&id, "client");
    let onboarded = dn.resources(lost, "onboarded");

    // The machine dies: its daemon and its containers.
    dn.crash(lost);
    let o = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=nunet.ensemble={id}"))
        .args(["--filter"])
        .arg(format!("label=nunet.node={old_did}"))
        .output()
        .unwrap();
    let ids = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!ids.trim().is_empty(), "no container of the lost node");
    Command::new("docker")
        .args(["rm", "-f"])
        .args(ids.split_whitespace())
        .output()
        .unwrap();

    let t0 = Instant::now();
    let m = wait_for("front redeployed", Duration::from_secs(90), |seen| {
        let m = dn.deployment_manifest(&id);
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        *seen = format!("{s}");
        assert_ne!(s["status"], "Failed", "{s}");
        let moved = m["nodes"]["front"]["peer"].as_str() != Some(old_peer.as_str());
        (moved && m["allocations"]["front.web"]["status"] == "running" && s["status"] == "Running")
            .then_some(m)
    });
    eprintln!("lost node to redeployed: {:.1?}", t0.elapsed());
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    for e in s["events"].as_array().unwrap() {
        let msg = e["message"].as_str().unwrap_or_default();
        if msg.contains("front") || msg.contains("round") {
            eprintln!("{} {msg}", e["at_ms"]);
        }
    }
    assert_eq!(
        m["allocations"]["front.web"]["ip"].as_str(),
        Some(ip.as_str()),
        "{m}"
    );
    assert_eq!(container(&id, "client"), client, "the client was restarted");
    wait_for(
        "web.internal answers from the new provider",
        Duration::from_secs(30),
        |seen| {
            let (ok, out) = http_get(&client, "web.internal");
            *seen = out.clone();
            (ok && out.contains("hello-subnet")).then_some(())
        },
    );
    let events = dn.json(1, &["deployment", "status", &id, "--json"])["events"].to_string();
    assert!(
        events.contains("redeploying it (failure_recovery redeploy)"),
        "{events}"
    );
    assert!(events.contains("node front redeployed on"), "{events}");

    // The lost provider comes back and holds nothing of the ensemble any more.
    dn.restart(lost);
    wait_for(
        "the lost provider released everything",
        Duration::from_secs(60),
        |seen| {
            let free = dn.resources(lost, "free");
            *seen = format!("free {free} onboarded {onboarded}\n{}", dn.log(lost));
            (free == onboarded).then_some(())
        },
    );
    // Its cleanup touched nothing of the new provider (they share one dockerd here).
    std::thread::sleep(Duration::from_secs(2));
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");
    assert!(
        running(&id, "web").is_some(),
        "web stopped after the lost provider came back"
    );
    let (ok, out) = http_get(&client, "web.internal");
    assert!(ok && out.contains("hello-subnet"), "{out}");
    dn.shutdown_clean(&id);
}

/// `REDEPLOYED` with `redundancy: 1` on `front` and no `failure_recovery`: only the standby
/// heals it.
fn with_standby() -> String {
    REDEPLOYED.replace(
        "    allocations: [web]\n    failure_recovery: redeploy\n",
        "    allocations: [web]\n    redundancy: 1\n",
    )
}

/// The peers holding a standby of `node`.
fn standbys(m: &Value, node: &str) -> Vec<String> {
    m["standbys"][node]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|s| s["peer"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Node `redundancy: 1`: a standby of `front` is allocated (resources held, nothing started)
/// on a third provider. When `front`'s provider dies the standby is promoted without a bid
/// round: `web` runs there at its old address and name, the client (untouched) reaches it,
/// a new standby is placed on the last free provider, and the dead provider, started again,
/// drops what it held. A shutdown releases every provider, standbys included.
#[test]
fn a_standby_is_promoted_when_its_node_is_lost_and_replaced() {
    let dn = NsDevnet::up(5);
    dn.onboard_all();
    let id = dn.deploy(&with_standby(), "standby.yaml");
    let _containers = Containers(id.clone());
    let m = wait_for("a standby of front", Duration::from_secs(60), |seen| {
        let m = dn.deployment_manifest(&id);
        *seen = format!("{m}");
        (standbys(&m, "front").len() == 1).then_some(m)
    });
    let front = m["nodes"]["front"]["peer"].as_str().unwrap().to_string();
    let back = m["nodes"]["back"]["peer"].as_str().unwrap().to_string();
    let standby = standbys(&m, "front").remove(0);
    assert!(
        standby != front && standby != back,
        "the standby shares a provider: {m}"
    );
    // Three providers hold resources (as NuNet's redundancy test checks); the standby runs
    // nothing.
    for peer in [&front, &back, &standby] {
        let n = dn.node_of(peer);
        assert_ne!(
            dn.resources(n, "free"),
            dn.resources(n, "onboarded"),
            "node-{n} holds nothing"
        );
    }
    let web = running(&id, "web").expect("one web container");
    let ip = m["allocations"]["front.web"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let client = container(&id, "client");
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["standbys"]["front"][0], standby.as_str(), "{s}");
    let (code, text) = dn.run(1, &["deployment", "manifest", &id]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("standby: peer {standby}")), "{text}");

    // The machine of front dies: its daemon and its containers.
    let lost = dn.node_of(&front);
    let onboarded = dn.resources(lost, "onboarded");
    dn.crash(lost);
    Command::new("docker")
        .args(["rm", "-f", &web])
        .output()
        .unwrap();
    let t0 = Instant::now();
    let m = wait_for("the standby promoted", Duration::from_secs(60), |seen| {
        let m = dn.deployment_manifest(&id);
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        *seen = format!("{s}");
        assert_ne!(s["status"], "Failed", "{s}");
        (m["nodes"]["front"]["peer"] == standby.as_str()
            && m["allocations"]["front.web"]["status"] == "running")
            .then_some(m)
    });
    eprintln!("lost node to promoted standby: {:.1?}", t0.elapsed());
    assert_eq!(m["allocations"]["front.web"]["ip"], ip.as_str(), "{m}");
    assert_eq!(container(&id, "client"), client, "the client was restarted");
    wait_for(
        "web.internal answers from the promoted standby",
        Duration::from_secs(30),
        |seen| {
            let (ok, out) = http_get(&client, "web.internal");
            *seen = out.clone();
            (ok && out.contains("hello-subnet")).then_some(())
        },
    );
    let events = dn.json(1, &["deployment", "status", &id, "--json"])["events"].to_string();
    assert!(
        events.contains("promoting its standby (redundancy)"),
        "{events}"
    );
    assert!(
        events.contains(&format!("standby on {standby} promoted in")),
        "{events}"
    );
    assert!(
        !events.contains("redeploying node front"),
        "a bid round replaced the node: {events}"
    );

    // A new standby on the one provider that holds nothing of the deployment.
    let last = (2..=5)
        .map(|n| dn.peer(n))
        .find(|p| ![&front, &back, &standby].contains(&p))
        .unwrap();
    wait_for("a new standby", Duration::from_secs(60), |seen| {
        let m = dn.deployment_manifest(&id);
        *seen = format!("{m}");
        (standbys(&m, "front") == vec![last.clone()]).then_some(())
    });

    // The lost provider comes back and holds nothing of the ensemble any more.
    dn.restart(lost);
    wait_for(
        "the lost provider released everything",
        Duration::from_secs(60),
        |seen| {
            let free = dn.resources(lost, "free");
            *seen = format!("free {free} onboarded {onboarded}\n{}", dn.log(lost));
            (free == onboarded).then_some(())
        },
    );
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");
    assert!(running(&id, "web").is_some(), "web stopped");
    dn.shutdown_clean(&id);
}

/// Node `failure_recovery: restart`: while its provider is down the deployment waits (it
/// does not fail as a `stay_down` node would), and when the provider is back the allocation
/// runs on, adopted in its container.
#[test]
fn a_node_with_restart_recovery_waits_for_its_provider() {
    let dn = deploy_support::Devnet::up(0);
    dn.onboard(2);
    let yaml = format!("{SLEEPER}    failure_recovery: restart\n");
    let (id, _containers) = deploy_running(&dn, "restart.yaml", &yaml);
    let before = running(&id, "sleeper").unwrap();
    deploy_support::kill(&dn.dir, 2, "-KILL");
    wait_for("the orchestrator waits", Duration::from_secs(30), |seen| {
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        *seen = s.to_string();
        assert_eq!(s["status"], "Running", "{s}");
        s["events"]
            .to_string()
            .contains("waiting for its provider to come back")
            .then_some(())
    });
    deploy_support::restart(&dn, 2);
    wait_for("the node answers again", Duration::from_secs(60), |seen| {
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        *seen = s.to_string();
        s["events"]
            .to_string()
            .contains("node only answers again")
            .then_some(())
    });
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");
    assert_eq!(
        running(&id, "sleeper"),
        Some(before),
        "the container was replaced"
    );
    dn.json(1, &["deployment", "shutdown", &id, "--json"]);
    released(2, |n, w| dn.resources(n, w));
}

/// Cuts (or restores) every packet of node `node`'s namespace but loopback: a partition.
fn partition(dn: &NsDevnet, node: usize, on: bool) {
    let op = if on { "-I" } else { "-D" };
    for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o"), ("FORWARD", "-i")] {
        let o = Command::new("ip")
            .args(["netns", "exec", &dn.netns[node - 1], "iptables", op, chain])
            .args(["!", dir, "lo", "-j", "DROP"])
            .output()
            .unwrap();
        assert!(o.status.success(), "iptables {op} {chain}: {o:?}");
    }
}

/// A partition, not a crash: `front`'s provider is cut off with its container still running.
/// The orchestrator redeploys `front` elsewhere; when the partition heals, the old provider is
/// fenced (told to revert) and its copy stops, so `web` never runs twice for long, and the
/// deployment keeps running on the new copy.
#[test]
fn a_partitioned_provider_is_replaced_and_fenced_when_it_heals() {
    let dn = NsDevnet::up(4);
    dn.onboard_all();
    let id = dn.deploy(REDEPLOYED, "partition.yaml");
    let _containers = Containers(id.clone());
    let m = dn.deployment_manifest(&id);
    let old_peer = m["nodes"]["front"]["peer"].as_str().unwrap().to_string();
    let ip = m["allocations"]["front.web"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let cut = dn.node_of(&old_peer);
    let client = container(&id, "client");
    let onboarded = dn.resources(cut, "onboarded");
    let old_web = container(&id, "web");

    partition(&dn, cut, true);
    let healed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("front redeployed", Duration::from_secs(90), |seen| {
            let m = dn.deployment_manifest(&id);
            let s = dn.json(1, &["deployment", "status", &id, "--json"]);
            *seen = s.to_string();
            assert_ne!(s["status"], "Failed", "{s}");
            let moved = m["nodes"]["front"]["peer"].as_str() != Some(old_peer.as_str());
            (moved && m["allocations"]["front.web"]["status"] == "running").then_some(())
        });
        // The old copy still runs behind the partition; the client reaches the new one.
        wait_for(
            "web.internal answers from the new provider",
            Duration::from_secs(30),
            |seen| {
                let (ok, out) = http_get(&client, "web.internal");
                *seen = out.clone();
                (ok && out.contains("hello-subnet")).then_some(())
            },
        );
    }));
    partition(&dn, cut, false);
    if let Err(e) = healed {
        std::panic::resume_unwind(e);
    }
    assert_eq!(
        dn.deployment_manifest(&id)["allocations"]["front.web"]["ip"].as_str(),
        Some(ip.as_str())
    );
    // Healed: the old provider is fenced and its copy goes.
    wait_for("the old copy stopped", Duration::from_secs(90), |seen| {
        let ids = containers_of(&id);
        *seen = ids.clone();
        (!ids.contains(&old_web[..12])).then_some(())
    });
    wait_for(
        "the fenced provider released everything",
        Duration::from_secs(30),
        |seen| {
            let free = dn.resources(cut, "free");
            *seen = format!("free {free} onboarded {onboarded}");
            (free == onboarded).then_some(())
        },
    );
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");
    assert!(
        s["events"].to_string().contains("fenced the lost provider"),
        "{s}"
    );
    assert_eq!(container(&id, "client"), client);
    let (ok, out) = http_get(&client, "web.internal");
    assert!(ok && out.contains("hello-subnet"), "{out}");
    dn.shutdown_clean(&id);
}

/// `escalation_strategy: redeploy`: when supervision gives up on a crash loop, the node moves
/// to another provider (once: the old one is fenced and releases everything); when it gives
/// up there too, the deployment is torn down.
#[test]
fn escalation_redeploys_the_node_once_then_tears_down() {
    let dn = deploy_support::Devnet::up(0);
    dn.onboard(2);
    dn.onboard(3);
    let yaml = format!("{CRASH_LOOP}escalation_strategy: redeploy\n");
    let v = deploy_json(&dn, "escalate.yaml", &yaml, "90s");
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let _containers = Containers(id.clone());
    let first = v["nodes"]["only"].as_str().unwrap_or_default().to_string();
    let s = wait_for(
        "torn down after one move",
        Duration::from_secs(150),
        |seen| {
            let s = dn.json(1, &["deployment", "status", &id, "--json"]);
            *seen = s.to_string();
            (s["status"] == "Failed").then_some(s)
        },
    );
    let events = s["events"].to_string();
    assert!(
        events.contains("escalating (escalation_strategy redeploy): redeploying node only"),
        "{events}"
    );
    assert!(events.contains("node only redeployed on"), "{events}");
    assert!(events.contains("fenced the lost provider"), "{events}");
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("moved node only 1 time(s) already"), "{s}");
    assert_ne!(s["nodes"]["only"].as_str(), Some(first.as_str()), "{s}");
    for n in [2, 3] {
        released(n, |n, w| dn.resources(n, w));
    }
    wait_for("containers removed", Duration::from_secs(20), |seen| {
        *seen = containers_of(&id);
        seen.is_empty().then_some(())
    });
}

/// The orchestrating daemon is SIGKILLed and started again: the running deployment is
/// restored, its allocation was not restarted (same container), and supervision resumes: a
/// container killed afterwards is restarted in place.
#[test]
fn a_restarted_orchestrator_resumes_supervision_without_restarting_anything() {
    let dn = deploy_support::Devnet::up(0);
    dn.onboard(2);
    let yaml = SLEEPER.replace(
        "    execution:\n",
        "    failure_recovery: one_for_one\n    execution:\n",
    );
    let (id, _containers) = deploy_running(&dn, "resume.yaml", &yaml);
    let before = running(&id, "sleeper").unwrap();
    deploy_support::kill(&dn.dir, 1, "-KILL");
    deploy_support::restart(&dn, 1);
    let s = wait_for(
        "the deployment is restored",
        Duration::from_secs(30),
        |seen| {
            let (code, out) = dn.run(1, &["deployment", "status", &id, "--json"]);
            *seen = out.clone();
            (code == 0).then(|| serde_json::from_str::<Value>(out.trim()).unwrap())
        },
    );
    assert_eq!(s["status"], "Running", "{s}");
    assert_eq!(
        running(&id, "sleeper"),
        Some(before.clone()),
        "restarted by the restart"
    );
    let killed = Command::new("docker")
        .args(["kill", &before])
        .output()
        .unwrap();
    assert!(killed.status.success());
    wait_for(
        "restarted in place after the kill",
        Duration::from_secs(30),
        |seen| {
            let m = dn.json(1, &["deployment", "manifest", &id, "--json"]);
            let a = &m["manifest"]["allocations"]["only.sleeper"];
            *seen = format!("{a} container {:?}", running(&id, "sleeper"));
            let c = running(&id, "sleeper")?;
            (c != before && a["restarts"] == 1 && a["status"] == "running").then_some(())
        },
    );
    dn.json(1, &["deployment", "shutdown", &id, "--json"]);
    released(2, |n, w| dn.resources(n, w));
}
