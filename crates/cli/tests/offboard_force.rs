//! A forced offboard of a provider that runs a workload (real `nunet run` daemons, real
//! dockerd, the busybox image): the provider stops the container through its executor before
//! it leaves, so nothing keeps running that the node no longer accounts for, and its
//! accounting is clean afterwards (onboarding again gives free = onboarded).
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use deploy_support::*;

#[test]
fn forced_offboard_stops_the_running_container_and_leaves_nothing_accounted() {
    let dn = Devnet::up(0);
    // Only node 2 offers resources: it gets the service.
    dn.onboard(2);
    let v = dn.deploy_running(1, IDLE_SERVICE);
    let id = v["id"].as_str().unwrap().to_string();
    let alloc = v["manifest"]["allocations"]["node-a.idle"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(containers_of(&id), "", "the service runs in a container");
    let running = dn.json(2, &["get", "allocations", "--json"]);
    assert_eq!(running["allocations"][0]["status"], "running", "{running}");

    // Plain offboard is refused while it runs; forced, the provider stops it first.
    let (code, out) = dn.run(
        2,
        &["actor", "cmd", "--json", "/dms/node/onboarding/offboard"],
    );
    assert_eq!(code, 1, "{out}");
    let off = dn.json(
        2,
        &[
            "actor",
            "cmd",
            "--json",
            "/dms/node/onboarding/offboard",
            "--force",
        ],
    );
    assert_eq!(off["offboard"]["stopped"][0], alloc.as_str(), "{off}");
    assert_eq!(
        off["offboard"]["released_without_executor"]
            .as_array()
            .map_or(0, Vec::len),
        0,
        "{off}"
    );
    assert_eq!(
        containers_of(&id),
        "",
        "the container is gone after offboard"
    );
    // Terminated, or already gone: the orchestrator reverts a deployment it sees failed.
    let listed = dn.json(2, &["get", "allocations", "--json"]);
    for a in listed["allocations"].as_array().unwrap() {
        assert_eq!(a["status"], "terminated", "{listed}");
    }
    assert_eq!(
        dn.resources(2, "allocated")["allocated"]["cpu"]["millicores"],
        0
    );

    // The orchestrator learns it (exit report) and fails the deployment, naming why.
    let t0 = std::time::Instant::now();
    loop {
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        if s["status"] == "Failed" {
            let why = s["reason"].as_str().unwrap_or_default();
            assert!(why.contains("terminated by its provider"), "{s}");
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "deployment still {}",
            s["status"]
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // Onboarding again starts from a clean accounting.
    dn.onboard(2);
    assert_eq!(dn.resources(2, "free"), dn.resources(2, "onboarded"));
}
