//! Inputs and outputs end to end against a real S3-compatible store (Garage on loopback,
//! `scripts/s3-test-server.sh`) on a 3-node devnet with real daemons, libp2p and dockerd: a
//! task gets an input prefix staged read-only, transforms it, and its output directory is
//! published to the bucket, whose bytes are checked; the credentials passed with `deploy
//! --secret` never reach a daemon's disk or log. Wrong credentials, a missing key and an
//! unreachable endpoint each fail the deployment with the reason.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use deploy_support::*;
use nunet_ensemble::data::S3Credentials;
use nunet_ensemble::spec::ObjectLocation;
use nunet_objectstore::Store;
use serde_json::Value;

fn s3_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("NUNET_TEST_S3_DIR").unwrap_or_else(|_| "/var/lib/nunet-test/garage".into()),
    )
}

fn server() -> (String, PathBuf, S3Credentials) {
    let dir = s3_dir();
    let file = dir.join("credentials");
    let creds = std::fs::read_to_string(&file).expect(
        "no test S3 server: run scripts/s3-test-server.sh (as .ci/install-runtimes.sh does)",
    );
    let endpoint = std::fs::read_to_string(dir.join("endpoint")).unwrap();
    (
        endpoint.trim().to_string(),
        file,
        S3Credentials::parse(&creds).unwrap(),
    )
}

fn bucket(endpoint: &str, creds: &S3Credentials, what: &str) -> (String, Store) {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("e2e-{what}-{}-{n}", std::process::id());
    let loc = ObjectLocation {
        endpoint: endpoint.to_string(),
        region: "garage".into(),
        bucket: name.clone(),
        key: String::new(),
    };
    let store = Store::new(&loc, Some(creds), true, Duration::from_secs(20)).unwrap();
    store.create_bucket().unwrap();
    (name, store)
}

fn put(store: &Store, key: &str, body: &str) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), body).unwrap();
    store.put_from(key, f.path()).unwrap();
}

/// A task with `inputs`/`outputs` given as YAML lines, running `cmd`.
fn task(dir: &Path, name: &str, data: &str, cmd: &str) -> String {
    let yaml = format!(
        "version: V1\n\
         allocations:\n  job:\n    executor: docker\n    type: task\n\
         \x20   resources: {{cpu: {{cores: 0.1}}, ram: {{size: 64MiB}}, disk: {{size: 64MiB}}}}\n\
         \x20   execution:\n      type: docker\n      image: nunet-test/busybox:latest\n\
         \x20     cmd: [sh, -c, \"{cmd}\"]\n\
         {data}\
         nodes:\n  n1:\n    allocations: [job]\n"
    );
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p.display().to_string()
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(p);
            } else if meta.is_file()
                && let Ok(data) = std::fs::read(&p)
                && data.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn a_task_stages_an_input_transforms_it_and_publishes_its_output() {
    let (endpoint, cred_file, creds) = server();
    let (b, store) = bucket(&endpoint, &creds, "io");
    put(&store, "in/words.txt", "hello from the bucket\n");
    put(&store, "in/sub/more.txt", "second object\n");
    let dn = Devnet::up(0);
    dn.onboard(2);
    let data = format!(
        "    inputs:\n      - {{source: \"s3://{b}/in/\", endpoint: \"{endpoint}\", region: garage, credentials: store, path: /in}}\n\
         \x20   outputs:\n      - {{target: \"s3://{b}/results/run1\", endpoint: \"{endpoint}\", region: garage, credentials: store, path: /out}}\n"
    );
    let cmd = "tr a-z A-Z < /in/words.txt > /out/upper.txt && mkdir /out/deep && \
               cp /in/sub/more.txt /out/deep/copy.txt && \
               (echo x > /in/w 2>/dev/null && echo input-writable || echo input-read-only) > /out/mode.txt";
    let file = task(&dn.dir, "io", &data, cmd);
    let secret_arg = format!("store={}", cred_file.display());
    let (code, out) = dn.run(
        1,
        &[
            "deploy",
            "-f",
            &file,
            "-t",
            "90s",
            "--json",
            "--secret",
            &secret_arg,
        ],
    );
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"], "Completed", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let _guard = Containers(id.clone());

    let get = |k: &str| String::from_utf8(store.get_bytes(k, 1 << 20).unwrap()).unwrap();
    assert_eq!(get("results/run1/upper.txt"), "HELLO FROM THE BUCKET\n");
    assert_eq!(get("results/run1/deep/copy.txt"), "second object\n");
    assert_eq!(get("results/run1/mode.txt"), "input-read-only\n");
    let keys: Vec<String> = store
        .list("results/", 100)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        keys,
        [
            "results/run1/deep/copy.txt",
            "results/run1/mode.txt",
            "results/run1/upper.txt"
        ]
    );
    // The status says where the outputs went.
    let status = dn.run(1, &["deployment", "status", &id, "--json"]).1;
    assert!(
        status.contains(&format!("s3://{b}/results/run1")),
        "{status}"
    );

    // The secret reached no daemon's disk or log (records, databases, logs of every node).
    let secret = creds.secret_access_key.expose().as_bytes();
    let leaks = files_containing(&dn.dir, secret);
    assert!(leaks.is_empty(), "the secret key was written to {leaks:?}");
}

