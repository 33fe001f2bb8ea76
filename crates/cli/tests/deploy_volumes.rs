//! Local volumes end to end on a 3-node devnet (real daemons, real libp2p, real dockerd, real
//! loop-mounted ext4 images): a named volume and a read-only host directory reach a
//! container; the named volume stops a writer at the allocation's disk size, keeps its data
//! across a restart of the allocation, and goes (unmounted, deleted) with the ensemble; host
//! paths outside `job.volume_roots`, `..` and symlinks out of the root are refused with the
//! reason.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deploy_support::*;
use serde_json::Value;

fn docker(args: &[&str]) -> (bool, String) {
    let o = Command::new("docker").args(args).output().unwrap();
    (o.status.success(), text(&o))
}

/// The running container of the ensemble's allocation `writer`, if exactly one.
fn writer(id: &str) -> Option<String> {
    let (_, out) = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=nunet.ensemble={id}"),
        "--filter",
        "label=nunet.allocation=writer",
    ]);
    let out = out.trim();
    (!out.is_empty() && !out.contains('\n')).then(|| out.to_string())
}

fn ensemble(dir: &Path, name: &str, volumes: &str, cmd: &str) -> String {
    let yaml = format!(
        "version: V1\n\
         allocations:\n  writer:\n    executor: docker\n    type: service\n\
         \x20   resources: {{cpu: {{cores: 0.1}}, ram: {{size: 64MiB}}, disk: {{size: 16MiB}}}}\n\
         \x20   execution:\n      type: docker\n      image: nunet-test/busybox:latest\n\
         \x20     cmd: [sh, -c, \"{cmd}\"]\n\
         \x20   failure_recovery: one_for_one\n\
         \x20   volume:\n{volumes}\
         nodes:\n  n1:\n    allocations: [writer]\n"
    );
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p.display().to_string()
}

fn deploy(dn: &Devnet, file: &str, timeout: &str) -> (i32, Value, String) {
    let (code, out) = dn.run(1, &["deploy", "-f", file, "-t", timeout, "--json"]);
    let v = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    (code, v, out)
}

