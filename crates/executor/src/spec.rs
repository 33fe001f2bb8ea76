//! What an execution is asked to be: workload, resources, environment, mounts, network, labels.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Label key prefix every executor puts on what it creates.
pub const LABEL_PREFIX: &str = "nunet.";
/// Label naming the node (its DID or another stable id) that owns a workload.
pub const LABEL_NODE: &str = "nunet.node";
/// Label naming the execution id (allocation id) of a workload.
pub const LABEL_EXECUTION: &str = "nunet.execution";
/// Label naming the executor kind that created a workload.
pub const LABEL_EXECUTOR: &str = "nunet.executor";

/// One execution to start: the unit a node runs for an allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionSpec {
    /// Unique id on this node; executors name their container / VM / instance after it.
    /// Letters, digits, `-`, `_` and `.` only.
    pub id: String,
    /// What to run.
    pub workload: Workload,
    /// Limits the runtime enforces.
    pub resources: Resources,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Replaces the image's entrypoint (containers) or names argv\[0\] (wasm); empty keeps the
    /// default.
    pub command: Vec<String>,
    /// Arguments after the command.
    pub args: Vec<String>,
    /// Host paths made visible inside.
    pub mounts: Vec<Mount>,
    /// Network attachment.
    pub network: NetworkAttachment,
    /// Host ports forwarded inside.
    pub ports: Vec<PortMapping>,
    /// Extra labels (keys are stored under `nunet.`, which is added if missing).
    pub labels: BTreeMap<String, String>,
}

impl ExecutionSpec {
    /// A spec with the given id and workload and everything else empty / default.
    pub fn new(id: impl Into<String>, workload: Workload) -> Self {
        Self {
            id: id.into(),
            workload,
            resources: Resources::default(),
            env: BTreeMap::new(),
            command: Vec::new(),
            args: Vec::new(),
            mounts: Vec::new(),
            network: NetworkAttachment::None,
            ports: Vec::new(),
            labels: BTreeMap::new(),
        }
    }

    /// Checks the id: non-empty, at most 64 characters of `[A-Za-z0-9_.-]`, not starting
    /// with `.` or `-`.
    pub fn validate_id(&self) -> crate::Result<()> {
        let ok = !self.id.is_empty()
            && self.id.len() <= 64
            && !self.id.starts_with(['.', '-'])
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(())
        } else {
            Err(crate::ExecutorError::InvalidSpec(format!(
                "execution id {:?} must be 1-64 characters of letters, digits, '-', '_' or '.'",
                self.id
            )))
        }
    }

    /// The labels to put on the workload: the spec's own (prefixed `nunet.`) plus node,
    /// execution and executor labels.
    pub fn runtime_labels(
        &self,
        node: &str,
        kind: crate::ExecutorKind,
    ) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| {
                let key = if k.starts_with(LABEL_PREFIX) {
                    k.clone()
                } else {
                    format!("{LABEL_PREFIX}{k}")
                };
                (key, v.clone())
            })
            .collect();
        out.insert(LABEL_NODE.into(), node.into());
        out.insert(LABEL_EXECUTION.into(), self.id.clone());
        out.insert(LABEL_EXECUTOR.into(), kind.to_string());
        out
    }
}

/// The thing to run, by executor family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Workload {
    /// An OCI image run by a container engine.
    Container {
        /// Image reference (`name[:tag]`).
        image: String,
        /// Working directory inside the container.
        working_dir: Option<String>,
        /// User to run as.
        user: Option<String>,
    },
    /// A virtual machine booted from a kernel.
    Vm(VmWorkload),
    /// A WebAssembly module or component.
    Wasm {
        /// Where the module comes from.
        module: ModuleSource,
        /// Expected sha256 of the module bytes (hex); checked before compiling.
        sha256: Option<String>,
    },
}

/// Boot description of a VM (`/dms/node/vm/start/custom`: `--kernel --initrd --rootfs --args`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmWorkload {
    /// Kernel image: a bzImage for QEMU, an uncompressed ELF `vmlinux` for Firecracker
    /// (see [`crate::vm::kernel::extract_vmlinux`]).
    pub kernel: PathBuf,
    /// Initial ram disk.
    pub initrd: Option<PathBuf>,
    /// Root file system image, attached as the first virtio block device.
    pub rootfs: Option<PathBuf>,
    /// Kernel command line; the console argument is added when missing.
    pub kernel_args: String,
    /// Disk images attached after the root file system, as virtio block devices the guest
    /// finds by their serial (QEMU only).
    #[serde(default)]
    pub disks: Vec<VmDisk>,
}

/// A disk image attached to a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDisk {
    /// The image file on the host (raw).
    pub path: PathBuf,
    /// Attached read-only (the guest cannot write to it, whatever it mounts).
    pub read_only: bool,
    /// The device's serial (`/sys/block/vd*/serial` in the guest): letters, digits and
    /// `-`, at most 20 characters (virtio-blk's limit).
    pub serial: String,
}

