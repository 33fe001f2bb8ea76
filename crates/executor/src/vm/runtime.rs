//! Launching, watching and stopping VMM processes.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::firecracker::{FirecrackerClient, MachineSetup};
use super::qemu::{self, QemuLaunch, Qmp};
use super::{Backend, Vm};
use crate::{
    ExecutionSpec, ExecutorError, ExitReason, ExitStatus, NetworkAttachment, Result, VmWorkload,
    Workload,
};

const MIB: u64 = 1 << 20;
/// Memory when the spec leaves it at zero.
const DEFAULT_MEM_MIB: u64 = 256;

/// The VM part of a spec, with its files checked.
pub(super) fn check_files(spec: &ExecutionSpec) -> Result<&VmWorkload> {
    let Workload::Vm(vm) = &spec.workload else {
        return Err(ExecutorError::InvalidSpec(
            "the VM executor runs VM workloads only".into(),
        ));
    };
    if !spec.resources.gpus.is_empty() {
        return Err(ExecutorError::InvalidSpec(
            "GPU passthrough to VMs is not supported".into(),
        ));
    }
    if !spec.mounts.is_empty() {
        return Err(ExecutorError::InvalidSpec(
            "host directories cannot be mounted into VMs yet".into(),
        ));
    }
    if matches!(
        spec.network,
        NetworkAttachment::Host | NetworkAttachment::Named(_) | NetworkAttachment::Namespace(_)
    ) {
        return Err(ExecutorError::InvalidSpec(
            "VMs attach to no network, the VMM's user-mode network (default) or a TAP device"
                .into(),
        ));
    }
    for d in &vm.disks {
        let ok = !d.serial.is_empty()
            && d.serial.len() <= 20
            && d.serial
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(ExecutorError::InvalidSpec(format!(
                "disk serial {:?}: letters, digits and '-', at most 20",
                d.serial
            )));
        }
    }
    let files = [Some(&vm.kernel), vm.initrd.as_ref(), vm.rootfs.as_ref()];
    let disks = vm.disks.iter().map(|d| &d.path);
    for path in files.into_iter().flatten().chain(disks) {
        std::fs::File::open(path).map_err(|source| ExecutorError::File {
            path: path.clone(),
            source,
        })?;
    }
    Ok(vm)
}

