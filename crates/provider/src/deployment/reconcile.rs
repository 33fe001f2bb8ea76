//! Reconciliation of a restarted provider with what is actually wanted and running.
//!
//! A daemon that crashed while it ran allocations finds their records at the next start. For
//! each one still `running` or `pending` it (1) asks the executor whether the execution still
//! exists — gone means the allocation failed, and the exit is reported; (2) rebuilds the
//! subnets of what is left and cleans the rest; (3) asks the allocation's orchestrator
//! (`/dms/ensemble/<id>/allocation/check`) whether it is still wanted, and terminates it
//! (execution, subnet, resources, record, actor) when it is not, or when the orchestrator
//! stays unreachable for [`ORCHESTRATOR_GRACE`]: a provider must not run allocations forever
//! for an orchestrator that is gone.
//!
//! It must not start executions or change what the orchestrator decided: it only stops what
//! nobody wants. Every status change is persisted before the executor or subnet is touched.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use nunet_actor::{ActorError, ErrorKind};
use nunet_executor::{Executor, ExecutorError};
use nunet_protocol::AllocationStatus;
use nunet_protocol::call;
use nunet_protocol::calls::Check;
use nunet_protocol::{AllocationCheck, AllocationWanted};
use tokio::time::Instant;
use tracing::Instrument;

use super::{AllocRecord, Provider};

/// How long a restarted provider keeps asking an unreachable orchestrator about an
/// allocation before it terminates it.
pub(super) const ORCHESTRATOR_GRACE: Duration = Duration::from_secs(120);
/// First pause between two questions; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest pause between two questions.
const MAX_RETRY: Duration = Duration::from_secs(15);
/// How long one question may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do with a restored allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The orchestrator still wants it.
    Keep,
    /// Terminate it, for this reason.
    Drop(String),
}

/// The verdict one answer of the orchestrator gives, or `None` when asking again may help
/// (timeouts, unreachable peers, a deployment not restored yet, a garbled answer).
pub(super) fn judge(answer: &Result<AllocationWanted, ActorError>) -> Option<Verdict> {
    match answer {
        Ok(a) if a.wanted => Some(Verdict::Keep),
        Ok(a) => {
            Some(Verdict::Drop(a.reason.clone().unwrap_or_else(|| {
                "the orchestrator no longer wants it".into()
            })))
        }
        Err(e) if e.kind == ErrorKind::Denied => Some(Verdict::Drop(format!(
            "the orchestrator refused to acknowledge it: {}",
            e.message
        ))),
        Err(_) => None,
    }
}

