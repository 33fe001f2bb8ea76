//! Multi-allocation deployments and faults on a real 3-node devnet: a busybox `httpd` service
//! plus a WASM task → Running, then shutdown → free == onboarded, no container left; the
//! deadline ends a deployment nobody bids for with the reason; the orchestrator's node
//! restarting keeps a Running deployment supervised; a dead provider fails it; a pinned peer,
//! `location.accept` and a provider that does not grant `/dms/deployment` are respected.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_support::*;
use serde_json::Value;

/// Prints a line on stdout through WASI and exits 0.
const WASM_HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// A busybox `httpd` service on one node and a WASM task on another.
fn web_and_wasm(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("hello.wasm"), wat::parse_str(WASM_HELLO).unwrap()).unwrap();
    let yaml = r#"version: V1
allocations:
  web:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.5}, ram: {size: 128MiB}, disk: {size: 100MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [httpd, -f, -v, -p, "8080"]
  job:
    executor: wasm
    type: task
    resources: {cpu: {cores: 0.5}, ram: {size: 128MiB}, disk: {size: 100MiB}}
    execution:
      type: wasm
      module: ./hello.wasm
nodes:
  front:
    allocations: [web]
  worker:
    allocations: [job]
"#;
    let p = dir.join("web-and-wasm.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

#[test]
fn deadline_expiry_fails_then_service_and_wasm_task_run_until_shutdown() {
    let base = 0u16; // devnet picks free ports
    let dn = Devnet::up(base);
    // Nobody is onboarded: no bid can arrive, and the deadline ends the deployment.
    let t0 = Instant::now();
    let (code, out) = dn.run(1, &["deploy", "-f", &hello(), "-t", "16s", "--json"]);
    assert_ne!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"], "Failed", "{v}");
    assert!(
        v["reason"].as_str().unwrap_or("").contains("deadline"),
        "{v}"
    );
    assert!(t0.elapsed() < Duration::from_secs(25), "{:?}", t0.elapsed());

    for n in 2..=3 {
        dn.onboard(n);
    }
    let file = web_and_wasm(&dn.dir);
    let (code, out) = dn.run(
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
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"], "Running", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let m = &v["manifest"];
    assert_ne!(
        m["nodes"]["front"]["peer"], m["nodes"]["worker"]["peer"],
        "{v}"
    );
    // The service keeps running while the task completes; the deployment stays Running.
    let t0 = Instant::now();
    loop {
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        assert_eq!(s["status"], "Running", "{s}");
        let m = dn.json(1, &["deployment", "manifest", &id, "--json"]);
        let allocs = &m["manifest"]["allocations"];
        if allocs["worker.job"]["status"] == "completed" {
            assert_eq!(allocs["front.web"]["status"], "running", "{m}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{m}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!containers_of(&id).is_empty(), "the httpd container runs");
    let (code, logs) = dn.run(1, &["deployment", "logs", &id]);
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("hello from wasm"), "{logs}");

    let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
    assert_eq!(code, 0, "{out}");
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "ShuttingDown", "{s}");
    for n in 2..=3 {
        assert_eq!(
            dn.resources(n, "free"),
            dn.resources(n, "onboarded"),
            "node-{n}"
        );
    }
    assert_eq!(containers_of(&id), "", "containers left behind");
}

/// One busybox `httpd` service on one node.
fn web_only(dir: &Path) -> PathBuf {
    let yaml = r#"version: V1
allocations:
  web:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.5}, ram: {size: 128MiB}, disk: {size: 100MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [httpd, -f, -p, "8080"]
nodes:
  front:
    allocations: [web]
"#;
    let p = dir.join("web.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

#[test]
fn orchestrator_restart_keeps_running_and_dead_provider_fails_the_deployment() {
    let base = 0u16; // devnet picks free ports
    let dn = Devnet::up(base);
    for n in 2..=3 {
        dn.onboard(n);
    }
    let file = web_only(&dn.dir);
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
    assert_eq!(v["status"], "Running", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let peer = v["manifest"]["nodes"]["front"]["peer"].clone();
    let provider = (2..=3)
        .find(|n| {
            dn.json(*n, &["actor", "cmd", "--json", "/dms/node/peers/self"])["peer_id"] == peer
        })
        .unwrap();

    // The orchestrator's node restarts: the deployment is restored and still supervised.
    kill(&dn.dir, 1, "-TERM");
    restart(&dn, 1);
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(s["status"], "Running", "{s}");
    let m = dn.json(1, &["deployment", "manifest", &id, "--json"]);
    assert_eq!(m["manifest"]["nodes"]["front"]["peer"], peer, "{m}");
    std::thread::sleep(Duration::from_secs(3));
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    assert_eq!(
        s["status"], "Running",
        "still healthy after the restart: {s}"
    );

    // The provider dies: the deployment must not stay Running with a dead allocation.
    kill(&dn.dir, provider, "-KILL");
    let t0 = Instant::now();
    let s = loop {
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        if s["status"] != "Running" {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "still Running: {s}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(s["status"], "Failed", "{s}");
    assert!(
        s["reason"].as_str().unwrap_or("").contains("unreachable"),
        "{s}"
    );
    // The killed provider could not remove its container; clean up after it.
    let left = containers_of(&id);
    if !left.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(left.lines());
        Command::new("docker").args(args).output().unwrap();
    }
}

#[test]
fn pinned_peer_location_accept_and_non_granting_provider() {
    let base = 0u16; // devnet picks free ports
    let dn = Devnet::up(base);
    for n in 2..=3 {
        dn.onboard(n);
    }
    let (p2, p3) = (peer_of(&dn, 2), peer_of(&dn, 3));

    // A pinned peer is the one used.
    let pinned = hello_with(
        &dn.dir,
        "pinned.yaml",
        &format!("    peer: {}\n", p2.as_str().unwrap()),
    );
    let v = dn.json(
        1,
        &[
            "deploy",
            "-f",
            pinned.to_str().unwrap(),
            "-t",
            "60s",
            "--json",
        ],
    );
    assert_eq!(v["status"], "Completed", "{v}");
    assert_eq!(v["manifest"]["nodes"]["node-1"]["peer"], p2, "{v}");

    // Only node-3 is in Europe: a node accepting only EU goes there.
    kill(&dn.dir, 3, "-TERM");
    let (code, out) = dn.run(3, &["config", "set", "general.host_continent", "EU"]);
    assert_eq!(code, 0, "{out}");
    restart(&dn, 3);
    let eu = hello_with(
        &dn.dir,
        "eu.yaml",
        "    location:\n      accept:\n        - {continent: EU}\n",
    );
    let v = dn.json(
        1,
        &["deploy", "-f", eu.to_str().unwrap(), "-t", "60s", "--json"],
    );
    assert_eq!(v["status"], "Completed", "{v}");
    assert_eq!(v["manifest"]["nodes"]["node-1"]["peer"], p3, "{v}");

    // node-3 stops granting the org (hence the orchestrator) anything: it never bids.
    kill(&dn.dir, 3, "-TERM");
    let ctx = dn.json(3, &["cap", "list", "-c", "dms", "--json"]);
    let toks = ctx["require"]
        .as_array()
        .or_else(|| ctx["require"]["tok"].as_array())
        .cloned()
        .unwrap_or_default();
    assert!(!toks.is_empty(), "{ctx}");
    for t in toks {
        let (code, out) = dn.run(
            3,
            &["cap", "remove", "-c", "dms", "--require", &t.to_string()],
        );
        assert_eq!(code, 0, "{out}");
    }
    restart(&dn, 3);
    let v = dn.json(1, &["deploy", "-f", &hello(), "-t", "60s", "--json"]);
    assert_eq!(v["status"], "Completed", "{v}");
    assert_eq!(v["manifest"]["nodes"]["node-1"]["peer"], p2, "{v}");
    let id = v["id"].as_str().unwrap();
    let s = dn.json(1, &["deployment", "status", id, "--json"]);
    let events = s["events"].to_string();
    assert!(
        events.contains(&format!("bid from {}", p2.as_str().unwrap())),
        "{events}"
    );
    let p3 = p3.as_str().unwrap();
    assert!(
        !events.contains(&format!("bid from {p3}")),
        "node-3 bid: {events}"
    );
    // It does not answer at all (a decline is an answer too): the round names it silent.
    assert!(events.contains(&format!("silent: {p3}")), "{events}");
}
