//! NuNet's `subnet.join`: the orchestrating node itself gets an address on the ensemble
//! network (the plan's [`JOIN_ALLOCATION`] member), so its host can reach the allocations
//! directly. The subnet is built here like on a provider, then the host takes the address
//! ([`nunet_subnet::EnsembleNet::attach_host`]). The deployment's end removes it; a restarted
//! daemon rebuilds it while the deployment runs.
//!
//! It must not let allocations open connections to the host: only replies pass the input
//! filter, as on every provider.

use nunet_network::PeerId;
use nunet_protocol::{JOIN_ALLOCATION, SubnetPlan};

use super::{NodeSubnets, blocking, err};

impl NodeSubnets {
    /// Builds `plan`'s subnet here and gives the host its [`JOIN_ALLOCATION`] address. A plan
    /// for another network than the one built here (a retried round) starts over.
    pub async fn join_host(&self, plan: SubnetPlan, local: PeerId) -> Result<(), String> {
        let me = plan
            .members
            .iter()
            .find(|m| m.allocation == JOIN_ALLOCATION && m.peer == local.to_string())
            .map(|m| m.ip)
            .ok_or("the plan gives this node no address")?;
        let id = plan.ensemble_id.clone();
        let other = {
            let ens = self.ensembles.lock().await;
            ens.get(&id).is_some_and(|e| e.plan.network != plan.network)
        };
        if other {
            self.destroy(&id).await;
        }
        self.create(plan, local).await?;
        let net = {
            let ens = self.ensembles.lock().await;
            ens.get(&id).map(|e| e.net.clone())
        };
        let Some(net) = net else {
            return Err("the subnet went away while joining".into());
        };
        if let Err(x) = blocking(move || net.attach_host(me).map_err(err)).await {
            self.destroy(&id).await;
            return Err(format!("giving this host {me}: {x}"));
        }
        tracing::info!(ensemble = %id, ip = %me, "this node joined the ensemble subnet");
        Ok(())
    }
}
