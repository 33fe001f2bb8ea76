//! GPU detection (NVIDIA through NVML, AMD and Intel from sysfs) and the `--gpus "0:4,1:8"`
//! onboarding syntax. Detection is split into a raw source (NVML calls, a sysfs tree) and a
//! pure conversion, so every path is tested with recorded fixtures on machines with no GPU.

use std::path::Path;

use serde::{Deserialize, Serialize};

mod units;
pub use units::{GpuUnit, units_of};

/// GPU maker, spelled as NuNet does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuVendor {
    /// NVIDIA.
    #[serde(rename = "NVIDIA")]
    Nvidia,
    /// AMD.
    #[serde(rename = "AMD/ATI")]
    Amd,
    /// Intel.
    #[serde(rename = "Intel")]
    Intel,
    /// Something else.
    #[serde(rename = "Unknown")]
    Unknown,
}

impl GpuVendor {
    /// The name ensembles use for it (`NVIDIA`, `AMD/ATI`, `Intel`, `Unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "NVIDIA",
            GpuVendor::Amd => "AMD/ATI",
            GpuVendor::Intel => "Intel",
            GpuVendor::Unknown => "Unknown",
        }
    }

    fn from_pci(id: u32) -> GpuVendor {
        match id {
            0x10de => GpuVendor::Nvidia,
            0x1002 => GpuVendor::Amd,
            0x8086 => GpuVendor::Intel,
            _ => GpuVendor::Unknown,
        }
    }
}

/// One MIG instance of an NVIDIA GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigInstance {
    /// Index on its parent.
    pub index: u32,
    /// `MIG-…` UUID.
    pub uuid: String,
    /// Its memory, bytes.
    pub vram_bytes: u64,
}

/// Where a GPU was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuSource {
    /// NVIDIA's management library.
    Nvml,
    /// The kernel's DRM class in sysfs.
    Sysfs,
}

/// A device node a container needs to use a GPU: its path on the host and in the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Path on the host (`/dev/dri/renderD128`; under the test device root in tests).
    pub host: String,
    /// Path in the container (`/dev/dri/renderD128`).
    pub container: String,
}

/// A detected GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// The index used by `--gpus` and `nunet gpu list` (NVML order first, then sysfs).
    pub index: u32,
    /// Maker.
    pub vendor: GpuVendor,
    /// Marketing name, or `vendor:device` PCI ids when the name is unknown.
    pub model: String,
    /// Stable id (`GPU-…` for NVIDIA), when the driver gives one.
    pub uuid: Option<String>,
    /// PCI address, `dddd:bb:dd.f`.
    pub pci_address: String,
    /// Total memory, bytes (0 = unknown or shared with the host).
    pub vram_bytes: u64,
    /// MIG instances (NVIDIA, MIG mode on).
    pub mig: Vec<MigInstance>,
    /// Where it was found.
    pub source: GpuSource,
    /// The kernel driver bound to it (`amdgpu`, `i915`, `nvidia` and NVML's driver
    /// version), empty when unknown.
    #[serde(default)]
    pub driver: String,
    /// Device nodes that give a container this GPU and no other (AMD: `/dev/kfd` and the
    /// card's `/dev/dri` nodes; Intel: the `/dev/dri` nodes). Empty for NVIDIA, whose
    /// devices are requested by UUID from the NVIDIA container runtime.
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
}

impl GpuInfo {
    /// The key accounting uses for this device: its UUID, else `pci:<address>`.
    pub fn device_key(&self) -> String {
        match &self.uuid {
            Some(u) => u.clone(),
            None => format!("pci:{}", self.pci_address),
        }
    }
}

/// The outcome of detection: the GPUs, and notes on what could not be looked at and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDetection {
    /// GPUs found.
    pub gpus: Vec<GpuInfo>,
    /// Why some source was skipped (e.g. NVML not installed).
    pub notes: Vec<String>,
}

impl GpuDetection {
    /// One line for "nothing found", naming what was tried.
    pub fn none_found_message(&self) -> String {
        if self.notes.is_empty() {
            "no GPU found".to_string()
        } else {
            format!("no GPU found ({})", self.notes.join("; "))
        }
    }
}

/// What NVML reports about one device (also the fixture format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmlDevice {
    /// NVML index.
    pub index: u32,
    /// `GPU-…`.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Total framebuffer memory, bytes.
    pub memory_total: u64,
    /// NVML's bus id (`00000000:01:00.0`).
    pub pci_bus_id: String,
    /// MIG instances, `(uuid, memory bytes)`, empty when MIG is off.
    #[serde(default)]
    pub mig: Vec<(String, u64)>,
    /// The driver version NVML reports.
    #[serde(default)]
    pub driver_version: Option<String>,
}

/// Something that lists NVIDIA devices: the real NVML library, or a fixture.
pub trait NvmlSource {
    /// The devices, or why NVML could not be used.
    fn devices(&self) -> Result<Vec<NvmlDevice>, String>;
}

