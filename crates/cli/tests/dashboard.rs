//! The web dashboard on a real devnet: `nunet dashboard` prints a URL with a one-time code, the
//! API answers only with this run's token and only to loopback `Host`s, and the page, driven in headless Chromium (Debian's `chromium` through
//! playwright-core from `crates/dashboard/web/node_modules`, which `.ci/install-runtimes.sh`
//! installs), shows the node, its peers, a deployment's timeline and allocations, and a live
//! log view that keeps updating, with no console errors. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/dashboard-screenshots` (or `$NUNET_SCREENSHOTS`).
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use deploy_support::*;
use serde_json::Value;

/// Two services on two providers, each printing a numbered line twice a second.
const TICKERS: &str = r#"version: V1
allocations:
  a:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.5}, ram: {size: 128MiB}, disk: {size: 100MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sh, -c, 'i=0; while true; do echo "tick a $i"; i=$((i+1)); sleep 0.5; done']
  b:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.5}, ram: {size: 128MiB}, disk: {size: 100MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sh, -c, 'i=0; while true; do echo "tick b $i" >&2; i=$((i+1)); sleep 0.5; done']
nodes:
  node-a:
    allocations: [a]
  node-b:
    allocations: [b]
"#;

/// GET `url` with optional headers; the status and body.
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboard/web")
}

#[test]
fn dashboard_shows_the_node_a_deployment_and_its_live_output_in_chromium() {
    let dn = Devnet::up(0);
    // The orchestrating node is a provider too: its dashboard shows onboarded resources.
    for n in 1..=3 {
        dn.onboard(n);
    }
    let v = dn.deploy_running(1, TICKERS);
    let id = v["id"].as_str().unwrap().to_string();
    let _containers = Containers(id.clone());

    let d = dn.json(1, &["dashboard", "--json"]);
    let url = d["url"].as_str().unwrap().to_string();
    assert_eq!(d["expires_in_s"], 60, "{d}");
    let token_file = PathBuf::from(d["token_file"].as_str().unwrap());
    let (base, code) = url.split_once("/ui/#code=").unwrap();
    assert_eq!(code.len(), 32, "{url}");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        !url.contains(&token),
        "the token itself is never in the URL"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the token file is the node owner's only"
        );
    }

    // The API: the token is required, and only for a loopback Host.
    let node = format!("{base}/api/v1/ui/node");
    let bearer = format!("Bearer {token}");
    let (code, body) = get(&node, &[]);
    assert_eq!(code, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nunet dashboard"),
        "{body}"
    );
    let wrong = format!("Bearer {}", "0".repeat(64));
    assert_eq!(get(&node, &[("Authorization", &wrong)]).0, 401);
    let (code, body) = get(
        &node,
        &[("Authorization", &bearer), ("Host", "evil.example:80")],
    );
    assert_eq!(code, 403, "a rebound DNS name is refused: {body}");
    let (code, body) = get(&node, &[("Authorization", &bearer)]);
    assert_eq!(code, 200, "{body}");
    let did = body["status"]["did"].as_str().unwrap().to_string();
    assert_eq!(
        did,
        dn.json(1, &["actor", "cmd", "--json", "/public/status"])["did"]
    );
    let (code, body) = get(
        &format!("{base}/api/v1/ui/deployments/{id}"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["summary"]["status"], "Running", "{body}");
    assert_eq!(
        body["timeline"].as_array().unwrap().last().unwrap()["phase"],
        "Running",
        "{body}"
    );
    let (code, body) = get(
        &format!("{base}/api/v1/ui/deployments/nope00"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(code, 404, "{body}");
    // The page itself holds no data and needs no token; its scripts are served with it.
    let (code, _) = get(&format!("{base}/ui/"), &[]);
    assert_eq!(code, 200);

    // The page in Chromium.
    let out = std::env::var_os("NUNET_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots"));
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        web_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: cd crates/dashboard/web && npm ci (.ci/install-runtimes.sh does)"
    );
    let o = Command::new("node")
        .current_dir(web_dir())
        .args([
            "e2e/dashboard.mjs",
            "--url",
            &url,
            "--deployment",
            &id,
            "--did",
            &did,
            "--peers",
            "2",
            "--allocations",
            "2",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .expect("node (Node.js) runs");
    let report = text(&o);
    assert!(
        o.status.success(),
        "dashboard checks in Chromium:\n{report}"
    );
    assert!(report.contains("all dashboard checks passed"), "{report}");
    for shot in ["node.png", "deployments.png", "deployment.png"] {
        let png = std::fs::read(out.join(shot)).unwrap_or_else(|e| panic!("{shot}: {e}"));
        assert!(
            png.len() > 10_000 && png.starts_with(b"\x89PNG"),
            "{shot}: {} bytes",
            png.len()
        );
    }
    eprintln!("{report}\nscreenshots in {}", out.display());
}
