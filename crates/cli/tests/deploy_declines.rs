//! Bid declines end to end (3-node devnet, real dockerd): a provider that will not bid answers
//! with a signed decline and its reason, which shows in the deployment's events, and the bid
//! round closes as soon as every subscribed peer has answered instead of waiting for the
//! grace timer.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use deploy_support::*;
use serde_json::Value;

fn at(events: &[Value], needle: &str) -> i64 {
    events
        .iter()
        .find(|e| e["message"].as_str().unwrap_or("").contains(needle))
        .and_then(|e| e["at_ms"].as_i64())
        .unwrap_or_else(|| panic!("no event with {needle:?}: {events:?}"))
}

#[test]
fn declines_show_their_reason_and_close_the_round_early() {
    let dn = Devnet::up(0);
    dn.onboard(2); // node-3 stays off: it must decline with "not onboarded"
    let node3 = peer_of(&dn, 3);
    let node3 = node3.as_str().unwrap();

    let (code, out) = dn.run(1, &["deploy", "-f", &hello(), "-t", "60s", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"], "Completed", "{v}");
    let id = v["id"].as_str().unwrap();
    let s = dn.json(1, &["deployment", "status", id, "--json"]);
    let events = s["events"].as_array().unwrap().clone();
    let declined = format!("peer {node3} declined to bid: not onboarded");
    at(&events, &declined);
    // Both subscribed peers answered (node-2 bid, node-3 declined): the round closed on
    // that, not on the grace timer.
    at(
        &events,
        "bid round closed: all 2 subscribed peer(s) answered",
    );
    assert_eq!(containers_of(id), "");

    // A node no provider can hold: node-2 declines for lack of resources, node-3 as before,
    // and nobody bids. (The deployment is shut down once the reasons are seen.)
    let big = std::fs::read_to_string(hello())
        .unwrap()
        .replace("cores: 0.5", "cores: 8");
    let f = dn.dir.join("big.yaml");
    std::fs::write(&f, big).unwrap();
    let deploy = deploy_in_background(&dn, &f);
    let (big_id, events) = wait_for_events(&dn, &[id], &["not enough free resources", &declined]);
    assert!(
        events.contains("declined to bid: node-1: not enough free resources"),
        "{events}"
    );
    assert!(!events.contains("bid from"), "nobody may bid: {events}");
    let (code, out) = dn.run(1, &["deployment", "shutdown", &big_id]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = deploy.join().unwrap();
    assert_ne!(
        code, 0,
        "a deployment nobody bid on must not succeed: {out}"
    );

    // NuNet's containerd ensemble, unchanged: accepted, and declined at bid time with the
    // reason (this DMS does not run containerd), not refused at parse time.
    let nunet = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ensemble/tests/fixtures/nunet/tests__acceptance__testdata__ensembles__containerd_hello.yaml");
    let deploy = deploy_in_background(&dn, &nunet);
    let (c_id, events) = wait_for_events(
        &dn,
        &[id, &big_id],
        &["executor not implemented by this DMS (NuNet's containerd: use docker)"],
    );
    assert!(!events.contains("bid from"), "nobody may bid: {events}");
    let (code, out) = dn.run(1, &["deployment", "shutdown", &c_id]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = deploy.join().unwrap();
    assert_ne!(code, 0, "{out}");
}

/// `nunet deploy -f <file>` from node-1, on a thread: (exit code, output).
fn deploy_in_background(
    dn: &Devnet,
    file: &std::path::Path,
) -> std::thread::JoinHandle<(i32, String)> {
    let dir = dn.dir.clone();
    let file = file.to_path_buf();
    std::thread::spawn(move || {
        let o = nunet(
            &dir,
            Some("node-1"),
            &["deploy", "-f", file.to_str().unwrap(), "-t", "60s"],
        );
        (o.status.code().unwrap_or(-1), text(&o))
    })
}

/// The first deployment of node-1 not in `known` whose events contain every needle:
/// (its id, its events as JSON text).
fn wait_for_events(dn: &Devnet, known: &[&str], needles: &[&str]) -> (String, String) {
    let t0 = std::time::Instant::now();
    loop {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "no deployment with events {needles:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        let l = dn.json(1, &["get", "deployments", "--json"]);
        let Some(d) = l["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| !known.iter().any(|k| d["id"] == *k))
            .cloned()
        else {
            continue;
        };
        let new_id = d["id"].as_str().unwrap().to_string();
        let s = dn.json(1, &["deployment", "status", &new_id, "--json"]);
        let events = s["events"].to_string();
        if needles.iter().all(|n| events.contains(n)) {
            return (new_id, events);
        }
    }
}
