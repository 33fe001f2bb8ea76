//! Running one instance: store with limits, WASI context, the call, and how it ended.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nunet_executor::{CpuBudget, ExitReason, ExitStatus};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{
    FsPerms, I32Exit, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use crate::module::Prepared;

/// Memory limiter that remembers it said no.
pub(crate) struct Limits {
    memory: Option<usize>,
    control: Arc<Control>,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        match self.memory {
            Some(limit) if desired > limit => {
                self.control.memory_hit.store(true, Ordering::SeqCst);
                Err(wasmtime::Error::msg(format!(
                    "memory limit of {limit} bytes exceeded (wanted {desired})"
                )))
            }
            _ => Ok(true),
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// Store data for WASI preview 1 modules.
pub struct P1State {
    pub(crate) wasi: WasiP1Ctx,
    limits: Limits,
}

/// Store data for WASI preview 2 components.
pub struct P2State {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: Limits,
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Shared between a running instance and the executor.
#[derive(Default)]
pub(crate) struct Control {
    /// Set by `stop`; the next epoch tick traps.
    pub(crate) stop: AtomicBool,
    /// Set by the limiter.
    pub(crate) memory_hit: AtomicBool,
    /// Set when the running-time budget ran out.
    pub(crate) time_hit: AtomicBool,
}

/// Everything one run needs.
pub(crate) struct Job {
    pub(crate) prepared: Prepared,
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    /// Host dir, guest path, read-only.
    pub(crate) preopens: Vec<(PathBuf, String, bool)>,
    pub(crate) stdout: File,
    pub(crate) stderr: File,
    pub(crate) memory: Option<usize>,
    pub(crate) cpu: Option<CpuBudget>,
    pub(crate) control: Arc<Control>,
    /// The network namespace to run in: the guest may then use sockets (there only).
    pub(crate) netns: Option<File>,
}

fn wasi_builder(job: &Job) -> wasmtime::Result<WasiCtxBuilder> {
    let mut b = WasiCtxBuilder::new();
    b.args(&job.argv)
        .envs(&job.env)
        .stdout(OutputFile::new(job.stdout.try_clone()?))
        .stderr(OutputFile::new(job.stderr.try_clone()?));
    for (host, guest, read_only) in &job.preopens {
        let perms = if *read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(host, guest, perms)?;
    }
    if job.netns.is_some() {
        // The thread runs in the allocation's own namespace: any address there is fine (TCP
        // and UDP are off by default). Name lookups stay off: they would run on other
        // threads, in the host's namespace.
        b.inherit_network().allow_tcp(true).allow_udp(true);
    }
    Ok(b)
}

fn configure<T: 'static>(store: &mut Store<T>, job: &Job) -> wasmtime::Result<()> {
    store.set_fuel(match job.cpu {
        Some(CpuBudget::Fuel(f)) => f,
        _ => u64::MAX,
    })?;
    let limit = match job.cpu {
        Some(CpuBudget::Time(t)) => Some(t),
        _ => None,
    };
    let control = job.control.clone();
    let started = Instant::now();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if control.stop.load(Ordering::SeqCst) {
            return Ok(UpdateDeadline::Interrupt);
        }
        if limit.is_some_and(|l| started.elapsed() >= l) {
            control.time_hit.store(true, Ordering::SeqCst);
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    });
    Ok(())
}

/// Turns the outcome of the call into an exit status.
fn classify(result: wasmtime::Result<i32>, control: &Control) -> ExitStatus {
    let e = match result {
        Ok(code) => {
            return ExitStatus {
                code: Some(i64::from(code)),
                reason: ExitReason::Exited,
            };
        }
        Err(e) => e,
    };
    if let Some(I32Exit(code)) = e.downcast_ref::<I32Exit>() {
        return ExitStatus {
            code: Some(i64::from(*code)),
            reason: ExitReason::Exited,
        };
    }
    let trap = e.downcast_ref::<Trap>().copied();
    let reason = if control.memory_hit.load(Ordering::SeqCst) {
        ExitReason::OutOfMemory
    } else if trap == Some(Trap::OutOfFuel) || control.time_hit.load(Ordering::SeqCst) {
        ExitReason::CpuLimit
    } else if control.stop.load(Ordering::SeqCst) && trap == Some(Trap::Interrupt) {
        ExitReason::Stopped
    } else {
        ExitReason::Failed(format!("{e:#}"))
    };
    ExitStatus { code: None, reason }
}

/// Instantiates and runs the job to its end, on the calling thread.
pub(crate) fn execute(engine: &Engine, job: Job) -> ExitStatus {
    let control = job.control.clone();
    if let Some(ns) = &job.netns
        && let Err(e) = crate::netns::enter(ns)
    {
        return ExitStatus {
            code: None,
            reason: ExitReason::Failed(e),
        };
    }
    let result = (|| -> wasmtime::Result<i32> {
        let limits = Limits {
            memory: job.memory,
            control: control.clone(),
        };
        match &job.prepared {
            Prepared::P1(pre) => {
                let wasi = wasi_builder(&job)?.build_p1();
                let mut store = Store::new(engine, P1State { wasi, limits });
                store.limiter(|s| &mut s.limits);
                configure(&mut store, &job)?;
                let instance = pre.instantiate(&mut store)?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call(&mut store, ())?;
                Ok(0)
            }
            Prepared::P2(pre) => {
                let ctx = wasi_builder(&job)?.build();
                let state = P2State {
                    ctx,
                    table: ResourceTable::new(),
                    limits,
                };
                let mut store = Store::new(engine, state);
                store.limiter(|s| &mut s.limits);
                configure(&mut store, &job)?;
                let command = pre.instantiate(&mut store)?;
                match command.wasi_cli_run().call_run(&mut store)? {
                    Ok(()) => Ok(0),
                    Err(()) => Ok(1),
                }
            }
        }
    })();
    classify(result, &control)
}
