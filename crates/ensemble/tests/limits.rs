//! Hostile and oversized ensembles (issue 15, item 9): every input is refused or read with a
//! clear message, in time and memory proportional to what the document expands to, never
//! with a panic or a stack overflow.
//!
//! Tests marked "LINEAR-TIME" build inputs that the old quadratic code needed tens of seconds
//! or minutes for; they finish in well under 2 s in a debug build. They assert results, not
//! durations.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::fmt::Write as _;

use nunet_ensemble::execution::Execution;
use nunet_ensemble::{Context, EnsembleError, parse_str, tree};

fn ctx() -> Context {
    Context::with_vars(HashMap::new(), std::env::temp_dir())
}

/// The report's text of an invalid ensemble.
fn refused(yaml: &str, c: &Context) -> String {
    match parse_str(yaml, c) {
        Err(EnsembleError::Invalid(r)) => r.to_string(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted"),
    }
}

/// A valid ensemble with one allocation `web` whose body is `body` (indented 4 spaces).
fn one_allocation(extra_top: &str, body: &str) -> String {
    format!(
        "version: V1\n{extra_top}allocations:\n  web:\n    executor: docker\n    type: task\n{body}nodes:\n  n1: {{allocations: [web]}}\n"
    )
}

const DOCKER: &str = "    execution: {type: docker, image: nginx}\n";
const RESOURCES: &str = "    resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}\n";

#[test]
fn aliases_of_a_long_string_are_refused_by_expanded_size() {
    // 1 MiB anchored once, aliased 100 times: only 101 values, but 100 MiB once expanded.
    let mut yaml = format!("s: &s \"{}\"\nl:\n", "x".repeat(1 << 20));
    for _ in 0..100 {
        yaml.push_str("  - *s\n");
    }
    let err = tree::parse(&yaml).unwrap_err().to_string();
    assert!(
        err.contains("expands to more than") && err.contains("bytes") && err.contains("alias"),
        "{err}"
    );
    let report = refused(&yaml, &ctx());
    assert!(report.contains("bytes"), "{report}");
    // The same string aliased a few times is fine.
    let mut few = format!("s: &s \"{}\"\nl:\n", "x".repeat(1 << 20));
    for _ in 0..3 {
        few.push_str("  - *s\n");
    }
    assert!(tree::parse(&few).is_ok());
}

#[test]
fn merge_keys_charge_the_mapping_they_copy() {
    // A mapping of long values merged into many mappings.
    let mut yaml = format!("b: &b {{x: \"{}\"}}\nl:\n", "y".repeat(1 << 20));
    for i in 0..64 {
        writeln!(yaml, "  m{i}: {{<<: *b, k: 1}}").unwrap();
    }
    let err = tree::parse(&yaml).unwrap_err().to_string();
    assert!(err.contains("bytes"), "{err}");
}

/// LINEAR-TIME: 99 000 distinct keys in one mapping (the old duplicate check compared each
/// key with every earlier one: ~5·10⁹ comparisons).
#[test]
fn many_distinct_keys_are_read_in_linear_time() {
    let mut yaml = String::new();
    for i in 0..99_000 {
        writeln!(yaml, "k{i}: {i}").unwrap();
    }
    let (v, issues) = tree::parse(&yaml).unwrap();
    assert!(issues.is_empty());
    let m = v.as_map().unwrap();
    assert_eq!(m.len(), 99_000);
    assert_eq!(m[98_999].key, "k98999");
    assert_eq!(v.get("k500").unwrap().as_scalar(), Some("500"));
}

#[test]
fn duplicate_keys_keep_the_later_value_in_its_place() {
    let (v, issues) = tree::parse("a: 1\nb: 2\na: 3\nc: 4\na: 5\n").unwrap();
    assert_eq!(issues.len(), 2);
    assert_eq!(issues[0].line, 3);
    assert_eq!(issues[1].line, 5);
    let keys: Vec<&str> = v.as_map().unwrap().iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["b", "c", "a"]);
    assert_eq!(v.get("a").unwrap().as_scalar(), Some("5"));
}

/// LINEAR-TIME: a merge of 45 000 keys (the old merge scanned the growing mapping per key).
#[test]
fn merging_a_large_mapping_is_linear() {
    let mut yaml = String::from("base: &b\n");
    for i in 0..45_000 {
        writeln!(yaml, "  k{i}: {i}").unwrap();
    }
    yaml.push_str("use:\n  <<: *b\n  k7: own\n");
    let (v, _) = tree::parse(&yaml).unwrap();
    let used = v.get("use").unwrap();
    assert_eq!(used.as_map().unwrap().len(), 45_000);
    assert_eq!(used.get("k7").unwrap().as_scalar(), Some("own"));
    assert_eq!(used.get("k44999").unwrap().as_scalar(), Some("44999"));
}

