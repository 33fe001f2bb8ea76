//! `nunet deploy` refuses, before contacting the daemon, an ensemble whose request the
//! daemon's REST body limit would refuse (it used to fail with "cannot reach the DMS
//! (Broken pipe)" once the daemon dropped the connection).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
use common::Node;

#[test]
fn an_ensemble_over_the_request_limit_is_refused_locally() {
    let n = Node::new();
    std::fs::create_dir_all(&n.home).unwrap();
    // A valid ensemble of 1.2 MB: its request (base64 in a signed envelope) is larger still.
    let big = format!(
        "version: V1\nallocations:\n  web:\n    executor: docker\n    type: task\n    resources: {{cpu: {{cores: 1}}, ram: {{size: 1}}, disk: {{size: 1}}}}\n    execution:\n      type: docker\n      image: nginx\n      environment: {{BIG: \"{}\"}}\nnodes:\n  n1: {{allocations: [web]}}\n",
        "x".repeat(1_200_000)
    );
    let file = n.home.join("big.yaml");
    std::fs::write(&file, &big).unwrap();
    // No daemon runs: the refusal must not need one.
    let r = n.run(&["deploy", "-f", file.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("ensemble file is {} bytes", big.len())),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("the daemon accepts at most 1048576"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("cannot reach"), "{}", r.stderr);
}
