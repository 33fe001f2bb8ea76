//! Turning an allocation into an executor spec (Docker, WASM, microVM), and reading its output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nunet_actor::ActorError;
use nunet_ensemble::Execution;
use nunet_ensemble::execution::FirecrackerExecution;
use nunet_executor::{
    CpuBudget, ExecutionSpec, Executor, LogOptions, LogSource, ModuleSource, NetworkAttachment,
    PortMapping, Protocol, VmWorkload, Workload,
};

use super::{AllocRecord, MAX_LOG_BYTES, failed};

/// The execution spec of an allocation.
pub(super) fn spec_of(rec: &AllocRecord) -> Result<ExecutionSpec, ActorError> {
    let mut spec = match &rec.execution {
        Execution::Docker(d) => {
            let mut s = ExecutionSpec::new(
                rec.id.clone(),
                Workload::Container {
                    image: d.image.clone(),
                    working_dir: d.working_directory.clone(),
                    user: d.user.clone(),
                },
            );
            if d.privileged {
                return Err(failed(
                    "privileged containers are not allowed on this provider",
                ));
            }
            s.command = d.entrypoint.clone();
            s.args = d.cmd.iter().chain(&d.args).cloned().collect();
            s.env = d
                .environment
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect();
            s.network = NetworkAttachment::Default;
            s.ports = rec
                .ports
                .iter()
                .map(|p| PortMapping {
                    host_port: p.public,
                    guest_port: p.private,
                    protocol: Protocol::Tcp,
                })
                .collect();
            if !rec.provision.is_empty() {
                super::provision::wrap(&mut s, &rec.provision)?;
            }
            s
        }
        Execution::Wasm(w) if rec.provision.is_empty() => {
            let module = if w.module.starts_with("https://") || w.module.starts_with("http://") {
                ModuleSource::Url(w.module.clone())
            } else {
                ModuleSource::Path(w.module.clone().into())
            };
            let mut s = ExecutionSpec::new(
                rec.id.clone(),
                Workload::Wasm {
                    module,
                    sha256: w.sha256.clone(),
                },
            );
            s.args = w.args.clone();
            s.env = w
                .environment
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect();
            // Never unlimited (0) nor above the RAM the accounting holds for it.
            let ram = rec.resources.ram.size;
            s.resources.memory_bytes = w.memory_limit.map_or(ram, |l| l.min(ram));
            s.resources.cpu_time = match (w.fuel, w.timeout_ms) {
                (Some(f), _) => Some(CpuBudget::Fuel(f)),
                (None, Some(t)) => Some(CpuBudget::Time(Duration::from_millis(t))),
                _ => None,
            };
            s
        }
        Execution::Firecracker(f) if rec.provision.is_empty() && rec.ports.is_empty() => {
            let mut s = ExecutionSpec::new(rec.id.clone(), Workload::Vm(vm_workload(f)?));
            s.network = NetworkAttachment::None;
            s.resources.memory_bytes = rec.resources.ram.size;
            s
        }
        _ if !rec.provision.is_empty() => {
            return Err(failed(format!(
                "provision scripts need a docker allocation, not {}",
                rec.execution.executor()
            )));
        }
        _ if !rec.ports.is_empty() => {
            return Err(failed(format!(
                "static ports need a docker or WASM allocation, not {}",
                rec.execution.executor()
            )));
        }
        other => {
            return Err(failed(format!(
                "executor {} is not supported for deployments on this provider",
                other.executor()
            )));
        }
    };
    spec.resources.cpu_cores = rec.resources.cpu.cores;
    if spec.resources.memory_bytes == 0 && matches!(rec.execution, Execution::Docker(_)) {
        spec.resources.memory_bytes = rec.resources.ram.size;
    }
    spec.labels
        .insert("ensemble".into(), rec.ensemble_id.clone());
    spec.labels.insert("allocation".into(), rec.name.clone());
    Ok(spec)
}

/// A provider-local absolute path from the ensemble (`what` names the field in errors).
fn local_path(what: &str, p: &str) -> Result<PathBuf, ActorError> {
    let path = Path::new(p.trim());
    if p.contains("://") || !path.is_absolute() {
        return Err(failed(format!(
            "{what} {p:?}: microVM allocations take absolute paths on the provider (URLs are not fetched)"
        )));
    }
    if !path.is_file() {
        return Err(failed(format!(
            "{what} {p:?}: no such file on this provider"
        )));
    }
    Ok(path.to_path_buf())
}

/// `execution: {type: firecracker, kernel_image, root_file_system, initrd?, kernel_args?}` →
/// the VM executor's boot description. The NIC, if any, is added by the subnet.
fn vm_workload(f: &FirecrackerExecution) -> Result<VmWorkload, ActorError> {
    Ok(VmWorkload {
        kernel: local_path("kernel_image", &f.kernel_image)?,
        initrd: f
            .initrd
            .as_deref()
            .map(|i| local_path("initrd", i))
            .transpose()?,
        rootfs: Some(local_path("root_file_system", &f.root_file_system)?),
        kernel_args: f.kernel_args.clone().unwrap_or_default(),
    })
}

pub(super) async fn read_logs(exec: &Arc<dyn Executor>, id: &str) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    if let Ok(mut s) = exec.logs(id, LogOptions::default()).await {
        while let Some(Ok(c)) = s.next().await {
            let buf = if c.source == LogSource::Stderr {
                &mut err
            } else {
                &mut out
            };
            if buf.len() < MAX_LOG_BYTES {
                buf.extend_from_slice(&c.data);
            }
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vm_paths_must_be_local_absolute_files() {
        let f = FirecrackerExecution {
            kernel_image: "https://example.org/vmlinux".into(),
            root_file_system: "/proc/self/status".into(),
            kernel_args: Some("quiet".into()),
            initrd: None,
        };
        let e = vm_workload(&f).unwrap_err();
        assert!(e.message.contains("URLs are not fetched"), "{}", e.message);
        let rel = FirecrackerExecution {
            kernel_image: "boot/vmlinuz".into(),
            ..f.clone()
        };
        assert!(vm_workload(&rel).unwrap_err().message.contains("absolute"));
        let gone = FirecrackerExecution {
            kernel_image: "/nonexistent/vmlinuz".into(),
            ..f.clone()
        };
        assert!(
            vm_workload(&gone)
                .unwrap_err()
                .message
                .contains("no such file")
        );
        let ok = FirecrackerExecution {
            kernel_image: "/proc/self/status".into(),
            initrd: Some("/proc/self/status".into()),
            ..f
        };
        let w = vm_workload(&ok).unwrap();
        assert_eq!(w.kernel_args, "quiet");
        assert_eq!(w.rootfs.as_deref(), Some(Path::new("/proc/self/status")));
        assert!(w.initrd.is_some());
    }
}
