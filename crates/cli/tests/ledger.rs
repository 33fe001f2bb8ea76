//! Capability contexts held by a Ledger wallet, as NuNet names them (`ledger`,
//! `ledger:<alias>`), signed through the external signer interface by a software wallet that
//! speaks ledger-cli's protocol (`crates/did/tests/fixtures/soft-ledger.py`). A Ledger-signed
//! grant (EIP-191 over NuNet's token JSON) anchors a chain that the node's context verifies.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::Node;
use nunet_did::{Did, SecpKeypair};

const SECRET: &str = "2a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40414243444546474849";

/// A `ledger-cli` stand-in holding `secret`.
fn wallet(dir: &Path, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../did/tests/fixtures/soft-ledger.py");
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nSOFT_LEDGER_SECRET={secret} exec python3 {} \"$@\"\n",
            script.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn eth_did(secret: &str, account: u8) -> Did {
    let mut s: [u8; 32] = hex_bytes(secret).try_into().unwrap();
    s[31] += account;
    Did::from_eth(&SecpKeypair::from_secret(&s).unwrap().public())
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

/// `nunet <args>` with `program` as the wallet (`NUNET_LEDGER_CLI`).
fn run_with(n: &Node, program: &Path, args: &[&str]) -> common::Run {
    common::to_run(
        n.cmd(args)
            .env("NUNET_LEDGER_CLI", program)
            .output()
            .unwrap(),
    )
}

#[test]
fn a_ledger_context_grants_and_its_chain_verifies_at_the_node() {
    let n = Node::new();
    let tools = tempfile::tempdir().unwrap();
    let ledger = wallet(tools.path(), "ledger-cli", SECRET);
    let with_ledger = |args: &[&str]| run_with(&n, &ledger, args);
    // The context's DID is the wallet's Ethereum key, as NuNet names it.
    let did = with_ledger(&["cap", "new", "ledger"]).ok();
    assert_eq!(did, eth_did(SECRET, 0).to_string());
    assert!(did.starts_with("did:key:zzCH"), "{did}");
    assert_eq!(with_ledger(&["key", "did", "ledger"]).ok(), did);
    assert!(n.path("cap/ledger.json").exists());
    let list = with_ledger(&["cap", "list", "-c", "ledger"]).ok();
    assert!(list.contains("token format nunet"), "{list}");

    let dms = n.run(&["cap", "new", "dms"]).ok();
    let user = n.run(&["cap", "new", "user"]).ok();
    // The wallet grants the user /dms/node; the grant is in NuNet's format and signed by the
    // wallet (checked by the node below, with EIP-191).
    let grant = with_ledger(&[
        "cap",
        "grant",
        "-c",
        "ledger",
        "--cap",
        "/dms/node",
        "--duration",
        "1h",
        &user,
    ])
    .ok();
    assert!(grant.contains("\"uri\""), "{grant}");
    n.run(&["cap", "anchor", "-c", "user", "--provide", &grant])
        .ok();
    let invoke = n
        .run(&[
            "cap",
            "invoke",
            "/dms/node/peers/list",
            "-c",
            "user",
            "--audience",
            &dms,
        ])
        .ok();
    let verify = |n: &Node| {
        n.run(&[
            "cap",
            "verify",
            &invoke,
            "-c",
            "dms",
            "--cap",
            "/dms/node/peers/list",
        ])
    };
    // Not trusted until the node anchors the wallet's DID.
    let denied = verify(&n);
    assert_eq!(denied.code, 1, "{}", denied.stdout);
    n.run(&["cap", "anchor", "-c", "dms", "--root", &did]).ok();
    let ok = verify(&n).ok();
    assert!(ok.contains("authorized") && ok.contains(&did), "{ok}");

    // Another device (another key) is refused with the reason before anything is signed.
    let other = wallet(tools.path(), "other-ledger", &"11".repeat(32));
    let r = common::to_run(
        n.cmd(&[
            "cap",
            "grant",
            "-c",
            "ledger",
            "--cap",
            "/dms",
            "--duration",
            "1h",
            &user,
        ])
        .env("NUNET_LEDGER_CLI", &other)
        .output()
        .unwrap(),
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("right device"), "{}", r.stderr);
    // No wallet program: named.
    let r = n.run(&[
        "cap",
        "grant",
        "-c",
        "ledger",
        "--cap",
        "/dms",
        "--duration",
        "1h",
        &user,
    ]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("cannot run the signer ledger-cli"),
        "{}",
        r.stderr
    );
    // A Ledger context signs tokens, not messages: said plainly.
    let r = with_ledger(&["actor", "msg", "/public/status", "-c", "ledger"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("held by a Ledger"), "{}", r.stderr);
}

#[test]
fn ledger_aliases_pick_the_account_and_the_file() {
    let n = Node::new();
    let tools = tempfile::tempdir().unwrap();
    let ledger = wallet(tools.path(), "ledger-cli", SECRET);
    let with_ledger = |args: &[&str]| run_with(&n, &ledger, args);
    let r = with_ledger(&["cap", "new", "ledger:finance"]);
    assert!(
        r.stderr.contains("ledger-alias set finance"),
        "{}",
        r.stderr
    );
    n.run(&["key", "ledger-alias", "set", "finance", "3"]).ok();
    let did = with_ledger(&["cap", "new", "ledger:finance"]).ok();
    assert_eq!(did, eth_did(SECRET, 3).to_string());
    assert!(n.path("cap/finance.json").exists());
    // An account number works directly; its file is the number.
    assert_eq!(
        with_ledger(&["cap", "new", "ledger:1"]).ok(),
        eth_did(SECRET, 1).to_string()
    );
    assert!(n.path("cap/1.json").exists());
    let aliases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(n.path("ledger_aliases.json")).unwrap())
            .unwrap();
    assert_eq!(aliases["finance"], 3);
}
