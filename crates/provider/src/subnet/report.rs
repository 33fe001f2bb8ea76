//! `/dms/node/subnet/list`: what the node's ensemble subnets look like right now — network,
//! TUN device, this node's allocations and addresses, and the data path's counters (how many
//! packets went as datagrams or over the libp2p stream, what was dropped and why).
//!
//! Read-only; it must not change a subnet or expose key material.

use std::sync::Arc;

use nunet_actor::{ActorError, ActorSystem, Behavior};
use serde_json::{Value, json};

use super::NodeSubnets;

impl NodeSubnets {
    /// A JSON report of every subnet on this node.
    pub async fn report(&self) -> Value {
        let ensembles = self.ensembles.lock().await;
        let mut list: Vec<Value> = ensembles
            .iter()
            .map(|(id, e)| {
                let mut attached: Vec<Value> = e
                    .attached
                    .keys()
                    .map(|alloc| {
                        json!({
                            "allocation": alloc,
                            "ip": e.plan.member(alloc).map(|m| m.ip.to_string()),
                        })
                    })
                    .collect();
                attached.sort_by_key(|v| v["allocation"].as_str().map(str::to_string));
                json!({
                    "ensemble": id,
                    "network": e.plan.network,
                    "tun": e.net.names().tun,
                    "members": e.plan.members.len(),
                    "attached": attached,
                    "stats": self.service.as_ref().and_then(|s| s.stats(id)),
                })
            })
            .collect();
        list.sort_by_key(|v| v["ensemble"].as_str().map(str::to_string));
        json!({
            "enabled": self.service.is_some(),
            "disabled_reason": self.why_off,
            "datagram_port": self.service.as_ref().and_then(|s| s.datagram_port()),
            "unclaimed_datagrams": self.service.as_ref().map(|s| s.unclaimed_datagrams()),
            "rejected_streams": self.service.as_ref().map(|s| s.rejected_streams()),
            "ensembles": list,
        })
    }
}

/// Registers `/dms/node/subnet/list` on the root actor.
pub fn register(system: &ActorSystem, subnets: Arc<NodeSubnets>) -> Result<(), ActorError> {
    system.register(
        "root",
        "/dms/node/subnet/list",
        Behavior::direct(move |_m| {
            let s = subnets.clone();
            async move { Ok(s.report().await) }
        }),
    )
}
