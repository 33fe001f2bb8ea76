//! Executor-specific `execution:` settings.
//!
//! NuNet turns `execution` into `{type, params}`: every key except `type` is a parameter, and an
//! explicit `params:` mapping works too. Executors:
//!
//! * `docker`: `image` (required), `entrypoint` and `cmd` (lists of strings), `environment`
//!   (mapping or `KEY=VALUE` list), `working_directory`, `restart_policy` (`no`, `on-failure`,
//!   `always`, `unless-stopped`), `user`, `args`, `privileged` (bool; providers refuse it
//!   unless they allow privileged containers).
//! * `firecracker`: `kernel_image` and `root_file_system` (required), `kernel_args`,
//!   `initrd` (non-empty when present).
//! * `wasm` (ours): a WASI module run by wasmtime.
//!   - `module` (required): a local path, or an `https://` URL to fetch;
//!   - `sha256`: 64 hex digits of the module's SHA-256; **required for URLs**, checked before
//!     the module is run;
//!   - `entrypoint`: exported function to call (default `_start`, the WASI command entry);
//!   - `args`: argv after the module name; `environment`: mapping or `KEY=VALUE` list;
//!   - `limits`: `memory` (size, e.g. `64MiB`; bare numbers are GiB like every size),
//!     `fuel` (instructions budget, integer), `timeout` (duration, e.g. `30s`).
//! * `containerd` (NuNet's): `image` (required), `entrypoint`, `cmd`, `environment`,
//!   `working_directory`, `runtime` (`runc` or empty: `io.containerd.runc.v2`; `kata`:
//!   `io.containerd.kata.v2`; anything else is passed on as written). Accepted as NuNet writes
//!   it; this DMS's providers do not run it ([`NOT_RUN_HERE`]): they decline such nodes at bid
//!   time with [`NOT_RUN_HERE`]'s reason, and `validate` warns.
//! * `null`: no settings (tests).

use serde::{Deserialize, Serialize};

/// An environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Name (`[A-Za-z_][A-Za-z0-9_]*`).
    pub name: String,
    /// Value.
    pub value: String,
}

/// The decoded `execution:` of an allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Execution {
    /// A Docker container.
    Docker(DockerExecution),
    /// A Firecracker (or QEMU microvm) virtual machine.
    Firecracker(FirecrackerExecution),
    /// A WASI module.
    Wasm(WasmExecution),
    /// A container run by containerd (NuNet's executor; not run by this DMS's providers).
    Containerd(ContainerdExecution),
    /// Nothing runs (tests).
    Null,
}

impl Execution {
    /// The executor name this execution belongs to.
    pub fn executor(&self) -> &'static str {
        match self {
            Execution::Docker(_) => "docker",
            Execution::Firecracker(_) => "firecracker",
            Execution::Wasm(_) => "wasm",
            Execution::Containerd(_) => "containerd",
            Execution::Null => "null",
        }
    }
}

/// `docker` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DockerExecution {
    /// Image reference.
    pub image: String,
    /// Entrypoint override.
    pub entrypoint: Vec<String>,
    /// Command.
    pub cmd: Vec<String>,
    /// Extra arguments (NuNet test data).
    pub args: Vec<String>,
    /// Environment.
    pub environment: Vec<EnvVar>,
    /// Working directory.
    pub working_directory: Option<String>,
    /// Restart policy.
    pub restart_policy: Option<String>,
    /// User to run as.
    pub user: Option<String>,
    /// Privileged container.
    pub privileged: bool,
}

/// `firecracker` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FirecrackerExecution {
    /// Kernel image path or URL.
    pub kernel_image: String,
    /// Root file system image path or URL.
    pub root_file_system: String,
    /// Kernel command line.
    pub kernel_args: Option<String>,
    /// Initial ramdisk.
    pub initrd: Option<String>,
}

/// `containerd` settings (NuNet's executor; see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerdExecution {
    /// Image reference.
    pub image: String,
    /// Entrypoint override.
    pub entrypoint: Vec<String>,
    /// Command.
    pub cmd: Vec<String>,
    /// Environment.
    pub environment: Vec<EnvVar>,
    /// Working directory.
    pub working_directory: Option<String>,
    /// The containerd runtime (`io.containerd.runc.v2` by default).
    pub runtime: String,
}

/// `wasm` settings (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WasmExecution {
    /// Path or `https://` URL of the module.
    pub module: String,
    /// Expected SHA-256 (lowercase hex).
    pub sha256: Option<String>,
    /// Exported function to call (default `_start`).
    pub entrypoint: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment.
    pub environment: Vec<EnvVar>,
    /// Linear memory cap in bytes.
    pub memory_limit: Option<u64>,
    /// Fuel (instruction budget).
    pub fuel: Option<u64>,
    /// Wall-clock limit in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// The executors this DMS knows.
pub const EXECUTORS: &[&str] = &["docker", "firecracker", "wasm", "containerd", "null"];

/// Executors ensembles may name (NuNet's) that this DMS's providers do not run, with the
/// reason a provider gives when it declines such a node at bid time.
pub const NOT_RUN_HERE: &[(&str, &str)] = &[(
    "containerd",
    "NuNet's containerd executor is not implemented by this DMS; docker runs the same images",
)];