/// A locally administered MAC derived from the execution id (stable across restarts).
fn mac_for(id: &str) -> String {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let b = h.to_le_bytes();
    format!("06:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(20).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Waits until `path` exists, the child exits (an error carrying its stderr), or the deadline.
async fn wait_for_socket(
    child: &mut Child,
    path: &Path,
    stderr: &Path,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(ExecutorError::Runtime(format!(
                "VMM exited at start ({status}): {}",
                read_tail(stderr)
            )));
        }
        if start.elapsed() > timeout {
            let _ = child.start_kill();
            return Err(ExecutorError::Timeout {
                what: format!("VMM control socket {}", path.display()),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts the VMM for `spec` in `dir`; returns the child, its pid and a detail line.
pub(super) async fn launch(
    backend: &Backend,
    spec: &ExecutionSpec,
    dir: &Path,
    timeout: Duration,
) -> Result<(Child, u32, String)> {
    let mut private = check_files(spec)?.clone();
    if matches!(backend, Backend::Firecracker { .. }) && !private.disks.is_empty() {
        return Err(ExecutorError::InvalidSpec(
            "disks (volumes) are attached to VMs by the QEMU VMM only".into(),
        ));
    }
    // The guest writes to a private copy of its root filesystem, never to the file the spec
    // names: a shared image stays pristine, and a guest cannot change a file on the host.
    if let Some(src) = &private.rootfs {
        let copy = dir.join("rootfs.img");
        tokio::fs::copy(src, &copy)
            .await
            .map_err(|source| ExecutorError::File {
                path: src.clone(),
                source,
            })?;
        private.rootfs = Some(copy);
    }
    let vm = &private;
    let cores = spec.resources.cpu_cores;
    if !cores.is_finite() || !(0.0..=255.0).contains(&cores) {
        return Err(ExecutorError::InvalidSpec(format!(
            "{cores} vCPUs: a VM takes 0 (one) to 255"
        )));
    }
    let vcpus = (cores.ceil() as u32).max(1);
    let mem_mib = match spec.resources.memory_bytes / MIB {
        0 => DEFAULT_MEM_MIB,
        m => m,
    };
    let mac = match &spec.network {
        NetworkAttachment::Tap { mac: Some(m), .. } => m.clone(),
        _ => mac_for(&spec.id),
    };
    let console = std::fs::File::create(dir.join("console.log"))?;
    let vmm_log = dir.join("vmm.log");
    let stderr = std::fs::File::create(&vmm_log)?;
    let mut cmd;
    let socket;
    match backend {
        Backend::Qemu { binary, accel } => {
            socket = dir.join("qmp.sock");
            let args = qemu::qemu_args(&QemuLaunch {
                vm,
                accel: *accel,
                vcpus,
                mem_mib,
                qmp: &socket,
                network: &spec.network,
                ports: &spec.ports,
                mac: &mac,
            });
            cmd = Command::new(binary);
            cmd.args(args);
        }
        Backend::Firecracker { binary } => {
            socket = dir.join("api.sock");
            cmd = Command::new(binary);
            cmd.arg("--api-sock").arg(&socket).args(["--id", &spec.id]);
        }
    }
    // Own process group: a signal to the daemon's group does not take the VMs with it, so a
    // restarted daemon can adopt them.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(console))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd
        .spawn()
        .map_err(|e| ExecutorError::Runtime(format!("cannot start the VMM: {e}")))?;
    let pid = child.id().unwrap_or(0);
    wait_for_socket(&mut child, &socket, &vmm_log, timeout).await?;
    let detail = match backend {
        Backend::Qemu { accel, .. } => format!("qemu microvm pid {pid}, accel={}", accel.as_str()),
        Backend::Firecracker { .. } => {
            let api = FirecrackerClient::new(&socket, timeout);
            let tap = match &spec.network {
                NetworkAttachment::Tap { iface, .. } => Some((iface.clone(), mac.clone())),
                _ => None,
            };
            let setup = MachineSetup {
                vcpus,
                mem_mib,
                kernel: vm.kernel.clone(),
                boot_args: firecracker_cmdline(vm),
                initrd: vm.initrd.clone(),
                rootfs: vm.rootfs.clone(),
                tap,
            };
            let configured = async {
                api.configure(&setup).await?;
                api.start().await
            }
            .await;
            if let Err(e) = configured {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(e);
            }
            format!("firecracker pid {pid}, accel=kvm")
        }
    };
    Ok((child, pid, detail))
}

fn firecracker_cmdline(vm: &VmWorkload) -> String {
    let base = qemu::kernel_cmdline(vm);
    let mut args = base;
    for (a, key) in [("reboot=k", "reboot="), ("pci=off", "pci=")] {
        if !args.split_whitespace().any(|w| w.starts_with(key)) {
            args.push(' ');
            args.push_str(a);
        }
    }
    args
}

fn finish(vm: &Vm, code: Option<i64>, signal: bool) {
    let boot_failure = vm.boot_failure.lock().ok().and_then(|f| f.clone());
    let reason = if vm.stop_requested.load(Ordering::SeqCst) {
        ExitReason::Stopped
    } else if let Some(why) = boot_failure {
        ExitReason::Failed(why)
    } else if signal {
        ExitReason::Failed("the VMM was killed by a signal".into())
    } else {
        ExitReason::Exited
    };
    let status = ExitStatus { code, reason };
    if let Ok(bytes) = serde_json::to_vec(&status) {
        let _ = std::fs::write(vm.dir.join("exit.json"), bytes);
    }
    vm.exit.send_replace(Some(status));
}

/// Reaps our own child and publishes its exit.
pub(super) fn watch_child(vm: Arc<Vm>, mut child: Child) {
    tokio::spawn(async move {
        let waited = tokio::select! {
            st = child.wait() => st,
            _ = vm.kill.notified() => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        match waited {
            Ok(st) => finish(&vm, st.code().map(i64::from), st.code().is_none()),
            Err(e) => {
                vm.exit.send_replace(Some(ExitStatus {
                    code: None,
                    reason: ExitReason::Failed(format!("waiting for the VMM: {e}")),
                }));
            }
        }
    });
}

/// The line a Linux kernel prints (at the default console log level) when it hands over to
/// the guest's init: `Run /init as init process`, `Run /sbin/init as init process`.
fn reached_init(console: &str) -> bool {
    console
        .lines()
        .any(|l| l.contains("Run /") && l.trim_end().ends_with(" as init process"))
}

/// Refuses kernel arguments that hide the hand-off line from the console (`quiet`, or a
/// `loglevel` below 7): the boot watchdog could never see the guest reach its init.
pub(super) fn check_boot_visible(args: &str) -> Result<()> {
    for w in args.split_whitespace() {
        let hides = w == "quiet"
            || w.strip_prefix("loglevel=")
                .is_some_and(|n| n.parse::<u32>().map_or(true, |n| n < 7));
        if hides {
            return Err(ExecutorError::InvalidSpec(format!(
                "kernel argument {w:?} hides the kernel's `Run … as init process` line, which \
                 the boot watchdog waits for; drop it (or run the executor without a boot timeout)"
            )));
        }
    }
    Ok(())
}

/// Boot watchdog: kills the VMM when the guest kernel has not handed over to its init
/// within `limit` (zero: no limit), so a guest hung at boot fails instead of counting as
/// running forever. The exit then reads `Failed("boot timeout: …")`.
pub(super) fn watch_boot(vm: Arc<Vm>, limit: Duration) {
    if limit.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let Some(deadline) = tokio::time::Instant::now().checked_add(limit) else {
            return; // a limit past the end of time is no limit
        };
        let console = vm.dir.join("console.log");
        loop {
            if vm.exited().is_some() {
                return;
            }
            let text = std::fs::read(&console).unwrap_or_default();
            if reached_init(&String::from_utf8_lossy(&text)) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let tail = read_tail(&console);
        let last: Vec<&str> = tail.lines().rev().take(3).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        let why = format!(
            "boot timeout: the guest kernel did not start its init within {} s (last console lines: {})",
            limit.as_secs(),
            last.join(" | ")
        );
        if let Ok(mut f) = vm.boot_failure.lock() {
            *f = Some(why);
        }
        vm.kill.notify_one();
    });
}

/// True while `pid` is a live process whose command line mentions `dir` (so a recycled pid
/// is not mistaken for our VMM).
fn alive(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit(')')
        .next()
        .is_some_and(|s| s.trim_start().starts_with('Z'));
    let needle = dir.to_string_lossy();
    !zombie && String::from_utf8_lossy(&cmdline).contains(needle.as_ref())
}

/// Watches a VM started by an earlier process: polls its pid and reads `exit.json` when the
/// earlier process recorded one.
pub(super) fn watch_adopted(vm: Arc<Vm>) {
    tokio::spawn(async move {
        while alive(vm.meta.pid, &vm.dir) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Give a still-running earlier monitor a moment to record the exit status.
        for _ in 0..10 {
            if let Some(st) = std::fs::read(vm.dir.join("exit.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<ExitStatus>(&b).ok())
            {
                let reason = if vm.stop_requested.load(Ordering::SeqCst) {
                    ExitReason::Stopped
                } else {
                    st.reason
                };
                vm.exit.send_replace(Some(ExitStatus {
                    code: st.code,
                    reason,
                }));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        finish(&vm, None, false);
    });
}

async fn exited_within(vm: &Vm, d: Duration) -> bool {
    let mut rx = vm.exit.subscribe();
    tokio::time::timeout(d, rx.wait_for(Option::is_some))
        .await
        .is_ok()
}

/// Graceful stop, then forceful: QEMU gets ACPI power-down, then QMP `quit`; Firecracker gets
/// Ctrl+Alt+Del; after that the process is killed.
pub(super) async fn shut_down(vm: &Vm, grace: Duration, timeout: Duration) -> Result<()> {
    if vm.meta.firecracker {
        let api = FirecrackerClient::new(vm.dir.join("api.sock"), timeout);
        if !grace.is_zero() && api.shutdown().await.is_ok() && exited_within(vm, grace).await {
            return Ok(());
        }
    } else {
        let qmp = Qmp::connect(&vm.dir.join("qmp.sock"), timeout).await;
        if let Ok(mut qmp) = qmp {
            if !grace.is_zero()
                && qmp.execute("system_powerdown").await.is_ok()
                && exited_within(vm, grace).await
            {
                return Ok(());
            }
            let _ = qmp.execute("quit").await;
            if exited_within(vm, timeout).await {
                return Ok(());
            }
        }
    }
    if vm.exited().is_none() && alive(vm.meta.pid, &vm.dir) {
        let _ = Command::new("kill")
            .args(["-KILL", &vm.meta.pid.to_string()])
            .status()
            .await;
    }
    if exited_within(vm, timeout).await {
        Ok(())
    } else {
        Err(ExecutorError::Timeout {
            what: format!("VM {} to stop", vm.meta.id),
            after: grace + timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_and_local() {
        let a = mac_for("vm-1");
        assert_eq!(a, mac_for("vm-1"));
        assert_ne!(a, mac_for("vm-2"));
        assert!(a.starts_with("06:00:") && a.len() == 17, "{a}");
    }
}
