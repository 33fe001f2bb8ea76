//! `nunet devnet`: a local multi-node network on loopback, with an organisation as root of
//! trust, for trying things out and for the multi-process tests. With `--netns` every node
//! gets its own network namespace (see [`netns`]), which the ensemble VPN needs.

mod netns;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use nunet_capability::{Anchors, Capability, ContextFile, TokenSpec, now_ns};
use nunet_did::{KdfParams, Keypair, Keystore};
use serde_json::{Value, json};

use crate::client::{self, Api, Outcome};
use crate::runinfo::{RunInfo, alive};

#[derive(Subcommand, Debug)]
pub enum DevnetCmd {
    /// Create N node homes, an org root of trust and a `user` context, and start N daemons.
    Up {
        /// Number of nodes (1 to 200).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Directory for everything the devnet creates.
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        /// First port: node i uses REST base+10i and p2p base+10i+1 (TCP and QUIC).
        /// 0: every daemon binds ports the kernel picks and reports them in
        /// `<node home>/data/run.json`; devnet.json records them (what tests running in
        /// parallel should use). Ignored with `--netns`.
        #[arg(long, default_value_t = 19000)]
        base_port: u16,
        /// Put every node in its own network namespace (root only), on a bridged LAN
        /// 172.31.x.0/24, with the ensemble VPN enabled. Talk to node i with
        /// `ip netns exec <its namespace> nunet …` (printed at the end). Daemons enter only
        /// the network namespace and share the host's mount namespace (volumes).
        #[arg(long)]
        netns: bool,
        /// With `--netns`: put node N behind KIND, as `N=KIND` (repeat, or separate with
        /// commas). `cone`: a home router that keeps source ports and drops unsolicited
        /// packets (hole punching works); `symmetric`: a router that picks a random port per
        /// connection (peers stay on the relay); `firewall`: a public address whose firewall
        /// drops inbound connections. Node 1 stays public; every public node then serves as
        /// a relay and bootstrap peer of the others.
        #[arg(long, value_delimiter = ',', value_name = "N=KIND", requires = "netns")]
        nat: Vec<String>,
        /// With `--netns`: send every node's traffic (or its router's) to the switch through
        /// a userspace link emulator, `delay=40ms,jitter=10ms,loss=1%` in each direction
        /// (keys optional). A round trip between two nodes crosses four such delays.
        /// `N:PARAMS` sets node N's link alone; repeat the flag for several.
        #[arg(long, value_name = "[N:]PARAMS", requires = "netns")]
        wan: Vec<String>,
    },
    /// (devnet internal) Forward frames between two interfaces of this namespace with delay,
    /// jitter and loss, until one goes away: the emulated WAN link of `devnet up --wan`.
    #[command(hide = true)]
    Link {
        /// One interface.
        #[arg(long)]
        a: String,
        /// The other.
        #[arg(long)]
        b: String,
        /// `delay=…,jitter=…,loss=…%`, each direction.
        #[arg(long)]
        params: nunet_linkem::LinkParams,
        /// Seed of the jitter and loss draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Show each node: process, API health and connected peers.
    Status {
        /// Devnet directory.
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
    },
    /// Stop the daemons (SIGTERM, then wait).
    Down {
        /// Devnet directory.
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        /// Also delete the directory.
        #[arg(long)]
        purge: bool,
    },
}

const CAPS: [&str; 3] = ["/public", "/broadcast", "/dms"];

pub fn run(cmd: DevnetCmd) -> Result<i32> {
    match cmd {
        DevnetCmd::Up {
            nodes,
            dir,
            base_port,
            netns,
            nat,
            wan,
        } => {
            let nat = parse_nat(&nat, nodes)?;
            let wan = parse_wan(&wan, nodes)?;
            up(nodes, &dir, base_port, netns, &nat, wan)
        }
        DevnetCmd::Link { a, b, params, seed } => {
            eprintln!("link {a} <-> {b}: {params}");
            Err(nunet_linkem::run(&a, &b, params, seed).into())
        }
        DevnetCmd::Status { dir } => status(&dir),
        DevnetCmd::Down { dir, purge } => down(&dir, purge),
    }
}

fn keystore(home: &Path) -> Result<Keystore> {
    let ks = Keystore::open(home.join("key"))?;
    Ok(
        if std::env::var_os("NUNET_INSECURE_FAST_KDF").is_some_and(|v| v == "1") {
            ks.with_kdf(KdfParams::INSECURE_FAST)
        } else {
            ks
        },
    )
}

fn spec(sub: &nunet_did::Did, exp: u64) -> Result<TokenSpec> {
    Ok(TokenSpec {
        sub: sub.clone(),
        aud: None,
        cap: CAPS
            .iter()
            .map(|c| c.parse())
            .collect::<Result<Vec<Capability>, _>>()?,
        topic: vec!["/nunet".parse()?],
        exp,
        depth: 0,
    })
}

fn read_pid(home: &Path) -> Option<u32> {
    fs::read_to_string(home.join("nunet.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `--nat` values: `N=KIND` for nodes 2..=n, each node at most once.
fn parse_nat(specs: &[String], n: usize) -> Result<Vec<(usize, netns::NatKind)>> {
    let mut out: Vec<(usize, netns::NatKind)> = Vec::new();
    for spec in specs {
        let (node, kind) = spec
            .split_once('=')
            .with_context(|| format!("--nat {spec:?}: write N=KIND, e.g. 2=cone"))?;
        let node: usize = node
            .trim()
            .parse()
            .with_context(|| format!("--nat {spec:?}: {node:?} is not a node number"))?;
        if !(2..=n).contains(&node) {
            bail!(
                "--nat {spec:?}: node {node} is not one of nodes 2..={n} (node 1 stays public: it is the bootstrap peer)"
            );
        }
        if out.iter().any(|(j, _)| *j == node) {
            bail!("--nat: node {node} is given twice");
        }
        out.push((node, kind.trim().parse()?));
    }
    Ok(out)
}

/// `--wan` values: `PARAMS` for every node, then `N:PARAMS` for node N.
fn parse_wan(specs: &[String], n: usize) -> Result<Vec<Option<nunet_linkem::LinkParams>>> {
    let mut out = vec![None; n];
    let (each, one): (Vec<&String>, Vec<&String>) = specs.iter().partition(|s| {
        s.split_once(':')
            .is_none_or(|(pre, _)| pre.parse::<usize>().is_err())
    });
    for spec in each {
        let p = spec.parse()?;
        out.iter_mut().for_each(|o| *o = Some(p));
    }
    for spec in one {
        let Some((node, params)) = spec.split_once(':') else {
            continue;
        };
        let node: usize = node.parse()?;
        if !(1..=n).contains(&node) {
            bail!("--wan {spec:?}: there is no node {node} (nodes 1..={n})");
        }
        out[node - 1] = Some(params.parse()?);
    }
    Ok(out)
}

/// Most nodes in one devnet (`bench/scale.sh` runs 100 release daemons on 2 cores).
const MAX_NODES: usize = 200;

fn up(
    n: usize,
    dir: &Path,
    base: u16,
    in_netns: bool,
    nat: &[(usize, netns::NatKind)],
    wan: Vec<Option<nunet_linkem::LinkParams>>,
) -> Result<i32> {
    if !(1..=MAX_NODES).contains(&n) {
        bail!("--nodes must be between 1 and {MAX_NODES}");
    }
    if base != 0 && base as usize + 10 * n + 2 > 65535 {
        bail!("--base-port too high for {n} nodes");
    }
    if dir.join("devnet.json").exists() {
        let running = (1..=MAX_NODES)
            .filter_map(|i| read_pid(&dir.join(format!("node-{i}"))))
            .any(alive);
        if running {
            bail!(
                "a devnet is already running in {} (stop it with `nunet devnet down --dir {}`)",
                dir.display(),
                dir.display()
            );
        }
        bail!(
            "{} already holds a devnet; remove it or use `nunet devnet down --purge`",
            dir.display()
        );
    }
    fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let pass = format!("{:032x}", rand::random::<u128>());
    let pass_file = dir.join("passphrase");
    fs::write(&pass_file, &pass)?;
    fs::set_permissions(
        &pass_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let exp = now_ns() + 30 * 24 * 3600 * 1_000_000_000;
    let now = now_ns();
    let layout = in_netns.then(|| netns::Layout::new(n, nat, wan));
    let mut link_pids = Vec::new();
    if let Some(l) = &layout {
        netns::create(l)?;
        link_pids = netns::spawn_links(l, &dir).inspect_err(|_| {
            netns::destroy(&l.all_namespaces());
        })?;
    }

    // Root of trust and the user.
    let org = keystore(&dir.join("org"))?.create("org", &pass)?;
    ContextFile::new(dir.join("org/cap")).create("org", &Anchors::new(org.did()))?;
    let org_ctx = Anchors::new(org.did());
    let user = Keypair::generate();
    let mut user_ctx = Anchors::new(user.did());
    user_ctx.add_provide(org_ctx.grant(&org, &spec(&user.did(), exp)?)?, now)?;

    let mut plans = Vec::new();
    for i in 1..=n {
        let home = dir.join(format!("node-{i}"));
        let ks = keystore(&home)?;
        let key = ks.create("dms", &pass)?;
        ks.save("user", &user, &pass)?;
        let mut ctx = Anchors::new(key.did());
        ctx.add_root(user.did());
        ctx.add_provide(org_ctx.grant(&org, &spec(&key.did(), exp)?)?, now)?;
        ctx.add_require(ctx.grant(&key, &spec(&org.did(), exp)?)?, now)?;
        let cf = ContextFile::new(home.join("cap"));
        cf.create("dms", &ctx)?;
        cf.create("user", &user_ctx)?;
        // Port 0: the daemon binds whatever the kernel gives it and reports it in run.json;
        // nothing picks a "free" port here for the daemon to bind later (another process
        // could take it in between).
        let (rest, p2p) = if layout.is_some() {
            (9999, 4001)
        } else if base == 0 {
            (0, 0)
        } else {
            (base + 10 * i as u16, base + 10 * i as u16 + 1)
        };
        plans.push(Plan {
            name: format!("node-{i}"),
            home,
            did: key.did().to_string(),
            peer: key.public().peer_id().to_base58(),
            host: layout
                .as_ref()
                .map(|l| l.addr(i))
                .unwrap_or_else(|| "127.0.0.1".into()),
            ns: layout.as_ref().map(|l| l.nodes[i - 1].clone()),
            nat: layout.as_ref().and_then(|l| l.nat[i - 1]),
            relay: !nat.is_empty() && layout.as_ref().is_some_and(|l| l.nat[i - 1].is_none()),
            rest,
            p2p,
        });
    }
    let manifest_of = |nodes: Vec<Value>| {
        json!({"org": org.did().to_string(), "user": user.did().to_string(), "nodes": nodes,
            "switch_netns": layout.as_ref().map(|l| l.switch.clone()),
            "namespaces": layout.as_ref().map(|l| l.all_namespaces()),
            "link_pids": link_pids})
    };
    // Written before anything starts, so `devnet down` finds every node if starting fails;
    // written again with the addresses the nodes report.
    write_manifest(
        &dir,
        &manifest_of(plans.iter().map(|p| p.manifest_entry(None)).collect()),
    )?;

    let image_root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    fs::create_dir_all(image_root.join(SHARED_DIR))?;
    // Every daemon starts at once and they share the machine's cores: a large devnet gets
    // longer (100 nodes on 2 cores take about a minute).
    let deadline = Instant::now() + Duration::from_secs(30 + n as u64);
    let start = |p: &Plan, bootstrap: &[String]| -> Result<()> {
        p.write_config(bootstrap, &image_root, layout.is_some())?;
        p.spawn(&pass_file)
    };
    // Node 1 first: the others bootstrap from the address it actually bound (first in
    // their list, so they learn the network from it). Nodes behind NAT come last and
    // bootstrap from every public node (the relays they may reserve slots on).
    start(&plans[0], &[])?;
    let first = wait_report(&dir, &plans[0], deadline)?;
    let boot = first
        .tcp_addr(&plans[0].host)
        .map(str::to_string)
        .context("node-1 reported no TCP listen address")?;
    let mut reports = vec![Some(first)];
    reports.resize_with(n, || None);
    for public in [true, false] {
        let batch: Vec<usize> = (1..n)
            .filter(|&i| plans[i].nat.is_none() == public)
            .collect();
        let relays: Vec<String> = if public {
            vec![boot.clone()]
        } else {
            plans
                .iter()
                .zip(&reports)
                .filter(|(p, _)| p.nat.is_none())
                .filter_map(|(p, r)| r.as_ref()?.tcp_addr(&p.host).map(str::to_string))
                .collect()
        };
        for &i in &batch {
            start(&plans[i], &relays)?;
        }
        for &i in &batch {
            reports[i] = Some(wait_report(&dir, &plans[i], deadline)?);
        }
    }
    let reports: Vec<RunInfo> = reports.into_iter().flatten().collect();
    let p2p: Vec<String> = plans
        .iter()
        .zip(&reports)
        .map(|(p, r)| r.tcp_addr(&p.host).unwrap_or_default().to_string())
        .collect();
    if base == 0 && layout.is_none() && n > 1 {
        // A node restarted later binds new ports, so the others' record of its address goes
        // stale: every node lists all the others (node-1 first), and a restarted one finds
        // the network through any node that kept running.
        for (i, p) in plans.iter().enumerate() {
            let others: Vec<String> = p2p
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| a.clone())
                .collect();
            p.write_config(&others, &image_root, false)?;
        }
    }
    let nodes: Vec<Value> = plans
        .iter()
        .zip(&reports)
        .map(|(p, r)| p.manifest_entry(Some(r)))
        .collect();
    let manifest = manifest_of(nodes.clone());
    write_manifest(&dir, &manifest)?;

    for node in &nodes {
        let home = PathBuf::from(node["home"].as_str().unwrap_or_default());
        let api = Api::new(
            "127.0.0.1",
            node["rest_port"].as_u64().unwrap_or(0) as u16,
            Duration::from_secs(2),
        );
        loop {
            let healthy = match node["netns"].as_str() {
                Some(ns) => netns::peer_count(ns, &home, &pass_file).is_ok(),
                None => api.get("/health").is_ok(),
            };
            if healthy {
                break;
            }
            let dead = read_pid(&home).is_some_and(|p| !alive(p));
            if dead || Instant::now() > deadline {
                return Err(failed(
                    &dir,
                    &home,
                    node["name"].as_str().unwrap_or_default(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Ready = every node is connected to the bootstrap node (node-1 sees all others), so the
    // first cross-node call does not race the initial dials.
    if n > 1 {
        let first = &nodes[0];
        let home = PathBuf::from(first["home"].as_str().unwrap_or_default());
        let api = Api::new(
            "127.0.0.1",
            first["rest_port"].as_u64().unwrap_or(0) as u16,
            Duration::from_secs(5),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let count = match first["netns"].as_str() {
                Some(ns) => netns::peer_count(ns, &home, &pass_file),
                None => peer_count(&home, &api, &pass),
            };
            match count {
                Ok(c) if c + 1 >= n => break,
                _ if Instant::now() > deadline => {
                    eprintln!(
                        "warning: node-1 does not see all {} other nodes yet; continuing",
                        n - 1
                    );
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
    println!(
        "devnet up in {}: org {} user {}",
        dir.display(),
        manifest["org"].as_str().unwrap_or_default(),
        manifest["user"].as_str().unwrap_or_default()
    );
    for node in &nodes {
        println!(
            "{}  {}  rest {}  p2p {}",
            node["name"].as_str().unwrap_or_default(),
            node["did"].as_str().unwrap_or_default(),
            node["rest"].as_str().unwrap_or_default(),
            node["p2p"].as_str().unwrap_or_default()
        );
    }
    if let Some(ns) = nodes[0]["netns"].as_str() {
        println!(
            "\nnodes run in network namespaces; reach node-1 with:\n  export NUNET_HOME={}/node-1 DMS_PASSPHRASE_FILE={}\n  ip netns exec {ns} nunet actor cmd /dms/node/peers/list",
            dir.display(),
            pass_file.display()
        );
        println!("stop with: nunet devnet down --dir {}", dir.display());
        return Ok(0);
    }
    println!(
        "\nuse a node as the user:\n  export NUNET_HOME={}/node-1 DMS_PASSPHRASE_FILE={}",
        dir.display(),
        pass_file.display()
    );
    println!(
        "  nunet actor cmd /dms/node/peers/list\n  nunet actor cmd -d {} /public/status",
        nodes
            .last()
            .and_then(|n| n["did"].as_str())
            .unwrap_or_default()
    );
    println!("stop with: nunet devnet down --dir {}", dir.display());
    Ok(0)
}

/// The devnet's directory whose subdirectories ensembles may mount as `local` volumes
/// (`job.volume_roots` of every node).
pub const SHARED_DIR: &str = "shared";

/// One node of a devnet being created.
struct Plan {
    name: String,
    home: PathBuf,
    did: String,
    peer: String,
    /// Address its p2p listeners bind (loopback, or its namespace's LAN address).
    host: String,
    /// Its network namespace (`--netns`).
    ns: Option<String>,
    /// What stands between it and the public segment (`--nat`).
    nat: Option<netns::NatKind>,
    /// Serve as a circuit relay (the public nodes of a devnet with `--nat`).
    relay: bool,
    /// Configured REST and p2p ports (0: the kernel picks when the daemon binds).
    rest: u16,
    p2p: u16,
}

/// Free disk (GiB) each devnet node leaves to the host (`onboarding.reserve_disk_gb`).
pub const DEVNET_RESERVE_DISK_GB: f64 = 1.0;

impl Plan {
    fn write_config(&self, bootstrap: &[String], image_root: &Path, subnet: bool) -> Result<()> {
        let (host, p2p) = (&self.host, self.p2p);
        let config = json!({
            "rest": {"port": self.rest},
            "p2p": {"listen_address": [format!("/ip4/{host}/tcp/{p2p}"), format!("/ip4/{host}/udp/{p2p}/quic-v1")], "bootstrap_peers": bootstrap,
                "relay_server": self.relay,
                // A namespace devnet is a private network of its own: AutoNAT must work
                // between its (private) addresses to tell nodes behind NAT from the others.
                "nat_probe_private_addrs": subnet},
            "general": {"env": "devnet"},
            "subnet": {"enabled": subnet},
            // Ensembles of a devnet name VM images and WASM modules under its directory, and
            // mount the directories under its `shared/` as local volumes.
            "job": {
                "image_roots": [image_root.display().to_string()],
                "volume_roots": [image_root.join(SHARED_DIR).display().to_string()],
                // Its nodes and any GlusterFS server a test runs beside them are one machine.
                "glusterfs_servers": ["*"],
                // …and any object store a test runs beside them.
                "s3_private_endpoints": ["*"],
            },
            // Every node of a devnet onboards a share of the same filesystem, and a devnet
            // writes little: a production provider's 5 GiB of headroom would make a laptop
            // with a few GiB free unable to run one.
            "onboarding": {"reserve_disk_gb": DEVNET_RESERVE_DISK_GB},
        });
        nunet_config::write_file(&self.home.join(nunet_config::load::FILE_NAME), &config)?;
        Ok(())
    }

    fn spawn(&self, pass_file: &Path) -> Result<()> {
        let exe = std::env::current_exe()?;
        let log = fs::File::create(self.home.join("nunet.log"))?;
        let mut cmd = match &self.ns {
            // Only the network namespace: the daemon stays in the host's mount namespace, as
            // a provider does in production, so what it mounts for volumes (GlusterFS, named
            // volume images) is what dockerd sees (`ip netns exec` would give it a private
            // mount namespace).
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let child = cmd
            .args(["run", "-c", "dms"])
            .env("NUNET_HOME", &self.home)
            .env("DMS_PASSPHRASE_FILE", pass_file)
            .env_remove("DMS_PASSPHRASE")
            .env_remove("NUNET_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting nunet run")?;
        fs::write(self.home.join("nunet.pid"), child.id().to_string())?;
        Ok(())
    }

    /// Its entry in devnet.json: the configured ports until it reported what it bound.
    fn manifest_entry(&self, report: Option<&RunInfo>) -> Value {
        let rest = report.map_or(self.rest, |r| r.rest.port());
        let p2p = report
            .and_then(|r| r.tcp_addr(&self.host))
            .map(str::to_string)
            .unwrap_or_else(|| format!("/ip4/{}/tcp/{}/p2p/{}", self.host, self.p2p, self.peer));
        json!({"name": self.name, "home": self.home, "did": self.did, "peer_id": self.peer,
            "rest": format!("http://127.0.0.1:{rest}/api/v1"), "rest_port": rest, "p2p": p2p,
            "netns": self.ns, "nat": self.nat.map(netns::NatKind::as_str), "relay": self.relay})
    }
}

/// The data directory of a node home, as its daemon resolves it (same config, same env).
fn data_dir(home: &Path) -> Result<PathBuf> {
    Ok(nunet_config::load(home, None, &|k| std::env::var(k).ok())?
        .config
        .general
        .data_dir)
}

/// Waits until node `p`'s daemon reported what it bound (`<data_dir>/run.json`); stops the
/// devnet and fails with the end of the node's log when it dies or `deadline` passes.
fn wait_report(dir: &Path, p: &Plan, deadline: Instant) -> Result<RunInfo> {
    let data = data_dir(&p.home)?;
    loop {
        if let Some(r) = RunInfo::read(&data)?.filter(|r| alive(r.pid)) {
            return Ok(r);
        }
        let dead = read_pid(&p.home).is_none_or(|pid| !alive(pid));
        if dead || Instant::now() > deadline {
            return Err(failed(dir, &p.home, &p.name));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the devnet after node `name` failed to start; the error quotes its log.
fn failed(dir: &Path, home: &Path, name: &str) -> anyhow::Error {
    let log = fs::read_to_string(home.join("nunet.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(15).collect();
    let _ = down(dir, false);
    anyhow::anyhow!(
        "{name} did not start:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

fn write_manifest(dir: &Path, m: &Value) -> Result<()> {
    let tmp = dir.join(".devnet.json.tmp");
    fs::write(&tmp, serde_json::to_string_pretty(m)?)?;
    fs::rename(&tmp, dir.join("devnet.json"))?;
    Ok(())
}

fn manifest(dir: &Path) -> Result<Value> {
    let text = fs::read_to_string(dir.join("devnet.json")).with_context(|| {
        format!(
            "no devnet in {} (start one with `nunet devnet up`)",
            dir.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

fn status(dir: &Path) -> Result<i32> {
    let m = manifest(dir)?;
    let pass = fs::read_to_string(dir.join("passphrase"))?;
    let mut code = 0;
    for node in m["nodes"].as_array().cloned().unwrap_or_default() {
        let home = PathBuf::from(node["home"].as_str().unwrap_or_default());
        let pid = read_pid(&home);
        let running = pid.is_some_and(alive);
        // A node restarted since `devnet up` may have bound another port (`--base-port 0`).
        let port = data_dir(&home)
            .ok()
            .and_then(|d| RunInfo::read(&d).ok().flatten())
            .filter(|r| alive(r.pid))
            .map(|r| r.rest.port())
            .unwrap_or(node["rest_port"].as_u64().unwrap_or(0) as u16);
        let api = Api::new("127.0.0.1", port, Duration::from_secs(5));
        let peers = if running {
            match node["netns"].as_str() {
                Some(ns) => netns::peer_count(ns, &home, &dir.join("passphrase")),
                None => peer_count(&home, &api, &pass),
            }
        } else {
            Err(anyhow::anyhow!("not running"))
        };
        match peers {
            Ok(p) => println!(
                "{}  pid {}  up  peers {p}  {}",
                node["name"].as_str().unwrap_or_default(),
                pid.unwrap_or(0),
                node["did"].as_str().unwrap_or_default()
            ),
            Err(e) => {
                code = 1;
                println!(
                    "{}  {}  {e:#}",
                    node["name"].as_str().unwrap_or_default(),
                    if running { "up" } else { "down" }
                );
            }
        }
    }
    Ok(code)
}

fn peer_count(home: &Path, api: &Api, pass: &str) -> Result<usize> {
    let key = Keystore::open(home.join("key"))?.load("user", pass.trim())?;
    let anchors = ContextFile::new(home.join("cap")).load("user")?;
    let local = api.handle()?;
    let env = client::sign_envelope(
        &key,
        &anchors,
        &local,
        Some(local.clone()),
        "/dms/node/peers/list",
        &Value::Null,
        Duration::from_secs(5),
        None,
    )?;
    match client::post_envelope(api, "invoke", &env)? {
        Ok(Outcome::Value(v)) => Ok(v["peers"].as_array().map(|a| a.len()).unwrap_or(0)),
        Ok(_) => Ok(0),
        Err(e) => bail!("{}", e.message),
    }
}

/// Force-removes every Docker container labelled with one of the devnet's node DIDs
/// (allocations and their network sandboxes). Returns how many; 0 without Docker.
fn remove_containers(m: &Value) -> usize {
    let mut ids = Vec::new();
    for node in m["nodes"].as_array().into_iter().flatten() {
        let Some(did) = node["did"].as_str() else {
            continue;
        };
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=nunet.node={did}")])
            .stderr(Stdio::null())
            .output();
        if let Ok(o) = out {
            ids.extend(
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_string),
            );
        }
    }
    if ids.is_empty() {
        return 0;
    }
    let ok = Command::new("docker")
        .arg("rm")
        .arg("-f")
        .args(&ids)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok { ids.len() } else { 0 }
}

/// Unmounts everything mounted under `dir` (last mounted first; lazily when busy): how many.
fn unmount_under(dir: &Path) -> usize {
    let Ok(dir) = dir.canonicalize() else {
        return 0;
    };
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| !m.contains('\\') && Path::new(m).starts_with(&dir))
        .collect();
    points.reverse();
    points
        .iter()
        .filter(|m| {
            Command::new("umount")
                .arg("-l")
                .arg(m)
                .status()
                .is_ok_and(|s| s.success())
        })
        .count()
}

fn down(dir: &Path, purge: bool) -> Result<i32> {
    let m = manifest(dir)?;
    let mut pids = Vec::new();
    for node in m["nodes"].as_array().cloned().unwrap_or_default() {
        let home = PathBuf::from(node["home"].as_str().unwrap_or_default());
        if let Some(pid) = read_pid(&home).filter(|p| alive(*p)) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            pids.push((pid, home));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (pid, home) in &pids {
        while alive(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(*pid) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = fs::remove_file(home.join("nunet.pid"));
    }
    // A devnet is disposable: what its nodes ran goes with it (a stopped daemon leaves its
    // containers running on purpose, to adopt them when it restarts).
    let removed = remove_containers(&m);
    if removed > 0 {
        println!("removed {removed} container(s) of the devnet's nodes");
    }
    // Its volumes too (a stopped daemon leaves them mounted): nothing of the devnet stays
    // mounted, and a purge never deletes through a mount.
    let unmounted = unmount_under(dir);
    if unmounted > 0 {
        println!("unmounted {unmounted} volume(s) of the devnet's nodes");
    }
    for pid in m["link_pids"].as_array().into_iter().flatten() {
        if let Some(pid) = pid.as_u64() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    if let Some(all) = m["namespaces"].as_array() {
        let all: Vec<String> = all
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        netns::destroy(&all);
    } else if let Some(sw) = m["switch_netns"].as_str() {
        // Written before `namespaces` was recorded.
        let mut all: Vec<String> = m["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["netns"].as_str().map(str::to_string))
            .collect();
        all.push(sw.to_string());
        netns::destroy(&all);
    }
    println!("stopped {} node(s)", pids.len());
    if purge {
        fs::remove_dir_all(dir)?;
    }
    Ok(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::netns::NatKind;
    use super::*;

    fn specs(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn nat_specs_name_a_node_and_a_kind() {
        let got = parse_nat(&specs(&["2=cone", "3=symmetric", " 4 = firewall"]), 4).unwrap();
        assert_eq!(
            got,
            vec![
                (2, NatKind::Cone),
                (3, NatKind::Symmetric),
                (4, NatKind::Firewall)
            ]
        );
    }

    #[test]
    fn bad_nat_specs_say_what_is_wrong() {
        let err = |s: &[&str]| parse_nat(&specs(s), 3).unwrap_err().to_string();
        assert!(err(&["1=cone"]).contains("node 1 stays public"));
        assert!(err(&["4=cone"]).contains("nodes 2..=3"));
        assert!(err(&["2=full-cone"]).contains("cone, symmetric or firewall"));
        assert!(err(&["2cone"]).contains("N=KIND"));
        assert!(err(&["x=cone"]).contains("not a node number"));
        assert!(err(&["2=cone", "2=symmetric"]).contains("given twice"));
    }

    #[test]
    fn wan_specs_set_every_link_then_single_ones() {
        let w = parse_wan(&specs(&["2:delay=100ms", "delay=20ms,loss=1%"]), 3).unwrap();
        assert_eq!(w[0].unwrap().delay, Duration::from_millis(20));
        assert_eq!(w[1].unwrap().delay, Duration::from_millis(100));
        assert_eq!(
            w[1].unwrap().loss,
            0.0,
            "a node's own spec replaces the common one"
        );
        assert!((w[2].unwrap().loss - 0.01).abs() < 1e-12);
        assert!(
            parse_wan(&specs(&[]), 2)
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
        let err = parse_wan(&specs(&["4:delay=1ms"]), 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no node 4"), "{err}");
        let err = parse_wan(&specs(&["delay=fast"]), 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a duration"), "{err}");
    }

    #[test]
    fn nodes_behind_a_router_get_a_home_network_and_the_router_the_public_address() {
        let l = netns::Layout::new(
            4,
            &[(2, NatKind::Cone), (3, NatKind::Firewall)],
            vec![None; 4],
        );
        assert_eq!(l.addr(1), l.public_addr(1));
        assert_eq!(l.addr(2), "10.2.0.2");
        assert!(l.router(2).is_some());
        // A firewalled node keeps its public address and has no router.
        assert_eq!(l.addr(3), l.public_addr(3));
        assert!(l.router(3).is_none());
        assert_eq!(l.all_namespaces().len(), 4 + 1 + 1);
    }
}
