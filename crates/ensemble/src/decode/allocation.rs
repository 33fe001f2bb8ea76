//! Decoding of `allocations.<name>` and of resources (inline or from a named template).

use std::collections::{HashMap, HashSet};

use super::execution::execution;
use super::reader::{
    Obj, integer, named, number, obj, opt_list, opt_string, req_string, size, string, with_unit,
};
use super::volume::volume_list;
use crate::execution::EXECUTORS;
use crate::problem::{Collector, index, join};
use crate::resources::{Cpu, Disk, Gpu, Ram, Resources, normalize_arch, normalize_gpu_vendor};
use crate::spec::{
    Allocation, AllocationKey, AllocationRecovery, AllocationType, Healthcheck, HealthcheckKind,
};
use crate::tree::{Entry, Kind, Value, quote_short, weight};
use crate::{limits, units};

const ALLOCATION_KEYS: &[&str] = &[
    "executor",
    "type",
    "resources",
    "execution",
    "dns_name",
    // Not a field: read only to say so (below), instead of the generic unknown-key warning.
    "dnsname",
    "keys",
    "provision",
    "healthcheck",
    "volume",
    "volumes",
    "inputs",
    "outputs",
    "failure_recovery",
    "depends_on",
];

/// Most template names listed when a template is not found.
const LISTED_TEMPLATES: usize = 10;

/// Named resource templates (top-level `resources:`), by name.
pub(crate) type Templates<'v> = HashMap<String, &'v Value>;

pub(crate) fn templates<'v>(c: &mut Collector, root: &Obj<'v>) -> Templates<'v> {
    let Some((v, p)) = root.get("resources") else {
        return HashMap::new();
    };
    named(c, v, &p)
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect()
}

pub(crate) fn allocation(
    c: &mut Collector,
    name: &str,
    v: &Value,
    path: &str,
    tpl: &Templates<'_>,
) -> Option<Allocation> {
    let o = obj(c, v, path, ALLOCATION_KEYS, false)?;
    if o.has("dnsname") {
        let effective = if o.has("dns_name") {
            "the `dns_name` given".to_string()
        } else {
            format!("{name:?}")
        };
        c.warn(
            &o.path_of("dnsname"),
            format!("`dnsname` is not a field (NuNet silently ignores it); the DNS name is {effective}. Write `dns_name` instead"),
        );
    }
    if o.has("health_check") {
        c.warn(&o.path_of("health_check"), "`health_check` is the old script-name form and is ignored; use `healthcheck: {type, exec|endpoint}`");
    }
    // `executor: null` (unquoted) is YAML's null, but NuNet files mean the null executor.
    let executor = if o
        .entries
        .iter()
        .any(|e| e.key == "executor" && e.value.is_null())
    {
        Some("null".to_string())
    } else {
        req_string(
            c,
            &o,
            "executor",
            "the executor (docker, firecracker, wasm or null)",
        )
    };
    if let Some(ex) = &executor
        && !EXECUTORS.contains(&ex.as_str())
    {
        c.error(
            &o.path_of("executor"),
            format!("unsupported executor {ex:?} (supported: docker, firecracker, wasm, null)"),
        );
    }
    let kind = match o.get("type") {
        Some((v, p)) => match string(c, v, &p).as_deref() {
            Some("service") => Some(AllocationType::Service),
            Some("task") => Some(AllocationType::Task),
            Some(other) => {
                c.error_at(
                    &p,
                    v.line,
                    format!("expected service or task, got {other:?}"),
                );
                None
            }
            None => None,
        },
        None => {
            c.error_at(
                &o.path_of("type"),
                o.line,
                "missing; type (service or task) is required",
            );
            None
        }
    };
    let resources = match o.get("resources") {
        Some((v, p)) => resources(c, v, &p, tpl),
        None => {
            c.error_at(
                &o.path_of("resources"),
                o.line,
                "missing; resources (cpu, ram, disk) are required",
            );
            None
        }
    };
    let exec = match o.get("execution") {
        Some((v, p)) => execution(c, v, &p, executor.as_deref()),
        None => {
            c.error_at(
                &o.path_of("execution"),
                o.line,
                "missing; execution (with type equal to executor) is required",
            );
            None
        }
    };
    let dns_name = opt_string(c, &o, "dns_name").unwrap_or_else(|| name.to_string());
    let keys = match o.get("keys") {
        Some((v, p)) => alloc_keys(c, v, &p),
        None => Vec::new(),
    };
    let provision = opt_list(c, &o, "provision");
    let healthcheck = o
        .get("healthcheck")
        .and_then(|(v, p)| healthcheck(c, v, &p));
    let mut volumes = Vec::new();
    for key in ["volume", "volumes"] {
        if let Some((v, p)) = o.get(key) {
            volumes.extend(volume_list(c, v, &p));
        }
    }
    let inputs = o
        .get("inputs")
        .map(|(v, p)| super::data::inputs(c, v, &p))
        .unwrap_or_default();
    let outputs = o
        .get("outputs")
        .map(|(v, p)| super::data::outputs(c, v, &p))
        .unwrap_or_default();
    let failure_recovery = match o.get("failure_recovery") {
        Some((v, p)) => match string(c, v, &p).as_deref() {
            Some("stay_down") | None => AllocationRecovery::StayDown,
            Some("one_for_one") => AllocationRecovery::OneForOne,
            Some("one_for_all") => AllocationRecovery::OneForAll,
            Some("rest_for_one") => AllocationRecovery::RestForOne,
            Some(other) => {
                c.error_at(&p, v.line, format!("expected stay_down, one_for_one, one_for_all or rest_for_one, got {other:?}"));
                AllocationRecovery::StayDown
            }
        },
        None => AllocationRecovery::StayDown,
    };
    let depends_on = opt_list(c, &o, "depends_on");
    Some(Allocation {
        name: name.to_string(),
        executor: executor?,
        kind: kind?,
        resources: resources?,
        execution: exec?,
        dns_name,
        keys,
        provision,
        healthcheck,
        volumes,
        inputs,
        outputs,
        failure_recovery,
        depends_on,
    })
}