#[test]
fn deep_block_nesting_is_refused_without_overflowing_the_stack() {
    // `- - - - …`: block sequences nest without brackets, so the YAML scanner's own limit
    // on flow nesting does not apply.
    let dashes = "- ".repeat(100_000) + "x\n";
    let err = tree::parse(&dashes).unwrap_err().to_string();
    assert!(err.contains("nesting deeper than"), "{err}");
    let mut indented = String::new();
    for i in 0..2_000 {
        indented.push_str(&" ".repeat(i));
        indented.push_str("a:\n");
    }
    let err = tree::parse(&indented).unwrap_err().to_string();
    assert!(err.contains("nesting deeper than"), "{err}");
    let flow = "[".repeat(100_000);
    assert!(tree::parse(&flow).is_err());
    let report = refused(&dashes, &ctx());
    assert!(report.contains("nesting deeper than"), "{report}");
}

#[test]
fn json_fallback_does_not_lift_the_limits() {
    // Valid JSON that the YAML reader refuses for its size must not be read as JSON instead.
    let many = format!("[{}0]", "0,".repeat(300_000));
    let err = tree::parse(&many).unwrap_err().to_string();
    assert!(err.contains("values"), "{err}");
}

#[test]
fn long_keys_are_refused() {
    let yaml = format!("{}: 1\n", "k".repeat(300));
    let err = tree::parse(&yaml).unwrap_err().to_string();
    assert!(err.contains("key") && err.contains("bytes"), "{err}");
    // An explicit key (`? key`) escapes the YAML scanner's own 1024-character limit.
    let yaml = format!("? {}\n: 1\n", "k".repeat(100_000));
    let err = tree::parse(&yaml).unwrap_err().to_string();
    assert!(err.contains("key") && err.contains("bytes"), "{err}");
    let json = format!("{{\"{}\": 1}}", "k".repeat(10_000));
    assert!(tree::parse(&json).is_err());
    // Keys of ordinary length are fine.
    assert!(tree::parse(&format!("{}: 1\n", "k".repeat(200))).is_ok());
}

#[test]
fn long_values_are_not_echoed_whole_in_messages() {
    let body = format!(
        "    resources: {{cpu: {{cores: \"{}\"}}, ram: {{size: 1}}, disk: {{size: 1}}}}\n{DOCKER}",
        "z".repeat(100_000)
    );
    let report = refused(&one_allocation("", &body), &ctx());
    assert!(report.contains("cores"), "{report}");
    assert!(report.len() < 2_000, "{} bytes of report", report.len());
}

/// LINEAR-TIME: 60 000 environment variables (the old duplicate check scanned the list).
#[test]
fn many_environment_variables_are_decoded_in_linear_time() {
    let mut body = String::from(RESOURCES);
    body.push_str("    execution:\n      type: docker\n      image: nginx\n      environment:\n");
    for i in 0..60_000 {
        writeln!(body, "        V{i}: x").unwrap();
    }
    body.push_str("        V7: again\n");
    let parsed = match parse_str(&one_allocation("", &body), &ctx()) {
        Err(EnsembleError::Invalid(r)) => {
            assert!(r.to_string().contains("V7"), "{r}");
            return;
        }
        other => other.unwrap(),
    };
    let Execution::Docker(d) = &parsed.ensemble.allocations[0].execution else {
        panic!("docker expected")
    };
    assert_eq!(d.environment.len(), 60_000);
}

/// LINEAR-TIME: an execution mapping with 40 000 keys beside and inside `params`.
#[test]
fn execution_params_are_flattened_in_linear_time() {
    let mut body = String::from(RESOURCES);
    body.push_str("    execution:\n      type: docker\n      image: nginx\n      params:\n");
    for i in 0..20_000 {
        writeln!(body, "        p{i}: x").unwrap();
    }
    for i in 0..20_000 {
        writeln!(body, "      q{i}: x").unwrap();
    }
    let parsed = parse_str(&one_allocation("", &body), &ctx()).unwrap();
    // Unknown keys are warnings (with a "did you mean" check each).
    assert_eq!(parsed.report.warnings().count(), 40_000);
    let Execution::Docker(d) = &parsed.ensemble.allocations[0].execution else {
        panic!("docker expected")
    };
    assert_eq!(d.image, "nginx");
}

#[test]
fn resource_templates_are_charged_for_each_use() {
    // One template with 1 MiB of text used by 100 allocations: 100 MiB once decoded.
    let mut yaml = format!(
        "version: V1\nresources:\n  t:\n    cpu: {{cores: 1, model: \"{}\"}}\n    ram: {{size: 1}}\n    disk: {{size: 1}}\nallocations:\n",
        "m".repeat(1 << 20)
    );
    let mut names = Vec::new();
    for i in 0..100 {
        writeln!(
            yaml,
            "  a{i}: {{executor: docker, type: task, resources: t, execution: {{type: docker, image: nginx}}}}"
        )
        .unwrap();
        names.push(format!("a{i}"));
    }
    writeln!(
        yaml,
        "nodes:\n  n1: {{allocations: [{}]}}",
        names.join(", ")
    )
    .unwrap();
    let report = refused(&yaml, &ctx());
    assert!(
        report.contains("expands to more than") && report.contains("bytes"),
        "{}",
        &report[..report.len().min(500)]
    );
}

