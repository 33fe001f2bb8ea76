//! The resource behaviors with hostile arguments, through the actor system as a remote call
//! would reach them, over a real SQLite database.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nunet_capability::Anchors;
use nunet_did::Keypair;
use nunet_resources::hardware::LocalHardware;
use nunet_store::OnboardingRecord;

use super::*;

/// An onboarded manager (4 cores, 8 GiB RAM, 10 GiB disk) over a database in `dir`.
pub(crate) fn manager(dir: &std::path::Path) -> SharedManager {
    let store = Store::open(&dir.join("dms.sqlite")).unwrap();
    let mut acct = Accounting::open(store).unwrap();
    acct.onboard(OnboardingRecord {
        resources: Resources {
            cpu_millicores: 4000,
            ram_bytes: 8 << 30,
            disk_bytes: 10 << 30,
            gpus: BTreeMap::new(),
        },
        onboarded_at_ms: 0,
        details: "{}".into(),
    })
    .unwrap();
    let hw = Arc::new(LocalHardware::new(dir));
    Arc::new(Mutex::new(ResourceManager::new(acct, hw, dir.into(), None)))
}

/// An actor system without network whose root is its own anchor.
pub(crate) fn system(seed: u8) -> ActorSystem {
    let key = Keypair::from_seed(&[seed; 32]);
    ActorSystem::new(
        key.clone(),
        Anchors::new(key.did()),
        nunet_actor::SystemConfig::default(),
    )
}

async fn call(s: &ActorSystem, be: &str, payload: Value) -> Result<Value, ActorError> {
    s.invoke("root", s.root(), be, payload, Duration::from_secs(10))
        .await
}

#[tokio::test]
async fn a_huge_ttl_is_refused_and_the_manager_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let s = system(11);
    register(&s, m.clone(), Arc::new(NoWorkloads)).unwrap();
    for ttl in [json!(1e300), json!(-5), json!(1e18), json!("NaN"), json!(0)] {
        let e = call(
            &s,
            "/dms/node/resources/commit",
            json!({"id": "c", "cpu": 1, "ttl": ttl}),
        )
        .await
        .unwrap_err();
        assert!(e.message.contains("--ttl"), "{ttl}: {}", e.message);
    }
    // Nothing was locked, and the manager still answers.
    let free = call(&s, "/dms/node/resources/free", json!({}))
        .await
        .unwrap();
    assert_eq!(free["cpu"]["millicores"], 4000);
    let ok = call(
        &s,
        "/dms/node/resources/commit",
        json!({"id": "c", "cpu": 1, "ttl": 30}),
    )
    .await
    .unwrap();
    let left = ok["expires_at_ms"].as_i64().unwrap() - now_ms();
    assert!((25_000..=30_000).contains(&left), "{left}");
}

#[tokio::test]
async fn a_panic_under_the_lock_fails_one_call_not_the_next_ones() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let r: Result<(), ActorError> = with(m.clone(), |g| {
        g.accounting_mut()
            .commit("half", Resources::default(), now_ms(), now_ms())
            .unwrap();
        panic!("a bug while the manager is locked")
    })
    .await;
    assert!(r.is_err());
    let committed = with(m.clone(), |g| Ok(g.accounting().committed()))
        .await
        .unwrap();
    assert_eq!(committed.cpu_millicores, 0);
    assert!(is_onboarded(&m));
    // What the panicking call had written is still known (read back from the database).
    let ids = with(m, |g| {
        Ok(g.accounting()
            .reservations()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert_eq!(ids, ["half"]);
}
