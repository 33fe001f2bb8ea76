//! A microVM allocation on the ensemble subnet: `nunet devnet up --netns` starts two daemons in
//! two network namespaces; an ensemble puts a busybox `httpd` container on one and an
//! `executor: firecracker` task (Debian's cloud kernel + a busybox initramfs built here, run by
//! the provider's VM executor) on the other. The VM's init configures `eth0` from the kernel
//! `ip=` argument the provider added, resolves `web.internal` through the ensemble's DNS and
//! pings it; its console is the allocation's log. Afterwards no TAP, rule or firewall chain of
//! ours is left. Needs root, iproute2, iptables, dockerd with `nunet-test/busybox:latest`,
//! qemu-system-x86_64, busybox-static and a Debian cloud kernel (`.ci/install-runtimes.sh`).
//! Also: a microVM's named volume as a disk, and a microVM task's input and output as disks
//! between two containers.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use netns_support::NsDevnet;

fn missing(what: &str) -> ! {
    panic!("{what} is missing on this machine: run `sudo .ci/install-runtimes.sh` (CI always does)")
}

/// The newest Debian cloud kernel in /boot and its modules directory.
fn cloud_kernel() -> (PathBuf, PathBuf) {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64")
    });
    found.sort();
    let k = found
        .pop()
        .unwrap_or_else(|| missing("a Debian cloud kernel (/boot/vmlinuz-*-cloud-amd64)"));
    let version = k.file_name().unwrap().to_str().unwrap()["vmlinuz-".len()..].to_string();
    (k, Path::new("/lib/modules").join(version))
}

