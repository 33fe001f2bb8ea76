//! Resources an allocation asks for and a provider offers, and the comparison between them.
//!
//! A request is satisfied when the offer has at least as much of everything (equal counts as
//! satisfied: NuNet's bid handler wants strictly better, which refuses exact fits):
//! * CPU: at least as many cores, and at least the requested total compute (cores × clock)
//!   when a clock is requested; the same architecture when one is requested.
//! * RAM and disk: at least the requested size.
//! * GPUs: every requested GPU is matched to a distinct offered GPU of the same vendor and
//!   model (when given, model by case-insensitive substring) with at least the requested VRAM.

use serde::{Deserialize, Serialize};

use crate::units::{format_frequency, format_size, trim_float};

/// A bundle of resources (a request or an offer). Sizes in bytes, clocks in hertz.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU.
    pub cpu: Cpu,
    /// Memory.
    pub ram: Ram,
    /// Storage.
    pub disk: Disk,
    /// GPUs, one entry per device.
    pub gpus: Vec<Gpu>,
}

/// CPU part of [`Resources`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cpu {
    /// Cores (fractional allowed).
    pub cores: f64,
    /// Clock per core in Hz.
    pub clock_hz: Option<u64>,
    /// `amd64`/`x86_64`, `arm64`/`aarch64`, … (normalised by [`normalize_arch`]).
    pub architecture: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Vendor name.
    pub vendor: Option<String>,
    /// Hardware threads.
    pub threads: Option<u32>,
    /// Cache size in bytes.
    pub cache_size: Option<u64>,
}

/// Memory part of [`Resources`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Ram {
    /// Bytes.
    pub size: u64,
    /// Clock in Hz.
    pub clock_hz: Option<u64>,
    /// Memory type (DDR4, …).
    pub kind: Option<String>,
}

/// Storage part of [`Resources`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Disk {
    /// Bytes.
    pub size: u64,
    /// Disk type (SSD, NVMe, …).
    pub kind: Option<String>,
}

/// One GPU device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Gpu {
    /// Normalised vendor: `NVIDIA`, `AMD/ATI`, `Intel` (others kept as written).
    pub vendor: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Video memory in bytes.
    pub vram: Option<u64>,
}

