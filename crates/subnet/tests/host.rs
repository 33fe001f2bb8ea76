//! Host plumbing against real network namespaces: attachment and the local path between two
//! containers, isolation between ensembles, port mapping, teardown and crash cleanup leaving no
//! trace. Needs root, iproute2, iptables, nsenter, python3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host_support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use host_support::{
    EXT_ADDR, GREETER, HOST_UPLINK, Netns, Testbed, ns_ok, ping, tcp_hello, traces,
};
use nunet_protocol::subnet::{assign, pick_subnet};
use nunet_subnet::host::used_ranges as host_used_ranges;
use nunet_subnet::plan;
use nunet_subnet::{EnsembleNet, HostError, PortMap, Proto, cleanup_stale};

/// An ensemble set up in the test bed with a TUN stand-in and its planned addresses.
fn ensemble(bed: &Testbed, id: &str, allocs: &[&str]) -> (EnsembleNet, Vec<Ipv4Addr>) {
    let host = bed.host.host();
    let used = host_used_ranges(&host).unwrap();
    let network = pick_subnet(id, &used).unwrap();
    let tun = plan::names(id).tun;
    bed.add_tun(&tun);
    let net = EnsembleNet::setup(&host, id, network, &tun).unwrap();
    let names: Vec<String> = allocs.iter().map(|s| s.to_string()).collect();
    let ips = assign(network, &names).unwrap();
    (net, allocs.iter().map(|a| ips[*a]).collect())
}

