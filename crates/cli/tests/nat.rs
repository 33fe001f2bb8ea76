//! Reach across NAT on a testbed of network namespaces (`nunet devnet up --netns --nat …`):
//! public nodes serve as bootstrap peers and relays; other nodes sit behind a cone-like NAT
//! router (keeps source ports, drops unsolicited packets), a symmetric one (random port per
//! connection) or a firewall that accepts no inbound connection. Nodes behind them learn they
//! are private (AutoNAT), reserve relay slots by themselves, are reached through the relays,
//! and get a direct connection by hole punching where the NATs allow it. Deployments — bids,
//! commit, allocate, logs, the ensemble subnet, shutdown — work with providers behind each
//! kind, and from an orchestrator that is itself behind NAT. Needs root, iproute2, iptables
//! and dockerd with the local image `nunet-test/busybox:latest` (`.ci/install-runtimes.sh`).
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::time::{Duration, Instant};

use deploy_support::wait_for;
use netns_support::{NsDevnet, container, http_get};
use serde_json::Value;

/// Node `n`'s `reachability` (from `/dms/node/peers/self`).
fn reach(dn: &NsDevnet, n: usize) -> Value {
    dn.json(n, &["actor", "cmd", "--json", "/dms/node/peers/self"])["reachability"].clone()
}

