//! A WASM allocation on the ensemble subnet: `nunet devnet up --netns` starts the daemons in
//! network namespaces; an ensemble puts a WASI preview 2 component (the TCP greeter of the
//! WASM executor's tests: listens on 8080, greets the first client, exits) on one node and a
//! busybox container on another. The provider runs the instance in a namespace of its own with
//! the allocation's address, so from the container `greeter.internal` answers ping and the
//! greeting arrives over TCP. After shutdown no interface, rule or chain of ours is left.
//! Needs root, iproute2, iptables and dockerd with `nunet-test/busybox:latest`.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::time::{Duration, Instant};

use netns_support::{NsDevnet, container, exec};

const GREETER: &str = include_str!("../../executor-wasm/tests/fixtures/tcp_greeter.wat");

#[test]
fn a_wasm_component_serves_tcp_on_the_subnet_to_a_container_on_another_host() {
    let dn = NsDevnet::up(3);
    dn.onboard_all();
    let module = dn.dir.join("greeter.wasm");
    std::fs::write(
        &module,
        wat::parse_str(GREETER.replace("__PORT__", "8080")).unwrap(),
    )
    .unwrap();
    let yaml = format!(
        r#"version: V1
allocations:
  greeter:
    executor: wasm
    type: task
    resources: {{cpu: {{cores: 0.2}}, ram: {{size: 64MiB}}, disk: {{size: 10MiB}}}}
    execution:
      type: wasm
      module: {}
  client:
    executor: docker
    type: service
    resources: {{cpu: {{cores: 0.2}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "3600"]
nodes:
  worker:
    allocations: [greeter]
  front:
    allocations: [client]
"#,
        module.display()
    );
    let id = dn.deploy(&yaml, "wasm.yaml");
    // The greeter's entry in the manifest.
    let greeter = || {
        let m = dn.json(1, &["deployment", "manifest", &id, "--json"]);
        let m = if m["manifest"].is_object() {
            m["manifest"].clone()
        } else {
            m
        };
        let (worker, front) = (&m["nodes"]["worker"]["peer"], &m["nodes"]["front"]["peer"]);
        assert!(
            worker.is_string() && worker != front,
            "not on two hosts: {m}"
        );
        m["allocations"]
            .as_object()
            .unwrap()
            .values()
            .find(|a| a["dns"] == "greeter.internal")
            .cloned()
            .unwrap_or_else(|| panic!("the WASM allocation is not on the subnet: {m}"))
    };
    let greeter_ip = greeter()["ip"].as_str().unwrap().to_string();
    assert!(greeter_ip.starts_with("10."), "{greeter_ip}");

    let client = container(&id, "client");
    // The instance's namespace has the allocation's address: its kernel answers pings.
    let (ok, out) = exec(&client, &["ping", "-c", "1", "-W", "3", "greeter.internal"]);
    assert!(ok, "ping greeter.internal: {out}");
    assert!(out.contains(&greeter_ip), "{out}");

    // The component listens through wasi:sockets inside that namespace.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out) = exec(
            &client,
            &["sh", "-c", "nc -w 5 greeter.internal 8080 </dev/null"],
        );
        if out.contains("hello from wasm") {
            break;
        }
        assert!(Instant::now() < deadline, "no greeting in time: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // Having greeted, the task completes, and its address goes off the subnet.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g = greeter();
        if g["status"] == "completed" {
            assert_eq!(g["exit_code"], 0, "{g}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the greeter did not complete: {g}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, _) = exec(&client, &["ping", "-c", "1", "-W", "1", &greeter_ip]);
    assert!(!ok, "{greeter_ip} still answers after its allocation ended");

    let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
    assert_eq!(code, 0, "{out}");
    dn.assert_no_subnet_leftovers();
    assert!(deploy_support::containers_of(&id).is_empty());
}
