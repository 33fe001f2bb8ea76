//! Turning an allocation into an executor spec, and reading its output.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nunet_actor::ActorError;
use nunet_ensemble::Execution;
use nunet_executor::{
    CpuBudget, ExecutionSpec, Executor, LogOptions, LogSource, ModuleSource, NetworkAttachment,
    PortMapping, Protocol, Workload,
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
        Execution::Wasm(w) => {
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
            s.resources.memory_bytes = w.memory_limit.unwrap_or(0);
            s.resources.cpu_time = match (w.fuel, w.timeout_ms) {
                (Some(f), _) => Some(CpuBudget::Fuel(f)),
                (None, Some(t)) => Some(CpuBudget::Time(Duration::from_millis(t))),
                _ => None,
            };
            s
        }
        _ if !rec.provision.is_empty() || !rec.ports.is_empty() => {
            return Err(failed(format!(
                "provision scripts and static ports need a docker allocation, not {}",
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
