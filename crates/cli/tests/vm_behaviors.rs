//! `/dms/node/vm/*` through a real daemon: the VM executor reports what it can do, and bad
//! requests get clear errors. (Booting is covered by the executor's QEMU tests.)
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn nunet(dir: &Path, home: bool, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nunet"));
    c.args(args)
        .env("NUNET_INSECURE_FAST_KDF", "1")
        .env("DMS_PASSPHRASE_FILE", dir.join("passphrase"))
        .env_remove("DMS_PASSPHRASE")
        .env_remove("NUNET_CONFIG")
        .stdin(Stdio::null());
    if home {
        c.env("NUNET_HOME", dir.join("node-1"));
    }
    c.output().unwrap()
}

/// Stops the devnet even when an assertion fails, so no daemon outlives the test.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let dir = self.0.to_str().unwrap_or_default().to_string();
        let _ = nunet(&self.0, false, &["devnet", "down", "--dir", &dir]);
    }
}

#[test]
fn vm_behaviors_answer_through_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dn");
    let base = 0u16; // devnet picks free ports
    let up = nunet(
        &dir,
        false,
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
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let _down = Down(dir.clone());
    let list = nunet(&dir, true, &["actor", "cmd", "/dms/node/vm/list", "--json"]);
    let out = String::from_utf8_lossy(&list.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert!(
        ["qemu", "firecracker"].contains(&v["status"]["kind"].as_str().unwrap_or_default()),
        "{out} {}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(v["status"]["detail"].as_str().unwrap().len() > 3, "{out}");
    assert!(v["vms"].as_array().unwrap().is_empty(), "{out}");
    let bad = nunet(
        &dir,
        true,
        &["actor", "cmd", "/dms/node/vm/start/custom", "--cpu", "1"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--kernel"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let missing = nunet(
        &dir,
        true,
        &[
            "actor",
            "cmd",
            "/dms/node/vm/start/custom",
            "--kernel",
            "/nonexistent/vmlinuz",
        ],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("nonexistent"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let stop = nunet(
        &dir,
        true,
        &["actor", "cmd", "/dms/node/vm/stop", "--id", "vm-none"],
    );
    assert_eq!(stop.status.code(), Some(1));
}
