//! A GlusterFS volume end to end on the namespace devnet: a real GlusterFS server (Debian's
//! `glusterd`, a brick on this disk) runs in node-3's network namespace; a writer on one
//! provider and a reader on another mount the volume through the FUSE client their provider
//! mounts; what the writer writes, the reader reads, also after the writer is restarted; the
//! reader's read-only mount refuses writes; the ensemble's shutdown unmounts the volume on
//! both providers and leaves the data on the server.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;
mod netns_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deploy_support::Containers;
use netns_support::*;

/// `glusterd` in a namespace, with its state, logs and sockets on private tmpfs mounts (its
/// own mount namespace, from `ip netns exec`), so it meets no other glusterd of the host.
struct GlusterServer {
    glusterd: Child,
    volume: String,
    socket: Option<std::path::PathBuf>,
}

impl GlusterServer {
    /// glusterd in `ns` with a started plain volume `volume` on `brick`.
    fn start(ns: &str, ip: &str, volume: &str, brick: &Path) -> GlusterServer {
        let server = Self::spawn(ns, volume, None);
        let brick = format!("{ip}:{}", brick.display());
        let (ok, out) = server.cli(&["volume", "create", volume, &brick, "force"]);
        assert!(ok, "volume create: {out}");
        let (ok, out) = server.cli(&["volume", "start", volume]);
        assert!(ok, "volume start: {out}");
        server
    }

    /// glusterd in `ns`, answering its CLI on `socket` when given (where a daemon outside
    /// its mount namespace can reach it); `volume` names the volume whose brick process
    /// goes with it.
    fn spawn(ns: &str, volume: &str, socket: Option<&Path>) -> GlusterServer {
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
                 && mount -t tmpfs tmpfs /run && exec glusterd -N \"$@\"",
            )
            .arg("glusterd")
            .args(socket.map(|s| {
                format!(
                    "--xlator-option=management.glusterd-sockfile={}",
                    s.display()
                )
            }))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let server = GlusterServer {
            glusterd,
            volume: volume.to_string(),
            socket: socket.map(Path::to_path_buf),
        };
        wait_for("glusterd answers", Duration::from_secs(30), |seen| {
            let (ok, out) = server.cli(&["volume", "list"]);
            *seen = out;
            ok.then_some(())
        });
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
            .arg("gluster")
            .args(
                self.socket
                    .as_ref()
                    .map(|s| format!("--glusterd-sock={}", s.display())),
            )
            .arg("--mode=script")
            .args(args)
            .output()
            .unwrap();
        (o.status.success(), deploy_support::text(&o))
    }
}

/// A directory bind-mounted on itself with shared propagation, unmounted on drop.
struct SharedMount(PathBuf);

