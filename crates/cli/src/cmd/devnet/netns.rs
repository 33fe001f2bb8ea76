//! `nunet devnet up --netns`: every node in its own network namespace, joined by a bridge in a
//! "switch" namespace, so that each node has its own interfaces, routing tables and firewall
//! — what the ensemble VPN needs to be tried (and tested) on one machine. Needs root and
//! iproute2. The CLI reaches a node's REST API by running itself inside the node's
//! namespace (`ip netns exec`), since the API only listens on that namespace's loopback.
//!
//! With `--nat`, chosen nodes sit behind a home router of their own instead (a namespace
//! between the bridge and the node, see [`NatKind`]), for trying relays and hole punching.
//! With `--wan`, a node's (or its router's) link to the bridge goes through a userspace link
//! emulator (`nunet_linkem`) in a namespace of its own, adding delay, jitter and loss.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};
use nunet_linkem::LinkParams;
use serde_json::Value;

/// What stands between a node and the devnet's public segment (`--nat N=KIND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// A home router that keeps the node's source port for every destination
    /// (endpoint-independent mapping, iptables `MASQUERADE`) and drops unsolicited inbound
    /// packets: hole punching works through it.
    Cone,
    /// A router that maps every connection to a random port (`MASQUERADE --random-fully`),
    /// like a symmetric NAT: hole punching fails, peers stay on the relay.
    Symmetric,
    /// No NAT: the node has a public address, but its firewall drops every inbound
    /// connection it did not start.
    Firewall,
}

impl std::str::FromStr for NatKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cone" => Ok(NatKind::Cone),
            "symmetric" => Ok(NatKind::Symmetric),
            "firewall" => Ok(NatKind::Firewall),
            _ => bail!("unknown NAT kind {s:?}: cone, symmetric or firewall"),
        }
    }
}

impl NatKind {
    /// The spelling `--nat` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            NatKind::Cone => "cone",
            NatKind::Symmetric => "symmetric",
            NatKind::Firewall => "firewall",
        }
    }
}

/// Names and addresses of one namespace devnet.
pub struct Layout {
    /// Namespace holding the bridge.
    pub switch: String,
    /// One namespace per node, index 0 = node-1.
    pub nodes: Vec<String>,
    /// Third octet of the nodes' 172.31.x.0/24 LAN.
    pub lan: u8,
    /// What stands in front of each node (index 0 = node-1); `None`: nothing.
    pub nat: Vec<Option<NatKind>>,
    /// The emulated WAN link between each node (or its router) and the switch; `None`: a
    /// plain veth pair.
    pub wan: Vec<Option<LinkParams>>,
}

impl Layout {
    /// A fresh layout for `n` nodes with a random tag (so devnets do not clash).
    pub fn new(n: usize, nat: &[(usize, NatKind)], wan: Vec<Option<LinkParams>>) -> Self {
        let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        Self {
            switch: format!("nunet-dev-{tag}-sw"),
            nodes: (1..=n).map(|i| format!("nunet-dev-{tag}-{i}")).collect(),
            lan: (rand::random::<u8>() % 250) + 1,
            nat: (1..=n)
                .map(|i| nat.iter().find(|(j, _)| *j == i).map(|(_, k)| *k))
                .collect(),
            wan,
        }
    }

    /// The namespace holding node `i`'s emulated WAN link, if it has one.
    pub fn wire(&self, i: usize) -> Option<String> {
        self.wan[i - 1]
            .is_some()
            .then(|| format!("{}-w", self.nodes[i - 1]))
    }

    /// Node `i`'s (1-based) address on the public segment: its own, or its router's.
    pub fn public_addr(&self, i: usize) -> String {
        format!("172.31.{}.{}", self.lan, i + 1)
    }

    /// The address node `i` (1-based) itself has: on the public segment, or on its home
    /// network `10.i.0.0/24` behind a NAT router.
    pub fn addr(&self, i: usize) -> String {
        match self.nat[i - 1] {
            Some(NatKind::Cone | NatKind::Symmetric) => format!("10.{i}.0.2"),
            _ => self.public_addr(i),
        }
    }

