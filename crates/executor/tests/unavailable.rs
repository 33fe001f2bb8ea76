//! Executors whose runtime is missing say so in their status and fail fast with a clear error.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nunet_executor::vm::VmmChoice;
use nunet_executor::{
    DockerConfig, DockerExecutor, ExecutionSpec, Executor, ExecutorError, ExecutorKind, LogOptions,
    VmConfig, VmExecutor, VmWorkload, Workload,
};

fn assert_unavailable(err: ExecutorError, kind: ExecutorKind, mention: &str) {
    let text = err.to_string();
    assert!(
        matches!(err, ExecutorError::Unavailable { kind: k, .. } if k == kind),
        "{text}"
    );
    assert!(
        text.contains("unavailable") && text.contains(mention),
        "{text}"
    );
}

#[tokio::test]
async fn docker_without_dockerd() {
    let t = Instant::now();
    let mut cfg = DockerConfig::new("n");
    cfg.socket = Some("/nonexistent/docker.sock".into());
    cfg.timeout = Duration::from_secs(2);
    let ex = DockerExecutor::connect(cfg).await;
    let st = ex.status();
    assert!(!st.available);
    assert!(
        st.detail.contains("/nonexistent/docker.sock"),
        "{}",
        st.detail
    );
    let spec = ExecutionSpec::new(
        "x",
        Workload::Container {
            image: "busybox".into(),
            working_dir: None,
            user: None,
        },
    );
    assert_unavailable(
        ex.start(&spec).await.unwrap_err(),
        ExecutorKind::Docker,
        "docker.sock",
    );
    assert_unavailable(
        ex.list().await.unwrap_err(),
        ExecutorKind::Docker,
        "docker.sock",
    );
    assert!(ex.logs("x", LogOptions::default()).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn vm_without_a_vmm() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = VmConfig::new("n", dir.path());
    cfg.vmm = VmmChoice::Firecracker;
    cfg.firecracker = Some("/nonexistent/firecracker".into());
    // The configured binary does not exist (PATH is not consulted for a configured one).
    let ex = VmExecutor::new(cfg).await;
    let st = ex.status();
    assert_eq!(st.kind, ExecutorKind::Firecracker);
    assert!(!st.available);
    assert!(
        st.detail.contains("/nonexistent/firecracker"),
        "{}",
        st.detail
    );
    let spec = ExecutionSpec::new(
        "x",
        Workload::Vm(VmWorkload {
            kernel: "/boot/none".into(),
            initrd: None,
            rootfs: None,
            kernel_args: String::new(),
            disks: Vec::new(),
        }),
    );
    assert_unavailable(
        ex.start(&spec).await.unwrap_err(),
        ExecutorKind::Firecracker,
        "firecracker",
    );
    assert_unavailable(
        ex.wait("x").await.unwrap_err(),
        ExecutorKind::Firecracker,
        "firecracker",
    );

    let mut cfg = VmConfig::new("n", dir.path());
    cfg.vmm = VmmChoice::Qemu;
    cfg.qemu = Some("/nonexistent/qemu-system-x86_64".into());
    let ex = VmExecutor::new(cfg).await;
    assert!(!ex.status().available, "{:?}", ex.status());
    assert_unavailable(ex.list().await.unwrap_err(), ExecutorKind::Qemu, "qemu");
}