#[test]
fn containers_of_one_ensemble_talk_and_other_ensembles_are_isolated() {
    let bed = Testbed::new();
    let h = bed.host.name.clone();
    let (a, a_ips) = ensemble(&bed, "ensemble-a", &["web", "db"]);
    let (b, b_ips) = ensemble(&bed, "ensemble-b", &["other"]);
    assert_ne!(a.network(), b.network());
    let used = host_used_ranges(&bed.host.host()).unwrap();
    assert!(
        used.contains(&a.network()) && used.contains(&b.network()),
        "{used:?}"
    );
    assert!(
        !used.contains(&plan::ten_slash_eight()),
        "our unreachable 10/8 is not a use"
    );

    let (mut c1, mut c2, mut c3) = (Netns::new("c1"), Netns::new("c2"), Netns::new("c3"));
    let att1 = a.attach(a_ips[0], c1.holder_pid()).unwrap();
    a.attach(a_ips[1], c2.holder_pid()).unwrap();
    b.attach(b_ips[0], c3.holder_pid()).unwrap();
    let mtu = ns_ok(&c1.name, &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1420");

    let (a1, a2, b1) = (
        a_ips[0].to_string(),
        a_ips[1].to_string(),
        b_ips[0].to_string(),
    );
    let (gw_a, gw_b) = (a.gateway().to_string(), b.gateway().to_string());
    // Same ensemble, local path over the host (FORWARD policy is DROP, as under Docker).
    assert!(ping(&c1.name, &a2), "c1 -> c2");
    assert!(ping(&c2.name, &a1), "c2 -> c1");
    assert!(ping(&c1.name, &gw_a), "c1 -> own gateway");
    assert!(ping(&c3.name, &gw_b), "c3 -> own gateway");
    // Internet egress (masqueraded) works, other local addresses of the host do not.
    assert!(ping(&c1.name, EXT_ADDR), "c1 -> outside");
    assert!(
        !ping(&c1.name, HOST_UPLINK),
        "c1 must not reach the host's own address"
    );
    // Other ensemble: neither containers nor gateway, in both directions.
    assert!(!ping(&c3.name, &a1), "c3 (B) -> c1 (A)");
    assert!(!ping(&c3.name, &a2), "c3 (B) -> c2 (A)");
    assert!(!ping(&c3.name, &gw_a), "c3 (B) -> gateway of A");
    assert!(!ping(&c1.name, &b1), "c1 (A) -> c3 (B)");
    assert!(!ping(&c1.name, &gw_b), "c1 (A) -> gateway of B");

    // Misuse is refused.
    assert!(matches!(
        EnsembleNet::setup(&bed.host.host(), "ensemble-c", a.network(), "nnwrong00"),
        Err(HostError::Invalid(_))
    ));
    assert!(matches!(
        a.attach(a.gateway(), c1.holder_pid()),
        Err(HostError::Invalid(_))
    ));

    // Detach removes exactly one attachment.
    a.detach(&att1).unwrap();
    assert!(!ping(&c2.name, &a1), "detached c1 is gone");
    assert!(ping(&c2.name, &gw_a), "c2 still attached");

    // Teardown (twice: idempotent) leaves only the TUNs, which belong to the data path.
    for _ in 0..2 {
        a.teardown().unwrap();
        b.teardown().unwrap();
    }
    let left = traces(&h);
    let tuns = [
        format!("link {}", a.names().tun),
        format!("link {}", b.names().tun),
    ];
    assert!(
        left.iter().all(|t| tuns.contains(t)),
        "left behind: {left:#?}"
    );
    let addrs = ns_ok(&h, &["ip", "-4", "addr", "show"]);
    assert!(
        !addrs.contains(&gw_a) && !addrs.contains(&gw_b),
        "gateway left: {addrs}"
    );
    assert!(
        ns_ok(&c2.name, &["ip", "-br", "link"])
            .lines()
            .all(|l| !l.starts_with("eth0"))
    );
}

fn wait_for_greeting(from: &str, addr: &str, port: u16) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = tcp_hello(from, addr, port);
        if got.is_some() || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn port_mapping_reaches_the_allocation_until_removed() {
    let bed = Testbed::new();
    let (a, ips) = ensemble(&bed, "ensemble-ports", &["web"]);
    let mut c1 = Netns::new("p1");
    a.attach(ips[0], c1.holder_pid()).unwrap();
    c1.spawn(&["python3", "-c", GREETER, "8080"]);
    let web = ips[0].to_string();
    // The server is up (checked from the host, which routes to the network via T_E).
    assert_eq!(
        wait_for_greeting(&bed.host.name, &web, 8080).as_deref(),
        Some("hello-nunet")
    );
    assert_eq!(
        tcp_hello(&bed.ext.name, HOST_UPLINK, 18080),
        None,
        "not mapped yet"
    );

    let mut ports = PortMap::new(&a);
    ports.add(18080, Proto::Tcp, ips[0], 8080).unwrap();
    ports.add(18080, Proto::Tcp, ips[0], 8080).unwrap();
    assert_eq!(ports.mappings().len(), 1);
    // From outside (PREROUTING) and from the host itself (OUTPUT).
    assert_eq!(
        tcp_hello(&bed.ext.name, HOST_UPLINK, 18080).as_deref(),
        Some("hello-nunet")
    );
    assert_eq!(
        tcp_hello(&bed.host.name, HOST_UPLINK, 18080).as_deref(),
        Some("hello-nunet")
    );
    // Another ensemble cannot take the same public port.
    let mut other = PortMap::new(&EnsembleNet::existing(
        &bed.host.host(),
        "ensemble-x",
        "10.9.9.0/24".parse().unwrap(),
    ));
    assert!(matches!(
        other.add(18080, Proto::Tcp, Ipv4Addr::new(10, 9, 9, 2), 80),
        Err(HostError::Conflict(_))
    ));
    // UDP on the same number is a different mapping.
    ports.add(18080, Proto::Udp, ips[0], 8080).unwrap();

    assert!(ports.remove(18080, Proto::Tcp).unwrap());
    assert!(!ports.remove(18080, Proto::Tcp).unwrap());
    assert_eq!(
        tcp_hello(&bed.ext.name, HOST_UPLINK, 18080),
        None,
        "removed"
    );
    assert_eq!(
        tcp_hello(&bed.host.name, HOST_UPLINK, 18080),
        None,
        "removed (local)"
    );
    let nat = ns_ok(&bed.host.name, &["iptables-save", "-t", "nat"]);
    assert!(
        nat.contains("-p udp") && !nat.contains("-p tcp -m tcp --dport 18080"),
        "{nat}"
    );
    ports.clear().unwrap();
    a.teardown().unwrap();
    let left = traces(&bed.host.name);
    assert_eq!(left, vec![format!("link {}", a.names().tun)]);
}

#[test]
fn cleanup_stale_removes_all_but_kept_ensembles() {
    let bed = Testbed::new();
    let h = bed.host.name.clone();
    let (a, a_ips) = ensemble(&bed, "crashed-a", &["x"]);
    let (b, b_ips) = ensemble(&bed, "kept-b", &["y", "z"]);
    let (mut c1, mut c3, mut c4) = (Netns::new("s1"), Netns::new("s3"), Netns::new("s4"));
    a.attach(a_ips[0], c1.holder_pid()).unwrap();
    b.attach(b_ips[0], c3.holder_pid()).unwrap();
    b.attach(b_ips[1], c4.holder_pid()).unwrap();
    PortMap::new(&a)
        .add(20001, Proto::Tcp, a_ips[0], 80)
        .unwrap();
    PortMap::new(&b)
        .add(20002, Proto::Udp, b_ips[0], 53)
        .unwrap();
    // "Crash": the handles are dropped without teardown.
    let (a_names, b_names) = (a.names().clone(), b.names().clone());
    drop((a, b));

    let report = cleanup_stale(&bed.host.host(), &["kept-b".to_string()]).unwrap();
    assert!(report.interfaces.contains(&a_names.tun), "{report:?}");
    assert!(
        report.interfaces.contains(&a_names.veth(a_ips[0])),
        "{report:?}"
    );
    assert_eq!(report.tables, vec![a_names.table]);
    assert_eq!(
        report.rules, 3,
        "iif tun, iif veth, to network of A: {report:?}"
    );
    assert!(
        report.firewall_rules >= 6 && !report.chains_removed,
        "{report:?}"
    );
    let left = traces(&h).join("\n");
    assert!(!left.contains(&a_names.tun[2..]), "A left behind:\n{left}");
    assert!(
        !left.contains(&a_names.table.to_string()),
        "A's table left:\n{left}"
    );
    assert!(
        left.contains(&b_names.tag) && left.contains(&b_names.tun),
        "B kept:\n{left}"
    );
    let (y, z) = (b_ips[0].to_string(), b_ips[1].to_string());
    assert!(ping(&c3.name, &z) && ping(&c4.name, &y), "B still works");

    let report = cleanup_stale(&bed.host.host(), &[]).unwrap();
    assert!(
        report.chains_removed && report.interfaces.len() == 3,
        "{report:?}"
    );
    assert_eq!(traces(&h), Vec::<String>::new());
    assert!(!ping(&c3.name, &z));
    let again = cleanup_stale(&bed.host.host(), &[]).unwrap();
    assert_eq!(again, Default::default());
}
