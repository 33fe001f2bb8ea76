//! NuNet's own ensembles (its examples, samples and e2e, acceptance and integration test data;
//! `fixtures/nunet/MANIFEST` says where each comes from): every file NuNet's parser accepts
//! validates here, with NuNet's meaning; the ones NuNet refuses are refused here too.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nunet_ensemble::execution::Execution;
use nunet_ensemble::{Context, EnsembleError, Parsed, parse_str};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nunet")
}

/// `(file, expectation)` from the manifest.
fn manifest() -> Vec<(String, String)> {
    std::fs::read_to_string(dir().join("MANIFEST"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            (f[0].to_string(), f[3].to_string())
        })
        .collect()
}

/// What NuNet's e2e harness does to `{$contract}` (tests/e2e/contract_test.go).
fn harness(text: &str) -> String {
    text.replace(
        "{$contract}",
        "contracts:\n  contract1:\n    did: \"did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK\"\n    host: \"did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th\"",
    )
}

fn parse(file: &str) -> Result<Parsed, EnsembleError> {
    let text = std::fs::read_to_string(dir().join(file)).unwrap();
    let vars = HashMap::from([("hostname".to_string(), "node-1".to_string())]);
    parse_str(&harness(&text), &Context::with_vars(vars, dir()))
}

#[test]
fn every_ensemble_nunet_accepts_validates_here_and_the_rest_is_refused() {
    let m = manifest();
    assert!(m.len() >= 40, "the corpus is there: {} files", m.len());
    let mut wrong = Vec::new();
    for (file, expect) in &m {
        let r = parse(file);
        let ok = match expect.as_str() {
            "accepts" | "harness" | "lenient" => r.is_ok(),
            "rejects" => r.is_err(),
            other => panic!("{file}: unknown expectation {other}"),
        };
        if !ok {
            wrong.push(format!(
                "{file} (expected {expect}): {}",
                match r {
                    Ok(_) => "accepted".to_string(),
                    Err(e) => e.to_string(),
                }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn nunet_files_keep_nunets_meaning() {
    // containerd (NuNet's executor): accepted with NuNet's runtime default, and warned about:
    // providers here decline it at bid time.
    let p = parse("tests__acceptance__testdata__ensembles__containerd_hello.yaml").unwrap();
    let a = p.ensemble.allocation("alloc1").unwrap();
    match &a.execution {
        Execution::Containerd(c) => {
            assert_eq!(c.image, "docker.io/library/busybox:latest");
            assert_eq!(c.cmd, ["echo", "Hello from containerd!"]);
            assert_eq!(c.runtime, "io.containerd.runc.v2");
        }
        other => panic!("not containerd: {other:?}"),
    }
    let warnings: Vec<String> = p.report.warnings().map(|w| w.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("decline it at bid time")),
        "{warnings:?}"
    );
    // A contract block filled in by the harness is read, not dropped.
    let p = parse("tests__e2e__testdata__ensembles__hello-contract.yaml").unwrap();
    assert!(
        !p.ensemble.contracts.is_empty(),
        "{:?}",
        p.ensemble.contracts
    );
    // Sizes are GiB by default, as in NuNet.
    let p = parse("tests__e2e__testdata__ensembles__nginx.yaml").unwrap();
    for a in &p.ensemble.allocations {
        assert!(
            a.resources.ram.size >= 1 << 20,
            "{}: {:?}",
            a.name,
            a.resources
        );
    }
}