/// Resources: a template name, or a mapping (optionally `template: name` plus overrides).
pub(crate) fn resources(
    c: &mut Collector,
    v: &Value,
    path: &str,
    tpl: &Templates<'_>,
) -> Option<Resources> {
    // Each use copies the template, so each use is charged like an alias.
    let template_ref =
        |c: &mut Collector, name: &str, line: usize, p: &str| -> Option<Vec<Entry>> {
            match tpl.get(name) {
                Some(t) => match &t.kind {
                    Kind::Map(entries) => c
                        .grow(weight(t), p, line, "resource templates")
                        .then(|| entries.clone()),
                    _ => {
                        c.error_at(
                            p,
                            t.line,
                            format!("resource template {name:?} is not a mapping"),
                        );
                        None
                    }
                },
                None => {
                    let mut names: Vec<&String> = tpl.keys().collect();
                    names.sort();
                    let listed = if names.len() > LISTED_TEMPLATES {
                        format!(
                            "{:?} and {} more",
                            &names[..LISTED_TEMPLATES],
                            names.len() - LISTED_TEMPLATES
                        )
                    } else {
                        format!("{names:?}")
                    };
                    c.error_at(
                        p,
                        line,
                        format!(
                            "no resource template named {} (top-level resources: {listed})",
                            quote_short(name)
                        ),
                    );
                    None
                }
            }
        };
    let merged = match &v.kind {
        Kind::Scalar { text, .. } => Value {
            kind: Kind::Map(template_ref(c, text, v.line, path)?),
            line: v.line,
        },
        Kind::Map(entries) => {
            let mut own: Vec<Entry> = entries
                .iter()
                .filter(|e| e.key != "template")
                .cloned()
                .collect();
            if let Some(t) = entries.iter().find(|e| e.key == "template") {
                let name = t.value.as_scalar().unwrap_or_default().to_string();
                let mut seen: HashSet<String> = own.iter().map(|e| e.key.clone()).collect();
                for e in template_ref(c, &name, t.line, &join(path, "template"))? {
                    if seen.insert(e.key.clone()) {
                        own.push(e);
                    }
                }
            }
            Value {
                kind: Kind::Map(own),
                line: v.line,
            }
        }
        _ => {
            c.error_at(
                path,
                v.line,
                format!(
                    "expected a mapping or a template name, got {}",
                    v.describe()
                ),
            );
            return None;
        }
    };
    let o = obj(
        c,
        &merged,
        path,
        &["cpu", "ram", "disk", "gpus", "gpu"],
        false,
    )?;
    let cpu = match o.get("cpu") {
        Some((v, p)) => cpu(c, v, &p),
        None => {
            c.error_at(
                &o.path_of("cpu"),
                o.line,
                "missing; cpu (cores) is required",
            );
            None
        }
    };
    let ram = match o.get("ram") {
        Some((v, p)) => ram(c, v, &p),
        None => {
            c.error_at(&o.path_of("ram"), o.line, "missing; ram (size) is required");
            None
        }
    };
    let disk = match o.get("disk") {
        Some((v, p)) => disk(c, v, &p),
        None => {
            c.error_at(
                &o.path_of("disk"),
                o.line,
                "missing; disk (size) is required",
            );
            None
        }
    };
    if o.has("gpu") {
        c.warn(
            &o.path_of("gpu"),
            "`gpu` is ignored; the list of GPUs is `gpus`",
        );
    }
    let gpus = match o.get("gpus") {
        Some((v, p)) => gpus(c, v, &p),
        None => Vec::new(),
    };
    Some(Resources {
        cpu: cpu?,
        ram: ram?,
        disk: disk?,
        gpus,
    })
}