fn find_module(dir: &Path, file: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_module(&p, file) {
                return Some(f);
            }
        } else if p.file_name().and_then(|n| n.to_str()) == Some(file) {
            return Some(p);
        }
    }
    None
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let fields = [ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0];
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    header.push_str(&format!("{:08x}{:08x}", name.len() + 1, 0));
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Virtio modules the guest needs when the kernel has them as modules (Debian's cloud kernel).
const MODULES: [&str; 6] = [
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "failover",
    "net_failover",
    "virtio_net",
];

/// The guest's /init: NIC up from the `ip=<ip>::<gw>:<mask>::eth0:off:<dns>` argument, then
/// resolve and ping `web.internal`, print the outcome, power off.
const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
for m in virtio_ring virtio virtio_mmio failover net_failover virtio_net; do
  [ -f /m/$m.ko ] && $B insmod /m/$m.ko
done
for w in $($B cat /proc/cmdline); do case $w in ip=*) conf=${w#ip=};; esac; done
f() { echo "$conf" | $B cut -d: -f$1; }
IP=$(f 1); GW=$(f 3); MASK=$(f 4); DNS=$(f 8)
PFX=$($B ipcalc -p $IP $MASK | $B cut -d= -f2)
$B ip link set lo up
$B ip link set eth0 mtu 1420 up
$B ip addr add $IP/$PFX dev eth0
$B ip route add default via $GW
$B echo "VM-NET ip=$IP/$PFX gw=$GW dns=$DNS"
WEB=$($B nslookup web.internal $DNS | $B awk '/^Address/ {a=$NF} END {print a}')
$B echo "VM-RESOLVED web.internal=$WEB"
$B ping -c 3 -W 5 $WEB
$B echo "VM-PING-RC=$?"
$B reboot -f
"#;

/// Writes the initramfs (busybox, virtio modules, [`INIT`]) and an empty disk image.
fn guest_files(dir: &Path, modules: &Path) -> (PathBuf, PathBuf) {
    guest_files_with(dir, modules, &MODULES, INIT)
}

/// Writes an initramfs (busybox, `wanted` modules where the kernel has them as modules,
/// `init`) and an empty disk image.
fn guest_files_with(dir: &Path, modules: &Path, wanted: &[&str], init: &str) -> (PathBuf, PathBuf) {
    let busybox = std::fs::read("/bin/busybox").unwrap_or_else(|_| missing("busybox-static"));
    let mut out = Vec::new();
    let mut ino = 1;
    for d in ["bin", "dev", "proc", "sys", "tmp", "m"] {
        cpio_entry(&mut out, ino, d, 0o040755, &[]);
        ino += 1;
    }
    cpio_entry(&mut out, ino, "bin/busybox", 0o100755, &busybox);
    ino += 1;
    for m in wanted {
        if let Some(p) = find_module(modules, &format!("{m}.ko")) {
            cpio_entry(
                &mut out,
                ino,
                &format!("m/{m}.ko"),
                0o100644,
                &std::fs::read(p).unwrap(),
            );
            ino += 1;
        }
    }
    cpio_entry(&mut out, ino, "init", 0o100755, init.as_bytes());
    cpio_entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    let (initrd, disk) = (dir.join("initramfs.cpio"), dir.join("disk.img"));
    std::fs::write(&initrd, out).unwrap();
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    (initrd, disk)
}

#[test]
fn a_microvm_reaches_a_container_by_internal_name_across_hosts() {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        missing("qemu-system-x86_64");
    }
    let t0 = Instant::now();
    let (kernel, modules) = cloud_kernel();
    let dn = NsDevnet::up(3);
    let (initrd, disk) = guest_files(&dn.dir, &modules);
    // Providers boot images only from their image roots (the devnet's directory here).
    let kernel = {
        let k = dn.dir.join("vmlinuz");
        std::fs::copy(&kernel, &k).unwrap();
        k
    };
    dn.onboard_all();
    let yaml = format!(
        r#"version: V1
allocations:
  web:
    executor: docker
    type: service
    resources: {{cpu: {{cores: 0.2}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sh, -c, "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 8080 -h /www"]
  vm:
    executor: firecracker
    type: task
    resources: {{cpu: {{cores: 0.5}}, ram: {{size: 256MiB}}, disk: {{size: 50MiB}}}}
    execution:
      type: firecracker
      kernel_image: {}
      initrd: {}
      root_file_system: {}
      kernel_args: nunet.test=1
nodes:
  front:
    allocations: [web]
  guest:
    allocations: [vm]
"#,
        kernel.display(),
        initrd.display(),
        disk.display()
    );
    let f = dn.dir.join("vm.yaml");
    std::fs::write(&f, yaml).unwrap();
    let f = f.to_str().unwrap();
    let v = dn.json(1, &["deploy", "-f", f, "-t", "60s", "--json"]);
    assert_eq!(v["status"], "Running", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let m = dn.deployment_manifest(&id);
    let (front, guest) = (&m["nodes"]["front"]["peer"], &m["nodes"]["guest"]["peer"]);
    assert!(front.is_string() && front != guest, "not on two hosts: {m}");

    // The VM task runs to completion; its console is the allocation's log.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let logs = loop {
        let (code, out) = dn.run(1, &["deployment", "logs", &id, "--allocation", "vm"]);
        if code == 0 && (out.contains("VM-PING-RC=") || Instant::now() > deadline) {
            break out;
        }
        assert!(Instant::now() < deadline, "no VM output in time: {out}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(logs.contains("VM-NET ip=10."), "{logs}");
    let resolved = logs
        .lines()
        .find_map(|l| l.split("VM-RESOLVED web.internal=").nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(
        resolved.starts_with("10."),
        "web.internal not resolved: {logs}"
    );
    assert!(logs.contains(&format!("bytes from {resolved}")), "{logs}");
    assert!(logs.contains("VM-PING-RC=0"), "{logs}");

    let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
    assert_eq!(code, 0, "{out}");
    dn.assert_no_subnet_leftovers();
    assert!(deploy_support::containers_of(&id).is_empty());
    eprintln!("subnet_vm: {:?} in all", t0.elapsed());
}

/// The guest's /init for the volume test: load the block driver, find each
/// `nunet.volume=<serial>:<dest>:<mode>` disk by its serial, mount it, write, sync, report.
const VOLUME_INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_mmio virtio_blk; do
  [ -f /m/$m.ko ] && $B insmod /m/$m.ko
done
$B sleep 1
for w in $($B cat /proc/cmdline); do
  case $w in nunet.volume=*)
    v=${w#nunet.volume=}
    SERIAL=$(echo $v | $B cut -d: -f1); DEST=$(echo $v | $B cut -d: -f2); MODE=$(echo $v | $B cut -d: -f3)
    DEV=
    for d in /sys/block/vd*; do
      [ "$($B cat $d/serial 2>/dev/null)" = "$SERIAL" ] && DEV=/dev/${d##*/}
    done
    $B mkdir -p $DEST
    $B mount -t ext4 -o $MODE $DEV $DEST && $B echo "VM-VOL-MOUNTED $SERIAL $DEV $DEST $MODE"
    $B echo "VM-VOL-SIZE $($B df -k $DEST | $B tail -1 | $B awk '{print $2}')"
    $B echo "written-in-the-vm" > $DEST/hello && $B sync && $B echo "VM-VOL-WROTE $DEST"
  ;; esac
done
$B echo VM-VOL-DONE
while true; do $B sleep 1; done
"#;

/// Modules for [`VOLUME_INIT`].
const BLOCK_MODULES: [&str; 4] = ["virtio_ring", "virtio", "virtio_mmio", "virtio_blk"];

/// A 2-node namespace devnet, onboarded, and a guest with the block modules and `init`:
/// the devnet, the kernel, the initramfs and an empty root disk image.
fn block_vm_devnet(init: &str) -> (NsDevnet, PathBuf, PathBuf, PathBuf) {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        missing("qemu-system-x86_64");
    }
    let (kernel, modules) = cloud_kernel();
    let dn = NsDevnet::up(2);
    let (initrd, disk) = guest_files_with(&dn.dir, &modules, &BLOCK_MODULES, init);
    let k = dn.dir.join("vmlinuz");
    std::fs::copy(&kernel, &k).unwrap();
    dn.onboard_all();
    (dn, k, initrd, disk)
}

#[test]
fn a_microvm_gets_its_named_volume_as_a_disk_it_mounts() {
    let (dn, kernel, initrd, disk) = block_vm_devnet(VOLUME_INIT);
    let yaml = format!(
        r#"version: V1
allocations:
  vm:
    executor: firecracker
    type: service
    resources: {{cpu: {{cores: 0.5}}, ram: {{size: 256MiB}}, disk: {{size: 24MiB}}}}
    execution:
      type: firecracker
      kernel_image: {}
      initrd: {}
      root_file_system: {}
    volume:
      - {{type: local, src: store, mount_destination: /srv/store}}
nodes:
  guest:
    allocations: [vm]
    peer: {}
"#,
        kernel.display(),
        initrd.display(),
        disk.display(),
        dn.peer(2)
    );
    let f = dn.dir.join("vm-volume.yaml");
    std::fs::write(&f, yaml).unwrap();
    let v = dn.json(
        1,
        &["deploy", "-f", f.to_str().unwrap(), "-t", "60s", "--json"],
    );
    assert_eq!(v["status"], "Running", "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    let deadline = Instant::now() + std::time::Duration::from_secs(90);
    let logs = loop {
        let (code, out) = dn.run(1, &["deployment", "logs", &id, "--allocation", "vm"]);
        if code == 0 && out.contains("VM-VOL-DONE") {
            break out;
        }
        assert!(Instant::now() < deadline, "no VM output in time: {out}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    // The guest found the disk by its serial and mounted it where the ensemble says.
    assert!(
        logs.contains("VM-VOL-MOUNTED nunet-vol-0 /dev/vd") && logs.contains(" /srv/store rw"),
        "{logs}"
    );
    assert!(logs.contains("VM-VOL-WROTE /srv/store"), "{logs}");
    // Its filesystem is the allocation's disk (24 MiB, ext4 overhead aside).
    let kib: u64 = logs
        .lines()
        .find_map(|l| l.split("VM-VOL-SIZE ").nth(1))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size: {logs}"));
    assert!((16_000..=24_576).contains(&kib), "{kib} KiB: {logs}");
    // What the guest wrote is in the provider's named volume image.
    let volumes = dn.dir.join("node-2/data/volumes");
    let image = std::fs::read_dir(&volumes)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("images/store"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no image under {}", volumes.display()));
    let o = Command::new("debugfs")
        .args(["-R", "cat /hello"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "written-in-the-vm",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
    assert_eq!(code, 0, "{out}");
}

/// The guest's /init for the data test: mount every `nunet.volume=` disk, read the input,
/// write the output (a file, a directory, a symlink that must not come out), unmount, power
/// off.
const DATA_INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_mmio virtio_blk; do
  [ -f /m/$m.ko ] && $B insmod /m/$m.ko
done
$B sleep 1
for w in $($B cat /proc/cmdline); do
  case $w in nunet.volume=*)
    v=${w#nunet.volume=}
    SERIAL=$(echo $v | $B cut -d: -f1); DEST=$(echo $v | $B cut -d: -f2); MODE=$(echo $v | $B cut -d: -f3)
    for d in /sys/block/vd*; do
      [ "$($B cat $d/serial 2>/dev/null)" = "$SERIAL" ] && DEV=/dev/${d##*/}
    done
    $B mkdir -p $DEST
    $B mount -t ext4 -o $MODE $DEV $DEST && $B echo "VM-DATA-MOUNTED $SERIAL $DEST $MODE"
  ;; esac
done
$B tr a-z A-Z < /srv/in/words.txt > /srv/out/upper.txt
$B mkdir /srv/out/d && $B echo deep > /srv/out/d/file
$B ln -s /etc/passwd /srv/out/link
($B echo x > /srv/in/w) 2>/dev/null && $B echo VM-INPUT-WRITABLE || $B echo VM-INPUT-READ-ONLY
$B sync
$B umount /srv/out
$B echo VM-DATA-DONE
$B reboot -f
"#;

#[test]
fn a_microvm_task_takes_an_input_and_leaves_an_output_as_disks() {
    let (dn, kernel, initrd, disk) = block_vm_devnet(DATA_INIT);
    // A container writes, the VM transforms, another container reads what the VM left.
    let yaml = format!(
        r#"version: V1
allocations:
  produce:
    executor: docker
    type: task
    resources: {{cpu: {{cores: 0.1}}, ram: {{size: 64MiB}}, disk: {{size: 32MiB}}}}
    execution: {{type: docker, image: nunet-test/busybox:latest, cmd: [sh, -c, "echo words from the container > /out/words.txt"]}}
    outputs: [{{name: words, path: /out}}]
  vm:
    executor: firecracker
    type: task
    resources: {{cpu: {{cores: 0.5}}, ram: {{size: 256MiB}}, disk: {{size: 32MiB}}}}
    execution:
      type: firecracker
      kernel_image: {}
      initrd: {}
      root_file_system: {}
    inputs: [{{from: produce/words, path: /srv/in}}]
    outputs: [{{name: upper, path: /srv/out}}]
  check:
    executor: docker
    type: task
    resources: {{cpu: {{cores: 0.1}}, ram: {{size: 64MiB}}, disk: {{size: 32MiB}}}}
    execution: {{type: docker, image: nunet-test/busybox:latest, cmd: [sh, -c, "cat /in/upper.txt /in/d/file; ls -a /in"]}}
    inputs: [{{from: vm/upper, path: /in}}]
nodes:
  front:
    allocations: [produce, check]
    peer: {}
  guest:
    allocations: [vm]
    peer: {}
"#,
        kernel.display(),
        initrd.display(),
        disk.display(),
        dn.peer(1),
        dn.peer(2)
    );
    let f = dn.dir.join("vm-data.yaml");
    std::fs::write(&f, yaml).unwrap();
    let v = dn.json(
        1,
        &["deploy", "-f", f.to_str().unwrap(), "-t", "60s", "--json"],
    );
    let id = v["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        if s["status"] != "Running" && s["status"] != "Provisioning" {
            break s;
        }
        assert!(Instant::now() < deadline, "not done in time: {s}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let (_, vm_logs) = dn.run(1, &["deployment", "logs", &id, "--allocation", "vm"]);
    assert_eq!(status["status"], "Completed", "{status}\n{vm_logs}");
    // The input came read-only, the output read-write, each where the ensemble says.
    assert!(
        vm_logs.contains("VM-DATA-MOUNTED nunet-in-0 /srv/in ro")
            && vm_logs.contains("VM-DATA-MOUNTED nunet-out-0 /srv/out rw")
            && vm_logs.contains("VM-INPUT-READ-ONLY"),
        "{vm_logs}"
    );
    // What the VM wrote reached the next container; its symlink and lost+found did not.
    let (code, logs) = dn.run(1, &["deployment", "logs", &id, "--allocation", "check"]);
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("WORDS FROM THE CONTAINER"), "{logs}");
    assert!(logs.contains("deep"), "{logs}");
    assert!(
        !logs.contains("link") && !logs.contains("lost+found"),
        "{logs}"
    );
}
