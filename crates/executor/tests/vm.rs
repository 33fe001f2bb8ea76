//! VM executor: real boots of Debian's cloud kernel with a busybox initramfs built here.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use nunet_executor::vm::{Backend, VmmChoice, custom_vm_spec, kernel};
use nunet_executor::{
    ExecutionSpec, ExecutionState, Executor, ExecutorKind, ExitReason, LogOptions,
    NetworkAttachment, Resources, VmConfig, VmExecutor, VmWorkload, Workload, logs,
};

/// Boots under TCG take a few seconds on an idle machine; leave room for a loaded CI box.
const BOOT: Duration = Duration::from_secs(180);

async fn qemu_executor(node: &str, state: &std::path::Path) -> VmExecutor {
    let mut cfg = VmConfig::new(node, state);
    cfg.vmm = VmmChoice::Qemu;
    let ex = VmExecutor::new(cfg).await;
    if !ex.status().available {
        common::missing(&format!("qemu-system-x86_64 ({})", ex.status().detail));
    }
    ex
}

fn vm_spec(id: &str, dir: &std::path::Path, script: &str) -> ExecutionSpec {
    let initrd = common::initramfs(dir, script);
    let mut s = ExecutionSpec::new(
        id,
        Workload::Vm(VmWorkload {
            kernel: common::cloud_kernel(),
            initrd: Some(initrd),
            rootfs: None,
            kernel_args: String::new(),
            disks: Vec::new(),
        }),
    );
    s.resources = Resources {
        cpu_cores: 1.0,
        memory_bytes: 256 << 20,
        ..Default::default()
    };
    s.network = NetworkAttachment::None;
    s
}

#[tokio::test]
async fn qemu_microvm_boots_prints_the_marker_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ex = qemu_executor(&common::node("vm-boot"), &dir.path().join("state")).await;
    assert_eq!(ex.kind(), ExecutorKind::Qemu);
    let detail = ex.status().detail;
    assert!(
        detail.contains("accel=tcg") || detail.contains("accel=kvm"),
        "{detail}"
    );
    // The `/dms/node/vm/start/custom` shape: user-mode network, 1 vCPU, 256 MiB.
    let initrd = common::initramfs(
        dir.path(),
        "#!/bin/busybox sh\n/bin/busybox echo NUNET-VM-MARKER-$((6*7))\n/bin/busybox reboot -f\n",
    );
    let s = custom_vm_spec(
        "boot-1",
        common::cloud_kernel(),
        Some(initrd),
        None,
        "",
        1.0,
        256,
    );
    let t = Instant::now();
    let info = ex.start(&s).await.unwrap();
    assert!(info.detail.contains("qemu microvm pid"), "{}", info.detail);
    let exit = tokio::time::timeout(BOOT, ex.wait(&s.id))
        .await
        .expect("VM did not finish")
        .unwrap();
    let console = logs::collect(ex.logs(&s.id, LogOptions::default()).await.unwrap())
        .await
        .unwrap();
    let console = String::from_utf8_lossy(&console);
    assert!(
        console.contains("NUNET-VM-MARKER-42"),
        "console:\n{console}"
    );
    assert!(exit.success(), "{exit:?}\nconsole:\n{console}");
    // What the boot watchdog waits for.
    assert!(console.contains(" as init process"), "console:\n{console}");
    eprintln!("boot to exit: {:?} ({detail})", t.elapsed());
    ex.remove(&s.id).await.unwrap();
    assert!(ex.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_running_vm_is_followed_adopted_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let node = common::node("vm-adopt");
    let s = vm_spec(
        "long-1",
        dir.path(),
        "#!/bin/busybox sh\n/bin/busybox echo NUNET-VM-UP\nwhile true; do /bin/busybox sleep 1; done\n",
    );
    {
        let ex = qemu_executor(&node, &state).await;
        ex.start(&s).await.unwrap();
        let mut follow = ex
            .logs(
                &s.id,
                LogOptions {
                    follow: true,
                    skip_history: false,
                },
            )
            .await
            .unwrap();
        let mut text = String::new();
        let seen = tokio::time::timeout(BOOT, async {
            while let Some(chunk) = follow.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap().data));
                if text.contains("NUNET-VM-UP") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(seen, Ok(true), "console so far:\n{text}");
    } // executor dropped: the VM keeps running
    let ex = qemu_executor(&node, &state).await;
    let listed = ex.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, s.id);
    assert_eq!(listed[0].state, ExecutionState::Running);
    assert_eq!(listed[0].labels["nunet.node"], node);
    let t = Instant::now();
    ex.stop(&s.id, Duration::from_secs(1)).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), ex.wait(&s.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.reason, ExitReason::Stopped, "{exit:?}");
    assert!(t.elapsed() < Duration::from_secs(30));
    ex.remove(&s.id).await.unwrap();
}

#[test]
fn debian_cloud_kernel_unpacks_to_an_x86_64_vmlinux() {
    let image = std::fs::read(common::cloud_kernel()).unwrap();
    let elf = kernel::extract_vmlinux(&image).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit");
    assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 0x3e, "x86-64");
    assert!(
        elf.len() > 4 * image.len() / 2,
        "decompressed is larger than the bzImage"
    );
}

