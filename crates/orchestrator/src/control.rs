//! The node-side entry points (`/dms/node/deployment/{new,list,status,manifest,logs,shutdown}`)
//! and the registry of deployments this node orchestrates, restored after a restart; also the
//! names and log-cursor format of the per-ensemble provider behaviors
//! (`/dms/ensemble/<id>/allocation/{logs,shutdown}`) both sides use. It runs no executions
//! and touches no provider state itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nunet_actor::{ActorError, ActorSystem, Incoming};
use nunet_capability::Capability;
use nunet_ensemble::Ensemble;
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::protocol::{DEPLOYMENT_TOPIC, new_ensemble_id};
use crate::state::{Deployment, DeploymentStatus};
use crate::{PersistFn, now_ms};

/// `new` behavior.
pub const NEW: &str = "/dms/node/deployment/new";
/// `list` behavior.
pub const LIST: &str = "/dms/node/deployment/list";
/// `status` behavior.
pub const STATUS: &str = "/dms/node/deployment/status";
/// `manifest` behavior.
pub const MANIFEST: &str = "/dms/node/deployment/manifest";
/// `logs` behavior.
pub const LOGS: &str = "/dms/node/deployment/logs";
/// `shutdown` behavior.
pub const SHUTDOWN: &str = "/dms/node/deployment/shutdown";

/// Capabilities the node delegates to an orchestrator actor (plus `/dms/ensemble/<id>`).
const ORCHESTRATOR_CAPS: [&str; 2] = ["/dms/deployment", "/dms/allocation"];
/// Default and largest number of log bytes returned per stream and call.
pub const LOG_CHUNK: usize = 256 * 1024;

/// `/dms/ensemble/<id>`: the per-ensemble namespace granted to its orchestrator.
pub fn ensemble_namespace(ensemble_id: &str) -> String {
    format!("/dms/ensemble/{ensemble_id}")
}

/// Provider: `/dms/ensemble/<id>/allocation/logs`, payload [`LogsRequest`].
pub fn ensemble_allocation_logs(ensemble_id: &str) -> String {
    format!("{}/allocation/logs", ensemble_namespace(ensemble_id))
}

/// Provider: `/dms/ensemble/<id>/allocation/shutdown`, payload `{allocation}` (name or id;
/// absent = every allocation of the ensemble on that provider).
pub fn ensemble_allocation_shutdown(ensemble_id: &str) -> String {
    format!("{}/allocation/shutdown", ensemble_namespace(ensemble_id))
}

/// Payload of the per-ensemble logs behavior: which allocation and where to resume.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogsRequest {
    /// Allocation name or id.
    pub allocation: String,
    /// Bytes of stdout already seen.
    #[serde(default)]
    pub stdout_offset: u64,
    /// Bytes of stderr already seen.
    #[serde(default)]
    pub stderr_offset: u64,
    /// Most bytes wanted per stream (0 = [`LOG_CHUNK`]; never more than it).
    #[serde(default)]
    pub max_bytes: u64,
}

/// The part of `full` from byte `offset`, at most `max` bytes, cut on character
/// boundaries; returns it and the offset after it (to pass back next time), which is never
/// before `offset`.
pub fn log_slice(full: &str, offset: u64, max: usize) -> (String, u64) {
    let max = if max == 0 {
        LOG_CHUNK
    } else {
        max.min(LOG_CHUNK)
    };
    if usize::try_from(offset).map_or(true, |o| o > full.len()) {
        // Less output than already seen (e.g. read while the execution was being removed):
        // nothing new, and the cursor never moves back (that would print things twice).
        return (String::new(), offset);
    }
    let mut start = usize::try_from(offset).unwrap_or(0);
    while !full.is_char_boundary(start) {
        start += 1;
    }
    let mut end = start.saturating_add(max).min(full.len());
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    (full[start..end].to_string(), end as u64)
}
/// How long those delegations last.
const ORCHESTRATOR_TTL: Duration = Duration::from_secs(24 * 3600);
/// Shortest deployment deadline accepted (NuNet `MinEnsembleDeploymentTime`).
pub const MIN_DEPLOY_TIME_MS: i64 = 15_000;

