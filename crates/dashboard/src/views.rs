//! What the dashboard shows, read by invoking this node's own behaviours in process (as the
//! node itself). The behaviours are a fixed list of read-only ones; nothing the browser sends
//! names a behaviour.

use std::time::Duration;

use nunet_actor::{ActorError, ActorSystem};
use nunet_protocol::calls::{
    AllocationsList, DeploymentListCall, DeploymentLogsCall, DeploymentManifest,
    DeploymentStatusCall,
};
use nunet_protocol::{
    DeploymentLogsRequest, DeploymentRef, DeploymentStatus, DeploymentSummary, Empty, Event,
    StatusRequest, call,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::history::{Amounts, Sample};

/// How long one in-process call may take before its part of a view reports an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's untyped read-only behaviours a view reads, by the field they fill.
const NODE_PARTS: [(&str, &str); 4] = [
    ("status", "/public/status"),
    ("self", "/dms/node/peers/self"),
    ("peers", "/dms/node/peers/list"),
    // Onboarded, free, committed and allocated resources.
    ("onboarding", ONBOARDING_STATUS),
];

const ONBOARDING_STATUS: &str = "/dms/node/onboarding/status";

async fn node_call(system: &ActorSystem, behavior: &str) -> Result<Value, ActorError> {
    system
        .invoke("root", system.root(), behavior, Value::Null, CALL_TIMEOUT)
        .await
}

fn part<T: Serialize>(r: Result<T, ActorError>) -> Value {
    match r {
        Ok(v) => serde_json::to_value(v).unwrap_or(Value::Null),
        Err(e) => json!({"error": e.message}),
    }
}

/// This node: status, identity and reachability, peers, onboarding (onboarded, free,
/// committed and allocated resources), and the allocations it hosts. A part that cannot be read says why in an
/// `error` field; the others are still shown.
pub async fn node(system: &ActorSystem) -> Value {
    let reads = NODE_PARTS.map(|(_, b)| node_call(system, b));
    let empty = Empty::default();
    let hosted =
        call::invoke::<AllocationsList>(system, "root", system.root(), &empty, CALL_TIMEOUT);
    let (parts, hosted) = tokio::join!(futures::future::join_all(reads), hosted);
    let mut out = serde_json::Map::new();
    for ((field, _), r) in NODE_PARTS.iter().zip(parts) {
        out.insert(field.to_string(), part(r));
    }
    out.insert("hosted".into(), part(hosted));
    Value::Object(out)
}

fn amounts(v: &Value) -> Amounts {
    Amounts {
        cpu_cores: v["cpu"]["cores"].as_f64().unwrap_or(0.0),
        ram_bytes: v["ram"]["size"].as_u64().unwrap_or(0),
        disk_bytes: v["disk"]["size"].as_u64().unwrap_or(0),
    }
}

/// The node's resources now, as the chart plots them (zeros where the node is not onboarded
/// or a read failed).
pub async fn sample(system: &ActorSystem) -> Sample {
    let status = node_call(system, ONBOARDING_STATUS)
        .await
        .unwrap_or(Value::Null);
    Sample {
        at_ms: now_ms(),
        onboarded: status["onboarded"].as_bool().unwrap_or(false),
        total: amounts(&status["onboarded_resources"]),
        free: amounts(&status["free"]),
        allocated: amounts(&status["allocated"]),
        committed: amounts(&status["committed"]),
    }
}

/// The deployments this node orchestrates, newest first.
pub async fn deployments(system: &ActorSystem) -> Result<Vec<DeploymentSummary>, ActorError> {
    let mut l = call::invoke::<DeploymentListCall>(
        system,
        "root",
        system.root(),
        &Empty::default(),
        CALL_TIMEOUT,
    )
    .await?
    .deployments;
    l.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
    Ok(l)
}

/// One span of a deployment's timeline: a status it was in, from when to when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// The status.
    pub phase: DeploymentStatus,
    /// When it began (Unix ms: its first event).
    pub start_ms: i64,
    /// When the next began; `None` for the one it is in.
    pub end_ms: Option<i64>,
    /// Events recorded in it.
    pub events: usize,
}

/// The phases of a deployment from its events (oldest first): each run of events in one
/// status is one phase, ended by the first event of the next. A deployment that went back to
/// `Preparing` (a retry) shows that phase again.
pub fn timeline(events: &[Event]) -> Vec<Phase> {
    let mut out: Vec<Phase> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some(p) if p.phase == e.phase => p.events += 1,
            last => {
                if let Some(p) = last {
                    p.end_ms = Some(e.at_ms);
                }
                out.push(Phase {
                    phase: e.phase,
                    start_ms: e.at_ms,
                    end_ms: None,
                    events: 1,
                });
            }
        }
    }
    out
}

/// One deployment: its summary with every event, the phases of its timeline, and its
/// manifest (which provider runs each allocation, its address, health and restarts).
pub async fn deployment(system: &ActorSystem, id: &str) -> Result<Value, ActorError> {
    let (status_req, manifest_req) = (
        StatusRequest {
            id: id.to_string(),
            after: 0,
        },
        DeploymentRef { id: id.to_string() },
    );
    let status = call::invoke::<DeploymentStatusCall>(
        system,
        "root",
        system.root(),
        &status_req,
        CALL_TIMEOUT,
    );
    let manifest = call::invoke::<DeploymentManifest>(
        system,
        "root",
        system.root(),
        &manifest_req,
        CALL_TIMEOUT,
    );
    let (status, manifest) = tokio::join!(status, manifest);
    let status = status?;
    let phases = timeline(status.events.as_deref().unwrap_or_default());
    Ok(json!({
        "summary": status,
        "timeline": phases,
        "manifest": manifest?.manifest,
        "now_ms": now_ms(),
    }))
}

/// Opens a follow session of a deployment's output (every allocation, or `allocation`): the
/// page reads its frames from `/api/v1/output/<session>`.
pub async fn follow(
    system: &ActorSystem,
    id: &str,
    allocation: Option<String>,
) -> Result<String, ActorError> {
    let r = call::invoke::<DeploymentLogsCall>(
        system,
        "root",
        system.root(),
        &DeploymentLogsRequest {
            id: id.to_string(),
            allocation,
            cursors: Default::default(),
            follow: true,
        },
        CALL_TIMEOUT,
    )
    .await?;
    r.session
        .ok_or_else(|| ActorError::failed("the orchestrator opened no follow session"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, at_ms: i64, phase: DeploymentStatus) -> Event {
        Event {
            seq,
            at_ms,
            phase,
            message: String::new(),
        }
    }

    #[test]
    fn phases_follow_the_events_and_a_retry_shows_again() {
        use DeploymentStatus::*;
        let t = timeline(&[
            ev(1, 100, Preparing),
            ev(2, 150, Preparing),
            ev(3, 200, Committing),
            ev(4, 300, Preparing),
            ev(5, 400, Committing),
            ev(6, 450, Provisioning),
            ev(7, 900, Running),
        ]);
        let got: Vec<_> = t
            .iter()
            .map(|p| (p.phase, p.start_ms, p.end_ms, p.events))
            .collect();
        assert_eq!(
            got,
            [
                (Preparing, 100, Some(200), 2),
                (Committing, 200, Some(300), 1),
                (Preparing, 300, Some(400), 1),
                (Committing, 400, Some(450), 1),
                (Provisioning, 450, Some(900), 1),
                (Running, 900, None, 1),
            ]
        );
        assert!(timeline(&[]).is_empty());
    }
}