impl SharedMount {
    fn new(dir: &Path) -> SharedMount {
        std::fs::create_dir_all(dir).unwrap();
        for args in [
            vec!["--bind", dir.to_str().unwrap(), dir.to_str().unwrap()],
            vec!["--make-shared", dir.to_str().unwrap()],
        ] {
            let o = Command::new("mount").args(&args).output().unwrap();
            assert!(o.status.success(), "mount {args:?}: {o:?}");
        }
        SharedMount(dir.to_path_buf())
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
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

/// Node-1's user asks storage node `storage` to run volume behaviour `behavior` on `volume`.
fn volume_call(dn: &NsDevnet, storage: &str, behavior: &str, volume: &str) -> serde_json::Value {
    dn.json(
        1,
        &[
            "actor", "cmd", "--json", "-d", storage, behavior, "--name", volume,
        ],
    )
}

/// A self-signed client certificate and its key (PEM), common name `cn`.
fn client_identity(cn: &str) -> (String, String) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// A one-allocation ensemble on `peer` that mounts TLS volume `volume` from `server` at
/// /shared with the given PEM texts and appends a line to /shared/log.
fn tls_ensemble(server: &str, volume: &str, peer: &str, key: &str, pem: &str, ca: &str) -> String {
    let quoted = |s: &str| serde_json::to_string(s).unwrap();
    format!(
        r#"version: V1
allocations:
  writer:
    executor: docker
    type: service
    resources: {{cpu: {{cores: 0.1}}, ram: {{size: 64MiB}}, disk: {{size: 16MiB}}}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sh, -c, "echo over-tls >> /shared/log; (dd if=/dev/zero of=/shared/fill bs=1M count=32 2>&1 | grep -q 'No space left' && echo quota-held || echo quota-missed) >> /shared/log; rm -f /shared/fill; exec sleep 3600"]
    volume:
      - type: glusterfs
        servers: [{server}]
        name: {volume}
        mount_destination: /shared
        client_private_key: {}
        client_pem: {}
        client_ca: {}
nodes:
  a:
    allocations: [writer]
    peer: {peer}
"#,
        quoted(key),
        quoted(pem),
        quoted(ca)
    )
}

#[test]
fn a_storage_node_makes_tls_volumes_that_mount_only_with_their_client_certificate() {
    let dn = NsDevnet::up(3);
    dn.onboard_all();
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("glusterd.sock");
    let volume = format!("tls{}", std::process::id());
    let ip = dn.lan(3);
    // glusterd runs in a mount namespace of its own (`ip netns exec`), which receives the
    // daemon's brick mounts only from a shared mount (as every mount is under systemd,
    // though not on this machine's private root): the bricks directory is made one.
    let bricks = dn.dir.join("node-3").join("data/storage/bricks");
    let _shared = SharedMount::new(&bricks);
    let server = GlusterServer::spawn(&dn.netns[2], &volume, Some(&socket));

    // Before storage mode, node-3 says why it does not serve volumes.
    let (code, out) = dn.run(3, &["actor", "cmd", "/dms/volume/start", "--name", "x"]);
    assert_ne!(code, 0);
    assert!(out.contains("general.storage_mode is off"), "{out}");
    for (k, v) in [
        // The host name first: storage mode without it is refused.
        ("general.storage_glusterfs_hostname", ip.as_str()),
        ("general.storage_glusterd_socket", socket.to_str().unwrap()),
        ("general.storage_mode", "true"),
    ] {
        let (code, out) = dn.run(3, &["config", "set", k, v]);
        assert_eq!(code, 0, "config set {k}: {out}");
    }
    dn.crash(3);
    dn.restart(3);

    // Node-1 asks node-3 for a volume that only its certificate may mount (NuNet's flags).
    let (pem, key) = client_identity("node-one-client");
    let pem_file = tmp.path().join("client.pem");
    std::fs::write(&pem_file, &pem).unwrap();
    let ca_dir = tmp.path().join("ca-out");
    let storage = dn.peer(3);
    let (code, out) = dn.run(
        1,
        &[
            "actor",
            "cmd",
            "--json",
            "-d",
            &storage,
            "/dms/volume/create",
            "--name",
            &volume,
            "--client-pem-file",
            pem_file.to_str().unwrap(),
            "--size",
            "16MiB",
            "--ca-output-dir",
            ca_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    // The reply on stdout, the note about the written file on stderr.
    let created: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(
        out.contains("wrote the storage node's certificate to"),
        "{out}"
    );
    assert_eq!(created["OK"], true, "{created}");
    let ca = std::fs::read_to_string(ca_dir.join("glusterfs.ca")).unwrap();
    assert!(ca.contains("BEGIN CERTIFICATE") && created["ca_data"] == ca.as_str());
    // Same name again: refused. A volume is its creator's: node-2's own key (the devnet's
    // nodes share one user key) cannot start or delete it.
    let (code, out) = dn.run(
        1,
        &[
            "actor",
            "cmd",
            "-d",
            &storage,
            "/dms/volume/create",
            "--name",
            &volume,
            "--client-pem-file",
            pem_file.to_str().unwrap(),
        ],
    );
    assert!(code != 0 && out.contains("exists"), "{out}");
    // Node-3 came back on new ports: node-2 finds it again before it is asked anything.
    wait_for("node-2 reaches node-3", Duration::from_secs(30), |seen| {
        let (code, out) = dn.run(
            2,
            &["actor", "cmd", "-c", "dms", "-d", &storage, "/public/hello"],
        );
        *seen = out;
        (code == 0).then_some(())
    });
    for b in ["/dms/volume/start", "/dms/volume/delete"] {
        let (code, out) = dn.run(
            2,
            &[
                "actor", "cmd", "-c", "dms", "-d", &storage, b, "--name", &volume,
            ],
        );
        assert!(code != 0 && out.contains("belongs to"), "{b}: {out}");
    }
    let started = volume_call(&dn, &storage, "/dms/volume/start", &volume);
    assert_eq!(started["OK"], true, "{started}");
    let (ok, info) = server.cli(&["volume", "info", &volume]);
    assert!(ok, "{info}");
    for want in [
        "server.ssl: on",
        "client.ssl: on",
        "auth.ssl-allow: node-one-client",
        "Status: Started",
    ] {
        assert!(info.contains(want), "{want}: {info}");
    }

    // With its key, certificate and the storage node's certificate as CA, an allocation on
    // node-2 writes through the TLS mount; the line is on node-3's brick.
    let yaml = tls_ensemble(&ip, &volume, &dn.peer(2), &key, &pem, &ca);
    let id = dn.deploy(&yaml, "tls.yaml");
    let _containers = Containers(id.clone());
    // Its brick is a filesystem of the size asked for: 32 MiB do not fit.
    wait_for("the lines on the brick", Duration::from_secs(30), |seen| {
        let brick = std::fs::read_dir(&bricks)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_dir())?;
        let text = std::fs::read_to_string(brick.join("brick/log")).unwrap_or_default();
        *seen = format!("{}: {text:?}", brick.display());
        (text == "over-tls\nquota-held\n").then_some(())
    });
    let image = std::fs::read_dir(&bricks)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "img"))
        .expect("no brick image");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 16 << 20);
    // No private key in the provider's log.
    let key_line = key.lines().nth(1).unwrap();
    let log2 = std::fs::read_to_string(dn.dir.join("node-2/nunet.log")).unwrap_or_default();
    assert!(
        !log2.contains(key_line),
        "node-2's log holds the client key"
    );
    dn.shutdown_clean(&id);

