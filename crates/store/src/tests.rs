#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::*;
use crate::model::*;

fn res(cpu: u64, gpu: Option<(&str, u64)>) -> Resources {
    Resources {
        cpu_millicores: cpu,
        ram_bytes: 1 << 30,
        disk_bytes: 2 << 30,
        gpus: gpu
            .map(|(k, v)| BTreeMap::from([(k.to_string(), v)]))
            .unwrap_or_default(),
    }
}

fn reservation(id: &str, gpu: Option<(&str, u64)>) -> Reservation {
    Reservation {
        id: id.into(),
        state: ReservationState::Committed,
        resources: res(500, gpu),
        expires_at_ms: Some(1_000),
        created_at_ms: 10,
    }
}

#[test]
fn empty_file_migrates_to_latest_with_durable_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dms.sqlite");
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    let mode: String = s
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = s
        .conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    // A zero-length file (e.g. created by `touch`) is an empty database, not corruption.
    let p2 = dir.path().join("empty.sqlite");
    std::fs::write(&p2, b"").unwrap();
    assert_eq!(
        Store::open(&p2).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
}

#[test]
fn every_earlier_version_migrates_forward_keeping_data() {
    for from in 1..=SCHEMA_VERSION {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dms.sqlite");
        {
            let s = migrations::open_at_version(&path, from).unwrap();
            assert_eq!(s.schema_version().unwrap(), from);
            // version 1 already has the onboarding table
            s.onboarding()
                .put(&OnboardingRecord {
                    resources: res(1500, Some(("GPU-a", 4 << 30))),
                    onboarded_at_ms: 7,
                    details: "{}".into(),
                })
                .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION, "from {from}");
        let rec = s.onboarding().get().unwrap().unwrap();
        assert_eq!(rec.resources, res(1500, Some(("GPU-a", 4 << 30))));
        s.reservations().insert(&reservation("r1", None)).unwrap();
        assert_eq!(s.reservations().list().unwrap().len(), 1);
    }
}

#[test]
fn garbage_file_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dms.sqlite");
    let junk = b"this is not a database, it is a shopping list\n".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    let err = Store::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        junk,
        "file must not be replaced"
    );
}

#[test]
fn damaged_pages_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dms.sqlite");
    {
        let s = Store::open(&path).unwrap();
        for i in 0..200 {
            s.reservations()
                .insert(&reservation(&format!("r{i:04}"), Some(("GPU-x", 1))))
                .unwrap();
        }
        s.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192);
    // Keep the header, overwrite the rest of page 1 and page 2 (schema and table b-trees).
    for b in &mut bytes[100..8192] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dms.sqlite");
    {
        let s = Store::open(&path).unwrap();
        s.conn
            .execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 3))
            .unwrap();
    }
    let err = Store::open(&path).err().unwrap();
    match &err {
        StoreError::NewerSchema {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 3, SCHEMA_VERSION));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[test]
fn reservations_round_trip_and_transition() {
    let s = Store::open_in_memory().unwrap();
    let r = s.reservations();
    r.insert(&reservation("a", Some(("GPU-1", 3 << 30))))
        .unwrap();
    r.insert(&reservation("b", None)).unwrap();
    assert!(matches!(
        r.insert(&reservation("a", None)),
        Err(StoreError::Duplicate(_))
    ));
    assert!(r.mark_allocated("a", 20).unwrap());
    assert!(!r.mark_allocated("a", 21).unwrap(), "already allocated");
    assert!(!r.mark_allocated("zzz", 21).unwrap());
    let all = r.list().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].state, ReservationState::Allocated);
    assert_eq!(all[0].expires_at_ms, None);
    assert_eq!(all[0].resources.gpus["GPU-1"], 3 << 30);
    assert_eq!(all[1].state, ReservationState::Committed);
    assert!(r.delete("a").unwrap());
    assert!(!r.delete("a").unwrap());
    let gpu_rows: i64 = s
        .conn
        .query_row("SELECT count(*) FROM reservation_gpus", [], |x| x.get(0))
        .unwrap();
    assert_eq!(gpu_rows, 0, "GPU rows cascade with the reservation");
    assert_eq!(r.delete_many(&["b".into(), "c".into()]).unwrap(), 1);
}