impl Gpu {
    /// What this requested GPU asks for, e.g. `vendor = NVIDIA, vram ≥ 24GiB`.
    pub fn requirement(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.vendor {
            parts.push(format!("vendor = {v}"));
        }
        if let Some(m) = &self.model {
            parts.push(format!("model ~ {m}"));
        }
        if let Some(v) = self.vram {
            parts.push(format!("vram ≥ {}", format_size(v)));
        }
        if parts.is_empty() {
            "a gpu".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// Canonical architecture names: `amd64` and `arm64`, as Docker and Go write them.
pub fn normalize_arch(arch: &str) -> String {
    match arch.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" | "amd64" | "x64" => "amd64".to_string(),
        "aarch64" | "arm64" | "armv8" => "arm64".to_string(),
        "i386" | "i686" | "x86" | "386" => "386".to_string(),
        other => other.to_string(),
    }
}

/// Canonical GPU vendor names, as NuNet normalises them.
pub fn normalize_gpu_vendor(vendor: &str) -> Option<String> {
    match vendor.to_ascii_lowercase().as_str() {
        "nvidia" => Some("NVIDIA".into()),
        "amd" | "ati" | "amd/ati" => Some("AMD/ATI".into()),
        "intel" => Some("Intel".into()),
        _ => None,
    }
}

impl Resources {
    /// Adds another request: cores, RAM, disk and GPUs add up; the clock is the highest
    /// asked for; the architecture is the first one given.
    pub fn add(&mut self, other: &Resources) {
        self.cpu.cores = ((self.cpu.cores + other.cpu.cores) * 100.0).round() / 100.0;
        self.cpu.clock_hz = match (self.cpu.clock_hz, other.cpu.clock_hz) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if self.cpu.architecture.is_none() {
            self.cpu.architecture.clone_from(&other.cpu.architecture);
        }
        self.ram.size = self.ram.size.saturating_add(other.ram.size);
        self.disk.size = self.disk.size.saturating_add(other.disk.size);
        self.gpus.extend(other.gpus.iter().cloned());
    }

    /// Whether `offer` satisfies this request; otherwise every shortfall.
    pub fn satisfied_by(&self, offer: &Resources) -> Result<(), Vec<Shortfall>> {
        let mut out = Vec::new();
        if offer.cpu.cores + 1e-9 < self.cpu.cores {
            out.push(Shortfall::CpuCores {
                need: self.cpu.cores,
                have: offer.cpu.cores,
            });
        }
        if let Some(clock) = self.cpu.clock_hz {
            let need = self.cpu.cores * clock as f64;
            let have = offer.cpu.cores * offer.cpu.clock_hz.unwrap_or(0) as f64;
            if have + 1.0 < need {
                out.push(Shortfall::CpuCompute {
                    cores: self.cpu.cores,
                    clock_hz: clock,
                });
            }
        }
        if let Some(arch) = &self.cpu.architecture {
            let want = normalize_arch(arch);
            let have = offer.cpu.architecture.as_deref().map(normalize_arch);
            if have.as_deref() != Some(want.as_str()) {
                out.push(Shortfall::Architecture { need: want });
            }
        }
        if offer.ram.size < self.ram.size {
            out.push(Shortfall::Ram {
                need: self.ram.size,
            });
        }
        if offer.disk.size < self.disk.size {
            out.push(Shortfall::Disk {
                need: self.disk.size,
            });
        }
        out.extend(match_gpus(&self.gpus, &offer.gpus));
        if out.is_empty() { Ok(()) } else { Err(out) }
    }
}

/// Whether one offered GPU can serve one requested GPU.
pub fn gpu_fits(want: &Gpu, have: &Gpu) -> bool {
    let vendor_ok = match (&want.vendor, &have.vendor) {
        (None, _) => true,
        (Some(w), Some(h)) => w.eq_ignore_ascii_case(h),
        (Some(_), None) => false,
    };
    let model_ok = match (&want.model, &have.model) {
        (None, _) => true,
        (Some(w), Some(h)) => h.to_ascii_lowercase().contains(&w.to_ascii_lowercase()),
        (Some(_), None) => false,
    };
    let vram_ok = want.vram.is_none_or(|w| have.vram.unwrap_or(0) >= w);
    vendor_ok && model_ok && vram_ok
}

/// Maximum bipartite matching of requested to offered GPUs (augmenting paths); returns one
/// shortfall per requested GPU left unmatched.
fn match_gpus(want: &[Gpu], have: &[Gpu]) -> Vec<Shortfall> {
    assign_gpus(want, have).err().unwrap_or_default()
}

/// A distinct offered GPU for every requested one: `Ok(v)` where `v[i]` is the index in
/// `have` given to `want[i]`, or one shortfall per requested GPU left unmatched. The
/// matching is maximum (augmenting paths), and a requested GPU tries the offered ones in
/// their order first: list the offer smallest first to keep large devices for requests
/// that need them.
pub fn assign_gpus(want: &[Gpu], have: &[Gpu]) -> Result<Vec<usize>, Vec<Shortfall>> {
    let mut owner: Vec<Option<usize>> = vec![None; have.len()];
    let mut unmatched = Vec::new();
    for w in 0..want.len() {
        let mut seen = vec![false; have.len()];
        if !augment(w, want, have, &mut owner, &mut seen) {
            unmatched.push(w);
        }
    }
    if unmatched.is_empty() {
        let mut given = vec![0; want.len()];
        for (h, w) in owner.iter().enumerate() {
            if let Some(w) = w {
                given[*w] = h;
            }
        }
        return Ok(given);
    }
    Err(unmatched
        .into_iter()
        .map(|i| Shortfall::Gpu {
            index: i,
            need: want[i].clone(),
            offered: have.len(),
        })
        .collect())
}

fn augment(
    w: usize,
    want: &[Gpu],
    have: &[Gpu],
    owner: &mut [Option<usize>],
    seen: &mut [bool],
) -> bool {
    for h in 0..have.len() {
        if seen[h] || !gpu_fits(&want[w], &have[h]) {
            continue;
        }
        seen[h] = true;
        let free = match owner[h] {
            None => true,
            Some(other) => augment(other, want, have, owner, seen),
        };
        if free {
            owner[h] = Some(w);
            return true;
        }
    }
    false
}

/// One way an offer falls short of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Shortfall {
    /// Too few cores.
    CpuCores {
        /// Requested.
        need: f64,
        /// Offered.
        have: f64,
    },
    /// Not enough cores × clock.
    CpuCompute {
        /// Requested cores.
        cores: f64,
        /// Requested clock.
        clock_hz: u64,
    },
    /// Wrong CPU architecture.
    Architecture {
        /// Requested (normalised).
        need: String,
    },
    /// Not enough RAM.
    Ram {
        /// Requested bytes.
        need: u64,
    },
    /// Not enough disk.
    Disk {
        /// Requested bytes.
        need: u64,
    },
    /// A requested GPU has no matching device.
    Gpu {
        /// Index in the request.
        index: usize,
        /// The requested device.
        need: Gpu,
        /// How many devices were offered.
        offered: usize,
    },
}

impl Shortfall {
    /// The requirement that was not met, e.g. `vram ≥ 24GiB` (used to group bids in
    /// explanations).
    pub fn requirement(&self) -> String {
        match self {
            Shortfall::CpuCores { need, .. } => format!("cpu cores ≥ {}", trim_float(*need)),
            Shortfall::CpuCompute { cores, clock_hz } => {
                format!(
                    "cpu ≥ {} cores × {}",
                    trim_float(*cores),
                    format_frequency(*clock_hz)
                )
            }
            Shortfall::Architecture { need } => format!("architecture = {need}"),
            Shortfall::Ram { need } => format!("ram ≥ {}", format_size(*need)),
            Shortfall::Disk { need } => format!("disk ≥ {}", format_size(*need)),
            Shortfall::Gpu { need, .. } => need.requirement(),
        }
    }
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortfall::CpuCores { need, have } => {
                write!(
                    f,
                    "needs {} cpu cores, offers {}",
                    trim_float(*need),
                    trim_float(*have)
                )
            }
            Shortfall::Gpu { index, offered, .. } => {
                write!(
                    f,
                    "gpu #{index} ({}) unmatched among {offered} offered",
                    self.requirement()
                )
            }
            other => write!(f, "needs {}", other.requirement()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GIB: u64 = 1 << 30;

    fn res(cores: f64, ram: u64, disk: u64, gpus: &[(&str, u64)]) -> Resources {
        Resources {
            cpu: Cpu {
                cores,
                ..Cpu::default()
            },
            ram: Ram {
                size: ram * GIB,
                ..Ram::default()
            },
            disk: Disk {
                size: disk * GIB,
                ..Disk::default()
            },
            gpus: gpus
                .iter()
                .map(|(v, m)| Gpu {
                    vendor: Some(v.to_string()),
                    model: None,
                    vram: Some(m * GIB),
                })
                .collect(),
        }
    }

    #[test]
    fn equal_counts_as_satisfied() {
        let r = res(2.0, 4, 10, &[("NVIDIA", 24)]);
        assert_eq!(r.satisfied_by(&r.clone()), Ok(()));
    }

    #[test]
    fn each_shortfall_is_reported() {
        let want = res(4.0, 8, 100, &[("NVIDIA", 24)]);
        let have = res(2.0, 4, 50, &[("NVIDIA", 16)]);
        let errs = want.satisfied_by(&have).unwrap_err();
        let reqs: Vec<String> = errs.iter().map(Shortfall::requirement).collect();
        assert_eq!(
            reqs,
            [
                "cpu cores ≥ 4",
                "ram ≥ 8GiB",
                "disk ≥ 100GiB",
                "vendor = NVIDIA, vram ≥ 24GiB"
            ]
        );
    }

    #[test]
    fn clock_compares_total_compute_and_arch_is_normalised() {
        let mut want = res(2.0, 1, 1, &[]);
        want.cpu.clock_hz = Some(3_000_000_000);
        want.cpu.architecture = Some("x86_64".into());
        let mut have = res(4.0, 1, 1, &[]);
        have.cpu.clock_hz = Some(2_000_000_000);
        have.cpu.architecture = Some("amd64".into());
        assert_eq!(want.satisfied_by(&have), Ok(()));
        have.cpu.clock_hz = Some(1_000_000_000);
        have.cpu.architecture = Some("aarch64".into());
        assert_eq!(want.satisfied_by(&have).unwrap_err().len(), 2);
    }

    #[test]
    fn gpus_are_matched_per_device_not_greedily() {
        // Greedy would give the 48GiB card to the 16GiB request and fail the 40GiB one.
        let want = res(1.0, 1, 1, &[("NVIDIA", 16), ("NVIDIA", 40)]);
        let have = res(1.0, 1, 1, &[("NVIDIA", 48), ("NVIDIA", 24)]);
        assert_eq!(want.satisfied_by(&have), Ok(()));
        let two = res(1.0, 1, 1, &[("NVIDIA", 16), ("NVIDIA", 16)]);
        let one = res(1.0, 1, 1, &[("NVIDIA", 80)]);
        assert_eq!(two.satisfied_by(&one).unwrap_err().len(), 1);
        let amd = res(1.0, 1, 1, &[("AMD/ATI", 80)]);
        assert!(res(1.0, 1, 1, &[("NVIDIA", 8)]).satisfied_by(&amd).is_err());
    }

    #[test]
    fn assignment_names_a_distinct_device_per_request_smallest_first() {
        // Offer listed smallest first: the 16 GiB request takes the 24 GiB card, not the 48.
        let have = res(1.0, 1, 1, &[("NVIDIA", 24), ("NVIDIA", 48), ("NVIDIA", 80)]).gpus;
        let want = res(1.0, 1, 1, &[("NVIDIA", 40), ("NVIDIA", 16)]).gpus;
        assert_eq!(assign_gpus(&want, &have), Ok(vec![1, 0]));
        // A model pattern matches by substring, case-insensitively.
        let mut a100 = have.clone();
        a100[2].model = Some("NVIDIA A100-SXM4-80GB".into());
        let mut want = res(1.0, 1, 1, &[("NVIDIA", 8)]).gpus;
        want[0].model = Some("a100".into());
        assert_eq!(assign_gpus(&want, &a100), Ok(vec![2]));
        // Two requests, one device that fits both: one is left over, named.
        let want = res(1.0, 1, 1, &[("NVIDIA", 60), ("NVIDIA", 70)]).gpus;
        let err = assign_gpus(&want, &have).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].requirement(), "vendor = NVIDIA, vram ≥ 70GiB");
        assert_eq!(assign_gpus(&[], &have), Ok(vec![]));
    }

    #[test]
    fn add_sums_requests() {
        let mut a = res(0.5, 1, 2, &[("NVIDIA", 8)]);
        a.add(&res(1.25, 3, 4, &[("Intel", 2)]));
        assert_eq!(a.cpu.cores, 1.75);
        assert_eq!(a.ram.size, 4 * GIB);
        assert_eq!(a.disk.size, 6 * GIB);
        assert_eq!(a.gpus.len(), 2);
    }
}
