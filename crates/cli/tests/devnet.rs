//! Three real `nunet run` processes on loopback, started by `nunet devnet up`: discovery,
//! cross-node invocation, broadcast, and authorization failures with named reasons.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_support::{nunet, text};
use serde_json::Value;

struct Devnet {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    nodes: Vec<Value>,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = nunet(
            &self.dir,
            None,
            &["devnet", "down", "--dir", self.dir.to_str().unwrap()],
        );
    }
}

fn up(n: usize) -> Devnet {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dn");
    let base = 0u16; // devnet picks free ports
    let o = nunet(
        &dir,
        None,
        &[
            "devnet",
            "up",
            "--nodes",
            &n.to_string(),
            "--dir",
            dir.to_str().unwrap(),
            "--base-port",
            &base.to_string(),
        ],
    );
    assert!(o.status.success(), "devnet up: {}", text(&o));
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("devnet.json")).unwrap()).unwrap();
    Devnet {
        dir,
        _tmp: tmp,
        nodes: m["nodes"].as_array().unwrap().clone(),
    }
}

impl Devnet {
    fn cmd(&self, node: usize, args: &[&str]) -> (i32, String) {
        let o = nunet(&self.dir, Some(&format!("node-{node}")), args);
        (o.status.code().unwrap_or(-1), text(&o))
    }
    fn json(&self, node: usize, args: &[&str]) -> Value {
        let o = nunet(&self.dir, Some(&format!("node-{node}")), args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }
    fn did(&self, node: usize) -> String {
        self.nodes[node - 1]["did"].as_str().unwrap().to_string()
    }
}

#[test]
fn three_nodes_discover_invoke_and_broadcast() {
    let d = up(3);
    // Nodes 2 and 3 only know node 1; they find each other through the DHT.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = (1..=3).all(|i| {
            d.json(i, &["actor", "cmd", "--json", "/dms/node/peers/list"])["peers"]
                .as_array()
                .unwrap()
                .len()
                == 2
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "peers did not discover each other"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let dht = d.json(3, &["actor", "cmd", "--json", "/dms/node/peers/dht"]);
    assert!(dht["peers"].as_array().unwrap().len() >= 2, "{dht}");
    // Cross-node invocation, authorized through the org's chain.
    let st = d.json(
        2,
        &["actor", "cmd", "--json", "-d", &d.did(3), "/public/status"],
    );
    assert_eq!(st["did"], d.did(3));
    let ping = d.json(
        1,
        &[
            "actor",
            "cmd",
            "--json",
            "/dms/node/peers/ping",
            "--host",
            &d.did(2),
        ],
    );
    assert!(ping["rtt_ms"].as_f64().unwrap() >= 0.0);
    // Broadcast reaches every other subscriber exactly once.
    let replies = d.json(
        1,
        &["actor", "cmd", "--json", "-t", "3s", "/broadcast/hello"],
    );
    let mut from: Vec<String> = replies
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["from"].as_str().unwrap().to_string())
        .collect();
    from.sort();
    let mut want = vec![d.did(2), d.did(3)];
    want.sort();
    assert_eq!(from, want, "{replies}");
    let (code, out) = d.cmd(1, &["devnet", "status", "--dir", d.dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("peers 2").count(), 3, "{out}");
}

#[test]
fn unauthorized_messages_are_denied_with_the_reason() {
    let d = up(2);
    let n2 = d.did(2);
    // A context the nodes do not trust.
    let (c, out) = d.cmd(1, &["cap", "new", "stranger"]);
    assert_eq!(c, 0, "{out}");
    let (code, out) = d.cmd(
        1,
        &[
            "actor",
            "cmd",
            "-c",
            "stranger",
            "-d",
            &n2,
            "/public/status",
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("not-anchored"), "{out}");
    // The user is a root of every devnet node: an unknown behavior is authorized, then not found.
    let (code, out) = d.cmd(1, &["actor", "cmd", "-d", &n2, "/admin/reboot"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NotFound"), "{out}");
    // Wrong audience: tokens made for node 1, delivered to node 2.
    let h = format!(
        r#"{{"id":"{}","did":"{}","addr":{{"host":"{}","inbox":"root"}}}}"#,
        d.did(1),
        d.did(1),
        d.nodes[1]["peer_id"].as_str().unwrap()
    );
    let (code, out) = d.cmd(1, &["actor", "cmd", "-d", &h, "/public/status"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("audience-mismatch"), "{out}");
    // Expired: built with a 1 s lifetime, sent 1.5 s later.
    let o = nunet(
        &d.dir,
        Some("node-1"),
        &["actor", "msg", "-d", &n2, "-e", "1s", "/public/hello"],
    );
    let msg = String::from_utf8_lossy(&o.stdout).trim().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let (code, out) = d.cmd(1, &["actor", "invoke", &msg]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("expired"), "{out}");
    // Replayed: the same signed message twice.
    let o = nunet(
        &d.dir,
        Some("node-1"),
        &["actor", "msg", "-d", &n2, "/public/hello"],
    );
    let msg = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (code, out) = d.cmd(1, &["actor", "invoke", &msg]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = d.cmd(1, &["actor", "invoke", &msg]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("replayed"), "{out}");
    // Garbage to the REST bridge: a clear 4xx, and the node keeps serving.
    let port = d.nodes[0]["rest_port"].as_u64().unwrap();
    let o = Command::new("sh").arg("-c").arg(format!("printf 'POST /api/v1/actor/invoke HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\nContent-Length: 7\\r\\nConnection: close\\r\\n\\r\\n{{\"be\":1' | timeout 5 bash -c 'cat > /dev/tcp/127.0.0.1/{port}'")).output().unwrap();
    let _ = o;
    let st = d.json(1, &["actor", "cmd", "--json", "/public/status"]);
    assert_eq!(st["did"], d.did(1));
}

/// `--base-port 0` never picks a port for a daemon to bind later (the race of issue 15: a
/// "free" port taken by another process before the daemon bound it): the configs say port 0,
/// each daemon binds what the kernel gives it and reports it in `<home>/data/run.json`, and
/// devnet.json and the CLI use the reported ports. The ports this test holds meanwhile stand
/// for other processes; the kernel never hands them out, so no node can be given one.
#[test]
fn base_port_zero_daemons_bind_and_report_their_own_ports() {
    let held: Vec<std::net::TcpListener> = (0..200)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let held_ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let d = up(2);
    for (i, node) in d.nodes.iter().enumerate() {
        let home = PathBuf::from(node["home"].as_str().unwrap());
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(home.join("dms_config.json")).unwrap())
                .unwrap();
        assert_eq!(config["rest"]["port"], 0, "{config}");
        assert_eq!(
            config["p2p"]["listen_address"],
            serde_json::json!(["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"])
        );
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(home.join("data/run.json")).unwrap())
                .unwrap();
        assert_eq!(
            report["pid"].as_u64().unwrap().to_string(),
            deploy_support::pid_of(&d.dir, i + 1)
        );
        let rest: std::net::SocketAddr = report["rest"].as_str().unwrap().parse().unwrap();
        assert_ne!(rest.port(), 0);
        assert!(!held_ports.contains(&rest.port()));
        assert_eq!(node["rest_port"], rest.port(), "{node}");
        assert!(
            report["listen"]
                .as_array()
                .unwrap()
                .contains(&node["p2p"].clone()),
            "{report} {node}"
        );
        // The CLI finds the daemon through the report (`rest.port` is 0).
        let st = d.json(i + 1, &["actor", "cmd", "--json", "/public/status"]);
        assert_eq!(st["did"], d.did(i + 1));
    }
    // Node 2 bootstraps from the address node 1 actually bound; both see each other.
    let boot: Value = serde_json::from_str(
        &std::fs::read_to_string(d.dir.join("node-2/dms_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(boot["p2p"]["bootstrap_peers"][0], d.nodes[0]["p2p"]);
    drop(held);

    // A killed daemon leaves a report naming a process that is gone: the CLI says so.
    deploy_support::kill(&d.dir, 1, "-KILL");
    let (code, out) = d.cmd(1, &["actor", "cmd", "/public/status"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("is not running"), "{out}");
    // Restarted, node 1 binds new ports and finds node 2 again (its bootstrap list names the
    // other nodes); the CLI follows the new report.
    deploy_support::start_daemon(&d.dir, None, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out) = d.cmd(1, &["actor", "cmd", "--json", "/dms/node/peers/list"]);
        let peers = serde_json::from_str::<Value>(out.trim())
            .ok()
            .and_then(|v| v["peers"].as_array().map(Vec::len));
        if code == 0 && peers == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "node-1 did not rejoin: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A clean stop removes the reports.
    let o = nunet(
        &d.dir,
        None,
        &["devnet", "down", "--dir", d.dir.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    for i in 1..=2 {
        let report = d.dir.join(format!("node-{i}/data/run.json"));
        assert!(!report.exists(), "{} left behind", report.display());
    }
}
