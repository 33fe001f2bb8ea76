//! Host plumbing of an ensemble subnet: the gateway address on the TUN, policy routing per
//! ensemble, veth attachment of workload network namespaces, firewall isolation between
//! ensembles, internet egress, and crash cleanup.
//!
//! Layout per ensemble E (names from [`crate::plan::names`]):
//! * TUN `nn…` (created by the data path) gets `gateway/32 noprefixroute`;
//! * table T_E: `network dev tun src gw`, `alloc/32 dev nv… src gw` per local allocation, and
//!   `unreachable 10.0.0.0/8`, so 10/8 traffic of E never falls through to another ensemble or
//!   the host's default route, while other destinations fall through to `main` (egress, replies
//!   to port-mapped clients);
//! * rules `iif tun|nv… lookup T_E` (priority [`crate::plan::PRIO_IIF`]) and `to network lookup
//!   T_E` ([`crate::plan::PRIO_TO`], for the host's own and DNAT'ed traffic);
//! * iptables: `NUNET-FWD` (from FORWARD) accepts E↔E, drops between ensembles, accepts egress;
//!   `NUNET-IN` (from INPUT) lets containers reach only their own gateway address;
//!   `NUNET-SNAT` masquerades `network → !10/8`.
//!
//! All calls are blocking (they run `ip`/`iptables`); async callers use `spawn_blocking`. This
//! module must not create the TUN, start workloads or touch anything without our names/tags.

mod cleanup;
mod cmd;
pub mod error;
pub(crate) mod iptables;
mod netns;
mod ranges;
mod tap;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use cleanup::{CleanupReport, cleanup_stale};
pub use cmd::Host;
pub use error::HostError;
pub use netns::NetnsHolder;
pub use ranges::used_ranges;
pub use tap::guest_ip_arg;

use crate::plan::{self, Names, PRIO_IIF, PRIO_TO};
use iptables::{FWD, IN, LOCK, Rule, SNAT};

/// MTU of the container end of a veth pair (same as the TUN).
pub const MTU: u32 = 1420;

/// The host side of one ensemble's subnet on this node.
#[derive(Clone, Debug)]
pub struct EnsembleNet {
    host: Host,
    names: Names,
    network: Ipv4Net,
    gateway: Ipv4Addr,
}

/// One workload namespace attached to an ensemble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Host end of the veth pair.
    pub veth: String,
    /// The allocation's address.
    pub ip: Ipv4Addr,
    /// The process whose network namespace holds the `eth0` end; 0 for a VM's TAP device
    /// ([`EnsembleNet::attach_tap`]).
    pub netns_pid: u32,
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn links(host: &Host) -> Result<Vec<String>, HostError> {
    let v = host.run_json("ip", &["-j", "link", "show"])?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect())
}

/// Deletes the ip rules at our priorities that point at `table` and satisfy `pick`.
fn delete_rules(
    host: &Host,
    pick: impl Fn(u32, &serde_json::Value) -> bool,
) -> Result<usize, HostError> {
    let rules = host.run_json("ip", &["-j", "-4", "rule", "show"])?;
    let mut n = 0;
    for r in rules.as_array().into_iter().flatten() {
        let prio = r["priority"].as_u64().and_then(|p| u32::try_from(p).ok());
        let table = r["table"].as_str().and_then(|t| t.parse::<u32>().ok());
        let (Some(prio), Some(table)) = (prio, table) else {
            continue;
        };
        if (prio != PRIO_IIF && prio != PRIO_TO)
            || !(plan::TABLE_BASE..=plan::TABLE_LAST).contains(&table)
            || !pick(table, r)
        {
            continue;
        }
        let (prio, table) = (prio.to_string(), table.to_string());
        let mut args = vec!["rule", "del", "priority", &prio];
        let iif = r["iif"].as_str();
        if let Some(iif) = iif {
            args.extend(["iif", iif]);
        }
        let dst = match (r["dst"].as_str(), r["dstlen"].as_u64()) {
            (Some(d), Some(l)) => Some(format!("{d}/{l}")),
            (Some(d), None) => Some(d.to_owned()),
            _ => None,
        };
        if let Some(dst) = &dst {
            args.extend(["to", dst]);
        }
        args.extend(["table", &table]);
        if host.run_delete("ip", &args)? {
            n += 1;
        }
    }
    Ok(n)
}

/// Adds `ip rule priority <prio> <sel…> lookup <table>` exactly once.
fn ensure_rule(host: &Host, prio: u32, sel: &[&str], table: u32) -> Result<(), HostError> {
    let (p, t) = (prio.to_string(), table.to_string());
    let args = |op| [&["rule", op, "priority", &p][..], sel, &["table", &t]].concat();
    while host.run_delete("ip", &args("del"))? {}
    host.run("ip", &args("add"))?;
    Ok(())
}

