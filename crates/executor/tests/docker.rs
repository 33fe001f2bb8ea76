//! Docker executor against the real dockerd and the locally imported busybox image.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{IMAGE, node};
use futures::StreamExt;
use nunet_executor::{
    DockerConfig, DockerExecutor, ExecutionSpec, ExecutionState, Executor, ExecutorError,
    ExitReason, LogOptions, LogSource, NetworkAttachment, Resources, Workload, logs,
};

async fn executor(name: &str) -> DockerExecutor {
    let ex = DockerExecutor::connect(DockerConfig::new(node(name))).await;
    if !ex.status().available {
        common::missing(&format!("dockerd ({})", ex.status().detail));
    }
    ex
}

fn spec(id: &str, argv: &[&str]) -> ExecutionSpec {
    let mut s = ExecutionSpec::new(
        format!("{id}-{}", std::process::id()),
        Workload::Container {
            image: IMAGE.into(),
            working_dir: None,
            user: None,
        },
    );
    s.command = argv.iter().map(|a| a.to_string()).collect();
    s
}

#[tokio::test]
async fn runs_streams_logs_and_reports_the_exit_code() {
    let ex = executor("run").await;
    let mut s = spec(
        "run",
        &[
            "sh",
            "-c",
            "echo out-$GREETING; sleep 1; echo err >&2; exit 3",
        ],
    );
    s.env.insert("GREETING".into(), "hello".into());
    s.network = NetworkAttachment::None;
    let info = ex.start(&s).await.unwrap();
    assert!(matches!(
        info.state,
        ExecutionState::Running | ExecutionState::Exited(_)
    ));
    // Follow from the start, opened while the container still runs.
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
    let mut seen = Vec::new();
    while let Some(chunk) = follow.next().await {
        let c = chunk.unwrap();
        seen.push((c.source, String::from_utf8_lossy(&c.data).into_owned()));
    }
    assert!(
        seen.contains(&(LogSource::Stdout, "out-hello\n".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(LogSource::Stderr, "err\n".into())),
        "{seen:?}"
    );
    let exit = ex.wait(&s.id).await.unwrap();
    assert_eq!(exit.code, Some(3));
    assert_eq!(exit.reason, ExitReason::Exited);
    // History without follow after the exit.
    let all = logs::collect(ex.logs(&s.id, LogOptions::default()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&all).matches("out-hello").count(),
        1
    );
    ex.remove(&s.id).await.unwrap();
    assert!(matches!(
        ex.inspect(&s.id).await,
        Err(ExecutorError::NotFound(_))
    ));
}

#[tokio::test]
async fn memory_limit_kills_and_reports_oom() {
    let ex = executor("oom").await;
    let mut s = spec("oom", &["tail", "/dev/zero"]); // buffers an endless line
    s.resources = Resources {
        memory_bytes: 16 << 20,
        ..Default::default()
    };
    s.network = NetworkAttachment::None;
    ex.start(&s).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), ex.wait(&s.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.reason, ExitReason::OutOfMemory, "{exit:?}");
    assert_eq!(exit.code, Some(137));
    ex.remove(&s.id).await.unwrap();
}

#[tokio::test]
async fn cpu_and_memory_limits_reach_the_cgroup() {
    let ex = executor("limits").await;
    let script = "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us; \
                  cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes";
    let mut s = spec("limits", &["sh", "-c", script]);
    s.resources = Resources {
        cpu_cores: 0.5,
        memory_bytes: 64 << 20,
        ..Default::default()
    };
    s.network = NetworkAttachment::None;
    ex.start(&s).await.unwrap();
    assert!(ex.wait(&s.id).await.unwrap().success());
    let out = logs::collect(ex.logs(&s.id, LogOptions::default()).await.unwrap())
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("50000"),
        "CPU quota of half a core (period 100000): {out}"
    );
    assert!(
        out.contains(&(64u64 << 20).to_string()),
        "memory limit: {out}"
    );
    ex.remove(&s.id).await.unwrap();
}

