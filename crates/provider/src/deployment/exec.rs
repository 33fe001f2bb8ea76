//! Turning an allocation into an executor spec (Docker, WASM, microVM), and reading its output.

use std::time::Duration;

use nunet_actor::ActorError;
use nunet_ensemble::Execution;
use nunet_ensemble::execution::FirecrackerExecution;
use nunet_executor::{
    CpuBudget, ExecutionSpec, ModuleSource, NetworkAttachment, PortMapping, Protocol, VmWorkload,
    Workload,
};

use super::files::LocalFiles;
use super::{AllocRecord, failed};

/// The execution spec of an allocation.
pub(super) fn spec_of(rec: &AllocRecord, files: &LocalFiles) -> Result<ExecutionSpec, ActorError> {
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
            s.resources.gpus = rec.gpus.clone();
            s
        }
        _ if !rec.gpus.is_empty() => {
            return Err(failed(format!(
                "GPUs can be handed to docker allocations only, not {}",
                rec.execution.executor()
            )));
        }
        Execution::Wasm(w) if rec.provision.is_empty() => {
            let module = if w.module.starts_with("https://") || w.module.starts_with("http://") {
                ModuleSource::Url(w.module.clone())
            } else {
                ModuleSource::Path(files.resolve("module", &w.module)?)
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
            let mut s = ExecutionSpec::new(rec.id.clone(), Workload::Vm(vm_workload(f, files)?));
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

/// Longest kernel command line a deployer may add (Linux takes 2048 bytes on x86 in all).
const MAX_KERNEL_ARGS: usize = 1024;
/// Longest kernel command line with what the provider adds (volumes here; console, root and
/// the subnet's `ip=` in the executors), well inside x86 Linux's 2048 bytes.
pub(super) const MAX_KERNEL_LINE: usize = 1600;

/// Kernel parameters the provider sets itself, with why: the console is the allocation's log
/// and what the boot watchdog reads, the root device is the provider's private copy, the
/// address is the subnet's, and a panic or reboot must end the VM.
const PROVIDER_KERNEL_ARGS: [(&str, &str); 8] = [
    ("console", "the serial console is the allocation's log"),
    (
        "root",
        "the root device is the provider's copy of root_file_system",
    ),
    ("ip", "the guest's address comes from the ensemble subnet"),
    ("panic", "a guest panic must end the VM"),
    ("reboot", "a guest reboot must end the VM"),
    (
        "quiet",
        "the boot watchdog reads the kernel's hand-off to init on the console",
    ),
    (
        "loglevel",
        "the boot watchdog reads the kernel's hand-off to init on the console",
    ),
    ("earlyprintk", "the serial console is the allocation's log"),
];

/// The deployer's kernel arguments, checked: printable ASCII words, bounded, none of the
/// parameters the provider owns.
fn kernel_args(args: &str) -> Result<String, ActorError> {
    if args.len() > MAX_KERNEL_ARGS {
        return Err(failed(format!(
            "kernel_args: {} bytes; at most {MAX_KERNEL_ARGS} are accepted",
            args.len()
        )));
    }
    if let Some(c) = args
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ') || *c == '"')
    {
        return Err(failed(format!(
            "kernel_args: character {c:?} is not accepted (printable ASCII words separated by spaces, no quotes)"
        )));
    }
    for w in args.split_whitespace() {
        let key = w.split('=').next().unwrap_or(w);
        if let Some((k, why)) = PROVIDER_KERNEL_ARGS.iter().find(|(k, _)| *k == key) {
            return Err(failed(format!(
                "kernel_args: {w:?} is set by the provider ({k}: {why})"
            )));
        }
    }
    Ok(args.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `execution: {type: firecracker, kernel_image, root_file_system, initrd?, kernel_args?}` →
/// the VM executor's boot description: files only from the provider's image roots (the
/// executor boots a private copy of the root filesystem), the deployer's kernel arguments
/// checked. The NIC, if any, is added by the subnet.
fn vm_workload(f: &FirecrackerExecution, files: &LocalFiles) -> Result<VmWorkload, ActorError> {
    Ok(VmWorkload {
        kernel: files.resolve("kernel_image", &f.kernel_image)?,
        initrd: f
            .initrd
            .as_deref()
            .map(|i| files.resolve("initrd", i))
            .transpose()?,
        rootfs: Some(files.resolve("root_file_system", &f.root_file_system)?),
        kernel_args: kernel_args(f.kernel_args.as_deref().unwrap_or_default())?,
        disks: Vec::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The attack of issue 15: a deployer names a root-only host file as the root
    /// filesystem and adds kernel arguments to print or overwrite it.
    #[test]
    fn vm_files_come_from_the_image_roots_and_kernel_args_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let images = d.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        for f in ["vmlinuz", "initrd", "root.img"] {
            std::fs::write(images.join(f), f).unwrap();
        }
        let files = LocalFiles::new(d.path(), &[]);
        let p = |f: &str| images.join(f).to_str().unwrap().to_string();
        let good = FirecrackerExecution {
            kernel_image: p("vmlinuz"),
            root_file_system: p("root.img"),
            kernel_args: Some("init=/bin/sh  nunet.x=1".into()),
            initrd: Some(p("initrd")),
        };
        let w = vm_workload(&good, &files).unwrap();
        assert_eq!(w.kernel_args, "init=/bin/sh nunet.x=1");
        assert_eq!(
            w.rootfs.unwrap(),
            images.join("root.img").canonicalize().unwrap()
        );
        let hostile = FirecrackerExecution {
            root_file_system: "/etc/shadow".into(),
            ..good.clone()
        };
        let e = vm_workload(&hostile, &files).unwrap_err().message;
        assert!(
            e.contains("root_file_system") && e.contains("only from under"),
            "{e}"
        );
        let url = FirecrackerExecution {
            kernel_image: "https://example.org/vmlinux".into(),
            ..good.clone()
        };
        assert!(
            vm_workload(&url, &files)
                .unwrap_err()
                .message
                .contains("URLs are not fetched")
        );
        for (args, needle) in [
            ("root=/dev/sda", "set by the provider"),
            ("console=ttyS1", "set by the provider"),
            ("quiet", "boot watchdog"),
            ("loglevel=0", "boot watchdog"),
            ("a\"b", "not accepted"),
            ("a\nb", "not accepted"),
        ] {
            let bad = FirecrackerExecution {
                kernel_args: Some(args.into()),
                ..good.clone()
            };
            let e = vm_workload(&bad, &files).unwrap_err().message;
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        let long = FirecrackerExecution {
            kernel_args: Some("x".repeat(MAX_KERNEL_ARGS + 1)),
            ..good
        };
        assert!(
            vm_workload(&long, &files)
                .unwrap_err()
                .message
                .contains("at most")
        );
    }
}
