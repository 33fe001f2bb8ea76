//! Property test of the accounting: 10,000 random sequences of commit / allocate / release /
//! expire / crash / daemon restart (the DB file is closed and reopened) on random onboarding
//! limits, GPUs reserved as shares or whole (as deployments reserve them: a second
//! reservation of a whole-reserved device must fail). After every step, for every resource
//! and every GPU device:
//! free + committed + allocated == onboarded, and the accounting agrees with a plain model;
//! at the end, after releasing everything, free == onboarded exactly.
//!
//! The DB lives on tmpfs (/dev/shm) when there is one, so the fsyncs that make every write
//! durable cost little here; the restarts are real reopens of the file.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nunet_resources::{
    Accounting, AccountingError, AllocationStopper, OffboardReport, StopOutcome,
};
use nunet_store::{OnboardingRecord, Resources, Store};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// id, fraction (per mille) of each onboarded amount, GPU choice bits, ttl ms.
    Commit {
        id: u8,
        cpu: u16,
        ram: u16,
        disk: u16,
        gpus: u8,
        gpu_share: u16,
        ttl: u16,
    },
    Allocate(u8),
    Release(u8),
    /// Advance the clock and expire lapsed commitments.
    Expire(u16),
    /// An allocation crashed: release it.
    Crash(u8),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // GPU shares, or whole units (1000 ‰) as deployments reserve them.
        4 => (0u8..6, 0u16..600, 0u16..600, 0u16..600, any::<u8>(), prop_oneof![3 => 1u16..700, 1 => Just(1000u16)], 1u16..500).prop_map(
            |(id, cpu, ram, disk, gpus, gpu_share, ttl)| Op::Commit { id, cpu, ram, disk, gpus, gpu_share, ttl }
        ),
        3 => (0u8..6).prop_map(Op::Allocate),
        2 => (0u8..6).prop_map(Op::Release),
        1 => (0u16..400).prop_map(Op::Expire),
        1 => (0u8..6).prop_map(Op::Crash),
        1 => Just(Op::Restart),
    ]
}

fn limits() -> impl Strategy<Value = Resources> {
    (
        1u64..64_000,
        1u64..(256u64 << 30),
        1u64..(4u64 << 40),
        prop::collection::vec(1u64..(96u64 << 30), 0..4),
    )
        .prop_map(|(cpu, ram, disk, gpus)| Resources {
            cpu_millicores: cpu,
            ram_bytes: ram,
            disk_bytes: disk,
            gpus: gpus
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("GPU-{i:02}"), v))
                .collect(),
        })
}

fn part(total: u64, per_mille: u16) -> u64 {
    (u128::from(total) * u128::from(per_mille) / 1000) as u64
}

/// Checks the invariant by recomputing every figure from the reservations.
fn check(a: &Accounting, model: &BTreeMap<String, (bool, Resources, Option<i64>)>) {
    let on = a.onboarded();
    let (free, com, all) = (a.free(), a.committed(), a.allocated());
    assert_eq!(
        free.cpu_millicores + com.cpu_millicores + all.cpu_millicores,
        on.cpu_millicores
    );
    assert_eq!(free.ram_bytes + com.ram_bytes + all.ram_bytes, on.ram_bytes);
    assert_eq!(
        free.disk_bytes + com.disk_bytes + all.disk_bytes,
        on.disk_bytes
    );
    for (dev, total) in &on.gpus {
        let c = com.gpus.get(dev).copied().unwrap_or(0);
        let l = all.gpus.get(dev).copied().unwrap_or(0);
        assert_eq!(free.gpus[dev] + c + l, *total, "gpu {dev}");
    }
    assert!(
        com.gpus
            .keys()
            .chain(all.gpus.keys())
            .all(|k| on.gpus.contains_key(k))
    );
    a.check_invariants().unwrap();
    let got: BTreeMap<String, (bool, Resources, Option<i64>)> = a
        .reservations()
        .map(|r| {
            (
                r.id.clone(),
                (
                    r.state == nunet_store::ReservationState::Allocated,
                    r.resources.clone(),
                    r.expires_at_ms,
                ),
            )
        })
        .collect();
    assert_eq!(&got, model);
}

fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

struct NoExecutor;

impl AllocationStopper for NoExecutor {
    fn stop(&self, _: &str) -> Result<StopOutcome, String> {
        Ok(StopOutcome::NoExecutor)
    }
}

