//! Records the commit and the compiler for `nunet version`. `NUNET_COMMIT` in the build's
//! environment wins (packages built from a tarball have no git); otherwise `git` is asked,
//! and `unknown` is printed when neither knows.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=NUNET_COMMIT");
    let commit = std::env::var("NUNET_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| run("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NUNET_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (branch switches) and the branch's ref.
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(p) = run("git", &["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NUNET_RUSTC={version}");
}
