//! The ensemble's subnet as the orchestrator plans it (NUNET-FORMATS §2.2 step 4, §8): one /24
//! inside 10/8 that none of the chosen providers already uses, one address per allocation
//! (.1 is every node's local gateway and DNS responder), the routing table (address → the peer
//! that hosts it, which is also the member list the providers enforce), the `.internal` DNS
//! records and the public port forwards. Pure planning; the providers do the plumbing, and for
//! `subnet.join` the orchestrating node's own [`LocalSubnet`] does.

use nunet_protocol::calls::SubnetCreate;
use nunet_protocol::subnet::plan;
use nunet_protocol::{JOIN_ALLOCATION, PortForward, SubnetPlan};

/// The orchestrating node's own part in `subnet.join`, provided by the node.
pub trait LocalSubnet: Send + Sync {
    /// The 10/8 ranges this node already uses (host routes, its other ensembles).
    fn used_ranges(&self) -> Vec<String>;
    /// Why this node runs no subnets, when it runs none.
    fn disabled_reason(&self) -> Option<String>;
    /// Builds the ensemble's subnet on this node and gives the host the address of the
    /// plan's [`JOIN_ALLOCATION`] member.
    fn join(&self, plan: SubnetPlan) -> futures::future::BoxFuture<'static, Result<(), String>>;
    /// Removes it again (idempotent).
    fn leave(&self, ensemble: String) -> futures::future::BoxFuture<'static, ()>;
}

/// How long a provider may take to build the subnet (TUN, routes, DNS).
const SUBNET_CREATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl crate::engine::Engine {
    /// Plans the subnet of the Docker, microVM and WASM allocations and has every provider
    /// that hosts one build it, before anything starts. A provider with subnets off answers so
    /// and its allocations stay unconnected (said in the deployment's notes); a provider that
    /// fails is excluded from the next round.
    pub(crate) async fn provision_subnet(
        &self,
        assign: &crate::engine::Assignment,
    ) -> Result<(), crate::engine::RoundError> {
        use crate::engine::RoundError;
        let Some(rec) = self.record() else {
            return Err(RoundError::Fatal("record lost".into()));
        };
        let mut members = Vec::new();
        let mut ports = Vec::new();
        let mut off_subnet = Vec::new();
        for (node, bid) in assign {
            let Some(n) = rec.ensemble.node(node) else {
                continue;
            };
            for name in &n.allocations {
                let Some(a) = rec.ensemble.allocation(name) else {
                    continue;
                };
                let id = nunet_protocol::allocation_id(&rec.id, node, name);
                // Containers (sandbox namespace), microVMs (TAP) and WASM instances (a
                // namespace their thread enters) are attached.
                if !matches!(a.execution.executor(), "docker" | "firecracker" | "wasm") {
                    off_subnet.push(name.clone());
                    continue;
                }
                let dns = if a.dns_name.is_empty() {
                    a.name.clone()
                } else {
                    a.dns_name.clone()
                };
                members.push((id.clone(), dns, bid.peer.clone()));
                for p in n.ports.iter().filter(|p| &p.allocation == name) {
                    ports.push(PortForward {
                        public: p.public,
                        private: p.private,
                        allocation: id.clone(),
                    });
                }
            }
        }
        if members.is_empty() {
            if rec.ensemble.subnet_join {
                self.update(|r| {
                    r.notes.retain(|n| !n.starts_with("subnet"));
                    r.notes.push(
                        "subnet: `subnet.join` had no effect: no allocation is on a subnet".into(),
                    );
                });
            }
            return Ok(());
        }
        let mut avoid: Vec<String> = assign
            .iter()
            .flat_map(|(_, b)| b.used_subnets.iter().cloned())
            .collect();
        // NuNet's `subnet.join`: the orchestrating node gets an address too.
        let mut join_note = None;
        let joining = match (&self.local_subnet, rec.ensemble.subnet_join) {
            (_, false) => None,
            (None, true) => {
                join_note = Some("this node cannot join ensemble networks".to_string());
                None
            }
            (Some(local), true) => match local.disabled_reason() {
                None => {
                    avoid.extend(local.used_ranges());
                    members.push((
                        JOIN_ALLOCATION.to_string(),
                        JOIN_ALLOCATION.to_string(),
                        self.system.peer_id().to_string(),
                    ));
                    Some(local.clone())
                }
                Some(why) => {
                    join_note = Some(format!("this node runs no subnets ({why})"));
                    None
                }
            },
        };
        let plan = plan(&rec.id, &members, ports, &avoid).map_err(RoundError::Fatal)?;
        let hosts: Vec<&nunet_protocol::Bid> = assign
            .iter()
            .map(|(_, b)| b)
            .filter(|b| plan.members.iter().any(|m| m.peer == b.peer))
            .collect();
        let calls = hosts.iter().map(|b| {
            let plan = &plan;
            async move {
                let r = self
                    .call::<SubnetCreate>(&b.handle, plan, SUBNET_CREATE_TIMEOUT)
                    .await;
                (*b, r)
            }
        });
        let mut failed = Vec::new();
        let mut why = Vec::new();
        let mut off = Vec::new();
        for (b, r) in futures::future::join_all(calls).await {
            match r {
                Ok(v) if !v.enabled => off.push((
                    b.peer.clone(),
                    v.reason.unwrap_or_else(|| "off".to_string()),
                )),
                Ok(_) => {}
                Err(e) => {
                    why.push(format!("subnet on {}: {}", b.peer, e.message));
                    failed.push(b.peer.clone());
                }
            }
        }
        if !failed.is_empty() {
            return Err(RoundError::Retry(why.join("; "), failed));
        }
        let join_note = match (joining, plan.member(JOIN_ALLOCATION)) {
            (Some(local), Some(me)) => match local.join(plan.clone()).await {
                Ok(()) => format!(
                    "subnet: this node is on the ensemble network as {} ({JOIN_ALLOCATION}.internal)",
                    me.ip
                ),
                Err(e) => format!("subnet: this node could not join the ensemble network: {e}"),
            },
            _ => join_note
                .map(|why| format!("subnet: `subnet.join` had no effect: {why}"))
                .unwrap_or_default(),
        };
        self.update(|r| {
            r.subnet = Some(plan.clone());
            for a in r.manifest.allocations.values_mut() {
                if let Some(m) = plan.member(&a.id) {
                    let on = !off.iter().any(|(p, _)| *p == m.peer);
                    if on {
                        a.ip = Some(m.ip.to_string());
                        a.dns = Some(format!("{}.internal", m.dns_name));
                    }
                }
            }
            r.notes.retain(|n| !n.starts_with("subnet"));
            if !join_note.is_empty() {
                r.event(crate::now_ms(), join_note.clone());
                r.notes.push(join_note);
            }
            for (peer, reason) in &off {
                r.notes.push(format!(
                    "subnet: not on {peer} ({reason}); its allocations are not on the ensemble network"
                ));
            }
            if !off_subnet.is_empty() {
                r.notes.push(format!(
                    "subnet: {} not attached (only Docker, microVM and WASM allocations join the ensemble network)",
                    off_subnet.join(", ")
                ));
            }
            let on = hosts.len().saturating_sub(off.len());
            let members = plan
                .members
                .iter()
                .filter(|m| m.allocation != JOIN_ALLOCATION)
                .count();
            let msg = if on == 0 {
                "no subnet: subnets are off on every provider of this ensemble".to_string()
            } else {
                format!(
                    "subnet {} with {members} address(es) on {on} of {} provider(s)",
                    plan.network,
                    hosts.len()
                )
            };
            r.event(crate::now_ms(), msg);
        });
        Ok(())
    }
}
