//! What a node offers and what it has promised: hardware detection (CPU, memory, the data
//! dir's disk, NVIDIA GPUs through NVML loaded at run time, AMD/Intel GPUs from sysfs),
//! onboarding within the machine's limits, a short machine benchmark, and the free /
//! committed / allocated accounting per resource and per GPU device, persisted through
//! `nunet-store` before anything is acknowledged.
//!
//! This crate does not start, stop or watch workloads (executors do; see
//! [`accounting::AllocationStopper`] for the hook a forced offboard calls) and does no network
//! lookups (geolocation comes from configuration).

/// Free / committed / allocated bookkeeping.
pub mod accounting;
/// The machine benchmark run at onboarding.
pub mod benchmark;
/// GPU detection and `--gpus` parsing.
pub mod gpu;
/// CPU, memory, disk detection and usage.
pub mod hardware;
/// Onboarding limits, requests and the node-facing manager.
pub mod onboarding;
/// Units and their formatting.
pub mod units;

pub use accounting::{Accounting, AccountingError, AllocationStopper, OffboardReport, StopOutcome};
pub use nunet_store::{Resources, Store, StoreError};
pub use onboarding::{Geolocation, OnboardError, OnboardRequest, ResourceManager};
