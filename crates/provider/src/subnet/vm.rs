//! The VM path of [`NodeSubnets`]: before a microVM allocation starts, a TAP device routed into
//! its ensemble's subnet becomes the VM's NIC, and the guest learns its address, gateway, mask
//! and DNS server from the kernel `ip=` argument. Its public ports are forwarded like a
//! container's. Taking it off the subnet is [`NodeSubnets::detach`] (the same as for Docker).
//!
//! It must not start the VM, and must not leave a TAP behind when it fails.

use nunet_executor::{ExecutionSpec, NetworkAttachment, Workload};
use nunet_subnet::guest_ip_arg;

use super::{NodeSubnets, blocking, err};

impl NodeSubnets {
    /// Puts a VM allocation on its ensemble's subnet before it starts: creates its TAP, sets
    /// `spec.network` to it and appends `ip=…` to the kernel command line. Returns `false`
    /// (spec untouched) when the ensemble has no subnet here or the allocation no address.
    pub async fn attach_vm(
        &self,
        ensemble: &str,
        spec: &mut ExecutionSpec,
    ) -> Result<bool, String> {
        let Workload::Vm(vm) = &mut spec.workload else {
            return Err("attach_vm needs a VM workload".into());
        };
        let mut ens = self.ensembles.lock().await;
        let Some(e) = ens.get_mut(ensemble) else {
            return Ok(false);
        };
        let Some(member) = e.fresh_member(&spec.id).await else {
            return Ok(false);
        };
        let n = e.net.clone();
        let att = blocking(move || n.attach_tap(member.ip).map_err(err))
            .await
            .map_err(|x| format!("attaching {} to the subnet: {x}", member.ip))?;
        if let Err(x) = e.forward_ports(&spec.id, member.ip) {
            let n = e.net.clone();
            let _ = blocking(move || n.detach(&att).map_err(err)).await;
            return Err(x);
        }
        let arg = guest_ip_arg(&e.net, member.ip);
        let args: Vec<&str> = vm
            .kernel_args
            .split_whitespace()
            .filter(|a| !a.starts_with("ip="))
            .chain([arg.as_str()])
            .collect();
        vm.kernel_args = args.join(" ");
        spec.network = NetworkAttachment::Tap {
            iface: att.veth.clone(),
            mac: None,
        };
        spec.ports.clear();
        tracing::info!(ensemble, allocation = %spec.id, ip = %member.ip, tap = %att.veth, "VM attached to the ensemble subnet");
        // No sandbox container: the empty name tells `detach` there is none to remove.
        e.attached.insert(spec.id.clone(), (att, String::new()));
        Ok(true)
    }
}
