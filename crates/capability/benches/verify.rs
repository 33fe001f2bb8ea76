//! Chain verification throughput against raw ed25519 verification, measured in the same run.
//!
//! `cargo bench -p nunet-capability --bench verify` (or `bench/capability.sh`). Prints
//! `name: value unit (baseline: value, ratio: x)` lines. Target: a cached chain costs within
//! 1.2x of one raw signature verification.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use nunet_capability::{
    Action, Anchors, Capability, Request, SelfSign, Token, TokenSpec, Verifier,
};
use nunet_did::{Keypair, Signature};

const NOW: u64 = 1_800_000_000_000_000_000;
const HOUR: u64 = 3_600_000_000_000;
const LEAVES: usize = 4096;

/// Runs `f` over `n` inputs repeatedly for about `budget`; returns operations per second.
fn rate(budget: Duration, n: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..n.min(256) {
        f(i); // warm-up
    }
    let start = Instant::now();
    let mut ops = 0usize;
    while start.elapsed() < budget {
        for _ in 0..64 {
            f(ops % n);
            ops += 1;
        }
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn spec(sub: &Keypair) -> TokenSpec {
    TokenSpec {
        sub: sub.did(),
        aud: None,
        cap: vec!["/dms".parse().unwrap()],
        topic: vec![],
        exp: NOW + HOUR,
        depth: 0,
    }
}

/// A chain of `delegations` delegate tokens from a root, and many fresh invocation tokens on it.
fn chain(delegations: usize) -> (Keypair, Anchors, Vec<Token>) {
    let keys: Vec<Keypair> = (0..=delegations)
        .map(|i| Keypair::from_seed(&[i as u8 + 1; 32]))
        .collect();
    let node = Keypair::from_seed(&[200; 32]);
    let mut node_ctx = Anchors::new(node.did());
    node_ctx.add_root(keys[0].did());
    let mut parent: Option<Token> = None;
    for i in 0..delegations {
        let mut ctx = Anchors::new(keys[i].did());
        let t = match parent.take() {
            None => ctx.grant(&keys[i], &spec(&keys[i + 1])).unwrap(),
            Some(p) => {
                ctx.add_provide(p, NOW).unwrap();
                ctx.delegate(&keys[i], &spec(&keys[i + 1]), SelfSign::No, NOW)
                    .unwrap()
                    .remove(0)
            }
        };
        parent = Some(t);
    }
    let sender = &keys[delegations];
    let mut ctx = Anchors::new(sender.did());
    if let Some(p) = parent {
        ctx.add_provide(p, NOW).unwrap();
    }
    let leaves = (0..LEAVES)
        .map(|_| {
            ctx.invocation_tokens(sender, Action::Invoke, &spec(sender), NOW)
                .remove(0)
        })
        .collect();
    (node, node_ctx, leaves)
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );
    // Baseline: raw ed25519 verification of token-sized messages.
    let key = Keypair::from_seed(&[9; 32]);
    let msgs: Vec<(Vec<u8>, Signature)> = (0..LEAVES)
        .map(|i| {
            let m = vec![i as u8; 300];
            let s = key.sign(&m);
            (m, s)
        })
        .collect();
    let pk = key.public();
    let raw = rate(budget, msgs.len(), |i| {
        black_box(pk.verify(&msgs[i].0, &msgs[i].1).is_ok());
    });
    println!("ed25519 raw verify: {raw:.0} ops/s (baseline: {raw:.0} ops/s, ratio: 1.00)");

    let behavior: Capability = "/dms/x".parse().unwrap();
    for d in [1usize, 3, 5] {
        let (node, ctx, leaves) = chain(d);
        let sender = leaves[0].dms().sub.clone();
        let nd = node.did();
        let req = Request {
            action: Action::Invoke,
            subject: &sender,
            audience: &nd,
            capability: &behavior,
            topic: None,
        };
        let uncached = Verifier::with_cache_capacity(0);
        let u = rate(budget, leaves.len(), |i| {
            uncached.verify(&leaves[i], &req, &ctx, NOW).unwrap();
        });
        // Warm cache: the chain is known, every invocation token is new to the verifier. Each
        // pass uses a fresh verifier warmed with leaf 0, then times leaves 1.. once each.
        let start = Instant::now();
        let (mut ops, mut spent) = (0usize, Duration::ZERO);
        while start.elapsed() < budget {
            let cached = Verifier::with_cache_capacity(1 << 20);
            cached.verify(&leaves[0], &req, &ctx, NOW).unwrap();
            let t = Instant::now();
            for leaf in &leaves[1..] {
                cached.verify(leaf, &req, &ctx, NOW).unwrap();
            }
            spent += t.elapsed();
            ops += leaves.len() - 1;
        }
        let c = ops as f64 / spent.as_secs_f64();
        println!(
            "chain verify, {d} delegation(s) + invocation, uncached: {u:.0} ops/s (baseline: {raw:.0} ops/s raw, ratio: {:.2}x the cost of one raw verify)",
            raw / u
        );
        println!(
            "chain verify, {d} delegation(s) + invocation, cached chain: {c:.0} ops/s (baseline: {raw:.0} ops/s raw, ratio: {:.2}x the cost of one raw verify; target <= 1.20)",
            raw / c
        );
    }
}
