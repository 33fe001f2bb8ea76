//! Allocation actors on the provider: each allocation is a child actor with its own key
//! that answers only its orchestrator (`/dms/allocation/{start,status,logs,shutdown}`);
//! starting attaches it to the ensemble subnet when there is one, and a watcher keeps its
//! output, removes the finished execution and reports the exit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nunet_actor::{ActorError, Behavior, Handle, Incoming};
use nunet_ensemble::Execution;
use nunet_executor::Executor;
use nunet_protocol::AllocationStatus;
use nunet_protocol::names::{
    ALLOCATION_LOGS, ALLOCATION_SHUTDOWN, ALLOCATION_START, ALLOCATION_STATUS,
};
use serde_json::{Value, json};

use super::exec::{read_logs, spec_of};
use super::{AllocRecord, Provider, control, failed, notify, provision};

impl Provider {
    /// Creates (or re-creates after a restart) the allocation actor and its behaviors.
    pub(super) fn adopt(self: &Arc<Self>, rec: AllocRecord) -> Handle {
        let handle = self.system.spawn_child_at(
            &rec.inbox,
            self.system.child_key(&rec.inbox),
            &[],
            &[],
            Duration::ZERO,
        );
        let inbox = rec.inbox.clone();
        let id = rec.id.clone();
        let ensemble_id = rec.ensemble_id.clone();
        self.persist(&rec);
        let cell = Arc::new(Mutex::new(rec));
        if let Ok(mut m) = self.allocs.lock() {
            m.insert(id, cell.clone());
        }
        self.ensemble_behaviors_up(&ensemble_id);
        for be in [
            ALLOCATION_START,
            ALLOCATION_STATUS,
            ALLOCATION_LOGS,
            ALLOCATION_SHUTDOWN,
        ] {
            let p = self.clone();
            let c = cell.clone();
            let _ = self.system.register(
                &inbox,
                be,
                Behavior::direct(move |m: Incoming| {
                    let (p, c) = (p.clone(), c.clone());
                    async move { p.allocation_call(be, &c, &m).await }
                }),
            );
        }
        handle
    }

    pub(super) async fn allocation_call(
        self: &Arc<Self>,
        be: &str,
        cell: &Arc<Mutex<AllocRecord>>,
        m: &Incoming,
    ) -> Result<Value, ActorError> {
        let rec = cell.lock().map_err(|_| failed("poisoned"))?.clone();
        if rec.orchestrator.id != m.sender.as_str() {
            return Err(ActorError::new(
                nunet_actor::ErrorKind::Denied,
                "only the allocation's orchestrator may call it",
            ));
        }
        let exec = self
            .executors
            .get(rec.execution.executor())
            .cloned()
            .ok_or_else(|| failed("executor gone"))?;
        match be {
            ALLOCATION_START => {
                if rec.status != AllocationStatus::Pending {
                    return Ok(json!({"status": rec.status}));
                }
                let mut spec = spec_of(&rec, &self.files)?;
                exec.prepare(&spec).await.map_err(failed)?;
                match rec.execution {
                    Execution::Docker(_) => self.subnets.attach(&rec.ensemble_id, &mut spec).await,
                    Execution::Firecracker(_) => {
                        self.subnets.attach_vm(&rec.ensemble_id, &mut spec).await
                    }
                    Execution::Wasm(_) => {
                        let on = self.subnets.attach_wasm(&rec.ensemble_id, &mut spec).await;
                        if matches!(on, Ok(false)) && !rec.ports.is_empty() {
                            return Err(failed(
                                "public ports of a WASM allocation are forwarded to its address \
                                 on the ensemble subnet, and this provider has no subnet for it",
                            ));
                        }
                        on
                    }
                    Execution::Null => Ok(false),
                }
                .map_err(failed)?;
                if let Err(e) = exec.start(&spec).await {
                    self.subnets.detach(&rec.ensemble_id, &rec.id).await;
                    return Err(failed(e));
                }
                self.set(cell, |r| r.status = AllocationStatus::Running);
                tokio::spawn(self.clone().watch(cell.clone(), exec));
                Ok(json!({"status": "running"}))
            }
            ALLOCATION_STATUS => {
                Ok(json!({"status": rec.status, "exit_code": rec.exit_code, "reason": rec.reason}))
            }
            ALLOCATION_LOGS => {
                if rec.status == AllocationStatus::Running {
                    let (stdout, stderr) = read_logs(&exec, &rec.id).await;
                    return Ok(json!({"status": rec.status, "stdout": stdout, "stderr": stderr}));
                }
                Ok(json!({"status": rec.status, "stdout": rec.stdout, "stderr": rec.stderr}))
            }
            _ => {
                self.terminate(cell, &exec).await;
                Ok(json!({"status": "terminated"}))
            }
        }
    }

    pub(super) fn set(&self, cell: &Arc<Mutex<AllocRecord>>, f: impl FnOnce(&mut AllocRecord)) {
        let snap = match cell.lock() {
            Ok(mut r) => {
                f(&mut r);
                control::stamp(&mut r);
                r.clone()
            }
            Err(_) => return,
        };
        self.persist(&snap);
    }

    /// Waits for the execution to end; keeps its output, removes it, releases its resources.
    pub(super) async fn watch(
        self: Arc<Self>,
        cell: Arc<Mutex<AllocRecord>>,
        exec: Arc<dyn Executor>,
    ) {
        let id = match cell.lock() {
            Ok(r) => r.id.clone(),
            Err(_) => return,
        };
        let outcome = exec.wait(&id).await;
        let (stdout, stderr) = read_logs(&exec, &id).await;
        let terminated = cell
            .lock()
            .map(|r| r.status == AllocationStatus::Terminated)
            .unwrap_or(true);
        if terminated {
            return;
        }
        self.set(&cell, |r| {
            r.stdout = stdout;
            r.stderr = stderr;
            match &outcome {
                Ok(s) if s.success() => {
                    r.status = AllocationStatus::Completed;
                    r.exit_code = Some(0);
                }
                Ok(s) => {
                    r.status = AllocationStatus::Failed;
                    r.exit_code = s.code;
                    r.reason =
                        Some(provision::failure(&r.stderr).unwrap_or_else(|| {
                            format!("exited: {:?}, code {:?}", s.reason, s.code)
                        }));
                }
                Err(e) => {
                    r.status = AllocationStatus::Failed;
                    r.reason = Some(e.to_string());
                }
            }
        });
        if let Err(e) = exec.remove(&id).await {
            tracing::warn!(allocation = %id, error = %e, "could not remove the finished execution");
        }
        self.off_subnet(&cell).await;
        self.release(&id);
        let done = cell.lock().map(|r| r.clone()).ok();
        if let Some(done) = done {
            notify::report_exit(&self.system, &done).await;
        }
    }

    pub(super) async fn terminate(&self, cell: &Arc<Mutex<AllocRecord>>, exec: &Arc<dyn Executor>) {
        let (id, was) = match cell.lock() {
            Ok(r) => (r.id.clone(), r.status),
            Err(_) => return,
        };
        self.set(cell, |r| r.status = AllocationStatus::Terminated);
        if was.is_active() {
            let _ = exec.stop(&id, Duration::from_secs(5)).await;
        }
        let _ = exec.remove(&id).await;
        self.off_subnet(cell).await;
        self.release(&id);
    }
}