/// NVML loaded at run time (`libnvidia-ml.so.1`); absent library = a note, not an error.
pub struct SystemNvml;

impl NvmlSource for SystemNvml {
    fn devices(&self) -> Result<Vec<NvmlDevice>, String> {
        use nvml_wrapper::Nvml;
        let nvml = Nvml::builder()
            .lib_path(std::ffi::OsStr::new("libnvidia-ml.so.1"))
            .init()
            .or_else(|_| Nvml::init())
            .map_err(|e| format!("NVML not available: {e}"))?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        let driver_version = nvml.sys_driver_version().ok();
        let mut out = Vec::new();
        for i in 0..count {
            let d = nvml
                .device_by_index(i)
                .map_err(|e| format!("NVML device {i}: {e}"))?;
            let field = |what: &str, e: nvml_wrapper::error::NvmlError| {
                format!("NVML device {i} {what}: {e}")
            };
            let mut mig = Vec::new();
            if d.mig_mode().map(|m| m.current == 1).unwrap_or(false) {
                // At most 7 instances per GPU; unused slots answer NotFound.
                for m in 0..7 {
                    let Ok(md) = d.mig_device_by_index(m) else {
                        continue;
                    };
                    if let (Ok(u), Ok(mem)) = (md.uuid(), md.memory_info()) {
                        mig.push((u, mem.total));
                    }
                }
            }
            out.push(NvmlDevice {
                index: i,
                uuid: d.uuid().map_err(|e| field("uuid", e))?,
                name: d.name().map_err(|e| field("name", e))?,
                memory_total: d.memory_info().map_err(|e| field("memory", e))?.total,
                pci_bus_id: d.pci_info().map_err(|e| field("pci", e))?.bus_id,
                mig,
                driver_version: driver_version.clone(),
            });
        }
        Ok(out)
    }
}

/// NVML pads the PCI domain to 8 digits; sysfs uses 4. Normalise to `dddd:bb:dd.f`, lowercase.
pub fn normalize_pci(addr: &str) -> String {
    let a = addr.trim().to_ascii_lowercase();
    match a.split_once(':') {
        Some((dom, rest)) if dom.len() > 4 && dom.chars().all(|c| c.is_ascii_hexdigit()) => {
            format!("{}:{rest}", &dom[dom.len() - 4..])
        }
        _ => a,
    }
}

