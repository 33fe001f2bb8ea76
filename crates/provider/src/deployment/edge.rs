//! The provider's `/dms/deployment/constraint/edge` (NUNET-FORMATS §2.2 step 1): measures
//! the link from this node to another candidate peer for an orchestrator placing an ensemble
//! with edge constraints — the smallest of three pings and, only when a bandwidth bound is
//! asked, one bounded throughput probe ([`crate::probe`]). Also starts this node's probe
//! server, so that others can measure links to it.
//!
//! Authorization is the actor layer's (the caller needs `/dms/deployment`, like every other
//! provider behavior). This module must not judge the bounds (the orchestrator's solver does)
//! nor cache results (the orchestrator caches per deployment).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libp2p::PeerId;
use nunet_actor::ActorError;
use nunet_network::Network;
use nunet_protocol::call;
use nunet_protocol::calls::EdgeConstraint;
use nunet_protocol::{EdgeReply, EdgeRequest};
use tokio::sync::Semaphore;

use super::{Provider, failed};
use crate::probe::{ProbeServer, measure_link};

/// Most links this node measures at once; further requests wait for a slot.
const MAX_OUTGOING: usize = 4;
/// Longest one measurement may take here, waiting for a slot included (the orchestrator
/// gives up after 5 s).
const MEASURE_BUDGET: Duration = Duration::from_millis(4500);

/// What the edge behavior needs: the host, its probe server and the measurement slots.
pub(super) struct EdgeState {
    network: Network,
    server: OnceLock<ProbeServer>,
    slots: Semaphore,
}

impl EdgeState {
    pub(super) fn new(network: Network) -> Self {
        Self {
            network,
            server: OnceLock::new(),
            slots: Semaphore::new(MAX_OUTGOING),
        }
    }
}

impl Provider {
    async fn edge_constraint(&self, req: EdgeRequest) -> Result<EdgeReply, ActorError> {
        let peer: PeerId = req
            .peer
            .parse()
            .map_err(|e| failed(format!("peer {:?} is not a peer id: {e}", req.peer)))?;
        let net = &self.edge.network;
        if peer == net.local_peer_id() {
            return Err(failed("a link from this node to itself cannot be measured"));
        }
        let with_throughput = req.bandwidth_mbps.is_some();
        let measured = tokio::time::timeout(MEASURE_BUDGET, async {
            let _slot = self
                .edge
                .slots
                .acquire()
                .await
                .map_err(|_| failed("shutting down"))?;
            measure_link(net, peer, with_throughput)
                .await
                .map_err(failed)
        })
        .await
        .map_err(|_| failed(format!("measuring the link to {peer} took too long")))??;
        let reply = EdgeReply {
            rtt_ms: measured.rtt.as_secs_f64() * 1000.0,
            bandwidth_mbps: measured.throughput.map(|t| t.mbps()),
        };
        tracing::debug!(%peer, rtt_ms = reply.rtt_ms, mbps = ?reply.bandwidth_mbps, "edge measured");
        Ok(reply)
    }

    /// Starts the probe server and registers `/dms/deployment/constraint/edge` on the root
    /// actor. A probe server that cannot start is logged (links to this node then fail their
    /// bandwidth bounds), not fatal.
    pub(super) fn register_edge(self: &Arc<Self>) -> Result<(), ActorError> {
        match ProbeServer::start(&self.edge.network) {
            Ok(s) => {
                let _ = self.edge.server.set(s);
            }
            Err(e) => tracing::warn!(error = %e, "no throughput probe server"),
        }
        call::register::<EdgeConstraint, _, _, _>(
            &self.system,
            "root",
            self.clone(),
            |p, _m, req| async move { p.edge_constraint(req).await },
        )
    }
}
