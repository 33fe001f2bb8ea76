//! `nunet deployment logs -f` end to end, with real daemons, real libp2p and a real dockerd:
//! a task prints 50 MiB in paced bursts; the follower receives every byte in order while the
//! provider's daemon is killed and restarted (the orchestrator's stream to it resumes), and
//! while the orchestrating daemon itself is killed and restarted (the CLI's connection
//! resumes). The output must equal what the task printed, byte for byte, and the command must
//! end by itself when the task completes.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::io::{BufRead as _, Read as _};
use std::process::Stdio;
use std::time::Duration;

use deploy_support::*;

/// Lines per burst, bursts, bytes per line: 40 × 1280 × 1024 B = 50 MiB.
const BURST: usize = 1280;
const BURSTS: usize = 40;
const LINE: usize = 1024;

fn expected() -> Vec<u8> {
    let pad = "x".repeat(LINE - 10);
    let mut v = Vec::with_capacity(BURST * BURSTS * LINE);
    for j in 0..BURST * BURSTS {
        v.extend_from_slice(format!("{j:08} {pad}\n").as_bytes());
    }
    v
}

fn ensemble() -> String {
    format!(
        r#"version: V1
allocations:
  talker:
    executor: docker
    type: task
    resources: {{cpu: {{cores: 0.5}}, ram: {{size: 128MiB}}, disk: {{size: 100MiB}}}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd:
        - sh
        - -c
        - |
          i=0
          while [ $i -lt {BURSTS} ]; do
            awk -v s=$i 'BEGIN {{ p = ""; for (k = 0; k < {pad}; k++) p = p "x"; for (j = s * {BURST}; j < (s + 1) * {BURST}; j++) printf "%08d %s\n", j, p }}'
            i=$((i + 1))
            sleep 0.4
          done
          echo finished >&2
nodes:
  node-a:
    allocations: [talker]
"#,
        pad = LINE - 10
    )
}

/// Bytes in `path` so far.
fn size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn fifty_mib_arrive_in_order_across_provider_and_orchestrator_restarts() {
    let dn = Devnet::up(0);
    // Node 2 is the only provider; node 1 orchestrates.
    dn.onboard(2);
    // `deploy` waits for a task to complete: its first line names the deployment.
    let file = dn.dir.join("talker.yaml");
    std::fs::write(&file, ensemble()).unwrap();
    let mut deploy = nunet_cmd(
        &dn.dir,
        None,
        Some("node-1"),
        &["deploy", "-f", file.to_str().unwrap(), "-t", "90s"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(deploy.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let id = first
        .strip_prefix("deployment ")
        .unwrap_or_else(|| panic!("deploy said {first:?}"))
        .trim()
        .to_string();
    let _cleanup = Containers(id.clone());

    let out_path = dn.dir.join("follow.out");
    let err_path = dn.dir.join("follow.err");
    let mut follower = nunet_cmd(
        &dn.dir,
        None,
        Some("node-1"),
        &["deployment", "logs", "-f", &id],
    )
    .stdout(std::fs::File::create(&out_path).unwrap())
    .stderr(std::fs::File::create(&err_path).unwrap())
    .spawn()
    .unwrap();

    // The provider's daemon dies a fifth of the way in and comes back; the container runs
    // on and its output meanwhile is read again from dockerd's history.
    wait_for("10 MiB followed", Duration::from_secs(120), |s| {
        *s = format!("{} bytes", size(&out_path));
        (size(&out_path) > 10 << 20).then_some(())
    });
    kill(&dn.dir, 2, "-KILL");
    std::thread::sleep(Duration::from_secs(2));
    restart(&dn, 2);

    // The orchestrating daemon dies half-way in: the CLI opens a new session from the
    // offsets it printed.
    wait_for("25 MiB followed", Duration::from_secs(120), |s| {
        *s = format!("{} bytes", size(&out_path));
        (size(&out_path) > 25 << 20).then_some(())
    });
    kill(&dn.dir, 1, "-KILL");
    std::thread::sleep(Duration::from_secs(1));
    restart(&dn, 1);

    // The command ends by itself once the task completed and its output was drained.
    let status = wait_for("the follower to end", Duration::from_secs(180), |s| {
        *s = format!("{} bytes", size(&out_path));
        follower.try_wait().unwrap()
    });
    let mut err = String::new();
    std::fs::File::open(&err_path)
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "logs -f: {status:?}: {err}");
    let _ = deploy.wait();
    let got = std::fs::read(&out_path).unwrap();
    let want = expected();
    if got != want {
        // Where it first differs, in lines, for the failure message.
        let at = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let start = at - at % LINE;
        let line = |b: &[u8]| {
            String::from_utf8_lossy(&b[start.min(b.len())..(start + 20).min(b.len())]).into_owned()
        };
        panic!(
            "output differs at byte {at} (got {} bytes, want {}): got {:?}, want {:?}; stderr: {err}",
            got.len(),
            want.len(),
            line(&got),
            line(&want)
        );
    }
    assert!(err.contains("finished"), "the task's stderr: {err}");
    assert!(
        err.contains("connection to the node lost; resuming"),
        "the CLI says it resumed: {err}"
    );

    // The output stays readable without following, from any offset, after the task ended.
    let (code, once) = dn.run(1, &["deployment", "logs", &id]);
    assert_eq!(code, 0, "{}", &once[..once.len().min(2000)]);
    assert!(
        once.starts_with("== node-a.talker (completed)\n00000000 "),
        "{}",
        &once[..200]
    );
    assert!(once.contains(&format!("{:08} ", BURST * BURSTS - 1)));
}
