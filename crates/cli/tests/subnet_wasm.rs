//! A WASM allocation on the ensemble subnet: `nunet devnet up --netns` starts the daemons in
//! network namespaces; an ensemble puts a WASI preview 2 component (the TCP greeter of the
//! WASM executor's tests: listens on 8080, greets the first client, exits) on one node and a
//! busybox container on another. The provider runs the instance in a namespace of its own with
//! the allocation's address, so from the container `greeter.internal` answers ping and the
//! greeting arrives over TCP. A second greeter on the same host is reached from another host
//! through its node's public port (forwarded to its address). After shutdown no interface,
//! rule or chain of ours is left.
//! Needs root, iproute2, iptables and dockerd with `nunet-test/busybox:latest`.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::time::{Duration, Instant};

use netns_support::{NsDevnet, container, exec};

const GREETER: &str = include_str!("../../executor-wasm/tests/fixtures/tcp_greeter.wat");

#[test]
fn wasm_components_serve_tcp_on_the_subnet_and_on_a_public_port() {
    let dn = NsDevnet::up(3);
    dn.onboard_all();
    let module = |port: u16| {
        let p = dn.dir.join(format!("greeter-{port}.wasm"));
        let bytes = wat::parse_str(GREETER.replace("__PORT__", &port.to_string())).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
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
  public:
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
    allocations: [greeter, public]
    ports:
      - {{public: 18081, private: 8081, allocation: public}}
  front:
    allocations: [client]
"#,
        module(8080),
        module(8081)
    );
    let id = dn.deploy(&yaml, "wasm.yaml");
    let manifest = || dn.deployment_manifest(&id);
    // An allocation's entry in the manifest, by its `.internal` name.
    let alloc = |dns: &str| {
        let m = manifest();
        m["allocations"]
            .as_object()
            .unwrap()
            .values()
            .find(|a| a["dns"] == dns)
            .cloned()
            .unwrap_or_else(|| panic!("{dns}: not on the subnet: {m}"))
    };
    let m = manifest();
    let (worker, front) = (&m["nodes"]["worker"]["peer"], &m["nodes"]["front"]["peer"]);
    assert!(
        worker.is_string() && worker != front,
        "not on two hosts: {m}"
    );
    let greeter_ip = alloc("greeter.internal")["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let public_ip = alloc("public.internal")["ip"].as_str().unwrap().to_string();
    assert!(
        greeter_ip.starts_with("10.") && public_ip != greeter_ip,
        "{m}"
    );

    // The second component's public port is forwarded on its provider's LAN address.
    let worker = dn.node_of(worker.as_str().unwrap());
    let lan = dn.lan(worker);
    let other = dn.netns[if worker == 1 { 1 } else { 0 }].clone();
    let script = format!(
        "import socket,time\nfor i in range(100):\n    try:\n        s=socket.create_connection(('{lan}',18081),timeout=5); break\n    except OSError: time.sleep(0.2)\nprint(s.makefile('rb').read().decode())"
    );
    let page = netns_support::in_ns(&other, &["python3", "-c", &script]);
    assert_eq!(
        page.trim_end(),
        "hello from wasm",
        "GET {lan}:18081 from {other}"
    );

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
        let g = alloc("greeter.internal");
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
