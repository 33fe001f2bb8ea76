//! Table test: one small ensemble per rule, the path, message and line it must be reported at.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;

use nunet_ensemble::{Context, EnsembleError, Severity, parse_str};

/// A valid allocation block (lines 3–7 of every case) to build cases from.
const OK: &str = "version: V1
allocations:
  web:
    executor: docker
    type: service
    resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}
    execution: {type: docker, image: nginx}
";

struct Case {
    name: &'static str,
    yaml: String,
    path: &'static str,
    message: &'static str,
    line: Option<usize>,
    severity: Severity,
}

fn err(
    name: &'static str,
    yaml: impl Into<String>,
    path: &'static str,
    message: &'static str,
    line: usize,
) -> Case {
    Case {
        name,
        yaml: yaml.into(),
        path,
        message,
        line: Some(line),
        severity: Severity::Error,
    }
}

fn warn(
    name: &'static str,
    yaml: impl Into<String>,
    path: &'static str,
    message: &'static str,
    line: usize,
) -> Case {
    Case {
        name,
        yaml: yaml.into(),
        path,
        message,
        line: Some(line),
        severity: Severity::Warning,
    }
}

fn with(extra: &str) -> String {
    format!("{OK}{extra}")
}

const NODE: &str = "nodes:\n  n1:\n    allocations: [web]\n";

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        err("bad size", OK.replace("ram: {size: 1}", "ram: {size: lots}") + NODE, "allocations.web.resources.ram.size", r#"expected a size like "2GiB", "512MiB" or 2 (GiB), got "lots""#, 6,),
        err("bad clock", OK.replace("cores: 1}", "cores: 1, clock_speed: fast}") + NODE, "allocations.web.resources.cpu.clock_speed", "expected a clock speed", 6,),
        err("zero cores", OK.replace("cores: 1", "cores: 0") + NODE, "allocations.web.resources.cpu.cores", "cores must be positive", 6,),
        err("zero ram", OK.replace("ram: {size: 1}", "ram: {size: 0}") + NODE, "allocations.web.resources.ram.size", "ram size must be positive", 6,),
        err("size past signed 64 bits", OK.replace("disk: {size: 1}", "disk: {size: 8192PiB}") + NODE, "allocations.web.resources.disk.size", "expected a size", 6,),
        err("cores below a millicore", OK.replace("cores: 1", "cores: 0.0001") + NODE, "allocations.web.resources.cpu.cores", "cores must be from 0.001", 6,),
        err("missing ram", OK.replace("ram: {size: 1}, ", "") + NODE, "allocations.web.resources.ram", "missing; ram (size) is required", 6,),
        err("unknown template", OK.replace("resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}", "resources: huge",) + NODE, "allocations.web.resources", r#"no resource template named "huge""#, 6,),
        err("executor mismatch", OK.replace("executor: docker", "executor: firecracker") + NODE, "allocations.web.execution.type", r#"execution.type "docker" must equal executor "firecracker""#, 7,),
        err("unknown executor", OK.replace("executor: docker", "executor: kubernetes") + NODE, "allocations.web.executor", "unsupported executor \"kubernetes\"", 4,),
        err("missing execution type", OK.replace("{type: docker, image: nginx}", "{image: nginx}") + NODE, "allocations.web.execution.type", "execution.type is required", 7,),
        err("bad type", OK.replace("type: service", "type: daemon") + NODE, "allocations.web.type", "expected service or task", 5,),
        err("bad image", OK.replace("image: nginx", "image: NGINX") + NODE, "allocations.web.execution.image", "not a valid image reference", 7,),
        err("bad restart policy", OK.replace("image: nginx}", "image: nginx, restart_policy: sometimes}") + NODE, "allocations.web.execution.restart_policy", "expected one of no, on-failure", 7,),
        err("bad env name", OK.replace("image: nginx}", "image: nginx, environment: [\"1X=2\"]}") + NODE, "allocations.web.execution.environment[0]", "not a valid environment variable name", 7,),
        err("env without =", OK.replace("image: nginx}", "image: nginx, environment: [X]}") + NODE, "allocations.web.execution.environment[0]", "expected KEY=VALUE", 7,),
        err("bad dns name", with("    dns_name: web_1\n") + NODE, "allocations.web.dns_name", "is not a valid hostname", 8,),
        err("bad allocation name", OK.replace("  web:", "  my_web:") + "nodes:\n  n1:\n    allocations: [my_web]\n", "allocations.my_web", "not a valid DNS label", 3,),
        err("duplicate dns name", with("    dns_name: api\n  api:\n    executor: docker\n    type: task\n    resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}\n    execution: {type: docker, image: nginx}\n",) + "nodes:\n  n1:\n    allocations: [web, api]\n", "allocations.api.dns_name", r#"dns_name "api" is already used by allocation "web""#, 9,),
        err("allocation on two nodes", with("nodes:\n  n1:\n    allocations: [web]\n  n2:\n    allocations: [web]\n"), "nodes.n2.allocations[0]", r#"already on node "n1""#, 12,),
        err("allocation on no node", with("nodes:\n  n1:\n    allocations: []\n"), "allocations.web", "is on no node", 3,),
        err("unknown allocation on node", with("nodes:\n  n1:\n    allocations: [web, ghost]\n"), "nodes.n1.allocations[1]", r#"no allocation named "ghost""#, 10,),
        err("public port too low", with(NODE) + "    ports: [{public: 80, private: 80, allocation: web}]\n", "nodes.n1.ports[0].public", "expected a whole number from 1025 to 65535", 11,),
        err("private port zero", with(NODE) + "    ports: [{public: 18080, private: 0, allocation: web}]\n", "nodes.n1.ports[0].private", "from 1 to 65535", 11,),
        err("port for other node's allocation", with(NODE) + "    ports: [{public: 18080, private: 80, allocation: db}]\n", "nodes.n1.ports[0].allocation", r#"allocation "db" is not on node "n1""#, 11,),
        err("duplicate public port", with(NODE) + "    ports:\n      - {public: 18080, private: 80, allocation: web}\n      - {public: 18080, private: 81, allocation: web}\n", "nodes.n1.ports[1].public", "mapped twice", 13,),
        err("depends on itself", with("    depends_on: [web]\n") + NODE, "allocations.web.depends_on[0]", "cannot depend on itself", 8,),
        err("depends on unknown", with("    depends_on: [db]\n") + NODE, "allocations.web.depends_on[0]", r#"no allocation named "db""#, 8,),
        err("depends across nodes", with("    depends_on: [db]\n  db:\n    executor: docker\n    type: service\n    resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}\n    execution: {type: docker, image: postgres}\n",) + "nodes:\n  n1:\n    allocations: [web]\n  n2:\n    allocations: [db]\n", "allocations.web.depends_on[0]", "dependencies must be on the same node", 8,),
        err("dependency cycle", with("    depends_on: [db]\n  db:\n    executor: docker\n    type: service\n    depends_on: [web]\n    resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}\n    execution: {type: docker, image: postgres}\n",) + "nodes:\n  n1:\n    allocations: [web, db]\n", "allocations.web.depends_on", "dependency cycle: web → db", 8,),
        err("bad supervisor strategy", with(NODE) + "supervisor: {strategy: OneForAll, allocations: [web]}\n", "supervisor.strategy", "expected OneForOne, AllForOne or RestForOne", 11,),
        err("supervisor unknown allocation", with(NODE) + "supervisor: {strategy: OneForOne, allocations: [ghost]}\n", "supervisor.allocations[0]", "no allocation named", 11,),
        err("edge to unknown node", with(NODE) + "edge_constraints:\n  - edges: [n1, n9]\n    rtt: 10\n", "edge_constraints[0].edges", r#"no node named "n9""#, 12,),
        err("edge to itself", with(NODE) + "edge_constraints:\n  - edges: [n1, n1]\n    rtt: 10\n", "edge_constraints[0].edges", "two different nodes", 12,),
        err("edge with one node", with(NODE) + "edge_constraints:\n  - edges: [n1]\n    rtt: 10\n", "edge_constraints[0].edges", "exactly two node names", 12,),
        err("bad rtt", with(NODE) + "edge_constraints:\n  - edges: [n1, n2]\n    rtt: soon\n", "edge_constraints[0].rtt", "expected a round-trip time", 13,),
        err("bad bw", with(NODE) + "edge_constraints:\n  - edges: [n1, n2]\n    bw: fast\n", "edge_constraints[0].bw", "expected a bandwidth", 13,),
        err("missing script", with("    provision: [setup]\n") + NODE, "allocations.web.provision[0]", r#"no script named "setup""#, 8,),
        err("missing named key", with("    keys: [admin]\n") + NODE, "allocations.web.keys[0]", r#"no key named "admin""#, 8,),
        err("gpg key without dest", with("    keys: [{type: gpg, file: /k.asc}]\n") + NODE, "allocations.web.keys[0].dest", "gpg keys need a dest", 8,),
        err("command healthcheck without exec", with("    healthcheck: {type: command}\n") + NODE, "allocations.web.healthcheck.exec", "needs exec", 8,),
        err("http healthcheck without endpoint", with("    healthcheck: {type: http}\n") + NODE, "allocations.web.healthcheck.endpoint", "endpoint is required", 8,),
        err("bad healthcheck interval", with("    healthcheck: {type: command, exec: [true], interval: often}\n") + NODE, "allocations.web.healthcheck.interval", "expected a duration", 8,),
        err("http healthcheck on another host", with("    healthcheck: {type: http, endpoint: \"http://169.254.169.254/latest\"}\n") + NODE, "allocations.web.healthcheck.endpoint", "reaches only its own allocation", 8,),
        err("https healthcheck", with("    healthcheck: {type: http, endpoint: \"https://localhost/\"}\n") + NODE, "allocations.web.healthcheck.endpoint", "only http:// endpoints", 8,),
        err("healthcheck port out of range", with("    healthcheck: {type: http, endpoint: \":70000/h\"}\n") + NODE, "allocations.web.healthcheck.endpoint", "is not a TCP port", 8,),
        err("healthcheck interval too short", with("    healthcheck: {type: command, exec: [true], interval: 10ms}\n") + NODE, "allocations.web.healthcheck.interval", "shorter than the shortest interval", 8,),
        err("healthcheck timeout over interval", with("    healthcheck: {type: command, exec: [true], interval: 1s, timeout: 2s}\n") + NODE, "allocations.web.healthcheck.timeout", "longer than the interval", 8,),
        err("healthcheck threshold zero", with("    healthcheck: {type: command, exec: [true], failure_threshold: 0}\n") + NODE, "allocations.web.healthcheck.failure_threshold", "whole number from 1", 8,),
        err("volume without mount", with("    volume: {type: local, src: data}\n") + NODE, "allocations.web.volume.mount_destination", "mount_destination is required", 8,),
        err("volume bad local src", with("    volume: {type: local, src: \"../x\", mount_destination: /d}\n") + NODE, "allocations.web.volume[0].src", "absolute path or a volume name", 8,),
        err("two volumes at one place", with("    volume: [{type: local, src: a, mount_destination: /d}, {type: local, src: b, mount_destination: /x/../d/}]\n") + NODE, "allocations.web.volume[1].mount_destination", "/d is also the mount_destination of volume[0]", 8,),
        err("volume mounted at /", with("    volume: {type: local, src: a, mount_destination: /x/..}\n") + NODE, "allocations.web.volume[0].mount_destination", "absolute path other than /", 8,),
        err("named volume on a tiny disk", with("    volume: {type: local, src: a, mount_destination: /d}\n").replace("disk: {size: 1}", "disk: {size: 1MiB}") + NODE, "allocations.web.volume[0].src", "each needs at least 8 MiB", 8,),
        err("glusterfs TLS as a path", with("    volume: [{type: glusterfs, servers: [g1], name: v, client_ca: ca.pem, mount_destination: /d}]\n") + NODE, "allocations.web.volume[0].client_ca", "expected PEM text (-----BEGIN …CERTIFICATE-----), not a path", 8,),
        err("glusterfs TLS without its key", with("    volume: [{type: glusterfs, servers: [g1], name: v, client_ca: \"-----BEGIN CERTIFICATE-----\\nAA\\n-----END CERTIFICATE-----\", mount_destination: /d}]\n") + NODE, "allocations.web.volume[0].client_private_key", "client_private_key, client_pem and client_ca go together", 8,),
        err("glusterfs server as an option", with("    volume: [{type: glusterfs, servers: [\"-oremount\"], name: v, mount_destination: /d}]\n") + NODE, "allocations.web.volume[0].servers[0]", "host name or IPv4 address", 8,),
        err("host directory for a microVM", with("    volume: {type: local, src: /srv/a, mount_destination: /d}\n").replace("executor: docker", "executor: firecracker").replace("{type: docker, image: nginx}", "{type: firecracker, kernel_image: /k, root_file_system: /r}") + NODE, "allocations.web.volume[0].src", "a microVM gets named volumes only", 8,),
        err("encrypted volume for a microVM", with("    volume: {type: local, src: a, encrypted: true, mount_destination: /d}\n").replace("executor: docker", "executor: firecracker").replace("{type: docker, image: nginx}", "{type: firecracker, kernel_image: /k, root_file_system: /r}") + NODE, "allocations.web.volume[0].encrypted", "cannot be attached to a microVM", 8,),
        err("glusterfs without servers", with("    volume: [{type: glusterfs, name: v, mount_destination: /d}]\n") + NODE, "allocations.web.volume[0].servers", "at least one server", 8,),
        err("input without endpoint", with("    inputs: [{source: \"s3://data/in.csv\", path: /in}]\n") + NODE, "allocations.web.inputs[0].endpoint", "the store's endpoint", 8,),
        err("input not s3", with("    inputs: [{source: \"https://x/in.csv\", endpoint: \"http://s3:9000\", path: /in}]\n") + NODE, "allocations.web.inputs[0].source", "expected s3://bucket/key", 8,),
        err("input key escaping", with("    inputs: [{source: \"s3://data/a/../../x\", endpoint: \"http://s3:9000\", path: /in}]\n") + NODE, "allocations.web.inputs[0].source", "has empty, . or .. parts", 8,),
        err("input endpoint with a path", with("    inputs: [{source: \"s3://data/in\", endpoint: \"http://s3:9000/admin\", path: /in}]\n") + NODE, "allocations.web.inputs[0].endpoint", "no user, path or query", 8,),
        err("input at a volume's place", with("    volume: {type: local, src: a, mount_destination: /d}\n    inputs: [{source: \"s3://data/in\", endpoint: \"http://s3:9000\", path: /d/}]\n") + NODE, "allocations.web.inputs[0].path", "/d is also the place of volume[0]", 9,),
        err("input credentials not a name", with("    inputs: [{source: \"s3://data/in\", endpoint: \"http://s3:9000\", path: /in, credentials: \"a b\"}]\n") + NODE, "allocations.web.inputs[0].credentials", "name of a deployment secret", 8,),
        err("outputs of a service", with("    outputs: [{target: \"s3://data/out/\", endpoint: \"http://s3:9000\", path: /out}]\n") + NODE, "allocations.web.outputs", "a service does not complete", 8,),
        err("output at an input's place", with("    type: task\n    inputs: [{source: \"s3://data/in\", endpoint: \"http://s3:9000\", path: /io}]\n    outputs: [{target: \"s3://data/out/\", endpoint: \"http://s3:9000\", path: /io}]\n").replace("    type: service\n", "") + NODE, "allocations.web.outputs[0].path", "/io is also the place of inputs[0]", 9,),
        err("input from a missing allocation", with("    inputs: [{from: gone/r, path: /in}]\n") + NODE, "allocations.web.inputs[0].from", "no allocation named \"gone\"", 8,),
        err("input from its own output", with("    type: task\n    inputs: [{from: web/r, path: /in}]\n    outputs: [{name: r, path: /out}]\n").replace("    type: service\n", "") + NODE, "allocations.web.inputs[0].from", "cannot take its own output", 8,),
        err("input from a malformed reference", with("    inputs: [{from: gone, path: /in}]\n") + NODE, "allocations.web.inputs[0].from", "expected <allocation>/<output name>", 8,),
        err("input from an output with credentials", with("    inputs: [{from: gone/r, path: /in, credentials: s}]\n") + NODE, "allocations.web.inputs[0].credentials", "needs no credentials", 8,),
        err("input with source and from", with("    inputs: [{from: gone/r, source: \"s3://data/in\", endpoint: \"http://s3:9000\", path: /in}]\n") + NODE, "allocations.web.inputs[0].from", "either source", 8,),
        err("output with neither target nor name", with("    type: task\n    outputs: [{path: /out}]\n").replace("    type: service\n", "") + NODE, "allocations.web.outputs[0].target", "an output needs a target", 8,),
        err("output names twice", with("    type: task\n    outputs: [{name: r, path: /a}, {name: r, path: /b}]\n").replace("    type: service\n", "") + NODE, "allocations.web.outputs[1].name", "is also the name of outputs[0]", 8,),
        err("output endpoint without target", with("    type: task\n    outputs: [{name: r, endpoint: \"http://s3:9000\", path: /a}]\n").replace("    type: service\n", "") + NODE, "allocations.web.outputs[0].endpoint", "has no target", 8,),
        err("microVM output path off the kernel line", with("    type: task\n    outputs: [{name: r, path: \"/out put\"}]\n").replace("    type: service\n", "").replace("executor: docker", "executor: firecracker").replace("{type: docker, image: nginx}", "{type: firecracker, kernel_image: /k, root_file_system: /r}") + NODE, "allocations.web.outputs[0].path", "travels on its kernel command line", 8,),
        err("bad failure_recovery", with("    failure_recovery: retry\n") + NODE, "allocations.web.failure_recovery", "expected stay_down, one_for_one", 8,),
        err("bad node failure_recovery", with(NODE) + "    failure_recovery: one_for_one\n", "nodes.n1.failure_recovery", "expected stay_down, restart or redeploy", 11,),
        err("negative redundancy", with(NODE) + "    redundancy: -1\n", "nodes.n1.redundancy", "whole number from 0", 11,),
        err("location without continent", with(NODE) + "    location: {accept: [{country: PT}]}\n", "nodes.n1.location.accept[0].continent", "continent is required", 11,),
        err("city without country", with(NODE) + "    location: {reject: [{continent: EU, city: Lisbon}]}\n", "nodes.n1.location.reject[0].city", "needs its country", 11,),
        err("unknown continent", with(NODE) + "    location: {accept: [{continent: Atlantis}]}\n", "nodes.n1.location.accept[0].continent", "unknown continent", 11,),
        err("bad peer id", with(NODE) + "    peer: not-a-peer!\n", "nodes.n1.peer", "is not a peer ID", 11,),
        err("pinned peer excluded", with(NODE) + "    peer: 12D3KooWGzBxJu8yN4x6A4zQWAj4rzdBDbu3UJWsCkqhcHUk3SJJ\nexclude_peers: [12D3KooWGzBxJu8yN4x6A4zQWAj4rzdBDbu3UJWsCkqhcHUk3SJJ]\n", "nodes.n1.peer", "listed in exclude_peers", 11,),
        err("empty subnet", with(NODE) + "subnet:\n", "subnet", "subnet must not be empty", 11,),
        err("subnet join not bool", with(NODE) + "subnet: {join: maybe}\n", "subnet.join", "expected true or false", 11,),
        err("bad contract did", with(NODE) + "contracts: {pay: {did: \"key:abc\"}}\n", "contracts.pay.did", "expected a DID", 11,),
        err("bad escalation", with(NODE) + "escalation_strategy: panic\n", "escalation_strategy", "expected redeploy or teardown", 11,),
        err("bad version", OK.replace("version: V1", "version: V9") + NODE, "version", "unsupported version", 1,),
        err("no allocations", "version: V1\nallocations: {}\nnodes: {}\n", "allocations", "at least one allocation", 2,),
        err("missing placeholder", OK.replace("image: nginx", "image: \"${IMAGE}\"") + NODE, "allocations.web.execution.image", r#"environment variable "IMAGE" is not set"#, 7,),
        err("wasm url without sha", OK.replace("executor: docker", "executor: wasm").replace("{type: docker, image: nginx}", "{type: wasm, module: \"https://x.example/m.wasm\"}",) + NODE, "allocations.web.execution.sha256", "must be pinned by sha256", 7,),
        err("wasm bad sha", OK.replace("executor: docker", "executor: wasm").replace("{type: docker, image: nginx}", "{type: wasm, module: m.wasm, sha256: abc}",) + NODE, "allocations.web.execution.sha256", "expected 64 hex digits", 7,),
        err("firecracker missing rootfs", OK.replace("executor: docker", "executor: firecracker") .replace("{type: docker, image: nginx}", "{type: firecracker, kernel_image: /k}",) + NODE, "allocations.web.execution.root_file_system", "root_file_system is required", 7,),
        err("firecracker empty initrd", OK.replace("executor: docker", "executor: firecracker") .replace("{type: docker, image: nginx}", "{type: firecracker, kernel_image: /k, root_file_system: /r, initrd: \"\"}",) + NODE, "allocations.web.execution.initrd", "initrd must not be empty", 7,),
        err("duplicate key", with(NODE) + "nodes: {}\n", "", "duplicate key \"nodes\"", 11,),
        err("syntax error", "allocations: [\n", "", "not valid YAML or JSON", 2,),
        warn("dnsname is ignored", with("    dnsname: api\n") + NODE, "allocations.web.dnsname", "NuNet silently ignores it", 8,),
        warn("unknown nested key", with("    resourcez: {}\n") + NODE, "allocations.web.resourcez", "did you mean \"resources\"", 8,),
        warn("clockspeed typo", OK.replace("cores: 1}", "cores: 1, clockspeed: 2}") + NODE, "allocations.web.resources.cpu.clockspeed", "did you mean \"clock_speed\"", 6,),
        warn("size without unit", OK.replace("disk: {size: 1}", "disk: {size: 1024}") + NODE, "allocations.web.resources.disk.size", "1024 without a unit means 1024 GiB", 6,),
        warn("top-level typo", with(NODE) + "edge_constraint: []\n", "edge_constraint", "did you mean \"edge_constraints\"", 11,),
        warn("region is old", with(NODE) + "    location: {accept: [{continent: EU, region: west}]}\n", "nodes.n1.location.accept[0].region", "write `continent`", 11,),
        warn("node without allocations", with(NODE) + "  n2:\n    allocations: []\n", "nodes.n2.allocations", "no allocations", 12,),
        warn("edge constrains nothing", with(NODE) + "  n2: {allocations: []}\nedge_constraints:\n  - edges: [n1, n2]\n", "edge_constraints[0]", "constrains nothing", 13,),
    ]
}

#[test]
fn every_rule_is_reported_with_path_message_and_line() {
    let ctx = Context::with_vars(HashMap::new(), ".");
    let mut failures = Vec::new();
    for case in cases() {
        let report = match parse_str(&case.yaml, &ctx) {
            Ok(p) => p.report,
            Err(EnsembleError::Invalid(r)) => r,
            Err(other) => panic!("{}: {other}", case.name),
        };
        let found = report.problems.iter().any(|p| {
            p.path == case.path
                && p.message.contains(case.message)
                && p.line == case.line
                && p.severity == case.severity
        });
        if !found {
            failures.push(format!(
                "{}: want {:?} {} {:?} line {:?}; got:\n{report}",
                case.name, case.severity, case.path, case.message, case.line
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = OK
        .replace("ram: {size: 1}", "ram: {size: lots}")
        .replace("type: service", "type: daemon")
        + "nodes:\n  n1:\n    allocations: [web]\n    ports: [{public: 80, private: 80, allocation: web}]\n";
    let Err(EnsembleError::Invalid(report)) =
        parse_str(&yaml, &Context::with_vars(HashMap::new(), "."))
    else {
        panic!("should be invalid")
    };
    assert_eq!(report.errors().count(), 3, "{report}");
}