#[test]
fn named_and_host_volumes_reach_containers_keep_data_and_go_with_the_ensemble() {
    let dn = Devnet::up(0);
    for n in 2..=3 {
        dn.onboard(n);
    }
    let shared = dn.dir.join("shared").canonicalize().unwrap();
    std::fs::create_dir_all(shared.join("in")).unwrap();
    std::fs::write(shared.join("in/msg"), "from-the-host\n").unwrap();
    let volumes = format!(
        "      - {{type: local, src: data, mount_destination: /data}}\n\
         \x20     - {{type: local, src: {}, mount_destination: /in, read_only: true}}\n",
        shared.join("in").display()
    );
    // Every start: note it in the named volume, read the host file, try to write it, fill
    // the named volume until the filesystem says no, report the size reached, clean up.
    let cmd = "date +%s%N >> /data/starts; cat /in/msg; \
               (echo x > /in/w) 2>/dev/null && echo ro-broken || echo ro-refused; \
               dd if=/dev/zero of=/data/fill bs=1M count=64 2>&1 | grep -o 'No space left on device' | head -1; \
               echo filled=$(stat -c %s /data/fill); rm -f /data/fill; exec sleep 3600";
    let file = ensemble(&dn.dir, "vol", &volumes, cmd);
    let (code, d, out) = deploy(&dn, &file, "60s");
    assert_eq!(code, 0, "{out}");
    assert_eq!(d["status"], "Running", "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let _guard = Containers(id.clone());

    let first = wait_for("writer output", Duration::from_secs(30), |seen| {
        let c = writer(&id)?;
        *seen = docker(&["logs", &c]).1;
        seen.contains("filled=").then(|| (c, seen.clone()))
    });
    let (c1, log) = first;
    assert!(log.contains("from-the-host"), "{log}");
    assert!(
        log.contains("ro-refused"),
        "read-only host dir was writable: {log}"
    );
    assert!(log.contains("No space left on device"), "{log}");
    let filled: u64 = log
        .split("filled=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        filled > 8 << 20 && filled <= 16 << 20,
        "the writer stopped at {filled} bytes, not at the 16 MiB disk"
    );

    // The named volume lives on the provider as a loop-mounted image of the ensemble.
    let provider = (2..=3)
        .find(|n| dn.dir.join(format!("node-{n}/data/volumes/{id}")).exists())
        .expect("no provider holds the ensemble's volumes");
    let vols = dn.dir.join(format!("node-{provider}/data/volumes/{id}"));
    assert_eq!(mounts_under(&vols).len(), 1, "{:?}", mounts_under(&vols));
    // Root's only: other local users reach no volume of the provider.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(vols.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");

    // A restart of the allocation keeps the named volume's data.
    assert!(docker(&["kill", &c1]).0);
    let c2 = wait_for("restarted writer", Duration::from_secs(40), |seen| {
        let c = writer(&id)?;
        *seen = c.clone();
        (c != c1).then_some(c)
    });
    wait_for(
        "two starts in the volume",
        Duration::from_secs(20),
        |seen| {
            let (_, out) = docker(&["exec", &c2, "cat", "/data/starts"]);
            *seen = out.clone();
            (out.lines().count() == 2).then_some(())
        },
    );

    // The ensemble goes: its volumes are unmounted and deleted; resources come back.
    dn.json(1, &["deployment", "shutdown", &id, "--json"]);
    wait_for("volumes removed", Duration::from_secs(30), |seen| {
        *seen = format!("{:?} exists {}", mounts_under(&vols), vols.exists());
        (mounts_under(&vols).is_empty() && !vols.exists()).then_some(())
    });
    wait_for("resources released", Duration::from_secs(20), |seen| {
        let (free, onboarded) = (
            dn.resources(provider, "free"),
            dn.resources(provider, "onboarded"),
        );
        *seen = format!("free {free} onboarded {onboarded}");
        (free == onboarded).then_some(())
    });
}

#[test]
fn host_paths_outside_the_volume_roots_are_refused() {
    let dn = Devnet::up(0);
    dn.onboard(2);
    let shared = dn.dir.join("shared").canonicalize().unwrap();
    std::os::unix::fs::symlink("/etc", shared.join("etc-link")).unwrap();
    let cases = [
        ("etc", "/etc".to_string()),
        ("dotdot", format!("{}/../node-2", shared.display())),
        ("symlink", format!("{}/etc-link", shared.display())),
    ];
    for (name, src) in cases {
        let volumes = format!("      - {{type: local, src: \"{src}\", mount_destination: /x}}\n");
        let file = ensemble(&dn.dir, name, &volumes, "ls /x; exec sleep 3600");
        // Refused when the only onboarded provider starts it: the rounds after find none.
        let (code, d, out) = deploy(&dn, &file, "20s");
        assert_ne!(code, 0, "{name}: {out}");
        assert_ne!(d["status"], "Running", "{name}: {out}");
        let id = d["id"].as_str().unwrap_or_default().to_string();
        let _guard = Containers(id.clone());
        let status = dn.run(1, &["deployment", "status", &id, "--json"]).1;
        assert!(
            status.contains("only from under") && status.contains("job.volume_roots"),
            "{name}: the reason is not given: {out}\n{status}"
        );
        assert_eq!(containers_of(&id), "", "{name}: a container was created");
    }
    // Nothing was left committed.
    wait_for("resources released", Duration::from_secs(20), |seen| {
        let (free, onboarded) = (dn.resources(2, "free"), dn.resources(2, "onboarded"));
        *seen = format!("free {free} onboarded {onboarded}");
        (free == onboarded).then_some(())
    });
}

/// Whether `needle` occurs anywhere in the file at `p`.
fn file_contains(p: &Path, needle: &[u8]) -> bool {
    let data = std::fs::read(p).unwrap();
    data.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_encrypted_named_volume_keeps_no_plaintext_on_the_provider_disk() {
    let dn = Devnet::up(0);
    dn.onboard(2);
    let marker = format!("nunet-plaintext-{}-{}", std::process::id(), line!());
    // The same text into a plain and an encrypted named volume, flushed to their images.
    let volumes = "      - {type: local, src: plain, mount_destination: /plain}\n\
                   \x20     - {type: local, src: sec, encrypted: true, mount_destination: /sec}\n";
    let cmd = format!(
        "echo {marker} > /plain/f && echo {marker} > /sec/f && sync && echo read=$(cat /sec/f); exec sleep 3600"
    );
    let file = ensemble(&dn.dir, "enc", volumes, &cmd);
    let (code, d, out) = deploy(&dn, &file, "60s");
    assert_eq!(code, 0, "{out}");
    let id = d["id"].as_str().unwrap().to_string();
    let _guard = Containers(id.clone());
    wait_for(
        "the writer read its encrypted file",
        Duration::from_secs(30),
        |seen| {
            *seen = docker(&["logs", &writer(&id)?]).1;
            seen.contains(&format!("read={marker}")).then_some(())
        },
    );
    let vols = dn.dir.join(format!("node-2/data/volumes/{id}"));
    let plain = vols.join("images/plain");
    let sealed = vols.join("encrypted/sec");
    // The check can fail: the plain image holds the text; the encrypted one does not.
    assert!(
        file_contains(&plain, marker.as_bytes()),
        "plain image lacks the text"
    );
    assert!(
        !file_contains(&sealed, marker.as_bytes()),
        "the encrypted volume's image holds the plaintext"
    );
    // Both are 8 MiB: the allocation's 16 MiB disk shared by its two named volumes.
    for img in [&plain, &sealed] {
        assert_eq!(std::fs::metadata(img).unwrap().len(), 8 << 20, "{img:?}");
    }
    dn.json(1, &["deployment", "shutdown", &id, "--json"]);
    wait_for("volumes removed", Duration::from_secs(30), |seen| {
        *seen = format!("{:?}", mounts_under(&vols));
        (mounts_under(&vols).is_empty() && !vols.exists()).then_some(())
    });
}
