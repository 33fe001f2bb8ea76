//! Network sandboxes against the real dockerd: the imported pause image, the sandbox's own
//! network namespace, a busybox workload joined to it, and a resolv.conf bind mount.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{IMAGE, node};
use nunet_executor::sandbox::{sandbox_container_name, sandbox_image};
use nunet_executor::{
    DockerConfig, DockerExecutor, ExecutionSpec, ExecutionState, Executor, ExecutorError,
    LABEL_SANDBOX, LogOptions, Mount, Workload, logs,
};

async fn executor(name: &str) -> DockerExecutor {
    let ex = DockerExecutor::connect(DockerConfig::new(node(name))).await;
    if !ex.status().available {
        common::missing(&format!("dockerd ({})", ex.status().detail));
    }
    ex
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Removes the named containers when the test ends, passed or not.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
    }
}

fn tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| common::missing(&format!("{:?} ({e})", cmd.get_program())));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Interface names in the network namespace of `pid`.
fn links_of(pid: u32) -> Vec<String> {
    let out =
        tool(Command::new("nsenter").args(["-t", &pid.to_string(), "-n", "ip", "-o", "link"]));
    out.lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect()
}

fn netns(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .display()
        .to_string()
}

fn running(container: &str) -> bool {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

#[tokio::test]
async fn a_sandbox_owns_an_empty_network_namespace_and_ignores_sigterm() {
    let ex = executor("sb-empty").await;
    let name = unique("empty");
    let _guard = Cleanup(vec![sandbox_container_name(ex.tag(), &name)]);
    let labels = BTreeMap::from([("allocation".to_string(), "a1".to_string())]);
    let sb = ex.start_sandbox(&name, labels).await.unwrap();
    assert!(sb.pid > 1, "{sb:?}");
    assert_eq!(sb.name, sandbox_container_name(ex.tag(), &name));
    assert_eq!(sb.labels.get(LABEL_SANDBOX).map(String::as_str), Some("1"));
    assert_eq!(
        sb.labels.get("nunet.allocation").map(String::as_str),
        Some("a1")
    );
    assert_ne!(netns(sb.pid), netns(std::process::id()));
    assert_eq!(links_of(sb.pid), vec!["lo".to_string()]);

    // The image is the imported pause binary, nothing else.
    let inspect = tool(Command::new("docker").args([
        "image",
        "inspect",
        "-f",
        "{{json .Config.Cmd}} {{.Size}}",
        &sandbox_image(),
    ]));
    assert!(inspect.starts_with(r#"["/pause"]"#), "{inspect}");
    let size: u64 = inspect.split_whitespace().last().unwrap().parse().unwrap();
    assert!(size < 4096, "image is {size} bytes");

    // PID 1 of the sandbox ignores SIGTERM from the host; only a forced remove ends it.
    tool(Command::new("kill").args(["-TERM", &sb.pid.to_string()]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(running(&sb.name), "the sandbox died on SIGTERM");

    // A second sandbox of the same name is refused.
    let again = ex.start_sandbox(&name, BTreeMap::new()).await;
    assert!(
        matches!(again, Err(ExecutorError::AlreadyExists(_))),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_workload_joins_the_sandbox_network_and_reads_the_mounted_resolv_conf() {
    let ex = executor("sb-join").await;
    let name = unique("join");
    let mut spec = ExecutionSpec::new(
        unique("sb-workload"),
        Workload::Container {
            image: IMAGE.into(),
            working_dir: None,
            user: None,
        },
    );
    let _guard = Cleanup(vec![
        sandbox_container_name(ex.tag(), &name),
        format!("nunet-{}-{}", ex.tag(), spec.id),
    ]);
    let sb = ex.start_sandbox(&name, BTreeMap::new()).await.unwrap();
    // What the subnet code will do: configure the namespace from the host, by PID. (A veth
    // pair with both ends inside: this kernel has no dummy driver, and nothing is left on
    // the host when the namespace goes.)
    let pid = sb.pid.to_string();
    tool(Command::new("nsenter").args([
        "-t", &pid, "-n", "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]));
    tool(Command::new("nsenter").args([
        "-t",
        &pid,
        "-n",
        "ip",
        "addr",
        "add",
        "10.42.7.2/24",
        "dev",
        "d0",
    ]));
    tool(Command::new("nsenter").args(["-t", &pid, "-n", "ip", "link", "set", "d0", "up"]));

    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.42.7.1\nsearch internal\noptions ndots:1\n",
    )
    .unwrap();
    spec.network = sb.network();
    spec.mounts.push(Mount {
        source: resolv.clone(),
        target: "/etc/resolv.conf".into(),
        read_only: true,
    });
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        // Runs at once: the address must already be there, with no waiting loop.
        "ip -o addr show d0; ip -o link; cat /etc/resolv.conf; \
         if echo x >> /etc/resolv.conf 2>/dev/null; then echo WRITABLE; else echo READONLY; fi"
            .into(),
    ];
    ex.start(&spec).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), ex.wait(&spec.id))
        .await
        .unwrap()
        .unwrap();
    let out = logs::collect(ex.logs(&spec.id, LogOptions::default()).await.unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(status.code, Some(0), "{text}");
    assert!(text.contains("inet 10.42.7.2/24"), "{text}");
    assert!(text.contains(": d0@d1:"), "{text}");
    assert!(
        !text.contains("eth0"),
        "the workload got a network of its own: {text}"
    );
    assert!(
        text.contains("nameserver 10.42.7.1\nsearch internal\n"),
        "{text}"
    );
    assert!(text.contains("READONLY"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&resolv).unwrap(),
        "nameserver 10.42.7.1\nsearch internal\noptions ndots:1\n"
    );

    // The sandbox outlives the workload, with its namespace intact.
    assert!(matches!(
        ex.inspect(&spec.id).await.unwrap().state,
        ExecutionState::Exited(_)
    ));
    assert!(running(&sb.name));
    assert!(links_of(sb.pid).contains(&"d0".to_string()));
}

#[tokio::test]
async fn sandboxes_are_listed_per_node_and_removed_idempotently() {
    let ex = executor("sb-list").await;
    let other = executor("sb-list-other").await;
    let (a, b) = (unique("list-a"), unique("list-b"));
    let _guard = Cleanup(vec![
        sandbox_container_name(ex.tag(), &a),
        sandbox_container_name(other.tag(), &b),
    ]);
    let sa = ex.start_sandbox(&a, BTreeMap::new()).await.unwrap();
    let sb = other.start_sandbox(&b, BTreeMap::new()).await.unwrap();

    let mine = ex.list_sandboxes().await.unwrap();
    assert_eq!(
        mine.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        vec![sa.name.clone()]
    );
    assert_eq!(mine[0].pid, sa.pid);
    // Sandboxes are not executions.
    assert!(ex.list().await.unwrap().is_empty());

    // Orphan cleanup as a restarted node does it: remove what the list shows.
    for s in &mine {
        ex.remove_sandbox(&s.name).await.unwrap();
    }
    assert!(ex.list_sandboxes().await.unwrap().is_empty());
    assert!(!std::path::Path::new(&format!("/proc/{}", sa.pid)).exists() || !running(&sa.name));
    // Removing again, by either name, is fine.
    ex.remove_sandbox(&a).await.unwrap();
    ex.remove_sandbox(&sa.name).await.unwrap();
    // The other node's sandbox was left alone.
    assert!(running(&sb.name));
    other.remove_sandbox(&b).await.unwrap();
    assert!(other.list_sandboxes().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_sandbox_names_are_refused() {
    let ex = executor("sb-bad").await;
    for n in ["", "-x", "a/b", "a b"] {
        assert!(matches!(
            ex.start_sandbox(n, BTreeMap::new()).await,
            Err(ExecutorError::InvalidSpec(_))
        ));
    }
}

fn sandbox_image_id() -> String {
    tool(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &sandbox_image()]))
        .trim()
        .to_string()
}

/// Several daemons sharing one dockerd may load the image while others start sandboxes
/// from it: every load gives the same image, so no start fails and no copy is left over.
#[tokio::test]
async fn concurrent_loads_give_one_image_and_never_break_a_start() {
    let ex = executor("sb-load").await;
    ex.ensure_sandbox_image().await.unwrap();
    let before = sandbox_image_id();
    let names: Vec<String> = (0..4).map(|i| unique(&format!("load-{i}"))).collect();
    let _guard = Cleanup(
        names
            .iter()
            .map(|n| sandbox_container_name(ex.tag(), n))
            .collect(),
    );
    let loads = (0..4).map(|_| ex.load_sandbox_image());
    let starts = names.iter().map(|n| ex.start_sandbox(n, BTreeMap::new()));
    let (loaded, started) = tokio::join!(
        futures::future::join_all(loads),
        futures::future::join_all(starts)
    );
    for r in loaded {
        r.unwrap();
    }
    for s in started {
        assert!(s.unwrap().pid > 0);
    }
    assert_eq!(sandbox_image_id(), before);
    let images = tool(Command::new("docker").args([
        "images",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={LABEL_SANDBOX}=1"),
    ]));
    let ids: std::collections::BTreeSet<&str> = images.lines().collect();
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), vec![before.as_str()]);
    for n in &names {
        ex.remove_sandbox(n).await.unwrap();
    }
}