/// A display-class PCI device found under `<root>/class/drm/cardN/device`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SysfsCard {
    vendor: u32,
    device: u32,
    pci: String,
    driver: String,
    vram: u64,
    name: Option<String>,
    unique_id: Option<String>,
    /// `card1`, `renderD129`: the DRM nodes of this device (from `device/drm/`).
    nodes: Vec<String>,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn hex_u32(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// `cardN` or `renderDN`: a DRM device node name (not a connector such as `card0-DP-1`).
fn drm_node_name(n: &str) -> bool {
    n.strip_prefix("card")
        .or_else(|| n.strip_prefix("renderD"))
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
}

fn scan_sysfs(root: &Path) -> Vec<SysfsCard> {
    let Ok(rd) = std::fs::read_dir(root.join("class/drm")) else {
        return Vec::new();
    };
    let mut cards = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // card0, card1 … but not connectors like card0-DP-1 or render nodes.
        if !name.starts_with("card") || !drm_node_name(&name) {
            continue;
        }
        let dev = e.path().join("device");
        let class = read_trim(&dev.join("class")).and_then(|c| hex_u32(&c));
        if class.is_some_and(|c| c >> 16 != 0x03) {
            continue; // not a display controller
        }
        let (Some(vendor), Some(device)) = (
            read_trim(&dev.join("vendor")).and_then(|v| hex_u32(&v)),
            read_trim(&dev.join("device")).and_then(|v| hex_u32(&v)),
        ) else {
            continue;
        };
        let uevent = read_trim(&dev.join("uevent")).unwrap_or_default();
        let kv = |k: &str| {
            uevent
                .lines()
                .find_map(|l| l.strip_prefix(k).map(str::to_string))
        };
        let pci = kv("PCI_SLOT_NAME=")
            .map(|p| normalize_pci(&p))
            .unwrap_or_else(|| format!("unknown-{name}"));
        let vram = read_trim(&dev.join("mem_info_vram_total"))
            .or_else(|| read_trim(&e.path().join("lmem_total_bytes")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // The card's own DRM nodes (`card1`, `renderD129`) are listed under its device;
        // without that directory the card node itself is all that is known.
        let mut nodes: Vec<String> = std::fs::read_dir(dev.join("drm"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| drm_node_name(n))
                    .collect()
            })
            .unwrap_or_default();
        if nodes.is_empty() {
            nodes.push(name.clone());
        }
        nodes.sort();
        cards.push(SysfsCard {
            vendor,
            device,
            pci,
            driver: kv("DRIVER=").unwrap_or_default(),
            vram,
            name: read_trim(&dev.join("product_name")),
            unique_id: read_trim(&dev.join("unique_id")),
            nodes,
        });
    }
    cards.sort_by(|a, b| a.pci.cmp(&b.pci));
    cards.dedup_by(|a, b| a.pci == b.pci);
    cards
}

/// Detects GPUs: NVML devices first (in NVML order), then AMD, Intel and any NVIDIA card NVML
/// did not report, from the sysfs tree at `sysfs_root` (normally `/sys`); device nodes are
/// named under `dev_root` (normally `/dev`).
pub fn detect_gpus(nvml: &dyn NvmlSource, sysfs_root: &Path, dev_root: &Path) -> GpuDetection {
    let mut det = GpuDetection::default();
    let nv = match nvml.devices() {
        Ok(list) => list,
        Err(note) => {
            det.notes.push(note);
            Vec::new()
        }
    };
    for d in nv {
        det.gpus.push(GpuInfo {
            index: 0,
            vendor: GpuVendor::Nvidia,
            model: d.name,
            uuid: Some(d.uuid),
            pci_address: normalize_pci(&d.pci_bus_id),
            vram_bytes: d.memory_total,
            mig: d
                .mig
                .into_iter()
                .zip(0u32..)
                .map(|((uuid, vram_bytes), index)| MigInstance {
                    index,
                    uuid,
                    vram_bytes,
                })
                .collect(),
            source: GpuSource::Nvml,
            driver: match d.driver_version {
                Some(v) => format!("nvidia {v}"),
                None => "nvidia".into(),
            },
            device_nodes: Vec::new(),
        });
    }
    for c in scan_sysfs(sysfs_root) {
        if det.gpus.iter().any(|g| g.pci_address == c.pci) {
            continue;
        }
        let vendor = GpuVendor::from_pci(c.vendor);
        if vendor == GpuVendor::Nvidia {
            det.notes.push(format!(
                "NVIDIA GPU at {} (driver {:?}) seen in sysfs but not through NVML: its memory is unknown",
                c.pci, c.driver
            ));
        }
        let integrated = vendor == GpuVendor::Intel && c.vram == 0;
        let model = c.name.unwrap_or_else(|| {
            format!(
                "{:04x}:{:04x}{}",
                c.vendor,
                c.device,
                if integrated { " (integrated)" } else { "" }
            )
        });
        let node = |rel: String| DeviceNode {
            host: dev_root.join(&rel).to_string_lossy().into_owned(),
            container: format!("/dev/{rel}"),
        };
        let mut device_nodes = Vec::new();
        if vendor == GpuVendor::Amd {
            // ROCm's compute interface; which GPUs a process sees is decided by the render
            // nodes it is given.
            device_nodes.push(node("kfd".into()));
        }
        device_nodes.extend(c.nodes.into_iter().map(|n| node(format!("dri/{n}"))));
        det.gpus.push(GpuInfo {
            index: 0,
            vendor,
            model,
            uuid: c.unique_id,
            pci_address: c.pci,
            vram_bytes: c.vram,
            mig: Vec::new(),
            source: GpuSource::Sysfs,
            driver: c.driver,
            device_nodes,
        });
    }
    for (i, g) in (0u32..).zip(det.gpus.iter_mut()) {
        g.index = i;
    }
    det
}

/// Why a `--gpus` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuSpecError {
    /// An entry is not `index:GB`.
    #[error("--gpus entry {0:?} is not <index>:<VRAM GB> (e.g. \"0:4,1:8\")")]
    Syntax(String),
    /// The same index twice.
    #[error("--gpus names GPU {0} twice")]
    Duplicate(u32),
    /// VRAM must be positive.
    #[error("--gpus entry {0:?}: VRAM must be more than 0 GB")]
    Zero(String),
}

/// One `index:VRAM` entry of `--gpus`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuRequest {
    /// GPU index as `nunet gpu list` shows it.
    pub index: u32,
    /// VRAM in GiB.
    pub vram_gib: f64,
}

/// Parses `"0:4,1:8"` (spaces allowed; VRAM may be fractional).
pub fn parse_gpu_spec(spec: &str) -> Result<Vec<GpuRequest>, GpuSpecError> {
    let mut out: Vec<GpuRequest> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let syntax = || GpuSpecError::Syntax(part.to_string());
        let (i, v) = part.split_once(':').ok_or_else(syntax)?;
        let index: u32 = i.trim().parse().map_err(|_| syntax())?;
        let vram_gib: f64 = v.trim().parse().map_err(|_| syntax())?;
        if !vram_gib.is_finite() || vram_gib < 0.0 {
            return Err(syntax());
        }
        if vram_gib == 0.0 {
            return Err(GpuSpecError::Zero(part.to_string()));
        }
        if out.iter().any(|g| g.index == index) {
            return Err(GpuSpecError::Duplicate(index));
        }
        out.push(GpuRequest { index, vram_gib });
    }
    if out.is_empty() {
        return Err(GpuSpecError::Syntax(spec.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
