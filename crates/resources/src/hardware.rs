//! What the machine has: CPU, memory, the data dir's filesystem, GPUs; and current usage.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};

use crate::gpu::{GpuDetection, NvmlDevice, NvmlSource, SystemNvml, detect_gpus};

/// CPU description.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuInfo {
    /// Brand string, e.g. "AMD EPYC 7B13".
    pub model: String,
    /// Vendor id, e.g. "AuthenticAMD".
    pub vendor: String,
    /// `x86_64`, `aarch64`, …
    pub architecture: String,
    /// Physical cores, when the OS says.
    pub physical_cores: Option<u32>,
    /// Logical CPUs this process may use.
    pub logical_cores: u32,
    /// Base (nominal) frequency, MHz; 0 when unknown.
    pub base_frequency_mhz: u64,
}

/// The filesystem holding the data dir.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiskInfo {
    /// The data dir.
    pub path: PathBuf,
    /// Mount point of its filesystem.
    pub mount_point: PathBuf,
    /// Filesystem type (ext4, xfs, …).
    pub filesystem: String,
    /// SSD, HDD, or unknown.
    pub kind: String,
    /// Size, bytes.
    pub total_bytes: u64,
    /// Free for this user, bytes.
    pub free_bytes: u64,
}

/// Everything detected about the machine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineSpec {
    /// CPU.
    pub cpu: CpuInfo,
    /// Memory usable by this process (the cgroup limit when lower than the machine's), bytes.
    pub ram_bytes: u64,
    /// Data dir filesystem.
    pub disk: DiskInfo,
    /// GPUs and detection notes.
    pub gpu: GpuDetection,
}

/// Current usage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Usage {
    /// All-CPU busy percentage over a short sample.
    pub cpu_percent: f32,
    /// Memory in use, bytes.
    pub ram_used_bytes: u64,
    /// Memory total, bytes.
    pub ram_total_bytes: u64,
    /// Used space on the data dir's filesystem, bytes.
    pub disk_used_bytes: u64,
    /// Free space there, bytes.
    pub disk_free_bytes: u64,
}

/// Why detection failed.
#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    /// The OS interface could not be read.
    #[error("hardware detection: {0}")]
    Detect(String),
    /// The data dir's filesystem was not found among the mounted disks.
    #[error("no mounted filesystem holds {0}")]
    NoDisk(PathBuf),
}

/// Where hardware facts come from (the real machine, or a fixed spec in tests).
pub trait HardwareSource: Send + Sync {
    /// The machine's resources.
    fn spec(&self) -> Result<MachineSpec, HardwareError>;
    /// Current usage.
    fn usage(&self) -> Result<Usage, HardwareError>;
}

/// The machine this process runs on.
pub struct LocalHardware {
    data_dir: PathBuf,
}

impl LocalHardware {
    /// Detection for a node whose data dir is `data_dir` (disk figures are for its filesystem).
    pub fn new(data_dir: &Path) -> Self {
        LocalHardware {
            data_dir: data_dir.to_path_buf(),
        }
    }
}

fn system(kind: RefreshKind) -> Result<System, HardwareError> {
    System::new_with_specifics(kind).map_err(|e| HardwareError::Detect(e.to_string()))
}

fn usable_memory(sys: &System) -> u64 {
    let total = sys.total_memory();
    sys.cgroup_limits()
        .map(|c| c.total_memory.min(total))
        .filter(|m| *m > 0)
        .unwrap_or(total)
}

/// Nominal frequency from cpufreq (kHz), else what sysinfo reads (MHz).
fn base_frequency_mhz(sys: &System) -> u64 {
    let cpufreq = Path::new("/sys/devices/system/cpu/cpu0/cpufreq");
    for f in ["base_frequency", "cpuinfo_max_freq"] {
        if let Some(khz) = std::fs::read_to_string(cpufreq.join(f))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            return khz / 1000;
        }
    }
    sys.cpus().first().map(|c| c.frequency()).unwrap_or(0)
}

fn disk_of(path: &Path) -> Result<DiskInfo, HardwareError> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let disks =
        Disks::new_with_refreshed_list().map_err(|e| HardwareError::Detect(e.to_string()))?;
    let best = disks
        .iter()
        .filter(|d| target.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .ok_or_else(|| HardwareError::NoDisk(target.clone()))?;
    Ok(DiskInfo {
        path: target.clone(),
        mount_point: best.mount_point().to_path_buf(),
        filesystem: best.file_system().to_string_lossy().into_owned(),
        kind: match best.kind() {
            sysinfo::DiskKind::SSD => "SSD".into(),
            sysinfo::DiskKind::HDD => "HDD".into(),
            sysinfo::DiskKind::Unknown(_) => "unknown".into(),
        },
        total_bytes: best.total_space(),
        free_bytes: best.available_space(),
    })
}

