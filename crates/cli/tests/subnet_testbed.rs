//! The ensemble VPN on a testbed of network namespaces: `nunet devnet up --netns` puts three
//! real daemons in three namespaces on a bridged LAN; an ensemble with a busybox `httpd` on one
//! node and a client on another gets one subnet, and from inside the client container `ping`
//! and an HTTP GET by `.internal` name reach the web container across nodes. A container of a
//! second ensemble cannot reach the first one. With `subnet.join` the orchestrating node's
//! host reaches the allocations itself (also after it crashed and restarted), and they cannot
//! open connections to it. After shutdown no interface, route, rule or firewall chain of ours
//! is left in any node namespace. Needs root, iproute2, iptables and
//! dockerd with the local image `nunet-test/busybox:latest` (`.ci/install-runtimes.sh`).
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::process::Command;

use deploy_support::text;
use netns_support::{NsDevnet, container, exec};
use serde_json::Value;

/// The address of `eth0` in `container`.
fn address_of(container: &str) -> String {
    let (_, out) = exec(container, &["ip", "-4", "-o", "addr", "show", "eth0"]);
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("{container} has no eth0 address: {out}"))
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// `GET /` on port 8080 of `host` from inside `container`, with busybox `nc`.
fn http_get(container: &str, host: &str) -> (bool, String) {
    let req = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} 8080");
    exec(container, &["sh", "-c", &req])
}

/// `GET /` on `addr:port` from the host namespace `ns`, with python3's socket module.
fn http_from_ns(ns: &str, addr: &str, port: u16) -> String {
    let script = format!(
        "import socket\ns=socket.create_connection(('{addr}',{port}),timeout=5)\ns.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\nprint(s.makefile('rb').read().decode())"
    );
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &script])
        .output()
        .unwrap();
    text(&o)
}

const WEB_AND_CLIENT: &str = include_str!("../../../examples/web-and-client.yaml");

const OTHER: &str = r#"version: V1
allocations:
  other:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "3600"]
nodes:
  solo:
    allocations: [other]
subnet:
  join: true
"#;

#[test]
fn containers_on_different_hosts_talk_by_internal_name_and_ensembles_are_isolated() {
    let dn = NsDevnet::up(3);
    dn.onboard_all();
    // NuNet's `subnet.join`: the orchestrating node (node-1) gets an address too.
    let a = dn.deploy(
        &format!("{WEB_AND_CLIENT}subnet:\n  join: true\n"),
        "a.yaml",
    );
    let client = container(&a, "client");
    let web = container(&a, "web");

    // Across hosts, by name: ping and HTTP.
    let (ok, out) = exec(&client, &["ping", "-c", "2", "-W", "3", "web.internal"]);
    assert!(ok, "ping web.internal from client: {out}");
    // (busybox-static's wget crashes in this image; nc speaks HTTP/1.0 instead)
    let (ok, out) = http_get(&client, "web.internal");
    assert!(
        ok && out.contains("hello-subnet"),
        "GET web.internal: {out}"
    );
    let (ok, out) = http_get(&client, "web");
    assert!(
        ok && out.contains("hello-subnet"),
        "GET web (search domain): {out}"
    );
    let (ok, out) = exec(&client, &["nslookup", "nosuch.internal"]);
    assert!(
        !ok || out.contains("NXDOMAIN") || out.contains("can't resolve"),
        "{out}"
    );

    // The web container's address, as the client resolved it.
    let web_ip = address_of(&web);
    assert!(web_ip.starts_with("10."), "{web_ip}");

    // The public port of `front` is forwarded on its provider: reachable from another host.
    let m = dn.deployment_manifest(&a);
    let front_peer = m["nodes"]["front"]["peer"]
        .as_str()
        .unwrap_or_else(|| panic!("{m}"))
        .to_string();
    let front = dn.node_of(&front_peer);

    // Both providers carry the ensemble's packets as datagrams (the fast path), and their
    // `/dms/node/subnet/list` says so.
    let back_peer = m["nodes"]["back"]["peer"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for node in [front, dn.node_of(&back_peer)] {
        let mut report = Value::Null;
        let on_datagrams = (0..10).any(|_| {
            exec(&client, &["ping", "-c", "1", "-W", "2", "web.internal"]);
            report = dn.json(node, &["actor", "cmd", "--json", "/dms/node/subnet/list"]);
            let e = report["ensembles"]
                .as_array()
                .and_then(|l| l.iter().find(|e| e["ensemble"] == a.as_str()))
                .cloned()
                .unwrap_or_default();
            e["attached"].as_array().map(Vec::len) == Some(1)
                && e["stats"]["datagram_paths"].as_u64() >= Some(1)
                && e["stats"]["datagrams_in"].as_u64() >= Some(1)
                && e["stats"]["datagrams_out"].as_u64() >= Some(1)
        });
        assert!(
            on_datagrams,
            "node-{node} is not on the datagram path: {report}"
        );
        assert!(report["datagram_port"].as_u64().is_some(), "{report}");
    }
    let lan = dn.lan(front);
    let other_host = dn
        .netns
        .iter()
        .find(|ns| **ns != dn.netns[front - 1])
        .unwrap();
    let page = http_from_ns(other_host, &lan, 18080);
    assert!(
        page.contains("hello-subnet"),
        "GET {lan}:18080 from {other_host}: {page}"
    );

    // Another ensemble cannot reach it, by address or by name.
    let b = dn.deploy(OTHER, "b.yaml");
    let other = container(&b, "other");
    let (ok, out) = exec(&other, &["ping", "-c", "1", "-W", "2", &web_ip]);
    assert!(!ok, "a foreign ensemble reached {web_ip}: {out}");
    let (_, out) = http_get(&other, &web_ip);
    assert!(
        !out.contains("hello-subnet"),
        "a foreign ensemble fetched from {web_ip}: {out}"
    );
    let (ok, _) = exec(&other, &["nslookup", "web.internal"]);
    assert!(!ok, "a foreign ensemble resolved web.internal");

    // `subnet.join`: node-1's host, which orchestrates both, has an address in each and
    // reaches their allocations directly; the allocations cannot open connections to it.
    let orchestrator = &dn.netns[0];
    let page = http_from_ns(orchestrator, &web_ip, 8080);
    assert!(
        page.contains("hello-subnet"),
        "GET {web_ip}:8080 from the orchestrating node: {page}"
    );
    let other_ip = address_of(&other);
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            orchestrator,
            "ping",
            "-c",
            "1",
            "-W",
            "3",
            &other_ip,
        ])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{}", text(&ping));
    let st = dn.json(1, &["deployment", "status", &b, "--json"]);
    let joined = st["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .find_map(|n| n.strip_prefix("subnet: this node is on the ensemble network as "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no join note: {st}"))
        .to_string();
    let (ok, out) = exec(&other, &["ping", "-c", "1", "-W", "2", &joined]);
    assert!(
        !ok,
        "an allocation opened a connection to the orchestrating node: {out}"
    );

    for id in [&a, &b] {
        let (code, out) = dn.run(1, &["deployment", "shutdown", id]);
        assert_eq!(code, 0, "{out}");
    }
    // Nothing of ours is left in any node namespace.
    dn.assert_no_subnet_leftovers();
    assert!(deploy_support::containers_of(&a).is_empty());
}
