//! Parsing the fixture files and the shipped examples: every field of NUNET-FORMATS §1 lands
//! where it should, with units converted and defaults applied.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nunet_ensemble::execution::Execution;
use nunet_ensemble::spec::{
    AllocationKey, AllocationRecovery, AllocationType, EscalationStrategy, HealthcheckKind,
    NodeRecovery, SupervisorStrategy, VolumeSource,
};
use nunet_ensemble::{Context, EnsembleError, parse_file, parse_str};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn ctx(vars: &[(&str, &str)]) -> Context {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Context::with_vars(vars, fixtures())
}

#[test]
fn full_fixture_decodes_every_field() {
    let parsed = parse_file(&fixtures().join("full.yaml"), &ctx(&[])).unwrap();
    let e = &parsed.ensemble;
    assert_eq!(e.version.as_deref(), Some("V1"));
    let names: Vec<&str> = e.allocations.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["nginx", "proxy", "db", "vm", "calc"]);

    // Alias and merge key copy the anchored allocation; the template gives resources.
    let nginx = e.allocation("nginx").unwrap();
    let proxy = e.allocation("proxy").unwrap();
    assert_eq!(nginx.kind, AllocationType::Service);
    assert_eq!(nginx.resources.cpu.cores, 2.0);
    assert_eq!(nginx.resources.cpu.clock_hz, Some(2_400_000_000));
    assert_eq!(nginx.resources.cpu.architecture.as_deref(), Some("amd64"));
    assert_eq!(nginx.resources.ram.size, 4 * GIB);
    assert_eq!(nginx.resources.ram.clock_hz, Some(3_200_000_000));
    assert_eq!(nginx.resources.disk.size, GIB / 2);
    assert_eq!(proxy.resources, nginx.resources);
    let Execution::Docker(d) = &proxy.execution else {
        panic!("docker expected")
    };
    assert_eq!(d.environment[0].value, "production", "placeholder default");
    assert_eq!(proxy.depends_on, ["nginx"]);
    assert_eq!(proxy.failure_recovery, AllocationRecovery::RestForOne);
    // `dnsname` is ignored (as NuNet does) but warned about.
    assert_eq!(proxy.dns_name, "proxy");
    let warning = parsed
        .report
        .warnings()
        .find(|w| w.path == "allocations.proxy.dnsname")
        .unwrap();
    assert!(warning.message.contains("dns_name"), "{warning}");
    assert_eq!(warning.line, Some(24));

    let db = e.allocation("db").unwrap();
    assert_eq!(db.dns_name, "database");
    assert_eq!(
        db.resources.ram.size,
        512 * MIB,
        "inline override of the template"
    );
    assert_eq!(db.resources.cpu.cores, 2.0, "from the template");
    assert_eq!(db.resources.gpus.len(), 2);
    assert_eq!(db.resources.gpus[0].vendor.as_deref(), Some("NVIDIA"));
    assert_eq!(db.resources.gpus[0].vram, Some(40 * GIB));
    assert_eq!(db.resources.gpus[1].vendor.as_deref(), Some("AMD/ATI"));
    assert_eq!(db.resources.gpus[1].vram, Some(16_000_000_000));
    let Execution::Docker(d) = &db.execution else {
        panic!("docker expected")
    };
    assert_eq!(d.image, "ghcr.io/example/db:1.2");
    assert_eq!(d.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(d.cmd, ["exec postgres"]);
    assert_eq!(d.environment.len(), 2);
    assert_eq!(d.environment[1].value, "");
    assert_eq!(d.restart_policy.as_deref(), Some("on-failure"));
    assert_eq!(d.user.as_deref(), Some("postgres"));
    assert_eq!(
        db.keys[0],
        AllocationKey::File {
            kind: "ssh".into(),
            file: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey user@host".into(),
            dest: None
        }
    );
    assert_eq!(db.keys[2], AllocationKey::Named("admin".into()));
    assert_eq!(db.provision, ["setup", "migrate"]);
    let hc = db.healthcheck.as_ref().unwrap();
    assert_eq!(hc.interval_ms, Some(90_000));
    assert_eq!(
        hc.check,
        HealthcheckKind::Command {
            exec: vec!["pg_isready".into(), "-q".into()],
            response_value: None,
        }
    );
    assert_eq!(db.volumes.len(), 2);
    assert!(
        matches!(&db.volumes[1].source, VolumeSource::Glusterfs { servers, .. } if servers.len() == 2)
    );
    assert!(db.volumes[1].read_only);

    let vm = e.allocation("vm").unwrap();
    let Execution::Firecracker(f) = &vm.execution else {
        panic!("firecracker expected")
    };
    assert_eq!(f.initrd.as_deref(), Some("/images/initrd"));
    assert_eq!(vm.volumes.len(), 1, "a single volume mapping is accepted");

    let calc = e.allocation("calc").unwrap();
    let Execution::Wasm(w) = &calc.execution else {
        panic!("wasm expected")
    };
    assert_eq!(w.entrypoint, "_start");
    assert_eq!(
        w.sha256.as_deref(),
        Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    );
    assert_eq!(w.memory_limit, Some(32 * MIB));
    assert_eq!(w.fuel, Some(5_000_000));
    assert_eq!(w.timeout_ms, Some(10_000));
    assert!(
        matches!(&calc.healthcheck.as_ref().unwrap().check, HealthcheckKind::Http { response_value: Some(v), .. } if v == "ok")
    );

    let edge = e.node("edge").unwrap();
    assert_eq!(edge.ports.len(), 2);
    assert_eq!(
        edge.location.accept[0].continent.as_deref(),
        Some("EU"),
        "Europe normalised"
    );
    assert_eq!(edge.location.reject[0].asn, Some(3320));
    assert_eq!(edge.redundancy, 1);
    assert_eq!(edge.failure_recovery, NodeRecovery::Redeploy);
    let storage = e.node("storage").unwrap();
    assert!(storage.peer.as_deref().unwrap().starts_with("12D3KooW"));
    assert_eq!(storage.failure_recovery, NodeRecovery::Restart);
    assert_eq!(
        e.node("batch").unwrap().failure_recovery,
        NodeRecovery::StayDown,
        "default"
    );

    assert_eq!(e.edges.len(), 2);
    assert_eq!(e.edges[0].bw_bps, Some(1e9));
    assert_eq!(e.edges[1].rtt_ms, Some(200.0));
    let sup = e.supervisor.as_ref().unwrap();
    assert_eq!(sup.strategy, SupervisorStrategy::AllForOne);
    assert_eq!(sup.children[0].strategy, SupervisorStrategy::RestForOne);
    assert!(e.subnet_join);
    assert_eq!(e.exclude_peers.len(), 1);
    assert_eq!(e.metadata.get("tier").map(String::as_str), Some("2"));
    assert!(e.contracts["billing"].host.is_some());
    assert_eq!(e.escalation_strategy, Some(EscalationStrategy::Teardown));
    assert!(e.scripts["setup"].contains("echo setup"));
    assert!(e.distinct_peers);

    // Aggregate per node: nginx + proxy.
    let agg = e.node_resources(edge);
    assert_eq!(agg.cpu.cores, 4.0);
    assert_eq!(agg.ram.size, 8 * GIB);
}

