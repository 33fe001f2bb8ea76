//! What a node offers and what it has promised: hardware detection (CPU, memory, the data
//! dir's disk, NVIDIA GPUs through NVML loaded at run time, AMD/Intel GPUs from sysfs),
//! onboarding within the machine's limits, a short machine benchmark, and the free /
//! committed / allocated accounting per resource and per GPU device, persisted through
//! `nunet-store` before anything is acknowledged.
//!
//! This crate does not start, stop or watch workloads (executors do; see
//! [`accounting::AllocationStopper`] for the hook a forced offboard calls) and does no network
//! lookups (geolocation comes from configuration).

pub mod accounting;
pub mod benchmark;
pub mod gpu;
pub mod hardware;
pub mod onboarding;
pub mod shared;
pub mod units;

pub use accounting::{Accounting, AccountingError, AllocationStopper, OffboardReport, StopOutcome};
pub use nunet_store::{Resources, Store, StoreError};
pub use onboarding::{Geolocation, OnboardError, OnboardRequest, ResourceManager};
pub use shared::lock_manager;
