//! Running `ip`, `iptables`, `nsenter` … on the host or inside a named network namespace.
//!
//! This module only runs commands and reports failures with the command line and stderr; it must
//! not decide what to configure.

use std::process::Command;

use super::error::HostError;

/// Where host commands run: the current network namespace (production, `netns: None`) or a
/// named one (`ip netns exec <name> …`, used by tests that build a fake host).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    /// Named network namespace to run in; `None` = the daemon's own namespace.
    pub netns: Option<String>,
}

/// Messages of `ip`/`iptables` meaning "the thing to delete is not there" (deletes are
/// idempotent, so these are not errors).
const MISSING: &[&str] = &[
    "Cannot find device",
    "No such process",
    "No such file or directory",
    "Cannot assign requested address",
    "does a matching rule exist",
    "No chain/target/match by that name",
    "does not exist",
    "Bad rule",
    "Address not found",
];

impl Host {
    /// The namespace the daemon runs in.
    pub fn local() -> Self {
        Self { netns: None }
    }

    /// A named network namespace (`ip netns add <name>` must have created it).
    pub fn in_netns(name: impl Into<String>) -> Self {
        Self {
            netns: Some(name.into()),
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> (Command, String) {
        let mut line = String::new();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                line.push_str(&format!("ip netns exec {ns} "));
                c
            }
            None => Command::new(program),
        };
        cmd.args(args);
        line.push_str(program);
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        (cmd, line)
    }

    /// Runs `program args…`; returns stdout, or an error with the command line and stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, HostError> {
        let (mut cmd, line) = self.command(program, args);
        let out = cmd.output().map_err(|source| HostError::Spawn {
            command: line.clone(),
            source,
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(HostError::Command {
                command: line,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Like [`Host::run`] for deletions: "not found" failures count as success (`Ok(false)`).
    pub fn run_delete(&self, program: &str, args: &[&str]) -> Result<bool, HostError> {
        match self.run(program, args) {
            Ok(_) => Ok(true),
            Err(HostError::Command { stderr, .. })
                if MISSING.iter().any(|m| stderr.contains(m)) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs a command and reports only whether it exited 0 (for `iptables -C` checks); spawn
    /// failures are still errors.
    pub fn succeeds(&self, program: &str, args: &[&str]) -> Result<bool, HostError> {
        match self.run(program, args) {
            Ok(_) => Ok(true),
            Err(HostError::Command { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs a command and parses its stdout as JSON (`ip -j …`). Empty output is `[]`.
    pub fn run_json(&self, program: &str, args: &[&str]) -> Result<serde_json::Value, HostError> {
        let out = self.run(program, args)?;
        if out.trim().is_empty() {
            return Ok(serde_json::Value::Array(Vec::new()));
        }
        serde_json::from_str(&out).map_err(|e| HostError::Parse {
            command: format!("{program} {}", args.join(" ")),
            message: e.to_string(),
        })
    }
}
