//! A node whose process may open only 512 files, flooded with 1100 raw TCP connections to
//! its libp2p port by another process: the libp2p host keeps within its share of the
//! descriptors, so the REST API still answers and libp2p peers are still served.
//!
//! Its own test binary (`harness = false`): it lowers the process's open-files limit, and it
//! runs itself again as the attacker process.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nunet_capability::Anchors;
use nunet_config::Config;
use nunet_did::Keypair;
use nunet_network::{Multiaddr, NetConfig};
use nunet_node::{Node, NodeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Open files the node's process may have (soft and hard: it cannot raise them).
const NOFILE: u64 = 512;
/// Raw connections the attacker opens and holds.
const FLOOD: usize = 1100;
/// Safety net for steps that must end on their own; never reached when the node works.
const HANG: Duration = Duration::from_secs(20);
/// How long the REST API may take to answer during the flood. Without limits the libp2p
/// host holds every descriptor it accepted until its 10 s handshake timeout, so an answer
/// must come before then to show that the limits, not that timeout, kept the API alive.
/// A working node answers in milliseconds.
const HEALTH_DURING_FLOOD: Duration = Duration::from_secs(8);
const ATTACKER: &str = "NUNET_FD_FLOOD_ATTACKER";

const NAME: &str = "node_survives_a_flood";

fn main() {
    // Enough of libtest's command line for `--list` and name filters to behave.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return;
    }
    let takes_value = [
        "--test-threads",
        "--skip",
        "--color",
        "--format",
        "--logfile",
        "-Z",
    ];
    let filters: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with('-') && (*i == 0 || !takes_value.contains(&args[i - 1].as_str()))
        })
        .map(|(_, a)| a)
        .collect();
    if std::env::var_os(ATTACKER).is_none()
        && !filters.is_empty()
        && !filters.iter().any(|f| NAME.contains(f.as_str()))
    {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os(ATTACKER).is_some() {
        rt.block_on(attack());
    } else {
        rt.block_on(node_survives_a_flood());
        println!("test {NAME} ... ok");
    }
}

/// The attacker: reads the libp2p and REST ports on stdin, opens [`FLOOD`] connections to
/// the first that send nothing, then asks the REST API for its health, prints how many
/// connected and the answer, and holds the connections until stdin closes. Asking from here
/// keeps the client's descriptors out of the node's process.
async fn attack() {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    let mut line = String::new();
    let mut stdin = BufReader::new(std::io::stdin());
    stdin.read_line(&mut line).expect("ports");
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|p| p.parse().expect("port number"))
        .collect();
    let (p2p, rest) = (ports[0], ports[1]);
    let conns = futures::future::join_all((0..FLOOD).map(|_| async move {
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(("127.0.0.1", p2p)),
        )
        .await
        .ok()
        .and_then(Result::ok)
    }))
    .await;
    let held: Vec<_> = conns.into_iter().flatten().collect();
    let answer = match health(
        SocketAddr::from(([127, 0, 0, 1], rest)),
        HEALTH_DURING_FLOOD,
    )
    .await
    {
        Ok(r) => r.lines().next().unwrap_or_default().to_string(),
        Err(e) => e,
    };
    println!("{} {answer}", held.len());
    std::io::stdout().flush().expect("stdout");
    // Until the test is done with us.
    let _ = tokio::task::spawn_blocking(move || stdin.read_line(&mut String::new())).await;
    drop(held);
}

fn tcp_port(a: &Multiaddr) -> Option<u16> {
    a.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
        _ => None,
    })
}

async fn health(addr: SocketAddr, within: Duration) -> Result<String, String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: dms\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&back).into_owned())
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| format!("no answer in {within:?}"))?
}

async fn node_survives_a_flood() {
    // The attacker starts before the limit is lowered: it is another process, with its own.
    let mut attacker = Command::new(std::env::current_exe().expect("test binary"))
        .env(ATTACKER, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("attacker");
    setrlimit(Resource::RLIMIT_NOFILE, NOFILE, NOFILE).expect("lower the open-files limit");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::defaults(dir.path());
    config.rest.port = 0;
    config.p2p.listen_address = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.subnet.enabled = false;
    let key = Keypair::from_seed(&[42; 32]);
    let node = Node::start(NodeOptions {
        config,
        anchors: Anchors::new(key.did()),
        key,
        context: None,
        verify_capabilities: true,
        log: None,
    })
    .await
    .expect("node starts");
    let node_id = node.network.local_peer_id();
    let listen = node.network.listen_addrs().await;
    let port = listen
        .iter()
        .find_map(tcp_port)
        .expect("a TCP listen address");

    // A peer connected before the flood.
    let mut peer_cfg = NetConfig::new(libp2p::identity::Keypair::generate_ed25519());
    peer_cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
    let (peer, _events) = nunet_network::start(peer_cfg).await.expect("peer");
    let node_addr = listen[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(node_id));
    peer.dial(node_addr).await.expect("peer connects");
    peer.ping(node_id).await.expect("ping before the flood");
    assert!(
        health(node.api_addr, HANG)
            .await
            .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
    );

    // The flood, then the attacker's health request.
    let mut to_attacker = attacker.stdin.take().expect("stdin");
    writeln!(to_attacker, "{port} {}", node.api_addr.port()).expect("ports to the attacker");
    let mut from_attacker = BufReader::new(attacker.stdout.take().expect("stdout"));
    let mut line = String::new();
    from_attacker.read_line(&mut line).expect("attacker report");
    let (connected, answer) = line.trim().split_once(' ').expect("count and answer");
    let connected: usize = connected.parse().expect("attacker count");
    assert!(
        connected >= NOFILE as usize,
        "only {connected} raw connections got through"
    );

    // While it holds its connections: the REST API and the libp2p host still answer.
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "REST API during the flood: {answer}"
    );
    let p = tokio::time::timeout(HANG, peer.ping(node_id)).await;
    assert!(
        matches!(p, Ok(Ok(_))),
        "libp2p ping during the flood: {p:?}"
    );

    drop(to_attacker);
    let _ = tokio::task::spawn_blocking(move || attacker.wait()).await;
    peer.shutdown().await;
    node.shutdown().await;
}
