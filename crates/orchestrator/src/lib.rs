//! Deployments of ensembles (NUNET-FORMATS §2): the orchestrator actor that a node creates for
//! `/dms/node/deployment/new`, which asks providers for bids on `/nunet/deployment`, verifies
//! the signed bids, places nodes with `nunet-placement`, locks resources with a two-phase
//! commit (reverting everything and retrying without the failed peer on any failure),
//! allocates and starts the allocations in `depends_on` order, and supervises them until the
//! ensemble completes, fails, or is shut down. The messages it exchanges are the types of
//! `nunet-protocol`.
//!
//! The provider side (bidding, commitments, executions) lives in `nunet-provider`, which owns
//! the resources and executors; this crate does no IO other than actor messages and the output
//! streams it follows for `deployment logs -f` ([`follow`]), and persists through a callback
//! the daemon supplies.

pub mod bids;
pub mod control;
pub mod edges;
pub mod engine;
pub mod exits;
pub mod follow;
pub mod handoff;
pub mod heartbeat;
pub mod metrics;
pub mod order;
/// Timeouts sized to the path to each provider (shared with the provider side).
pub use nunet_network::paths;
pub mod provision;
pub mod recovery;
pub mod redeploy;
pub mod secrets;
pub mod standby;
pub mod state;
pub mod subnet;
pub mod supervise;
pub mod update;

use std::sync::Arc;

pub use control::Deployments;
pub use nunet_protocol::{DeploymentStatus, Manifest};
pub use state::Deployment;

/// Called with the record after every change, to persist it (it queues the write; it must
/// not block on storage).
pub type PersistFn = Arc<dyn Fn(&Deployment) + Send + Sync>;

/// Resolves once every record queued through [`PersistFn`] so far is durable; replies that
/// promise a record (`new`, `shutdown`) wait for it.
pub type FlushFn =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Current time, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The span every log line of one deployment's orchestration carries (`ensemble` = its id).
pub fn deployment_span(id: &str) -> tracing::Span {
    tracing::info_span!("deployment", ensemble = %id, trace_root = %id)
}
