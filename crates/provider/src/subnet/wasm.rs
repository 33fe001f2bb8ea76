//! The WASM path of [`NodeSubnets`]: a WASM allocation runs as a thread of this daemon, so its
//! network is a namespace held by a parked thread ([`NetnsHolder`]), attached like a
//! container's sandbox (veth, the allocation's address, routes to the gateway). The instance
//! thread enters it, and a preview 2 component's `wasi:sockets` work there: it reaches the
//! other allocations of its ensemble and nothing on the host. Its public ports are forwarded
//! to its address like a container's. Taking it off the subnet is
//! [`NodeSubnets::detach`], which also ends the holder.
//!
//! It must not start the instance, and must not leave a namespace or veth behind when it
//! fails. (The namespace dies with the process, so a crash leaves none either.)

use nunet_executor::{ExecutionSpec, NetworkAttachment, Workload};
use nunet_subnet::NetnsHolder;

use super::{NodeSubnets, blocking, err};

impl NodeSubnets {
    /// Puts a WASM allocation on its ensemble's subnet before it starts: a fresh network
    /// namespace gets the allocation's address and routes, its public ports are forwarded to
    /// it, and `spec.network` names it.
    /// Returns `false` (spec untouched) when the ensemble has no subnet here or the
    /// allocation no address.
    pub async fn attach_wasm(
        &self,
        ensemble: &str,
        spec: &mut ExecutionSpec,
    ) -> Result<bool, String> {
        if !matches!(spec.workload, Workload::Wasm { .. }) {
            return Err("attach_wasm needs a WASM workload".into());
        }
        let mut ens = self.ensembles.lock().await;
        let Some(e) = ens.get_mut(ensemble) else {
            return Ok(false);
        };
        let Some(member) = e.fresh_member(&spec.id).await else {
            return Ok(false);
        };
        let n = e.net.clone();
        let (holder, att) = blocking(move || {
            let holder = NetnsHolder::new().map_err(err)?;
            let att = n.attach(member.ip, holder.pid()).map_err(err)?;
            Ok((holder, att))
        })
        .await
        .map_err(|x| format!("attaching {} to the subnet: {x}", member.ip))?;
        if let Err(x) = e.forward_ports(&spec.id, member.ip) {
            let n = e.net.clone();
            let _ = blocking(move || n.detach(&att).map_err(err)).await;
            return Err(x);
        }
        spec.network = NetworkAttachment::Namespace(holder.path());
        tracing::info!(ensemble, allocation = %spec.id, ip = %member.ip, "WASM instance attached to the ensemble subnet");
        // No sandbox container: the empty name tells `detach` there is none to remove.
        e.attached.insert(spec.id.clone(), (att, String::new()));
        e.netns.insert(spec.id.clone(), holder);
        Ok(true)
    }
}
