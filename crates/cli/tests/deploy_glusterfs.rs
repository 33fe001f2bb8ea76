//! A GlusterFS volume end to end on the namespace devnet: a real GlusterFS server (Debian's
//! `glusterd`, a brick on this disk) runs in node-3's network namespace; a writer on one
//! provider and a reader on another mount the volume through the FUSE client their provider
//! mounts; what the writer writes, the reader reads, also after the writer is restarted; the
//! reader's read-only mount refuses writes; the ensemble's shutdown unmounts the volume on
//! both providers and leaves the data on the server.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deploy_support::Containers;
use netns_support::*;

/// `glusterd` in a namespace, with its state, logs and sockets on private tmpfs mounts (its
/// own mount namespace, from `ip netns exec`), so it meets no other glusterd of the host.
struct GlusterServer {
    glusterd: Child,
    volume: String,
}

impl GlusterServer {
    fn start(ns: &str, ip: &str, volume: &str, brick: &Path) -> GlusterServer {
        let found = Command::new("sh")
            .args(["-c", "command -v glusterd && command -v mount.glusterfs"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "this test needs glusterd and mount.glusterfs (Debian's glusterfs-server and glusterfs-client; .ci/install-runtimes.sh installs them)"
        );
        let glusterd = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs /var/lib/glusterd && mount -t tmpfs tmpfs /var/log/glusterfs \
                 && mount -t tmpfs tmpfs /run && exec glusterd -N",
            )
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let server = GlusterServer {
            glusterd,
            volume: volume.to_string(),
        };
        let brick = format!("{ip}:{}", brick.display());
        wait_for("glusterd answers", Duration::from_secs(30), |seen| {
            let (ok, out) = server.cli(&["volume", "list"]);
            *seen = out;
            ok.then_some(())
        });
        let (ok, out) = server.cli(&["volume", "create", volume, &brick, "force"]);
        assert!(ok, "volume create: {out}");
        let (ok, out) = server.cli(&["volume", "start", volume]);
        assert!(ok, "volume start: {out}");
        server
    }

    /// The `gluster` CLI in glusterd's namespaces (it finds glusterd's socket there).
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let o = Command::new("nsenter")
            .args([
                "--target",
                &self.glusterd.id().to_string(),
                "--mount",
                "--net",
            ])
            .args(["gluster", "--mode=script"])
            .args(args)
            .output()
            .unwrap();
        (o.status.success(), deploy_support::text(&o))
    }
}

impl Drop for GlusterServer {
    fn drop(&mut self) {
        // The brick process names the volume on its command line.
        let _ = Command::new("pkill")
            .args(["-f", "--", &format!("--volfile-id {}\\.", self.volume)])
            .status();
        let _ = self.glusterd.kill();
        let _ = self.glusterd.wait();
    }
}

const ENSEMBLE: &str = r#"version: V1
allocations:
  writer:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.1}, ram: {size: 64MiB}, disk: {size: 16MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sh, -c, "echo written-$(date +%s%N) >> /shared/log; exec sleep 3600"]
    failure_recovery: one_for_one
    volume:
      - {type: glusterfs, servers: [SERVER], name: VOLUME, mount_destination: /shared}
  reader:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.1}, ram: {size: 64MiB}, disk: {size: 16MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "3600"]
    volume:
      - {type: glusterfs, servers: [SERVER], name: VOLUME, mount_destination: /shared, read_only: true}
nodes:
  a:
    allocations: [writer]
    peer: PEER2
  b:
    allocations: [reader]
    peer: PEER3
"#;

#[test]
fn a_glusterfs_volume_is_shared_between_providers_and_survives_a_restart() {
    let dn = NsDevnet::up(3);
    dn.onboard_all();
    let bricks = tempfile::tempdir().unwrap();
    let volume = format!("nt{}", std::process::id());
    let ip = dn.lan(3);
    let server = GlusterServer::start(&dn.netns[2], &ip, &volume, &bricks.path().join("b"));

    let yaml = ENSEMBLE
        .replace("SERVER", &ip)
        .replace("VOLUME", &volume)
        .replace("PEER2", &dn.peer(2))
        .replace("PEER3", &dn.peer(3));
    let id = dn.deploy(&yaml, "gluster.yaml");
    let _containers = Containers(id.clone());
    let lines = |c: &str| exec(c, &["cat", "/shared/log"]).1;

    // What the writer on node-2 wrote, the reader on node-3 reads.
    let reader = container(&id, "reader");
    wait_for(
        "the reader reads the writer's line",
        Duration::from_secs(20),
        |seen| {
            *seen = lines(&reader);
            (seen.lines().filter(|l| l.starts_with("written-")).count() == 1).then_some(())
        },
    );
    let (wrote, out) = exec(&reader, &["sh", "-c", "echo x > /shared/from-reader"]);
    assert!(!wrote, "the read-only mount took a write: {out}");

    // The writer is killed and restarted in place: the volume keeps what it wrote.
    let writer = container(&id, "writer");
    assert!(
        Command::new("docker")
            .args(["kill", &writer])
            .status()
            .unwrap()
            .success()
    );
    wait_for(
        "the restarted writer's line",
        Duration::from_secs(40),
        |seen| {
            *seen = lines(&reader);
            (seen.lines().filter(|l| l.starts_with("written-")).count() == 2).then_some(())
        },
    );
    // The data is on the server's brick.
    let on_brick = std::fs::read_to_string(bricks.path().join("b/log")).unwrap();
    assert_eq!(on_brick.lines().count(), 2, "{on_brick}");

    // The ensemble goes: both providers unmount the volume; the data stays on the server.
    dn.shutdown_clean(&id);
    wait_for("volumes unmounted", Duration::from_secs(20), |seen| {
        let left: Vec<_> = deploy_support::mounts_under(&dn.dir)
            .into_iter()
            .filter(|(_, fstype)| fstype == "fuse.glusterfs")
            .collect();
        *seen = format!("{left:?}");
        left.is_empty().then_some(())
    });
    let (ok, info) = server.cli(&["volume", "info", &volume]);
    assert!(ok && info.contains("Started"), "{info}");
    assert_eq!(
        std::fs::read_to_string(bricks.path().join("b/log"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}