#[tokio::test]
async fn stop_ends_a_running_container_within_the_grace() {
    let ex = executor("stop").await;
    let mut s = spec("stop", &["sleep", "300"]);
    s.network = NetworkAttachment::None;
    ex.start(&s).await.unwrap();
    assert_eq!(
        ex.inspect(&s.id).await.unwrap().state,
        ExecutionState::Running
    );
    let t = Instant::now();
    ex.stop(&s.id, Duration::from_secs(1)).await.unwrap();
    let exit = ex.wait(&s.id).await.unwrap();
    assert_eq!(exit.reason, ExitReason::Stopped);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    ex.remove(&s.id).await.unwrap();
}

#[tokio::test]
async fn a_recreated_executor_adopts_its_containers_by_label() {
    let name = "adopt";
    let mut s = spec(name, &["sleep", "300"]);
    s.labels = BTreeMap::from([("ensemble".to_string(), "ens-1".to_string())]);
    s.network = NetworkAttachment::None;
    {
        let first = executor(name).await;
        first.start(&s).await.unwrap();
    } // the first executor is gone, as after a daemon restart
    let other = executor("someone-else").await;
    assert!(other.list().await.unwrap().iter().all(|i| i.id != s.id));
    let second = executor(name).await;
    let listed = second.list().await.unwrap();
    let mine: Vec<_> = listed.iter().filter(|i| i.id == s.id).collect();
    assert_eq!(mine.len(), 1, "{listed:?}");
    assert_eq!(mine[0].state, ExecutionState::Running);
    assert_eq!(mine[0].labels["nunet.ensemble"], "ens-1");
    assert_eq!(mine[0].labels["nunet.node"], node(name));
    second.stop(&s.id, Duration::from_secs(0)).await.unwrap();
    assert!(matches!(
        second.wait(&s.id).await.unwrap().reason,
        ExitReason::Stopped
    ));
    second.remove(&s.id).await.unwrap();
    assert!(second.list().await.unwrap().iter().all(|i| i.id != s.id));
}

