//! The orchestrator side of this node: the deployment registry of `nunet-orchestrator`,
//! persisted in the node's database (records of an earlier run restored), with this node's
//! subnets as the `subnet.join` hook and its libp2p host for followed output.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use nunet_actor::{ActorError, ActorSystem};
use nunet_network::PeerId;
use nunet_orchestrator::subnet::LocalSubnet;
use nunet_protocol::SubnetPlan;
use nunet_provider::onboarding::now_ms;
use nunet_provider::subnet::NodeSubnets;
use nunet_store::{Kind, Records, StoredDocument};

fn failed(e: impl std::fmt::Display) -> ActorError {
    ActorError::failed(e.to_string())
}

/// The orchestrator side: a deployment registry persisted in the node's database, with the
/// records of an earlier run restored.
pub fn start(
    system: &ActorSystem,
    records: Records,
    subnets: Arc<NodeSubnets>,
    output: (nunet_network::Network, Arc<nunet_output::Sessions>),
) -> Result<nunet_orchestrator::Deployments, ActorError> {
    let r = records.clone();
    // Deployments whose trace root was exported (when traces are; once each).
    let rooted = std::sync::Mutex::new(std::collections::HashSet::new());
    let persist: nunet_orchestrator::PersistFn = Arc::new(move |d| {
        if nunet_traces::enabled()
            && d.status.is_terminal()
            && rooted.lock().is_ok_and(|mut s| s.insert(d.id.clone()))
        {
            let attrs = vec![
                ("ensemble".to_string(), d.id.clone()),
                ("status".to_string(), d.status.as_str().to_string()),
            ];
            nunet_traces::emit_root(&d.id, d.created_ms, now_ms(), attrs);
        }
        let doc = StoredDocument {
            id: d.id.clone(),
            ensemble_id: d.id.clone(),
            status: d.status.as_str().to_string(),
            doc: serde_json::to_string(d).unwrap_or_default(),
        };
        r.put(Kind::Deployment, doc, now_ms());
    });
    let r = records.clone();
    let flush: nunet_orchestrator::FlushFn = Arc::new(move || {
        let r = r.clone();
        async move { r.flush().await.map_err(|e| e.to_string()) }.boxed()
    });
    let join = JoinHook {
        subnets,
        local: system
            .peer_id()
            .parse()
            .map_err(|e| failed(format!("this node's peer id: {e}")))?,
    };
    let rtts = output.0.rtts();
    let deployments = nunet_orchestrator::Deployments::new(system.clone(), persist)
        .with_flush(flush)
        .with_local_subnet(Arc::new(join))
        .with_output(output.0, output.1)
        .with_paths(rtts);
    let saved: Vec<nunet_orchestrator::Deployment> = records
        .list(Kind::Deployment)
        .map_err(failed)?
        .into_iter()
        .filter_map(|d| match serde_json::from_str(&d.doc) {
            Ok(rec) => Some(rec),
            Err(e) => {
                tracing::error!(deployment = %d.id, error = %e,
                    "stored deployment record unreadable: not restored");
                None
            }
        })
        .collect();
    deployments.restore(saved);
    deployments.register()?;
    Ok(deployments)
}

/// [`LocalSubnet`] for this node's orchestrators: the subnets its provider side runs.
pub struct JoinHook {
    /// The node's subnets.
    pub subnets: Arc<NodeSubnets>,
    /// This node's peer id.
    pub local: PeerId,
}

impl LocalSubnet for JoinHook {
    fn used_ranges(&self) -> Vec<String> {
        self.subnets.used_ranges()
    }

    fn disabled_reason(&self) -> Option<String> {
        self.subnets.disabled_reason().map(str::to_string)
    }

    fn join(&self, plan: SubnetPlan) -> BoxFuture<'static, Result<(), String>> {
        let (s, local) = (self.subnets.clone(), self.local);
        async move { s.join_host(plan, local).await }.boxed()
    }

    fn leave(&self, ensemble: String) -> BoxFuture<'static, ()> {
        let s = self.subnets.clone();
        async move { s.destroy(&ensemble).await }.boxed()
    }
}
