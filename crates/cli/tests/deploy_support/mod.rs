//! Helpers shared by the deployment tests: a 3-node devnet in a temp dir, the `nunet` CLI
//! run against one of its nodes, and stopping / restarting a node's daemon.
#![allow(clippy::unwrap_used, missing_docs, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The `nunet` binary with a devnet's test environment (fast KDF, passphrase file, test hooks
/// allowed), run inside network namespace `ns` when given, as node home `home` when given.
pub fn nunet_cmd(dir: &Path, ns: Option<&str>, home: Option<&str>, args: &[&str]) -> Command {
    let mut c = match ns {
        Some(ns) => {
            // Only the network namespace, as `nunet devnet up --netns` starts daemons.
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .args(["--", env!("CARGO_BIN_EXE_nunet")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_nunet")),
    };
    c.args(args)
        .env("NUNET_INSECURE_FAST_KDF", "1")
        .env("DMS_TEST_HOOKS", "1")
        .env("DMS_PASSPHRASE_FILE", dir.join("passphrase"))
        .env_remove("DMS_PASSPHRASE")
        .env_remove("NUNET_CONFIG")
        // A developer's RUST_LOG would replace the daemons' configured log level.
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    if let Some(h) = home {
        c.env("NUNET_HOME", dir.join(h));
    }
    c
}

pub fn nunet(dir: &Path, home: Option<&str>, args: &[&str]) -> Output {
    nunet_cmd(dir, None, home, args).output().unwrap()
}

/// Starts node `node`'s daemon of the devnet in `dir` again (inside `ns` when given), as
/// `nunet devnet up` does; its output goes to `nunet-restarted.log`.
pub fn start_daemon(dir: &Path, ns: Option<&str>, node: usize) {
    use std::os::unix::process::CommandExt;
    let home = dir.join(format!("node-{node}"));
    let log = std::fs::File::create(home.join("nunet-restarted.log")).unwrap();
    let mut child = nunet_cmd(dir, ns, None, &["run", "-c", "dms"])
        .env("NUNET_HOME", &home)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    std::fs::write(home.join("nunet.pid"), child.id().to_string()).unwrap();
    // Reaped when it exits (`devnet down` or a test's kill), so no zombie is left.
    std::thread::spawn(move || child.wait());
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub struct Devnet {
    /// The devnet directory.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
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

impl Devnet {
    pub fn up(base: u16) -> Devnet {
        Self::up_with_env(base, &[])
    }
    /// [`Devnet::up`] with extra environment for the daemons (test knobs).
    pub fn up_with_env(base: u16, env: &[(&str, &str)]) -> Devnet {
        Self::up_nodes(3, base, env)
    }
    /// A devnet of `nodes` nodes, with extra environment for the daemons.
    pub fn up_nodes(nodes: usize, base: u16, env: &[(&str, &str)]) -> Devnet {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dn");
        let mut cmd = nunet_cmd(&dir, None, None, &[]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd
            .args([
                "devnet",
                "up",
                "--nodes",
                &nodes.to_string(),
                "--dir",
                dir.to_str().unwrap(),
                "--base-port",
                &base.to_string(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "devnet up: {}", text(&o));
        Devnet { dir, _tmp: tmp }
    }
    pub fn run(&self, node: usize, args: &[&str]) -> (i32, String) {
        let o = nunet(&self.dir, Some(&format!("node-{node}")), args);
        (o.status.code().unwrap_or(-1), text(&o))
    }
    pub fn json(&self, node: usize, args: &[&str]) -> Value {
        let (code, out) = self.run(node, args);
        assert_eq!(code, 0, "{args:?}: {out}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
    pub fn onboard(&self, node: usize) {
        self.json(
            node,
            &[
                "actor",
                "cmd",
                "--json",
                "/dms/node/onboarding/onboard",
                "--ram",
                "1",
                "--cpu",
                "1",
                "--disk",
                "1",
            ],
        );
    }
    pub fn resources(&self, node: usize, which: &str) -> Value {
        self.json(
            node,
            &[
                "actor",
                "cmd",
                "--json",
                &format!("/dms/node/resources/{which}"),
            ],
        )
    }
}

impl Devnet {
    /// Deploys the ensemble `yaml` from `node` (`deploy -t 90s --json`), asserts that it is
    /// Running, and returns the reply.
    pub fn deploy_running(&self, node: usize, yaml: &str) -> Value {
        let file = self.dir.join("ensemble.yaml");
        std::fs::write(&file, yaml).unwrap();
        let (code, out) = self.run(
            node,
            &[
                "deploy",
                "-f",
                file.to_str().unwrap(),
                "-t",
                "90s",
                "--json",
            ],
        );
        assert_eq!(code, 0, "{out}");
        let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["status"], "Running", "{v}");
        v
    }
}

/// A service that idles for an hour on one node (`node-a.idle`, 0.5 cores, 128 MiB).
pub const IDLE_SERVICE: &str = r#"version: V1
allocations:
  idle:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.5}, ram: {size: 128MiB}, disk: {size: 100MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "3600"]
nodes:
  node-a:
    allocations: [idle]
"#;

pub fn hello() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/hello.yaml")
        .display()
        .to_string()
}

/// Removes every container of an ensemble (workloads and sandboxes) when dropped, even when
/// the test fails.
pub struct Containers(pub String);

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = containers_of(&self.0);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(ids.split_whitespace())
                .output();
        }
    }
}

pub fn containers_of(ensemble: &str) -> String {
    let o = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=nunet.ensemble={ensemble}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn pid_of(dir: &Path, node: usize) -> String {
    std::fs::read_to_string(dir.join(format!("node-{node}/nunet.pid")))
        .unwrap()
        .trim()
        .to_string()
}

/// Sends `sig` to a devnet daemon (a process this test started) and waits until it is gone.
pub fn kill(dir: &Path, node: usize, sig: &str) {
    let pid = pid_of(dir, node);
    Command::new("kill").args([sig, &pid]).status().unwrap();
    wait_gone(&pid, &format!("node-{node}"));
}

/// Waits (15 s at most) until process `pid` is gone: every thread, not only the main one. A
/// thread still in the kernel (say in a disk write) keeps the process's files and sockets
/// open after the main thread is already a zombie, and a restart would find its port taken.
pub fn wait_gone(pid: &str, what: &str) {
    let alive = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|threads| {
                threads.flatten().any(|t| {
                    !std::fs::read_to_string(t.path().join("stat"))
                        .unwrap_or_default()
                        .contains(") Z")
                })
            })
            .unwrap_or(false)
    };
    let t0 = Instant::now();
    while alive() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{what} did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a devnet node's daemon again, as `nunet devnet up` does.
pub fn restart(dn: &Devnet, node: usize) {
    start_daemon(&dn.dir, None, node);
    let t0 = Instant::now();
    while dn
        .run(node, &["actor", "cmd", "--json", "/dms/node/peers/self"])
        .0
        != 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "node-{node} did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `hello.yaml` with its node pinned to `peer` or restricted to `continent`.
pub fn hello_with(dir: &Path, name: &str, node_extra: &str) -> PathBuf {
    let base = std::fs::read_to_string(hello()).unwrap();
    let yaml = format!("{base}{node_extra}");
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

pub fn peer_of(dn: &Devnet, n: usize) -> Value {
    dn.json(n, &["actor", "cmd", "--json", "/dms/node/peers/self"])["peer_id"].clone()
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `limit`; panics with what the
/// last look saw (`seen`).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut(&mut String) -> Option<T>) -> T {
    let t0 = Instant::now();
    let mut seen = String::new();
    loop {
        if let Some(v) = f(&mut seen) {
            eprintln!("{what}: {:.1?}", t0.elapsed());
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}; last seen {seen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What is mounted under `dir` in this process's view (the devnet daemons share it):
/// (mount point, filesystem type), in mount order.
pub fn mounts_under(dir: &Path) -> Vec<(String, String)> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let point = l.split(' ').nth(4)?;
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            Path::new(point)
                .starts_with(&dir)
                .then(|| (point.to_string(), fstype.to_string()))
        })
        .collect()
}

/// Stops the stranger's daemon when the test ends, however it ends.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

pub fn devnet_manifest(dn: &Devnet) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dn.dir.join("devnet.json")).unwrap()).unwrap()
}

/// Creates and starts a stranger (home `stranger` in the devnet's directory): its own `dms` key and context, the organisation as a
/// root anchor, node-1 as bootstrap peer, ports chosen by the kernel.
pub fn stranger(dn: &Devnet) -> (Daemon, String, String) {
    use std::os::unix::process::CommandExt;
    let home = "stranger";
    let run = |args: &[&str]| {
        let o = nunet(&dn.dir, Some(home), args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let did = run(&["cap", "new", "dms"]);
    let m = devnet_manifest(dn);
    run(&[
        "cap",
        "anchor",
        "-c",
        "dms",
        "--root",
        m["org"].as_str().unwrap(),
    ]);
    let config = json!({
        "rest": {"port": 0},
        "p2p": {"listen_address": ["/ip4/127.0.0.1/tcp/0"],
                "bootstrap_peers": [m["nodes"][0]["p2p"].as_str().unwrap()]},
        "general": {"env": "devnet"},
        "subnet": {"enabled": false},
        // As `nunet devnet up` writes it: its nodes share one filesystem.
        "onboarding": {"reserve_disk_gb": 1.0},
    });
    let home_dir = dn.dir.join(home);
    std::fs::write(home_dir.join("dms_config.json"), config.to_string()).unwrap();
    let log = std::fs::File::create(home_dir.join("nunet.log")).unwrap();
    let child = nunet_cmd(&dn.dir, None, Some(home), &["run", "-c", "dms"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    // Up when its REST API answers (the CLI reads the reported port from run.json).
    let t0 = Instant::now();
    let peer = loop {
        let o = nunet(
            &dn.dir,
            Some(home),
            &[
                "actor",
                "cmd",
                "-c",
                "dms",
                "--json",
                "/dms/node/peers/self",
            ],
        );
        if o.status.success() {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            break v["peer_id"].as_str().unwrap().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the stranger did not come up: {}\n{}",
            text(&o),
            std::fs::read_to_string(home_dir.join("nunet.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    run(&[
        "actor",
        "cmd",
        "-c",
        "dms",
        "--json",
        "/dms/node/onboarding/onboard",
        "--ram",
        "1",
        "--cpu",
        "1",
        "--disk",
        "1",
    ]);
    (daemon, did, peer)
}
