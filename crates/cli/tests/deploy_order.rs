//! `depends_on` on a real 3-node devnet: the allocation listed first but depending on the
//! other starts after it (the orchestrator's events record the start order), and the task
//! ensemble completes.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use deploy_support::*;

const ORDERED: &str = r#"version: V1
allocations:
  app:
    executor: docker
    type: task
    depends_on: [db]
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution: {type: docker, image: "nunet-test/busybox:latest", cmd: [echo, app]}
  db:
    executor: docker
    type: task
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution: {type: docker, image: "nunet-test/busybox:latest", cmd: [echo, db]}
nodes:
  n:
    allocations: [app, db]
"#;

#[test]
fn dependencies_start_before_their_dependents() {
    let dn = Devnet::up(0);
    for n in 1..=3 {
        dn.onboard(n);
    }
    let file = dn.dir.join("ordered.yaml");
    std::fs::write(&file, ORDERED).unwrap();
    let v = dn.json(
        1,
        &[
            "deploy",
            "-f",
            file.to_str().unwrap(),
            "-t",
            "60s",
            "--json",
        ],
    );
    assert_eq!(v["status"], "Completed", "{v}");
    let id = v["id"].as_str().unwrap();
    let s = dn.json(1, &["deployment", "status", id, "--json"]);
    let events: Vec<String> = s["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {s}"))
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let at = |what: &str| {
        events
            .iter()
            .position(|m| m.starts_with(&format!("started n.{what} ")))
            .unwrap_or_else(|| panic!("no start of {what}: {events:?}"))
    };
    assert!(at("db") < at("app"), "app started before db: {events:?}");
}
