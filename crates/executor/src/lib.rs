//! Executors: one interface over the runtimes a node rents out — Docker containers, microVMs
//! (QEMU `microvm`, Firecracker) — plus the TAP networking the VMs use. WASM implements the
//! same [`Executor`] trait in the separate `nunet-executor-wasm` crate so that wasmtime is only
//! rebuilt when it changes.
//!
//! What this crate must not do: decide *what* to run or whether a caller may run it (that is
//! the node's and the capability layer's job), keep state outside a runtime's own labels and
//! the executor's state directory, or wait on a runtime without a deadline. An executor whose
//! runtime is missing reports so in [`Executor::status`] and fails every call with
//! [`ExecutorError::Unavailable`].

pub mod docker;
pub mod error;
pub mod interface;
pub mod logs;
pub mod metered;
pub mod netprobe;
pub mod sandbox;
pub mod spec;
pub mod tap;
pub mod vm;

pub use docker::{DockerConfig, DockerExecutor};
pub use error::{ExecutorError, Result, with_deadline};
pub use interface::{
    EXEC_MAX_OUTPUT, ExecOutput, ExecutionInfo, ExecutionState, Executor, ExecutorKind,
    ExecutorStatus, ExitReason, ExitStatus, GpuSupport, LogChunk, LogOptions, LogSource, LogStream,
};
pub use metered::Metered;
pub use sandbox::{LABEL_SANDBOX, Sandbox};
pub use spec::{
    CpuBudget, DevicePath, ExecutionSpec, GpuDevice, GpuVendor, LABEL_EXECUTION, LABEL_EXECUTOR,
    LABEL_NODE, LABEL_PREFIX, ModuleSource, Mount, NetworkAttachment, PortMapping, Protocol,
    Resources, VmDisk, VmWorkload, Workload,
};
pub use vm::{VmConfig, VmExecutor};
