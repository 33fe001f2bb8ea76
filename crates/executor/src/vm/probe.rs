//! Which VMM this node can use, and how: binary lookup, KVM probe, acceleration choice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::qemu::{self, Accel};

/// Which acceleration QEMU should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM when it is usable and not nested under another hypervisor, TCG otherwise.
    #[default]
    Auto,
    /// KVM, or unavailable when it is not usable.
    Kvm,
    /// Software emulation always.
    Tcg,
}

/// Which VMM to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmmChoice {
    /// Firecracker when its binary is found (config or PATH) and KVM is usable, else QEMU.
    #[default]
    Auto,
    /// QEMU `microvm` only.
    Qemu,
    /// Firecracker only.
    Firecracker,
}

/// The VMM chosen by the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `qemu-system-x86_64 -M microvm`.
    Qemu {
        /// Binary.
        binary: PathBuf,
        /// Acceleration.
        accel: Accel,
    },
    /// `firecracker --api-sock`.
    Firecracker {
        /// Binary.
        binary: PathBuf,
    },
}

/// Looks `name` up on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A configured binary must be an executable file; otherwise `name` is looked up on PATH.
fn locate(configured: Option<PathBuf>, name: &str) -> Result<PathBuf, String> {
    match configured {
        Some(p) if is_executable(&p) => Ok(p),
        Some(p) => Err(format!(
            "configured {name} binary {} is not an executable file",
            p.display()
        )),
        None => find_on_path(name)
            .ok_or_else(|| format!("no {name} binary (not configured, not on PATH)")),
    }
}

/// True when this machine is itself a guest (the CPU reports the `hypervisor` flag): KVM here
/// is nested, which on the machines we measured was far slower than TCG for booting a kernel.
pub fn running_under_hypervisor() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
    })
}

/// Picks a backend. Returns it with a status line, or the reason none is usable.
pub async fn choose(
    vmm: VmmChoice,
    accel: AccelChoice,
    qemu_bin: Option<PathBuf>,
    firecracker_bin: Option<PathBuf>,
    timeout: Duration,
) -> Result<(Backend, String), String> {
    let fc = locate(firecracker_bin, "firecracker");
    let qemu_bin = locate(qemu_bin, "qemu-system-x86_64");
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm: {e}"));
    if vmm != VmmChoice::Qemu {
        match (fc, &kvm) {
            (Ok(binary), Ok(())) => {
                let detail = format!("firecracker ({}), accel=kvm", binary.display());
                return Ok((Backend::Firecracker { binary }, detail));
            }
            (Err(e), _) if vmm == VmmChoice::Firecracker => return Err(e),
            (Ok(_), Err(e)) if vmm == VmmChoice::Firecracker => {
                return Err(format!("firecracker needs KVM: {e}"));
            }
            _ => {}
        }
    }
    let binary = qemu_bin.map_err(|e| format!("{e} (install qemu-system-x86)"))?;
    let (accel, why) = match accel {
        AccelChoice::Tcg => (Accel::Tcg, "configured".to_string()),
        AccelChoice::Kvm => match qemu::probe_kvm(&binary, timeout).await {
            Ok(()) => (Accel::Kvm, "configured, probe ok".to_string()),
            Err(e) => return Err(format!("KVM configured but not usable: {e}")),
        },
        AccelChoice::Auto => match qemu::probe_kvm(&binary, timeout).await {
            Ok(()) if running_under_hypervisor() => (
                Accel::Tcg,
                "kvm works but is nested under a hypervisor (slow); set accel=kvm to force it"
                    .into(),
            ),
            Ok(()) => (Accel::Kvm, "probe ok".to_string()),
            Err(e) => (Accel::Tcg, format!("kvm not usable: {e}")),
        },
    };
    let detail = format!(
        "qemu microvm ({}), accel={} ({why})",
        binary.display(),
        accel.as_str()
    );
    Ok((Backend::Qemu { binary, accel }, detail))
}