#[tokio::test]
async fn an_image_neither_local_nor_pullable_is_named_in_the_error() {
    let ex = executor("noimage").await;
    let mut s = spec("noimage", &["true"]);
    s.workload = Workload::Container {
        image: "nunet-test/absent-image:0.0.1".into(),
        working_dir: None,
        user: None,
    };
    let t = Instant::now();
    let err = ex.start(&s).await.unwrap_err();
    assert!(matches!(err, ExecutorError::ImageNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("nunet-test/absent-image:0.0.1"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(120));
    assert!(matches!(
        ex.inspect(&s.id).await,
        Err(ExecutorError::NotFound(_))
    ));
}

#[tokio::test]
async fn starting_the_same_id_twice_is_refused() {
    let ex = executor("twice").await;
    let mut s = spec("twice", &["sleep", "30"]);
    s.network = NetworkAttachment::None;
    ex.start(&s).await.unwrap();
    assert!(matches!(
        ex.start(&s).await,
        Err(ExecutorError::AlreadyExists(_))
    ));
    ex.remove(&s.id).await.unwrap();
}

/// The host port Docker published for `guest` (`7000/tcp`) of execution `id`.
fn published_port(id: &str, guest: &str) -> u16 {
    let run = |args: &[&str]| {
        let o = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "docker {args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let label = format!("label={}={id}", nunet_executor::LABEL_EXECUTION);
    let container = run(&["ps", "-q", "--filter", &label]);
    let out = run(&["port", container.trim(), guest]);
    // `0.0.0.0:32768` (and `[::]:32768`), one line per address.
    let line = out.lines().next().unwrap_or_default();
    line.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no published port in {out:?}"))
}

#[tokio::test]
async fn mounts_ports_and_working_dir_reach_the_container() {
    let ex = executor("ports").await;
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("greeting"), "pong from a mount\n").unwrap();
    let mut s = spec("ports", &["sh", "-c", "pwd; nc -l -p 7000 < greeting"]);
    s.workload = Workload::Container {
        image: IMAGE.into(),
        working_dir: Some("/srv".into()),
        user: None,
    };
    s.mounts = vec![nunet_executor::Mount {
        source: host_dir.path().to_path_buf(),
        target: "/srv".into(),
        read_only: true,
    }];
    s.network = NetworkAttachment::Default;
    // Host port 0: Docker binds one itself (a port picked free here could be taken by another
    // process before Docker bound it); `docker port` says which.
    s.ports = vec![nunet_executor::PortMapping {
        host_port: 0,
        guest_port: 7000,
        protocol: nunet_executor::Protocol::Tcp,
    }];
    ex.start(&s).await.unwrap();
    let port = published_port(&s.id, "7000/tcp");
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        use tokio::io::AsyncReadExt;
        if let Ok(mut c) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let mut buf = String::new();
            let _ = c.read_to_string(&mut buf).await;
            if !buf.is_empty() {
                break buf;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no answer on the mapped port {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got, "pong from a mount\n");
    let exit = ex.wait(&s.id).await.unwrap();
    assert!(exit.success(), "{exit:?}");
    let out = logs::collect(ex.logs(&s.id, LogOptions::default()).await.unwrap())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("/srv\n"));
    ex.remove(&s.id).await.unwrap();
}

/// A dockerd that does not answer when the node starts (slow, or started after it) is tried
/// again in the background: the executor becomes available once it answers, without a
/// restart. Here dockerd "appears" as a unix-socket proxy to the real one, opened after the
/// executor reported itself unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerd_that_answers_later_makes_the_executor_available() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("late-docker.sock");
    let mut cfg = DockerConfig::new(node("late"));
    cfg.socket = Some(sock.display().to_string());
    cfg.timeout = Duration::from_secs(2);
    let ex = DockerExecutor::connect(cfg).await;
    assert!(!ex.status().available, "{:?}", ex.status());

    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut real) = tokio::net::UnixStream::connect("/var/run/docker.sock").await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut real).await;
                }
            });
        }
    });
    let t0 = Instant::now();
    while !ex.status().available {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "still unavailable: {:?}",
            ex.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ex.status().detail.contains("dockerd"), "{:?}", ex.status());
    // And it works: the list call goes through the proxy to the real dockerd.
    ex.list().await.unwrap();
}

/// Health checks' two probes: a command run inside the container (output, exit code, a
/// binary the image lacks named as such) and an HTTP GET from inside its network namespace.
#[tokio::test]
async fn exec_and_http_reach_inside_a_running_container() {
    let ex = executor("exec").await;
    let mut s = spec(
        "exec",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo -n fine > /www/health && httpd -f -p 8080 -h /www",
        ],
    );
    s.network = NetworkAttachment::None;
    ex.start(&s).await.unwrap();
    let argv = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let t = Duration::from_secs(10);
    let out = ex
        .exec(
            &s.id,
            &argv(&["sh", "-c", "echo hi; echo oops >&2; exit 4"]),
            t,
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(4));
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("hi\n", "oops\n")
    );
    let missing = ex.exec(&s.id, &argv(&["no-such-binary"]), t).await.unwrap();
    assert!(
        matches!(missing.exit_code, Some(126) | Some(127)),
        "{missing:?}"
    );
    assert!(
        format!("{}{}", missing.stdout, missing.stderr).contains("no-such-binary"),
        "{missing:?}"
    );
    let slow = ex
        .exec(&s.id, &argv(&["sleep", "30"]), Duration::from_millis(500))
        .await;
    assert!(
        matches!(slow, Err(ExecutorError::Timeout { .. })),
        "{slow:?}"
    );
    // No network of its own but loopback: reached only from inside.
    let ns = ex.netns(&s.id).await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match nunet_executor::netprobe::http_get(&ns, 8080, "/health", t).await {
            Ok(a) => break a,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!((answer.status, answer.body.as_str()), (200, "fine"));
    let nf = nunet_executor::netprobe::http_get(&ns, 8080, "/nothing", t)
        .await
        .unwrap();
    assert_eq!(nf.status, 404);
    ex.stop(&s.id, Duration::from_secs(1)).await.unwrap();
    let gone = ex.exec(&s.id, &argv(&["true"]), t).await;
    assert!(gone.is_err(), "{gone:?}");
    ex.remove(&s.id).await.unwrap();
}

