//! The VM executor: one implementation over two VMMs (QEMU `microvm`, Firecracker). Each
//! execution owns a directory under the state dir holding `meta.json` (node, labels, pid),
//! `console.log` (the guest's serial console, which is the execution's log), the VMM's control
//! socket and, once it ended, `exit.json`. A restarted daemon adopts running VMs from there.

pub mod firecracker;
pub mod kernel;
pub mod probe;
pub mod qemu;
mod runtime;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use probe::{AccelChoice, Backend, VmmChoice};
pub use qemu::Accel;

use crate::{
    ExecutionInfo, ExecutionSpec, ExecutionState, Executor, ExecutorError, ExecutorKind,
    ExecutorStatus, ExitStatus, LogOptions, LogSource, LogStream, Result, Workload, logs,
};

/// Default of [`VmConfig::boot_timeout`]: generous for software emulation (TCG) on a loaded
/// host, where Debian's cloud kernel reaches init in seconds.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of the VM executor.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The node's stable id, stored with each VM; `list` adopts VMs carrying it.
    pub node: String,
    /// Where per-execution directories live.
    pub state_dir: PathBuf,
    /// `qemu-system-x86_64` binary (default: PATH).
    pub qemu: Option<PathBuf>,
    /// `firecracker` binary (default: PATH).
    pub firecracker: Option<PathBuf>,
    /// Which VMM to use.
    pub vmm: VmmChoice,
    /// QEMU acceleration.
    pub accel: AccelChoice,
    /// Deadline for each call to a VMM (QMP, Firecracker API, probe).
    pub timeout: Duration,
    /// How long a guest kernel may take to hand over to its init (the console shows
    /// `Run … as init process`) before the VM is killed and reported failed; zero: no limit.
    /// Catches guests that hang at boot (e.g. `tsc: Unable to calibrate against PIT`).
    pub boot_timeout: Duration,
}

impl VmConfig {
    /// Defaults: VMMs from PATH, automatic choices, 10 s per VMM call.
    pub fn new(node: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            node: node.into(),
            state_dir: state_dir.into(),
            qemu: None,
            firecracker: None,
            vmm: VmmChoice::Auto,
            accel: AccelChoice::Auto,
            timeout: Duration::from_secs(10),
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
        }
    }
}

/// The spec for `/dms/node/vm/start/custom` (`--kernel --initrd --rootfs --args --cpu
/// --memory`, memory in MiB; the CLI defaults are 1 CPU and 1024 MiB).
pub fn custom_vm_spec(
    id: impl Into<String>,
    kernel: impl Into<PathBuf>,
    initrd: Option<PathBuf>,
    rootfs: Option<PathBuf>,
    kernel_args: impl Into<String>,
    cpu: f32,
    memory_mib: u64,
) -> ExecutionSpec {
    let mut spec = ExecutionSpec::new(
        id,
        Workload::Vm(crate::VmWorkload {
            kernel: kernel.into(),
            initrd,
            rootfs,
            kernel_args: kernel_args.into(),
            disks: Vec::new(),
        }),
    );
    spec.resources.cpu_cores = f64::from(cpu);
    spec.resources.memory_bytes = memory_mib.saturating_mul(1 << 20);
    spec.network = crate::NetworkAttachment::Default;
    spec
}

/// What is stored in `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    node: String,
    labels: BTreeMap<String, String>,
    pid: u32,
    detail: String,
    firecracker: bool,
}

/// One VM this executor knows about.
struct Vm {
    meta: Meta,
    dir: PathBuf,
    exit: watch::Sender<Option<ExitStatus>>,
    stop_requested: AtomicBool,
    /// Set by the boot watchdog when it killed a guest that never reached its init.
    boot_failure: std::sync::Mutex<Option<String>>,
    /// Asks the task that owns the VMM child to kill it.
    kill: tokio::sync::Notify,
}

impl Vm {
    fn exited(&self) -> Option<ExitStatus> {
        self.exit.borrow().clone()
    }
}

/// The VM executor. Construct with [`VmExecutor::new`], which never fails: without a usable
/// VMM the executor reports itself unavailable.
pub struct VmExecutor {
    config: VmConfig,
    backend: Option<Backend>,
    status: ExecutorStatus,
    vms: Mutex<HashMap<String, Arc<Vm>>>,
}

impl VmExecutor {
    /// Probes for a VMM (and KVM) and sets up the state directory.
    pub async fn new(config: VmConfig) -> Self {
        let chosen = probe::choose(
            config.vmm,
            config.accel,
            config.qemu.clone(),
            config.firecracker.clone(),
            config.timeout,
        )
        .await;
        let chosen = chosen.and_then(|c| {
            std::fs::create_dir_all(&config.state_dir)
                .map_err(|e| format!("state dir {}: {e}", config.state_dir.display()))?;
            Ok(c)
        });
        let (backend, status) = match chosen {
            Ok((backend, detail)) => {
                let kind = match backend {
                    Backend::Qemu { .. } => ExecutorKind::Qemu,
                    Backend::Firecracker { .. } => ExecutorKind::Firecracker,
                };
                (
                    Some(backend),
                    ExecutorStatus {
                        kind,
                        available: true,
                        detail,
                    },
                )
            }
            Err(reason) => (
                None,
                ExecutorStatus {
                    kind: if config.vmm == VmmChoice::Firecracker {
                        ExecutorKind::Firecracker
                    } else {
                        ExecutorKind::Qemu
                    },
                    available: false,
                    detail: reason,
                },
            ),
        };
        Self {
            config,
            backend,
            status,
            vms: Mutex::new(HashMap::new()),
        }
    }

    /// The backend the probe chose, if any.
    pub fn backend(&self) -> Option<&Backend> {
        self.backend.as_ref()
    }

