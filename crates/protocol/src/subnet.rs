//! The ensemble's subnet as the orchestrator plans it and every provider receives it
//! (NUNET-FORMATS §2.2 step 4, §8): one /24 inside 10/8 that none of the chosen providers
//! already uses, one address per allocation (the first host address is every node's local
//! gateway and DNS responder), the member list (address → the peer that hosts it, which the
//! providers enforce), the `.internal` DNS records and the public port forwards.
//!
//! Pure: the host side (devices, routes, which ranges a host already uses) lives in
//! `nunet-subnet`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The allocation id (and `.internal` name) of the orchestrating node's own address when the
/// ensemble asks for `subnet.join`.
pub const JOIN_ALLOCATION: &str = "orchestrator";

/// One allocation on the subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetMember {
    /// Allocation id.
    pub allocation: String,
    /// Its name inside the ensemble's DNS (`<dns_name>.internal`).
    pub dns_name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The peer that hosts it (base58 peer id).
    pub peer: String,
}

/// A public port of a provider forwarded to an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// Port on the provider's host.
    pub public: u16,
    /// Port inside the allocation.
    pub private: u16,
    /// Allocation id.
    pub allocation: String,
}

/// What every provider of the ensemble receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetPlan {
    /// Ensemble id (= subnet id).
    pub ensemble_id: String,
    /// The ensemble's network, `10.a.b.0/24`.
    pub network: String,
    /// Every allocation of the ensemble.
    pub members: Vec<SubnetMember>,
    /// Port forwards (each provider applies those of its own allocations).
    #[serde(default)]
    pub ports: Vec<PortForward>,
}

impl SubnetPlan {
    /// `dns_name` → address.
    pub fn records(&self) -> BTreeMap<String, Ipv4Addr> {
        self.members
            .iter()
            .map(|m| (m.dns_name.clone(), m.ip))
            .collect()
    }

    /// The member with allocation id `id`.
    pub fn member(&self, id: &str) -> Option<&SubnetMember> {
        self.members.iter().find(|m| m.allocation == id)
    }
}

/// Plans the subnet of `ensemble_id` for `allocations` = (allocation id, dns name, peer),
/// avoiding every range in `avoid` (what the providers reported as used).
pub fn plan(
    ensemble_id: &str,
    allocations: &[(String, String, String)],
    ports: Vec<PortForward>,
    avoid: &[String],
) -> Result<SubnetPlan, String> {
    let avoid: Vec<Ipv4Net> = avoid.iter().filter_map(|r| r.parse().ok()).collect();
    let network = pick_subnet(ensemble_id, &avoid)
        .ok_or("no free /24 left in 10.0.0.0/8 on the chosen providers")?;
    let ids: Vec<String> = allocations.iter().map(|a| a.0.clone()).collect();
    let addrs = assign(network, &ids).map_err(|e| e.to_string())?;
    let members = allocations
        .iter()
        .filter_map(|(id, dns, peer)| {
            addrs.get(id).map(|ip| SubnetMember {
                allocation: id.clone(),
                dns_name: dns.clone(),
                ip: *ip,
                peer: peer.clone(),
            })
        })
        .collect();
    Ok(SubnetPlan {
        ensemble_id: ensemble_id.to_string(),
        network: network.to_string(),
        members,
        ports,
    })
}