fn cpu(c: &mut Collector, v: &Value, path: &str) -> Option<Cpu> {
    let known = [
        "cores",
        "clock_speed",
        "architecture",
        "model",
        "vendor",
        "threads",
        "cache_size",
    ];
    let o = obj(c, v, path, &known, false)?;
    let cores = match o.get("cores") {
        Some((v, p)) => {
            let n = number(c, v, &p, "a positive number of cores")?;
            if let Err(e) = limits::cores(n) {
                c.error_at(&p, v.line, e);
                return None;
            }
            n
        }
        None => {
            c.error_at(&o.path_of("cores"), o.line, "missing; cores is required");
            return None;
        }
    };
    Some(Cpu {
        cores,
        clock_hz: o
            .get("clock_speed")
            .and_then(|(v, p)| with_unit(c, v, &p, units::parse_frequency)),
        architecture: opt_string(c, &o, "architecture").map(|a| normalize_arch(&a)),
        model: opt_string(c, &o, "model"),
        vendor: opt_string(c, &o, "vendor"),
        threads: o
            .get("threads")
            .and_then(|(v, p)| integer(c, v, &p, *limits::THREADS.start(), *limits::THREADS.end()))
            .map(|t| t as u32),
        cache_size: o.get("cache_size").and_then(|(v, p)| size(c, v, &p)),
    })
}

fn required_size(c: &mut Collector, o: &Obj<'_>, what: &str) -> Option<u64> {
    match o.get("size") {
        Some((v, p)) => size(c, v, &p),
        None => {
            c.error_at(
                &o.path_of("size"),
                o.line,
                format!("missing; {what} size is required"),
            );
            None
        }
    }
}

fn ram(c: &mut Collector, v: &Value, path: &str) -> Option<Ram> {
    let o = obj(c, v, path, &["size", "clock_speed", "type"], false)?;
    let size = required_size(c, &o, "ram")?;
    if let Err(e) = limits::ram_size(size) {
        c.error(&o.path_of("size"), e);
        return None;
    }
    Some(Ram {
        size,
        clock_hz: o
            .get("clock_speed")
            .and_then(|(v, p)| with_unit(c, v, &p, units::parse_frequency)),
        kind: opt_string(c, &o, "type"),
    })
}

fn disk(c: &mut Collector, v: &Value, path: &str) -> Option<Disk> {
    let known = [
        "size",
        "type",
        "model",
        "vendor",
        "interface",
        "read_speed",
        "write_speed",
    ];
    let o = obj(c, v, path, &known, false)?;
    Some(Disk {
        size: required_size(c, &o, "disk")?,
        kind: opt_string(c, &o, "type"),
    })
}

