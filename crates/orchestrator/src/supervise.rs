//! Supervision of a running deployment (allocation status polling, completion, failure),
//! shutdown and logs.

use std::collections::HashMap;

use nunet_ensemble::spec::AllocationType;
use serde_json::{Value, json};

use crate::engine::{Assignment, Engine, MAX_MISSED_CHECKS, MONITOR_EVERY};
use crate::now_ms;
use crate::protocol::{ALLOCATION_LOGS, ALLOCATION_STATUS, Bid};
use crate::state::DeploymentStatus;
use std::time::Duration;

impl Engine {
    pub(crate) async fn revert_manifest(&self) {
        let Some(rec) = self.record() else { return };
        let assign: Assignment = rec
            .manifest
            .nodes
            .iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    Bid {
                        ensemble_id: rec.id.clone(),
                        node_id: n.clone(),
                        peer: m.peer.clone(),
                        handle: m.handle.clone(),
                        location: Default::default(),
                        free: Default::default(),
                        executors: Vec::new(),
                        signature: String::new(),
                    },
                )
            })
            .collect();
        self.revert(&assign).await;
    }

    /// Supervises a running deployment until it completes, fails or is shut down.
    pub async fn monitor(&self) {
        let mut missed: HashMap<String, u32> = HashMap::new();
        loop {
            tokio::time::sleep(MONITOR_EVERY).await;
            let Some(rec) = self.record() else { return };
            if rec.status != DeploymentStatus::Running {
                return;
            }
            let mut changes = Vec::new();
            let mut problem = None;
            for (key, a) in &rec.manifest.allocations {
                let Some(h) = &a.handle else { continue };
                match self
                    .call(h, ALLOCATION_STATUS, json!({}), Duration::from_secs(5))
                    .await
                {
                    Ok(v) => {
                        missed.remove(key);
                        let status = v["status"].as_str().unwrap_or("unknown").to_string();
                        let code = v["exit_code"].as_i64();
                        if status == "failed" {
                            problem = Some(format!(
                                "allocation {key} failed: {}",
                                v["reason"].as_str().unwrap_or("no reason given")
                            ));
                        }
                        if status != a.status || code != a.exit_code {
                            changes.push((key.clone(), status, code));
                        }
                    }
                    Err(e) => {
                        let n = missed.entry(key.clone()).or_default();
                        *n += 1;
                        if *n >= MAX_MISSED_CHECKS {
                            problem = Some(format!(
                                "allocation {key} is unreachable ({}): {}",
                                h.addr.host, e.message
                            ));
                        }
                    }
                }
            }
            if !changes.is_empty() {
                self.update(|r| {
                    for (k, s, c) in changes {
                        if let Some(a) = r.manifest.allocations.get_mut(&k) {
                            a.status = s.clone();
                            a.exit_code = c;
                        }
                        r.event(now_ms(), format!("allocation {k}: {s}"));
                    }
                });
            }
            if let Some(p) = problem {
                self.fail(p);
                self.revert_manifest().await;
                return;
            }
            let Some(rec) = self.record() else { return };
            let kinds: HashMap<&str, AllocationType> = rec
                .ensemble
                .allocations
                .iter()
                .map(|a| (a.name.as_str(), a.kind))
                .collect();
            let mut all_done = !rec.manifest.allocations.is_empty();
            for (k, a) in &rec.manifest.allocations {
                let name = k.rsplit('.').next().unwrap_or(k);
                match kinds.get(name) {
                    Some(AllocationType::Task) => all_done &= a.status == "completed",
                    _ => {
                        all_done = false;
                        if a.status == "completed" {
                            self.fail(format!("service allocation {k} exited"));
                            self.revert_manifest().await;
                            return;
                        }
                    }
                }
            }
            if all_done {
                self.set_status(DeploymentStatus::Completed, "every task completed");
                return;
            }
        }
    }

    /// Stops every allocation and releases everything on every provider.
    pub async fn shutdown(&self, by: &str) -> Result<(), String> {
        let was = self.status();
        if was.is_terminal()
            && was != DeploymentStatus::Completed
            && was != DeploymentStatus::Failed
        {
            return Ok(());
        }
        self.update(|r| {
            r.status = DeploymentStatus::ShuttingDown;
            r.reason = Some(format!("shut down by {by}"));
            r.event(now_ms(), "shutting down");
        });
        self.revert_manifest().await;
        self.update(|r| {
            for a in r.manifest.allocations.values_mut() {
                a.status = "terminated".into();
            }
            r.event(
                now_ms(),
                "shut down: allocations stopped, resources released",
            );
        });
        Ok(())
    }

    /// Every allocation's output, by `<node>.<alloc>`.
    pub async fn logs(&self) -> Value {
        let Some(rec) = self.record() else {
            return Value::Null;
        };
        let mut out = serde_json::Map::new();
        for (k, a) in &rec.manifest.allocations {
            let v = match &a.handle {
                Some(h) => match self
                    .call(h, ALLOCATION_LOGS, json!({}), Duration::from_secs(30))
                    .await
                {
                    Ok(v) => v,
                    Err(e) => json!({"error": e.message}),
                },
                None => json!({"error": "not allocated"}),
            };
            out.insert(k.clone(), v);
        }
        Value::Object(out)
    }
}
