//! Deployments end to end with real processes and a real dockerd: a 3-node devnet (`nunet
//! devnet up`), every provider onboarded, `nunet deploy -f examples/hello.yaml` → Completed,
//! the output in `nunet deployment logs`, free == onboarded afterwards and no container left;
//! a user without `/dms/node/deployment` is refused; a provider whose commit fails is
//! reverted and the deployment is retried elsewhere.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::time::{Duration, Instant};

use deploy_support::*;
use serde_json::Value;

#[test]
fn docker_task_completes_with_logs_and_resources_released() {
    let base = 0u16; // devnet picks free ports
    let dn = Devnet::up(base);
    for n in 1..=3 {
        dn.onboard(n);
    }
    // A context the org never granted anything is refused by the orchestrator node.
    let (code, out) = dn.run(1, &["cap", "new", "stranger"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = dn.run(
        1,
        &["deploy", "-f", &hello(), "-t", "60s", "-c", "stranger"],
    );
    assert_eq!(code, 3, "unauthorized deploy must be denied: {out}");

    let (code, out) = dn.run(1, &["deploy", "-f", &hello(), "-t", "60s", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"], "Completed", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let alloc = &v["manifest"]["allocations"]["node-1.hello"];
    assert_eq!(alloc["status"], "completed", "{v}");
    assert_eq!(alloc["exit_code"], 0, "{v}");
    let peer = v["manifest"]["nodes"]["node-1"]["peer"]
        .as_str()
        .unwrap()
        .to_string();

    let (code, logs) = dn.run(1, &["deployment", "logs", &id]);
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("hello from nunet"), "{logs}");
    let list = dn.json(
        1,
        &[
            "get",
            "deployments",
            "--json",
            "--filter",
            "status=Completed",
        ],
    );
    assert!(
        list["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id.as_str()),
        "{list}"
    );

    // Every provider is back to free == onboarded; the winner ran it, no container is left.
    let mut ran = 0;
    for n in 2..=3 {
        assert_eq!(
            dn.resources(n, "free"),
            dn.resources(n, "onboarded"),
            "node-{n}"
        );
        let me = dn.json(n, &["actor", "cmd", "--json", "/dms/node/peers/self"]);
        if me["peer_id"] == peer.as_str() {
            ran += 1;
        }
    }
    assert_eq!(
        ran, 1,
        "the task ran on node-2 or node-3 (the orchestrator's own node never bids on its broadcast)"
    );
    assert_eq!(containers_of(&id), "", "containers left behind");
}

#[test]
fn failed_commit_is_reverted_and_retried_on_another_provider() {
    let base = 0u16; // devnet picks free ports
    let dn = Devnet::up(base);
    dn.onboard(2);
    // node-2 refuses every commit; node-3 is onboarded only once node-2 has failed one, so
    // the first round must go to node-2 and the retry to node-3.
    std::fs::write(dn.dir.join("node-2/data/test-fail-commit"), "").unwrap();
    let dir = dn.dir.clone();
    let deploy = std::thread::spawn(move || {
        let o = nunet(
            &dir,
            Some("node-1"),
            &["deploy", "-f", &hello(), "-t", "90s"],
        );
        (o.status.code().unwrap_or(-1), text(&o))
    });
    let t0 = Instant::now();
    let id = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no commit failure observed"
        );
        std::thread::sleep(Duration::from_millis(300));
        let l = dn.json(1, &["get", "deployments", "--json"]);
        let Some(d) = l["deployments"].as_array().and_then(|a| a.first()).cloned() else {
            continue;
        };
        let id = d["id"].as_str().unwrap().to_string();
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        let events = s["events"].to_string();
        if events.contains("commit refused by the test hook") {
            assert!(events.contains("reverted node node-1"), "{events}");
            break id;
        }
    };
    dn.onboard(3);
    let (code, out) = deploy.join().unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("status: Completed"), "{out}");
    assert!(out.contains("round 2") || out.contains("round 3"), "{out}");
    // The failing provider holds nothing; the one that ran it released everything.
    for n in 2..=3 {
        assert_eq!(
            dn.resources(n, "free"),
            dn.resources(n, "onboarded"),
            "node-{n}"
        );
    }
    let node3 = dn.json(3, &["actor", "cmd", "--json", "/dms/node/peers/self"]);
    let m = dn.json(1, &["deployment", "manifest", &id, "--json"]);
    assert_eq!(
        m["manifest"]["nodes"]["node-1"]["peer"], node3["peer_id"],
        "{m}"
    );
    assert_eq!(containers_of(&id), "");
}
