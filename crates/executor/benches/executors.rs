//! Executor start-up costs against the same runtime driven by hand, measured in one run:
//! Docker `echo` start→exit vs `docker run --rm`, QEMU microvm boot→marker vs the same
//! `qemu-system-x86_64` command line. Prints `name: value unit (baseline: value, ratio: x)`.
//! `BENCH_RUNS` sets the repetitions (median reported).
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nunet_executor::vm::qemu::{self, QemuLaunch};
use nunet_executor::vm::{Backend, VmmChoice};
use nunet_executor::{
    DockerConfig, DockerExecutor, ExecutionSpec, Executor, LogOptions, NetworkAttachment, VmConfig,
    VmExecutor, VmWorkload, Workload,
};

const IMAGE: &str = "nunet-test/busybox:latest";
const MARKER: &str = "NUNET-BENCH-MARKER";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(name: &str, value: Duration, baseline: Duration, target: &str) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: {:.1} ms (baseline: {:.1} ms, ratio: {:.2}x) [target: {target}]",
        ms(value),
        ms(baseline),
        ms(value) / ms(baseline)
    );
}

async fn docker(runs: usize) {
    let ex = DockerExecutor::connect(DockerConfig::new("bench-node")).await;
    if !ex.status().available {
        println!(
            "docker_echo_start_to_exit: unavailable ({})",
            ex.status().detail
        );
        return;
    }
    let mut ours = Vec::new();
    let mut cli = Vec::new();
    for i in 0..runs + 1 {
        let mut s = ExecutionSpec::new(
            format!("bench-echo-{}-{i}", std::process::id()),
            Workload::Container {
                image: IMAGE.into(),
                working_dir: None,
                user: None,
            },
        );
        s.command = vec!["echo".into(), "hi".into()];
        let t = Instant::now();
        ex.start(&s).await.unwrap();
        let exit = ex.wait(&s.id).await.unwrap();
        ex.remove(&s.id).await.unwrap();
        let ours_t = t.elapsed();
        assert!(exit.success());
        let t = Instant::now();
        let out = Command::new("docker")
            .args(["run", "--rm", IMAGE, "echo", "hi"])
            .output()
            .unwrap();
        let cli_t = t.elapsed();
        assert!(out.status.success());
        if i > 0 {
            // the first round warms caches for both
            ours.push(ours_t);
            cli.push(cli_t);
        }
    }
    report(
        "docker_echo_start_to_exit",
        median(ours),
        median(cli),
        "<= 1.0x docker run --rm",
    );
}

fn cloud_kernel() -> Option<PathBuf> {
    let mut k: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.to_string_lossy().ends_with("-cloud-amd64") && p.to_string_lossy().contains("vmlinuz")
        })
        .collect();
    k.sort();
    k.pop()
}

/// Uncompressed newc cpio with /bin/busybox and an /init that prints the marker and reboots.
fn initramfs(dir: &Path) -> PathBuf {
    let mut out = Vec::new();
    let mut entry = |ino: u32, name: &str, mode: u32, data: &[u8]| {
        let h = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    entry(1, "bin", 0o040755, &[]);
    entry(
        2,
        "bin/busybox",
        0o100755,
        &std::fs::read("/bin/busybox").unwrap(),
    );
    let init = format!("#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n/bin/busybox reboot -f\n");
    entry(3, "init", 0o100755, init.as_bytes());
    entry(0, "TRAILER!!!", 0, &[]);
    let p = dir.join("initramfs.cpio");
    std::fs::write(&p, out).unwrap();
    p
}

async fn vm(runs: usize) {
    let dir = std::env::temp_dir().join(format!("nunet-bench-vm-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut cfg = VmConfig::new("bench-node", dir.join("state"));
    cfg.vmm = VmmChoice::Qemu;
    let ex = VmExecutor::new(cfg).await;
    let (Some(kernel), Some(Backend::Qemu { binary, accel })) =
        (cloud_kernel(), ex.backend().cloned())
    else {
        println!(
            "qemu_microvm_boot_to_marker: unavailable ({})",
            ex.status().detail
        );
        return;
    };
    let vm = VmWorkload {
        kernel,
        initrd: Some(initramfs(&dir)),
        rootfs: None,
        kernel_args: "quiet".into(),
        disks: Vec::new(),
    };
    let mut ours = Vec::new();
    let mut hand = Vec::new();
    for i in 0..runs {
        let mut s = ExecutionSpec::new(format!("bench-vm-{i}"), Workload::Vm(vm.clone()));
        s.network = NetworkAttachment::None;
        let t = Instant::now();
        ex.start(&s).await.unwrap();
        let mut logs = ex
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
        while let Some(c) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&c.unwrap().data));
            if text.contains(MARKER) {
                break;
            }
        }
        ours.push(t.elapsed());
        ex.wait(&s.id).await.unwrap();
        ex.remove(&s.id).await.unwrap();

        // The same command line, launched and read by hand.
        let qmp = dir.join(format!("hand-{i}.sock"));
        let args = qemu::qemu_args(&QemuLaunch {
            vm: &vm,
            accel,
            vcpus: 1,
            mem_mib: 256,
            qmp: &qmp,
            network: &NetworkAttachment::None,
            ports: &[],
            mac: "06:00:00:00:00:01",
        });
        let t = Instant::now();
        let mut child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reader = BufReader::new(child.stdout.take().unwrap());
        for line in reader.lines() {
            if line.map(|l| l.contains(MARKER)).unwrap_or(true) {
                break;
            }
        }
        hand.push(t.elapsed());
        let _ = child.wait();
        let _ = std::fs::remove_file(&qmp);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let name = format!("qemu_microvm_boot_to_marker_{}", accel.as_str());
    report(&name, median(ours), median(hand), "<= 1.1x qemu by hand");
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    docker(runs).await;
    vm(runs).await;
}
