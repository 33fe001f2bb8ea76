//! TAP attachment of a microVM to an ensemble: the VM's NIC is a TAP device on the host, named
//! and routed exactly like the host end of a container's veth (`nv…`, `/32` route in the
//! ensemble's table, `iif` rule, the `nv+` firewall rules), so the rest of the subnet treats both
//! alike. The guest is told its address on the kernel command line ([`guest_ip_arg`]) with the
//! ensemble's netmask; `proxy_arp` on the TAP makes the host answer the guest's ARP for every
//! other address of the ensemble, so guests need no on-link gateway trick.
//!
//! This module must not start the VM or open the TAP's file descriptor (the VMM does).

use std::net::Ipv4Addr;

use super::{Attachment, EnsembleNet, HostError, MTU, ensure_rule};
use crate::plan::PRIO_IIF;

/// The classic kernel `ip=` argument for a guest with address `ip` on `net`, its gateway as
/// router and DNS server, interface `eth0`, no autoconfiguration:
/// `ip=<ip>::<gw>:<mask>::eth0:off:<gw>`. Kernels built with `CONFIG_IP_PNP` apply it
/// themselves; others (Debian's cloud kernel) leave it in `/proc/cmdline` for the guest's init.
pub fn guest_ip_arg(net: &EnsembleNet, ip: Ipv4Addr) -> String {
    let gw = net.gateway();
    let mask = net.network().netmask();
    format!("ip={ip}::{gw}:{mask}::eth0:off:{gw}")
}

impl EnsembleNet {
    /// Creates the TAP device of a VM with address `alloc_ip` (name [`crate::plan::Names::veth`],
    /// MTU 1420, up, `proxy_arp`), routes `alloc_ip/32` to it in the ensemble's table and adds
    /// its `iif` rule. The returned attachment has `netns_pid` 0 (the guest is a VM, not a
    /// namespace) and is removed by [`EnsembleNet::detach`]. On failure nothing is left behind.
    pub fn attach_tap(&self, alloc_ip: Ipv4Addr) -> Result<Attachment, HostError> {
        self.check_alloc_ip(alloc_ip)?;
        let att = Attachment {
            veth: self.names.veth(alloc_ip),
            ip: alloc_ip,
            netns_pid: 0,
        };
        self.detach(&att)?;
        let result = self.attach_tap_inner(&att);
        if result.is_err() {
            let _ = self.detach(&att);
        }
        result.map(|()| att)
    }

    fn attach_tap_inner(&self, att: &Attachment) -> Result<(), HostError> {
        let h = &self.host;
        let t = att.veth.as_str();
        h.run("ip", &["tuntap", "add", "dev", t, "mode", "tap"])?;
        h.run("ip", &["link", "set", t, "mtu", &MTU.to_string(), "up"])?;
        let proxy = format!("net.ipv4.conf.{t}.proxy_arp=1");
        // Answer at once instead of after a random delay of up to 0.8 s.
        let delay = format!("net.ipv4.neigh.{t}.proxy_delay=0");
        h.run("sysctl", &["-q", "-w", &proxy, &delay])?;
        let (gw, ip) = (self.gateway.to_string(), format!("{}/32", att.ip));
        let table = self.names.table.to_string();
        h.run(
            "ip",
            &[
                "route", "replace", &ip, "dev", t, "src", &gw, "table", &table,
            ],
        )?;
        ensure_rule(h, PRIO_IIF, &["iif", t], self.names.table)
    }
}
