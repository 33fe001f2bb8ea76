//! Test bed for the host plumbing: a fake "host" network namespace with an uplink to an
//! "external" namespace, "container" namespaces with a `sleep` process as attach target, and
//! trace collection. Everything is removed in `Drop`, also when an assertion fails.
//!
//! Needs root, iproute2, iptables, nsenter and python3; missing tools make the test fail
//! with a message instead of passing.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nunet_subnet::Host;
use nunet_subnet::plan::{TABLE_BASE, TABLE_LAST};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails the test unless we are root and the tools exist.
pub fn require_tools() {
    let uid = Command::new("id").arg("-u").output().expect("run id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "these tests need root"
    );
    for tool in [
        "ip",
        "iptables",
        "iptables-save",
        "nsenter",
        "python3",
        "sysctl",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "required tool `{tool}` is not installed (CI installs iproute2, iptables)"
        );
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn")
}

/// Runs a command inside namespace `ns`; panics with its stderr when it fails.
pub fn ns_ok(ns: &str, args: &[&str]) -> String {
    let out = ns_out(ns, args);
    assert!(
        out.status.success(),
        "`{}` in {ns} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command inside namespace `ns`.
pub fn ns_out(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend(args);
    run(&full)
}

/// A named network namespace, deleted on drop (with the processes we started in it).
pub struct Netns {
    pub name: String,
    children: Vec<Child>,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("nst-{role}-{}-{n}", std::process::id());
        let out = run(&["ip", "netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Self {
            name,
            children: Vec::new(),
        };
        ns_ok(&ns.name, &["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn host(&self) -> Host {
        Host::in_netns(self.name.clone())
    }

    /// Starts `args` inside the namespace, killed when the namespace guard drops; returns pid.
    pub fn spawn(&mut self, args: &[&str]) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in netns");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// A process that holds the namespace, to be used as `netns_pid`.
    pub fn holder_pid(&mut self) -> u32 {
        let pid = self.spawn(&["sleep", "600"]);
        // `ip netns exec` execs the command, so the pid is the sleeper itself; wait until it
        // has entered the namespace (its netns link differs from ours).
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            if comm.trim() == "sleep" && theirs.is_some_and(|t| t != ours) {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "sleep in {} did not start",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A "host" namespace with FORWARD policy DROP (as Docker sets it), strict rp_filter, and an uplink veth to an
/// "external" namespace: host 198.18.0.1/24, external 198.18.0.2/24.
pub struct Testbed {
    pub host: Netns,
    pub ext: Netns,
}

pub const HOST_UPLINK: &str = "198.18.0.1";
pub const EXT_ADDR: &str = "198.18.0.2";

impl Testbed {
    pub fn new() -> Self {
        require_tools();
        let host = Netns::new("h");
        let ext = Netns::new("x");
        let (h, x) = (host.name.as_str(), ext.name.as_str());
        ns_ok(
            h,
            &[
                "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", x,
            ],
        );
        ns_ok(h, &["ip", "addr", "add", "198.18.0.1/24", "dev", "up0"]);
        ns_ok(h, &["ip", "link", "set", "up0", "up"]);
        ns_ok(x, &["ip", "addr", "add", "198.18.0.2/24", "dev", "up1"]);
        ns_ok(x, &["ip", "link", "set", "up1", "up"]);
        ns_ok(h, &["iptables", "-w", "-P", "FORWARD", "DROP"]);
        // Strict reverse-path filtering, as on many distributions.
        ns_ok(h, &["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=1"]);
        ns_ok(
            h,
            &["sysctl", "-q", "-w", "net.ipv4.conf.default.rp_filter=1"],
        );
        Self { host, ext }
    }

    /// A persistent TUN standing in for the data path's device.
    pub fn add_tun(&self, name: &str) {
        let h = &self.host.name;
        ns_ok(h, &["ip", "tuntap", "add", "dev", name, "mode", "tun"]);
        ns_ok(h, &["ip", "link", "set", name, "mtu", "1420", "up"]);
    }
}

/// Whether `from` gets an answer to one ping to `to` within a second.
pub fn ping(from: &str, to: &str) -> bool {
    let has_ping = Command::new("sh")
        .args(["-c", "command -v ping"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let args: Vec<&str> = if has_ping {
        vec!["ping", "-c", "1", "-W", "1", to]
    } else {
        vec!["busybox", "ping", "-c", "1", "-W", "1", to]
    };
    ns_out(from, &args).status.success()
}

/// Connects from namespace `from` to `addr:port` with TCP; returns the first line received.
pub fn tcp_hello(from: &str, addr: &str, port: u16) -> Option<String> {
    let script = "import socket,sys\n\
        s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)\n\
        print(s.recv(100).decode().strip())";
    let out = ns_out(from, &["python3", "-c", script, addr, &port.to_string()]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Python one-shot TCP server that greets every connection with `hello-nunet`.
pub const GREETER: &str = "import socket,sys\n\
    s=socket.socket()\n\
    s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
    s.bind(('0.0.0.0',int(sys.argv[1])))\n\
    s.listen(16)\n\
    while True:\n c,_=s.accept()\n c.sendall(b'hello-nunet\\n')\n c.close()";

/// Every trace of ours in namespace `ns`: `nn…`/`nv…` interfaces, rules at our priorities,
/// routes in our table range, iptables lines mentioning NUNET/nunet.
pub fn traces(ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    let links: serde_json::Value =
        serde_json::from_str(&ns_ok(ns, &["ip", "-j", "link", "show"])).unwrap();
    for l in links.as_array().unwrap() {
        let name = l["ifname"].as_str().unwrap();
        if (name.starts_with("nn") || name.starts_with("nv")) && name.len() == 10 {
            out.push(format!("link {name}"));
        }
    }
    for line in ns_ok(ns, &["ip", "-4", "rule", "show"]).lines() {
        if line.starts_with("5200:") || line.starts_with("5201:") {
            out.push(format!("rule {line}"));
        }
    }
    for line in ns_ok(ns, &["ip", "-4", "route", "show", "table", "all"]).lines() {
        let table = line.split_whitespace().skip_while(|w| *w != "table").nth(1);
        if table
            .and_then(|t| t.parse::<u32>().ok())
            .is_some_and(|t| (TABLE_BASE..=TABLE_LAST).contains(&t))
        {
            out.push(format!("route {line}"));
        }
    }
    for table in ["filter", "nat"] {
        for line in ns_ok(ns, &["iptables-save", "-t", table]).lines() {
            if line.contains("NUNET") || line.contains("nunet") {
                out.push(format!("{table}: {line}"));
            }
        }
    }
    out
}
