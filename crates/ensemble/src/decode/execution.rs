//! Decoding of `execution:` for each executor (see [`crate::execution`] for the fields).

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;

use super::reader::{
    environment, integer, obj, opt_bool, opt_list, opt_string, req_string, size, with_unit,
};
use crate::check;
use crate::execution::{
    ContainerdExecution, DockerExecution, EXECUTORS, Execution, FirecrackerExecution, NOT_RUN_HERE,
    WasmExecution,
};
use crate::problem::Collector;
use crate::tree::{Entry, Kind, Value};
use crate::units;

/// Flattens NuNet's two spellings (`params:` or keys beside `type`) into one mapping: a key
/// beside `type` replaces an earlier one; a key in `params` is added unless already there.
fn flatten(v: &Value) -> Value {
    let Kind::Map(entries) = &v.kind else {
        return v.clone();
    };
    // Replaced entries are left as `None`; `seen` finds a key's entry in one lookup.
    let mut out: Vec<Option<Entry>> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        match (&e.key[..], &e.value.kind) {
            ("params", Kind::Map(inner)) => {
                for i in inner {
                    if let Slot::Vacant(slot) = seen.entry(&i.key) {
                        slot.insert(out.len());
                        out.push(Some(i.clone()));
                    }
                }
            }
            _ => {
                if let Some(earlier) = seen.insert(&e.key, out.len())
                    && let Some(slot) = out.get_mut(earlier)
                {
                    *slot = None;
                }
                out.push(Some(e.clone()));
            }
        }
    }
    Value {
        kind: Kind::Map(out.into_iter().flatten().collect()),
        line: v.line,
    }
}

pub(crate) fn execution(
    c: &mut Collector,
    raw: &Value,
    path: &str,
    executor: Option<&str>,
) -> Option<Execution> {
    let v = flatten(raw);
    let ty = match v.get("type") {
        Some(t) if t.is_null() => "null".to_string(),
        Some(Value {
            kind: Kind::Scalar { text, .. },
            ..
        }) => text.clone(),
        _ => {
            c.error_at(
                &format!("{path}.type"),
                v.line,
                "missing; execution.type is required and must equal executor",
            );
            return None;
        }
    };
    if let Some(ex) = executor.filter(|ex| EXECUTORS.contains(ex))
        && ex != ty
    {
        c.error(
            &format!("{path}.type"),
            format!("execution.type {ty:?} must equal executor {ex:?}"),
        );
        return None;
    }
    let exec = match ty.as_str() {
        "docker" => Execution::Docker(docker(c, &v, path)?),
        "firecracker" => Execution::Firecracker(firecracker(c, &v, path)?),
        "wasm" => Execution::Wasm(wasm(c, &v, path)?),
        "containerd" => Execution::Containerd(containerd(c, &v, path)?),
        "null" => Execution::Null,
        other => {
            c.error(&format!("{path}.type"), format!("unsupported execution type {other:?} (supported: docker, firecracker, wasm, containerd, null)"));
            return None;
        }
    };
    if let Some((name, why)) = NOT_RUN_HERE.iter().find(|(n, _)| *n == exec.executor()) {
        c.warn(
            &format!("{path}.type"),
            format!("{name}: providers of this DMS decline it at bid time ({why})"),
        );
    }
    Some(exec)
}

fn containerd(c: &mut Collector, v: &Value, path: &str) -> Option<ContainerdExecution> {
    let keys = [
        "type",
        "image",
        "entrypoint",
        "cmd",
        "environment",
        "working_directory",
        "runtime",
    ];
    let o = obj(c, v, path, &keys, false)?;
    let image = req_string(c, &o, "image", "a container image")?;
    check::image_rule(c, &image, path);
    // NuNet's names for runtimes; anything else is handed to containerd as written.
    let runtime = match opt_string(c, &o, "runtime").as_deref() {
        None | Some("") | Some("runc") => "io.containerd.runc.v2".to_string(),
        Some("kata") => "io.containerd.kata.v2".to_string(),
        Some(other) => other.to_string(),
    };
    Some(ContainerdExecution {
        image,
        entrypoint: opt_list(c, &o, "entrypoint"),
        cmd: opt_list(c, &o, "cmd"),
        environment: o
            .get("environment")
            .map(|(v, p)| environment(c, v, &p))
            .unwrap_or_default(),
        working_directory: opt_string(c, &o, "working_directory"),
        runtime,
    })
}

