//! TAP attachment of a VM to an ensemble in a real network namespace: the TAP is named, routed
//! and ruled like a veth, answers ARP for the ensemble by proxy, and `detach`/`teardown` leave
//! nothing behind. (The guest side, a booted VM pinging across nodes, is tested in
//! `crates/cli/tests/subnet_vm.rs`.) Needs root and iproute2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host_support;

use host_support::{Testbed, ns_ok};
use nunet_protocol::subnet::{assign, pick_subnet};
use nunet_subnet::host::used_ranges as host_used_ranges;
use nunet_subnet::plan;
use nunet_subnet::{EnsembleNet, guest_ip_arg};

#[test]
fn a_vm_tap_is_routed_like_a_veth_and_removed_without_trace() {
    let bed = Testbed::new();
    let ns = bed.host.name.clone();
    let host = bed.host.host();
    let id = "ensemble-tap";
    let network = pick_subnet(id, &host_used_ranges(&host).unwrap()).unwrap();
    let names = plan::names(id);
    bed.add_tun(&names.tun);
    let net = EnsembleNet::setup(&host, id, network, &names.tun).unwrap();
    let ip = assign(network, &["vm".to_string()]).unwrap()["vm"];

    assert!(
        net.attach_tap(net.gateway()).is_err(),
        "the gateway is no allocation address"
    );
    let before = ns_ok(&ns, &["ip", "-o", "link"]);
    let att = net.attach_tap(ip).unwrap();
    assert_eq!(att.veth, names.veth(ip));
    assert_eq!(att.netns_pid, 0);
    let t = att.veth.as_str();
    // A real TAP (tun_flags exists only for tun/tap devices; 0x2 = IFF_TAP).
    let flags = ns_ok(&ns, &["cat", &format!("/sys/class/net/{t}/tun_flags")]);
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0x3, 0x2, "not a TAP: {flags:#x}");
    assert_eq!(
        ns_ok(&ns, &["cat", &format!("/sys/class/net/{t}/mtu")]).trim(),
        "1420"
    );
    let proxy = ns_ok(
        &ns,
        &["cat", &format!("/proc/sys/net/ipv4/conf/{t}/proxy_arp")],
    );
    assert_eq!(proxy.trim(), "1");
    let table = names.table.to_string();
    let routes = ns_ok(&ns, &["ip", "route", "show", "table", &table]);
    assert!(routes.contains(&format!("{ip} dev {t}")), "{routes}");
    let rules = ns_ok(&ns, &["ip", "rule"]);
    assert!(
        rules.contains(&format!("iif {t} lookup {table}")),
        "{rules}"
    );
    // The guest is told its address, the gateway (router and DNS) and the ensemble's mask.
    let gw = net.gateway();
    assert_eq!(
        guest_ip_arg(&net, ip),
        format!("ip={ip}::{gw}:255.255.255.0::eth0:off:{gw}")
    );
    // Attaching again replaces it rather than failing or doubling the rule.
    let att = net.attach_tap(ip).unwrap();
    let rules = ns_ok(&ns, &["ip", "rule"]);
    assert_eq!(rules.matches(&format!("iif {t} ")).count(), 1, "{rules}");

    net.detach(&att).unwrap();
    let links = ns_ok(&ns, &["ip", "-o", "link"]);
    assert!(!links.contains(t), "{links}");
    assert_eq!(links.lines().count(), before.lines().count(), "{links}");
    assert!(!ns_ok(&ns, &["ip", "rule"]).contains(&format!("iif {t}")));
    let routes = ns_ok(&ns, &["ip", "route", "show", "table", &table]);
    assert!(!routes.contains(&ip.to_string()), "{routes}");

    // teardown also removes a TAP that was never detached.
    let _att = net.attach_tap(ip).unwrap();
    net.teardown().unwrap();
    assert!(!ns_ok(&ns, &["ip", "-o", "link"]).contains(t));
    assert!(!ns_ok(&ns, &["ip", "rule"]).contains(&table));
}
