//! Allocation actors on the provider: each allocation is a child actor with its own key
//! that answers only its orchestrator (`/dms/allocation/{start,status,logs,shutdown,
//! restart,output/share}`);
//! starting attaches it to the ensemble subnet when there is one, and a watcher keeps its
//! output, removes the finished execution and reports the exit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nunet_actor::{ActorError, Handle, Incoming};
use nunet_ensemble::Execution;
use nunet_executor::Executor;
use nunet_protocol::call;
use nunet_protocol::calls::{
    AllocationLogsCall, AllocationRestart, AllocationShareOutput, AllocationShutdown,
    AllocationStart, AllocationStatusCall,
};
use nunet_protocol::transfer::{FetchInput, StartRequest};
use nunet_protocol::{AllocationOutput, AllocationState, AllocationStatus};
use tracing::Instrument;

use super::exec::spec_of;
use super::{AllocRecord, Provider, control, failed, provision};

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
        // The allocation's output: made here, with the record (and only here).
        match self.output.spools().open(&rec.id) {
            Ok(s) => s.set_state(super::output::state_of(&rec)),
            Err(e) => tracing::warn!(allocation = %rec.id, error = %e, "its output is not kept"),
        }
        let cell = Arc::new(Mutex::new(rec));
        if let Ok(mut m) = self.allocs.lock() {
            m.insert(id, cell.clone());
        }
        self.ensemble_behaviors_up(&ensemble_id);
        let state = (self.clone(), cell);
        let sys = &self.system;
        let r = [
            call::register::<AllocationStart, _, _, _>(
                sys,
                &inbox,
                state.clone(),
                |(p, c), m, req| async move { p.start(&c, &m, req).instrument(span_of(&c)).await },
            ),
            call::register::<AllocationShareOutput, _, _, _>(
                sys,
                &inbox,
                state.clone(),
                |(p, c), m, req| async move {
                    p.share_output(&c, &m, req).instrument(span_of(&c)).await
                },
            ),
            call::register::<AllocationStatusCall, _, _, _>(
                sys,
                &inbox,
                state.clone(),
                |(p, c), m, _| async move {
                    let (rec, _) = p.own(&c, &m)?;
                    Ok(AllocationState {
                        status: rec.status,
                        exit_code: rec.exit_code,
                        reason: rec.reason,
                        health: rec.health,
                        restarts: rec.restarts,
                    })
                },
            ),
            call::register::<AllocationLogsCall, _, _, _>(
                sys,
                &inbox,
                state.clone(),
                |(p, c), m, _| async move {
                    let (rec, _) = p.own(&c, &m)?;
                    let (stdout, stderr) = p.tails(&rec.id, (&rec.stdout, &rec.stderr));
                    Ok(AllocationOutput {
                        status: rec.status,
                        stdout,
                        stderr,
                    })
                },
            ),
            call::register::<AllocationRestart, _, _, _>(
                sys,
                &inbox,
                state.clone(),
                |(p, c), m, _| async move { p.restart(&c, &m).instrument(span_of(&c)).await },
            ),
            call::register::<AllocationShutdown, _, _, _>(
                sys,
                &inbox,
                state,
                |(p, c), m, _| async move {
                    let (_, exec) = p.own(&c, &m)?;
                    p.terminate(&c, &exec).instrument(span_of(&c)).await;
                    Ok(AllocationState::of(AllocationStatus::Terminated))
                },
            ),
        ];
        if let Some(Err(e)) = r.into_iter().find(Result::is_err) {
            tracing::warn!(inbox = %inbox, error = %e.message, "allocation actor behaviours not registered");
        }
        handle
    }

    /// The record and executor of the allocation in `cell`, after checking that `m` comes
    /// from its orchestrator.
    pub(super) fn own(
        &self,
        cell: &Arc<Mutex<AllocRecord>>,
        m: &Incoming,
    ) -> Result<(AllocRecord, Arc<dyn Executor>), ActorError> {
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
        Ok((rec, exec))
    }

    /// `/dms/allocation/start`: prepares the execution, attaches it to the ensemble subnet
    /// when there is one, starts it and watches it (idempotent once started).
    async fn start(
        self: &Arc<Self>,
        cell: &Arc<Mutex<AllocRecord>>,
        m: &Incoming,
        req: StartRequest,
    ) -> Result<AllocationState, ActorError> {
        let (rec, exec) = self.own(cell, m)?;
        if rec.status != AllocationStatus::Pending {
            return Ok(AllocationState::of(rec.status));
        }
        self.launch(cell, rec, exec, &req.inputs).await
    }

    /// `/dms/allocation/restart`: stops the execution if it still runs and starts it again
    /// with the same resources, public ports, subnet address and `.internal` name. Only an
    /// allocation that still holds its resources can be restarted (a running one, or one
    /// allocated with `keep_on_exit` that ended); a terminated one cannot.
    async fn restart(
        self: &Arc<Self>,
        cell: &Arc<Mutex<AllocRecord>>,
        m: &Incoming,
    ) -> Result<AllocationState, ActorError> {
        let (rec, exec) = self.own(cell, m)?;
        if !rec.holds() {
            return Err(failed(format!(
                "allocation {} is {} and holds no resources here any more: it cannot be restarted",
                rec.id, rec.status
            )));
        }
        self.refuse_while_offboarding()?;
        // Pending first: the watcher and health loop of the old execution stand down.
        self.set(cell, |r| {
            r.status = AllocationStatus::Pending;
            r.generation += 1;
            r.restarts += 1;
            r.exit_code = None;
            r.reason = None;
            r.health = None;
        });
        if rec.status == AllocationStatus::Running {
            let _ = exec.stop(&rec.id, Duration::from_secs(5)).await;
        }
        let _ = exec.remove(&rec.id).await;
        self.subnets.detach(&rec.ensemble_id, &rec.id).await;
        let rec = cell.lock().map_err(|_| failed("poisoned"))?.clone();
        // Inputs fetched from other allocations are staged already and reused.
        let r = self.launch(cell, rec, exec, &[]).await;
        if let Err(e) = &r {
            // Still held: the orchestrator may try again or shut it down.
            self.set(cell, |r| {
                if r.status == AllocationStatus::Pending {
                    r.status = AllocationStatus::Failed;
                    r.reason = Some(format!("restart failed: {}", e.message));
                }
            });
        }
        r
    }

    /// Prepares the execution of a pending allocation, attaches it to the ensemble subnet
    /// when there is one, starts it, and watches it (and its health, when it has a check).
    async fn launch(
        self: &Arc<Self>,
        cell: &Arc<Mutex<AllocRecord>>,
        rec: AllocRecord,
        exec: Arc<dyn Executor>,
        fetch: &[FetchInput],
    ) -> Result<AllocationState, ActorError> {
        self.refuse_while_offboarding()?;
        let mut spec = spec_of(&rec, &self.files)?;
        if let nunet_executor::Workload::Vm(vm) = &mut spec.workload {
            let data = self.vm_data_disks(&rec, fetch).await?;
            for (disk, arg) in self.volumes.disks(&rec).await?.into_iter().chain(data) {
                vm.kernel_args.push(' ');
                vm.kernel_args.push_str(&arg);
                vm.disks.push(disk);
            }
            // x86 Linux reads 2048 bytes of command line; past that, the arguments the
            // provider adds last (console, root, ip) would be cut off.
            if vm.kernel_args.len() > super::exec::MAX_KERNEL_LINE {
                return Err(failed(format!(
                    "the kernel command line with the volumes' arguments is {} bytes; at most {}",
                    vm.kernel_args.len(),
                    super::exec::MAX_KERNEL_LINE
                )));
            }
        } else {
            spec.mounts.extend(self.volumes.mounts(&rec).await?);
            spec.mounts.extend(self.data_mounts(&rec, fetch).await?);
        }
        exec.prepare(&spec).await.map_err(failed)?;
        match rec.execution {
            Execution::Docker(_) => self.subnets.attach(&rec.ensemble_id, &mut spec).await,
            Execution::Firecracker(_) => self.subnets.attach_vm(&rec.ensemble_id, &mut spec).await,
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
            // `spec_of` refuses containerd before this (providers also decline it at bid time).
            Execution::Containerd(_) | Execution::Null => Ok(false),
        }
        .map_err(failed)?;
        if let Err(e) = exec.start(&spec).await {
            self.subnets.detach(&rec.ensemble_id, &rec.id).await;
            return Err(failed(e));
        }
        // Terminated (shutdown, revert, offboard) while it was being started: it must not
        // run on without a reservation.
        let mut started = None;
        self.set(cell, |r| {
            if r.status == AllocationStatus::Pending && r.generation == rec.generation {
                r.status = AllocationStatus::Running;
                r.health = r.healthcheck.as_ref().map(super::health::initial);
                started = Some(r.generation);
            }
        });
        let Some(generation) = started else {
            let _ = exec.stop(&rec.id, Duration::from_secs(5)).await;
            let _ = exec.remove(&rec.id).await;
            self.subnets.detach(&rec.ensemble_id, &rec.id).await;
            let now = cell
                .lock()
                .map(|r| r.status)
                .unwrap_or(AllocationStatus::Terminated);
            return Ok(AllocationState::of(now));
        };
        if rec.healthcheck.is_some() {
            tokio::spawn(
                self.clone()
                    .health_loop(cell.clone(), exec.clone(), generation)
                    .instrument(span_of(cell)),
            );
        }
        let watch = self.clone().watch(cell.clone(), exec, generation);
        tokio::spawn(watch.instrument(span_of(cell)));
        Ok(AllocationState::of(AllocationStatus::Running))
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
        self.spool_state(&snap);
    }

    /// Waits for the execution to end; keeps its output, removes it, releases its resources.
    pub(super) async fn watch(
        self: Arc<Self>,
        cell: Arc<Mutex<AllocRecord>>,
        exec: Arc<dyn Executor>,
        generation: u64,
    ) {
        let id = match cell.lock() {
            Ok(r) => r.id.clone(),
            Err(_) => return,
        };
        // Output goes into the allocation's spool while it runs (history first, so what it
        // wrote before this watcher began is kept too).
        let pump = match self.spool(&id) {
            Ok(s) => Some(super::output::Pump::start(s, exec.clone(), &id, generation)),
            Err(e) => {
                tracing::warn!(allocation = %id, error = %e.message, "its output is not kept");
                None
            }
        };
        let outcome = exec.wait(&id).await;
        if let Some(p) = pump {
            p.drain().await;
        }
        let kept = cell
            .lock()
            .map(|r| (r.stdout.clone(), r.stderr.clone()))
            .unwrap_or_default();
        let (stdout, stderr) = self.tails(&id, (&kept.0, &kept.1));
        // Terminated, or restarted meanwhile: this execution's end is nobody's news.
        let current = || {
            cell.lock()
                .map(|r| r.status == AllocationStatus::Running && r.generation == generation)
                .unwrap_or(false)
        };
        if !current() {
            // Its output is drained: a terminated one's followers may now learn it ended.
            if let Ok(rec) = cell.lock().map(|r| r.clone())
                && rec.status == AllocationStatus::Terminated
            {
                self.spool_final(&rec);
            }
            return;
        }
        // A task that succeeded publishes its outputs before it is reported Completed.
        let snapshot = cell.lock().map(|r| r.clone()).ok();
        let published = match (&outcome, snapshot) {
            (Ok(s), Some(rec)) if s.success() && !rec.outputs.is_empty() => {
                Some(self.publish_outputs(&rec).await)
            }
            _ => None,
        };
        // Still this execution's after the upload (it may have been terminated meanwhile).
        if !current() {
            return;
        }
        self.set(&cell, |r| {
            r.stdout = stdout;
            r.stderr = stderr;
            match &outcome {
                Ok(s) if s.success() => match &published {
                    Some(Err(e)) => {
                        r.status = AllocationStatus::Failed;
                        r.exit_code = Some(0);
                        r.reason = Some(e.clone());
                    }
                    Some(Ok(to)) if !to.is_empty() => {
                        r.status = AllocationStatus::Completed;
                        r.exit_code = Some(0);
                        r.reason = Some(format!("outputs published to {}", to.join(", ")));
                    }
                    Some(Ok(_)) | None => {
                        r.status = AllocationStatus::Completed;
                        r.exit_code = Some(0);
                    }
                },
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
        let keep = cell.lock().map(|r| r.keep_on_exit).unwrap_or(false);
        if keep {
            // Resources, ports and the subnet stay for a restart in place.
            let ensemble = cell
                .lock()
                .map(|r| r.ensemble_id.clone())
                .unwrap_or_default();
            self.subnets.detach(&ensemble, &id).await;
        } else {
            self.off_subnet(&cell).await;
            self.release_async(&id).await;
        }
        let done = cell.lock().map(|r| r.clone()).ok();
        if let Some(done) = done {
            self.reports.exit(&done).await;
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
        if was != AllocationStatus::Running {
            // No watcher drains an execution: followers learn the end now.
            if let Ok(rec) = cell.lock().map(|r| r.clone()) {
                self.spool_final(&rec);
            }
        }
        let _ = exec.remove(&id).await;
        self.off_subnet(cell).await;
        self.release_async(&id).await;
    }
}

/// The span every log line about one allocation carries (`ensemble`, `allocation` ids).
pub(super) fn span_of(cell: &Arc<Mutex<AllocRecord>>) -> tracing::Span {
    match cell.lock() {
        Ok(r) => tracing::info_span!(
            "allocation",
            ensemble = %r.ensemble_id,
            allocation = %r.id,
            trace_root = %r.ensemble_id
        ),
        Err(_) => tracing::Span::none(),
    }
}
