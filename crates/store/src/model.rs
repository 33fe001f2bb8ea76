use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An amount of each resource, in integer units so that sums never drift: CPU in millicores
/// (1 core = 1000), memory and disk in bytes, and VRAM per GPU device (key = the device's
/// UUID, or its PCI address when it has no UUID).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU, in thousandths of a core.
    pub cpu_millicores: u64,
    /// Memory, bytes.
    pub ram_bytes: u64,
    /// Disk, bytes.
    pub disk_bytes: u64,
    /// VRAM per GPU device, bytes.
    #[serde(default)]
    pub gpus: BTreeMap<String, u64>,
}

/// Where a reservation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationState {
    /// Locked for a deployment that has not started yet (expires if not confirmed).
    Committed,
    /// In use by a running allocation.
    Allocated,
}

impl ReservationState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReservationState::Committed => "committed",
            ReservationState::Allocated => "allocated",
        }
    }
}

/// Resources held for one deployment or allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Caller-chosen id (e.g. the allocation id).
    pub id: String,
    /// Committed or allocated.
    pub state: ReservationState,
    /// What it holds.
    pub resources: Resources,
    /// When an unconfirmed commitment lapses (Unix ms); `None` once allocated.
    pub expires_at_ms: Option<i64>,
    /// When it was created (Unix ms).
    pub created_at_ms: i64,
}

/// What the node has onboarded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnboardingRecord {
    /// The onboarded amounts.
    pub resources: Resources,
    /// When (Unix ms).
    pub onboarded_at_ms: i64,
    /// Free-form JSON kept with the record (the request as given, GPU models, location).
    pub details: String,
}

/// One machine benchmark run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkRecord {
    /// When it ran (Unix ms).
    pub taken_at_ms: i64,
    /// How long it took in total.
    pub duration_ms: u64,
    /// Threads used for the all-core CPU test.
    pub threads: u32,
    /// Integer-mix operations per second on one core.
    pub cpu_single_ops_s: f64,
    /// The same on all cores together.
    pub cpu_multi_ops_s: f64,
    /// Memory copy bandwidth, bytes/s.
    pub mem_bandwidth_bytes_s: f64,
    /// Sequential write to the data dir, synced, bytes/s.
    pub disk_write_bytes_s: f64,
    /// Sequential read of that file, bytes/s.
    pub disk_read_bytes_s: f64,
}