    /// The namespace of node `i`'s router, if it sits behind NAT.
    pub fn router(&self, i: usize) -> Option<String> {
        matches!(self.nat[i - 1], Some(NatKind::Cone | NatKind::Symmetric))
            .then(|| format!("{}-r{i}", self.nodes[i - 1]))
    }

    /// Every namespace of the devnet: links, routers, nodes, then the switch.
    pub fn all_namespaces(&self) -> Vec<String> {
        let wires = (1..=self.nodes.len()).filter_map(|i| self.wire(i));
        let routers = (1..=self.nodes.len()).filter_map(|i| self.router(i));
        wires
            .chain(routers)
            .chain(self.nodes.iter().cloned())
            .chain([self.switch.clone()])
            .collect()
    }
}

/// Runs `iptables` (or `sysctl`, …) inside `ns`.
fn in_ns(ns: &str, cmd: &[&str]) -> Result<()> {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .context("running `ip netns exec`")?;
    if !o.status.success() {
        bail!(
            "`{}` in {ns} failed: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// Drops what arrives on `dev` unless it belongs to a connection started from inside.
fn drop_unsolicited(ns: &str, chain: &str, dev: &str) -> Result<()> {
    in_ns(
        ns,
        &[
            "iptables",
            "-A",
            chain,
            "-i",
            dev,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ],
    )?;
    in_ns(ns, &["iptables", "-A", chain, "-i", dev, "-j", "DROP"])
}

/// Connects interface `dev` of namespace `ns` (node `i`'s, or its router's) to the switch:
/// a veth pair into the bridge, or, when node `i` has an emulated WAN link, a veth pair into
/// its link namespace (`sw0`), whose other veth (`nd0`) leads to `dev`; the emulator
/// forwards between `sw0` and `nd0` (see [`spawn_links`]).
fn uplink(l: &Layout, i: usize, ns: &str, dev: &str) -> Result<()> {
    let port = format!("p{i}");
    match l.wire(i) {
        None => ip(&[
            "-n", &l.switch, "link", "add", &port, "type", "veth", "peer", "name", dev, "netns", ns,
        ])?,
        Some(wire) => {
            ip(&["netns", "add", &wire])?;
            ip(&[
                "-n", &l.switch, "link", "add", &port, "type", "veth", "peer", "name", "sw0",
                "netns", &wire,
            ])?;
            ip(&[
                "-n", &wire, "link", "add", "nd0", "type", "veth", "peer", "name", dev, "netns", ns,
            ])?;
            for d in ["sw0", "nd0", "lo"] {
                ip(&["-n", &wire, "link", "set", d, "up"])?;
            }
        }
    }
    ip(&["-n", &l.switch, "link", "set", &port, "master", "br0", "up"])
}

/// Starts one link emulator (`nunet devnet link`) per emulated WAN link, inside its link
/// namespace, logging to `<dir>/link-<i>.log`; their pids.
pub fn spawn_links(l: &Layout, dir: &Path) -> Result<Vec<u32>> {
    let exe = std::env::current_exe()?;
    let mut pids = Vec::new();
    for i in 1..=l.nodes.len() {
        let (Some(wire), Some(params)) = (l.wire(i), l.wan[i - 1]) else {
            continue;
        };
        let log = std::fs::File::create(dir.join(format!("link-{i}.log")))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{wire}"))
            .arg("--")
            .arg(&exe)
            .args([
                "devnet",
                "link",
                "--a",
                "sw0",
                "--b",
                "nd0",
                "--seed",
                &i.to_string(),
            ])
            .arg("--params")
            .arg(params.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the link emulator")?;
        pids.push(child.id());
    }
    Ok(pids)
}

/// Puts node `i` (namespace `node`, 1-based) behind a NAT router of kind `kind`: a router
/// namespace plugged into the bridge as `wan` (the node's public address) and into the
/// node as its `lan` gateway.
fn add_router(l: &Layout, i: usize, kind: NatKind) -> Result<()> {
    let node = &l.nodes[i - 1];
    let Some(router) = l.router(i) else {
        return Ok(());
    };
    ip(&["netns", "add", &router])?;
    uplink(l, i, &router, "wan")?;
    ip(&[
        "-n", &router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", node,
    ])?;
    let wan = format!("{}/24", l.public_addr(i));
    let gw = format!("10.{i}.0.1");
    ip(&["-n", &router, "addr", "add", &wan, "dev", "wan"])?;
    ip(&[
        "-n",
        &router,
        "addr",
        "add",
        &format!("{gw}/24"),
        "dev",
        "lan",
    ])?;
    for dev in ["wan", "lan", "lo"] {
        ip(&["-n", &router, "link", "set", dev, "up"])?;
    }
    ip(&[
        "-n",
        node,
        "addr",
        "add",
        &format!("{}/24", l.addr(i)),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", node, "link", "set", "eth0", "up"])?;
    ip(&["-n", node, "link", "set", "lo", "up"])?;
    ip(&["-n", node, "route", "add", "default", "via", &gw])?;
    in_ns(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    let mut masq = vec![
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "wan",
        "-j",
        "MASQUERADE",
    ];
    if kind == NatKind::Symmetric {
        masq.push("--random-fully");
    }
    in_ns(&router, &masq)?;
    // Like a home router: nothing from outside reaches the router or the home network
    // unless a connection from inside opened the way.
    drop_unsolicited(&router, "INPUT", "wan")?;
    drop_unsolicited(&router, "FORWARD", "wan")
}

fn ip(args: &[&str]) -> Result<()> {
    let o = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (install iproute2)")?;
    if !o.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// Creates the namespaces, the bridge and one veth per node.
pub fn create(l: &Layout) -> Result<()> {
    if !nix_root() {
        bail!("`devnet up --netns` creates network namespaces: run it as root");
    }
    let r = (|| {
        ip(&["netns", "add", &l.switch])?;
        ip(&["-n", &l.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &l.switch, "link", "set", "br0", "up"])?;
        for (i, ns) in l.nodes.iter().enumerate() {
            ip(&["netns", "add", ns])?;
            match l.nat[i] {
                Some(kind @ (NatKind::Cone | NatKind::Symmetric)) => {
                    add_router(l, i + 1, kind)?;
                    continue;
                }
                Some(NatKind::Firewall) => {}
                None => {}
            }
            uplink(l, i + 1, ns, "eth0")?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", l.addr(i + 1)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            if l.nat[i] == Some(NatKind::Firewall) {
                drop_unsolicited(ns, "INPUT", "eth0")?;
            }
        }
        Ok(())
    })();
    if r.is_err() {
        destroy(&l.all_namespaces());
    }
    r
}

/// Deletes the namespaces (and with them every interface inside). Missing ones are skipped.
pub fn destroy(namespaces: &[String]) {
    for ns in namespaces {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
}

fn nix_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs this CLI inside `ns` with `home` as its node home.
pub fn cli(ns: &str, home: &Path, pass_file: &Path, args: &[&str]) -> Result<Output> {
    let exe = std::env::current_exe()?;
    Ok(Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(args)
        .env("NUNET_HOME", home)
        .env("DMS_PASSPHRASE_FILE", pass_file)
        .env_remove("DMS_PASSPHRASE")
        .env_remove("NUNET_CONFIG")
        .stdin(Stdio::null())
        .output()?)
}

/// Number of peers node `home` (inside `ns`) is connected to, via `/dms/node/peers/list`.
pub fn peer_count(ns: &str, home: &Path, pass_file: &Path) -> Result<usize> {
    let o = cli(
        ns,
        home,
        pass_file,
        &["actor", "cmd", "--json", "/dms/node/peers/list"],
    )?;
    if !o.status.success() {
        bail!("{}", String::from_utf8_lossy(&o.stderr).trim());
    }
    let v: Value = serde_json::from_slice(&o.stdout)?;
    Ok(v["peers"].as_array().map(Vec::len).unwrap_or(0))
}