/// Asks with `ask` until an answer is decisive ([`judge`]), pausing `first`, then twice as
/// long each time (at most [`MAX_RETRY`]); after `grace` without a decisive answer, drops.
pub(super) async fn ask_until<F, Fut>(grace: Duration, first: Duration, mut ask: F) -> Verdict
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<AllocationWanted, ActorError>>,
{
    let t0 = Instant::now();
    let mut pause = first;
    let mut tries = 0u32;
    loop {
        let answer = ask().await;
        tries += 1;
        if let Some(v) = judge(&answer) {
            return v;
        }
        let last = match answer {
            Err(e) => e.to_string(),
            Ok(v) => format!("undecided answer {v:?}"),
        };
        if t0.elapsed() + pause > grace {
            return Verdict::Drop(format!(
                "the orchestrator gave no answer in {} s ({tries} tries; last: {last})",
                grace.as_secs_f32()
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY);
    }
}

fn snapshot(cell: &Arc<Mutex<AllocRecord>>) -> Option<AllocRecord> {
    cell.lock().ok().map(|r| r.clone())
}

impl Provider {
    /// After a restart, for the restored allocations that were `running` or `pending`:
    /// executor check (resuming supervision of what still runs), subnets, then one question
    /// per allocation to its orchestrator, all in parallel.
    pub(super) async fn reconcile(self: Arc<Self>, cells: Vec<Arc<Mutex<AllocRecord>>>) {
        let mut held = Vec::new();
        for cell in cells {
            let Some(rec) = snapshot(&cell) else { continue };
            let Some(exec) = self.executors.get(rec.execution.executor()).cloned() else {
                let why = format!("no {} executor after the restart", rec.execution.executor());
                self.lost(&cell, why).await;
                continue;
            };
            if rec.status == AllocationStatus::Running {
                match exec.inspect(&rec.id).await {
                    Err(ExecutorError::NotFound(_)) => {
                        let why = "its execution was gone when the node restarted".to_string();
                        self.lost(&cell, why).await;
                        // A supervised one still holds its resources: its orchestrator is
                        // asked below whether it restarts it or lets it go.
                        if !rec.keep_on_exit {
                            continue;
                        }
                    }
                    _ => {
                        let g = rec.generation;
                        let watch = self.clone().watch(cell.clone(), exec.clone(), g);
                        tokio::spawn(watch.instrument(super::alloc::span_of(&cell)));
                        if rec.healthcheck.is_some() {
                            let loop_ = self.clone().health_loop(cell.clone(), exec.clone(), g);
                            tokio::spawn(loop_.instrument(super::alloc::span_of(&cell)));
                        }
                    }
                }
            }
            held.push((cell, exec));
        }
        self.restore_subnets().await;
        self.restore_volumes().await;
        let checks = held
            .into_iter()
            .map(|(cell, exec)| self.reconcile_one(cell, exec, ORCHESTRATOR_GRACE));
        join_all(checks).await;
    }

    /// A running allocation whose execution is gone: failed (persisted first), off the
    /// subnet, resources released (kept for a supervised one, which its orchestrator may
    /// restart in place), exit reported to the orchestrator.
    async fn lost(&self, cell: &Arc<Mutex<AllocRecord>>, why: String) {
        tracing::warn!(allocation = ?snapshot(cell).map(|r| r.id), "{why}: marking it failed");
        self.set(cell, |r| {
            r.status = AllocationStatus::Failed;
            r.reason = Some(why);
        });
        let Some(rec) = snapshot(cell) else { return };
        if rec.keep_on_exit {
            // Supervised: resources, ports and subnet stay for its restart in place.
            self.subnets.detach(&rec.ensemble_id, &rec.id).await;
        } else {
            self.off_subnet(cell).await;
            self.release_async(&rec.id).await;
        }
        self.reports.exit(&rec).await;
    }

    /// Asks the orchestrator about one allocation and terminates it unless it is wanted.
    async fn reconcile_one(
        &self,
        cell: Arc<Mutex<AllocRecord>>,
        exec: Arc<dyn Executor>,
        grace: Duration,
    ) {
        let Some(rec) = snapshot(&cell) else { return };
        let question = AllocationCheck {
            ensemble_id: rec.ensemble_id.clone(),
            allocation_id: rec.id.clone(),
        };
        let verdict = ask_until(grace, FIRST_RETRY, || {
            let (to, question) = (rec.orchestrator.clone(), &question);
            // Sized on each try: right after a restart the orchestrator is not measured yet.
            let check_timeout = self.reports.timeout(CHECK_TIMEOUT, &rec);
            let ended = snapshot(&cell).is_none_or(|r| !r.status.is_active());
            async move {
                if ended {
                    // It ended meanwhile (exit, shutdown, revert): nothing left to decide.
                    return Ok(AllocationWanted::yes());
                }
                call::invoke_in::<Check>(
                    &self.system,
                    "root",
                    to,
                    &question.ensemble_id,
                    question,
                    check_timeout,
                )
                .await
            }
        })
        .await;
        match verdict {
            Verdict::Keep if snapshot(&cell).is_some_and(|r| r.status.is_active()) => {
                tracing::info!(allocation = %rec.id, ensemble = %rec.ensemble_id,
                    "restored allocation kept: its orchestrator still wants it");
            }
            Verdict::Keep => {
                tracing::debug!(allocation = %rec.id, "restored allocation ended meanwhile");
            }
            Verdict::Drop(why) => {
                tracing::warn!(allocation = %rec.id, ensemble = %rec.ensemble_id,
                    "terminating a restored allocation that its orchestrator no longer wants: {why}");
                self.drop_restored(&cell, &exec).await;
            }
        }
    }

    /// Terminates a restored allocation and forgets it (as a revert does).
    async fn drop_restored(&self, cell: &Arc<Mutex<AllocRecord>>, exec: &Arc<dyn Executor>) {
        let Some(rec) = snapshot(cell) else { return };
        let held = self
            .allocs
            .lock()
            .is_ok_and(|m| m.get(&rec.id).is_some_and(|c| Arc::ptr_eq(c, cell)));
        if !held || !rec.status.is_active() {
            return; // reverted, shut down or ended meanwhile
        }
        self.terminate(cell, exec).await;
        if let Ok(mut m) = self.allocs.lock() {
            m.remove(&rec.id);
        }
        self.system.stop_child(&rec.inbox);
        self.forget(&rec.id);
        self.ensemble_behaviors_down_if_gone(&rec.ensemble_id);
        self.subnet_down_if_gone(&rec.ensemble_id).await;
        self.volumes_down_if_gone(&rec.ensemble_id).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn err(kind: ErrorKind) -> Result<AllocationWanted, ActorError> {
        Err(ActorError::new(kind, "x"))
    }

    #[test]
    fn answers_decide_and_transport_errors_do_not() {
        assert_eq!(judge(&Ok(AllocationWanted::yes())), Some(Verdict::Keep));
        assert_eq!(
            judge(&Ok(AllocationWanted::no("deployment d is Failed"))),
            Some(Verdict::Drop("deployment d is Failed".into()))
        );
        assert!(matches!(
            judge(&err(ErrorKind::Denied)),
            Some(Verdict::Drop(_))
        ));
        for k in [
            ErrorKind::Timeout,
            ErrorKind::Unreachable,
            ErrorKind::NotFound,
            ErrorKind::Failed,
            ErrorKind::Rejected,
        ] {
            assert_eq!(judge(&err(k)), None, "{k:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_orchestrator_is_retried_with_backoff_then_given_up() {
        let calls = AtomicU32::new(0);
        let t0 = std::time::Instant::now();
        let v = ask_until(
            Duration::from_millis(400),
            Duration::from_millis(20),
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { err(ErrorKind::Unreachable) }
            },
        )
        .await;
        let n = calls.load(Ordering::SeqCst);
        let Verdict::Drop(why) = v else {
            panic!("kept")
        };
        assert!(
            why.contains("no answer") && why.contains("Unreachable"),
            "{why}"
        );
        // 20 + 40 + 80 + 160 ms pauses fit in 400 ms, the next (320) does not: 5 tries,
        // not a busy loop, and not much past the grace.
        assert_eq!(n, 5, "{why}");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn a_late_answer_after_failures_is_taken() {
        let calls = AtomicU32::new(0);
        let v = ask_until(Duration::from_secs(5), Duration::from_millis(5), || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    err(ErrorKind::Timeout)
                } else {
                    Ok(AllocationWanted::yes())
                }
            }
        })
        .await;
        assert_eq!(v, Verdict::Keep);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
