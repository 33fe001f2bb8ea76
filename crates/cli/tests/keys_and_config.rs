//! `nunet key` and `nunet config` through the real binary.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
use std::os::unix::fs::PermissionsExt;

use common::Node;

#[test]
fn keys() {
    let n = Node::new();
    let did = n.run(&["key", "new", "alice"]).ok();
    assert!(did.starts_with("did:key:z6Mk"), "{did}");
    let file = n.path("key/alice.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(n.run(&["key", "did", "alice"]).ok(), did);
    assert!(
        n.run(&["key", "list"])
            .ok()
            .contains(&format!("alice\t{did}"))
    );
    // Never overwritten.
    let again = n.run(&["key", "new", "alice"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"));
    // Wrong passphrase: clear error, exit 1.
    n.run(&["cap", "new", "alice"]).ok();
    let wrong = n
        .cmd(&[
            "cap",
            "grant",
            "-c",
            "alice",
            "--cap",
            "/x",
            "--duration",
            "1h",
            &did,
        ])
        .env("DMS_PASSPHRASE", "nope")
        .output()
        .unwrap();
    let wrong = common::to_run(wrong);
    assert_eq!(wrong.code, 1);
    assert!(
        wrong.stderr.contains("wrong passphrase"),
        "{}",
        wrong.stderr
    );
    // No passphrase and no terminal: says how to give one.
    let none = common::to_run(
        n.cmd(&["key", "new", "bob"])
            .env_remove("DMS_PASSPHRASE")
            .output()
            .unwrap(),
    );
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("DMS_PASSPHRASE"), "{}", none.stderr);
    // A corrupted key file is reported, not a panic.
    std::fs::write(&file, "{\"version\":1,").unwrap();
    let bad = n.run(&[
        "cap",
        "grant",
        "-c",
        "alice",
        "--cap",
        "/x",
        "--duration",
        "1h",
        &did,
    ]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("corrupted"), "{}", bad.stderr);
    assert!(!bad.stderr.contains("panicked"));
    // Missing key.
    let missing = n.run(&["key", "did", "carol"]);
    assert!(
        missing.stderr.contains("no key named \"carol\""),
        "{}",
        missing.stderr
    );
}

/// The NuNet key fixtures of `crates/did/tests/fixtures`: their directory, their passphrase,
/// and the DID of each file (written by `make-nunet-keys.py`).
struct NuNetKeys {
    dir: std::path::PathBuf,
    pass: String,
    dids: std::collections::HashMap<String, String>,
}

fn nunet_keys() -> NuNetKeys {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../did/tests/fixtures");
    let text = std::fs::read_to_string(dir.join("nunet-keys.expected")).unwrap();
    let mut pass = String::new();
    let mut dids = std::collections::HashMap::new();
    for line in text.lines() {
        let (k, v) = line.split_once(' ').unwrap();
        if k == "passphrase" {
            pass = v.to_string();
        } else {
            dids.insert(k.to_string(), v.to_string());
        }
    }
    NuNetKeys { dir, pass, dids }
}

/// NuNet's key files: imported as they are, unlocked with their passphrase, and usable to
/// sign; `key new --format nunet` writes one NuNet's DMS can open.
#[test]
fn nunet_key_files() {
    let n = Node::new();
    let k = nunet_keys();
    let (fixtures, pass, want) = (&k.dir, k.pass.as_str(), k.dids["nunet-user.json"].as_str());
    let with_pass = |args: &[&str], p: &str| {
        common::to_run(n.cmd(args).env("DMS_PASSPHRASE", p).output().unwrap())
    };
    let file = fixtures.join("nunet-user.json");
    let file = file.to_str().unwrap();
    // A wrong passphrase imports nothing.
    let wrong = with_pass(&["key", "import", file, "--name", "user"], "nope");
    assert_eq!(wrong.code, 1);
    assert!(
        wrong.stderr.contains("wrong passphrase"),
        "{}",
        wrong.stderr
    );
    assert!(!n.path("key/user.json").exists());
    assert_eq!(
        with_pass(&["key", "import", file, "--name", "user"], pass).ok(),
        want
    );
    // The DID is encrypted in NuNet's files: `key list` says so, `key did` unlocks.
    let list = n.run(&["key", "list"]).ok();
    assert!(
        list.contains("user\t(DID encrypted") && list.contains("NuNet keystore v3"),
        "{list}"
    );
    assert_eq!(with_pass(&["key", "did", "user"], pass).ok(), want);
    // The imported key signs: a context on it, and a token it grants.
    assert_eq!(with_pass(&["cap", "new", "user"], pass).ok(), want);
    let tok = with_pass(
        &[
            "cap",
            "grant",
            "-c",
            "user",
            "--cap",
            "/dms",
            "--duration",
            "1h",
            want,
        ],
        pass,
    )
    .ok();
    assert!(tok.contains(want), "{tok}");
    // A NuNet-format key made here opens with NuNet's algorithms (the same reader).
    let did = n.run(&["key", "new", "nk", "--format", "nunet"]).ok();
    let text = std::fs::read_to_string(n.path("key/nk.json")).unwrap();
    assert!(
        text.contains("\"version\": 3") && text.contains("aes-256-ctr"),
        "{text}"
    );
    assert_eq!(n.run(&["key", "did", "nk"]).ok(), did);
    // A secp256k1 key is named, not misread.
    let secp = fixtures.join("nunet-secp256k1.json");
    let secp = with_pass(&["key", "import", secp.to_str().unwrap()], pass);
    assert_eq!(secp.code, 1);
    assert!(secp.stderr.contains("secp256k1"), "{}", secp.stderr);
}

/// NuNet's config habits: its files load with warnings for what is not used, its places are
/// searched when the home is the default ~/.nunet, and rewrites keep a backup.
#[test]
fn nunet_config_files_and_places() {
    let n = Node::new();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/fixtures");
    std::fs::create_dir_all(&n.home).unwrap();
    std::fs::copy(
        fixtures.join("nunet-flat-observability.json"),
        n.path("dms_config.json"),
    )
    .unwrap();
    let get = n.run(&["config", "get", "observability.logging.level"]);
    assert_eq!(get.code, 0, "{}", get.stderr);
    assert_eq!(get.stdout.trim(), "debug");
    assert!(
        get.stderr
            .contains("observability.log_level is NuNet's deprecated spelling"),
        "{}",
        get.stderr
    );
    assert!(get.stderr.contains("apm.* (4 keys)"), "{}", get.stderr);
    // NuNet's storage mode keys are read (a storage node serves /dms/volume/*).
    let path = n.run(&["config", "path"]).ok();
    assert!(!path.contains("warning: general.storage_"), "{path}");
    let host = n.run(&["config", "get", "general.storage_glusterfs_hostname"]);
    assert_eq!(host.stdout.trim(), "host", "{}", host.stderr);
    // `config set` keeps NuNet's keys and the previous file.
    let set = n.run(&["config", "set", "REST.PORT", "9555"]);
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(set.stderr.contains(".bk."), "{}", set.stderr);
    let text = std::fs::read_to_string(n.path("dms_config.json")).unwrap();
    assert!(
        text.contains("elasticsearch_url") && text.contains("9555"),
        "{text}"
    );
    // With the default home (~/.nunet), ./dms_config.json is read as NuNet reads it.
    let user = tempfile::tempdir().unwrap();
    let cwd = user.path().join("project");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(cwd.join("dms_config.json"), r#"{"Rest": {"Port": 9777}}"#).unwrap();
    let mut c = n.cmd(&["config", "path"]);
    c.env_remove("NUNET_HOME")
        .env("HOME", user.path())
        .env_remove("XDG_CONFIG_HOME")
        .current_dir(&cwd);
    let out = common::to_run(c.output().unwrap()).ok();
    assert!(out.contains("project/dms_config.json"), "{out}");
    let mut c = n.cmd(&["config", "get", "rest.port"]);
    c.env_remove("NUNET_HOME")
        .env("HOME", user.path())
        .current_dir(&cwd);
    assert_eq!(common::to_run(c.output().unwrap()).ok(), "9777");
    // A home given explicitly is self-contained: the current directory is not searched.
    let mut c = n.cmd(&["config", "get", "rest.port"]);
    c.current_dir(&cwd);
    assert_eq!(common::to_run(c.output().unwrap()).ok(), "9555");
}

/// A home as NuNet's DMS leaves it (keystore-v3 keys, `cap/*.cap` contexts, a NuNet-shaped
/// dms_config.json) runs a node unchanged, and its user context grants in NuNet's format.
#[test]
fn a_nunet_home_runs_as_it_is() {
    use std::io::Read;
    let n = Node::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let k = nunet_keys();
    let (keys, pass) = (&k.dir, k.pass.as_str());
    let did_of = |f: &str| k.dids[f].clone();
    let (dms, user) = (did_of("nunet-dms.json"), did_of("nunet-user.json"));
    for d in ["key", "cap"] {
        std::fs::create_dir_all(n.path(d)).unwrap();
    }
    std::fs::copy(keys.join("nunet-dms.json"), n.path("key/dms.json")).unwrap();
    std::fs::copy(keys.join("nunet-user.json"), n.path("key/user.json")).unwrap();
    let cap = |did: &str, roots: &[&str]| {
        let roots: Vec<String> = roots
            .iter()
            .map(|r| format!("{{\"uri\":\"{r}\"}}"))
            .collect();
        format!(
            "{{\"did\":{{\"uri\":\"{did}\"}},\"roots\":[{}],\"require\":{{}},\"provide\":{{}},\"revoke\":{{}}}}\n",
            roots.join(",")
        )
    };
    std::fs::write(n.path("cap/dms.cap"), cap(&dms, &[&user])).unwrap();
    std::fs::write(n.path("cap/user.cap"), cap(&user, &[])).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("config/tests/fixtures/nunet-newest.json")).unwrap(),
    )
    .unwrap();
    let home = n.home.to_str().unwrap();
    config["general"]["user_dir"] = home.into();
    config["general"]["work_dir"] = format!("{home}/work").into();
    config["general"]["data_dir"] = format!("{home}/data").into();
    config["rest"]["port"] = 0.into();
    config["p2p"]["listen_address"] =
        serde_json::json!(["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]);
    config["p2p"]["bootstrap_peers"] = serde_json::json!([]);
    config["observability"]["logging"]["file"] = "".into();
    std::fs::write(n.path("dms_config.json"), config.to_string()).unwrap();

    let mut daemon = n
        .cmd(&["run", "-c", "dms"])
        .env("DMS_PASSPHRASE", pass)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.0.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    let _kill = Kill(daemon.id());
    let t0 = std::time::Instant::now();
    let me = loop {
        let o = common::to_run(
            n.cmd(&[
                "actor",
                "cmd",
                "-c",
                "user",
                "--json",
                "/dms/node/peers/self",
            ])
            .env("DMS_PASSPHRASE", pass)
            .output()
            .unwrap(),
        );
        if o.code == 0 {
            break o.stdout;
        }
        if t0.elapsed() > std::time::Duration::from_secs(60) || daemon.try_wait().unwrap().is_some()
        {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &daemon.id().to_string()])
                .status();
            let mut err = String::new();
            daemon
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the NuNet home did not come up: {}\n{err}", o.stderr);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let v: serde_json::Value = serde_json::from_str(&me).unwrap();
    assert_eq!(v["did"], dms.as_str(), "{me}");
    // The user context came from NuNet: it grants in NuNet's format by default.
    let tok = common::to_run(
        n.cmd(&[
            "cap",
            "grant",
            "-c",
            "user",
            "--cap",
            "/dms",
            "--duration",
            "1h",
            &dms,
        ])
        .env("DMS_PASSPHRASE", pass)
        .output()
        .unwrap(),
    )
    .ok();
    assert!(
        tok.contains(&format!("\"iss\":{{\"uri\":\"{user}\"}}")),
        "{tok}"
    );
    // NuNet's files are left as they were.
    assert_eq!(
        std::fs::read_to_string(n.path("cap/dms.cap")).unwrap(),
        cap(&dms, &[&user])
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
}

#[test]
fn config_get_set_edit_and_env() {
    let n = Node::new();
    assert_eq!(n.run(&["config", "get", "rest.port"]).ok(), "9999");
    n.run(&["config", "set", "rest.port", "9100"]).ok();
    assert_eq!(n.run(&["config", "get", "rest.port"]).ok(), "9100");
    let text = std::fs::read_to_string(n.path("dms_config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v, serde_json::json!({"rest": {"port": 9100}}));
    // Env override wins.
    let o = common::to_run(
        n.cmd(&["config", "get", "rest.port"])
            .env("DMS_REST_PORT", "9200")
            .output()
            .unwrap(),
    );
    assert_eq!(o.stdout.trim(), "9200");
    // Unknown keys and bad values name the key.
    let e = n.run(&["config", "set", "rest.prot", "1"]);
    assert!(
        e.code == 1 && e.stderr.contains("did you mean"),
        "{}",
        e.stderr
    );
    let e = n.run(&["config", "set", "rest.port", "many"]);
    assert!(
        e.code == 1 && e.stderr.contains("rest.port"),
        "{}",
        e.stderr
    );
    let e = n.run(&["config", "get", "nope.key"]);
    assert_eq!(e.code, 1);
    // edit: a scripted editor changes the file; an invalid edit leaves it untouched.
    let ok = common::to_run(
        n.cmd(&["config", "edit"])
            .env("EDITOR", "sed -i 's/9100/9300/'")
            .env_remove("VISUAL")
            .output()
            .unwrap(),
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(n.run(&["config", "get", "rest.port"]).ok(), "9300");
    let bad = common::to_run(
        n.cmd(&["config", "edit"])
            .env("EDITOR", "sed -i 's/rest/rets/'")
            .env_remove("VISUAL")
            .output()
            .unwrap(),
    );
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("unknown config key") && bad.stderr.contains("unchanged"),
        "{}",
        bad.stderr
    );
    assert_eq!(n.run(&["config", "get", "rest.port"]).ok(), "9300");
    // A broken file stops every command with the file's name.
    std::fs::write(n.path("dms_config.json"), "{\"rest\": ").unwrap();
    let e = n.run(&["config", "get", "rest.port"]);
    assert!(
        e.code == 1 && e.stderr.contains("dms_config.json") && e.stderr.contains("not valid JSON"),
        "{}",
        e.stderr
    );
}
