//! Free / committed / allocated bookkeeping, per resource and per GPU device, persisted in the
//! node database before anything changes in memory: a write that fails leaves both as they
//! were, and a restarted daemon rebuilds exactly the state it acknowledged.
//!
//! Invariant (checked by the property test): for every resource and every onboarded GPU,
//! `free + committed + allocated == onboarded` and `free >= 0`.

use std::collections::{BTreeMap, BTreeSet};

use nunet_store::{OnboardingRecord, Reservation, ReservationState, Resources, Store, StoreError};
use serde::Serialize;

use crate::units::{fmt_bytes, fmt_cores};

/// Why an accounting operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    /// Nothing is onboarded.
    #[error("this node is not onboarded")]
    NotOnboarded,
    /// Already onboarded (offboard first to change the amounts).
    #[error("this node is already onboarded; offboard first to change the amounts")]
    AlreadyOnboarded,
    /// Not enough of one resource.
    #[error("{0}")]
    Insufficient(String),
    /// The request names a GPU that is not onboarded.
    #[error("GPU {0:?} is not onboarded on this node")]
    UnknownGpu(String),
    /// No reservation with that id.
    #[error("no reservation {0:?}")]
    NotFound(String),
    /// `allocate` on something that is not a commitment.
    #[error("reservation {0:?} is already allocated")]
    AlreadyAllocated(String),
    /// The id is in use.
    #[error("reservation {0:?} already exists")]
    Duplicate(String),
    /// Offboarding with allocations still recorded.
    #[error(
        "{} allocation(s) running ({}); stop them first or offboard with --force",
        .0.len(), .0.join(", ")
    )]
    AllocationsRunning(Vec<String>),
    /// A forced offboard could not stop an allocation; nothing was offboarded.
    #[error("could not stop allocation {id}: {reason}; nothing was offboarded")]
    StopFailed {
        /// The allocation.
        id: String,
        /// The executor's answer.
        reason: String,
    },
    /// The database failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state breaks the invariant (a damaged database).
    #[error("accounting invariant broken: {0}")]
    Invariant(String),
    /// A commitment would outlive [`MAX_COMMIT_TTL_MS`].
    #[error(
        "expires_at_ms {expires_at_ms} is more than {} s after now ({now_ms}); a commitment lasts at most that long",
        MAX_COMMIT_TTL_MS / 1000
    )]
    ExpiryTooFar {
        /// The expiry asked for (Unix ms).
        expires_at_ms: i64,
        /// Now (Unix ms).
        now_ms: i64,
    },
}

/// Longest a commitment may wait to be allocated (the orchestrator asks for 60 s): a longer
/// one would hold resources away from every other deployment.
pub const MAX_COMMIT_TTL_MS: i64 = 3_600_000;

/// Stops a running allocation before its resources are released on a forced offboard.
///
/// The provider (`nunet-provider`) stops every workload it runs before a forced offboard and
/// then answers [`StopOutcome::Stopped`] for those; a reservation with no workload behind it
/// (made through `/dms/node/resources/allocate` directly) is [`StopOutcome::NoExecutor`], and
/// the offboard reply lists it as released without being stopped.
pub trait AllocationStopper {
    /// Stops one allocation (idempotent: an allocation that already ended is `Stopped`).
    fn stop(&self, allocation_id: &str) -> Result<StopOutcome, String>;
}

/// What [`AllocationStopper::stop`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// The workload is stopped.
    Stopped,
    /// No workload runs for it here: the accounting entry is released, nothing was stopped.
    NoExecutor,
}

/// What a forced offboard did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OffboardReport {
    /// Allocations stopped through the executor.
    pub stopped: Vec<String>,
    /// Allocations released from the accounting with no executor to stop them.
    pub released_without_executor: Vec<String>,
    /// Commitments dropped.
    pub commitments_dropped: Vec<String>,
}

/// The accounting over an open [`Store`].
pub struct Accounting {
    store: Store,
    onboarded: Option<OnboardingRecord>,
    reservations: BTreeMap<String, Reservation>,
}

