//! The node-side entry points (`/dms/node/deployment/{new,list,status,manifest,logs,shutdown}`)
//! and the registry of deployments this node orchestrates, restored after a restart; also the
//! names and log-cursor format of the per-ensemble provider behaviors
//! (`/dms/ensemble/<id>/allocation/{logs,shutdown}`) both sides use. It runs no executions
//! and touches no provider state itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;

use nunet_actor::{ActorError, ActorSystem, Incoming};
use nunet_capability::Capability;
use nunet_ensemble::Ensemble;
use nunet_protocol::call;
use nunet_protocol::calls::{
    DeploymentListCall, DeploymentLogsCall, DeploymentManifest, DeploymentNew, DeploymentShutdown,
    DeploymentStatusCall, DeploymentUpdate,
};
use nunet_protocol::names::{DEPLOYMENT_TOPIC, ensemble_namespace};
use nunet_protocol::{
    DeploymentList, DeploymentLogs, DeploymentLogsRequest, DeploymentRef, DeploymentStatus,
    ManifestReply, NewDeployment, NewDeploymentReply, StatusRequest, UpdateDeployment,
    UpdateDeploymentReply, new_ensemble_id,
};

use crate::engine::Engine;
use crate::state::Deployment;
use crate::{PersistFn, now_ms};

/// Capabilities the node delegates to an orchestrator actor (plus `/dms/ensemble/<id>`).
const ORCHESTRATOR_CAPS: [&str; 2] = ["/dms/deployment", "/dms/allocation"];
/// How long those delegations last at a time; the actor system renews them while the
/// orchestrator actor lives, so a deployment can be controlled at any age.
const ORCHESTRATOR_TTL: Duration = Duration::from_secs(24 * 3600);
/// Test knob, honoured only with `DMS_TEST_HOOKS=1`: the delegation lifetime in ms (at least
/// 1000), so tests can run a deployment across several lifetimes.
pub const TEST_TTL_ENV: &str = "DMS_TEST_ORCHESTRATOR_TTL_MS";

fn orchestrator_ttl() -> Duration {
    let hooks = std::env::var("DMS_TEST_HOOKS").is_ok_and(|v| v == "1");
    match std::env::var(TEST_TTL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(ms) if hooks => Duration::from_millis(ms.max(1000)),
        _ => ORCHESTRATOR_TTL,
    }
}
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
    system.spawn_child_at(inbox, key, &caps, &topics, orchestrator_ttl())
}

/// The deployments this node orchestrates.
#[derive(Clone)]
pub struct Deployments {
    system: ActorSystem,
    persist: PersistFn,
    flush: Option<crate::FlushFn>,
    local_subnet: Option<Arc<dyn crate::subnet::LocalSubnet>>,
    /// Streams followed output (`deployment logs -f`): the libp2p host and the local API's
    /// sessions.
    output: Option<(nunet_network::Network, Arc<nunet_output::Sessions>)>,
    /// Measured paths to providers, which size call timeouts.
    paths: crate::paths::Paths,
    map: Arc<Mutex<BTreeMap<String, Arc<Engine>>>>,
}

fn failed(m: impl Into<String>) -> ActorError {
    ActorError::failed(m)
}