/// `old` for a changed set of members (a live update): the same network, members that stay
/// keep their address (and so their `.internal` name resolves as before), new members get
/// the lowest free host addresses, and the port forwards are `ports`.
pub fn replan(
    old: &SubnetPlan,
    allocations: &[(String, String, String)],
    ports: Vec<PortForward>,
) -> Result<SubnetPlan, String> {
    let network: Ipv4Net = old
        .network
        .parse()
        .map_err(|e| format!("subnet network {:?}: {e}", old.network))?;
    let kept: BTreeMap<&str, Ipv4Addr> = old
        .members
        .iter()
        .filter(|m| allocations.iter().any(|a| a.0 == m.allocation))
        .map(|m| (m.allocation.as_str(), m.ip))
        .collect();
    let mut free = network
        .hosts()
        .skip(1)
        .filter(|ip| !kept.values().any(|k| k == ip));
    let mut members = Vec::new();
    for (id, dns, peer) in allocations {
        let ip = match kept.get(id.as_str()) {
            Some(ip) => *ip,
            None => free.next().ok_or_else(|| {
                PlanError::Full {
                    network,
                    wanted: allocations.len(),
                    capacity: network.hosts().count().saturating_sub(1),
                }
                .to_string()
            })?,
        };
        members.push(SubnetMember {
            allocation: id.clone(),
            dns_name: dns.clone(),
            ip,
            peer: peer.clone(),
        });
    }
    Ok(SubnetPlan {
        ensemble_id: old.ensemble_id.clone(),
        network: old.network.clone(),
        members,
        ports,
    })
}

/// A provider's reply to [`crate::names::SUBNET_CREATE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetCreated {
    /// Whether the provider built the subnet (false: it runs no subnets).
    pub enabled: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Errors of the pure address plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// More allocations than the network has addresses for.
    #[error(
        "{wanted} allocations do not fit into {network} ({capacity} addresses after the gateway)"
    )]
    Full {
        /// The network.
        network: Ipv4Net,
        /// Allocations asked for.
        wanted: usize,
        /// Addresses available.
        capacity: usize,
    },
}

fn digest(ensemble_id: &str) -> [u8; 32] {
    Sha256::digest(ensemble_id.as_bytes()).into()
}

/// The whole private range ensembles live in.
pub fn ten_slash_eight() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap_or_default()
}

/// The gateway address of `network` (its first host address, `.1` for a /24).
pub fn gateway(network: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(network.network()).wrapping_add(1))
}

#[cfg(test)]
fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A /24 inside 10.0.0.0/8 for `ensemble_id` that overlaps nothing in `avoid`.
///
/// Deterministic: the same id and avoid set give the same answer. The probe sequence starts at a
/// hash-chosen /24 and steps by a hash-chosen odd stride modulo 2^16, so it visits every /24 once
/// and different ensembles spread over the range. 10.0.0.0/24 and 10.255.255.0/24 are never
/// returned. `None` when every /24 collides.
pub fn pick_subnet(ensemble_id: &str, avoid: &[Ipv4Net]) -> Option<Ipv4Net> {
    let h = digest(ensemble_id);
    let start = u16::from_be_bytes([h[4], h[5]]);
    let stride = u16::from_be_bytes([h[6], h[7]]) | 1;
    let ranges: Vec<(u32, u32)> = avoid
        .iter()
        .map(|a| (u32::from(a.network()), u32::from(a.broadcast())))
        .collect();
    let mut idx = start;
    for _ in 0..=u16::MAX as u32 {
        let [b, c] = idx.to_be_bytes();
        idx = idx.wrapping_add(stride);
        if (b, c) == (0, 0) || (b, c) == (255, 255) {
            continue;
        }
        let lo = u32::from_be_bytes([10, b, c, 0]);
        let hi = lo | 0xFF;
        if !ranges.iter().any(|&(s, e)| s <= hi && lo <= e) {
            return Ipv4Net::new(Ipv4Addr::from(lo), 24).ok();
        }
    }
    None
}

