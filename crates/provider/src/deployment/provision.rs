//! Provision scripts of Docker allocations: the container's command is wrapped so that the
//! scripts run in order inside the container, before the workload, each in its own
//! `/bin/sh -c`; a failing script stops the container with its exit code and a marker line
//! on stderr naming it, which becomes the allocation's failure reason.
//!
//! Needs `/bin/sh` in the image (dockerd refuses to start the container otherwise, which
//! fails the start with dockerd's error). It does not run anything on the host.

use nunet_actor::ActorError;
use nunet_executor::ExecutionSpec;

use super::failed;

/// Start of the stderr line written when a script fails.
const MARKER: &str = "nunet: provision script ";

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell program that runs `scripts` in order, then `exec "$@"`.
pub(super) fn program(scripts: &[(String, String)]) -> String {
    let mut p = String::new();
    for (name, body) in scripts {
        let label = quote(name);
        p.push_str(&format!(
            "/bin/sh -c {} || {{ c=$?; echo \"{MARKER}\"{label}\" failed with exit code $c\" >&2; exit $c; }}\n",
            quote(body)
        ));
    }
    p.push_str("exec \"$@\"\n");
    p
}

/// Wraps the spec's command so the scripts run first.
pub(super) fn wrap(
    spec: &mut ExecutionSpec,
    scripts: &[(String, String)],
) -> Result<(), ActorError> {
    let original: Vec<String> = spec.command.iter().chain(&spec.args).cloned().collect();
    if original.is_empty() {
        return Err(failed(
            "provision scripts need the allocation's entrypoint or cmd (the image's default \
             command is not known to the provider)",
        ));
    }
    spec.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        program(scripts),
        "provision".into(),
    ];
    spec.args = original;
    Ok(())
}

/// The failure reason written by a failing script, if `stderr` has one.
pub(super) fn failure(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with(MARKER))
        .map(|l| l.trim_start_matches("nunet: ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_run_in_order_and_a_failure_names_the_script() {
        let scripts = vec![
            (
                "first".to_string(),
                "echo one > /tmp/x; echo 'it''s'".to_string(),
            ),
            ("second".to_string(), "exit 7".to_string()),
        ];
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &program(&scripts), "provision", "echo", "workload"])
            .output()
            .expect("sh");
        assert_eq!(out.status.code(), Some(7));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("its") && !stdout.contains("workload"),
            "{stdout}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            failure(&stderr).as_deref(),
            Some("provision script second failed with exit code 7"),
            "{stderr}"
        );
        let ok = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                &program(&scripts[..1]),
                "provision",
                "echo",
                "workload",
            ])
            .output()
            .expect("sh");
        assert!(ok.status.success());
        assert!(String::from_utf8_lossy(&ok.stdout).contains("workload"));
    }
}
