//! What recording traces costs an actor invoke: two in-process nodes over real libp2p on
//! loopback, logging at `info` installed, traces either off (no layer) or exported to a
//! local OTLP/HTTP collector (`nunet_traces::collector`).
//!
//! One mode per process (a process has one global subscriber): `BENCH_TRACES=off|on` and
//! `BENCH_SCOPE=none|deployment` (invokes outside any deployment, as the `invoke` bench makes
//! them, or each inside a deployment's span, so every message carries a trace context and
//! is handled in a span that is exported). `bench/observability.sh` runs the four and prints
//! the ratios. Prints `traces=… scope=… p50_us=… p99_us=… ops_per_s=… spans=…`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nunet_capability::Anchors;
use nunet_config::Config;
use nunet_did::Keypair;
use nunet_node::{Node, NodeOptions};
use serde_json::json;
use tracing::Instrument;

async fn node(key: Keypair, anchors: Anchors, bootstrap: Vec<String>) -> Node {
    let dir = tempfile::tempdir().unwrap().keep();
    let mut config = Config::defaults(&dir);
    config.rest.port = 0;
    config.p2p.listen_address = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.p2p.bootstrap_peers = bootstrap;
    Node::start(NodeOptions {
        config,
        key,
        anchors,
        context: None,
        verify_capabilities: true,
        log: None,
    })
    .await
    .unwrap()
}

fn main() {
    let on = match std::env::var("BENCH_TRACES").as_deref() {
        Ok("on") => true,
        Ok("off") | Err(_) => false,
        Ok(other) => panic!("BENCH_TRACES={other}: on or off"),
    };
    let traced = match std::env::var("BENCH_SCOPE").as_deref() {
        Ok("deployment") => true,
        Ok("none") | Err(_) => false,
        Ok(other) => panic!("BENCH_SCOPE={other}: none or deployment"),
    };
    let traces = on.then(|| {
        let (port, _kept) = nunet_traces::collector::start().unwrap();
        let layer = nunet_traces::install(&format!("http://127.0.0.1:{port}")).unwrap();
        nunet_actor::trace::set_source(nunet_traces::current_traceparent);
        layer.filtered()
    });
    nunet_logging::init(
        &nunet_logging::Settings {
            level: nunet_logging::Level::Info,
            file: None,
            env_filter: None,
        },
        traces,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n: usize = std::env::var("BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        let (ka, kb) = (Keypair::from_seed(&[30; 32]), Keypair::from_seed(&[31; 32]));
        let mut ab = Anchors::new(kb.did());
        ab.add_root(ka.did());
        let b = node(kb, ab, vec![]).await;
        let addr = format!(
            "{}/p2p/{}",
            b.network.listen_addrs().await[0],
            b.system.peer_id()
        );
        let a = node(ka.clone(), Anchors::new(ka.did()), vec![addr]).await;
        for _ in 0..100 {
            if !a.network.peers().await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let to = b.system.root();
        let invoke = move |sys: nunet_actor::ActorSystem, to: nunet_actor::Handle| async move {
            let call = sys.invoke(
                "root",
                to,
                "/public/hello",
                json!(null),
                Duration::from_secs(10),
            );
            if traced {
                let span =
                    tracing::info_span!(target: "nunet_bench", "deployment", trace_root = "bench");
                call.instrument(span).await
            } else {
                call.await
            }
        };
        for _ in 0..200 {
            invoke(a.system.clone(), to.clone()).await.unwrap();
        }
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            invoke(a.system.clone(), to.clone()).await.unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let (p50, p99) = (lat[n / 2], lat[(n - 1) * 99 / 100]);
        let done = Arc::new(AtomicUsize::new(0));
        let stop = Instant::now() + Duration::from_secs(3);
        let t = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (sys, to, done) = (a.system.clone(), to.clone(), done.clone());
                tokio::spawn(async move {
                    while Instant::now() < stop {
                        if invoke(sys.clone(), to.clone()).await.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let ops = done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
        nunet_traces::flush(Duration::from_secs(5));
        println!(
            "traces={} scope={} p50_us={:.0} p99_us={:.0} ops_per_s={ops:.0} spans={}",
            if on { "on" } else { "off" },
            if traced { "deployment" } else { "none" },
            us(p50),
            us(p99),
            nunet_traces::exported()
        );
        a.shutdown().await;
        b.shutdown().await;
    });
}