#[test]
fn wrong_credentials_a_missing_key_and_an_unreachable_store_fail_with_the_reason() {
    let (endpoint, cred_file, creds) = server();
    let (b, store) = bucket(&endpoint, &creds, "fail");
    put(&store, "in/x.txt", "x\n");
    let dn = Devnet::up(0);
    dn.onboard(2);
    let wrong = dn.dir.join("wrong-credentials");
    std::fs::write(
        &wrong,
        format!(
            "aws_access_key_id = {}\naws_secret_access_key = not-the-secret\n",
            creds.access_key_id
        ),
    )
    .unwrap();
    let input = |source: &str, endpoint: &str| {
        format!(
            "    inputs:\n      - {{source: \"{source}\", endpoint: \"{endpoint}\", region: garage, credentials: store, path: /in}}\n"
        )
    };
    let cases = [
        (
            "wrong-credentials",
            input(&format!("s3://{b}/in/x.txt"), &endpoint),
            wrong.clone(),
            "access denied",
        ),
        (
            "missing-key",
            input(&format!("s3://{b}/in/nope.txt"), &endpoint),
            cred_file.clone(),
            "NoSuchKey",
        ),
        // Nothing listens on port 1.
        (
            "unreachable",
            input(&format!("s3://{b}/in/x.txt"), "http://127.0.0.1:1"),
            cred_file.clone(),
            "cannot reach http://127.0.0.1:1",
        ),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(name, data, secret, _)| {
            let file = task(&dn.dir, name, data, "cat /in/*");
            let arg = format!("store={}", secret.display());
            let dir = dn.dir.clone();
            std::thread::spawn(move || {
                let o = nunet(
                    &dir,
                    Some("node-1"),
                    &[
                        "deploy", "-f", &file, "-t", "25s", "--json", "--secret", &arg,
                    ],
                );
                (o.status.code().unwrap_or(-1), text(&o))
            })
        })
        .collect();
    for ((name, _, _, why), run) in cases.iter().zip(runs) {
        let (code, out) = run.join().unwrap();
        assert_ne!(code, 0, "{name}: {out}");
        let d: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        let id = d["id"].as_str().unwrap_or_default().to_string();
        let _guard = Containers(id.clone());
        let status = dn.run(1, &["deployment", "status", &id, "--json"]).1;
        assert!(
            status.contains(why),
            "{name}: the reason ({why}) is not given: {out}\n{status}"
        );
        assert!(!status.contains("not-the-secret"), "{name}: {status}");
        assert_eq!(containers_of(&id), "", "{name}: a container was created");
    }

    // A secret that no input names, or an input naming a secret not given, is refused at once.
    let file = task(
        &dn.dir,
        "unnamed",
        &input(&format!("s3://{b}/in/x.txt"), &endpoint),
        "true",
    );
    let (code, out) = dn.run(1, &["deploy", "-f", &file, "-t", "25s"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("names the secret \"store\", which the deployment was not given"),
        "{out}"
    );
    let extra = format!("spare={}", cred_file.display());
    let store_arg = format!("store={}", cred_file.display());
    let (code, out) = dn.run(
        1,
        &[
            "deploy", "-f", &file, "-t", "25s", "--secret", &store_arg, "--secret", &extra,
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("secret \"spare\" is given but no input or output names it"),
        "{out}"
    );
}
