//! Every call of the deployment conversation, each a type that binds its behaviour name to
//! its request and reply (see [`crate::call::Call`]). Bid requests go out by gossip and come
//! back as [`crate::BidReply`]s; the direct form for pinned nodes is [`BidRequestDirect`].

use crate::bid::{BidReply, BidRequest};
use crate::call::Call;
use crate::commit::{AllocateRequest, CommitRequest, RevertRequest};
use crate::deployment::{
    DeploymentList, DeploymentRef, DeploymentSummary, ManifestReply, NewDeployment,
    NewDeploymentReply, StatusRequest, UpdateDeployment, UpdateDeploymentReply,
};
use crate::edge::{EdgeReply, EdgeRequest};
use crate::exit::{Ack, AllocationCheck, AllocationExited, AllocationWanted};
use crate::health::AllocationHealth;
use crate::logs::{
    AllocationLogs, DeploymentLogs, DeploymentLogsRequest, FollowRequest, FollowTicket, LogsRequest,
};
use crate::names;
use crate::provider::{
    Allocated, AllocationList, AllocationOutput, AllocationState, Committed, Empty, Reverted,
    ShutdownAllocations, Stopped,
};
use crate::storage::{VolumeCreate, VolumeCreated, VolumeDone, VolumeRef};
use crate::subnet::{SubnetCreated, SubnetPlan};
use crate::transfer::{ShareOutput, SharedOutput, StartRequest};

macro_rules! call {
    ($(#[$doc:meta])* $t:ident, $name:expr, $req:ty => $rep:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $t;
        impl Call for $t {
            const NAME: &'static str = $name;
            type Request = $req;
            type Reply = $rep;
        }
    };
}

macro_rules! ensemble_call {
    ($(#[$doc:meta])* $t:ident, $tail:expr, $req:ty => $rep:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $t;
        impl Call for $t {
            const NAME: &'static str = $tail;
            const PER_ENSEMBLE: bool = true;
            type Request = $req;
            type Reply = $rep;
        }
    };
}

call!(
    /// Provider: a bid request for nodes pinned to it, answered directly.
    BidRequestDirect, names::BID_REQUEST_DIRECT, BidRequest => BidReply
);
call!(
    /// Provider: lock resources (phase 1).
    Commit, names::COMMIT, CommitRequest => Committed
);
call!(
    /// Provider: create the allocation actors (phase 2).
    Allocate, names::ALLOCATE, AllocateRequest => Allocated
);
call!(
    /// Provider: undo an ensemble's commitments and allocations.
    Revert, names::REVERT, RevertRequest => Reverted
);
call!(
    /// Provider: build the ensemble's subnet.
    SubnetCreate, names::SUBNET_CREATE, SubnetPlan => SubnetCreated
);
call!(
    /// Provider: measure the link to another candidate.
    EdgeConstraint, names::EDGE_CONSTRAINT, EdgeRequest => EdgeReply
);
call!(
    /// Allocation actor: start the execution.
    AllocationStart, names::ALLOCATION_START, StartRequest => AllocationState
);
call!(
    /// Allocation actor of a completed task: let another node fetch one of its outputs.
    AllocationShareOutput, names::ALLOCATION_SHARE_OUTPUT, ShareOutput => SharedOutput
);
call!(
    /// Allocation actor: its state.
    AllocationStatusCall, names::ALLOCATION_STATUS, Empty => AllocationState
);
call!(
    /// Allocation actor: its whole output so far.
    AllocationLogsCall, names::ALLOCATION_LOGS, Empty => AllocationOutput
);
call!(
    /// Allocation actor: stop it and release its resources.
    AllocationShutdown, names::ALLOCATION_SHUTDOWN, Empty => AllocationState
);
call!(
    /// Allocation actor: restart the execution in place (same resources, ports, address).
    AllocationRestart, names::ALLOCATION_RESTART, Empty => AllocationState
);
call!(
    /// Provider: the allocations it holds.
    AllocationsList, names::ALLOCATIONS_LIST, Empty => AllocationList
);
call!(
    /// Orchestrating node: deploy an ensemble.
    DeploymentNew, names::DEPLOYMENT_NEW, NewDeployment => NewDeploymentReply
);
call!(
    /// Orchestrating node: every deployment.
    DeploymentListCall, names::DEPLOYMENT_LIST, Empty => DeploymentList
);
call!(
    /// Orchestrating node: one deployment, with events.
    DeploymentStatusCall, names::DEPLOYMENT_STATUS, StatusRequest => DeploymentSummary
);
call!(
    /// Orchestrating node: which peer runs what.
    DeploymentManifest, names::DEPLOYMENT_MANIFEST, DeploymentRef => ManifestReply
);
call!(
    /// Orchestrating node: allocation output from cursors.
    DeploymentLogsCall, names::DEPLOYMENT_LOGS, DeploymentLogsRequest => DeploymentLogs
);
call!(
    /// Orchestrating node: shut a deployment down.
    DeploymentShutdown, names::DEPLOYMENT_SHUTDOWN, DeploymentRef => DeploymentSummary
);
call!(
    /// Orchestrating node: apply a changed ensemble to a running deployment.
    DeploymentUpdate, names::DEPLOYMENT_UPDATE, UpdateDeployment => UpdateDeploymentReply
);
ensemble_call!(
    /// Provider, per ensemble: one allocation's output from a cursor.
    EnsembleLogs, "/allocation/logs", LogsRequest => AllocationLogs
);
ensemble_call!(
    /// Provider, per ensemble: a ticket to follow one allocation's output on a stream.
    EnsembleLogsFollow, "/allocation/logs/follow", FollowRequest => FollowTicket
);
ensemble_call!(
    /// Provider, per ensemble: stop one or all of the ensemble's allocations there.
    EnsembleShutdown, "/allocation/shutdown", ShutdownAllocations => Stopped
);
ensemble_call!(
    /// Orchestrator actor: an allocation's execution ended.
    Exited, "/allocation/exited", AllocationExited => Ack
);
ensemble_call!(
    /// Orchestrator actor: an allocation turned unhealthy, or healthy again.
    HealthChanged, "/allocation/health", AllocationHealth => Ack
);
ensemble_call!(
    /// Orchestrator actor: is this allocation still wanted (after a provider restart)?
    Check, "/allocation/check", AllocationCheck => AllocationWanted
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ensemble_names_match_the_name_functions() {
        assert_eq!(
            EnsembleLogs::behavior(Some("e1")),
            names::ensemble_allocation_logs("e1")
        );
        assert_eq!(
            EnsembleShutdown::behavior(Some("e1")),
            names::ensemble_allocation_shutdown("e1")
        );
        assert_eq!(Exited::behavior(Some("e1")), names::allocation_exited("e1"));
        assert_eq!(Check::behavior(Some("e1")), names::allocation_check("e1"));
        assert_eq!(Commit::behavior(Some("ignored")), names::COMMIT);
    }
}

call!(
    /// Storage node: create a volume only the given client certificate may mount.
    CreateVolume, names::VOLUME_CREATE, VolumeCreate => VolumeCreated
);
call!(
    /// Storage node: start a volume its caller created.
    StartVolume, names::VOLUME_START, VolumeRef => VolumeDone
);
call!(
    /// Storage node: delete a volume its caller created.
    DeleteVolume, names::VOLUME_DELETE, VolumeRef => VolumeDone
);
