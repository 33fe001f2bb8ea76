//! `/dms/node/vm/*`: start, list and stop custom microVMs on this node through the VM
//! executor (QEMU microvm, or Firecracker when installed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nunet_actor::{ActorError, ActorSystem, Behavior, Incoming};
use nunet_executor::Executor;
use nunet_executor::vm::{VmConfig, VmExecutor, custom_vm_spec};
use serde_json::{Value, json};

fn text(p: &Value, name: &str) -> Option<String> {
    p.get(name).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn failed(e: impl std::fmt::Display) -> ActorError {
    ActorError::failed(e.to_string())
}

/// Starts the VM executor (its probe decides QEMU/Firecracker and KVM/TCG) with state under
/// `state_dir`; guests must reach their init within `boot_timeout` (zero: no limit).
pub async fn executor(node: &str, state_dir: PathBuf, boot_timeout: Duration) -> Arc<VmExecutor> {
    let mut cfg = VmConfig::new(node, state_dir);
    cfg.boot_timeout = boot_timeout;
    Arc::new(VmExecutor::new(cfg).await)
}

/// Registers the VM behaviors on the root actor.
pub fn register(system: &ActorSystem, vm: Arc<VmExecutor>) -> Result<(), ActorError> {
    let v = vm.clone();
    system.register(
        "root",
        "/dms/node/vm/start/custom",
        Behavior::direct(move |m: Incoming| {
            let v = v.clone();
            async move {
                let p = &m.payload;
                let kernel = text(p, "kernel")
                    .ok_or_else(|| failed("give --kernel <path to a kernel image>"))?;
                let cpu: f32 = text(p, "cpu")
                    .map(|c| c.parse())
                    .transpose()
                    .map_err(|_| failed("--cpu must be a number"))?
                    .unwrap_or(1.0);
                let memory: u64 = text(p, "memory")
                    .map(|c| c.parse())
                    .transpose()
                    .map_err(|_| failed("--memory must be MiB"))?
                    .unwrap_or(1024);
                let id = format!("vm-{:08x}", rand_id());
                let spec = custom_vm_spec(
                    id,
                    PathBuf::from(kernel),
                    text(p, "initrd").map(PathBuf::from),
                    text(p, "rootfs").map(PathBuf::from),
                    text(p, "args").unwrap_or_default(),
                    cpu,
                    memory,
                );
                v.prepare(&spec).await.map_err(failed)?;
                let info = v.start(&spec).await.map_err(failed)?;
                Ok(serde_json::to_value(info).unwrap_or(Value::Null))
            }
        }),
    )?;
    let v = vm.clone();
    system.register(
        "root",
        "/dms/node/vm/list",
        Behavior::direct(move |_m| {
            let v = v.clone();
            async move {
                let list = v.list().await.map_err(failed)?;
                Ok(json!({"status": v.status(), "vms": list}))
            }
        }),
    )?;
    let v = vm;
    system.register(
        "root",
        "/dms/node/vm/stop",
        Behavior::direct(move |m: Incoming| {
            let v = v.clone();
            async move {
                let id = text(&m.payload, "id")
                    .ok_or_else(|| failed("give --id <vm id> (see /dms/node/vm/list)"))?;
                v.stop(&id, Duration::from_secs(10)).await.map_err(failed)?;
                v.remove(&id).await.map_err(failed)?;
                Ok(json!({"stopped": id}))
            }
        }),
    )
}

fn rand_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}
