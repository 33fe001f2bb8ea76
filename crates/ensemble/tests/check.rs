//! Checks on ensembles that arrive already decoded (JSON from a client or another node): what
//! the decoder accepts passes them unchanged, and numbers a file could never hold are refused
//! with the field's path.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::path::Path;

use nunet_ensemble::spec::PortMapping;
use nunet_ensemble::{Context, Ensemble, Resources, check, parse_file, parse_str};
use serde_json::json;

fn ok_ensemble() -> Ensemble {
    let yaml = "version: V1
allocations:
  web:
    executor: docker
    type: service
    resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}
    execution: {type: docker, image: nginx}
nodes:
  n1:
    allocations: [web]
    ports: [{public: 18080, private: 80, allocation: web}]
";
    parse_str(yaml, &Context::with_vars(HashMap::new(), "."))
        .unwrap()
        .ensemble
}

/// The ensemble as a node receives it: JSON, with `edit` applied to that JSON.
fn received(edit: impl FnOnce(&mut serde_json::Value)) -> Ensemble {
    let mut v = serde_json::to_value(ok_ensemble()).unwrap();
    edit(&mut v);
    serde_json::from_value(v).unwrap()
}

fn errors(e: &Ensemble) -> Vec<String> {
    check::ensemble(e).errors().map(|p| p.to_string()).collect()
}

#[test]
fn what_the_decoder_accepts_passes_after_a_json_round_trip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("tests/fixtures/full.yaml"),
        root.join("tests/fixtures/nginx.json"),
    ];
    for entry in std::fs::read_dir(root.join("../../examples")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let ctx = Context::with_vars(HashMap::new(), root.join("tests/fixtures"));
    for f in files {
        let Ok(parsed) = parse_file(&f, &ctx) else {
            continue;
        };
        let json = serde_json::to_value(&parsed.ensemble).unwrap();
        let back: Ensemble = serde_json::from_value(json).unwrap();
        assert_eq!(errors(&back), Vec::<String>::new(), "{}", f.display());
    }
}

#[test]
fn negative_zero_and_huge_numbers_are_refused_naming_the_field() {
    let e = received(|v| {
        let r = &mut v["allocations"][0]["resources"];
        r["cpu"]["cores"] = json!(-4);
        r["ram"]["size"] = json!(0);
        r["disk"]["size"] = json!(u64::MAX);
        r["gpus"] = json!([{"vendor": "NVIDIA", "model": null, "vram": u64::MAX}]);
    });
    let errs = errors(&e);
    let has = |path: &str, words: &str| {
        errs.iter()
            .any(|m| m.starts_with(&format!("{path}: ")) && m.contains(words))
    };
    assert!(
        has("allocations.web.resources.cpu.cores", "-4"),
        "{errs:#?}"
    );
    assert!(
        has("allocations.web.resources.ram.size", "positive"),
        "{errs:#?}"
    );
    assert!(
        has("allocations.web.resources.disk.size", "largest size"),
        "{errs:#?}"
    );
    assert!(
        has("allocations.web.resources.gpus[0].vram", "largest size"),
        "{errs:#?}"
    );

    let huge = received(|v| v["allocations"][0]["resources"]["cpu"]["cores"] = json!(1e300));
    assert!(errors(&huge)[0].starts_with("allocations.web.resources.cpu.cores: "));
}

#[test]
fn ports_executions_and_cross_field_rules_apply_too() {
    let e = received(|v| {
        v["nodes"][0]["ports"][0]["public"] = json!(80);
        v["nodes"][0]["redundancy"] = json!(5000);
        v["allocations"][0]["execution"]["image"] = json!("NGINX");
        v["allocations"][0]["depends_on"] = json!(["web"]);
        v["edges"] = json!([{"source": "n1", "target": "n1", "rtt_ms": -1.0, "bw_bps": null}]);
    });
    let errs = errors(&e);
    for path in [
        "nodes.n1.ports[0].public",
        "nodes.n1.redundancy",
        "allocations.web.execution.image",
        "allocations.web.depends_on[0]",
        "edge_constraints[0].rtt",
        "edge_constraints[0].edges",
    ] {
        assert!(
            errs.iter().any(|m| m.starts_with(&format!("{path}: "))),
            "{path}: {errs:#?}"
        );
    }
}

#[test]
fn requests_and_amounts_of_protocol_messages() {
    let ok = ok_ensemble().allocations[0].resources.clone();
    assert!(ok.check_request("r").is_empty());
    // A node without allocations asks for nothing: fine as an amount, not as a request.
    let none = Resources::default();
    assert!(none.check_amount("r").is_empty());
    let paths: Vec<String> = none
        .check_request("r")
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(paths, ["r.cpu.cores", "r.ram.size"]);
    let mut bad = ok.clone();
    bad.cpu.cores = f64::NAN;
    assert_eq!(bad.check_amount("r")[0].path, "r.cpu.cores");
    bad.cpu.cores = f64::INFINITY;
    assert_eq!(bad.check_request("r")[0].path, "r.cpu.cores");
    let port = PortMapping {
        public: 22,
        private: 0,
        allocation: "web".into(),
    };
    let paths: Vec<String> = check::port(&port, "p")
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(paths, ["p.public", "p.private"]);
}