/// Two nodes sharing one dockerd (a devnet; a node redeployed to another provider keeps its
/// execution ids) each have their own container for the same execution id, and neither
/// touches the other's. A container from before names carried the node tag is still found
/// when it carries this node's label, and never when it carries another's.
#[tokio::test]
async fn nodes_sharing_a_dockerd_never_touch_each_others_containers() {
    let (a, b) = (executor("share-a").await, executor("share-b").await);
    let mut s = spec("shared-id", &["sleep", "300"]);
    s.network = NetworkAttachment::None;
    a.start(&s).await.unwrap();
    b.start(&s).await.unwrap();
    b.stop(&s.id, Duration::from_secs(0)).await.unwrap();
    b.remove(&s.id).await.unwrap();
    assert_eq!(
        a.inspect(&s.id).await.unwrap().state,
        ExecutionState::Running
    );
    assert!(matches!(
        b.inspect(&s.id).await,
        Err(ExecutorError::NotFound(_))
    ));
    a.remove(&s.id).await.unwrap();

    // A container named the old way (`nunet-<id>`), labelled for node share-a.
    let legacy = format!("legacy-{}", std::process::id());
    let made = std::process::Command::new("docker")
        .args(["run", "-d", "--name", &format!("nunet-{legacy}"), "--label"])
        .arg(format!("nunet.node={}", node("share-a")))
        .args([IMAGE, "sleep", "300"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    assert!(matches!(
        b.inspect(&legacy).await,
        Err(ExecutorError::NotFound(_))
    ));
    assert_eq!(
        a.inspect(&legacy).await.unwrap().state,
        ExecutionState::Running
    );
    a.remove(&legacy).await.unwrap();
    assert!(matches!(
        a.inspect(&legacy).await,
        Err(ExecutorError::NotFound(_))
    ));
}

/// An AMD GPU is handed over as its own device nodes: inside the container `/dev/dri` holds
/// the committed card's nodes and not the other card's, and `/dev/kfd` is there.
#[tokio::test]
async fn an_amd_gpu_container_sees_its_own_card_only() {
    let ex = executor("amd-gpu").await;
    let tmp = tempfile::tempdir().unwrap();
    let dev = tmp.path();
    for rel in [
        "kfd",
        "dri/card0",
        "dri/renderD128",
        "dri/card1",
        "dri/renderD129",
    ] {
        let p = dev.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let ok = std::process::Command::new("mknod")
            .arg(&p)
            .args(["c", "1", "3"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mknod {} (tests run as root, as CI does)", p.display());
    }
    let mut s = spec(
        "amd-gpu",
        &["sh", "-c", "ls /dev/dri; test -c /dev/kfd && echo kfd"],
    );
    s.network = NetworkAttachment::None;
    s.resources.gpus = vec![nunet_executor::GpuDevice {
        vendor: nunet_executor::GpuVendor::Amd,
        id: "pci:0000:c1:00.0".into(),
        nodes: ["kfd", "dri/card1", "dri/renderD129"]
            .iter()
            .map(|r| nunet_executor::DevicePath {
                host: dev.join(r),
                container: format!("/dev/{r}"),
            })
            .collect(),
    }];
    ex.start(&s).await.unwrap();
    let exit = ex.wait(&s.id).await.unwrap();
    let out = logs::collect(ex.logs(&s.id, LogOptions::default()).await.unwrap())
        .await
        .unwrap();
    ex.remove(&s.id).await.unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(String::from_utf8_lossy(&out), "card1\nrenderD129\nkfd\n");
}