/// How node `from` is connected to node `to`: `direct`, `relayed`, or `None` (not connected).
fn path(dn: &NsDevnet, from: usize, to: usize) -> Option<String> {
    let peer = dn.peer(to);
    dn.json(from, &["actor", "cmd", "--json", "/dms/node/peers/list"])["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == peer.as_str())
        .map(|p| p["path"].as_str().unwrap().to_string())
}

/// Node `from` pings node `to` (dialing it through whatever address it finds).
fn ping(dn: &NsDevnet, from: usize, to: usize) {
    let peer = dn.peer(to);
    dn.json(
        from,
        &[
            "actor",
            "cmd",
            "--json",
            "/dms/node/peers/ping",
            "--host",
            &peer,
        ],
    );
}

/// The relays (peer ids) holding a reservation of node `n`.
fn reserved_relays(r: &Value) -> Vec<String> {
    r["relays"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["reserved"] == true)
        .map(|x| x["relay"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until every node reports the NAT status `want[i]` and each private one holds two
/// relay reservations.
fn wait_reachability(dn: &NsDevnet, want: &[&str]) {
    wait_for(
        "AutoNAT verdicts and relay reservations",
        Duration::from_secs(60),
        |seen| {
            seen.clear();
            let mut ok = true;
            for (i, w) in want.iter().enumerate() {
                let r = reach(dn, i + 1);
                let relays = reserved_relays(&r).len();
                seen.push_str(&format!("node-{}: {} relays {relays}; ", i + 1, r["nat"]));
                ok &= r["nat"] == *w && (*w != "private" || relays == 2);
            }
            ok.then_some(())
        },
    );
}

#[test]
fn private_nodes_reserve_relays_punch_holes_and_say_when_they_lose_every_relay() {
    // 1-3 public relays; 4 and 5 behind cone NATs, 6 behind a symmetric NAT, 7 firewalled.
    let dn = NsDevnet::up_with(7, &["--nat", "4=cone,5=cone,6=symmetric,7=firewall"]);
    wait_reachability(
        &dn,
        &[
            "public", "public", "public", "private", "private", "private", "private",
        ],
    );
    let r4 = reach(&dn, 4);
    assert_eq!(r4["reachable"], true, "{r4}");
    assert!(r4["public_addrs"].as_array().unwrap().is_empty(), "{r4}");

    // Cone ↔ cone: reached through a relay, then direct after a hole punch.
    let t0 = Instant::now();
    ping(&dn, 4, 5);
    wait_for(
        "a direct connection between the cone NATs",
        Duration::from_secs(90),
        |seen| {
            *seen = format!("{:?}", path(&dn, 4, 5));
            (path(&dn, 4, 5).as_deref() == Some("direct")).then_some(())
        },
    );
    eprintln!(
        "cone ↔ cone: direct {:.1?} after the first ping",
        t0.elapsed()
    );
    let punched = |n| reach(&dn, n)["hole_punches"]["succeeded"].as_u64().unwrap();
    assert!(punched(4) + punched(5) >= 1, "no hole punch counted");
    ping(&dn, 4, 5);

    // Cone ↔ symmetric: the hole punch fails and the peers stay on the relay, which keeps
    // carrying their traffic.
    ping(&dn, 4, 6);
    assert_eq!(path(&dn, 4, 6).as_deref(), Some("relayed"));
    let failed = |n| reach(&dn, n)["hole_punches"]["failed"].as_u64().unwrap();
    wait_for("the failed hole punch", Duration::from_secs(60), |seen| {
        *seen = format!("failed: node-4 {} node-6 {}", failed(4), failed(6));
        (failed(4) + failed(6) >= 1).then_some(())
    });
    ping(&dn, 4, 6);
    assert_eq!(path(&dn, 4, 6).as_deref(), Some("relayed"));
    // Firewalled ↔ cone: reported, not asserted (it depends on which side dials first).
    ping(&dn, 7, 4);
    eprintln!("firewall ↔ cone: {:?}", path(&dn, 7, 4));

    // A relay of node 6 disappears: node 6 reserves a slot on the third relay instead.
    let before = reserved_relays(&reach(&dn, 6));
    let gone = dn.node_of(&before[0]);
    dn.crash(gone);
    let after = wait_for(
        "a reservation on another relay",
        Duration::from_secs(60),
        |seen| {
            let now = reserved_relays(&reach(&dn, 6));
            *seen = format!("{now:?}");
            (now.len() == 2 && !now.contains(&before[0])).then_some(now)
        },
    );
    eprintln!("node 6 moved from relays {before:?} to {after:?}");

    // Every relay gone: node 6 says plainly that it cannot be reached.
    for n in 1..=3 {
        if n != gone {
            dn.crash(n);
        }
    }
    let r6 = wait_for(
        "node 6 to report it is unreachable",
        Duration::from_secs(60),
        |seen| {
            let r = reach(&dn, 6);
            *seen = r.to_string();
            (r["reachable"] == false).then_some(r)
        },
    );
    assert_eq!(r6["nat"], "private", "{r6}");
    assert!(
        r6["summary"].as_str().unwrap().contains("cannot reach"),
        "{r6}"
    );
}

const WEB_AND_CLIENT: &str = include_str!("../../../examples/web-and-client.yaml");

/// `web-and-client.yaml` with `front` (the web server) pinned to node `web` and `back` (the
/// client) to node `client`.
fn pinned(dn: &NsDevnet, web: usize, client: usize) -> String {
    WEB_AND_CLIENT
        .replace(
            "    allocations: [web]\n",
            &format!("    allocations: [web]\n    peer: {}\n", dn.peer(web)),
        )
        .replace(
            "    allocations: [client]\n",
            &format!("    allocations: [client]\n    peer: {}\n", dn.peer(client)),
        )
}

/// Deploys the pinned web-and-client ensemble from node `from`, checks logs and the subnet
/// (an HTTP GET by `.internal` name), waits for a direct path between the providers when
/// `direct` says their NATs allow one, and shuts it down cleanly.
fn web_and_client_across(dn: &NsDevnet, from: usize, web: usize, client: usize, direct: bool) {
    let name = format!("ens-{from}-{web}-{client}.yaml");
    let id = dn.deploy_from(from, &pinned(dn, web, client), &name);
    let (code, logs) = dn.run(from, &["deployment", "logs", &id]);
    assert_eq!(code, 0, "{logs}");
    assert!(
        logs.contains("front.web") && logs.contains("back.client"),
        "{logs}"
    );
    let c = container(&id, "client");
    let body = wait_for(
        "web.internal over the subnet",
        Duration::from_secs(30),
        |seen| {
            let (ok, out) = http_get(&c, "web.internal");
            *seen = out.clone();
            (ok && out.contains("hello-subnet")).then_some(out)
        },
    );
    assert!(body.contains("hello-subnet"));
    if direct {
        // Usually within a second; a failed first punch (one attempt can take 30 s to fail)
        // is retried over a new relayed connection 5 s later (`reach.rs`).
        wait_for(
            "a direct path between the providers",
            Duration::from_secs(90),
            |seen| {
                *seen = format!("{:?}", path(dn, web, client));
                (path(dn, web, client).as_deref() == Some("direct")).then_some(())
            },
        );
        // The subnet still carries traffic once the relayed connection is gone.
        let (ok, out) = http_get(&c, "web.internal");
        assert!(ok && out.contains("hello-subnet"), "{out}");
    }
    eprintln!(
        "node-{web} ↔ node-{client}: {:?} (hole punches: node-{web} {}, node-{client} {})",
        path(dn, web, client),
        reach(dn, web)["hole_punches"],
        reach(dn, client)["hole_punches"]
    );
    dn.shutdown_clean_from(from, &id);
}

/// Waits until node 1 says it is public and nodes 2..=`n` that they are private and
/// reachable (through their relays).
fn wait_private_and_reachable(dn: &NsDevnet, n: usize, within: Duration) {
    wait_for("AutoNAT verdicts", within, |seen| {
        let nat: Vec<Value> = (1..=n).map(|i| reach(dn, i)["nat"].clone()).collect();
        *seen = format!("{nat:?}");
        (nat[0] == "public"
            && nat[1..].iter().all(|s| s == "private")
            && (2..=n).all(|i| reach(dn, i)["reachable"] == true))
        .then_some(())
    });
}

#[test]
fn deployments_reach_providers_behind_each_nat_and_orchestrators_behind_nat() {
    // 1 public (relay, orchestrator); 2 and 3 behind cone NATs, 4 behind a symmetric NAT,
    // 5 firewalled.
    let dn = NsDevnet::up_with(5, &["--nat", "2=cone,3=cone,4=symmetric,5=firewall"]);
    dn.onboard_all();
    wait_private_and_reachable(&dn, 5, Duration::from_secs(60));

    // A public orchestrator, providers behind two cone NATs: their allocations talk over a
    // direct connection once the hole punch succeeded.
    web_and_client_across(&dn, 1, 2, 3, true);

    // An orchestrator behind NAT, providers behind a symmetric NAT and a firewall (no
    // direct path expected: reported only).
    web_and_client_across(&dn, 3, 4, 5, false);
}

#[test]
fn deployments_across_nats_complete_over_long_lossy_links() {
    // Every node's (or router's) link: 35 ms ± 5 ms each way, 1 % loss. A round trip between
    // two nodes crosses four link directions (≈ 140 ms); through the relay on node 1, eight
    // (≈ 280 ms). 2 and 3 behind cone NATs, 4 behind a symmetric one.
    let dn = NsDevnet::up_with(
        4,
        &[
            "--nat",
            "2=cone,3=cone,4=symmetric",
            "--wan",
            "delay=35ms,jitter=5ms,loss=1%",
        ],
    );
    dn.onboard_all();
    wait_private_and_reachable(&dn, 4, Duration::from_secs(90));
    // An orchestrator behind a cone NAT; providers behind a cone NAT and a symmetric one
    // (their allocations talk through the relay: ≈ 280 ms round trips).
    let t0 = Instant::now();
    web_and_client_across(&dn, 2, 3, 4, false);
    eprintln!(
        "cone → cone + symmetric over 140 ms links: {:.1?}",
        t0.elapsed()
    );
    // An orchestrator behind the symmetric NAT; providers behind the two cone NATs, which
    // punch a hole over the long links.
    let t0 = Instant::now();
    web_and_client_across(&dn, 4, 2, 3, true);
    eprintln!(
        "symmetric → cone + cone over 140 ms links: {:.1?}",
        t0.elapsed()
    );
}
