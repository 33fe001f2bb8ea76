//! Which ranges inside 10.0.0.0/8 a host already uses (its addresses and routes), so the
//! orchestrator's address plan can avoid them. Reads only.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{Host, HostError};
use crate::plan::{TABLE_BASE, TABLE_LAST, ten_slash_eight};

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
pub fn used_ranges(host: &Host) -> Result<Vec<Ipv4Net>, HostError> {
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
