//! Deployment control with real processes (a 3-node devnet of `nunet run` daemons, real
//! dockerd, the busybox image): the providers' `/dms/ensemble/<id>/allocation/{logs,shutdown}`
//! (only the ensemble's orchestrator may use them; gone once its allocations are), provider
//! allocation listings (`nunet get allocations`), `nunet deployment logs -f` printing every
//! line exactly once until the allocation ends, `nunet deploy` progress (bids per node,
//! phases) and `--json` as one document, and a closed stdout ending a command quietly.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deploy_support::*;
use serde_json::Value;

/// Lines the ticker task prints (one every 0.2 s).
const TICKS: usize = 25;

/// A Docker task printing `tick-1..tick-N` over ~8 s on one node, and a service on another
/// (so `nunet deploy` returns at Running while the ticker still runs).
fn ticker_and_service(dir: &Path) -> PathBuf {
    let yaml = format!(
        r#"version: V1
allocations:
  ticker:
    executor: docker
    type: task
    resources: {{cpu: {{cores: 0.5}}, ram: {{size: 128MiB}}, disk: {{size: 100MiB}}}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sh, -c, "sleep 3; i=1; while [ $i -le {TICKS} ]; do echo tick-$i; i=$((i+1)); sleep 0.2; done"]
  idle:
    executor: docker
    type: service
    resources: {{cpu: {{cores: 0.5}}, ram: {{size: 128MiB}}, disk: {{size: 100MiB}}}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "3600"]
nodes:
  node-a:
    allocations: [ticker]
  node-b:
    allocations: [idle]
"#
    );
    let p = dir.join("ticker.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

/// The devnet node (2 or 3) whose peer id is `peer`.
fn node_with_peer(dn: &Devnet, peer: &Value) -> usize {
    (2..=3).find(|n| peer_of(dn, *n) == *peer).unwrap()
}

fn allocations_of(dn: &Devnet, node: usize, ensemble: &str) -> Vec<Value> {
    let v = dn.json(node, &["get", "allocations", "--json"]);
    v["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["ensemble_id"] == ensemble)
        .cloned()
        .collect()
}

#[test]
fn ensemble_behaviors_logs_follow_allocation_listing_and_shutdown() {
    let dn = Devnet::up(0);
    for n in 2..=3 {
        dn.onboard(n);
    }
    let file = ticker_and_service(&dn.dir);
    let (code, out) = dn.run(1, &["deploy", "-f", file.to_str().unwrap(), "-t", "90s"]);
    assert_eq!(code, 0, "{out}");
    // Live progress: bids per ensemble node, then the phases up to Running.
    let bids = out
        .lines()
        .position(|l| l.starts_with("bids: node-a ") && l.contains(", node-b "))
        .unwrap_or_else(|| panic!("no per-node bid line: {out}"));
    let running = out
        .lines()
        .position(|l| l == "phase: Running")
        .unwrap_or_else(|| panic!("no Running phase line: {out}"));
    assert!(bids < running, "{out}");
    assert!(
        out.contains("phase: Committing") || out.contains("phase: Provisioning"),
        "{out}"
    );
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("deployment "))
        .unwrap()
        .trim()
        .to_string();

    let m = dn.json(1, &["deployment", "manifest", &id, "--json"]);
    let ticker_node = node_with_peer(&dn, &m["manifest"]["nodes"]["node-a"]["peer"]);
    let idle_node = node_with_peer(&dn, &m["manifest"]["nodes"]["node-b"]["peer"]);
    let ticker_did = m["manifest"]["nodes"]["node-a"]["did"]
        .as_str()
        .unwrap()
        .to_string();

    // The provider lists what runs there; the orchestrator's node runs nothing of it.
    let listed = allocations_of(&dn, ticker_node, &id);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let t = &listed[0];
    assert_eq!(t["name"], "ticker", "{t}");
    assert_eq!(t["executor"], "docker", "{t}");
    assert_eq!(t["status"], "running", "{t}");
    assert_eq!(t["node_id"], "node-a", "{t}");
    assert!(t["started_ms"].as_i64().unwrap() > 0, "{t}");
    assert!(t["finished_ms"].is_null(), "{t}");
    assert!(
        t["orchestrator"].as_str().unwrap().starts_with("did:key:"),
        "{t}"
    );
    assert!(t["resources"]["ram"].is_object(), "{t}");
    assert!(allocations_of(&dn, 1, &id).is_empty());
    // Follow the ticker from (about) its first line to its end: every line once, in order.
    let t0 = Instant::now();
    let o = nunet(
        &dn.dir,
        Some("node-1"),
        &["deployment", "logs", "-f", &id, "--allocation", "ticker"],
    );
    let followed = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    let ticks: Vec<&str> = followed
        .lines()
        .filter(|l| l.starts_with("tick-"))
        .collect();
    let want: Vec<String> = (1..=TICKS).map(|i| format!("tick-{i}")).collect();
    assert_eq!(ticks, want, "{followed}");
    assert!(
        t0.elapsed() > Duration::from_secs(1),
        "logs -f returned before the task ended: {followed}"
    );
    let (code, table) = dn.run(
        idle_node,
        &["get", "allocations", "--filter", "status=running"],
    );
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("node-b.idle") && table.contains("docker"),
        "{table}"
    );
    let (_, none) = dn.run(
        idle_node,
        &["get", "allocations", "--filter", "status=failed"],
    );
    assert!(!none.contains("node-b.idle"), "{none}");

    // It ended because the allocation completed, which the provider now reports.
    let done = allocations_of(&dn, ticker_node, &id);
    assert_eq!(done[0]["status"], "completed", "{done:?}");
    assert!(done[0]["finished_ms"].as_i64().unwrap() >= done[0]["started_ms"].as_i64().unwrap());
    // Without -f: the whole output once, under the allocation's header.
    let (code, all) = dn.run(1, &["deployment", "logs", &id]);
    assert_eq!(code, 0, "{all}");
    assert!(all.contains("== node-a.ticker (completed)"), "{all}");
    assert_eq!(all.matches("tick-7\n").count(), 1, "{all}");

    // The per-ensemble behavior exists on the provider but answers only the orchestrator:
    // the user (whose chain covers /dms) is admitted and then refused by the provider.
    let logs_be = format!("/dms/ensemble/{id}/allocation/logs");
    let (code, out) = dn.run(
        1,
        &[
            "actor",
            "cmd",
            "-d",
            &ticker_did,
            &logs_be,
            "--allocation",
            "ticker",
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("orchestrator"), "{out}");

    // Shutdown goes through the providers' ensemble behavior, then everything is gone.
    let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
    assert_eq!(code, 0, "{out}");
    let s = dn.json(1, &["deployment", "status", &id, "--json"]);
    let events = s["events"].to_string();
    assert!(events.contains("stopped node node-b on"), "{events}");
    assert!(events.contains("stopped node node-a on"), "{events}");
    for n in 2..=3 {
        assert!(allocations_of(&dn, n, &id).is_empty(), "node-{n}");
        assert_eq!(
            dn.resources(n, "free"),
            dn.resources(n, "onboarded"),
            "node-{n}"
        );
    }
    assert_eq!(containers_of(&id), "", "containers left behind");
    // The ensemble's behaviors went with its last allocation.
    let (code, out) = dn.run(
        1,
        &[
            "actor",
            "cmd",
            "-d",
            &ticker_did,
            &logs_be,
            "--allocation",
            "ticker",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no behavior"), "{out}");
}

/// Runs `nunet args…` with its stdout closed before it writes anything.
fn with_closed_stdout(dir: &Path, home: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nunet"));
    c.args(args)
        .env("NUNET_INSECURE_FAST_KDF", "1")
        .env("DMS_PASSPHRASE_FILE", dir.join("passphrase"))
        .env_remove("DMS_PASSPHRASE")
        .env_remove("NUNET_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(h) = home {
        c.env("NUNET_HOME", dir.join(h));
    }
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take()); // the reader is gone, as after `| head -0`
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap().code(), err)
}

#[test]
fn closed_stdout_ends_a_command_quietly() {
    let (code, err) = with_closed_stdout(Path::new("/nonexistent"), None, &["validate", &hello()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn deploy_json_is_one_document_and_listing_survives_a_closed_pipe() {
    let dn = Devnet::up(0);
    for n in 2..=3 {
        dn.onboard(n);
    }
    let o = nunet(
        &dn.dir,
        Some("node-1"),
        &["deploy", "-f", &hello(), "-t", "60s", "--json"],
    );
    assert!(o.status.success(), "{}", text(&o));
    // The whole stdout is one JSON document: no progress lines, nothing after it.
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    assert_eq!(v["status"], "Completed", "{v}");
    assert!(v["bids"]["node-1"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(
        v["manifest"]["allocations"]["node-1.hello"]["status"], "completed",
        "{v}"
    );
    let id = v["id"].as_str().unwrap();

    // `nunet get deployments | head -1`: exits 0 and prints no panic.
    let (code, err) = with_closed_stdout(&dn.dir, Some("node-1"), &["get", "deployments"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let mut head = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' get deployments | head -1",
            env!("CARGO_BIN_EXE_nunet")
        ))
        .env("NUNET_HOME", dn.dir.join("node-1"))
        .env("NUNET_INSECURE_FAST_KDF", "1")
        .env("DMS_PASSPHRASE_FILE", dn.dir.join("passphrase"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    head.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    head.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    head.wait().unwrap();
    assert!(out.starts_with("ID "), "{out}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(containers_of(id), "");
}