/// (Re-)creates the orchestrator actor of deployment `inbox`; its key is derived from the
/// node's key and the deployment id, so a restarted node gets the same identity back
/// without ever storing the key.
pub(crate) fn spawn_orchestrator(system: &ActorSystem, inbox: &str) -> nunet_actor::Handle {
    let key = system.child_key(inbox);
    // The inbox is the ensemble id: providers admit `/dms/ensemble/<id>/…` on that grant.
    let caps: Vec<Capability> = ORCHESTRATOR_CAPS
        .iter()
        .map(|c| c.to_string())
        .chain([ensemble_namespace(inbox)])
        .filter_map(|c| c.parse().ok())
        .collect();
    let topics: Vec<Capability> = DEPLOYMENT_TOPIC.parse().into_iter().collect();
    system.spawn_child_at(inbox, key, &caps, &topics, ORCHESTRATOR_TTL)
}

/// The deployments this node orchestrates.
#[derive(Clone)]
pub struct Deployments {
    system: ActorSystem,
    persist: PersistFn,
    local_subnet: Option<Arc<dyn crate::subnet::LocalSubnet>>,
    map: Arc<Mutex<BTreeMap<String, Arc<Engine>>>>,
}

fn failed(m: impl Into<String>) -> ActorError {
    ActorError::failed(m)
}

