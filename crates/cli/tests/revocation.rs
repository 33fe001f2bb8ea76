//! Revocations travel (NuNet's acceptance scenario): the organisation revokes one member's
//! grant, one node broadcasts the revocation, and every node — including one that was offline
//! at the time — stops answering that member, while the other members' chains keep working.
//! Real daemons on a loopback devnet.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::time::{Duration, Instant};

use deploy_support::{Devnet, kill, nunet, restart, text};
use serde_json::Value;

fn did_of(dn: &Devnet, n: usize) -> String {
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dn.dir.join("devnet.json")).unwrap())
            .unwrap();
    m["nodes"][n - 1]["did"].as_str().unwrap().to_string()
}

/// `node` (signing with its own `dms` context, whose grant comes from the organisation) asks
/// `dest` for its peers; returns the exit code and output.
fn ask(dn: &Devnet, node: usize, dest: usize) -> (i32, String) {
    dn.run(
        node,
        &[
            "actor",
            "cmd",
            "-c",
            "dms",
            "-d",
            &did_of(dn, dest),
            "-t",
            "10s",
            "/dms/node/peers/list",
        ],
    )
}

fn until(what: &str, limit: Duration, mut f: impl FnMut() -> Option<String>) {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < limit {
        match f() {
            None => return,
            Some(s) => last = Some(s),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{what} within {limit:?}; last: {last:?}");
}

#[test]
fn a_broadcast_revocation_closes_one_member_everywhere_and_reaches_late_joiners() {
    let dn = Devnet::up(0);
    // Every node admits the organisation's chains; node-1 reaches node-2 and node-3.
    for dest in [2, 3] {
        until("node-1 admitted", Duration::from_secs(20), || {
            let (code, out) = ask(&dn, 1, dest);
            (code != 0).then_some(out)
        });
    }
    // node-3 is offline while the revocation goes out.
    kill(&dn.dir, 3, "-TERM");

    // The organisation revokes node-1's grant (read from node-1's context file)...
    let ctx: Value =
        serde_json::from_str(&std::fs::read_to_string(dn.dir.join("node-1/cap/dms.json")).unwrap())
            .unwrap();
    let grant = serde_json::to_string(&ctx["provide"][0]).unwrap();
    let o = nunet(
        &dn.dir,
        Some("org"),
        &["cap", "revoke", "-c", "org", &grant],
    );
    assert!(o.status.success(), "{}", text(&o));
    let revoke = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(revoke.contains("revoke"), "{revoke}");
    // ...and node-2's operator broadcasts it.
    let (code, out) = dn.run(2, &["cap", "revoke", "-c", "dms", "--broadcast", &revoke]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("announced"), "{out}");

    // node-2 denies node-1, naming the rule; node-1 itself received and stored it by gossip.
    until("node-2 denies node-1", Duration::from_secs(10), || {
        let (code, out) = ask(&dn, 1, 2);
        (code == 0 || !out.contains("revoked")).then_some(out)
    });
    until(
        "node-1 stores the gossiped revocation",
        Duration::from_secs(10),
        || {
            let c = std::fs::read_to_string(dn.dir.join("node-1/cap/dms.json")).unwrap();
            let v: Value = serde_json::from_str(&c).unwrap();
            (v["revocations"].as_array().map_or(0, Vec::len) == 0).then_some(c)
        },
    );
    // An unrelated chain (node-3's grant, used by node-2... and node-2's own at node-1).
    let (code, out) = ask(&dn, 2, 1);
    assert_eq!(code, 0, "node-2's own chain must keep working: {out}");

    // node-3 comes back knowing nothing; the network's re-announcements reach it.
    restart(&dn, 3);
    let (code, out) = ask(&dn, 2, 3);
    assert_eq!(code, 0, "{out}");
    until(
        "node-3 (offline during the broadcast) denies node-1",
        Duration::from_secs(75),
        || {
            let (code, out) = ask(&dn, 1, 3);
            (code == 0 || !out.contains("revoked")).then_some(out)
        },
    );
}
