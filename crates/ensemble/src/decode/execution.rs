//! Decoding of `execution:` for each executor (see [`crate::execution`] for the fields).

use super::reader::{
    environment, integer, obj, opt_bool, opt_list, opt_string, req_string, size, with_unit,
};
use crate::check;
use crate::execution::{
    DockerExecution, EXECUTORS, Execution, FirecrackerExecution, WasmExecution,
};
use crate::problem::Collector;
use crate::tree::{Entry, Kind, Value};
use crate::units;

/// Flattens NuNet's two spellings (`params:` or keys beside `type`) into one mapping.
fn flatten(v: &Value) -> Value {
    let Kind::Map(entries) = &v.kind else {
        return v.clone();
    };
    let mut out: Vec<Entry> = Vec::new();
    for e in entries {
        match (&e.key[..], &e.value.kind) {
            ("params", Kind::Map(inner)) => {
                for i in inner {
                    if !out.iter().any(|o| o.key == i.key) {
                        out.push(i.clone());
                    }
                }
            }
            _ => {
                out.retain(|o| o.key != e.key);
                out.push(e.clone());
            }
        }
    }
    Value {
        kind: Kind::Map(out),
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
        "null" => Execution::Null,
        other => {
            c.error(&format!("{path}.type"), format!("unsupported execution type {other:?} (supported: docker, firecracker, wasm, null)"));
            return None;
        }
    };
    Some(exec)
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
