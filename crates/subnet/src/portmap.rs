//! Public port mapping: `host:<public port>` → `<allocation address>:<port>` with DNAT in the
//! nat chain `NUNET-PORTS` (jumped from PREROUTING, and from OUTPUT for clients on the host
//! itself, both only for local destination addresses), plus the FORWARD accept for exactly
//! those DNAT'ed flows.
//!
//! Rules carry the ensemble's tag, so [`crate::host::EnsembleNet::teardown`] and
//! [`crate::host::cleanup_stale`] remove them too. This module must not open host sockets or
//! check the provider's port range (the bid/commit path does).

use std::net::Ipv4Addr;

use crate::host::iptables::{self, FWD, LOCK, PORTS, Rule};
use crate::host::{EnsembleNet, Host, HostError};
use crate::plan::Names;

/// Transport protocol of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The iptables name.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One forwarded port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// Port on the host's addresses.
    pub public_port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Allocation address.
    pub alloc_ip: Ipv4Addr,
    /// Port inside the allocation.
    pub alloc_port: u16,
}

/// The port mappings of one ensemble on this host.
#[derive(Debug)]
pub struct PortMap {
    host: Host,
    names: Names,
    mappings: Vec<PortMapping>,
}

fn rules(names: &Names, m: &PortMapping) -> [Rule; 2] {
    let (proto, public) = (m.proto.as_str(), m.public_port.to_string());
    let to = format!("{}:{}", m.alloc_ip, m.alloc_port);
    let dst = format!("{}/32", m.alloc_ip);
    let (aport, veths) = (m.alloc_port.to_string(), format!("{}+", names.veth_prefix));
    let tag = names.tag.as_str();
    [
        Rule::new(
            "nat",
            PORTS,
            &["-p", proto, "--dport", &public],
            tag,
            &["-j", "DNAT", "--to-destination", &to],
            false,
        ),
        Rule::new(
            "filter",
            FWD,
            &[
                "-d",
                &dst,
                "-o",
                &veths,
                "-p",
                proto,
                "--dport",
                &aport,
                "-m",
                "conntrack",
                "--ctstate",
                "DNAT",
                "--ctorigdstport",
                &public,
            ],
            tag,
            &["-j", "ACCEPT"],
            true,
        ),
    ]
}

impl PortMap {
    /// An empty map for the ensemble `net` (configures nothing yet).
    pub fn new(net: &EnsembleNet) -> Self {
        Self {
            host: net.host().clone(),
            names: net.names().clone(),
            mappings: Vec::new(),
        }
    }

    /// The active mappings.
    pub fn mappings(&self) -> &[PortMapping] {
        &self.mappings
    }

    /// Forwards `public_port`/`proto` to `alloc_ip:alloc_port`. Adding the same mapping twice
    /// is a no-op; a public port already forwarded elsewhere (by any ensemble) is a conflict.
    pub fn add(
        &mut self,
        public_port: u16,
        proto: Proto,
        alloc_ip: Ipv4Addr,
        alloc_port: u16,
    ) -> Result<(), HostError> {
        let m = PortMapping {
            public_port,
            proto,
            alloc_ip,
            alloc_port,
        };
        if self.mappings.contains(&m) {
            return Ok(());
        }
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if iptables::port_in_use(&self.host, proto.as_str(), public_port)? {
            return Err(HostError::Conflict(format!(
                "public port {public_port}/{} is already forwarded",
                proto.as_str()
            )));
        }
        iptables::ensure_base(&self.host)?;
        let [nat, fwd] = rules(&self.names, &m);
        // Accept before DNAT, so no packet is translated and then dropped.
        fwd.ensure(&self.host)?;
        if let Err(e) = nat.ensure(&self.host) {
            let _ = fwd.delete(&self.host);
            return Err(e);
        }
        self.mappings.push(m);
        Ok(())
    }

    /// Stops forwarding `public_port`/`proto`; returns whether a mapping was removed.
    pub fn remove(&mut self, public_port: u16, proto: Proto) -> Result<bool, HostError> {
        let Some(i) = self
            .mappings
            .iter()
            .position(|m| m.public_port == public_port && m.proto == proto)
        else {
            return Ok(false);
        };
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        for r in rules(&self.names, &self.mappings[i]) {
            r.delete(&self.host)?;
        }
        self.mappings.remove(i);
        Ok(true)
    }

    /// Removes every mapping (the allocation or ensemble stopped).
    pub fn clear(&mut self) -> Result<(), HostError> {
        while let Some(m) = self.mappings.last().copied() {
            self.remove(m.public_port, m.proto)?;
        }
        Ok(())
    }
}
