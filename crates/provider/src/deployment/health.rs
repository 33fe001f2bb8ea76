//! Health checks of running allocations (`healthcheck:` of the ensemble): every `interval`,
//! a `command` runs inside the allocation (healthy when it exits 0 and, when
//! `response.value` is given, its output contains it: stdout and stderr together, as NuNet
//! compares, `strings.Contains(stdout+stderr, value)` in `dms/jobs/behaviors_allocation.go`,
//! so `nginx -t`, which answers on stderr, passes as it does on NuNet) or an `http` GET goes to the allocation's
//! own port from inside its network namespace (healthy on a 2xx status and, when
//! `response.value` is given, a body equal to it). `failure_threshold` failures in a row make
//! the allocation unhealthy; the orchestrator is told at once, and again when it recovers.
//!
//! A check that cannot run (no such binary in the image, an executor without commands) is a
//! failed check whose message says why: it never passes silently. This module must not
//! restart or stop anything; that is the orchestrator's decision.

use std::sync::{Arc, Mutex};
use tracing::Instrument;

use nunet_ensemble::spec::{Healthcheck, HealthcheckKind, http_target};
use nunet_executor::Executor;
use nunet_protocol::{AllocationStatus, Health};

use super::{AllocRecord, Provider};
use crate::onboarding::now_ms;

/// Most characters of a check's output kept in the health message.
const MAX_MESSAGE: usize = 256;

/// The health of a freshly started allocation: healthy until a check says otherwise.
pub(super) fn initial(h: &Healthcheck) -> Health {
    Health {
        healthy: true,
        check_type: kind_name(&h.check).into(),
        last_check_ms: 0,
        message: "not checked yet".into(),
        consecutive_failures: 0,
        checks: 0,
    }
}

fn kind_name(k: &HealthcheckKind) -> &'static str {
    match k {
        HealthcheckKind::Command { .. } => "command",
        HealthcheckKind::Http { .. } => "http",
    }
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_MESSAGE {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX_MESSAGE).collect();
    format!("{cut}…")
}

/// Whether an answer matches `response.value` (compared without surrounding whitespace).
fn matches(expected: &Option<String>, got: &str) -> bool {
    expected.as_ref().is_none_or(|v| v.trim() == got.trim())
}

/// Whether a command's output answers `response.value`: NuNet's rule (the value somewhere in
/// stdout followed by stderr), or this node's earlier one (stdout equal to it, whitespace
/// around either aside), which the first covers but for surrounding whitespace in the value.
fn command_matches(expected: &Option<String>, stdout: &str, stderr: &str) -> bool {
    expected.as_ref().is_none_or(|v| {
        format!("{stdout}{stderr}").contains(v.as_str()) || v.trim() == stdout.trim()
    })
}

/// Runs one check: `Ok(())` when healthy, else why not.
async fn check_once(
    exec: &Arc<dyn Executor>,
    id: &str,
    dns_name: &str,
    h: &Healthcheck,
) -> Result<(), String> {
    let timeout = h.timeout();
    match &h.check {
        HealthcheckKind::Command {
            exec: argv,
            response_value,
        } => {
            let out = exec
                .exec(id, argv, timeout)
                .await
                .map_err(|e| format!("the check could not run: {e}"))?;
            match out.exit_code {
                Some(0) => {}
                Some(126) | Some(127) => {
                    return Err(format!(
                        "the check could not run: {:?} is not executable in the allocation ({})",
                        argv.first().map(String::as_str).unwrap_or_default(),
                        short(&format!("{}{}", out.stdout, out.stderr))
                    ));
                }
                code => {
                    return Err(format!(
                        "{argv:?} exited with {}: {}",
                        code.map_or("no code".to_string(), |c| c.to_string()),
                        short(&format!("{}{}", out.stdout, out.stderr))
                    ));
                }
            }
            if !command_matches(response_value, &out.stdout, &out.stderr) {
                return Err(format!(
                    "{argv:?} printed {:?}, expected it to contain {:?}",
                    short(&format!("{}{}", out.stdout, out.stderr)),
                    response_value.as_deref().unwrap_or_default()
                ));
            }
            Ok(())
        }
        HealthcheckKind::Http {
            endpoint,
            response_value,
            ..
        } => {
            let target = http_target(endpoint, dns_name)?;
            let ns = exec
                .netns(id)
                .await
                .map_err(|e| format!("the check could not run: {e}"))?
                .ok_or_else(|| {
                    format!(
                        "the check could not run: the {} executor gives no network namespace \
                         to reach the allocation in",
                        exec.kind()
                    )
                })?;
            let a =
                nunet_executor::netprobe::http_get(&ns, target.port, &target.path, timeout).await?;
            if !(200..300).contains(&a.status) {
                return Err(format!(
                    "GET {} answered {}: {}",
                    target.path,
                    a.status,
                    short(&a.body)
                ));
            }
            if !matches(response_value, &a.body) {
                return Err(format!(
                    "GET {} answered {:?}, expected {:?}",
                    target.path,
                    short(&a.body),
                    response_value.as_deref().unwrap_or_default()
                ));
            }
            Ok(())
        }
    }
}

