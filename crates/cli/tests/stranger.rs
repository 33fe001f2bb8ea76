//! A stranger on the swarm cannot win work (issue 15, item 3): a fifth daemon with its own
//! keys joins the devnet. It admits the organisation's requests (it anchors the organisation
//! as a root), so it hears every bid request and answers with a bid; but the organisation
//! granted it nothing, so the orchestrating node refuses its bids, counts them and shows
//! them in the deployment's events. Deployments still succeed on the organisation's
//! providers, and never touch the stranger. Real daemons on loopback, real Docker.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::time::{Duration, Instant};

use deploy_support::{Devnet, hello, nunet, stranger, text};
use serde_json::{Value, json};

fn status(dn: &Devnet, id: &str) -> Value {
    dn.json(1, &["deployment", "status", id, "--json"])
}

#[test]
fn a_stranger_on_the_swarm_never_wins_work() {
    let dn = Devnet::up(0);
    let (_daemon, stranger_did, stranger_peer) = stranger(&dn);
    // The stranger is connected to the orchestrating node (and so hears its bid requests).
    let t0 = Instant::now();
    while !dn
        .json(1, &["actor", "cmd", "--json", "/dms/node/peers/list"])
        .to_string()
        .contains(&stranger_peer)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "stranger not connected"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Only the stranger has resources: it bids in every round, and every bid is refused.
    let (code, out) = dn.run(1, &["deploy", "-f", &hello(), "-t", "16s", "--json"]);
    assert_ne!(code, 0, "deployed with only the stranger onboarded: {out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let s = status(&dn, v["id"].as_str().unwrap());
    assert_eq!(s["status"], "Failed", "{s}");
    assert!(
        s["refused_bids"][&stranger_did].as_u64().unwrap_or(0) >= 1,
        "no refused bid counted for the stranger: {s}"
    );
    assert!(
        s["events"]
            .to_string()
            .contains(&format!("refused a bid from {stranger_did}")),
        "{s}"
    );

    // The organisation's providers come online: repeated deployments succeed on them.
    dn.onboard(2);
    dn.onboard(3);
    for round in 0..3 {
        let v = dn.json(1, &["deploy", "-f", &hello(), "-t", "60s", "--json"]);
        let id = v["id"].as_str().unwrap().to_string();
        assert!(
            v["status"] == "Running" || v["status"] == "Completed",
            "round {round}: {v}"
        );
        let m = dn.json(1, &["deployment", "manifest", &id, "--json"]);
        let peer = m["manifest"]["nodes"]["node-1"]["peer"].to_string();
        assert!(
            !peer.contains(&stranger_peer),
            "placed on the stranger: {m}"
        );
        assert!(peer.contains("12D3"), "no placement: {m}");
        let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
        assert_eq!(code, 0, "{out}");
    }
    // Nothing was ever committed or allocated on the stranger.
    let o = nunet(
        &dn.dir,
        Some("stranger"),
        &[
            "actor",
            "cmd",
            "-c",
            "dms",
            "--json",
            "/dms/node/resources/allocated",
        ],
    );
    let allocated: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(
        allocated["allocated"]["cpu"]["millicores"], 0,
        "{allocated}"
    );
    assert_eq!(
        allocated["committed"]["cpu"]["millicores"], 0,
        "{allocated}"
    );
    assert_eq!(allocated["reservations"], json!([]), "{allocated}");
}