/// A Docker image reference: `[registry[:port]/]name[:tag][@sha256:…]`, lowercase path parts.
pub fn valid_image(image: &str) -> bool {
    if image.is_empty() || image.len() > 512 || image.chars().any(char::is_whitespace) {
        return false;
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return false;
        }
    }
    let (path, tag) = match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && !t.starts_with(['.', '-']);
        if !ok {
            return false;
        }
    }
    let mut parts = path.split('/').peekable();
    let mut first = true;
    while let Some(part) = parts.next() {
        let registry =
            first && parts.peek().is_some() && (part.contains(['.', ':']) || part == "localhost");
        first = false;
        let ok = if registry {
            part.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        } else {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        };
        if !ok {
            return false;
        }
    }
    true
}

fn docker(c: &mut Collector, v: &Value, path: &str) -> Option<DockerExecution> {
    let keys = [
        "type",
        "image",
        "entrypoint",
        "cmd",
        "args",
        "environment",
        "working_directory",
        "restart_policy",
        "user",
        "privileged",
    ];
    let o = obj(c, v, path, &keys, false)?;
    let image = req_string(c, &o, "image", "a docker image")?;
    let d = DockerExecution {
        image,
        entrypoint: opt_list(c, &o, "entrypoint"),
        cmd: opt_list(c, &o, "cmd"),
        args: opt_list(c, &o, "args"),
        environment: o
            .get("environment")
            .map(|(v, p)| environment(c, v, &p))
            .unwrap_or_default(),
        working_directory: opt_string(c, &o, "working_directory"),
        restart_policy: opt_string(c, &o, "restart_policy"),
        user: opt_string(c, &o, "user"),
        privileged: opt_bool(c, &o, "privileged").unwrap_or(false),
    };
    check::docker_rules(c, &d, path);
    Some(d)
}

fn firecracker(c: &mut Collector, v: &Value, path: &str) -> Option<FirecrackerExecution> {
    let o = obj(
        c,
        v,
        path,
        &[
            "type",
            "kernel_image",
            "root_file_system",
            "kernel_args",
            "initrd",
        ],
        false,
    )?;
    let kernel_image = req_string(c, &o, "kernel_image", "kernel_image");
    let root_file_system = req_string(c, &o, "root_file_system", "root_file_system");
    let initrd = opt_string(c, &o, "initrd");
    if o.has("initrd") && initrd.is_none() {
        c.error(&o.path_of("initrd"), "initrd must not be empty when given");
    }
    check::initrd_rule(c, initrd.as_deref(), path);
    Some(FirecrackerExecution {
        kernel_image: kernel_image?,
        root_file_system: root_file_system?,
        kernel_args: opt_string(c, &o, "kernel_args"),
        initrd,
    })
}

fn wasm(c: &mut Collector, v: &Value, path: &str) -> Option<WasmExecution> {
    let keys = [
        "type",
        "module",
        "sha256",
        "entrypoint",
        "args",
        "environment",
        "limits",
    ];
    let o = obj(c, v, path, &keys, false)?;
    let module = req_string(c, &o, "module", "a wasm module (path or https URL)")?;
    let sha256 = opt_string(c, &o, "sha256").map(|s| s.to_ascii_lowercase());
    let mut w = WasmExecution {
        module,
        sha256,
        entrypoint: opt_string(c, &o, "entrypoint").unwrap_or_else(|| "_start".to_string()),
        args: opt_list(c, &o, "args"),
        environment: o
            .get("environment")
            .map(|(v, p)| environment(c, v, &p))
            .unwrap_or_default(),
        ..WasmExecution::default()
    };
    if let Some((lv, lp)) = o.get("limits")
        && let Some(l) = obj(c, lv, &lp, &["memory", "fuel", "timeout"], false)
    {
        w.memory_limit = l.get("memory").and_then(|(v, p)| size(c, v, &p));
        w.fuel = l
            .get("fuel")
            .and_then(|(v, p)| integer(c, v, &p, 1, u64::MAX));
        w.timeout_ms = l
            .get("timeout")
            .and_then(|(v, p)| with_unit(c, v, &p, units::parse_duration_ms));
    }
    check::wasm_rules(c, &w, path);
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::valid_image;

    #[test]
    fn image_references() {
        for ok in [
            "nginx",
            "nginx:1.27",
            "library/hello-world:latest",
            "ghcr.io/org/app:v1",
            "localhost:5000/x",
            "registry.example.com:5000/a/b:c",
        ] {
            assert!(valid_image(ok), "{ok}");
        }
        let digest = format!("busybox@sha256:{}", "a".repeat(64));
        assert!(valid_image(&digest));
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "ng inx",
            "nginx@sha256:zz",
            "-x",
            "a//b",
        ] {
            assert!(!valid_image(bad), "{bad}");
        }
    }
}
