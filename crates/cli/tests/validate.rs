//! `nunet validate` on the shipped examples and on an invalid fixture.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nunet"))
        .arg("validate")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

#[test]
fn valid_example_prints_a_summary() {
    let out = validate(&["examples/two-node-web.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ensemble: 2 node(s), 2 allocation(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("node back: 1 cpu × 2GHz, 2GiB ram, 20GiB disk"),
        "{stdout}"
    );
    assert!(
        stdout.contains("edge front ↔ back: rtt ≤ 40ms, bw ≥ 100Mbps"),
        "{stdout}"
    );
}

#[test]
fn invalid_file_lists_every_problem_and_fails() {
    let out = validate(&["crates/ensemble/tests/fixtures/invalid.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(r#"allocations.web.resources.ram.size: expected a size like "2GiB""#),
        "{stderr}"
    );
    assert!(stderr.contains("(line 8)"), "{stderr}");
    assert!(stderr.contains("nodes.n1.ports[0].public"), "{stderr}");
    assert!(stderr.contains("5 error(s)"), "{stderr}");
}

#[test]
fn json_output_is_machine_readable() {
    let out = validate(&["--json", "crates/ensemble/tests/fixtures/invalid.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("\"valid\": false"), "{stdout}");
    assert!(stdout.contains("\"line\": 8"), "{stdout}");
}
