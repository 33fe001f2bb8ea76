//! Onboard → status → offboard through real `nunet actor cmd` against a daemon started by
//! `nunet devnet up`, with the refusals; then a corrupted database stops `nunet run` with a
//! clear error and is left in place.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::path::PathBuf;

use deploy_support::{nunet, text};
use serde_json::Value;

struct Devnet {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = nunet(
            &self.dir,
            None,
            &["devnet", "down", "--dir", self.dir.to_str().unwrap()],
        );
    }
}

impl Devnet {
    fn up() -> Devnet {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dn");
        let base = 0u16; // devnet picks free ports
        let o = nunet(
            &dir,
            None,
            &[
                "devnet",
                "up",
                "--nodes",
                "1",
                "--dir",
                dir.to_str().unwrap(),
                "--base-port",
                &base.to_string(),
            ],
        );
        assert!(o.status.success(), "devnet up: {}", text(&o));
        Devnet { dir, _tmp: tmp }
    }
    /// `nunet actor cmd --json <args>` on node 1: (exit code, stdout+stderr).
    fn cmd(&self, args: &[&str]) -> (i32, String) {
        let mut full = vec!["actor", "cmd", "--json"];
        full.extend_from_slice(args);
        let o = nunet(&self.dir, Some("node-1"), &full);
        (o.status.code().unwrap_or(-1), text(&o))
    }
    fn json(&self, args: &[&str]) -> Value {
        let (code, out) = self.cmd(args);
        assert_eq!(code, 0, "{args:?}: {out}");
        serde_json::from_str(out.trim()).unwrap()
    }
}