#[test]
fn offboard_drops_record_and_reservations_together() {
    let s = Store::open_in_memory().unwrap();
    s.onboarding()
        .put(&OnboardingRecord {
            resources: res(1000, None),
            onboarded_at_ms: 1,
            details: r#"{"x":1}"#.into(),
        })
        .unwrap();
    s.reservations().insert(&reservation("z", None)).unwrap();
    s.reservations().insert(&reservation("y", None)).unwrap();
    assert_eq!(s.onboarding().delete().unwrap(), vec!["y", "z"]);
    assert!(s.onboarding().get().unwrap().is_none());
    assert!(s.reservations().list().unwrap().is_empty());
}

#[test]
fn benchmarks_latest_wins() {
    let s = Store::open_in_memory().unwrap();
    assert!(s.benchmarks().latest().unwrap().is_none());
    let mut b = BenchmarkRecord {
        taken_at_ms: 1,
        duration_ms: 900,
        threads: 2,
        cpu_single_ops_s: 1e8,
        cpu_multi_ops_s: 2e8,
        mem_bandwidth_bytes_s: 5e9,
        disk_write_bytes_s: 1e9,
        disk_read_bytes_s: 2e9,
    };
    s.benchmarks().insert(&b).unwrap();
    b.taken_at_ms = 2;
    s.benchmarks().insert(&b).unwrap();
    assert_eq!(s.benchmarks().latest().unwrap().unwrap(), b);
}

#[test]
fn values_beyond_i64_are_refused_not_wrapped() {
    let s = Store::open_in_memory().unwrap();
    let mut r = reservation("big", None);
    r.resources.ram_bytes = u64::MAX;
    assert!(matches!(
        s.reservations().insert(&r),
        Err(StoreError::BadValue { .. })
    ));
    assert!(s.reservations().list().unwrap().is_empty());
}

#[test]
fn the_database_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dms.sqlite");
    let s = Store::open(&path).unwrap();
    s.onboarding()
        .put(&OnboardingRecord {
            resources: res(1000, None),
            onboarded_at_ms: 1,
            details: "{}".into(),
        })
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    let wal = dir.path().join("dms.sqlite-wal");
    if wal.exists() {
        assert_eq!(
            mode(&wal),
            0o600,
            "SQLite gives the WAL the database's mode"
        );
    }
    drop(s);
    // A database left world-readable by an earlier version is made private when opened.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _s = Store::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
}

#[test]
fn key_seeds_kept_by_earlier_versions_are_erased() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dms.sqlite");
    {
        let s = migrations::open_at_version(&path, 3).unwrap();
        let doc = |id: &str, extra: &str| StoredDocument {
            id: id.into(),
            ensemble_id: "e1".into(),
            status: "Running".into(),
            doc: format!(r#"{{"id":"{id}",{extra}"status":"Running"}}"#),
        };
        s.deployments()
            .put(&doc("d1", r#""orchestrator_seed":"00ff","#), 1)
            .unwrap();
        s.allocations()
            .put(&doc("a1", r#""key_seed":"ab12","#), 1)
            .unwrap();
        s.allocations().put(&doc("a2", ""), 1).unwrap();
    }
    let s = Store::open(&path).unwrap();
    let all: Vec<String> = s
        .deployments()
        .list()
        .unwrap()
        .into_iter()
        .chain(s.allocations().list().unwrap())
        .map(|d| d.doc)
        .collect();
    assert_eq!(all.len(), 3);
    for d in &all {
        assert!(!d.contains("seed"), "{d}");
        assert!(d.contains(r#""status":"Running""#), "the rest stays: {d}");
    }
}

/// A write that reads first (offboarding: list the reservations, then delete them) while
/// another connection commits (the records thread) waits for it instead of failing with
/// "database is locked": its transaction takes the write lock at the start.
#[test]
fn a_read_then_write_transaction_waits_for_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dms.sqlite");
    let s = Store::open(&path).unwrap();
    s.onboarding()
        .put(&OnboardingRecord {
            resources: res(1000, None),
            onboarded_at_ms: 1,
            details: String::new(),
        })
        .unwrap();
    s.reservations().insert(&reservation("r1", None)).unwrap();
    let other = Store::open(&path).unwrap();
    let (began, go) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        other.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        other
            .conn
            .execute(
                "INSERT INTO reservations (id, state, cpu_millicores, ram_bytes, disk_bytes, created_at_ms, updated_at_ms) VALUES ('r3', 'allocated', 1, 1, 1, 1, 1)",
                [],
            )
            .unwrap();
        began.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        other.conn.execute_batch("COMMIT").unwrap();
    });
    go.recv().unwrap();
    let dropped = s.onboarding().delete().unwrap();
    writer.join().unwrap();
    assert_eq!(dropped, vec!["r1".to_string(), "r3".to_string()]);
}
