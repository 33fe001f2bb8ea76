//! Address plan of ensemble subnets: host-side names, a /24 per ensemble inside 10.0.0.0/8,
//! and the addresses of the allocations in it.
//!
//! Pure logic except [`host_used_ranges`], which reads the host's addresses and routes. It must
//! not configure anything.
//!
//! Names and numbers derived from `h = SHA-256(ensemble id)` (all fit IFNAMSIZ ≤ 15):
//! * TUN device `nn<hex(h[0..4])>` (10 chars);
//! * host end of an attachment's veth pair `nv<hex(h[0..3])><last octet of its address, 2 hex>`;
//! * routing table `0x6E00_0000 | u24(h[0..3])`, i.e. the reserved range [`TABLE_BASE`]..=
//!   [`TABLE_LAST`] (1845493760..=1862270975), so `cleanup_stale` can recognise our tables;
//! * ip rules at two fixed priorities, [`PRIO_IIF`] (`iif <dev> lookup T`) and [`PRIO_TO`]
//!   (`to <network> lookup T`): all "from this ensemble's interface" rules must win over all "to
//!   some ensemble's network" rules, which per-ensemble priorities would not guarantee;
//! * iptables rule comment `nunet:<hex(h[0..4])>`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use crate::host::{Host, HostError};

/// First routing table number of the reserved range.
pub const TABLE_BASE: u32 = 0x6E00_0000;
/// Last routing table number of the reserved range.
pub const TABLE_LAST: u32 = 0x6EFF_FFFF;
/// Priority of `iif <our interface> lookup <table>` rules.
pub const PRIO_IIF: u32 = 5200;
/// Priority of `to <ensemble network> lookup <table>` rules.
pub const PRIO_TO: u32 = 5201;

/// Host-side names of one ensemble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The TUN device (`nn` + 8 hex).
    pub tun: String,
    /// Prefix of the host ends of veth pairs (`nv` + 6 hex); the full name adds 2 hex.
    pub veth_prefix: String,
    /// Routing table number, inside [`TABLE_BASE`]..=[`TABLE_LAST`].
    pub table: u32,
    /// Comment put on every iptables rule of this ensemble.
    pub tag: String,
}

impl Names {
    /// Host end of the veth pair of the allocation with address `ip`.
    pub fn veth(&self, ip: Ipv4Addr) -> String {
        format!("{}{:02x}", self.veth_prefix, ip.octets()[3])
    }
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

/// The host-side names of ensemble `ensemble_id`.
pub fn names(ensemble_id: &str) -> Names {
    let h = digest(ensemble_id);
    let t24 = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    Names {
        tun: format!("nn{}", hex::encode(&h[0..4])),
        veth_prefix: format!("nv{}", hex::encode(&h[0..3])),
        table: TABLE_BASE | t24,
        tag: format!("nunet:{}", hex::encode(&h[0..4])),
    }
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

fn add_in_ten(out: &mut Vec<Ipv4Net>, net: Ipv4Net) {
    let net = net.trunc();
    if net.prefix_len() >= 8 && ten_slash_eight().contains(&net.network()) && !out.contains(&net) {
        out.push(net);
    }
}

fn parse_dst(dst: &str) -> Option<Ipv4Net> {
    if dst.contains('/') {
        dst.parse().ok()
    } else {
        dst.parse::<Ipv4Addr>().ok().map(Ipv4Net::from)
    }
}

/// The ranges inside 10.0.0.0/8 the host already uses: its IPv4 addresses (with their prefix)
/// and the destinations of its routes in every table. Our own catch-all `unreachable 10.0.0.0/8`
/// routes are left out; the networks of ensembles the node runs are included. Routes wider than
/// /8 (the default route) do not count. The node sends this list in its bid.
pub fn host_used_ranges(host: &Host) -> Result<Vec<Ipv4Net>, HostError> {
    let mut out = Vec::new();
    let addrs = host.run_json("ip", &["-j", "-4", "addr", "show"])?;
    for link in addrs.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let ip = a["local"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok());
            let len = a["prefixlen"].as_u64().and_then(|l| u8::try_from(l).ok());
            if let (Some(ip), Some(len)) = (ip, len)
                && let Ok(net) = Ipv4Net::new(ip, len)
            {
                add_in_ten(&mut out, net);
            }
        }
    }
    let routes = host.run_json("ip", &["-j", "-4", "route", "show", "table", "all"])?;
    for r in routes.as_array().into_iter().flatten() {
        let Some(dst) = r["dst"].as_str().and_then(parse_dst) else {
            continue;
        };
        let ours = r["table"]
            .as_str()
            .and_then(|t| t.parse::<u32>().ok())
            .is_some_and(|t| (TABLE_BASE..=TABLE_LAST).contains(&t));
        if ours && r["type"].as_str() == Some("unreachable") && dst == ten_slash_eight() {
            continue;
        }
        add_in_ten(&mut out, dst);
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_fit_ifnamsiz_and_are_stable() {
        let n = names("ens-1");
        assert_eq!(n, names("ens-1"));
        assert_ne!(n.tun, names("ens-2").tun);
        assert_eq!(n.tun.len(), 10);
        assert_eq!(&n.tun[2..8], &n.veth_prefix[2..]);
        assert_eq!(n.veth(Ipv4Addr::new(10, 1, 2, 255)).len(), 10);
        assert!(n.veth(Ipv4Addr::new(10, 1, 2, 255)).ends_with("ff"));
        assert!((TABLE_BASE..=TABLE_LAST).contains(&n.table));
    }

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