    fn backend_or_err(&self) -> Result<&Backend> {
        self.backend
            .as_ref()
            .ok_or_else(|| ExecutorError::Unavailable {
                kind: self.status.kind,
                reason: self.status.detail.clone(),
            })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vm>>> {
        // A poisoned lock only means another task panicked mid-update of a map of Arcs; the
        // map itself is still consistent.
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds a VM in memory, or adopts it from its state directory.
    fn get(&self, id: &str) -> Result<Arc<Vm>> {
        self.backend_or_err()?;
        if let Some(vm) = self.table().get(id) {
            return Ok(vm.clone());
        }
        let dir = self.config.state_dir.join(id);
        let meta: Meta = std::fs::read(dir.join("meta.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|m: &Meta| m.node == self.config.node && m.id == id)
            .ok_or_else(|| ExecutorError::NotFound(id.to_string()))?;
        let vm = Arc::new(Vm {
            meta,
            dir,
            exit: watch::Sender::new(None),
            stop_requested: AtomicBool::new(false),
            boot_failure: std::sync::Mutex::new(None),
            kill: tokio::sync::Notify::new(),
        });
        runtime::watch_adopted(vm.clone());
        let mut t = self.table();
        Ok(t.entry(id.to_string()).or_insert(vm).clone())
    }

    fn info(&self, vm: &Vm) -> ExecutionInfo {
        ExecutionInfo {
            id: vm.meta.id.clone(),
            kind: self.status.kind,
            state: match vm.exited() {
                Some(s) => ExecutionState::Exited(s),
                None => ExecutionState::Running,
            },
            labels: vm.meta.labels.clone(),
            detail: vm.meta.detail.clone(),
        }
    }
}

/// Why microVMs get no GPU.
pub const GPU_NOTE: &str = "microVMs get no GPU here: that needs VFIO passthrough (the device \
     unbound from its driver, bound to vfio-pci, its IOMMU group handed to QEMU whole), which \
     this executor does not do";

#[async_trait::async_trait]
impl Executor for VmExecutor {
    fn kind(&self) -> ExecutorKind {
        self.status.kind
    }

    fn status(&self) -> ExecutorStatus {
        self.status.clone()
    }

    fn gpu_support(&self) -> crate::GpuSupport {
        crate::GpuSupport::none(GPU_NOTE)
    }

    async fn prepare(&self, spec: &ExecutionSpec) -> Result<()> {
        self.backend_or_err()?;
        runtime::check_files(spec).map(|_| ())
    }

    async fn start(&self, spec: &ExecutionSpec) -> Result<ExecutionInfo> {
        spec.validate_id()?;
        let backend = self.backend_or_err()?.clone();
        let Workload::Vm(_) = &spec.workload else {
            return Err(ExecutorError::InvalidSpec(
                "the VM executor runs VM workloads only".into(),
            ));
        };
        let vm = runtime::check_files(spec)?;
        if !self.config.boot_timeout.is_zero() {
            runtime::check_boot_visible(&vm.kernel_args)?;
        }
        if self.table().contains_key(&spec.id) || self.get(&spec.id).is_ok() {
            return Err(ExecutorError::AlreadyExists(spec.id.clone()));
        }
        let dir = self.config.state_dir.join(&spec.id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let labels = spec.runtime_labels(&self.config.node, self.status.kind);
        let launched = runtime::launch(&backend, spec, &dir, self.config.timeout).await;
        let (child, pid, detail) = match launched {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let meta = Meta {
            id: spec.id.clone(),
            node: self.config.node.clone(),
            labels,
            pid,
            detail,
            firecracker: matches!(backend, Backend::Firecracker { .. }),
        };
        std::fs::write(
            dir.join("meta.json"),
            serde_json::to_vec(&meta).unwrap_or_default(),
        )?;
        let vm = Arc::new(Vm {
            meta,
            dir,
            exit: watch::Sender::new(None),
            stop_requested: AtomicBool::new(false),
            boot_failure: std::sync::Mutex::new(None),
            kill: tokio::sync::Notify::new(),
        });
        runtime::watch_child(vm.clone(), child);
        runtime::watch_boot(vm.clone(), self.config.boot_timeout);
        self.table().insert(spec.id.clone(), vm.clone());
        Ok(self.info(&vm))
    }

    async fn inspect(&self, id: &str) -> Result<ExecutionInfo> {
        let vm = self.get(id)?;
        Ok(self.info(&vm))
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus> {
        let vm = self.get(id)?;
        let mut rx = vm.exit.subscribe();
        let status = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ExecutorError::Runtime("VM monitor ended without a status".into()))?;
        status
            .clone()
            .ok_or_else(|| ExecutorError::Runtime("VM monitor ended without a status".into()))
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        let vm = self.get(id)?;
        let done_vm = vm.clone();
        Ok(logs::file_stream(
            vm.dir.join("console.log"),
            LogSource::Console,
            options,
            Arc::new(move || done_vm.exited().is_some()),
        ))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let vm = self.get(id)?;
        if vm.exited().is_some() {
            return Ok(());
        }
        vm.stop_requested.store(true, Ordering::SeqCst);
        runtime::shut_down(&vm, grace, self.config.timeout).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let vm = self.get(id)?;
        if vm.exited().is_none() {
            vm.stop_requested.store(true, Ordering::SeqCst);
            runtime::shut_down(&vm, Duration::ZERO, self.config.timeout).await?;
        }
        self.table().remove(id);
        std::fs::remove_dir_all(&vm.dir)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ExecutionInfo>> {
        self.backend_or_err()?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.config.state_dir)?.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match self.get(&id) {
                Ok(vm) => out.push(self.info(&vm)),
                Err(ExecutorError::NotFound(_)) => {} // another node's or a half-made dir
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
