//! Live updates of a running deployment (issue 16 item 6) on the namespace testbed: real
//! daemons in their own network namespaces, real dockerd, the ensemble subnet on. NuNet's
//! scenarios — add a node, add an allocation, remove both, change an allocation — each
//! applied over the running deployment: untouched allocations keep their container and
//! address, new ones answer at their `.internal` names, removed ones are stopped and their
//! resources released, and an update that cannot be placed changes nothing.
//!
//! Needs root, iproute2, iptables, dockerd and the local image `nunet-test/busybox:latest`.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::time::Duration;

use deploy_support::{Containers, containers_of};
use netns_support::{NsDevnet, container, http_get, running, wait_for};
use serde_json::Value;

/// An allocation serving `text` over HTTP on port 8080.
fn web(name: &str, text: &str) -> String {
    format!(
        r#"  {name}:
    executor: docker
    type: service
    resources: {{cpu: {{cores: 0.2}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sh, -c, "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    )
}

const CLIENT: &str = r#"  client:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "3600"]
"#;

/// An ensemble of `allocations` (YAML entries) and `nodes` (name, allocation names).
fn ensemble(allocations: &[String], nodes: &[(&str, &[&str])]) -> String {
    let mut y = String::from("version: V1\nallocations:\n");
    for a in allocations {
        y.push_str(a);
    }
    y.push_str("nodes:\n");
    for (n, a) in nodes {
        y.push_str(&format!("  {n}:\n    allocations: [{}]\n", a.join(", ")));
    }
    y
}

/// `client` reaches `host` and gets `text`.
fn answers(client: &str, host: &str, text: &str) {
    wait_for(
        &format!("{host} answers {text}"),
        Duration::from_secs(30),
        |seen| {
            let (ok, out) = http_get(client, host);
            *seen = out.clone();
            (ok && out.contains(text)).then_some(())
        },
    );
}

/// What each provider has free.
fn free_all(dn: &NsDevnet) -> Vec<Value> {
    (1..=4).map(|n| dn.resources(n, "free")).collect()
}

/// `nunet deployment update` of `yaml`: (exit code, output).
fn update(dn: &NsDevnet, id: &str, name: &str, yaml: &str, timeout: &str) -> (i32, String) {
    let p = dn.dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    dn.run(
        1,
        &[
            "deployment",
            "update",
            id,
            "-f",
            p.to_str().unwrap(),
            "-t",
            timeout,
            "--json",
        ],
    )
}

#[test]
fn a_running_deployment_takes_added_removed_and_changed_parts_in_place() {
    let dn = NsDevnet::up(4);
    dn.onboard_all();
    let v1 = ensemble(
        &[web("web", "hello-v1"), CLIENT.to_string()],
        &[("front", &["web"]), ("back", &["client"])],
    );
    let id = dn.deploy(&v1, "v1.yaml");
    let _containers = Containers(id.clone());
    let m = dn.deployment_manifest(&id);
    let web_ip = m["allocations"]["front.web"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let (web1, client1) = (container(&id, "web"), container(&id, "client"));
    answers(&client1, "web.internal", "hello-v1");
    let free_v1 = free_all(&dn);

    // 1. Add an allocation to a node that stays, and a whole node (NuNet's form of the call).
    let v2 = ensemble(
        &[
            web("web", "hello-v1"),
            CLIENT.to_string(),
            web("extra", "hello-extra"),
            web("side", "hello-side"),
        ],
        &[
            ("front", &["web"]),
            ("back", &["client", "extra"]),
            ("edge", &["side"]),
        ],
    );
    let p = dn.dir.join("v2.yaml");
    std::fs::write(&p, &v2).unwrap();
    let r = dn.json(
        1,
        &[
            "actor",
            "cmd",
            "--json",
            "/dms/node/deployment/update",
            "--id",
            &id,
            "--spec-file",
            p.to_str().unwrap(),
        ],
    );
    assert_eq!(r["OK"], true, "{r}");
    let changes = r["changes"].as_str().unwrap_or_default();
    assert!(
        changes.contains("nodes added: edge") && changes.contains("allocations added: back.extra"),
        "{r}"
    );
    let m = dn.deployment_manifest(&id);
    assert_eq!(m["allocations"]["back.extra"]["status"], "running", "{m}");
    assert_eq!(m["allocations"]["edge.side"]["status"], "running", "{m}");
    assert_eq!(container(&id, "web"), web1, "web was restarted");
    assert_eq!(container(&id, "client"), client1, "client was restarted");
    assert_eq!(m["allocations"]["front.web"]["ip"], web_ip.as_str());
    answers(&client1, "extra.internal", "hello-extra");
    answers(&client1, "side.internal", "hello-side");
    answers(&client1, "web.internal", "hello-v1");
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");

    // 2. An update that cannot be placed (a node no provider can hold) changes nothing.
    let huge = web("huge", "x").replace("cores: 0.2", "cores: 64");
    let bad = ensemble(
        &[
            web("web", "hello-v1"),
            CLIENT.to_string(),
            web("extra", "hello-extra"),
            web("side", "hello-side"),
            huge,
        ],
        &[
            ("front", &["web"]),
            ("back", &["client", "extra"]),
            ("edge", &["side"]),
            ("big", &["huge"]),
        ],
    );
    let before = dn.deployment_manifest(&id);
    let free_before = free_all(&dn);
    let (code, out) = update(&dn, &id, "bad.yaml", &bad, "20s");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    let after = dn.deployment_manifest(&id);
    assert_eq!(after["allocations"], before["allocations"]);
    assert_eq!(after["nodes"], before["nodes"]);
    assert_eq!(
        free_all(&dn),
        free_before,
        "a refused update holds resources"
    );
    assert_eq!(container(&id, "web"), web1);

    // 3. Remove the node and the allocation again: stopped, released, the rest untouched.
    let (code, out) = update(&dn, &id, "v1-again.yaml", &v1, "90s");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("nodes removed: edge") && out.contains("allocations removed: back.extra"),
        "{out}"
    );
    wait_for("extra and side stopped", Duration::from_secs(20), |seen| {
        *seen = containers_of(&id);
        (running(&id, "extra").is_none() && running(&id, "side").is_none()).then_some(())
    });
    wait_for("resources back to v1", Duration::from_secs(20), |seen| {
        let f = free_all(&dn);
        *seen = format!("{f:?} vs {free_v1:?}");
        (f == free_v1).then_some(())
    });
    let m = dn.deployment_manifest(&id);
    assert!(
        m["nodes"]["edge"].is_null() && m["allocations"]["back.extra"].is_null(),
        "{m}"
    );
    assert_eq!(container(&id, "web"), web1);
    assert_eq!(container(&id, "client"), client1);

    // 4. Change an allocation: it starts anew (new container) at the same address.
    let v3 = ensemble(
        &[web("web", "hello-v2"), CLIENT.to_string()],
        &[("front", &["web"]), ("back", &["client"])],
    );
    let (code, out) = update(&dn, &id, "v3.yaml", &v3, "90s");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("allocations changed: front.web"), "{out}");
    let m = dn.deployment_manifest(&id);
    assert_eq!(m["allocations"]["front.web"]["ip"], web_ip.as_str(), "{m}");
    assert_ne!(container(&id, "web"), web1, "web was not started anew");
    assert_eq!(container(&id, "client"), client1, "client was restarted");
    answers(&client1, "web.internal", "hello-v2");
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");

    // An unchanged file changes nothing.
    let (code, out) = update(&dn, &id, "v3-again.yaml", &v3, "90s");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing changes"), "{out}");

    dn.shutdown_clean(&id);
}
