//! Runs the real `nunet` binary against a temporary home.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Node {
    pub home: PathBuf,
    _dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stdout.trim().to_string()
    }
}

impl Node {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            home: dir.path().join("home"),
            _dir: dir,
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nunet"));
        c.args(args)
            .env("NUNET_HOME", &self.home)
            .env("DMS_PASSPHRASE", "test passphrase")
            .env("NUNET_INSECURE_FAST_KDF", "1")
            .env_remove("NUNET_CONFIG")
            .env_remove("DMS_PASSPHRASE_FILE")
            .env_remove("NUNET_LEDGER_CLI")
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("DMS_") && k != "DMS_PASSPHRASE" {
                c.env_remove(k);
            }
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        to_run(self.cmd(args).output().unwrap())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }
}

pub fn to_run(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