fn id_arg(p: &Value) -> Result<String, ActorError> {
    p.get("id")
        .or_else(|| p.get("ensemble_id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| failed("give --id <ensemble id>"))
}

/// Refuses an ensemble that breaks a rule `nunet validate` applies: what arrives is JSON any
/// client may have written, not necessarily the output of the validator.
fn refuse_invalid(e: &Ensemble) -> Result<(), ActorError> {
    let report = nunet_ensemble::check::ensemble(e);
    if !report.has_errors() {
        return Ok(());
    }
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    Err(failed(format!("invalid ensemble: {}", errors.join("; "))))
}

impl Deployments {
    /// An empty registry; `persist` is called with every change of every deployment.
    pub fn new(system: ActorSystem, persist: PersistFn) -> Self {
        Self {
            system,
            persist,
            local_subnet: None,
            map: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Lets deployments with `subnet.join` put this node on their subnet.
    pub fn with_local_subnet(mut self, local: Arc<dyn crate::subnet::LocalSubnet>) -> Self {
        self.local_subnet = Some(local);
        self
    }

    fn spawn_actor(&self, inbox: &str) -> nunet_actor::Handle {
        spawn_orchestrator(&self.system, inbox)
    }

    fn get(&self, id: &str) -> Result<Arc<Engine>, ActorError> {
        let m = self.map.lock().map_err(|_| failed("registry poisoned"))?;
        if let Some(e) = m.get(id) {
            return Ok(e.clone());
        }
        let matches: Vec<&Arc<Engine>> = m
            .iter()
            .filter(|(k, _)| k.starts_with(id))
            .map(|(_, e)| e)
            .collect();
        match (id.len() >= 6, matches.as_slice()) {
            (true, [one]) => Ok((*one).clone()),
            _ => Err(ActorError::new(
                nunet_actor::ErrorKind::NotFound,
                format!("no deployment {id}"),
            )),
        }
    }

    /// Creates the orchestrator actor for `ensemble` and starts deploying; returns its id.
    pub fn create(
        &self,
        ensemble: Ensemble,
        owner: &str,
        deadline_ms: i64,
    ) -> Result<String, ActorError> {
        if deadline_ms - now_ms() < MIN_DEPLOY_TIME_MS {
            return Err(failed(format!(
                "the deployment timeout must be at least {} s",
                MIN_DEPLOY_TIME_MS / 1000
            )));
        }
        let id = new_ensemble_id(self.system.peer_id());
        let handle = self.spawn_actor(&id);
        let mut rec = Deployment {
            id: id.clone(),
            status: DeploymentStatus::Preparing,
            reason: None,
            owner: owner.to_string(),
            created_ms: now_ms(),
            deadline_ms,
            ensemble,
            orchestrator: handle,
            manifest: Default::default(),
            events: Vec::new(),
            rounds: 0,
            bids: BTreeMap::new(),
            refused_bids: BTreeMap::new(),
            notes: Vec::new(),
        };
        rec.event(now_ms(), "deployment created");
        (self.persist)(&rec);
        let engine = Arc::new(Engine::new(
            self.system.clone(),
            id.clone(),
            rec,
            self.persist.clone(),
            self.local_subnet.clone(),
        ));
        engine.register_check();
        if let Ok(mut m) = self.map.lock() {
            m.insert(id.clone(), engine.clone());
        }
        tokio::spawn(async move {
            engine.clone().run().await;
            engine.retire_if_done();
        });
        Ok(id)
    }

    /// Restores deployments read back from the database after a restart: their
    /// orchestrator actors come back with the same key and inbox; Running ones are
    /// supervised again, ones caught mid-deployment are reverted and marked Failed.
    pub fn restore(&self, records: Vec<Deployment>) {
        for rec in records {
            let status = rec.status;
            // Finished deployments keep their record (status, logs) and a keyless actor that
            // tells providers asking after a restart that nothing is wanted any more.
            if status.is_terminal() {
                self.system
                    .keyless_child(&rec.id, &self.system.child_key(&rec.id).did());
            } else {
                self.spawn_actor(&rec.id);
            }
            let engine = Arc::new(Engine::new(
                self.system.clone(),
                rec.id.clone(),
                rec,
                self.persist.clone(),
                self.local_subnet.clone(),
            ));
            engine.register_check();
            if let Ok(mut m) = self.map.lock() {
                m.insert(
                    engine.record().map(|r| r.id).unwrap_or_default(),
                    engine.clone(),
                );
            }
            match status {
                DeploymentStatus::Running => {
                    tokio::spawn(async move {
                        engine.monitor().await;
                        engine.retire_if_done();
                    });
                }
                s if !s.is_terminal() => {
                    tokio::spawn(async move {
                        let _ = engine.shutdown("the node restart").await;
                        engine.retire_if_done();
                    });
                }
                _ => {}
            }
        }
    }

    /// Registers the control behaviors on the root actor.
    pub fn register(&self) -> Result<(), ActorError> {
        self.system
            .register_with("root", NEW, self.clone(), |d, m: Incoming| async move {
                let e = m
                    .payload
                    .get("ensemble")
                    .cloned()
                    .ok_or_else(|| failed("give the ensemble (`nunet deploy -f <file>`)"))?;
                let ensemble: Ensemble =
                    serde_json::from_value(e).map_err(|e| failed(format!("ensemble: {e}")))?;
                refuse_invalid(&ensemble)?;
                let deadline_ms = i64::try_from(m.envelope.opt.exp / 1_000_000).unwrap_or(i64::MAX);
                let id = d.create(ensemble, m.sender.as_str(), deadline_ms)?;
                Ok(json!({"status": "OK", "ensemble_id": id}))
            })?;
        self.system
            .register_with("root", LIST, self.clone(), |d, _m: Incoming| async move {
                let list: Vec<Value> = d
                    .map
                    .lock()
                    .map_err(|_| failed("registry poisoned"))?
                    .values()
                    .filter_map(|e| e.record().map(|r| r.summary()))
                    .collect();
                Ok(json!({"deployments": list}))
            })?;
        self.system
            .register_with("root", STATUS, self.clone(), |d, m: Incoming| async move {
                let r = d
                    .get(&id_arg(&m.payload)?)?
                    .record()
                    .ok_or_else(|| failed("record lost"))?;
                let after = m.payload.get("after").and_then(Value::as_u64).unwrap_or(0);
                let mut v = r.summary();
                v["events"] = serde_json::to_value(
                    r.events
                        .iter()
                        .filter(|e| e.seq > after)
                        .collect::<Vec<_>>(),
                )
                .unwrap_or(Value::Null);
                Ok(v)
            })?;
        self.system.register_with(
            "root",
            MANIFEST,
            self.clone(),
            |d, m: Incoming| async move {
                let r = d
                    .get(&id_arg(&m.payload)?)?
                    .record()
                    .ok_or_else(|| failed("record lost"))?;
                Ok(json!({"id": r.id, "status": r.status.as_str(), "manifest": r.manifest}))
            },
        )?;
        self.system
            .register_with("root", LOGS, self.clone(), |d, m: Incoming| async move {
                let e = d.get(&id_arg(&m.payload)?)?;
                let only = m.payload.get("allocation").and_then(Value::as_str);
                let cursors = m.payload.get("cursors").cloned().unwrap_or(Value::Null);
                let r = e.record().ok_or_else(|| failed("record lost"))?;
                Ok(json!({
                    "id": r.id,
                    "status": r.status.as_str(),
                    "logs": e.logs(only, &cursors).await?,
                }))
            })?;
        self.system.register_with(
            "root",
            SHUTDOWN,
            self.clone(),
            |d, m: Incoming| async move {
                let e = d.get(&id_arg(&m.payload)?)?;
                let done = e.shutdown(m.sender.as_str()).await;
                e.retire_if_done();
                done.map_err(failed)?;
                let r = e.record().ok_or_else(|| failed("record lost"))?;
                Ok(r.summary())
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_slices_resume_where_they_stopped_and_respect_char_boundaries() {
        let full = "héllo wörld\n";
        let (a, o1) = log_slice(full, 0, 2);
        // "h" + the first byte of "é" would split a character: the cut moves back.
        assert_eq!(a, "h");
        assert_eq!(o1, 1);
        let (b, o2) = log_slice(full, o1, 5);
        assert_eq!(b, "éllo");
        let (rest, end) = log_slice(full, o2, 0);
        assert_eq!(format!("{a}{b}{rest}"), full);
        assert_eq!(end, full.len() as u64);
        // Nothing new: empty, same offset; an offset past the end stays where it is.
        assert_eq!(log_slice(full, end, 0), (String::new(), end));
        assert_eq!(log_slice(full, 10_000, 0), (String::new(), 10_000));
        // An offset inside a character resumes at the next one.
        assert_eq!(log_slice(full, 2, 3).0, "llo");
    }

    /// `/dms/node/deployment/new` with an ensemble `nunet validate` would refuse: the JSON
    /// could come from any client, so the node checks it again.
    #[tokio::test]
    async fn new_refuses_impossible_numbers_naming_the_field() {
        let key = nunet_did::Keypair::from_seed(&[7; 32]);
        let system = ActorSystem::new(
            key.clone(),
            nunet_capability::Anchors::new(key.did()),
            nunet_actor::SystemConfig::default(),
        );
        let persist: PersistFn = Arc::new(|_| {});
        let d = Deployments::new(system.clone(), persist);
        d.register().expect("register");
        let yaml = "allocations:
  web:
    executor: docker
    type: task
    resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}
    execution: {type: docker, image: nginx}
nodes:
  n1: {allocations: [web]}
";
        let ctx = nunet_ensemble::Context::with_vars(Default::default(), ".");
        let ok = nunet_ensemble::parse_str(yaml, &ctx)
            .expect("valid")
            .ensemble;
        let ensemble = |cores: Value, ram: Value| {
            let mut e = serde_json::to_value(&ok).expect("json");
            e["allocations"][0]["resources"]["cpu"]["cores"] = cores;
            e["allocations"][0]["resources"]["ram"]["size"] = ram;
            json!({ "ensemble": e })
        };
        for (cores, ram, field) in [
            (
                json!(-4),
                json!(1 << 30),
                "allocations.web.resources.cpu.cores",
            ),
            (json!(1), json!(0), "allocations.web.resources.ram.size"),
            (
                json!(1e300),
                json!(1 << 30),
                "allocations.web.resources.cpu.cores",
            ),
        ] {
            let e = system
                .invoke(
                    "root",
                    system.root(),
                    NEW,
                    ensemble(cores, ram),
                    Duration::from_secs(30),
                )
                .await
                .expect_err("refused");
            assert!(e.message.contains(field), "{field}: {}", e.message);
        }
        assert!(
            d.map.lock().expect("map").is_empty(),
            "nothing was deployed"
        );
    }

    #[test]
    fn ensemble_behaviors_live_under_the_granted_namespace() {
        let ns: Capability = ensemble_namespace("abc").parse().expect("cap");
        for b in [
            ensemble_allocation_logs("abc"),
            ensemble_allocation_shutdown("abc"),
        ] {
            let c: Capability = b.parse().expect("cap");
            assert!(ns.implies(&c), "{b}");
            let other: Capability = ensemble_namespace("abd").parse().expect("cap");
            assert!(!other.implies(&c), "{b}");
        }
    }
}