/// One case. The file is shared by all cases (each ends offboarded, i.e. empty), so opening
/// and migrating happens at start and at each simulated restart, not per case.
fn run_case(path: &Path, slot: &mut Option<Accounting>, onboarded: &Resources, ops: &[Op]) {
    let mut a = match slot.take() {
        Some(a) => a,
        None => Accounting::open(Store::open(path).unwrap()).unwrap(),
    };
    assert!(a.onboarding().is_none() && a.reservations().count() == 0);
    a.onboard(OnboardingRecord {
        resources: onboarded.clone(),
        onboarded_at_ms: 0,
        details: "{}".into(),
    })
    .unwrap();
    let devices: Vec<String> = onboarded.gpus.keys().cloned().collect();
    let mut model: BTreeMap<String, (bool, Resources, Option<i64>)> = BTreeMap::new();
    let mut now: i64 = 1_000;
    for op in ops {
        match op {
            Op::Commit {
                id,
                cpu,
                ram,
                disk,
                gpus,
                gpu_share,
                ttl,
            } => {
                let id = format!("r{id}");
                let want = Resources {
                    cpu_millicores: part(onboarded.cpu_millicores, *cpu),
                    ram_bytes: part(onboarded.ram_bytes, *ram),
                    disk_bytes: part(onboarded.disk_bytes, *disk),
                    gpus: devices
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| gpus & (1 << i) != 0)
                        .map(|(_, d)| (d.clone(), part(onboarded.gpus[d], *gpu_share)))
                        .collect(),
                };
                // The model's own answer: does it fit in what is free?
                let mut used = Resources::default();
                for (_, r, _) in model.values() {
                    used.cpu_millicores += r.cpu_millicores;
                    used.ram_bytes += r.ram_bytes;
                    used.disk_bytes += r.disk_bytes;
                    for (k, v) in &r.gpus {
                        *used.gpus.entry(k.clone()).or_default() += v;
                    }
                }
                let fits = used.cpu_millicores + want.cpu_millicores <= onboarded.cpu_millicores
                    && used.ram_bytes + want.ram_bytes <= onboarded.ram_bytes
                    && used.disk_bytes + want.disk_bytes <= onboarded.disk_bytes
                    && want.gpus.iter().all(|(k, v)| {
                        used.gpus.get(k).copied().unwrap_or(0) + v <= onboarded.gpus[k]
                    });
                let exp = now + i64::from(*ttl);
                let r = a.commit(&id, want.clone(), exp, now);
                match (model.contains_key(&id), fits) {
                    (true, _) => assert!(matches!(r, Err(AccountingError::Duplicate(_))), "{r:?}"),
                    (false, true) => {
                        r.unwrap();
                        model.insert(id, (false, want, Some(exp)));
                    }
                    (false, false) => {
                        assert!(matches!(r, Err(AccountingError::Insufficient(_))), "{r:?}")
                    }
                }
            }
            Op::Allocate(id) => {
                let id = format!("r{id}");
                let r = a.allocate(&id, now);
                match model.get_mut(&id) {
                    Some(e) if !e.0 => {
                        r.unwrap();
                        e.0 = true;
                        e.2 = None;
                    }
                    Some(_) => assert!(matches!(r, Err(AccountingError::AlreadyAllocated(_)))),
                    None => assert!(matches!(r, Err(AccountingError::NotFound(_)))),
                }
            }
            Op::Release(id) | Op::Crash(id) => {
                let id = format!("r{id}");
                let r = a.release(&id);
                assert_eq!(r.is_ok(), model.remove(&id).is_some(), "{r:?}");
            }
            Op::Expire(dt) => {
                now += i64::from(*dt);
                let mut got = a.expire(now).unwrap();
                got.sort();
                let want: Vec<String> = model
                    .iter()
                    .filter(|(_, (alloc, _, e))| !alloc && e.is_some_and(|e| e <= now))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &want {
                    model.remove(k);
                }
                assert_eq!(got, want);
            }
            Op::Restart => {
                drop(a);
                a = Accounting::open(Store::open(path).unwrap()).unwrap();
                // Nothing is running after a restart with no executor to ask: unknown (None)
                // keeps allocations; lapsed commitments go.
                let released = a.reconcile(None::<&BTreeSet<String>>, now).unwrap();
                for k in released {
                    assert!(model.remove(&k).is_some_and(|(alloc, _, _)| !alloc));
                }
            }
        }
        check(&a, &model);
    }
    let ids: Vec<String> = model.keys().cloned().collect();
    for id in ids {
        a.release(&id).unwrap();
    }
    assert_eq!(
        a.free(),
        *onboarded,
        "free == onboarded after releasing everything"
    );
    assert!(a.offboard(false, &NoExecutor).unwrap() == OffboardReport::default());
    *slot = Some(a);
}

fn cases() -> u32 {
    std::env::var("NUNET_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn accounting_never_drifts() {
    let dir = tempfile::tempdir_in(scratch_dir()).unwrap();
    let path = dir.path().join("dms.sqlite");
    let shared: std::cell::RefCell<Option<Accounting>> = std::cell::RefCell::new(None);
    let start = std::time::Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (limits(), prop::collection::vec(op(), 1..24));
    runner
        .run(&strategy, |(onboarded, ops)| {
            // A failing case leaves the slot empty; the next one starts from a reopened file.
            let mut slot = shared.borrow_mut().take();
            if slot.is_none() {
                for f in ["dms.sqlite", "dms.sqlite-wal", "dms.sqlite-shm"] {
                    let _ = std::fs::remove_file(dir.path().join(f));
                }
            }
            run_case(&path, &mut slot, &onboarded, &ops);
            *shared.borrow_mut() = slot;
            Ok(())
        })
        .unwrap();
    eprintln!(
        "accounting property test: {} sequences in {:.1} s",
        cases(),
        start.elapsed().as_secs_f64()
    );
}
