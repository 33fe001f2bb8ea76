//! QEMU `microvm`: the command line, the KVM/TCG probe and a QMP client for shutdown.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::{ExecutorError, NetworkAttachment, PortMapping, Result, VmWorkload, with_deadline};

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization (`-accel kvm -cpu host,-arch-capabilities`).
    Kvm,
    /// Software emulation (`-accel tcg -cpu max`).
    Tcg,
}

impl Accel {
    /// `kvm` / `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Machine options for the `microvm` machine type. ACPI stays off: with microvm's ACPI tables
/// Debian's cloud kernel (6.1) stalls in clock calibration under TCG, while without them it
/// boots in about two seconds. Guests end the VM by rebooting (`-no-reboot`, `reboot=t`).
const MACHINE: &str = "microvm,acpi=off";

/// Machine options when the guest has virtio devices (a disk or a NIC). Debian's cloud kernel
/// has no `virtio_mmio.device=` command-line discovery, so its virtio-mmio devices are found
/// only through ACPI; under TCG the guest then needs the TSC rate on its command line
/// ([`tsc_hint`]) or it stalls in clock calibration.
const MACHINE_DEVICES: &str = "microvm,acpi=on";

/// Whether the guest gets a virtio device (disk or NIC).
fn has_devices(l: &QemuLaunch<'_>) -> bool {
    l.vm.rootfs.is_some()
        || !l.vm.disks.is_empty()
        || matches!(
            l.network,
            NetworkAttachment::Default | NetworkAttachment::Tap { .. }
        )
}

/// `tsc_early_khz=<host TSC kHz> tsc=reliable`: under TCG the guest's TSC follows the host's,
/// and with ACPI on there is no PIT to calibrate it against. The rate comes from
/// `/proc/cpuinfo` (2 GHz when unreadable: a wrong rate skews guest time, nothing else).
fn tsc_hint() -> String {
    let khz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .filter(|mhz| *mhz > 1.0)
        .map_or(2_000_000, |mhz| (mhz * 1000.0) as u64);
    format!("tsc_early_khz={khz} tsc=reliable")
}

/// Starts QEMU with `-accel kvm` paused, speaks QMP on stdio and quits: KVM is usable when
/// QEMU gets as far as the QMP greeting. Returns the reason when it is not.
pub async fn probe_kvm(qemu: &Path, timeout: Duration) -> std::result::Result<(), String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Err(format!("/dev/kvm: {e}"));
    }
    let mut child = tokio::process::Command::new(qemu)
        .args([
            "-M",
            MACHINE,
            "-accel",
            "kvm",
            "-cpu",
            "host,-arch-capabilities",
        ])
        .args([
            "-m",
            "16",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-S",
        ])
        .args(["-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("qemu stdio not captured".into());
    };
    let talk = async {
        let mut lines = BufReader::new(stdout).lines();
        let greeting = lines.next_line().await.ok().flatten();
        if greeting.as_deref().is_some_and(|g| g.contains("QMP")) {
            let _ = stdin
                .write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n")
                .await;
            true
        } else {
            false
        }
    };
    let ok = tokio::time::timeout(timeout, talk).await.unwrap_or(false);
    if ok {
        let _ = tokio::time::timeout(timeout, child.wait()).await;
        return Ok(());
    }
    let _ = child.start_kill();
    let out = tokio::time::timeout(timeout, child.wait_with_output()).await;
    let stderr = out
        .ok()
        .and_then(|o| o.ok())
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    Err(if stderr.is_empty() {
        "qemu -accel kvm did not start".to_string()
    } else {
        stderr
    })
}

/// Everything the QEMU command line is built from.
#[derive(Debug, Clone)]
pub struct QemuLaunch<'a> {
    /// The boot description.
    pub vm: &'a VmWorkload,
    /// Accelerator.
    pub accel: Accel,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// QMP socket path.
    pub qmp: &'a Path,
    /// Network attachment.
    pub network: &'a NetworkAttachment,
    /// Port forwards (user-mode network only).
    pub ports: &'a [PortMapping],
    /// Guest MAC address.
    pub mac: &'a str,
}

/// Adds `console=ttyS0` (and `root=/dev/vda` when a rootfs is attached) unless given.
pub fn kernel_cmdline(vm: &VmWorkload) -> String {
    let mut args = vm.kernel_args.trim().to_string();
    let mut add = |a: &str, key: &str| {
        if !args.split_whitespace().any(|w| w.starts_with(key)) {
            if !args.is_empty() {
                args.push(' ');
            }
            args.push_str(a);
        }
    };
    add("console=ttyS0", "console=");
    if vm.rootfs.is_some() {
        add("root=/dev/vda", "root=");
    }
    // A guest panic or reboot ends the VM instead of hanging it (QEMU runs with -no-reboot).
    add("panic=-1", "panic=");
    args
}