/// CPU, memory and disk of this machine (no GPUs).
pub fn detect_base(data_dir: &Path) -> Result<(CpuInfo, u64, DiskInfo), HardwareError> {
    let sys = system(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_frequency())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    )?;
    let first = sys.cpus().first();
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(sys.cpus().len().max(1));
    let cpu = CpuInfo {
        model: first
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default(),
        vendor: first.map(|c| c.vendor_id().to_string()).unwrap_or_default(),
        architecture: std::env::consts::ARCH.to_string(),
        physical_cores: System::physical_core_count()
            .ok()
            .and_then(|n| u32::try_from(n).ok()),
        logical_cores: u32::try_from(logical).unwrap_or(u32::MAX),
        base_frequency_mhz: base_frequency_mhz(&sys),
    };
    Ok((cpu, usable_memory(&sys), disk_of(data_dir)?))
}

/// With `DMS_TEST_HOOKS=1`, the path of a GPU fixture ([`GpuFixture`], JSON) that
/// [`detect_local_gpus`] reads instead of the machine: tests drive bids, placement and
/// Docker device mappings with recorded inventories on machines without GPUs.
pub const GPU_FIXTURE_ENV: &str = "DMS_TEST_GPU_FIXTURE";

/// A recorded GPU inventory (see [`GPU_FIXTURE_ENV`]).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuFixture {
    /// What NVML would report; absent = NVML not available.
    #[serde(default)]
    pub nvml: Option<Vec<NvmlDevice>>,
    /// The sysfs tree to scan (a directory laid out like `/sys`).
    #[serde(default)]
    pub sysfs_root: Option<PathBuf>,
    /// Where device nodes live (instead of `/dev`).
    #[serde(default)]
    pub dev_root: Option<PathBuf>,
}

impl NvmlSource for GpuFixture {
    fn devices(&self) -> Result<Vec<NvmlDevice>, String> {
        self.nvml
            .clone()
            .ok_or_else(|| "NVML not available: the GPU fixture has no `nvml` list".to_string())
    }
}

/// GPUs of this machine (NVML when the driver library loads, sysfs otherwise), or of the
/// fixture named by [`GPU_FIXTURE_ENV`] when test hooks are on.
pub fn detect_local_gpus() -> GpuDetection {
    let hooks = std::env::var("DMS_TEST_HOOKS").is_ok_and(|v| v == "1");
    match std::env::var_os(GPU_FIXTURE_ENV) {
        Some(path) if hooks => match read_fixture(Path::new(&path)) {
            Ok(f) => detect_gpus(
                &f,
                f.sysfs_root
                    .as_deref()
                    .unwrap_or(Path::new("/nonexistent-sysfs")),
                f.dev_root.as_deref().unwrap_or(Path::new("/dev")),
            ),
            Err(e) => GpuDetection {
                gpus: Vec::new(),
                notes: vec![e],
            },
        },
        _ => detect_gpus(&SystemNvml, Path::new("/sys"), Path::new("/dev")),
    }
}

fn read_fixture(path: &Path) -> Result<GpuFixture, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("GPU fixture {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("GPU fixture {}: {e}", path.display()))
}

impl HardwareSource for LocalHardware {
    fn spec(&self) -> Result<MachineSpec, HardwareError> {
        let (cpu, ram_bytes, disk) = detect_base(&self.data_dir)?;
        Ok(MachineSpec {
            cpu,
            ram_bytes,
            disk,
            gpu: detect_local_gpus(),
        })
    }

    fn usage(&self) -> Result<Usage, HardwareError> {
        let mut sys = system(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        )?;
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        sys.refresh_cpu_usage();
        let disk = disk_of(&self.data_dir)?;
        Ok(Usage {
            cpu_percent: sys.global_cpu_usage(),
            ram_used_bytes: sys.used_memory(),
            ram_total_bytes: usable_memory(&sys),
            disk_used_bytes: disk.total_bytes.saturating_sub(disk.free_bytes),
            disk_free_bytes: disk.free_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn this_machine_has_a_cpu_memory_and_a_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let hw = LocalHardware::new(tmp.path());
        let s = hw.spec().unwrap();
        assert!(s.cpu.logical_cores >= 1);
        assert!(!s.cpu.architecture.is_empty());
        assert!(s.ram_bytes > 64 << 20, "{s:?}");
        assert!(s.disk.total_bytes >= s.disk.free_bytes);
        assert!(
            tmp.path()
                .canonicalize()
                .unwrap()
                .starts_with(&s.disk.mount_point)
        );
        let u = hw.usage().unwrap();
        assert!((0.0..=100.0 * s.cpu.logical_cores as f32).contains(&u.cpu_percent));
        assert!(u.ram_used_bytes <= u.ram_total_bytes.max(u.ram_used_bytes));
    }
}