/// Applies one check's result to `health`; returns whether healthy changed.
pub(super) fn apply(
    health: &mut Health,
    result: Result<(), String>,
    threshold: u32,
    at_ms: i64,
) -> bool {
    let was = health.healthy;
    health.checks += 1;
    health.last_check_ms = at_ms;
    match result {
        Ok(()) => {
            health.consecutive_failures = 0;
            health.message = "ok".into();
            health.healthy = true;
        }
        Err(why) => {
            health.consecutive_failures = health.consecutive_failures.saturating_add(1);
            health.message = why;
            if health.consecutive_failures >= threshold {
                health.healthy = false;
            }
        }
    }
    was != health.healthy
}

impl Provider {
    /// Checks the allocation every interval while generation `generation` of it runs.
    pub(super) async fn health_loop(
        self: Arc<Self>,
        cell: Arc<Mutex<AllocRecord>>,
        exec: Arc<dyn Executor>,
        generation: u64,
    ) {
        let current = |c: &Arc<Mutex<AllocRecord>>| {
            c.lock().ok().and_then(|r| {
                (r.status == AllocationStatus::Running && r.generation == generation)
                    .then(|| r.clone())
            })
        };
        loop {
            let Some(rec) = current(&cell) else { return };
            let Some(h) = rec.healthcheck.clone() else {
                return;
            };
            tokio::time::sleep(h.interval()).await;
            let Some(rec) = current(&cell) else { return };
            let dns = dns_name_of(&rec);
            let result = check_once(&exec, &rec.id, &dns, &h).await;
            let mut changed = None;
            self.set(&cell, |r| {
                if r.status != AllocationStatus::Running || r.generation != generation {
                    return;
                }
                let health = r.health.get_or_insert_with(|| initial(&h));
                if apply(health, result, h.failure_threshold(), now_ms()) {
                    changed = Some(health.clone());
                }
            });
            if let Some(health) = changed {
                tracing::info!(allocation = %rec.id, healthy = health.healthy,
                    message = %health.message, "allocation health changed");
                // A span of the deployment's trace; the report carries it to the orchestrator.
                let span =
                    tracing::info_span!("health", allocation = %rec.id, healthy = health.healthy);
                self.reports.health(&rec, health).instrument(span).await;
            }
        }
    }
}

/// The host an http endpoint may name besides localhost. The orchestrator sends endpoints
/// already reduced to `:port/path` (it knows the `dns_name`); the name is what is left.
fn dns_name_of(rec: &AllocRecord) -> String {
    rec.name.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_counts_failures_in_a_row_and_one_success_heals() {
        let h = Healthcheck {
            check: HealthcheckKind::Command {
                exec: vec!["true".into()],
                response_value: None,
            },
            interval_ms: None,
            timeout_ms: None,
            failure_threshold: Some(2),
        };
        let mut health = initial(&h);
        assert!(health.healthy);
        assert!(!apply(&mut health, Err("no".into()), 2, 1));
        assert!(health.healthy);
        assert!(apply(&mut health, Err("still no".into()), 2, 2));
        assert!(!health.healthy);
        assert_eq!(
            (health.consecutive_failures, health.message.as_str()),
            (2, "still no")
        );
        assert!(!apply(&mut health, Err("again".into()), 2, 3));
        assert!(apply(&mut health, Ok(()), 2, 4));
        assert!(health.healthy && health.consecutive_failures == 0 && health.checks == 4);
        assert!(matches(&None, "anything"));
        assert!(matches(&Some("ok".into()), "ok\n"));
        assert!(!matches(&Some("ok".into()), "ko"));
        // Commands: NuNet's rule, on stdout and stderr together.
        let nginx = "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok";
        let stderr = format!(
            "{nginx}\nnginx: configuration file /etc/nginx/nginx.conf test is successful\n"
        );
        assert!(command_matches(&Some(nginx.into()), "", &stderr));
        assert!(command_matches(&Some(" ok ".into()), "ok\n", ""));
        assert!(command_matches(&None, "", ""));
        assert!(!command_matches(&Some("ok".into()), "ko", "error"));
    }
}