#[test]
fn onboard_status_offboard_with_refusals() {
    let d = Devnet::up();
    let spec = d.json(&["/dms/node/hardware/spec"]);
    let cores = spec["cpu"]["logical_cores"].as_u64().unwrap();
    assert!(cores >= 2, "the test needs 2 logical CPUs: {spec}");
    assert!(spec["ram_bytes"].as_u64().unwrap() > 3 << 30, "{spec}");
    assert_eq!(d.json(&["/dms/node/onboarding/status"])["onboarded"], false);
    assert_eq!(d.json(&["/public/status"])["onboarded"], false);

    // Refusals name the limit and change nothing.
    let (code, out) = d.cmd(&[
        "/dms/node/onboarding/onboard",
        "--cpu",
        "1",
        "--ram",
        "100000",
        "--disk",
        "1000000",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ram 100000 GiB requested, machine has "),
        "{out}"
    );
    assert!(
        out.contains("can be onboarded (2 GiB reserved for the host)"),
        "{out}"
    );
    // Every violated limit is named; the disk reserve is the devnet's
    // `onboarding.reserve_disk_gb`, not the production default of 5 GiB.
    assert!(
        out.contains("disk 1000000 GiB requested, the filesystem of "),
        "{out}"
    );
    assert!(out.contains("(1 GiB reserved for the host)"), "{out}");
    let too_many = (cores + 1).to_string();
    let (code, out) = d.cmd(&[
        "/dms/node/onboarding/onboard",
        "--cpu",
        &too_many,
        "--ram",
        "1",
        "--disk",
        "1",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "cpu {too_many} cores requested, machine has {cores} cores"
        )),
        "{out}"
    );
    if spec["gpu"]["gpus"].as_array().unwrap().is_empty() {
        let (code, out) = d.cmd(&[
            "/dms/node/onboarding/onboard",
            "--cpu",
            "1",
            "--ram",
            "1",
            "--disk",
            "1",
            "--gpus",
            "0:4",
        ]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("gpu 0 requested, no GPU found"), "{out}");
    }
    let (code, out) = d.cmd(&["/dms/node/onboarding/onboard", "--cpu", "1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("give --cpu <cores> --ram <GiB> --disk <GiB>"),
        "{out}"
    );
    assert_eq!(d.json(&["/dms/node/onboarding/status"])["onboarded"], false);

    // --no-gpu contradicts --gpus (NuNet's short flags): refused, not ignored.
    let (code, out) = d.cmd(&[
        "/dms/node/onboarding/onboard",
        "-C",
        "1",
        "-R",
        "1",
        "-D",
        "1",
        "-G",
        "0:4",
        "-N",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--gpus and --no-gpu cannot be used together"),
        "{out}"
    );

    // Onboard, with NuNet's short flags and sizes: status carries the amounts, the benchmark
    // and the location.
    let st = d.json(&[
        "/dms/node/onboarding/onboard",
        "-C",
        "1",
        "-R",
        "1024MiB",
        "-D",
        "1GiB",
        "-N",
    ]);
    assert_eq!(st["onboarded"], true, "{st}");
    assert_eq!(st["onboarded_resources"]["ram"]["size"], 1u64 << 30);
    let bench = &st["benchmark"];
    assert!(bench["duration_ms"].as_u64().unwrap() <= 10_000, "{bench}");
    assert!(bench["cpu_multi_ops_s"].as_f64().unwrap() > 0.0, "{bench}");
    assert!(
        bench["disk_write_bytes_s"].as_f64().unwrap() > 0.0,
        "{bench}"
    );
    let st = d.json(&["/dms/node/onboarding/status"]);
    assert_eq!(st["free"]["cpu"]["millicores"], 1000, "{st}");
    assert_eq!(d.json(&["/public/status"])["onboarded"], true);
    assert!(d.dir.join("node-1/data/dms.sqlite").exists());
    let (code, out) = d.cmd(&[
        "/dms/node/onboarding/onboard",
        "--cpu",
        "1",
        "--ram",
        "1",
        "--disk",
        "1",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("already onboarded"), "{out}");

    // Accounting through the behaviors.
    d.json(&[
        "/dms/node/resources/commit",
        "--id",
        "a1",
        "--cpu",
        "0.25",
        "--ram",
        "0.5",
    ]);
    let (code, out) = d.cmd(&["/dms/node/resources/commit", "--id", "a2", "--ram", "0.75"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "ram: 0.8 GiB requested, 0.5 GiB free (1 GiB onboarded, 0.5 GiB committed or allocated)"
        ),
        "{out}"
    );
    d.json(&["/dms/node/resources/allocate", "--id", "a1"]);
    let free = d.json(&["/dms/node/resources/free"]);
    assert_eq!(free["cpu"]["millicores"], 750);
    assert_eq!(free["ram"]["size"], 1u64 << 29);
    let alloc = d.json(&["/dms/node/resources/allocated"]);
    assert_eq!(alloc["allocated"]["cpu"]["millicores"], 250, "{alloc}");
    assert_eq!(
        d.json(&["/dms/node/resources/onboarded"])["disk"]["size"],
        1u64 << 30
    );
    let usage = d.json(&["/dms/node/hardware/usage"]);
    assert!(usage["ram_total_bytes"].as_u64().unwrap() > 0, "{usage}");

    // Offboard: refused while an allocation runs, then forced.
    let (code, out) = d.cmd(&["/dms/node/onboarding/offboard"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("1 allocation(s) running (a1); stop them first or offboard with --force"),
        "{out}"
    );
    let off = d.json(&["/dms/node/onboarding/offboard", "--force"]);
    assert_eq!(
        off["offboard"]["released_without_executor"][0], "a1",
        "{off}"
    );
    assert_eq!(d.json(&["/dms/node/onboarding/status"])["onboarded"], false);
    assert_eq!(
        d.json(&["/dms/node/resources/onboarded"])["cpu"]["millicores"],
        0
    );

    // A corrupted database stops the daemon at start with a clear message and is kept.
    let o = nunet(
        &d.dir,
        None,
        &["devnet", "down", "--dir", d.dir.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let db = d.dir.join("node-1/data/dms.sqlite");
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(d.dir.join(format!("node-1/data/dms.sqlite{ext}")));
    }
    let junk = b"definitely not sqlite".repeat(300);
    std::fs::write(&db, &junk).unwrap();
    let o = nunet(&d.dir, Some("node-1"), &["run"]);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("is corrupt or not a DMS database"), "{out}");
    assert!(out.contains("dms.sqlite"), "{out}");
    assert_eq!(std::fs::read(&db).unwrap(), junk);
}
