//! Checks on an ensemble, or a part of one, that arrives already decoded: as JSON from a
//! client (`/dms/node/deployment/new`) or inside a deployment message from another node.
//! Typed fields already hold the right types; what is left are the value rules the decoder
//! applies while reading a file — the same functions ([`crate::limits`],
//! [`crate::decode::valid_image`], the environment-name rule) — and the rules between fields
//! ([`crate::validate`]). Problems name the field as the decoder would (`allocations.web.
//! resources.cpu.cores`), under the path the caller gives.

use crate::decode::{Declared, valid_env_name, valid_image};
use crate::execution::{DockerExecution, EXECUTORS, EnvVar, Execution, WasmExecution};
use crate::limits;
use crate::problem::{Collector, Problem, Report, index, join};
use crate::resources::Resources;
use crate::spec::{Ensemble, Healthcheck, HealthcheckKind, PortMapping, http_target};
use crate::validate;

/// Every problem of a decoded ensemble: value rules and rules between fields.
pub fn ensemble(e: &Ensemble) -> Report {
    let mut c = Collector::default();
    for a in &e.allocations {
        let p = join("allocations", &a.name);
        request(&mut c, &a.resources, &join(&p, "resources"));
        let ep = join(&p, "execution");
        if !EXECUTORS.contains(&a.executor.as_str()) {
            c.error(
                &join(&p, "executor"),
                format!("unsupported executor {:?}", a.executor),
            );
        } else if a.executor != a.execution.executor() {
            c.error(
                &join(&ep, "type"),
                format!(
                    "execution.type {:?} must equal executor {:?}",
                    a.execution.executor(),
                    a.executor
                ),
            );
        }
        execution_rules(&mut c, &a.execution, &ep);
    }
    for n in &e.nodes {
        let p = join("nodes", &n.name);
        for (i, port) in n.ports.iter().enumerate() {
            port_rules(&mut c, port, &index(&join(&p, "ports"), i));
        }
        rule(
            &mut c,
            &join(&p, "redundancy"),
            limits::within(u64::from(n.redundancy), &limits::REDUNDANCY),
        );
    }
    for (i, edge) in e.edges.iter().enumerate() {
        let p = index("edge_constraints", i);
        if let Some(rtt) = edge.rtt_ms {
            rule(&mut c, &join(&p, "rtt"), limits::rtt_ms(rtt));
        }
        if let Some(bw) = edge.bw_bps {
            rule(&mut c, &join(&p, "bw"), limits::bandwidth(bw));
        }
    }
    let declared = Declared {
        allocations: e.allocations.iter().map(|a| a.name.clone()).collect(),
        nodes: e.nodes.iter().map(|n| n.name.clone()).collect(),
    };
    validate::validate(&mut c, e, &declared);
    c.into_report()
}

impl Resources {
    /// Problems of one allocation's request (fields under `path`): cores from
    /// [`limits::MIN_CORES`] to [`limits::MAX_CORES`], RAM positive, every size, clock and
    /// count within its bound.
    pub fn check_request(&self, path: &str) -> Vec<Problem> {
        let mut c = Collector::default();
        request(&mut c, self, path);
        c.problems
    }

    /// Problems of a sum of requests or of an offer (fields under `path`): like
    /// [`Resources::check_request`], but zero cores and zero RAM are allowed.
    pub fn check_amount(&self, path: &str) -> Vec<Problem> {
        let mut c = Collector::default();
        let cpu = join(path, "cpu");
        rule(
            &mut c,
            &join(&cpu, "cores"),
            limits::cores_amount(self.cpu.cores),
        );
        rule(
            &mut c,
            &join(&join(path, "ram"), "size"),
            limits::size(self.ram.size),
        );
        bounded(&mut c, self, path);
        c.problems
    }
}

/// Problems of an allocation's `execution` (fields under `path`).
pub fn execution(e: &Execution, path: &str) -> Vec<Problem> {
    let mut c = Collector::default();
    execution_rules(&mut c, e, path);
    c.problems
}

