//! Test bed for the subnet data path: network namespaces joined by a veth pair, each with a
//! tokio runtime whose threads live inside the namespace, a libp2p host and a
//! `SubnetService`. Everything created on the host is removed by Drop guards.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::{
    collections::BTreeMap,
    future::Future,
    net::Ipv4Addr,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId, identity::Keypair, multiaddr::Protocol};
use nunet_network::{NetConfig, Network};
use nunet_subnet::{DatagramConfig, SubnetService, SubnetSpec};

/// Overlay network used by the tests (each test has its own namespaces, so no clash).
pub const NET: &str = "10.77.0.0/24";
/// TUN device name inside every namespace.
pub const TUN: &str = "nnsub0";

/// Runs a command and panics with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails clearly when not root or `ip` is missing.
pub fn require_root_and_ip() {
    let uid = sh(&["id", "-u"]);
    assert_eq!(
        uid.trim(),
        "0",
        "the subnet data-path tests need root (TUN, netns)"
    );
    sh(&["ip", "-V"]);
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted on drop (with everything in it).
pub struct Netns(pub String);

impl Netns {
    pub fn new() -> Self {
        let name = unique("nnsubt");
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> args…`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.0];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Whether `dev` exists in this namespace.
    pub fn has_link(&self, dev: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.0, "link", "show", "dev", dev])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Packets the kernel received on `dev` (for a TUN: packets written into it).
    pub fn rx_packets(&self, dev: &str) -> u64 {
        let out = self.ip(&["-s", "-j", "link", "show", "dev", dev]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Two namespaces joined by a veth pair: `a` has 10.99.0.1/24, `b` has 10.99.0.2/24.
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

impl Pair {
    pub fn new() -> Self {
        require_root_and_ip();
        let (a, b) = (Netns::new(), Netns::new());
        let (va, vb) = (unique("nnva"), unique("nnvb"));
        sh(&[
            "ip", "link", "add", &va, "netns", &a.0, "type", "veth", "peer", "name", &vb, "netns",
            &b.0,
        ]);
        a.ip(&["addr", "add", "10.99.0.1/24", "dev", &va]);
        b.ip(&["addr", "add", "10.99.0.2/24", "dev", &vb]);
        a.ip(&["link", "set", &va, "up"]);
        b.ip(&["link", "set", &vb, "up"]);
        Pair { a, b }
    }
}

/// A tokio runtime whose worker threads were started inside a network namespace, so every
/// socket and TUN device its tasks create lives there.
pub struct NsRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl NsRuntime {
    pub fn new(ns: &Netns) -> Self {
        let path = format!("/var/run/netns/{}", ns.0);
        let rt = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(2)
                .enable_all()
                .build()
                .unwrap()
        })
        .join()
        .unwrap();
        NsRuntime { rt: Some(rt) }
    }

    /// Spawns `f` on this runtime (inside the namespace).
    pub fn rt_spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.as_ref().unwrap().spawn(f)
    }

    /// Runs `f` on this runtime (inside the namespace) and waits for it.
    pub fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let h = self.rt.as_ref().unwrap().spawn(f);
        futures::executor::block_on(h).unwrap()
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A libp2p host (TCP on `ip`) started in a namespace runtime.
pub fn start_host(rt: &NsRuntime, ip: &str) -> (Network, Multiaddr) {
    let ip = ip.to_string();
    rt.run(async move {
        let mut cfg = NetConfig::new(Keypair::generate_ed25519());
        cfg.listen = vec![format!("/ip4/{ip}/tcp/0").parse().unwrap()];
        let (net, mut events) = nunet_network::start(cfg).await.unwrap();
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let addr = net.listen_addrs().await.into_iter().next().unwrap();
        let addr = addr.with(Protocol::P2p(net.local_peer_id()));
        (net, addr)
    })
}

/// A node of the test bed: runtime, libp2p host, subnet service.
pub struct Node {
    pub svc: SubnetService,
    pub net: Network,
    pub addr: Multiaddr,
    pub rt: NsRuntime,
}

impl Node {
    pub fn start(ns: &Netns, ip: &str) -> Self {
        Self::start_with(ns, ip, DatagramConfig::default())
    }

    pub fn start_with(ns: &Netns, ip: &str, datagrams: DatagramConfig) -> Self {
        let rt = NsRuntime::new(ns);
        let (net, addr) = start_host(&rt, ip);
        let n = net.clone();
        let svc = rt.run(async move { SubnetService::start_with(&n, datagrams).unwrap() });
        Node { svc, net, addr, rt }
    }

    pub fn peer(&self) -> PeerId {
        self.net.local_peer_id()
    }

    pub fn dial(&self, addr: &Multiaddr) {
        let (net, addr) = (self.net.clone(), addr.clone());
        self.rt.run(async move { net.dial(addr).await.unwrap() });
    }

    pub fn join(&self, ensemble: &str, routes: &BTreeMap<Ipv4Addr, PeerId>) {
        let spec = SubnetSpec {
            ensemble: ensemble.to_string(),
            tun_name: TUN.to_string(),
            network: NET.parse().unwrap(),
            mtu: 1420,
            routes: routes.clone(),
        };
        let svc = self.svc.clone();
        self.rt.run(async move { svc.join(spec).await.unwrap() });
    }

    pub fn leave(&self, ensemble: &str) {
        let (svc, e) = (self.svc.clone(), ensemble.to_string());
        self.rt.run(async move { svc.leave(&e).await.unwrap() });
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let net = self.net.clone();
        self.rt.run(async move { net.shutdown().await });
    }
}

/// Puts `own`/32 on the namespace's TUN and a /32 route to each remote address, as the host
/// module would.
pub fn address_tun(ns: &Netns, own: &str, remotes: &[&str]) {
    ns.ip(&["addr", "add", &format!("{own}/32"), "dev", TUN]);
    for r in remotes {
        ns.ip(&["route", "add", &format!("{r}/32"), "dev", TUN]);
    }
}

/// Polls `check` every 50 ms until it is true or `secs` pass.
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// `ping -c <n>` from a namespace; panics with a clear message when ping is missing.
pub fn ping(ns: &Netns, dst: &str, n: u32) -> bool {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "ping",
            "-c",
            &n.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            dst,
        ])
        .output()
        .expect("cannot run ip netns exec");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No such file") && !err.contains("not found"),
        "ping is needed by this test (apt-get install iputils-ping): {err}"
    );
    out.status.success()
}

/// An IPv4/UDP packet with a zero virtio-net header in front (a frame payload).
pub fn udp_payload(src: Ipv4Addr, dst: Ipv4Addr, body: &[u8]) -> Vec<u8> {
    let total = 28 + body.len();
    let mut p = vec![0u8; nunet_subnet::wire::VNET_HDR_LEN];
    let mut ip = vec![0u8; total];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = ip_checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&9u16.to_be_bytes()); // discard port
    ip[24..26].copy_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    ip[28..].copy_from_slice(body);
    p.extend_from_slice(&ip);
    p
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Sends `len` patterned bytes over TCP from namespace `from` to `to_ip:port` (a listener in
/// namespace `to`) and returns whether they all arrived unchanged.
pub fn tcp_transfer(from: &Netns, to: &Netns, to_ip: &str, port: u16, len: u32) -> bool {
    let rt = NsRuntime::new(to);
    let addr = format!("{to_ip}:{port}");
    let a = addr.clone();
    let server = rt.run(async move { tokio::net::TcpListener::bind(a).await.unwrap() });
    let rt_from = NsRuntime::new(from);
    let sent: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let expect = sent.clone();
    let recv = rt.rt_spawn(async move {
        let (mut c, _) = server.accept().await.unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut c, &mut got)
            .await
            .unwrap();
        got
    });
    rt_from.run(async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut c, &sent)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut c).await.unwrap();
    });
    let got = futures::executor::block_on(recv).unwrap();
    got == expect
}
