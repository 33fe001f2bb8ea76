//! An allocation that takes another allocation's output by name (`inputs: [{from:
//! <allocation>/<name>}]`), on a 3-node devnet with real daemons, libp2p and dockerd: the
//! producer runs on node-2, the consumer on node-3; the consumer waits until the producer
//! completed, then node-3 fetches the output from node-2 directly (the orchestrator on
//! node-1 only hands over the ticket and listing) and mounts it read-only. A producer that
//! fails leaves the consumer unstarted and fails the deployment with the producer's reason.
//! Both on one provider, the output is copied there.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use deploy_support::*;
use serde_json::Value;

const RES: &str = "resources: {cpu: {cores: 0.1}, ram: {size: 64MiB}, disk: {size: 64MiB}}";

/// Producer on node-2 running `produce`, consumer on node-3 running `consume`.
fn pipeline(dn: &Devnet, name: &str, produce: &str, consume: &str) -> String {
    pipeline_on(dn, name, (2, 3), produce, consume)
}

/// Producer on node `on.0`, consumer on node `on.1`.
fn pipeline_on(
    dn: &Devnet,
    name: &str,
    on: (usize, usize),
    produce: &str,
    consume: &str,
) -> String {
    let (p2, p3) = (peer_of(dn, on.0), peer_of(dn, on.1));
    let yaml = format!(
        "version: V1\n\
         allocations:\n\
         \x20 produce:\n    executor: docker\n    type: task\n    {RES}\n\
         \x20   execution: {{type: docker, image: nunet-test/busybox:latest, cmd: [sh, -c, \"{produce}\"]}}\n\
         \x20   outputs: [{{name: result, path: /out}}]\n\
         \x20 consume:\n    executor: docker\n    type: task\n    {RES}\n\
         \x20   execution: {{type: docker, image: nunet-test/busybox:latest, cmd: [sh, -c, \"{consume}\"]}}\n\
         \x20   inputs: [{{from: produce/result, path: /in}}]\n\
         nodes:\n\
         \x20 a: {{allocations: [produce], peer: {}}}\n\
         \x20 b: {{allocations: [consume], peer: {}}}\n",
        p2.as_str().unwrap(),
        p3.as_str().unwrap()
    );
    // One provider: one node with both allocations.
    let yaml = if on.0 == on.1 {
        let nodes = yaml.find("nodes:").unwrap();
        format!(
            "{}nodes:\n  a: {{allocations: [produce, consume], peer: {}}}\n",
            &yaml[..nodes],
            p2.as_str().unwrap()
        )
    } else {
        yaml
    };
    let p = dn.dir.join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p.display().to_string()
}

fn events(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["message"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_task_takes_another_tasks_output_straight_from_its_provider() {
    let dn = Devnet::up(0);
    dn.onboard(2);
    dn.onboard(3);
    // 6 MB of random bytes in a subdirectory, a small file, and their digest; the producer
    // sleeps so that the consumer is seen waiting.
    let produce = "sleep 2 && echo hello from produce > /out/a.txt && mkdir /out/d && \
                   head -c 6000000 /dev/urandom > /out/d/big.bin && \
                   cd /out && sha256sum d/big.bin > /out/sum";
    let consume = "cat /in/a.txt && cd /in && sha256sum -c sum && \
                   (touch /in/x 2>/dev/null && echo input-writable || echo input-read-only)";
    let file = pipeline(&dn, "ok", produce, consume);
    let (code, out) = dn.run(1, &["validate", &file]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = dn.run(1, &["deploy", "-f", &file, "-t", "120s", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let id = v["id"].as_str().unwrap().to_string();
    let _guard = Containers(id.clone());
    assert_eq!(v["status"], "Completed", "{v}");
    let allocs = &v["manifest"]["allocations"];
    assert_eq!(allocs["a.produce"]["status"], "completed", "{v}");
    assert_eq!(allocs["b.consume"]["status"], "completed", "{v}");

    // The consumer waited for the producer, then took its output.
    let status = dn.json(1, &["deployment", "status", &id, "--json"]);
    let ev = events(&status);
    let waited = ev
        .iter()
        .position(|e| e.contains("b.consume waits for produce to complete"));
    let took = ev
        .iter()
        .position(|e| e.contains("b.consume takes 1 output(s) straight from their providers"));
    let done = ev
        .iter()
        .position(|e| e.contains("allocation a.produce: completed"));
    assert!(
        waited.is_some() && done.is_some() && took.is_some(),
        "{ev:#?}"
    );
    assert!(waited < done && done < took, "{ev:#?}");

    // What it read is what the producer wrote, read-only.
    let (code, logs) = dn.run(1, &["deployment", "logs", &id]);
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("hello from produce"), "{logs}");
    assert!(logs.contains("d/big.bin: OK"), "{logs}");
    assert!(logs.contains("input-read-only"), "{logs}");

    // The bytes went from node-2 to node-3, not through node-1.
    let p2 = peer_of(&dn, 2);
    let log3 = std::fs::read_to_string(dn.dir.join("node-3/nunet.log")).unwrap_or_default();
    let fetched = log3
        .lines()
        .find(|l| l.contains("input fetched from another provider"))
        .unwrap_or_else(|| panic!("node-3 fetched nothing:\n{log3}"));
    assert!(fetched.contains(p2.as_str().unwrap()), "{fetched}");
    // 6 MB, the 19-byte greeting and the 76-byte digest line.
    assert!(fetched.contains("6000095"), "{fetched}");
    let log1 = std::fs::read_to_string(dn.dir.join("node-1/nunet.log")).unwrap_or_default();
    assert!(!log1.contains("input fetched"), "node-1 fetched the output");

    // Both on node-2: the output is copied there (a node does not stream to itself).
    let file = pipeline_on(&dn, "same", (2, 2), produce, consume);
    let (code, out) = dn.run(1, &["deploy", "-f", &file, "-t", "120s", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let _guard2 = Containers(v["id"].as_str().unwrap().to_string());
    assert_eq!((code, &v["status"]), (0, &Value::from("Completed")), "{v}");
    let (_, logs) = dn.run(1, &["deployment", "logs", v["id"].as_str().unwrap()]);
    assert!(logs.contains("d/big.bin: OK"), "{logs}");
    assert!(logs.contains("input-read-only"), "{logs}");
}

#[test]
fn a_failed_producer_leaves_its_consumer_unstarted_and_fails_the_deployment() {
    let dn = Devnet::up(0);
    dn.onboard(2);
    dn.onboard(3);
    let file = pipeline(
        &dn,
        "fail",
        "echo broken > /out/a.txt && exit 3",
        "echo consumer-ran",
    );
    let (code, out) = dn.run(1, &["deploy", "-f", &file, "-t", "60s", "--json"]);
    assert_ne!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let id = v["id"].as_str().unwrap().to_string();
    let _guard = Containers(id.clone());
    assert_eq!(v["status"], "Failed", "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("a.produce failed"), "{v}");
    assert_ne!(
        v["manifest"]["allocations"]["b.consume"]["status"], "completed",
        "{v}"
    );
    let (_, logs) = dn.run(1, &["deployment", "logs", &id]);
    assert!(!logs.contains("consumer-ran"), "{logs}");
}