/// Problems of one health check (fields under `path`) of the allocation named `dns_name`:
/// what a provider checks again before it runs the check.
pub fn healthcheck(h: &Healthcheck, dns_name: &str, path: &str) -> Vec<Problem> {
    let mut c = Collector::default();
    healthcheck_rules(&mut c, h, dns_name, path);
    c.problems
}

/// A health check's rules: an interval from [`Healthcheck::MIN_INTERVAL_MS`] to the longest
/// duration, a positive timeout not longer than the interval, a threshold of at least 1, a
/// command, or an http endpoint on the allocation itself ([`http_target`]).
pub(crate) fn healthcheck_rules(c: &mut Collector, h: &Healthcheck, dns_name: &str, path: &str) {
    if let Some(ms) = h.interval_ms {
        rule(c, &join(path, "interval"), limits::duration_ms(ms));
        if ms < Healthcheck::MIN_INTERVAL_MS {
            c.error(
                &join(path, "interval"),
                format!(
                    "{ms} ms is shorter than the shortest interval, {} ms",
                    Healthcheck::MIN_INTERVAL_MS
                ),
            );
        }
    }
    if let Some(ms) = h.timeout_ms {
        if ms == 0 {
            c.error(&join(path, "timeout"), "a timeout must be positive");
        } else if ms > h.interval_ms.unwrap_or(Healthcheck::DEFAULT_INTERVAL_MS) {
            c.error(
                &join(path, "timeout"),
                format!("{ms} ms is longer than the interval between checks"),
            );
        }
    }
    if h.failure_threshold == Some(0) {
        c.error(
            &join(path, "failure_threshold"),
            "at least one failed check must count",
        );
    }
    match &h.check {
        HealthcheckKind::Http { endpoint, .. } => {
            if let Err(why) = http_target(endpoint, dns_name) {
                c.error(&join(path, "endpoint"), why);
            }
        }
        HealthcheckKind::Command { exec, .. } => {
            if exec.first().is_none_or(|a| a.trim().is_empty()) {
                c.error(
                    &join(path, "exec"),
                    "a command health check needs exec: [argv…]",
                );
            }
        }
    }
}

/// Problems of one port mapping (fields under `path`).
pub fn port(p: &PortMapping, path: &str) -> Vec<Problem> {
    let mut c = Collector::default();
    port_rules(&mut c, p, path);
    c.problems
}

/// An error at `path` when `r` is one.
fn rule(c: &mut Collector, path: &str, r: Result<(), String>) {
    if let Err(m) = r {
        c.error(path, m);
    }
}

fn request(c: &mut Collector, r: &Resources, path: &str) {
    let cpu = join(path, "cpu");
    rule(c, &join(&cpu, "cores"), limits::cores(r.cpu.cores));
    rule(
        c,
        &join(&join(path, "ram"), "size"),
        limits::ram_size(r.ram.size),
    );
    bounded(c, r, path);
}

/// The rules requests and amounts share: everything but cores and RAM size.
fn bounded(c: &mut Collector, r: &Resources, path: &str) {
    let cpu = join(path, "cpu");
    if let Some(hz) = r.cpu.clock_hz {
        rule(c, &join(&cpu, "clock_speed"), limits::clock(hz));
    }
    if let Some(t) = r.cpu.threads {
        rule(
            c,
            &join(&cpu, "threads"),
            limits::within(u64::from(t), &limits::THREADS),
        );
    }
    if let Some(s) = r.cpu.cache_size {
        rule(c, &join(&cpu, "cache_size"), limits::size(s));
    }
    if let Some(hz) = r.ram.clock_hz {
        rule(
            c,
            &join(&join(path, "ram"), "clock_speed"),
            limits::clock(hz),
        );
    }
    rule(
        c,
        &join(&join(path, "disk"), "size"),
        limits::size(r.disk.size),
    );
    for (i, g) in r.gpus.iter().enumerate() {
        if let Some(v) = g.vram {
            rule(
                c,
                &join(&index(&join(path, "gpus"), i), "vram"),
                limits::size(v),
            );
        }
    }
}