#[test]
fn placeholders_come_from_the_context() {
    let parsed = parse_file(&fixtures().join("full.yaml"), &ctx(&[("MODE", "staging")])).unwrap();
    let Execution::Docker(d) = &parsed.ensemble.allocation("nginx").unwrap().execution else {
        panic!()
    };
    assert_eq!(d.environment[0].value, "staging");
}

#[test]
fn json_fixture_parses_with_lines() {
    let parsed = parse_file(&fixtures().join("nginx.json"), &ctx(&[])).unwrap();
    assert_eq!(parsed.ensemble.allocations[0].resources.ram.size, 256 * MIB);
    assert_eq!(parsed.ensemble.nodes[0].ports[0].public, 18080);
}

#[test]
fn invalid_fixture_reports_all_problems_with_lines() {
    let err = parse_file(&fixtures().join("invalid.yaml"), &ctx(&[])).unwrap_err();
    let EnsembleError::Invalid(report) = err else {
        panic!("expected a report")
    };
    let text = report.to_string();
    for expected in [
        r#"allocations.web.resources.ram.size: expected a size like "2GiB", "512MiB" or 2 (GiB), got "lots" (line 8)"#,
        r#"allocations.db.type: expected service or task, got "daemon" (line 13)"#,
        r#"allocations.db.execution.type: execution.type "docker" must equal executor "firecracker" (line 15)"#,
        r#"nodes.n1.ports[0].public: expected a whole number from 1025 to 65535, got "80" (line 20)"#,
        r#"allocations.db: allocation "db" is on no node"#,
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(report.errors().count(), 5, "{text}");
}

#[test]
fn shipped_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            let parsed =
                parse_file(&path, &ctx(&[])).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                parsed.report.warnings().count(),
                0,
                "{}: {}",
                path.display(),
                parsed.report
            );
            count += 1;
        }
    }
    assert!(count >= 2);
}

#[test]
fn bad_input_never_panics() {
    let c = ctx(&[]);
    for text in [
        "",
        "~",
        "[]",
        "- a\n- b",
        "allocations: 3",
        "allocations:\n  a: [1]",
        "nodes: {n: {ports: 5}}",
        "\u{0}",
        "a: *x",
        "{",
        "allocations: {a: {resources: {cpu: {cores: -1}}}}",
    ] {
        assert!(parse_str(text, &c).is_err(), "{text:?} should be invalid");
    }
}

/// A deployer's `NVIDIA_VISIBLE_DEVICES` would name GPUs the allocation does not hold: the
/// provider replaces it, and `validate` says so.
#[test]
fn nvidia_visible_devices_in_the_environment_is_warned_about() {
    let yaml = "version: V1\nallocations:\n  a:\n    executor: docker\n    type: task\n    resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}, gpus: [{vendor: nvidia, vram: 8}]}\n    execution:\n      type: docker\n      image: nvidia/cuda:12.4.1-base-ubuntu22.04\n      environment: [KEEP=1, NVIDIA_VISIBLE_DEVICES=all]\nnodes:\n  n: {allocations: [a]}\n";
    let parsed = nunet_ensemble::parse_str(yaml, &Default::default()).unwrap();
    let w: Vec<String> = parsed
        .report
        .warnings()
        .map(|w| format!("{}: {}", w.path, w.message))
        .collect();
    assert!(
        w.iter().any(|w| w.starts_with(
            "allocations.a.execution.environment[1]: NVIDIA_VISIBLE_DEVICES is set by the provider"
        )),
        "{w:?}"
    );
}