/// Addresses for the allocations `names` in `network`: the gateway keeps the first host address
/// ([`gateway`]), allocations get the following ones in name order (duplicates collapse).
pub fn assign(network: Ipv4Net, names: &[String]) -> Result<BTreeMap<String, Ipv4Addr>, PlanError> {
    let sorted: std::collections::BTreeSet<&String> = names.iter().collect();
    let mut hosts = network.hosts().skip(1);
    let capacity = network.hosts().count().saturating_sub(1);
    if sorted.len() > capacity {
        return Err(PlanError::Full {
            network,
            wanted: sorted.len(),
            capacity,
        });
    }
    let mut out = BTreeMap::new();
    for name in sorted {
        let Some(ip) = hosts.next() else {
            return Err(PlanError::Full {
                network,
                wanted: names.len(),
                capacity,
            });
        };
        out.insert(name.clone(), ip);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_range_gives_none_and_reserved_nets_are_skipped() {
        assert_eq!(pick_subnet("x", &[ten_slash_eight()]), None);
        let first = pick_subnet("x", &[]).unwrap();
        let second = pick_subnet("x", &[first]).unwrap();
        assert!(!overlaps(&first, &second));
        assert_ne!(pick_subnet("y", &[]), Some(first), "ids spread");
        let nearly_all: Vec<Ipv4Net> = vec![
            "10.0.0.0/9".parse().unwrap(),
            "10.128.0.0/10".parse().unwrap(),
            "10.192.0.0/11".parse().unwrap(),
            "10.224.0.0/12".parse().unwrap(),
            "10.240.0.0/13".parse().unwrap(),
            "10.248.0.0/14".parse().unwrap(),
            "10.252.0.0/15".parse().unwrap(),
            "10.254.0.0/16".parse().unwrap(),
            "10.255.0.0/17".parse().unwrap(),
            "10.255.128.0/18".parse().unwrap(),
            "10.255.192.0/19".parse().unwrap(),
            "10.255.224.0/20".parse().unwrap(),
            "10.255.240.0/21".parse().unwrap(),
            "10.255.248.0/22".parse().unwrap(),
            "10.255.252.0/23".parse().unwrap(),
            "10.255.254.0/24".parse().unwrap(),
        ];
        // Only 10.255.255.0/24 is free, and it is reserved.
        assert_eq!(pick_subnet("y", &nearly_all), None);
        let mut one_free = nearly_all.clone();
        one_free.pop();
        assert_eq!(
            pick_subnet("z", &one_free),
            Some("10.255.254.0/24".parse().unwrap())
        );
    }

    #[test]
    fn a_replan_keeps_the_addresses_of_members_that_stay() {
        let m = |id: &str, peer: &str| (id.to_string(), id.to_string(), peer.to_string());
        let old = plan(
            "e",
            &[m("a", "P1"), m("b", "P1"), m("c", "P2")],
            Vec::new(),
            &[],
        )
        .unwrap();
        let ip = |p: &SubnetPlan, id: &str| p.member(id).map(|x| x.ip);
        // b leaves, d and e come: a and c keep theirs, d takes b's old address first.
        let new = replan(
            &old,
            &[m("a", "P1"), m("c", "P2"), m("d", "P3"), m("e", "P1")],
            Vec::new(),
        )
        .unwrap();
        assert_eq!(new.network, old.network);
        assert_eq!(ip(&new, "a"), ip(&old, "a"));
        assert_eq!(ip(&new, "c"), ip(&old, "c"));
        assert_eq!(ip(&new, "d"), ip(&old, "b"));
        assert!(ip(&new, "b").is_none());
        let all: std::collections::BTreeSet<_> = new.members.iter().map(|x| x.ip).collect();
        assert_eq!(all.len(), 4, "an address given twice: {new:?}");
        let gw = gateway(old.network.parse().unwrap());
        assert!(!all.contains(&gw));
        // A full network says so.
        let many: Vec<_> = (0..300).map(|i| m(&format!("x{i}"), "P")).collect();
        let e = replan(&old, &many, Vec::new()).unwrap_err();
        assert!(e.contains("do not fit into"), "{e}");
    }

    #[test]
    fn assign_gives_gateway_first_address_and_fails_when_full() {
        let net: Ipv4Net = "10.7.8.0/24".parse().unwrap();
        assert_eq!(gateway(net), Ipv4Addr::new(10, 7, 8, 1));
        let a = assign(net, &["b".into(), "a".into(), "a".into()]).unwrap();
        assert_eq!(a["a"], Ipv4Addr::new(10, 7, 8, 2));
        assert_eq!(a["b"], Ipv4Addr::new(10, 7, 8, 3));
        let many: Vec<String> = (0..253).map(|i| format!("a{i}")).collect();
        let full = assign(net, &many).unwrap();
        assert_eq!(full.values().max(), Some(&Ipv4Addr::new(10, 7, 8, 254)));
        let too_many: Vec<String> = (0..254).map(|i| format!("a{i}")).collect();
        assert!(matches!(
            assign(net, &too_many),
            Err(PlanError::Full { capacity: 253, .. })
        ));
    }

    fn arb_avoid() -> impl Strategy<Value = Vec<Ipv4Net>> {
        prop::collection::vec(
            (any::<u32>(), prop_oneof![1 => 9u8..=11, 4 => 12u8..=28]).prop_map(|(bits, len)| {
                let ip = Ipv4Addr::from(0x0A00_0000 | (bits & 0x00FF_FFFF));
                Ipv4Net::new(ip, len).unwrap().trunc()
            }),
            0..40,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn picks_never_overlap_avoid(id in "[a-z0-9-]{1,40}", avoid in arb_avoid()) {
            if let Some(net) = pick_subnet(&id, &avoid) {
                prop_assert_eq!(net.prefix_len(), 24);
                prop_assert!(ten_slash_eight().contains(&net));
                prop_assert!(net.network() != Ipv4Addr::new(10, 0, 0, 0));
                prop_assert!(net.network() != Ipv4Addr::new(10, 255, 255, 0));
                for a in &avoid {
                    prop_assert!(!overlaps(a, &net), "{} overlaps {}", net, a);
                }
                prop_assert_eq!(pick_subnet(&id, &avoid), Some(net));
            } else {
                for i in 1..u16::MAX {
                    let [b, c] = i.to_be_bytes();
                    let net = Ipv4Net::new(Ipv4Addr::new(10, b, c, 0), 24).unwrap();
                    prop_assert!(avoid.iter().any(|a| overlaps(a, &net)), "{} was free", net);
                }
            }
        }

        #[test]
        fn assignments_are_unique_and_inside(
            third in 1u8..=254,
            names in prop::collection::vec("[a-z]{1,8}", 0..300),
        ) {
            let net = Ipv4Net::new(Ipv4Addr::new(10, 3, third, 0), 24).unwrap();
            let distinct: std::collections::BTreeSet<_> = names.iter().collect();
            match assign(net, &names) {
                Ok(map) => {
                    prop_assert_eq!(map.len(), distinct.len());
                    let ips: std::collections::BTreeSet<_> = map.values().collect();
                    prop_assert_eq!(ips.len(), map.len());
                    for ip in map.values() {
                        prop_assert!(net.contains(ip));
                        prop_assert!(*ip != gateway(net) && *ip != net.network() && *ip != net.broadcast());
                    }
                    prop_assert_eq!(assign(net, &names).unwrap(), map);
                }
                Err(_) => prop_assert!(distinct.len() > 253),
            }
        }
    }
}

#[cfg(test)]
mod plan_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plan_gives_distinct_addresses_outside_used_ranges() {
        let allocs: Vec<(String, String, String)> = (0..5)
            .map(|i| (format!("a-{i}"), format!("n{i}"), format!("peer{}", i % 2)))
            .collect();
        let first = plan("ens-1", &allocs, vec![], &[]).unwrap();
        let again = plan(
            "ens-1",
            &allocs,
            vec![],
            std::slice::from_ref(&first.network),
        )
        .unwrap();
        assert_ne!(first.network, again.network);
        let mut ips: Vec<Ipv4Addr> = again.members.iter().map(|m| m.ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 5);
        let net: ipnet::Ipv4Net = again.network.parse().unwrap();
        assert!(ips.iter().all(|ip| net.contains(ip) && ip.octets()[3] > 1));
        assert_eq!(again.records()["n3"], again.member("a-3").unwrap().ip);
    }
}
