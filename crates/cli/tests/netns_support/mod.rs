//! A devnet of real daemons in network namespaces (`nunet devnet up --netns`) for the subnet
//! tests: run the CLI inside a node's namespace, crash and restart a node's daemon, run tools
//! in a namespace. Taken down (daemons, namespaces, the nodes' containers) on drop.
#![allow(clippy::unwrap_used, missing_docs, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deploy_support::text;

pub struct NsDevnet {
    /// The devnet directory.
    pub dir: PathBuf,
    /// Node i's namespace at index i - 1.
    pub netns: Vec<String>,
    _tmp: tempfile::TempDir,
}

pub fn nunet(dir: &Path, ns: Option<&str>, home: Option<&str>, args: &[&str]) -> Output {
    crate::deploy_support::nunet_cmd(dir, ns, home, args)
        .output()
        .unwrap()
}

impl Drop for NsDevnet {
    fn drop(&mut self) {
        let _ = nunet(
            &self.dir,
            None,
            None,
            &["devnet", "down", "--dir", self.dir.to_str().unwrap()],
        );
    }
}

impl NsDevnet {
    pub fn up(n: usize) -> NsDevnet {
        Self::up_with(n, &[])
    }
    /// [`NsDevnet::up`] with more `devnet up` arguments (e.g. `--nat 2=cone`).
    pub fn up_with(n: usize, extra: &[&str]) -> NsDevnet {
        for tool in ["ip", "iptables-save", "docker"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                found,
                "this test needs `{tool}` (iproute2, iptables, docker)"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dn");
        let d = dir.to_str().unwrap();
        let n_s = n.to_string();
        let mut args = vec!["devnet", "up", "--netns", "--nodes", &n_s, "--dir", d];
        args.extend_from_slice(extra);
        let o = nunet(&dir, None, None, &args);
        assert!(o.status.success(), "devnet up --netns: {}", text(&o));
        let netns = Self::manifest(&dir)["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["netns"].as_str().unwrap().to_string())
            .collect();
        NsDevnet {
            dir,
            netns,
            _tmp: tmp,
        }
    }
    pub fn manifest(dir: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("devnet.json")).unwrap()).unwrap()
    }
    pub fn run(&self, node: usize, args: &[&str]) -> (i32, String) {
        let home = format!("node-{node}");
        let o = nunet(&self.dir, Some(&self.netns[node - 1]), Some(&home), args);
        (o.status.code().unwrap_or(-1), text(&o))
    }
    pub fn json(&self, node: usize, args: &[&str]) -> Value {
        let (code, out) = self.run(node, args);
        assert_eq!(code, 0, "{args:?}: {out}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
    /// Onboards every node with 1 core, 1 GiB RAM and 1 GiB disk.
    pub fn onboard_all(&self) {
        for n in 1..=self.netns.len() {
            self.onboard(n);
        }
    }
    /// Onboards node `n` with 1 core, 1 GiB RAM and 1 GiB disk.
    pub fn onboard(&self, n: usize) {
        let onboard = "/dms/node/onboarding/onboard";
        let args = [
            "actor", "cmd", "--json", onboard, "--ram", "1", "--cpu", "1", "--disk", "1",
        ];
        self.json(n, &args);
    }

    /// No `nn*`/`nv*` interface, no extra `ip rule`, no `NUNET` chain in any node namespace.
    pub fn assert_no_subnet_leftovers(&self) {
        for ns in &self.netns {
            let links = in_ns(ns, &["ip", "-o", "link"]);
            assert!(
                !links.lines().any(|l| {
                    let name = l.split(':').nth(1).unwrap_or("").trim();
                    name.starts_with("nn") || name.starts_with("nv")
                }),
                "{ns}: interfaces left: {links}"
            );
            let rules = in_ns(ns, &["ip", "rule"]);
            assert_eq!(rules.lines().count(), 3, "{ns}: rules left: {rules}");
            let fw = in_ns(ns, &["iptables-save"]) + &in_ns(ns, &["iptables-save", "-t", "nat"]);
            assert!(!fw.contains("NUNET"), "{ns}: firewall rules left: {fw}");
        }
    }

    pub fn peer(&self, node: usize) -> String {
        Self::manifest(&self.dir)["nodes"][node - 1]["peer_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
    /// Number (from 1) of the node with libp2p peer id `peer`.
    pub fn node_of(&self, peer: &str) -> usize {
        let m = Self::manifest(&self.dir);
        let nodes = m["nodes"].as_array().unwrap();
        nodes.iter().position(|n| n["peer_id"] == peer).unwrap() + 1
    }
    /// Node `node`'s LAN address (from its p2p multiaddr).
    pub fn lan(&self, node: usize) -> String {
        Self::manifest(&self.dir)["nodes"][node - 1]["p2p"]
            .as_str()
            .unwrap()
            .split('/')
            .nth(2)
            .unwrap()
            .to_string()
    }
    /// The manifest of deployment `id` (`nunet deployment manifest --json` on node-1).
    pub fn deployment_manifest(&self, id: &str) -> Value {
        let m = self.json(1, &["deployment", "manifest", id, "--json"]);
        if m["manifest"].is_object() {
            m["manifest"].clone()
        } else {
            m
        }
    }
    /// Deploys `yaml` from node-1 and waits until it is Running; returns its id.
    pub fn deploy(&self, yaml: &str, name: &str) -> String {
        self.deploy_from(1, yaml, name)
    }
    /// Deploys `yaml` from node `from` and waits until it is Running; returns its id.
    pub fn deploy_from(&self, from: usize, yaml: &str, name: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, yaml).unwrap();
        let (code, out) = self.run(
            from,
            &["deploy", "-f", p.to_str().unwrap(), "-t", "90s", "--json"],
        );
        let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        if code != 0 || v["status"] != "Running" {
            // What each round saw (bids, declines, silent peers), and each provider's view.
            let events = v["id"].as_str().map_or(String::new(), |id| {
                self.run(from, &["deployment", "status", id, "--json"]).1
            });
            let providers: Vec<String> = (1..=self.netns.len())
                .map(|n| {
                    let peers = self.run(n, &["actor", "cmd", "--json", "/dms/node/peers/list"]);
                    let free = self.run(n, &["actor", "cmd", "--json", "/dms/node/resources/free"]);
                    format!("node-{n}: peers {} free {}", peers.1.trim(), free.1.trim())
                })
                .collect();
            panic!(
                "deploy of {name} (exit {code}): {out}\nstatus with events: {events}\n{}",
                providers.join("\n")
            );
        }
        v["id"].as_str().unwrap().to_string()
    }
    /// Shuts deployment `id` down from node-1 and checks it left nothing: every node's free
    /// resources equal onboarded, no container of it, no subnet device, route or rule.
    pub fn shutdown_clean(&self, id: &str) {
        self.shutdown_clean_from(1, id)
    }
    /// [`NsDevnet::shutdown_clean`] for a deployment node `from` orchestrates.
    pub fn shutdown_clean_from(&self, from: usize, id: &str) {
        self.json(from, &["deployment", "shutdown", id, "--json"]);
        for n in 1..=self.netns.len() {
            wait_for("resources released", Duration::from_secs(20), |seen| {
                let (free, onboarded) = (self.resources(n, "free"), self.resources(n, "onboarded"));
                *seen = format!("node-{n}: free {free} onboarded {onboarded}");
                (free == onboarded).then_some(())
            });
        }
        wait_for("containers removed", Duration::from_secs(20), |seen| {
            *seen = crate::deploy_support::containers_of(id);
            seen.is_empty().then_some(())
        });
        self.assert_no_subnet_leftovers();
    }
    pub fn resources(&self, node: usize, which: &str) -> Value {
        let be = format!("/dms/node/resources/{which}");
        self.json(node, &["actor", "cmd", "--json", &be])
    }
    pub fn pid(&self, node: usize) -> String {
        let p = self.dir.join(format!("node-{node}/nunet.pid"));
        std::fs::read_to_string(p).unwrap().trim().to_string()
    }
    /// SIGKILLs a node's daemon (a process this test's devnet started) and waits until every
    /// thread of it is gone.
    pub fn crash(&self, node: usize) {
        let pid = self.pid(node);
        let ok = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        assert!(ok.success(), "kill -KILL {pid}");
        crate::deploy_support::wait_gone(&pid, &format!("node-{node}"));
    }
    /// Starts a node's daemon again inside its namespace, as `nunet devnet up --netns` does.
    pub fn restart(&self, node: usize) {
        crate::deploy_support::start_daemon(&self.dir, Some(&self.netns[node - 1]), node);
        let t0 = Instant::now();
        while self
            .run(node, &["actor", "cmd", "--json", "/dms/node/peers/self"])
            .0
            != 0
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "node-{node} did not come back: {}",
                self.log(node)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    pub fn log(&self, node: usize) -> String {
        let p = self.dir.join(format!("node-{node}/nunet-restarted.log"));
        std::fs::read_to_string(p).unwrap_or_default()
    }
}

pub fn in_ns(ns: &str, cmd: &[&str]) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The running container of allocation `alloc` (by name) of ensemble `ensemble`.
pub fn container(ensemble: &str, alloc: &str) -> String {
    let o = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=nunet.ensemble={ensemble}"),
            "--filter",
            &format!("label=nunet.allocation={alloc}"),
        ])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        !id.is_empty(),
        "no running container for {alloc} of {ensemble}"
    );
    id
}

/// `docker exec container cmd…`: (success, stdout + stderr).
pub fn exec(container: &str, cmd: &[&str]) -> (bool, String) {
    let o = Command::new("docker")
        .args(["exec", container])
        .args(cmd)
        .output()
        .unwrap();
    (o.status.success(), text(&o))
}

pub use crate::deploy_support::wait_for;

/// The running container of `alloc`, if there is exactly one.
pub fn running(ensemble: &str, alloc: &str) -> Option<String> {
    let o = Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!("label=nunet.ensemble={ensemble}"))
        .args(["--filter"])
        .arg(format!("label=nunet.allocation={alloc}"))
        .output()
        .unwrap();
    let ids = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (!ids.is_empty() && !ids.contains('\n')).then_some(ids)
}

/// An HTTP GET of `host:8080/` from inside `container` (busybox-static's wget crashes in the
/// test image; nc speaks HTTP/1.0 instead): (success, output).
pub fn http_get(container: &str, host: &str) -> (bool, String) {
    let req = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 8080");
    exec(container, &["sh", "-c", &req])
}
