//! `nunet devnet up --netns`: every node in its own network namespace, joined by a bridge in a
//! "switch" namespace, so that each node has its own interfaces, routing tables and firewall
//! — what the ensemble VPN needs to be tried (and tested) on one machine. Needs root and
//! iproute2. The CLI reaches a node's REST API by running itself inside the node's
//! namespace (`ip netns exec`), since the API only listens on that namespace's loopback.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Names and addresses of one namespace devnet.
pub struct Layout {
    /// Namespace holding the bridge.
    pub switch: String,
    /// One namespace per node, index 0 = node-1.
    pub nodes: Vec<String>,
    /// Third octet of the nodes' 172.31.x.0/24 LAN.
    pub lan: u8,
}

impl Layout {
    /// A fresh layout for `n` nodes with a random tag (so devnets do not clash).
    pub fn new(n: usize) -> Self {
        let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        Self {
            switch: format!("nunet-dev-{tag}-sw"),
            nodes: (1..=n).map(|i| format!("nunet-dev-{tag}-{i}")).collect(),
            lan: (rand::random::<u8>() % 250) + 1,
        }
    }

    /// Node `i`'s (1-based) LAN address.
    pub fn addr(&self, i: usize) -> String {
        format!("172.31.{}.{}", self.lan, i + 1)
    }
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
            let port = format!("p{}", i + 1);
            ip(&[
                "-n", &l.switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            ip(&["-n", &l.switch, "link", "set", &port, "master", "br0", "up"])?;
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
        }
        Ok(())
    })();
    if r.is_err() {
        destroy(&l.switch, &l.nodes);
    }
    r
}

/// Deletes the namespaces (and with them every interface inside). Missing ones are skipped.
pub fn destroy(switch: &str, nodes: &[String]) {
    for ns in nodes.iter().map(String::as_str).chain([switch]) {
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
