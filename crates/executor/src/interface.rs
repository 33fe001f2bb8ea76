//! The `Executor` trait and the values it returns.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::{ExecutionSpec, Result};

/// Executor families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Containers through dockerd.
    Docker,
    /// Virtual machines through QEMU `microvm`.
    Qemu,
    /// Virtual machines through Firecracker.
    Firecracker,
    /// WebAssembly through wasmtime.
    Wasm,
}

impl ExecutorKind {
    /// The lowercase name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Docker => "docker",
            ExecutorKind::Qemu => "qemu",
            ExecutorKind::Firecracker => "firecracker",
            ExecutorKind::Wasm => "wasm",
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the probe found about an executor on this node; reported in status and bids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorStatus {
    /// Which executor.
    pub kind: ExecutorKind,
    /// Whether it can run workloads here.
    pub available: bool,
    /// Version / acceleration when available (e.g. `dockerd 20.10.24, API 1.41`,
    /// `qemu 7.2 microvm, accel=tcg`), the reason when not.
    pub detail: String,
}

/// Which GPUs an executor can hand to workloads on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuSupport {
    /// Vendors whose GPUs it hands over.
    pub vendors: Vec<crate::GpuVendor>,
    /// Why not for the others (one line each).
    pub notes: Vec<String>,
}

impl GpuSupport {
    /// Supports no GPU, for `why`.
    pub fn none(why: impl Into<String>) -> Self {
        GpuSupport {
            vendors: Vec::new(),
            notes: vec![why.into()],
        }
    }

    /// Whether GPUs of `vendor` can be handed over.
    pub fn supports(&self, vendor: crate::GpuVendor) -> bool {
        self.vendors.contains(&vendor)
    }
}

/// Which stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A VM's serial console (stdout and stderr of the guest together).
    Console,
}

/// A piece of log output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Where it came from.
    pub source: LogSource,
    /// The bytes, not necessarily whole lines.
    pub data: Bytes,
}

/// A stream of log chunks; ends when the execution has exited (follow) or when the history
/// is exhausted (no follow).
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk>> + Send>>;

/// Which logs to stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Keep the stream open and deliver new output until the execution exits.
    pub follow: bool,
    /// Skip what was written before the call (only new output; implies nothing unless
    /// `follow`).
    pub skip_history: bool,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code when the runtime knows one (process exit code, VMM exit code).
    pub code: Option<i64>,
    /// Why it ended.
    pub reason: ExitReason,
}

impl ExitStatus {
    /// True for a normal exit with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.reason == ExitReason::Exited
    }
}

/// Why an execution ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// It finished on its own (look at the code).
    Exited,
    /// Killed for exceeding its memory limit.
    OutOfMemory,
    /// Stopped for exceeding its CPU-time budget.
    CpuLimit,
    /// Stopped through [`Executor::stop`].
    Stopped,
    /// The runtime reported a failure (trap, crash, start error).
    Failed(String),
}

/// State of one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    /// Created, not running yet.
    Created,
    /// Running.
    Running,
    /// Ended.
    Exited(ExitStatus),
}

/// One execution as the executor sees it (status and listing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionInfo {
    /// The execution id.
    pub id: String,
    /// Which executor runs it.
    pub kind: ExecutorKind,
    /// Its state.
    pub state: ExecutionState,
    /// Labels it carries (`nunet.*`).
    pub labels: BTreeMap<String, String>,
    /// Runtime detail: container id, VMM pid and acceleration, …
    pub detail: String,
}

/// What a command run inside an execution printed and how it ended ([`Executor::exec`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecOutput {
    /// Its exit code, when the runtime reports one.
    pub exit_code: Option<i64>,
    /// Standard output (at most [`EXEC_MAX_OUTPUT`] bytes, lossy UTF-8).
    pub stdout: String,
    /// Standard error (at most [`EXEC_MAX_OUTPUT`] bytes, lossy UTF-8).
    pub stderr: String,
}

/// Most bytes of each stream [`Executor::exec`] keeps.
pub const EXEC_MAX_OUTPUT: usize = 64 << 10;

/// One interface over containers, VMs and WASM. Every call has a deadline; an unavailable
/// runtime answers [`crate::ExecutorError::Unavailable`] at once.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// Which executor this is.
    fn kind(&self) -> ExecutorKind;

    /// What the probe found: available or not, and why.
    fn status(&self) -> ExecutorStatus;

    /// Which GPUs it can hand to workloads here, and why not the others. An executor that
    /// does not pass GPUs keeps this default.
    fn gpu_support(&self) -> GpuSupport {
        GpuSupport::none(format!(
            "the {} executor does not pass GPUs to workloads",
            self.kind()
        ))
    }

    /// Fetches what `spec` needs (image pull, module download and compile, kernel check)
    /// without starting anything. `start` calls it too; calling it first moves the cost.
    async fn prepare(&self, spec: &ExecutionSpec) -> Result<()>;

    /// Creates and starts the execution; returns once it runs.
    async fn start(&self, spec: &ExecutionSpec) -> Result<ExecutionInfo>;

    /// Current state of one execution.
    async fn inspect(&self, id: &str) -> Result<ExecutionInfo>;

    /// Waits until the execution ends and returns how. Cancel by dropping the future.
    async fn wait(&self, id: &str) -> Result<ExitStatus>;

    /// Streams the execution's logs.
    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream>;

    /// Asks the execution to end, and kills it after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<()>;

    /// Removes what the execution left behind (container, state dir). Stops it first.
    async fn remove(&self, id: &str) -> Result<()>;

    /// Everything this executor runs for this node (matched by the `nunet.node` label),
    /// including workloads started by an earlier process, which are adopted.
    async fn list(&self) -> Result<Vec<ExecutionInfo>>;

    /// Runs `argv` inside the running execution (health checks) and waits at most `timeout`
    /// for it to end. Executors that cannot run a command inside their workloads answer
    /// [`crate::ExecutorError::InvalidSpec`] saying so.
    async fn exec(&self, id: &str, argv: &[String], timeout: Duration) -> Result<ExecOutput> {
        let _ = (id, argv, timeout);
        Err(crate::ExecutorError::InvalidSpec(format!(
            "the {} executor cannot run commands inside its workloads",
            self.kind()
        )))
    }

    /// The network namespace the running execution lives in, as a file to `setns` into
    /// (`/proc/<pid>/ns/net`), when the host can enter it; `None` when it has none of its own.
    async fn netns(&self, id: &str) -> Result<Option<std::path::PathBuf>> {
        let _ = id;
        Ok(None)
    }

    /// Starts and waits: the exit status of a run-to-completion task.
    async fn run(&self, spec: &ExecutionSpec) -> Result<ExitStatus> {
        self.start(spec).await?;
        self.wait(&spec.id).await
    }
}
