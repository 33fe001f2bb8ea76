//! The GPUs a node offers to deployments, one [`GpuUnit`] per thing that can be handed to one
//! allocation: a whole device, or one MIG instance of a device in MIG mode.
//!
//! A unit goes to one allocation at a time, whole. VRAM is not isolated between processes
//! sharing a GPU (outside MIG), so two allocations on one device could each take the memory
//! the other was promised: the onboarded VRAM of a unit is what a bid advertises and what a
//! request's `vram` is compared with, and the reservation holds all of it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DeviceNode, GpuInfo, GpuVendor};

/// One GPU, or one MIG instance, that can be reserved for one allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuUnit {
    /// The accounting key: `GPU-…`/`MIG-…` UUID, or `pci:<address>`.
    pub key: String,
    /// Maker.
    pub vendor: GpuVendor,
    /// Model (a MIG instance: its parent's model and `MIG n`).
    pub model: String,
    /// Onboarded VRAM, bytes (what a request's `vram` is compared with).
    pub vram_bytes: u64,
    /// The parent GPU's UUID, for a MIG instance.
    pub parent: Option<String>,
    /// PCI address of the device (of the parent, for a MIG instance).
    pub pci_address: String,
    /// Device nodes to hand to a container (AMD, Intel).
    pub device_nodes: Vec<DeviceNode>,
    /// Nothing holds it now.
    pub free: bool,
}

/// The units of the onboarded `gpus` (as recorded at onboarding), with the onboarded VRAM
/// per key and what is free of it. A key recorded in `gpus` but absent from `onboarded` (a
/// damaged record) gives no unit.
pub fn units_of(
    gpus: &[GpuInfo],
    onboarded: &BTreeMap<String, u64>,
    free: &BTreeMap<String, u64>,
) -> Vec<GpuUnit> {
    let mut out = Vec::new();
    let mut push = |key: String, g: &GpuInfo, model: String, parent: Option<String>| {
        let Some(&vram) = onboarded.get(&key) else {
            return;
        };
        out.push(GpuUnit {
            free: free.get(&key).copied().unwrap_or(0) >= vram,
            key,
            vendor: g.vendor,
            model,
            vram_bytes: vram,
            parent,
            pci_address: g.pci_address.clone(),
            device_nodes: g.device_nodes.clone(),
        });
    };
    for g in gpus {
        if g.mig.is_empty() {
            push(g.device_key(), g, g.model.clone(), None);
        } else {
            for m in &g.mig {
                push(
                    m.uuid.clone(),
                    g,
                    format!("{} MIG {}", g.model, m.index),
                    g.uuid.clone(),
                );
            }
        }
    }
    out
}