/// Sums saturate: a sum past `u64::MAX` is over any onboarded amount anyway, and the
/// invariant check reports it instead of a wrapped (small) total.
fn add(total: &mut Resources, r: &Resources) {
    total.cpu_millicores = total.cpu_millicores.saturating_add(r.cpu_millicores);
    total.ram_bytes = total.ram_bytes.saturating_add(r.ram_bytes);
    total.disk_bytes = total.disk_bytes.saturating_add(r.disk_bytes);
    for (k, v) in &r.gpus {
        let t = total.gpus.entry(k.clone()).or_default();
        *t = t.saturating_add(*v);
    }
}

impl Accounting {
    /// Rebuilds the accounting from the database and checks the invariant.
    pub fn open(store: Store) -> Result<Accounting, AccountingError> {
        let mut a = Accounting {
            store,
            onboarded: None,
            reservations: BTreeMap::new(),
        };
        a.reload()?;
        Ok(a)
    }

    /// Replaces the in-memory state with the database's and checks the invariant. The
    /// database is written before memory changes, so it holds exactly what was acknowledged:
    /// this is how the state is recovered after a panic interrupted an operation.
    pub fn reload(&mut self) -> Result<(), AccountingError> {
        self.onboarded = self.store.onboarding().get()?;
        self.reservations = self
            .store
            .reservations()
            .list()?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        self.check_invariants().map_err(AccountingError::Invariant)
    }

    /// Gives the store back (to reopen it, or for other repositories).
    pub fn into_store(self) -> Store {
        self.store
    }

    /// The store, for repositories the accounting does not own (benchmarks).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The onboarding record, if onboarded.
    pub fn onboarding(&self) -> Option<&OnboardingRecord> {
        self.onboarded.as_ref()
    }

    /// Onboarded amounts (zero when not onboarded).
    pub fn onboarded(&self) -> Resources {
        self.onboarded
            .as_ref()
            .map(|o| o.resources.clone())
            .unwrap_or_default()
    }

    fn sum(&self, state: ReservationState) -> Resources {
        let mut t = Resources::default();
        for r in self.reservations.values().filter(|r| r.state == state) {
            add(&mut t, &r.resources);
        }
        t
    }

    /// Held by commitments.
    pub fn committed(&self) -> Resources {
        self.sum(ReservationState::Committed)
    }

    /// Held by allocations.
    pub fn allocated(&self) -> Resources {
        self.sum(ReservationState::Allocated)
    }