#[test]
fn placeholders_cannot_expand_a_document_without_bound() {
    let dir = tempdir("ph-amp");
    std::fs::write(dir.join("big"), "b".repeat(1 << 20)).unwrap();
    let c = Context::with_vars(HashMap::new(), &dir);
    let many = "${file:big}".repeat(100);
    let body = format!("{RESOURCES}{DOCKER}    dns_name: \"{many}\"\n");
    let report = refused(&one_allocation("", &body), &c);
    assert!(
        report.contains("expands to more than") && report.contains("placeholder"),
        "{}",
        &report[..report.len().min(500)]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_placeholders_read_regular_files_only_and_at_most_1_mib() {
    let c = Context::with_vars(HashMap::new(), "/");
    // `/dev/zero` has length 0 in its metadata and never ends.
    let body = format!("{RESOURCES}{DOCKER}    dns_name: \"${{file:/dev/zero}}\"\n");
    let report = refused(&one_allocation("", &body), &c);
    assert!(report.contains("not a regular file"), "{report}");
}

#[test]
fn long_dependency_chains_need_no_deep_stack() {
    // 6 000 allocations each depending on the next, and the last on the first: validated on
    // a thread with a small stack (the old validation recursed once per link).
    let n = 6_000;
    let mut yaml = String::from(
        "version: V1\nx: &base {executor: docker, type: task, resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}, execution: {type: docker, image: nginx}}\nallocations:\n",
    );
    let mut names = Vec::new();
    for i in 0..n {
        writeln!(
            yaml,
            "  a{i}: {{<<: *base, depends_on: [a{}]}}",
            (i + 1) % n
        )
        .unwrap();
        names.push(format!("a{i}"));
    }
    writeln!(
        yaml,
        "nodes:\n  n1: {{allocations: [{}]}}",
        names.join(", ")
    )
    .unwrap();
    let report = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || refused(&yaml, &ctx()))
        .unwrap()
        .join()
        .unwrap();
    let cycle = report
        .lines()
        .find(|l| l.contains("dependency cycle"))
        .unwrap_or_else(|| panic!("no cycle in {}", &report[..report.len().min(500)]));
    // The cycle is named, but not as 6 000 names.
    assert!(cycle.contains("a0 → a1"), "{cycle}");
    assert!(cycle.len() < 1_000, "{} bytes", cycle.len());
    assert!(cycle.contains("6000"), "{cycle}");
}

#[test]
fn ordinary_anchors_aliases_and_templates_still_work() {
    let yaml = "version: V1\nresources:\n  small: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}\nx-web: &web\n  executor: docker\n  type: service\n  resources: small\n  execution: &exec {type: docker, image: nginx}\nallocations:\n  a: *web\n  b: {<<: *web, depends_on: [a]}\n  c: {executor: docker, type: task, resources: {template: small, ram: {size: 2}}, execution: *exec}\nnodes:\n  n1: {allocations: [a, b, c]}\n";
    let parsed = parse_str(yaml, &ctx()).unwrap();
    let e = &parsed.ensemble;
    assert_eq!(e.allocations.len(), 3);
    assert_eq!(e.allocations[1].depends_on, ["a"]);
    assert_eq!(e.allocations[2].resources.ram.size, 2 << 30);
    assert_eq!(e.allocations[2].resources.cpu.cores, 1.0);
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nunet-limits-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

    /// Any text made of YAML's punctuation is read or refused, never a panic.
    #[test]
    fn yaml_punctuation_never_panics(text in "[-:\\[\\]{}&*!|>'\" a-c0-1\n#?,<$%@`~.]{0,120}") {
        let _ = tree::parse(&text);
        let _ = parse_str(&text, &ctx());
    }

    /// Small ensembles with aliases, merges and placeholders in random places.
    #[test]
    fn ensemble_shaped_text_never_panics(
        parts in proptest::collection::vec(
            proptest::sample::select(vec![
                "version: V1\n", "allocations:\n", "  a: &a\n", "    executor: docker\n",
                "    type: task\n", "    resources: t\n", "    <<: *a\n", "  b: *a\n",
                "resources:\n", "  t: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}\n",
                "nodes:\n", "  n: {allocations: [a, b]}\n", "    depends_on: [b, a]\n",
                "    execution: {type: docker, image: x, params: {env: 1}}\n",
                "    environment: [A=1, A=2, \"${X:-}\"]\n", "- ", "? k\n", ": v\n",
            ]),
            0..24,
        )
    ) {
        let _ = parse_str(&parts.concat(), &ctx());
    }
}
