//! Host-side names of ensemble subnets. The address plan itself (a /24 per ensemble inside
//! 10.0.0.0/8 and the allocations' addresses) is `nunet_protocol::subnet`; which ranges a host
//! already uses is [`crate::host::used_ranges`].
//!
//! Pure logic. It must not configure anything.
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

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

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

pub use nunet_protocol::subnet::{gateway, ten_slash_eight};

#[cfg(test)]
mod tests {
    use super::*;

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
}