#[tokio::test]
async fn firecracker_boots_when_installed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = VmConfig::new(common::node("fc"), dir.path().join("state"));
    cfg.vmm = VmmChoice::Firecracker;
    cfg.firecracker = std::env::var_os("NUNET_FIRECRACKER").map(Into::into);
    let ex = VmExecutor::new(cfg).await;
    if !ex.status().available {
        // Visible in the test output (see .config/nextest.toml): the reason for the skip.
        println!("SKIPPED firecracker boot test: {}", ex.status().detail);
        return;
    }
    assert!(matches!(ex.backend(), Some(Backend::Firecracker { .. })));
    let vmlinux = dir.path().join("vmlinux");
    let image = std::fs::read(common::cloud_kernel()).unwrap();
    std::fs::write(&vmlinux, kernel::extract_vmlinux(&image).unwrap()).unwrap();
    let mut s = vm_spec(
        "fc-1",
        dir.path(),
        "#!/bin/busybox sh\n/bin/busybox echo NUNET-FC-MARKER\n/bin/busybox reboot -f\n",
    );
    if let Workload::Vm(vm) = &mut s.workload {
        vm.kernel = vmlinux;
    }
    ex.start(&s).await.unwrap();
    // Nested KVM is slow on the machines we know: allow minutes.
    let exit = tokio::time::timeout(Duration::from_secs(600), ex.wait(&s.id))
        .await
        .unwrap()
        .unwrap();
    let console = logs::collect(ex.logs(&s.id, LogOptions::default()).await.unwrap())
        .await
        .unwrap();
    let console = String::from_utf8_lossy(&console);
    assert!(console.contains("NUNET-FC-MARKER"), "{console}");
    assert_eq!(exit.code, Some(0), "{exit:?}");
    ex.remove(&s.id).await.unwrap();
}

/// A guest that never hands over to its init (here: its console is on a port nobody reads,
/// which from outside looks exactly like a kernel hung at boot) is killed by the boot
/// watchdog and reported failed, instead of counting as running forever.
#[tokio::test]
async fn the_boot_watchdog_fails_a_guest_that_never_reaches_init() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = VmConfig::new(common::node("vm-hang"), dir.path().join("state"));
    cfg.vmm = VmmChoice::Qemu;
    cfg.boot_timeout = Duration::from_secs(3);
    let ex = VmExecutor::new(cfg).await;
    if !ex.status().available {
        common::missing("qemu-system-x86_64");
    }
    let mut s = vm_spec(
        "hang-1",
        dir.path(),
        "#!/bin/busybox sh\n/bin/busybox sleep 600\n",
    );
    if let Workload::Vm(vm) = &mut s.workload {
        vm.kernel_args = "console=ttyS1".into();
    }
    ex.start(&s).await.unwrap();
    let exit = tokio::time::timeout(BOOT, ex.wait(&s.id))
        .await
        .expect("the watchdog did not end the VM")
        .unwrap();
    match &exit.reason {
        ExitReason::Failed(why) => assert!(why.contains("boot timeout"), "{why}"),
        other => panic!("expected a boot-timeout failure, got {other:?}"),
    }
    ex.remove(&s.id).await.unwrap();

    // Arguments that hide the hand-off line are refused while the watchdog is on.
    let mut quiet = vm_spec("quiet-1", dir.path(), "#!/bin/busybox sh\n");
    if let Workload::Vm(vm) = &mut quiet.workload {
        vm.kernel_args = "quiet".into();
    }
    let e = ex.start(&quiet).await.unwrap_err();
    assert!(e.to_string().contains("quiet"), "{e}");
}

/// The guest's root filesystem is a private copy in the VM's state directory: the file the
/// spec names is never handed to the VMM, so a guest cannot write to it.
#[tokio::test]
async fn the_guest_gets_a_private_copy_of_its_root_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ex = qemu_executor(&common::node("vm-rootfs"), &state).await;
    let image = dir.path().join("shared-root.img");
    std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
    let mut s = vm_spec(
        "rootfs-1",
        dir.path(),
        "#!/bin/busybox sh\n/bin/busybox sleep 600\n",
    );
    if let Workload::Vm(vm) = &mut s.workload {
        vm.rootfs = Some(image.clone());
    }
    let info = ex.start(&s).await.unwrap();
    let pid: u32 = info
        .detail
        .split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|p| p.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {:?}", info.detail));
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    let copy = state.join("rootfs-1").join("rootfs.img");
    assert!(cmdline.contains(copy.to_str().unwrap()), "{cmdline}");
    assert!(!cmdline.contains(image.to_str().unwrap()), "{cmdline}");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&image).unwrap()
    );
    ex.stop(&s.id, Duration::from_secs(1)).await.unwrap();
    ex.remove(&s.id).await.unwrap();
    assert!(!copy.exists(), "the copy goes with the VM");
}