impl EnsembleNet {
    /// A handle for an ensemble whose host side may already exist (to tear it down after a
    /// restart); configures nothing.
    pub fn existing(host: &Host, ensemble_id: &str, network: Ipv4Net) -> Self {
        Self {
            host: host.clone(),
            names: plan::names(ensemble_id),
            network: network.trunc(),
            gateway: plan::gateway(network.trunc()),
        }
    }

    /// Configures the host side of ensemble `ensemble_id` on `network` around the existing TUN
    /// `tun_name` (which must be `plan::names(ensemble_id).tun`). Idempotent.
    pub fn setup(
        host: &Host,
        ensemble_id: &str,
        network: Ipv4Net,
        tun_name: &str,
    ) -> Result<Self, HostError> {
        let net = Self::existing(host, ensemble_id, network);
        let n = &net.names;
        if tun_name != n.tun {
            return Err(HostError::Invalid(format!(
                "TUN of ensemble {ensemble_id} must be named {} (got {tun_name})",
                n.tun
            )));
        }
        if !plan::ten_slash_eight().contains(&net.network) || net.network.prefix_len() > 30 {
            return Err(HostError::Invalid(format!(
                "network {network} is not a /8../30 inside 10.0.0.0/8"
            )));
        }
        if let Some(other) = links(host)?
            .into_iter()
            .find(|l| l.starts_with("nn") && l.len() == 10 && l[2..8] == n.tun[2..8] && *l != n.tun)
        {
            return Err(HostError::Conflict(format!(
                "interface {other} shares the name hash of {} (ensemble {ensemble_id})",
                n.tun
            )));
        }
        net.check_gateway_free()?;
        let (tun, h) = (n.tun.as_str(), host);
        let (table, netw) = (n.table.to_string(), net.network.to_string());
        net.own_address(net.gateway)?;
        h.run(
            "ip",
            &[
                "route",
                "replace",
                "unreachable",
                "10.0.0.0/8",
                "table",
                &table,
            ],
        )?;
        ensure_rule(h, PRIO_IIF, &["iif", tun], n.table)?;
        ensure_rule(h, PRIO_TO, &["to", &netw], n.table)?;
        h.run("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        let _guard = lock();
        iptables::ensure_base(h)?;
        for r in net.firewall_rules() {
            r.ensure(h)?;
        }
        Ok(net)
    }

    fn check_gateway_free(&self) -> Result<(), HostError> {
        let addrs = self.host.run_json("ip", &["-j", "-4", "addr", "show"])?;
        let gw = self.gateway.to_string();
        for link in addrs.as_array().into_iter().flatten() {
            let name = link["ifname"].as_str().unwrap_or_default();
            let has = link["addr_info"].as_array().into_iter().flatten();
            if name != self.names.tun && has.into_iter().any(|a| a["local"].as_str() == Some(&gw)) {
                return Err(HostError::Conflict(format!(
                    "gateway address {gw} of {} is already on interface {name}",
                    self.network
                )));
            }
        }
        Ok(())
    }

    fn firewall_rules(&self) -> Vec<Rule> {
        let n = &self.names;
        let (tag, tun) = (n.tag.as_str(), n.tun.as_str());
        let veths = format!("{}+", n.veth_prefix);
        let v = veths.as_str();
        let gw = format!("{}/32", self.gateway);
        let net = self.network.to_string();
        let accept = ["-j", "ACCEPT"];
        vec![
            Rule::new("filter", FWD, &["-i", v, "-o", v], tag, &accept, true),
            Rule::new("filter", FWD, &["-i", v, "-o", tun], tag, &accept, true),
            Rule::new("filter", FWD, &["-i", tun, "-o", v], tag, &accept, true),
            Rule::new("filter", IN, &["-i", v, "-d", &gw], tag, &accept, true),
            Rule::new(
                "nat",
                SNAT,
                &["-s", &net, "!", "-d", "10.0.0.0/8"],
                tag,
                &["-j", "MASQUERADE"],
                false,
            ),
        ]
    }

    /// The names of this ensemble's host objects.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The ensemble's network.
    pub fn network(&self) -> Ipv4Net {
        self.network
    }

    /// The gateway address (on the TUN; DNS listens here).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Where the commands run.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Attaches the network namespace of process `netns_pid` with address `alloc_ip`: a veth
    /// pair whose inner end becomes `eth0` (MTU 1420, `alloc_ip/32`, routes to the gateway, the
    /// network and default via the gateway) and whose host end is routed in T_E. On failure
    /// nothing is left behind.
    pub fn attach(&self, alloc_ip: Ipv4Addr, netns_pid: u32) -> Result<Attachment, HostError> {
        self.check_alloc_ip(alloc_ip)?;
        let att = Attachment {
            veth: self.names.veth(alloc_ip),
            ip: alloc_ip,
            netns_pid,
        };
        self.detach(&att)?;
        let result = self.attach_inner(&att);
        if result.is_err() {
            let _ = self.detach(&att);
        }
        result.map(|()| att)
    }

    /// Gives the host itself the ensemble address `ip` (NuNet's `subnet.join`): the address
    /// on the TUN, and the ensemble's route in T_E with `ip` as its source, so the host's own
    /// connections into the ensemble leave from it. Connections from the ensemble to the host
    /// stay refused: the input filter passes only their replies. Undone with the TUN.
    pub fn attach_host(&self, ip: Ipv4Addr) -> Result<(), HostError> {
        self.check_alloc_ip(ip)?;
        self.own_address(ip)
    }

    /// Puts `ip/32` on the TUN and makes it the source of the ensemble's route in T_E.
    fn own_address(&self, ip: Ipv4Addr) -> Result<(), HostError> {
        let (h, tun) = (&self.host, self.names.tun.as_str());
        let (table, netw, ip) = (
            self.names.table.to_string(),
            self.network.to_string(),
            ip.to_string(),
        );
        let addr = format!("{ip}/32");
        h.run(
            "ip",
            &["addr", "replace", &addr, "dev", tun, "noprefixroute"],
        )?;
        h.run(
            "ip",
            &[
                "route", "replace", &netw, "dev", tun, "src", &ip, "table", &table,
            ],
        )?;
        Ok(())
    }

    fn check_alloc_ip(&self, alloc_ip: Ipv4Addr) -> Result<(), HostError> {
        let net = self.network;
        if !net.contains(&alloc_ip)
            || alloc_ip == self.gateway
            || alloc_ip == net.network()
            || alloc_ip == net.broadcast()
        {
            return Err(HostError::Invalid(format!(
                "{alloc_ip} is not an allocation address of {net}"
            )));
        }
        Ok(())
    }

    fn attach_inner(&self, att: &Attachment) -> Result<(), HostError> {
        let h = &self.host;
        let (pid, mtu) = (att.netns_pid.to_string(), MTU.to_string());
        let v = att.veth.as_str();
        h.run(
            "ip",
            &[
                "link", "add", v, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu", &mtu,
                "netns", &pid,
            ],
        )?;
        let inside = |args: &[&str]| {
            let full = [&["-t", pid.as_str(), "-n", "ip"][..], args].concat();
            h.run("nsenter", &full).map(|_| ())
        };
        let (gw, ip) = (self.gateway.to_string(), format!("{}/32", att.ip));
        inside(&["link", "set", "lo", "up"])?;
        inside(&["addr", "replace", &ip, "dev", "eth0"])?;
        inside(&["link", "set", "eth0", "up"])?;
        inside(&["route", "replace", &gw, "dev", "eth0", "scope", "link"])?;
        inside(&[
            "route",
            "replace",
            &self.network.to_string(),
            "via",
            &gw,
            "dev",
            "eth0",
        ])?;
        inside(&["route", "replace", "default", "via", &gw, "dev", "eth0"])?;
        let table = self.names.table.to_string();
        h.run("ip", &["link", "set", v, "up"])?;
        h.run(
            "ip",
            &[
                "route", "replace", &ip, "dev", v, "src", &gw, "table", &table,
            ],
        )?;
        ensure_rule(h, PRIO_IIF, &["iif", v], self.names.table)
    }

    /// Removes an attachment (veth pair or TAP, its route and rule). Idempotent.
    pub fn detach(&self, att: &Attachment) -> Result<(), HostError> {
        let h = &self.host;
        let (p, t) = (PRIO_IIF.to_string(), self.names.table.to_string());
        while h.run_delete(
            "ip",
            &["rule", "del", "priority", &p, "iif", &att.veth, "table", &t],
        )? {}
        let ip = format!("{}/32", att.ip);
        h.run_delete("ip", &["route", "del", &ip, "table", &t])?;
        h.run_delete("ip", &["link", "del", &att.veth])?;
        Ok(())
    }

    /// Removes everything [`EnsembleNet::setup`] and [`EnsembleNet::attach`] added (not the
    /// TUN itself), and our chains when no other ensemble uses them. Idempotent.
    pub fn teardown(&self) -> Result<(), HostError> {
        let h = &self.host;
        let n = &self.names;
        for l in links(h)? {
            if l.starts_with(&n.veth_prefix) && l.len() == 10 {
                h.run_delete("ip", &["link", "del", &l])?;
            }
        }
        delete_rules(h, |t, _| t == n.table)?;
        h.run_delete("ip", &["route", "flush", "table", &n.table.to_string()])?;
        let gw = format!("{}/32", self.gateway);
        h.run_delete("ip", &["addr", "del", &gw, "dev", &n.tun])?;
        let _guard = lock();
        iptables::remove_tagged(h, |t| t == n.tag)?;
        iptables::remove_base_if_unused(h)?;
        Ok(())
    }
}