/// Where a WASM module comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleSource {
    /// A file on this node.
    Path(PathBuf),
    /// An `http://` or `https://` URL.
    Url(String),
    /// The module bytes themselves.
    Inline(Vec<u8>),
}

/// Resource limits. Zero / `None` means "no limit beyond the runtime default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU cores (fractional allowed); VMs round up to whole vCPUs.
    pub cpu_cores: f64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Disk in bytes (container writable layer / VM disk), where the runtime supports it.
    pub disk_bytes: Option<u64>,
    /// GPUs to pass through.
    pub gpus: Vec<GpuDevice>,
    /// CPU-time budget for runtimes that meter work rather than share cores (WASM).
    pub cpu_time: Option<CpuBudget>,
}

/// A GPU chosen by the node's accounting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// Vendor.
    pub vendor: GpuVendor,
    /// NVIDIA: the UUID (`GPU-…`, `MIG-…`) the NVIDIA runtime is asked for. Others: the
    /// id the accounting knows it by (`pci:<address>`), for messages.
    pub id: String,
    /// Device nodes that give the workload this GPU and no other (AMD, Intel).
    #[serde(default)]
    pub nodes: Vec<DevicePath>,
}

/// A device node to hand to a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePath {
    /// Path on the host.
    pub host: PathBuf,
    /// Path inside the workload.
    pub container: String,
}

/// GPU vendor, deciding how a container gets the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    /// NVIDIA: a device request for the `nvidia` driver.
    Nvidia,
    /// AMD: `/dev/kfd` and `/dev/dri`.
    Amd,
    /// Intel: `/dev/dri`.
    Intel,
}

impl GpuVendor {
    /// The vendor of a GPU named as ensembles and the inventory name it (`NVIDIA`,
    /// `AMD/ATI`, `Intel`); `None` for any other (nothing knows how to hand it over).
    pub fn from_name(name: &str) -> Option<GpuVendor> {
        match name {
            "NVIDIA" => Some(GpuVendor::Nvidia),
            "AMD/ATI" => Some(GpuVendor::Amd),
            "Intel" => Some(GpuVendor::Intel),
            _ => None,
        }
    }
}

/// A CPU-time budget for metered runtimes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuBudget {
    /// Deterministic instruction budget (wasmtime fuel units).
    Fuel(u64),
    /// Running time budget, enforced by epoch interruption.
    Time(std::time::Duration),
}

/// A host path made visible inside the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    /// Host path (or a docker named volume).
    pub source: PathBuf,
    /// Path inside.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// How the workload reaches the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkAttachment {
    /// No network.
    None,
    /// The runtime's default (docker bridge; user-mode NAT for QEMU).
    Default,
    /// The host's network namespace (containers only).
    Host,
    /// A named runtime network (docker network name).
    Named(String),
    /// A TAP device created beforehand (see [`crate::tap`]), for VMs.
    Tap {
        /// Host TAP interface name.
        iface: String,
        /// Guest MAC address; generated from the id when missing.
        mac: Option<String>,
    },
    /// A network namespace the caller prepared, named by a file such as
    /// `/proc/<pid>/task/<tid>/ns/net`. For WASM instances (threads of this process): the
    /// instance thread enters it, and the guest's sockets are created there.
    Namespace(std::path::PathBuf),
}

/// One forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the host.
    pub host_port: u16,
    /// Port inside.
    pub guest_port: u16,
    /// Transport.
    pub protocol: Protocol,
}

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` / `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        let w = Workload::Container {
            image: "x".into(),
            working_dir: None,
            user: None,
        };
        assert!(
            ExecutionSpec::new("alloc-1.a_b", w.clone())
                .validate_id()
                .is_ok()
        );
        for bad in ["", "-x", ".x", "a b", "a/b", &"x".repeat(65)] {
            assert!(
                ExecutionSpec::new(bad, w.clone()).validate_id().is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn labels_get_prefix_and_identity() {
        let mut s = ExecutionSpec::new(
            "e1",
            Workload::Container {
                image: "x".into(),
                working_dir: None,
                user: None,
            },
        );
        s.labels.insert("ensemble".into(), "ens1".into());
        s.labels.insert("nunet.role".into(), "db".into());
        let l = s.runtime_labels("node-a", crate::ExecutorKind::Docker);
        assert_eq!(l["nunet.ensemble"], "ens1");
        assert_eq!(l["nunet.role"], "db");
        assert_eq!(l[LABEL_NODE], "node-a");
        assert_eq!(l[LABEL_EXECUTION], "e1");
        assert_eq!(l[LABEL_EXECUTOR], "docker");
    }
}
