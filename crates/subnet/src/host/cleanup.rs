//! Removal of what a crashed daemon left on the host: `nn…`/`nv…` interfaces, ip rules and
//! routing tables in our reserved range, and iptables rules/chains tagged `nunet:`.
//!
//! It must not touch anything outside those names, priorities, table range and tags, nor the
//! objects of ensembles the node still runs (`keep`).

use std::collections::BTreeSet;

use super::cmd::Host;
use super::error::HostError;
use super::iptables::{self, COMMON_TAG};
use super::{delete_rules, links, lock};
use crate::plan;

/// What [`cleanup_stale`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Interfaces deleted.
    pub interfaces: Vec<String>,
    /// ip rules deleted.
    pub rules: usize,
    /// Routing tables flushed.
    pub tables: Vec<u32>,
    /// iptables rules deleted.
    pub firewall_rules: usize,
    /// Whether our chains (and the jumps to them) were removed.
    pub chains_removed: bool,
}

fn is_hex8_name(name: &str, prefix: &str) -> bool {
    name.len() == 10
        && name.starts_with(prefix)
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Removes every host object of ours that does not belong to an ensemble in `keep` (ensemble
/// ids). Called at daemon start with the ensembles the node still runs.
pub fn cleanup_stale(host: &Host, keep: &[String]) -> Result<CleanupReport, HostError> {
    let kept: Vec<plan::Names> = keep.iter().map(|id| plan::names(id)).collect();
    let kept_tables: BTreeSet<u32> = kept.iter().map(|n| n.table).collect();
    let kept_tags: BTreeSet<&str> = kept.iter().map(|n| n.tag.as_str()).collect();
    let mut report = CleanupReport::default();

    for l in links(host)? {
        let keep_it = if is_hex8_name(&l, "nn") {
            kept.iter().any(|n| n.tun == l)
        } else if is_hex8_name(&l, "nv") {
            kept.iter().any(|n| l.starts_with(&n.veth_prefix))
        } else {
            continue;
        };
        if !keep_it && host.run_delete("ip", &["link", "del", &l])? {
            report.interfaces.push(l);
        }
    }

    report.rules = delete_rules(host, |t, _| !kept_tables.contains(&t))?;

    let routes = host.run_json("ip", &["-j", "-4", "route", "show", "table", "all"])?;
    let stale: BTreeSet<u32> = routes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["table"].as_str().and_then(|t| t.parse::<u32>().ok()))
        .filter(|t| (plan::TABLE_BASE..=plan::TABLE_LAST).contains(t) && !kept_tables.contains(t))
        .collect();
    for t in stale {
        host.run_delete("ip", &["route", "flush", "table", &t.to_string()])?;
        report.tables.push(t);
    }

    let _guard = lock();
    report.firewall_rules =
        iptables::remove_tagged(host, |t| t != COMMON_TAG && !kept_tags.contains(t))?;
    report.chains_removed = iptables::remove_base_if_unused(host)?;
    Ok(report)
}