    /// Every reservation.
    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.values()
    }

    /// `onboarded − committed − allocated`, per resource and per onboarded GPU.
    pub fn free(&self) -> Resources {
        let on = self.onboarded();
        let mut used = Resources::default();
        for r in self.reservations.values() {
            add(&mut used, &r.resources);
        }
        Resources {
            cpu_millicores: on.cpu_millicores.saturating_sub(used.cpu_millicores),
            ram_bytes: on.ram_bytes.saturating_sub(used.ram_bytes),
            disk_bytes: on.disk_bytes.saturating_sub(used.disk_bytes),
            gpus: on
                .gpus
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.saturating_sub(used.gpus.get(k).copied().unwrap_or(0)),
                    )
                })
                .collect(),
        }
    }

    /// `Ok` when committed + allocated fits in onboarded for every resource and GPU, and
    /// every reserved GPU is onboarded.
    pub fn check_invariants(&self) -> Result<(), String> {
        let on = self.onboarded();
        if self.onboarded.is_none() && !self.reservations.is_empty() {
            return Err("reservations exist but nothing is onboarded".into());
        }
        let mut used = Resources::default();
        for r in self.reservations.values() {
            add(&mut used, &r.resources);
        }
        let over = |name: &str, u: u64, o: u64| {
            (u > o).then(|| format!("{name}: {u} reserved > {o} onboarded"))
        };
        let mut errs: Vec<String> = [
            over("cpu_millicores", used.cpu_millicores, on.cpu_millicores),
            over("ram_bytes", used.ram_bytes, on.ram_bytes),
            over("disk_bytes", used.disk_bytes, on.disk_bytes),
        ]
        .into_iter()
        .flatten()
        .collect();
        for (k, u) in &used.gpus {
            match on.gpus.get(k) {
                None => errs.push(format!("GPU {k} reserved but not onboarded")),
                Some(o) => errs.extend(over(&format!("gpu {k}"), *u, *o)),
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// Records the onboarding (refused when already onboarded).
    pub fn onboard(&mut self, rec: OnboardingRecord) -> Result<(), AccountingError> {
        if self.onboarded.is_some() {
            return Err(AccountingError::AlreadyOnboarded);
        }
        self.store.onboarding().put(&rec)?;
        self.onboarded = Some(rec);
        Ok(())
    }

    /// Offboards. With allocations recorded, refused unless `force`; then each is stopped
    /// through `stopper` before everything is released. Commitments are always dropped.
    pub fn offboard(
        &mut self,
        force: bool,
        stopper: &dyn AllocationStopper,
    ) -> Result<OffboardReport, AccountingError> {
        if self.onboarded.is_none() {
            return Err(AccountingError::NotOnboarded);
        }
        let allocs: Vec<String> = self
            .reservations
            .values()
            .filter(|r| r.state == ReservationState::Allocated)
            .map(|r| r.id.clone())
            .collect();
        if !allocs.is_empty() && !force {
            return Err(AccountingError::AllocationsRunning(allocs));
        }
        let mut report = OffboardReport::default();
        for id in allocs {
            match stopper.stop(&id) {
                Ok(StopOutcome::Stopped) => report.stopped.push(id),
                Ok(StopOutcome::NoExecutor) => report.released_without_executor.push(id),
                Err(reason) => return Err(AccountingError::StopFailed { id, reason }),
            }
        }
        report.commitments_dropped = self
            .reservations
            .values()
            .filter(|r| r.state == ReservationState::Committed)
            .map(|r| r.id.clone())
            .collect();
        self.store.onboarding().delete()?;
        self.onboarded = None;
        self.reservations.clear();
        Ok(report)
    }

    /// Why `want` does not fit in what is free, naming each short resource; `None` if it fits.
    pub fn shortfall(&self, want: &Resources) -> Option<AccountingError> {
        let free = self.free();
        let on = self.onboarded();
        let mut errs = Vec::new();
        let mut short = |name: &str, w: u64, f: u64, o: u64, fmt: fn(u64) -> String| {
            if w > f {
                errs.push(format!(
                    "{name}: {} requested, {} free ({} onboarded, {} committed or allocated)",
                    fmt(w),
                    fmt(f),
                    fmt(o),
                    fmt(o.saturating_sub(f))
                ));
            }
        };
        short(
            "cpu",
            want.cpu_millicores,
            free.cpu_millicores,
            on.cpu_millicores,
            fmt_cores,
        );
        short(
            "ram",
            want.ram_bytes,
            free.ram_bytes,
            on.ram_bytes,
            fmt_bytes,
        );
        short(
            "disk",
            want.disk_bytes,
            free.disk_bytes,
            on.disk_bytes,
            fmt_bytes,
        );
        for (k, w) in &want.gpus {
            let Some(f) = free.gpus.get(k) else {
                return Some(AccountingError::UnknownGpu(k.clone()));
            };
            let o = on.gpus.get(k).copied().unwrap_or(0);
            short(&format!("gpu {k} VRAM"), *w, *f, o, fmt_bytes);
        }
        (!errs.is_empty()).then(|| AccountingError::Insufficient(errs.join("; ")))
    }

    /// Locks `resources` for `id` without allocating; lapses at `expires_at_ms` unless
    /// allocated first. Refused when `expires_at_ms` is more than [`MAX_COMMIT_TTL_MS`] after
    /// `now_ms`.
    pub fn commit(
        &mut self,
        id: &str,
        resources: Resources,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), AccountingError> {
        if expires_at_ms > now_ms.saturating_add(MAX_COMMIT_TTL_MS) {
            return Err(AccountingError::ExpiryTooFar {
                expires_at_ms,
                now_ms,
            });
        }
        self.reserve(
            id,
            resources,
            ReservationState::Committed,
            Some(expires_at_ms),
            now_ms,
        )
    }

    /// Allocates directly, without a prior commitment (a workload adopted at start).
    pub fn allocate_new(
        &mut self,
        id: &str,
        resources: Resources,
        now_ms: i64,
    ) -> Result<(), AccountingError> {
        self.reserve(id, resources, ReservationState::Allocated, None, now_ms)
    }

    fn reserve(
        &mut self,
        id: &str,
        resources: Resources,
        state: ReservationState,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), AccountingError> {
        if self.onboarded.is_none() {
            return Err(AccountingError::NotOnboarded);
        }
        if self.reservations.contains_key(id) {
            return Err(AccountingError::Duplicate(id.to_string()));
        }
        if let Some(e) = self.shortfall(&resources) {
            return Err(e);
        }
        let r = Reservation {
            id: id.to_string(),
            state,
            resources,
            expires_at_ms,
            created_at_ms: now_ms,
        };
        self.store.reservations().insert(&r).map_err(|e| match e {
            StoreError::Duplicate(id) => AccountingError::Duplicate(id),
            e => e.into(),
        })?;
        self.reservations.insert(r.id.clone(), r);
        Ok(())
    }

    /// Turns the commitment `id` into an allocation.
    pub fn allocate(&mut self, id: &str, now_ms: i64) -> Result<(), AccountingError> {
        match self.reservations.get(id).map(|r| r.state) {
            None => return Err(AccountingError::NotFound(id.to_string())),
            Some(ReservationState::Allocated) => {
                return Err(AccountingError::AlreadyAllocated(id.to_string()));
            }
            Some(ReservationState::Committed) => {}
        }
        if !self.store.reservations().mark_allocated(id, now_ms)? {
            return Err(AccountingError::Invariant(format!(
                "commitment {id} is in memory but not in the database"
            )));
        }
        if let Some(r) = self.reservations.get_mut(id) {
            r.state = ReservationState::Allocated;
            r.expires_at_ms = None;
        }
        Ok(())
    }

    /// Releases `id` (commitment or allocation): success, failure, revert or crash.
    pub fn release(&mut self, id: &str) -> Result<Reservation, AccountingError> {
        if !self.reservations.contains_key(id) {
            return Err(AccountingError::NotFound(id.to_string()));
        }
        self.store.reservations().delete(id)?;
        self.reservations
            .remove(id)
            .ok_or_else(|| AccountingError::NotFound(id.to_string()))
    }

    /// Releases every commitment whose expiry is at or before `now_ms`; returns their ids.
    pub fn expire(&mut self, now_ms: i64) -> Result<Vec<String>, AccountingError> {
        let due: Vec<String> = self
            .reservations
            .values()
            .filter(|r| {
                r.state == ReservationState::Committed
                    && r.expires_at_ms.is_some_and(|e| e <= now_ms)
            })
            .map(|r| r.id.clone())
            .collect();
        self.release_all(&due)?;
        Ok(due)
    }

    fn release_all(&mut self, ids: &[String]) -> Result<(), AccountingError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.store.reservations().delete_many(ids)?;
        for id in ids {
            self.reservations.remove(id);
        }
        Ok(())
    }

    /// At start: drops lapsed commitments and, when the set of running allocations is known,
    /// releases allocations that are no longer running. `running = None` means no executor
    /// can tell (allocations are kept). Returns the released ids.
    pub fn reconcile(
        &mut self,
        running: Option<&BTreeSet<String>>,
        now_ms: i64,
    ) -> Result<Vec<String>, AccountingError> {
        let mut released = self.expire(now_ms)?;
        if let Some(running) = running {
            let gone: Vec<String> = self
                .reservations
                .values()
                .filter(|r| r.state == ReservationState::Allocated && !running.contains(&r.id))
                .map(|r| r.id.clone())
                .collect();
            self.release_all(&gone)?;
            released.extend(gone);
        }
        Ok(released)
    }
}
