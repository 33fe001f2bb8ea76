//! The node's [`ResourceManager`] behind one mutex, and how a panic in one caller is kept
//! from failing every later one.
//!
//! A panic while the mutex is held poisons it. [`lock_manager`] then does not give up (that
//! answered `resource manager poisoned` to every call until a restart): it rebuilds the
//! accounting from the database ([`ResourceManager::reload`]), which every operation writes
//! before it changes memory, so the database holds exactly what was acknowledged and whatever
//! half-done change the panic left in memory is dropped. Only then is the poison cleared.
//! The rest of the manager (hardware source, reserve, location, data dir) is never changed
//! after construction, so there is nothing else to repair.

use std::sync::{Mutex, MutexGuard};

use crate::accounting::AccountingError;
use crate::onboarding::ResourceManager;

/// Locks the manager, recovering it from the database when an earlier holder panicked. If
/// the database cannot be read (or breaks the invariant), that error is returned and the
/// mutex stays poisoned, so the next caller tries again.
pub fn lock_manager(
    m: &Mutex<ResourceManager>,
) -> Result<MutexGuard<'_, ResourceManager>, AccountingError> {
    match m.lock() {
        Ok(g) => Ok(g),
        Err(poisoned) => {
            let mut g = poisoned.into_inner();
            g.reload()?;
            m.clear_poison();
            tracing::warn!(
                "resource manager recovered after a panic: accounting reloaded from the database"
            );
            Ok(g)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use nunet_store::{OnboardingRecord, Resources, Store};

    use super::*;
    use crate::Accounting;
    use crate::hardware::LocalHardware;

    fn manager(dir: &std::path::Path) -> Mutex<ResourceManager> {
        let store = Store::open(&dir.join("dms.sqlite")).unwrap();
        let mut acct = Accounting::open(store).unwrap();
        acct.onboard(OnboardingRecord {
            resources: Resources {
                cpu_millicores: 4000,
                ram_bytes: 8 << 30,
                disk_bytes: 10 << 30,
                gpus: Default::default(),
            },
            onboarded_at_ms: 0,
            details: "{}".into(),
        })
        .unwrap();
        let hw = Arc::new(LocalHardware::new(dir));
        Mutex::new(ResourceManager::new(acct, hw, dir.into(), None))
    }

    fn cpu(m: u64) -> Resources {
        Resources {
            cpu_millicores: m,
            ..Default::default()
        }
    }

    #[test]
    fn a_panic_under_the_lock_is_recovered_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        // A holder commits (database and memory), then panics before it returns.
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                let mut g = m.lock().unwrap();
                g.accounting_mut()
                    .commit("a", cpu(1000), 60_000, 0)
                    .unwrap();
                panic!("a bug in the middle of an operation");
            })
            .join()
        });
        assert!(r.is_err());
        assert!(m.is_poisoned());
        {
            let g = lock_manager(&m).unwrap();
            // The acknowledged commitment is there, read back from the database.
            assert_eq!(g.accounting().committed().cpu_millicores, 1000);
            assert_eq!(g.accounting().free().cpu_millicores, 3000);
        }
        assert!(!m.is_poisoned(), "the poison is cleared once recovered");
        let mut g = lock_manager(&m).unwrap();
        g.accounting_mut().commit("b", cpu(500), 60_000, 0).unwrap();
        assert_eq!(g.accounting().free().cpu_millicores, 2500);
    }

    #[test]
    fn commitments_cannot_outlive_the_longest_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        let mut g = lock_manager(&m).unwrap();
        let now = 1_000;
        let max = crate::accounting::MAX_COMMIT_TTL_MS;
        let e = g
            .accounting_mut()
            .commit("far", cpu(1), i64::MAX, now)
            .unwrap_err();
        assert!(e.to_string().contains("expires_at_ms"), "{e}");
        assert!(
            g.accounting_mut()
                .commit("edge", cpu(1), now + max, now)
                .is_ok()
        );
        // Saturating: a `now` near the end of time does not overflow either.
        assert!(
            g.accounting_mut()
                .commit("late", cpu(1), i64::MAX, i64::MAX - 5)
                .is_ok()
        );
    }
}