fn gpus(c: &mut Collector, v: &Value, path: &str) -> Vec<Gpu> {
    let Kind::Seq(items) = &v.kind else {
        c.error_at(
            path,
            v.line,
            format!("expected a list of GPUs, got {}", v.describe()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(o) = obj(c, item, &p, &["vendor", "model", "vram", "memory"], false) else {
            continue;
        };
        let vendor = opt_string(c, &o, "vendor").map(|raw| match normalize_gpu_vendor(&raw) {
            Some(v) => v,
            None => {
                c.warn(&o.path_of("vendor"), format!("unknown GPU vendor {raw:?} (known: NVIDIA, AMD/ATI, Intel); it must match the provider's exactly"));
                raw
            }
        });
        let vram = o
            .get("vram")
            .or_else(|| o.get("memory"))
            .and_then(|(v, p)| size(c, v, &p));
        out.push(Gpu {
            vendor,
            model: opt_string(c, &o, "model"),
            vram,
        });
    }
    out
}

fn alloc_keys(c: &mut Collector, v: &Value, path: &str) -> Vec<AllocationKey> {
    let Kind::Seq(items) = &v.kind else {
        c.error_at(
            path,
            v.line,
            format!("expected a list of keys, got {}", v.describe()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        if let Some(name) = item.as_scalar() {
            c.see(&p, item.line);
            out.push(AllocationKey::Named(name.to_string()));
            continue;
        }
        let Some(o) = obj(c, item, &p, &["type", "file", "dest"], false) else {
            continue;
        };
        let kind = req_string(c, &o, "type", "the key type (ssh or gpg)");
        let file = req_string(c, &o, "file", "the key file");
        let dest = opt_string(c, &o, "dest");
        match kind.as_deref() {
            Some("ssh") => {}
            Some("gpg") if dest.is_none() => {
                c.error_at(&o.path_of("dest"), o.line, "missing; gpg keys need a dest")
            }
            Some("gpg") | None => {}
            Some(other) => c.error(
                &o.path_of("type"),
                format!("expected ssh or gpg, got {other:?}"),
            ),
        }
        if let (Some(kind), Some(file)) = (kind, file) {
            out.push(AllocationKey::File { kind, file, dest });
        }
    }
    out
}

fn healthcheck(c: &mut Collector, v: &Value, path: &str) -> Option<Healthcheck> {
    let o = obj(
        c,
        v,
        path,
        &[
            "type",
            "exec",
            "endpoint",
            "response",
            "interval",
            "timeout",
            "failure_threshold",
        ],
        false,
    )?;
    let interval_ms = o
        .get("interval")
        .and_then(|(v, p)| with_unit(c, v, &p, units::parse_duration_ms));
    let timeout_ms = o
        .get("timeout")
        .and_then(|(v, p)| with_unit(c, v, &p, units::parse_duration_ms));
    let failure_threshold = o
        .get("failure_threshold")
        .and_then(|(v, p)| integer(c, v, &p, 1, 100))
        .map(|n| n as u32);
    let (response_type, response_value) = match o.get("response") {
        Some((v, p)) => match obj(c, v, &p, &["type", "value"], false) {
            Some(r) => (opt_string(c, &r, "type"), opt_string(c, &r, "value")),
            None => (None, None),
        },
        None => (None, None),
    };
    let check = match req_string(c, &o, "type", "the health check type (command or http)")?.as_str()
    {
        "command" => {
            let exec = opt_list(c, &o, "exec");
            if exec.is_empty() {
                c.error_at(
                    &o.path_of("exec"),
                    o.line,
                    "a command health check needs exec: [argv…]",
                );
                return None;
            }
            HealthcheckKind::Command {
                exec,
                response_value,
            }
        }
        "http" => {
            let endpoint = req_string(c, &o, "endpoint", "an http health check's endpoint")?;
            HealthcheckKind::Http {
                endpoint,
                response_type,
                response_value,
            }
        }
        other => {
            c.error(
                &o.path_of("type"),
                format!("expected command or http, got {other:?}"),
            );
            return None;
        }
    };
    Some(Healthcheck {
        check,
        interval_ms,
        timeout_ms,
        failure_threshold,
    })
}
