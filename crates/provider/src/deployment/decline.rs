//! Why this provider does not bid: the per-node checks of a bid request and the signed
//! decline sent back instead of a bid. It decides nothing about resources beyond reading
//! them; commits and locks stay in `commit`.

use std::collections::BTreeMap;

use nunet_actor::ActorError;
use nunet_protocol::{BidReply, BidRequest, Decline, DeclineReason, NodeBidRequest};

use super::{Provider, gpus, held};

impl Provider {
    /// Why node `n` of a request does not fit here, or `None` when this provider can bid.
    /// `available`: executors available; `live`: reservations still holding resources;
    /// `free_gpus`: the free GPU units (one snapshot for the whole request).
    pub(super) fn node_refusal(
        &self,
        n: &NodeBidRequest,
        me: &str,
        available: &[String],
        live: &dyn Fn(&str) -> bool,
        free_gpus: &[nunet_resources::gpu::GpuUnit],
    ) -> Option<DeclineReason> {
        if n.peer.as_ref().is_some_and(|p| p != me) {
            return Some(DeclineReason::PinnedElsewhere);
        }
        if !n.executors.iter().all(|e| available.contains(e)) {
            let not_here = |e: &String| {
                nunet_ensemble::execution::NOT_RUN_HERE
                    .iter()
                    .any(|(name, _)| name == e)
            };
            if n.executors.iter().any(not_here) {
                return Some(DeclineReason::ExecutorNotImplemented);
            }
            return Some(DeclineReason::NoExecutor);
        }
        let fits = held(&n.resources).is_ok_and(|want| {
            self.with_manager(|g| Ok(g.accounting().shortfall(&want).is_none()))
                .unwrap_or(false)
        });
        if !fits {
            return Some(DeclineReason::Resources);
        }
        if !n.resources.gpus.is_empty() {
            let Ok(chosen) = gpus::pick(&n.resources.gpus, free_gpus) else {
                return Some(DeclineReason::Gpu);
            };
            // An orchestrator that does not say which executors want the GPUs: all of them.
            let names = if n.gpu_executors.is_empty() {
                &n.executors
            } else {
                &n.gpu_executors
            };
            if gpus::runtime_refusal(&self.executors, names, &chosen).is_some() {
                return Some(DeclineReason::GpuRuntime);
            }
        }
        if n.location.refusal(&self.location).is_some() {
            return Some(DeclineReason::Location);
        }
        if self.port_locks.refusal(&n.ports, live).is_some() {
            return Some(DeclineReason::Ports);
        }
        None
    }

    /// The signed decline of `req`, as a reply.
    pub(super) fn decline(
        &self,
        req: &BidRequest,
        reason: Option<DeclineReason>,
        nodes: BTreeMap<String, DeclineReason>,
    ) -> Result<BidReply, ActorError> {
        let me = self.system.peer_id().to_string();
        let d = Decline::new(&req.ensemble_id, req.nonce, &me, reason, nodes).sign(&self.key);
        Ok(BidReply::Decline(d))
    }
}
