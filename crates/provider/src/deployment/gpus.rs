//! GPUs for deployments: which free GPU units (whole devices, MIG instances; see
//! `nunet_resources::gpu::units`) serve a node's or an allocation's requested GPUs, whether
//! the executor can hand them to the workload, and what the executor is given.
//!
//! Requests are matched to free units smallest VRAM first, so a 16 GiB request does not take
//! the 80 GiB card a later 40 GiB request needs. Reading the accounting only: the commit
//! writes the units chosen here into the reservation.

use std::collections::BTreeMap;
use std::sync::Arc;

use nunet_ensemble::resources::Gpu;
use nunet_ensemble::resources::{Shortfall, assign_gpus};
use nunet_executor::{DevicePath, Executor, GpuDevice};
use nunet_protocol::OfferedGpu;
use nunet_resources::gpu::{GpuUnit, GpuVendor};

/// How a unit looks in a request comparison and in a bid's `free.gpus`.
pub(super) fn as_offer(u: &GpuUnit) -> Gpu {
    Gpu {
        vendor: Some(u.vendor.as_str().to_string()),
        model: Some(u.model.clone()),
        vram: Some(u.vram_bytes),
    }
}

/// The free units, smallest VRAM first (then by key, so the choice is stable).
pub(super) fn free_units(units: Vec<GpuUnit>) -> Vec<GpuUnit> {
    let mut free: Vec<GpuUnit> = units.into_iter().filter(|u| u.free).collect();
    free.sort_by(|a, b| a.vram_bytes.cmp(&b.vram_bytes).then(a.key.cmp(&b.key)));
    free
}

/// A distinct unit of `among` for each of `want`, in request order; or what is missing,
/// naming the GPU rule that nothing met.
pub(super) fn pick(want: &[Gpu], among: &[GpuUnit]) -> Result<Vec<GpuUnit>, String> {
    let offer: Vec<Gpu> = among.iter().map(as_offer).collect();
    match assign_gpus(want, &offer) {
        Ok(given) => Ok(given.into_iter().map(|i| among[i].clone()).collect()),
        Err(short) => Err(format!(
            "no free GPU for {} ({} free here{})",
            short
                .iter()
                .filter_map(|s| match s {
                    Shortfall::Gpu { index, need, .. } => {
                        Some(format!("gpus[{index}]: {}", need.requirement()))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(", "),
            among.len(),
            if among.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    among
                        .iter()
                        .map(|u| format!(
                            "{} {} {}",
                            u.vendor.as_str(),
                            u.model,
                            nunet_resources::units::fmt_bytes(u.vram_bytes)
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )),
    }
}

/// The executor-side vendor; `None` for a GPU of unknown make (nothing knows how to hand
/// it over).
fn vendor_of(v: GpuVendor) -> Option<nunet_executor::GpuVendor> {
    nunet_executor::GpuVendor::from_name(v.as_str())
}

/// Why `u` cannot be handed to any workload as recorded: an NVIDIA GPU without a UUID
/// (seen in sysfs only: the NVIDIA runtime takes UUIDs), an AMD or Intel GPU without
/// device nodes.
fn handoff_problem(u: &GpuUnit) -> Option<String> {
    match u.vendor {
        GpuVendor::Nvidia if !(u.key.starts_with("GPU-") || u.key.starts_with("MIG-")) => {
            Some(format!(
                "NVIDIA GPU {} has no UUID (NVML did not report it), and the NVIDIA runtime hands GPUs over by UUID",
                u.key
            ))
        }
        GpuVendor::Amd | GpuVendor::Intel if u.device_nodes.is_empty() => Some(format!(
            "GPU {} has no device nodes recorded (onboard it again)",
            u.key
        )),
        _ => None,
    }
}

/// Why the executors named cannot hand `units` to their workloads here, if they cannot.
pub(super) fn runtime_refusal(
    executors: &BTreeMap<String, Arc<dyn Executor>>,
    names: &[String],
    units: &[GpuUnit],
) -> Option<String> {
    if let Some(why) = units.iter().find_map(handoff_problem) {
        return Some(why);
    }
    for name in names {
        let Some(ex) = executors.get(name) else {
            return Some(format!("no {name} executor on this provider"));
        };
        let support = ex.gpu_support();
        for u in units {
            let ok = vendor_of(u.vendor).is_some_and(|v| support.supports(v));
            if !ok {
                return Some(format!(
                    "GPU {} ({} {}) cannot be handed to a {name} workload here: {}",
                    u.key,
                    u.vendor.as_str(),
                    u.model,
                    if support.notes.is_empty() {
                        "its vendor is unknown".to_string()
                    } else {
                        support.notes.join("; ")
                    }
                ));
            }
        }
    }
    None
}

/// `u` with the device nodes its card has now: DRM numbering (`card1`, `renderD129`) may
/// change across reboots and driver reloads, so the nodes recorded at onboarding are looked
/// up again by PCI address before a workload gets them. NVIDIA units go by UUID unchanged.
pub(super) fn with_current_nodes(
    mut u: GpuUnit,
    now: &nunet_resources::gpu::GpuDetection,
) -> Result<GpuUnit, String> {
    if u.vendor == GpuVendor::Nvidia {
        return Ok(u);
    }
    let g = now
        .gpus
        .iter()
        .find(|g| g.pci_address == u.pci_address)
        .ok_or_else(|| {
            format!(
                "GPU {} (PCI {}) is not on this machine any more",
                u.key, u.pci_address
            )
        })?;
    if g.device_nodes.is_empty() {
        return Err(format!("GPU {} has no device nodes now", u.key));
    }
    u.device_nodes = g.device_nodes.clone();
    Ok(u)
}

/// What the executor is given for a unit.
pub(super) fn device_of(u: &GpuUnit) -> Option<GpuDevice> {
    Some(GpuDevice {
        vendor: vendor_of(u.vendor)?,
        id: u.key.clone(),
        nodes: u
            .device_nodes
            .iter()
            .map(|n| DevicePath {
                host: n.host.clone().into(),
                container: n.container.clone(),
            })
            .collect(),
    })
}

/// How a unit is named in a bid.
pub(super) fn offered(u: &GpuUnit) -> OfferedGpu {
    OfferedGpu {
        device: u.key.clone(),
        vendor: u.vendor.as_str().to_string(),
        model: u.model.clone(),
        vram: u.vram_bytes,
    }
}

#[cfg(test)]
mod tests;
