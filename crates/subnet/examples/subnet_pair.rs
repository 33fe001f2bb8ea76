//! One side of a two-node subnet for benchmarks: a libp2p host with a deterministic key, the
//! subnet service, one ensemble TUN device with an address and /32 routes to the remote
//! addresses. Run one per network namespace, then iperf3/ping across; stats are printed on
//! stdin EOF (a kill also removes the device). It must not be used as a node: identities come from a seed.
//!
//! ```text
//! subnet_pair --seed 1 --listen /ip4/10.99.0.1/tcp/4001 --peer /ip4/10.99.0.2/tcp/4001 \
//!             --tun nnbench0 --addr 10.77.0.1 --route 10.77.0.1=1 --route 10.77.0.2=2
//! ```
//! `--route IP=SEED` maps an address to the peer whose key comes from SEED; `--peer` is
//! dialed as the peer of seed `--peer-seed` (default: the other of 1 and 2). `--workers N`
//! (or `SUBNET_PAIR_WORKERS`) runs a multi-thread runtime of N workers, as the daemon does;
//! the default 0 is a current-thread runtime. `--datagrams off` keeps every packet on the
//! libp2p stream (default `on`: the datagram path once a probe is confirmed);
//! `--busy-poll-us N` sets how long the outbound thread polls for answers after sending.
#![allow(clippy::expect_used)]

use std::{collections::BTreeMap, net::Ipv4Addr, process::Command};

use libp2p::{Multiaddr, PeerId, identity::Keypair, multiaddr::Protocol};
use nunet_network::NetConfig;
use nunet_subnet::{DatagramConfig, SubnetService, SubnetSpec};

fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).expect("32-byte seed")
}

fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "ip {args:?} failed");
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut workers: usize = std::env::var("SUBNET_PAIR_WORKERS")
        .ok()
        .map(|v| v.parse().expect("SUBNET_PAIR_WORKERS"))
        .unwrap_or(0);
    if let Some(i) = args.iter().position(|a| a == "--workers") {
        workers = args
            .get(i + 1)
            .expect("--workers N")
            .parse()
            .expect("workers");
        args.drain(i..i + 2);
    }
    let rt = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    rt.block_on(run(args));
}

async fn run(args: Vec<String>) {
    let mut a = args.into_iter();
    let (mut seed, mut peer_seed, mut listen, mut peer) = (1u8, None, None, None);
    let (mut tun, mut addr, mut routes) = ("nnbench0".to_string(), None, BTreeMap::new());
    let mut datagrams = true;
    let mut busy_poll_us = nunet_subnet::DEFAULT_BUSY_POLL.as_micros() as u64;
    while let Some(flag) = a.next() {
        let v = a.next().expect("flag value");
        match flag.as_str() {
            "--seed" => seed = v.parse().expect("seed"),
            "--peer-seed" => peer_seed = Some(v.parse::<u8>().expect("peer seed")),
            "--listen" => listen = Some(v.parse::<Multiaddr>().expect("listen")),
            "--peer" => peer = Some(v.parse::<Multiaddr>().expect("peer")),
            "--tun" => tun = v,
            "--datagrams" => datagrams = v == "on",
            "--busy-poll-us" => busy_poll_us = v.parse().expect("microseconds"),
            "--addr" => addr = Some(v.parse::<Ipv4Addr>().expect("addr")),
            "--route" => {
                let (ip, s) = v.split_once('=').expect("IP=SEED");
                let s: u8 = s.parse().expect("seed");
                routes.insert(
                    ip.parse::<Ipv4Addr>().expect("ip"),
                    key(s).public().to_peer_id(),
                );
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let addr = addr.expect("--addr");
    let mut cfg = NetConfig::new(key(seed));
    cfg.listen = vec![listen.expect("--listen")];
    let (net, mut events) = nunet_network::start(cfg).await.expect("libp2p host");
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let dg = DatagramConfig {
        enabled: datagrams,
        port: 0,
        busy_poll: std::time::Duration::from_micros(busy_poll_us),
    };
    let svc = SubnetService::start_with(&net, dg).expect("subnet service");
    if let Some(p) = peer {
        let pid: PeerId = key(peer_seed.unwrap_or(if seed == 1 { 2 } else { 1 }))
            .public()
            .to_peer_id();
        let target = p.with(Protocol::P2p(pid));
        while net.dial(target.clone()).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let spec = SubnetSpec {
        ensemble: "bench".into(),
        tun_name: tun.clone(),
        network: "10.77.0.0/24".parse().expect("net"),
        mtu: 1420,
        routes: routes.clone(),
    };
    svc.join(spec).await.expect("join");
    ip(&["addr", "add", &format!("{addr}/32"), "dev", &tun]);
    for r in routes.keys().filter(|r| **r != addr) {
        ip(&["route", "add", &format!("{r}/32"), "dev", &tun]);
    }
    println!("READY {}", net.local_peer_id());
    let stdin_eof = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        while std::io::stdin()
            .read_line(&mut s)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    });
    let _ = stdin_eof.await;
    println!("{:?}", svc.stats("bench"));
    let _ = svc.leave("bench").await;
    net.shutdown().await;
}