fn failed_from(e: impl std::fmt::Display) -> ActorError {
    ActorError::failed(e.to_string())
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
            flush: None,
            local_subnet: None,
            output: None,
            paths: Default::default(),
            map: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Replies that promise a record wait for `flush` first.
    pub fn with_flush(mut self, flush: crate::FlushFn) -> Self {
        self.flush = Some(flush);
        self
    }

    /// Waits until persisted records are durable (no-op without a flush hook).
    async fn durable(&self) -> Result<(), ActorError> {
        match &self.flush {
            Some(f) => f()
                .await
                .map_err(|e| failed(format!("deployment record: {e}"))),
            None => Ok(()),
        }
    }

    /// Lets `deployment logs --follow` stream output: from providers over `net`, to the
    /// local API through `sessions`.
    pub fn with_output(
        mut self,
        net: nunet_network::Network,
        sessions: Arc<nunet_output::Sessions>,
    ) -> Self {
        self.output = Some((net, sessions));
        self
    }

    /// Sizes call timeouts (commit, allocate, heartbeats, bid rounds) to the measured paths
    /// to providers, instead of LAN constants alone.
    pub fn with_paths(mut self, rtts: nunet_network::Rtts) -> Self {
        self.paths = crate::paths::Paths::new(rtts);
        self
    }

    /// Lets deployments with `subnet.join` put this node on their subnet.
    pub fn with_local_subnet(mut self, local: Arc<dyn crate::subnet::LocalSubnet>) -> Self {
        self.local_subnet = Some(local);
        self
    }

    /// `logs --follow`: a session on the local API that streams the output of `e`'s
    /// allocations from the request's cursors.
    fn follow(
        &self,
        e: Arc<Engine>,
        req: DeploymentLogsRequest,
    ) -> Result<DeploymentLogs, ActorError> {
        let Some((net, sessions)) = &self.output else {
            return Err(failed(
                "this node cannot stream output (no local API sessions)",
            ));
        };
        let r = e.record().ok_or_else(|| failed("record lost"))?;
        // Which allocations are followed (so far): their keys, ids and statuses.
        let logs = crate::follow::pick(&r.manifest.allocations, req.allocation.as_deref())
            .into_iter()
            .map(|(k, a)| {
                let entry = nunet_protocol::AllocationLogs {
                    allocation: Some(a.id.clone()),
                    status: Some(a.status),
                    ..Default::default()
                };
                (k.clone(), entry)
            })
            .collect();
        let net = net.clone();
        let session = sessions
            .offer(Box::new(move || e.follow(net, req.allocation, req.cursors)))
            .map_err(failed_from)?;
        Ok(DeploymentLogs {
            id: r.id,
            status: r.status,
            logs,
            session: Some(session),
        })
    }

    /// The status of every deployment in the registry (finished ones included).
    pub fn statuses(&self) -> Vec<DeploymentStatus> {
        self.map
            .lock()
            .map(|m| m.values().map(|e| e.status()).collect())
            .unwrap_or_default()
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
        secrets: crate::secrets::Secrets,
        owner: &str,
        deadline_ms: i64,
    ) -> Result<String, ActorError> {
        crate::secrets::check(&ensemble, &secrets)
            .map_err(|e| failed(format!("invalid secrets: {e}")))?;
        if deadline_ms - now_ms() < MIN_DEPLOY_TIME_MS {
            return Err(failed(format!(
                "the deployment timeout must be at least {} s",
                MIN_DEPLOY_TIME_MS / 1000
            )));
        }
        let notes = crate::recovery::unsupported(&ensemble).map_err(failed)?;
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
            subnet: None,
            notes,
        };
        rec.event(now_ms(), "deployment created");
        (self.persist)(&rec);
        let engine = Arc::new(
            Engine::new(
                self.system.clone(),
                id.clone(),
                rec,
                self.persist.clone(),
                self.local_subnet.clone(),
            )
            .with_secrets(secrets)
            .with_paths(self.paths.clone()),
        );
        engine.register_check();
        if let Ok(mut m) = self.map.lock() {
            m.insert(id.clone(), engine.clone());
        }
        let span = crate::deployment_span(&id);
        tokio::spawn(
            async move {
                engine.clone().run().await;
                engine.retire_if_done();
            }
            .instrument(span),
        );
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
            let span = crate::deployment_span(&rec.id);
            let engine = Arc::new(
                Engine::new(
                    self.system.clone(),
                    rec.id.clone(),
                    rec,
                    self.persist.clone(),
                    self.local_subnet.clone(),
                )
                .with_paths(self.paths.clone()),
            );
            engine.register_check();
            if let Ok(mut m) = self.map.lock() {
                m.insert(
                    engine.record().map(|r| r.id).unwrap_or_default(),
                    engine.clone(),
                );
            }
            match status {
                DeploymentStatus::Running => {
                    tokio::spawn(
                        async move {
                            engine.monitor().await;
                            engine.retire_if_done();
                        }
                        .instrument(span),
                    );
                }
                s if !s.is_terminal() => {
                    tokio::spawn(
                        async move {
                            let _ = engine.shutdown("the node restart").await;
                            engine.retire_if_done();
                        }
                        .instrument(span),
                    );
                }
                _ => {}
            }
        }
    }

    /// Registers the control behaviors on the root actor.
    pub fn register(&self) -> Result<(), ActorError> {
        let sys = &self.system;
        call::register::<DeploymentNew, _, _, _>(
            sys,
            "root",
            self.clone(),
            |d, m: Incoming, req: NewDeployment| async move {
                refuse_invalid(&req.ensemble)?;
                let deadline_ms = i64::try_from(m.envelope.opt.exp / 1_000_000).unwrap_or(i64::MAX);
                let id = d.create(req.ensemble, req.secrets, m.sender.as_str(), deadline_ms)?;
                // The deployment exists and runs either way; a record that did not reach
                // the disk is logged, not answered as a failure of `new`.
                if let Err(e) = d.durable().await {
                    tracing::error!(deployment = %id, error = %e.message, "deployment record not durable");
                }
                Ok(NewDeploymentReply {
                    status: "OK".into(),
                    ensemble_id: id,
                })
            },
        )?;
        call::register::<DeploymentListCall, _, _, _>(
            sys,
            "root",
            self.clone(),
            |d, _m, _req| async move {
                let deployments = d
                    .map
                    .lock()
                    .map_err(|_| failed("registry poisoned"))?
                    .values()
                    .filter_map(|e| e.record().map(|r| r.summary()))
                    .collect();
                Ok(DeploymentList { deployments })
            },
        )?;
        call::register::<DeploymentStatusCall, _, _, _>(
            sys,
            "root",
            self.clone(),
            |d, _m, req: StatusRequest| async move {
                let r = d
                    .get(&req.id)?
                    .record()
                    .ok_or_else(|| failed("record lost"))?;
                let mut s = r.summary();
                s.events = Some(
                    r.events
                        .iter()
                        .filter(|e| e.seq > req.after)
                        .cloned()
                        .collect(),
                );
                Ok(s)
            },
        )?;
        call::register::<DeploymentManifest, _, _, _>(
            sys,
            "root",
            self.clone(),
            |d, _m, req: DeploymentRef| async move {
                let r = d
                    .get(&req.id)?
                    .record()
                    .ok_or_else(|| failed("record lost"))?;
                Ok(ManifestReply {
                    id: r.id,
                    status: r.status,
                    manifest: r.manifest,
                })
            },
        )?;
        call::register::<DeploymentLogsCall, _, _, _>(
            sys,
            "root",
            self.clone(),
            |d, _m, req: DeploymentLogsRequest| async move {
                let e = d.get(&req.id)?;
                if req.follow {
                    return d.follow(e, req);
                }
                let logs = e.logs(req.allocation.as_deref(), &req.cursors).await?;
                let r = e.record().ok_or_else(|| failed("record lost"))?;
                Ok(DeploymentLogs {
                    id: r.id,
                    status: r.status,
                    logs,
                    session: None,
                })
            },
        )?;
        call::register::<DeploymentUpdate, _, _, _>(
            sys,
            "root",
            self.clone(),
            |d, m: Incoming, req: UpdateDeployment| async move {
                refuse_invalid(&req.ensemble)?;
                let e = d.get(&req.id)?;
                // New nodes are placed while the caller waits (its message's expiry, less
                // the time the answer needs to travel back).
                let exp_ms = i64::try_from(m.envelope.opt.exp / 1_000_000).unwrap_or(i64::MAX);
                let left = (exp_ms - crate::now_ms() - 2_000).max(5_000);
                let window = Duration::from_millis(u64::try_from(left).unwrap_or(5_000));
                // Its own task: a caller that stops waiting does not cut an update in half.
                let span = crate::deployment_span(&e.inbox);
                let update = async move { e.apply_update(req.ensemble, window).await };
                let done = tokio::spawn(update.instrument(span))
                    .await
                    .map_err(|e| failed(format!("update task: {e}")))?;
                d.durable().await?;
                let changes = done.map_err(failed)?;
                Ok(UpdateDeploymentReply { ok: true, changes })
            },
        )?;
        call::register::<DeploymentShutdown, _, _, _>(
            sys,
            "root",
            self.clone(),
            |d, m: Incoming, req: DeploymentRef| async move {
                let e = d.get(&req.id)?;
                let span = crate::deployment_span(&e.inbox);
                let done = e.shutdown(m.sender.as_str()).instrument(span).await;
                e.retire_if_done();
                done.map_err(failed)?;
                d.durable().await?;
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
    use serde_json::{Value, json};

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
                    nunet_protocol::names::DEPLOYMENT_NEW,
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
}