fn port_rules(c: &mut Collector, p: &PortMapping, path: &str) {
    rule(
        c,
        &join(path, "public"),
        limits::within(u64::from(p.public), &limits::PUBLIC_PORTS),
    );
    rule(
        c,
        &join(path, "private"),
        limits::within(u64::from(p.private), &limits::PRIVATE_PORTS),
    );
}

/// `restart_policy` values Docker knows.
const RESTART_POLICIES: &[&str] = &["no", "on-failure", "always", "unless-stopped"];

fn execution_rules(c: &mut Collector, e: &Execution, path: &str) {
    match e {
        Execution::Docker(d) => {
            docker_rules(c, d, path);
            env_rules(c, &d.environment, path);
        }
        Execution::Wasm(w) => {
            wasm_rules(c, w, path);
            env_rules(c, &w.environment, path);
        }
        Execution::Firecracker(f) => initrd_rule(c, f.initrd.as_deref(), path),
        Execution::Containerd(d) => {
            image_rule(c, &d.image, path);
            env_rules(c, &d.environment, path);
        }
        Execution::Null => {}
    }
}

/// A container image reference (docker and containerd).
pub(crate) fn image_rule(c: &mut Collector, image: &str, path: &str) {
    if !valid_image(image) {
        c.error(
            &join(path, "image"),
            format!(
                "{image:?} is not a valid image reference (like \"nginx:1.27\" or \"ghcr.io/org/app@sha256:…\")"
            ),
        );
    }
}

/// Image reference, restart policy, and a warning for a deployer's `NVIDIA_VISIBLE_DEVICES`
/// (the decoder checks environment names as it reads them).
pub(crate) fn docker_rules(c: &mut Collector, d: &DockerExecution, path: &str) {
    image_rule(c, &d.image, path);
    if let Some(i) = d
        .environment
        .iter()
        .position(|v| v.name == "NVIDIA_VISIBLE_DEVICES")
    {
        c.warn(
            &index(&join(path, "environment"), i),
            "NVIDIA_VISIBLE_DEVICES is set by the provider to the GPUs the allocation holds (or to `void`); this value is replaced",
        );
    }
    if let Some(rp) = &d.restart_policy
        && !RESTART_POLICIES.contains(&rp.as_str())
    {
        c.error(
            &join(path, "restart_policy"),
            format!("expected one of no, on-failure, always, unless-stopped, got {rp:?}"),
        );
    }
}

/// A firecracker `initrd`, when given, is not empty.
pub(crate) fn initrd_rule(c: &mut Collector, initrd: Option<&str>, path: &str) {
    if initrd.is_some_and(|s| s.trim().is_empty()) {
        c.error(&join(path, "initrd"), "initrd must not be empty when given");
    }
}

fn env_rules(c: &mut Collector, env: &[EnvVar], path: &str) {
    for (i, v) in env.iter().enumerate() {
        if !valid_env_name(&v.name) {
            c.error(
                &index(&join(path, "environment"), i),
                format!("{:?} is not a valid environment variable name", v.name),
            );
        }
    }
}

/// Module pinning and limits (the decoder checks environment names as it reads them).
pub(crate) fn wasm_rules(c: &mut Collector, w: &WasmExecution, path: &str) {
    if let Some(h) = &w.sha256
        && !(h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
    {
        c.error(
            &join(path, "sha256"),
            format!("expected 64 hex digits, got {h:?}"),
        );
    }
    let remote = w.module.contains("://");
    if remote && !w.module.starts_with("https://") {
        c.error(
            &join(path, "module"),
            format!("remote modules must use https://, got {:?}", w.module),
        );
    }
    if remote && w.sha256.is_none() {
        c.error(
            &join(path, "sha256"),
            "missing; a module fetched from a URL must be pinned by sha256",
        );
    }
    let limits_path = join(path, "limits");
    if let Some(m) = w.memory_limit {
        rule(c, &join(&limits_path, "memory"), limits::size(m));
    }
    if w.fuel == Some(0) {
        c.error(
            &join(&limits_path, "fuel"),
            "expected a whole number from 1, got 0",
        );
    }
    if let Some(ms) = w.timeout_ms {
        rule(c, &join(&limits_path, "timeout"), limits::duration_ms(ms));
    }
}
