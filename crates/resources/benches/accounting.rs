//! Commit + allocate + release cycles per second through the accounting (every transition a
//! durable SQLite transaction), against plain SQLite statements writing the same rows with the
//! same durability settings, in one run. BENCH_MS sets the time per case (default 2000).
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nunet_resources::Accounting;
use nunet_store::{OnboardingRecord, Resources, Store};

fn budget() -> Duration {
    Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    )
}

fn want() -> Resources {
    Resources {
        cpu_millicores: 500,
        ram_bytes: 1 << 30,
        disk_bytes: 1 << 30,
        gpus: BTreeMap::from([("GPU-0".to_string(), 1u64 << 30)]),
    }
}

fn accounting(dir: &std::path::Path) -> f64 {
    let mut a = Accounting::open(Store::open(&dir.join("acct.sqlite")).unwrap()).unwrap();
    a.onboard(OnboardingRecord {
        resources: Resources {
            cpu_millicores: 8000,
            ram_bytes: 32 << 30,
            disk_bytes: 100 << 30,
            gpus: BTreeMap::from([("GPU-0".to_string(), 16u64 << 30)]),
        },
        onboarded_at_ms: 0,
        details: "{}".into(),
    })
    .unwrap();
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget() {
        let id = format!("r{n}");
        a.commit(&id, want(), 1_000_000, 1).unwrap();
        a.allocate(&id, 2).unwrap();
        a.release(&id).unwrap();
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// The same three writes per cycle (reservation + GPU row, state update, delete), by hand.
fn plain(dir: &std::path::Path) -> f64 {
    let c = rusqlite::Connection::open(dir.join("plain.sqlite")).unwrap();
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    c.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE r (id TEXT PRIMARY KEY, state TEXT, cpu INTEGER, ram INTEGER, disk INTEGER, exp INTEGER);
         CREATE TABLE g (rid TEXT, dev TEXT, vram INTEGER, PRIMARY KEY (rid, dev));",
    )
    .unwrap();
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget() {
        let id = format!("r{n}");
        let tx = c.unchecked_transaction().unwrap();
        tx.execute(
            "INSERT INTO r VALUES (?1, 'committed', 500, ?2, ?2, 1000000)",
            rusqlite::params![id, 1i64 << 30],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO g VALUES (?1, 'GPU-0', ?2)",
            rusqlite::params![id, 1i64 << 30],
        )
        .unwrap();
        tx.commit().unwrap();
        c.execute(
            "UPDATE r SET state = 'allocated', exp = NULL WHERE id = ?1",
            [&id],
        )
        .unwrap();
        let tx = c.unchecked_transaction().unwrap();
        tx.execute("DELETE FROM g WHERE rid = ?1", [&id]).unwrap();
        tx.execute("DELETE FROM r WHERE id = ?1", [&id]).unwrap();
        tx.commit().unwrap();
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    // On the real disk (not tmpfs): durability costs what it costs.
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let base = plain(dir.path());
    let ours = accounting(dir.path());
    println!(
        "accounting commit+allocate+release: {ours:.0} cycles/s (baseline: plain SQLite same rows {base:.0} cycles/s, ratio: {:.2})",
        ours / base
    );
}
