//! The deployment protocol: every message orchestrators, providers and the CLI exchange about
//! deployments, as types. Each call binds a behaviour name to its request and reply
//! ([`call::Call`], the list in [`calls`]); statuses are enums with one spelling
//! ([`DeploymentStatus`], [`AllocationStatus`]); the pure subnet address plan lives here so the
//! orchestrator needs no data-plane code; typed `invoke`/`register` adapters sit over the
//! actor system.
//!
//! This crate defines what goes over the wire and checks messages for well-formedness. It
//! must not do IO, hold state, or decide anything (placement, accounting and execution belong
//! to the orchestrator and the provider); both sides depend on it, never the other way.

pub mod bid;
pub mod call;
pub mod calls;
pub mod commit;
pub mod deployment;
pub mod edge;
pub mod exit;
pub mod health;
pub mod logs;
pub mod names;
pub mod provider;
pub mod status;
pub mod storage;
pub mod subnet;
pub mod transfer;

pub use bid::{
    BID_SIGNING_PREFIX, Bid, BidError, BidReply, BidRequest, DECLINE_SIGNING_PREFIX, Decline,
    DeclineReason, MAX_BIDS_PER_NODE, NodeBidRequest, OfferedGpu,
};
pub use call::Call;
pub use commit::{
    AllocateRequest, AllocationRequest, CommitAllocation, CommitRequest, InvalidRequest,
    RevertRequest, allocation_id, new_ensemble_id,
};
pub use deployment::{
    DeploymentList, DeploymentRef, DeploymentSummary, Event, Manifest, ManifestAllocation,
    ManifestNode, ManifestReply, ManifestStandby, NewDeployment, NewDeploymentReply, StatusRequest,
    UpdateDeployment, UpdateDeploymentReply,
};
pub use edge::{EDGE_TIMEOUT, EdgeReply, EdgeRequest};
pub use exit::{Ack, AllocationCheck, AllocationExited, AllocationWanted};
pub use health::{AllocationHealth, Health};
pub use logs::{
    AllocationLogs, DeploymentLogs, DeploymentLogsRequest, FollowRequest, FollowTicket, LOG_CHUNK,
    LogCursor, LogsRequest, log_slice,
};
pub use provider::{
    Allocated, AllocationInfo, AllocationList, AllocationOutput, AllocationState, Committed, Empty,
    Reverted, ShutdownAllocations, Stopped,
};
pub use status::{AllocationStatus, DeploymentStatus};
pub use storage::{VolumeCreate, VolumeCreated, VolumeDone, VolumeRef};
pub use subnet::{JOIN_ALLOCATION, PortForward, SubnetCreated, SubnetMember, SubnetPlan};