/// The QEMU arguments (without the binary). The serial console goes to stdout.
pub fn qemu_args(l: &QemuLaunch<'_>) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let devices = has_devices(l);
    let machine = if devices { MACHINE_DEVICES } else { MACHINE };
    push(&["-M", machine, "-accel", l.accel.as_str()]);
    match l.accel {
        Accel::Kvm => push(&["-cpu", "host,-arch-capabilities"]),
        Accel::Tcg => push(&["-cpu", "max"]),
    }
    let mem = l.mem_mib.to_string();
    let smp = l.vcpus.to_string();
    push(&["-m", &mem, "-smp", &smp]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-serial", "stdio"]);
    let qmp = format!("unix:{},server=on,wait=off", l.qmp.display());
    push(&["-qmp", &qmp]);
    let kernel = l.vm.kernel.to_string_lossy().into_owned();
    push(&["-kernel", &kernel]);
    if let Some(initrd) = &l.vm.initrd {
        let i = initrd.to_string_lossy().into_owned();
        push(&["-initrd", &i]);
    }
    let mut cmdline = kernel_cmdline(l.vm);
    if !cmdline.split_whitespace().any(|w| w.starts_with("reboot=")) {
        cmdline.push_str(" reboot=t"); // triple fault: the one reset microvm always has
    }
    if devices && l.accel == Accel::Tcg && !cmdline.contains("tsc_early_khz=") {
        cmdline.push(' ');
        cmdline.push_str(&tsc_hint());
    }
    push(&["-append", &cmdline]);
    if let Some(rootfs) = &l.vm.rootfs {
        let d = format!("id=root,file={},format=raw,if=none", qemu_escape(rootfs));
        push(&["-drive", &d, "-device", "virtio-blk-device,drive=root"]);
    }
    for (i, disk) in l.vm.disks.iter().enumerate() {
        let ro = if disk.read_only { ",readonly=on" } else { "" };
        let d = format!(
            "id=disk{i},file={},format=raw,if=none{ro}",
            qemu_escape(&disk.path)
        );
        // The serial is checked (letters, digits, '-'): nothing to escape.
        let dev = format!("virtio-blk-device,drive=disk{i},serial={}", disk.serial);
        push(&["-drive", &d, "-device", &dev]);
    }
    let nic = format!("virtio-net-device,netdev=n0,mac={}", l.mac);
    match l.network {
        NetworkAttachment::None
        | NetworkAttachment::Host
        | NetworkAttachment::Named(_)
        | NetworkAttachment::Namespace(_) => {}
        NetworkAttachment::Default => {
            let mut netdev = "user,id=n0".to_string();
            for p in l.ports {
                netdev.push_str(&format!(
                    ",hostfwd={}::{}-:{}",
                    p.protocol.as_str(),
                    p.host_port,
                    p.guest_port
                ));
            }
            push(&["-netdev", &netdev, "-device", &nic]);
        }
        NetworkAttachment::Tap { iface, .. } => {
            let netdev = format!("tap,id=n0,ifname={iface},script=no,downscript=no");
            push(&["-netdev", &netdev, "-device", &nic]);
        }
    }
    a
}

/// QEMU option values escape `,` by doubling it.
fn qemu_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// A QMP connection (capabilities already negotiated).
pub struct Qmp {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
    timeout: Duration,
}

impl Qmp {
    /// Connects to `socket`, reads the greeting and negotiates capabilities.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self> {
        let path: PathBuf = socket.to_path_buf();
        with_deadline("QMP connect", timeout, async move {
            let stream = UnixStream::connect(&path).await?;
            let (r, w) = stream.into_split();
            let mut qmp = Qmp {
                lines: BufReader::new(r).lines(),
                write: w,
                timeout,
            };
            let greeting = qmp.lines.next_line().await?.unwrap_or_default();
            if !greeting.contains("QMP") {
                return Err(ExecutorError::Runtime(format!(
                    "unexpected QMP greeting: {greeting}"
                )));
            }
            qmp.exchange("qmp_capabilities").await?;
            Ok(qmp)
        })
        .await
    }

    async fn exchange(&mut self, command: &str) -> Result<Value> {
        let line = format!("{}\n", json!({ "execute": command }));
        self.write.write_all(line.as_bytes()).await?;
        loop {
            let Some(line) = self.lines.next_line().await? else {
                return Err(ExecutorError::Runtime(format!(
                    "QMP closed during {command}"
                )));
            };
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| ExecutorError::Runtime(format!("bad QMP line {line:?}: {e}")))?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(ExecutorError::Runtime(format!("QMP {command}: {e}")));
            }
            // an event: keep reading
        }
    }

    /// Runs one QMP command (no arguments) and returns its `return` value.
    pub async fn execute(&mut self, command: &str) -> Result<Value> {
        let t = self.timeout;
        with_deadline(&format!("QMP {command}"), t, self.exchange(command)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_what_the_vm_needs() {
        let vm = VmWorkload {
            kernel: "/boot/vmlinuz".into(),
            initrd: Some("/tmp/init,rd".into()),
            rootfs: Some("/tmp/root.img".into()),
            kernel_args: "quiet".into(),
            disks: vec![
                crate::VmDisk {
                    path: "/v/a,b.img".into(),
                    read_only: false,
                    serial: "nunet-vol-0".into(),
                },
                crate::VmDisk {
                    path: "/v/c.img".into(),
                    read_only: true,
                    serial: "nunet-vol-1".into(),
                },
            ],
        };
        let ports = [PortMapping {
            host_port: 8080,
            guest_port: 80,
            protocol: crate::Protocol::Tcp,
        }];
        let args = qemu_args(&QemuLaunch {
            vm: &vm,
            accel: Accel::Kvm,
            vcpus: 2,
            mem_mib: 256,
            qmp: Path::new("/run/x/qmp.sock"),
            network: &NetworkAttachment::Default,
            ports: &ports,
            mac: "06:00:00:00:00:01",
        });
        let joined = args.join(" ");
        assert!(
            joined.contains("-accel kvm -cpu host,-arch-capabilities"),
            "{joined}"
        );
        assert!(joined.contains("-m 256 -smp 2"));
        assert!(joined.contains("-append quiet console=ttyS0 root=/dev/vda panic=-1 reboot=t"));
        assert!(joined.contains("file=/tmp/root.img,format=raw"));
        // Volumes after the root file system, each with its serial; read-only at the VMM.
        assert!(joined.contains(
            "-drive id=disk0,file=/v/a,,b.img,format=raw,if=none -device virtio-blk-device,drive=disk0,serial=nunet-vol-0"
        ), "{joined}");
        assert!(joined.contains(
            "-drive id=disk1,file=/v/c.img,format=raw,if=none,readonly=on -device virtio-blk-device,drive=disk1,serial=nunet-vol-1"
        ), "{joined}");
        assert!(joined.contains("-initrd /tmp/init,rd")); // -initrd takes a plain path
        assert!(joined.contains("hostfwd=tcp::8080-:80"));
        assert!(joined.contains("-qmp unix:/run/x/qmp.sock,server=on,wait=off"));
        let tcg = qemu_args(&QemuLaunch {
            accel: Accel::Tcg,
            network: &NetworkAttachment::None,
            ..QemuLaunch {
                vm: &vm,
                accel: Accel::Tcg,
                vcpus: 1,
                mem_mib: 128,
                qmp: Path::new("/q"),
                network: &NetworkAttachment::None,
                ports: &[],
                mac: "m",
            }
        })
        .join(" ");
        assert!(
            tcg.contains("-accel tcg -cpu max") && !tcg.contains("netdev"),
            "{tcg}"
        );
        // A disk needs ACPI (virtio-mmio discovery) and, under TCG, the TSC rate.
        assert!(
            tcg.contains("microvm,acpi=on") && tcg.contains("tsc_early_khz="),
            "{tcg}"
        );
        let bare = VmWorkload {
            rootfs: None,
            disks: Vec::new(),
            ..vm.clone()
        };
        let tap = NetworkAttachment::Tap {
            iface: "nv000001".into(),
            mac: None,
        };
        let l = QemuLaunch {
            vm: &bare,
            accel: Accel::Tcg,
            vcpus: 1,
            mem_mib: 128,
            qmp: Path::new("/q"),
            network: &NetworkAttachment::None,
            ports: &[],
            mac: "m",
        };
        let plain = qemu_args(&l).join(" ");
        assert!(
            plain.contains("microvm,acpi=off") && !plain.contains("tsc_early"),
            "{plain}"
        );
        let nic = qemu_args(&QemuLaunch { network: &tap, ..l }).join(" ");
        assert!(
            nic.contains("microvm,acpi=on") && nic.contains("ifname=nv000001"),
            "{nic}"
        );
    }

    #[test]
    fn given_console_is_kept() {
        let vm = VmWorkload {
            kernel: "k".into(),
            initrd: None,
            rootfs: None,
            kernel_args: "console=hvc0 panic=5".into(),
            disks: Vec::new(),
        };
        assert_eq!(kernel_cmdline(&vm), "console=hvc0 panic=5");
    }
}
