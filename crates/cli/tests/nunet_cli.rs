//! NuNet's command-line habits: `version`, shell completions, the global flags that set one
//! configuration key (`--rest-addr`, `--rest-port`, `--data-dir`, `--debug`) and
//! `deploy --spec-file`.
#![allow(clippy::unwrap_used)]

mod common;

use common::Node;

#[test]
fn version_prints_nunets_layout_with_the_commit() {
    let out = Node::new().run(&["version"]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "NuNet Device Management Service");
    assert_eq!(lines[1], format!("Version: {}", env!("CARGO_PKG_VERSION")));
    let commit = lines[2].strip_prefix("Commit: ").unwrap();
    // Built from a git checkout (as here and in CI), the commit is the checkout's.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(head) = head {
        assert_eq!(commit, head);
    }
    assert!(lines[4].starts_with("Rust Version: rustc "), "{out}");
}

#[test]
fn bash_completion_completes_commands_and_flags() {
    let n = Node::new();
    let script = n.run(&["completion", "bash"]).ok();
    let file = n.home.with_file_name("nunet.bash");
    std::fs::write(&file, &script).unwrap();
    let complete = |words: &str, cword: usize| {
        let o = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE=\"{words}\"; \
                 COMP_POINT=${{#COMP_LINE}}; \
                 _nunet nunet \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[@]}}\"",
                file.display()
            ))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let top = complete("nunet ca", 1);
    assert_eq!(top, "cap", "{top}");
    let sub = complete("nunet cap gr", 2);
    assert_eq!(sub, "grant", "{sub}");
    let flags = complete("nunet deploy --sp", 2);
    assert!(flags.contains("--spec-file"), "{flags}");
    // The other shells get their own syntax (checked by the shell where it is installed).
    let zsh = n.run(&["completion", "zsh"]).ok();
    assert!(zsh.starts_with("#compdef nunet"), "{}", &zsh[..40]);
    let fish = n.run(&["completion", "fish"]).ok();
    assert!(fish.contains("complete -c nunet"), "{}", &fish[..80]);
    // NuNet's older name for the command.
    assert_eq!(n.run(&["autocomplete", "bash"]).ok(), script);
    let bad = n.run(&["completion", "tcsh"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("possible values"), "{}", bad.stderr);
}

#[test]
fn global_flags_set_one_key_for_one_command() {
    let n = Node::new();
    n.run(&["config", "set", "rest.port", "7001"]).ok();
    assert_eq!(n.run(&["config", "get", "rest.port"]).ok(), "7001");
    // Flag > DMS_* environment > file, before or after the subcommand.
    assert_eq!(
        n.run(&["--rest-port", "7002", "config", "get", "rest.port"])
            .ok(),
        "7002"
    );
    let r = common::to_run(
        n.cmd(&["config", "get", "rest.port", "--rest-port", "7003"])
            .env("DMS_REST_PORT", "7004")
            .output()
            .unwrap(),
    );
    assert_eq!(r.ok(), "7003");
    let data = n.home.join("elsewhere");
    let got = n
        .run(&[
            "config",
            "get",
            "general.data_dir",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(got, data.display().to_string());
    assert_eq!(
        n.run(&["config", "get", "general.debug", "--debug"]).ok(),
        "true"
    );
    // Nothing was written: the flags last one command.
    assert_eq!(n.run(&["config", "get", "rest.port"]).ok(), "7001");
    // The CLI calls the daemon where the flags say.
    let r = n.run(&[
        "--rest-addr",
        "127.0.0.1",
        "--rest-port",
        "1",
        "get",
        "deployments",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("127.0.0.1:1"), "{}", r.stderr);
    // `--debug` before the subcommand does not swallow it; `--debug=false` turns it off.
    assert_eq!(
        n.run(&["--debug", "config", "get", "general.debug"]).ok(),
        "true"
    );
    assert_eq!(
        n.run(&["--debug=false", "config", "get", "general.debug"])
            .ok(),
        "false"
    );
    // NuNet's profiler and work-dir flags name what this node does not have: refused.
    for flag in ["--profiler-enabled", "--work-dir=/tmp"] {
        let r = n.run(&[flag, "config", "get"]);
        assert_ne!(r.code, 0, "{flag}");
    }
    // A command that reads no configuration refuses them instead of ignoring them.
    let r = n.run(&["--rest-port", "7005", "version"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("does not read it"), "{}", r.stderr);
    // --data-dir used to name the home: a directory holding a home's files is refused.
    let r = n.run(&["--data-dir", n.home.to_str().unwrap(), "config", "get"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--user-dir"), "{}", r.stderr);
    // --user-dir is the home (NUNET_HOME's flag), and wins over the variable.
    let other = n.home.with_file_name("other-home");
    let r = n.run(&[
        "--user-dir",
        other.to_str().unwrap(),
        "config",
        "get",
        "rest.port",
    ]);
    assert_eq!(r.ok(), "9999");
    assert_eq!(n.run(&["config", "get", "rest.port"]).ok(), "7001");
}

#[test]
fn deploy_takes_nunets_spec_file_spelling() {
    let n = Node::new();
    let r = n.run(&["deploy", "--spec-file", "/nonexistent/ensemble.yaml"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("/nonexistent/ensemble.yaml"),
        "{}",
        r.stderr
    );
}

#[test]
fn cap_anchor_revoke_takes_revocations_as_nunet_does() {
    let n = Node::new();
    n.run(&["cap", "new", "org"]).ok();
    n.run(&["cap", "new", "dms"]).ok();
    let user = n.run(&["cap", "new", "user"]).ok();
    let grant = n
        .run(&[
            "cap",
            "grant",
            "-c",
            "org",
            "--cap",
            "/dms",
            "--duration",
            "1h",
            &user,
        ])
        .ok();
    let revocation = n.run(&["cap", "revoke", "-c", "org", &grant]).ok();
    let list = n.run(&["cap", "list", "-c", "dms"]).ok();
    assert!(list.contains("revocations (0)"), "{list}");
    n.run(&["cap", "anchor", "-c", "dms", "--revoke", &revocation])
        .ok();
    let list = n.run(&["cap", "list", "-c", "dms"]).ok();
    assert!(list.contains("revocations (1)"), "{list}");
    // A token that is not a revocation is refused (revoking is `cap revoke`), and a
    // revocation cannot be removed.
    let r = n.run(&["cap", "anchor", "-c", "dms", "--revoke", &grant]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("takes revocation tokens"), "{}", r.stderr);
    let r = n.run(&["cap", "remove", "-c", "dms", "--revoke", &revocation]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("cannot be removed"), "{}", r.stderr);
}
