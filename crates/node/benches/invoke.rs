//! Invoke round trip between two in-process nodes over real libp2p on loopback, with full
//! verification vs capability checks turned off, in one run.
//!
//! `cargo bench -p nunet-node --bench invoke` (or `bench/actor.sh`). Prints
//! `name: value unit (baseline: value, ratio: x)`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nunet_capability::Anchors;
use nunet_config::Config;
use nunet_did::Keypair;
use nunet_node::{Node, NodeOptions};
use serde_json::json;

async fn node(key: Keypair, anchors: Anchors, verify: bool, bootstrap: Vec<String>) -> Node {
    let dir = std::env::temp_dir().join(format!("nunet-bench-{}", rand_suffix()));
    let mut config = Config::defaults(&dir);
    config.rest.port = 0;
    config.p2p.listen_address = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.p2p.bootstrap_peers = bootstrap;
    Node::start(NodeOptions {
        config,
        key,
        anchors,
        context: None,
        verify_capabilities: verify,
        log: None,
    })
    .await
    .unwrap()
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

struct Pair {
    a: Node,
    b: Node,
}

async fn pair(verify: bool, seed: u8) -> Pair {
    let ka = Keypair::from_seed(&[seed; 32]);
    let kb = Keypair::from_seed(&[seed + 1; 32]);
    let mut ab = Anchors::new(kb.did());
    ab.add_root(ka.did());
    let b = node(kb, ab, verify, vec![]).await;
    let addr = format!(
        "{}/p2p/{}",
        b.network.listen_addrs().await[0],
        b.system.peer_id()
    );
    let a = node(ka.clone(), Anchors::new(ka.did()), verify, vec![addr]).await;
    // Wait for the connection.
    for _ in 0..100 {
        if !a.network.peers().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Pair { a, b }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

async fn latency(p: &Pair, n: usize) -> Vec<Duration> {
    let to = p.b.system.root();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        p.a.system
            .invoke(
                "root",
                to.clone(),
                "/public/hello",
                json!(null),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        out.push(t.elapsed());
    }
    out
}

async fn throughput(p: &Pair, secs: f64, concurrency: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let sys = p.a.system.clone();
        let to = p.b.system.root();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                if sys
                    .invoke(
                        "root",
                        to.clone(),
                        "/public/hello",
                        json!(null),
                        Duration::from_secs(10),
                    )
                    .await
                    .is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let t = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n: usize = std::env::var("BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        let off = pair(false, 10).await;
        let on = pair(true, 20).await;
        // Warm up both.
        latency(&off, 200).await;
        latency(&on, 200).await;
        let mut l_off = latency(&off, n).await;
        let mut l_on = latency(&on, n).await;
        let (p50_off, p99_off) = (pct(&mut l_off, 0.5), pct(&mut l_off, 0.99));
        let (p50_on, p99_on) = (pct(&mut l_on, 0.5), pct(&mut l_on, 0.99));
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("invoke round trip p50, verified: {:.0} us (baseline: {:.0} us unverified, ratio: {:.2})", us(p50_on), us(p50_off), us(p50_on) / us(p50_off));
        println!("invoke round trip p99, verified: {:.0} us (baseline: {:.0} us unverified, ratio: {:.2})", us(p99_on), us(p99_off), us(p99_on) / us(p99_off));
        let t_off = throughput(&off, 3.0, 64).await;
        let t_on = throughput(&on, 3.0, 64).await;
        println!("authorized invokes/s, 64 in flight: {t_on:.0} ops/s (baseline: {t_off:.0} ops/s unverified, ratio: {:.2}; target >= 10000)", t_on / t_off);
        println!("verification share of the round trip: {:.1}% (target <= 10%)", 100.0 * (us(p50_on) - us(p50_off)).max(0.0) / us(p50_on));
        for p in [off, on] {
            p.a.shutdown().await;
            p.b.shutdown().await;
        }
    });
}