    // Another certificate, even with the right CA, or none at all, is refused by the server,
    // and the deployment fails with the client's reason.
    let (other_pem, other_key) = client_identity("mallory");
    // The same common name under another key is a stranger too.
    let (twin_pem, twin_key) = client_identity("node-one-client");
    let refused = [
        (
            "intruder",
            tls_ensemble(&ip, &volume, &dn.peer(2), &other_key, &other_pem, &ca),
        ),
        (
            "same-name-other-key",
            tls_ensemble(&ip, &volume, &dn.peer(2), &twin_key, &twin_pem, &ca),
        ),
        (
            "plain",
            tls_ensemble(&ip, &volume, &dn.peer(2), "", "", "")
                .lines()
                .filter(|l| !l.contains("client_"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    ];
    // Deployed side by side: each fails only at its deadline.
    let runs: Vec<(&str, i32, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = refused
            .iter()
            .map(|(name, yaml)| {
                let file = dn.dir.join(format!("{name}.yaml"));
                std::fs::write(&file, yaml).unwrap();
                let dn = &dn;
                scope.spawn(move || {
                    let f = file.to_str().unwrap();
                    let (code, out) = dn.run(1, &["deploy", "-f", f, "-t", "20s", "--json"]);
                    (*name, code, out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (name, code, out) in runs {
        assert_ne!(code, 0, "{name}: {out}");
        let d: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
        let id = d["id"].as_str().unwrap_or_default().to_string();
        assert!(!id.is_empty(), "{name}: {out}");
        let _guard = Containers(id.clone());
        let status = dn.run(1, &["deployment", "status", &id, "--json"]).1;
        // The round that placed it failed at the mount, with the client's reason.
        let events = serde_json::from_str::<serde_json::Value>(&status).unwrap_or_default();
        let want = format!("volume[0]: GlusterFS volume \"{volume}\" from {ip}");
        let failed = events["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str())
            .find(|m| m.contains(&want))
            .unwrap_or_else(|| panic!("{name}: no event says {want}: {status}"))
            .to_string();
        eprintln!("{name}: {failed}");
    }

    // The creator deletes it: gone from glusterd, brick and certificate removed.
    let deleted = volume_call(&dn, &storage, "/dms/volume/delete", &volume);
    assert_eq!(deleted["OK"], true, "{deleted}");
    let (ok, info) = server.cli(&["volume", "info", &volume]);
    assert!(!ok, "{info}");
    assert_eq!(std::fs::read_dir(&bricks).unwrap().count(), 0);
    let vols = dn.dir.join("node-3/data/storage/ca/volumes");
    assert_eq!(std::fs::read_dir(&vols).unwrap().count(), 0);
}
