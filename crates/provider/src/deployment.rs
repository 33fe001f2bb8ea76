//! The provider side of deployments (NUNET-FORMATS §2.2): bidding on `/dms/deployment/request`
//! (only when onboarded, the executors are available and the resources fit), locking resources
//! on `/dms/deployment/commit`, creating allocation actors (own keys, persisted) on
//! `/dms/deployment/allocate`, undoing everything on `/dms/deployment/revert`, and the
//! allocation actors' `/dms/allocation/{start,status,logs,shutdown}`, which answer only the
//! orchestrator that created them. Also the orchestrator side's wiring (registry + store).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use nunet_actor::{ActorError, ActorSystem, Behavior, Handle, Incoming};
use nunet_did::Keypair;
use nunet_ensemble::spec::AllocationType;
use nunet_ensemble::{Execution, Location};
use nunet_executor::Executor;
use nunet_network::Paths;
use nunet_protocol::call;
use nunet_protocol::calls::{Allocate, BidRequestDirect, Commit, Revert};
use nunet_protocol::names::{BID, BID_REQUEST};
use nunet_protocol::{
    AllocateRequest, Allocated, AllocationRequest, AllocationStatus, Bid, BidReply, BidRequest,
    CommitRequest, Committed, RevertRequest, Reverted,
};
use nunet_resources::Resources as Held;
use nunet_store::{Kind, Records, StoredDocument};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::onboarding::{SharedManager, now_ms};

mod alloc;
mod control;
mod decline;
mod edge;
mod exec;
mod files;
mod gpus;
mod handoff;
mod health;
mod net;
mod notify;
mod objects;
mod output;
mod ports;
mod provision;
mod reconcile;
#[cfg(test)]
mod tests;
mod vmdata;
mod volumes;

/// Environment variable that enables test hooks (fault injection): with `DMS_TEST_HOOKS=1`,
/// `/dms/deployment/commit` fails while the file [`FAIL_COMMIT_FILE`] exists in the node's
/// data directory.
pub const TEST_HOOKS_ENV: &str = "DMS_TEST_HOOKS";
/// See [`TEST_HOOKS_ENV`].
pub const FAIL_COMMIT_FILE: &str = "test-fail-commit";
/// Most log bytes kept per stream of a finished allocation.
const MAX_LOG_BYTES: usize = 1 << 20;

fn failed(e: impl std::fmt::Display) -> ActorError {
    ActorError::failed(e.to_string())
}

/// An allocation as persisted on the provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AllocRecord {
    id: String,
    name: String,
    ensemble_id: String,
    node_id: String,
    orchestrator: Handle,
    kind: AllocationType,
    execution: Execution,
    resources: nunet_ensemble::Resources,
    /// The allocation actor's inbox; its key is derived from the node's key and this name
    /// (`ActorSystem::child_key`), never stored.
    inbox: String,
    status: AllocationStatus,
    exit_code: Option<i64>,
    reason: Option<String>,
    stdout: String,
    stderr: String,
    /// Public → private port mappings (published by the executor).
    #[serde(default)]
    ports: Vec<nunet_ensemble::spec::PortMapping>,
    /// Provision scripts (name, body), run in order before the workload.
    #[serde(default)]
    provision: Vec<(String, String)>,
    /// Volumes mounted into it (`volumes.rs`).
    #[serde(default)]
    volumes: Vec<nunet_ensemble::spec::Volume>,
    /// Objects staged into it before it starts (`objects.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<nunet_ensemble::spec::Input>,
    /// Directories published when it completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<nunet_ensemble::spec::Output>,
    /// The secrets its inputs and outputs name: memory only, never written with the record.
    #[serde(skip)]
    credentials: BTreeMap<String, nunet_ensemble::data::S3Credentials>,
    /// Created / started / finished (deploy-control).
    #[serde(default)]
    times: control::Times,
    /// The health check this provider runs while it runs.
    #[serde(default)]
    healthcheck: Option<nunet_ensemble::spec::Healthcheck>,
    /// What the checks found since it last started.
    #[serde(default)]
    health: Option<nunet_protocol::Health>,
    /// Resources, ports and subnet address stay when the execution ends (its orchestrator
    /// may restart it); they go with its shutdown or the revert.
    #[serde(default)]
    keep_on_exit: bool,
    /// Restarts in place so far.
    #[serde(default)]
    restarts: u32,
    /// Bumped at every start: a watcher or health loop of an earlier start stands down.
    #[serde(default)]
    generation: u64,
    /// The GPUs its commitment locked, as the executor gets them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gpus: Vec<nunet_executor::GpuDevice>,
}

impl AllocRecord {
    /// Whether it still holds its resources here: it runs or is about to, or it ended and
    /// waits for its orchestrator to restart it ([`AllocRecord::keep_on_exit`]).
    fn holds(&self) -> bool {
        self.status.is_active()
            || (self.keep_on_exit && self.status != AllocationStatus::Terminated)
    }
}

/// The provider: resources, executors and the allocations it runs.
pub struct Provider {
    system: ActorSystem,
    key: Keypair,
    resources: SharedManager,
    /// Allocation records (written by the records thread, never under the manager's lock).
    records: Records,
    executors: BTreeMap<String, Arc<dyn Executor>>,
    subnets: Arc<crate::subnet::NodeSubnets>,
    location: Location,
    fail_commit: Option<std::path::PathBuf>,
    port_locks: Arc<ports::PortLocks>,
    allocs: Mutex<HashMap<String, Arc<Mutex<AllocRecord>>>>,
    commits: Mutex<HashMap<String, Vec<String>>>,
    /// Ensemble id → the orchestrator actor (DID) that first asked this provider about it,
    /// and when: nobody else may commit, allocate or bid for that ensemble here.
    owners: Mutex<HashMap<String, (String, i64)>>,
    answered: Mutex<HashMap<(String, u64), i64>>,
    /// Set while a forced offboard stops the workloads: no bid, commit, allocate or start
    /// is taken meanwhile, so nothing starts that the offboard would leave unaccounted.
    offboarding: std::sync::atomic::AtomicBool,
    edge: edge::EdgeState,
    /// Provider files ensembles may name (VM images, WASM modules).
    files: files::LocalFiles,
    /// Allocations' volumes.
    volumes: volumes::Volumes,
    /// `job.s3_private_endpoints`: object stores inputs and outputs may reach at
    /// addresses that are not public.
    s3_private_endpoints: Vec<String>,
    /// Allocation output ([`output`]).
    output: Arc<nunet_output::Server>,
    /// Reports to orchestrators, with timeouts sized to the path.
    reports: notify::Reports,
    /// Tasks' outputs shared with, and fetched from, other providers ([`handoff`]).
    transfers: nunet_files::Files,
}

/// Ensemble resources → the accounting's units, without GPUs: those are units chosen by
/// [`gpus::pick`] and added by the commit. Cores outside the ensemble bounds are refused,
/// never clamped: `-4` cores must not account as zero.
fn held(r: &nunet_ensemble::Resources) -> Result<Held, ActorError> {
    nunet_ensemble::limits::cores_amount(r.cpu.cores)
        .map_err(|e| failed(format!("resources.cpu.cores: {e}")))?;
    // At most 2^20 cores: the product is exact and far below u64::MAX.
    let cpu_millicores = (r.cpu.cores * 1000.0).ceil() as u64;
    Ok(Held {
        cpu_millicores,
        ram_bytes: r.ram.size,
        disk_bytes: r.disk.size,
        gpus: BTreeMap::new(),
    })
}

/// What a bid offers: the free amounts and every free GPU unit.
fn offered(r: &Held, free_gpus: &[nunet_resources::gpu::GpuUnit]) -> nunet_ensemble::Resources {
    let mut o = nunet_ensemble::Resources::default();
    o.cpu.cores = r.cpu_millicores as f64 / 1000.0;
    o.ram.size = r.ram_bytes;
    o.disk.size = r.disk_bytes;
    o.gpus = free_gpus.iter().map(gpus::as_offer).collect();
    o
}

fn opt(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

/// What a provider is built from; the daemon assembles it.
pub struct Parts {
    /// The node's actor system.
    pub system: ActorSystem,
    /// The node key (signs bids and declines).
    pub key: Keypair,
    /// The node's resource manager.
    pub resources: SharedManager,
    /// The node's deployment and allocation records.
    pub records: Records,
    /// Executors by ensemble executor name (`docker`, `firecracker`, `wasm`).
    pub executors: BTreeMap<String, Arc<dyn Executor>>,
    /// The node's ensemble subnets.
    pub subnets: Arc<crate::subnet::NodeSubnets>,
    /// The libp2p host (link probes).
    pub network: nunet_network::Network,
    /// Allocation output: the spools and the server that streams them to followers.
    pub output: Arc<nunet_output::Server>,
    /// File transfers: tasks' outputs shared with, and fetched from, other providers.
    pub transfers: nunet_files::Files,
}

impl Provider {
    /// A provider over the node's resources and executors.
    pub fn new(parts: Parts, config: &nunet_config::Config) -> Arc<Self> {
        let Parts {
            system,
            key,
            resources,
            records,
            executors,
            subnets,
            network,
            output,
            transfers,
        } = parts;
        let g = &config.general;
        let location = Location {
            continent: opt(&g.host_continent),
            country: opt(&g.host_country),
            city: opt(&g.host_city),
            ..Default::default()
        };
        let reports = notify::Reports::new(system.clone(), Paths::new(network.rtts()));
        Arc::new(Self {
            reports,
            system,
            key,
            resources,
            records,
            executors,
            subnets,
            location,
            fail_commit: std::env::var(TEST_HOOKS_ENV)
                .is_ok_and(|v| v == "1")
                .then(|| g.data_dir.join(FAIL_COMMIT_FILE)),
            port_locks: Arc::new(ports::PortLocks::load(
                &g.data_dir,
                g.port_available_range_from,
                g.port_available_range_to,
            )),
            allocs: Mutex::new(HashMap::new()),
            commits: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashMap::new()),
            offboarding: std::sync::atomic::AtomicBool::new(false),
            edge: edge::EdgeState::new(network),
            files: files::LocalFiles::new(&g.data_dir, &config.job.image_roots),
            volumes: volumes::Volumes::new(&g.data_dir, &config.job),
            s3_private_endpoints: config.job.s3_private_endpoints.clone(),
            output,
            transfers,
        })
    }

    fn available(&self) -> Vec<String> {
        self.executors
            .iter()
            .filter(|(_, e)| e.status().available)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn with_manager<T>(
        &self,
        f: impl FnOnce(&mut nunet_resources::ResourceManager) -> Result<T, ActorError>,
    ) -> Result<T, ActorError> {
        f(&mut *crate::onboarding::lock(&self.resources)?)
    }

    fn persist(&self, rec: &AllocRecord) {
        let doc = StoredDocument {
            id: rec.id.clone(),
            ensemble_id: rec.ensemble_id.clone(),
            status: rec.status.as_str().to_string(),
            doc: serde_json::to_string(rec).unwrap_or_default(),
        };
        self.records.put(Kind::Allocation, doc, now_ms());
    }

    fn forget(&self, id: &str) {
        self.records.delete(Kind::Allocation, id);
        self.output.spools().remove(id);
    }

    /// Waits until every record change queued so far is on disk (before a reply that
    /// promises it).
    async fn durable(&self) -> Result<(), ActorError> {
        self.records.flush().await.map_err(failed)
    }

    fn release(&self, id: &str) {
        let _ = self.with_manager(|m| m.accounting_mut().release(id).map(|_| ()).map_err(failed));
        self.port_locks.unlock(id);
    }

    /// [`Self::release`] from async code: the accounting's SQLite write and the port-lock
    /// file run on the blocking pool, so no async worker waits on the manager's lock.
    async fn release_async(&self, id: &str) {
        let (m, locks, id) = (
            self.resources.clone(),
            self.port_locks.clone(),
            id.to_string(),
        );
        let r = tokio::task::spawn_blocking(move || {
            let r = crate::onboarding::lock(&m)
                .and_then(|mut g| g.accounting_mut().release(&id).map(|_| ()).map_err(failed));
            locks.unlock(&id);
            r.map_err(|e| format!("releasing {id}: {}", e.message))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        if let Err(e) = r {
            tracing::warn!(error = %e, "resources not released");
        }
    }

    /// Whether a reservation id still holds resources (port locks follow reservations).
    fn live_reservations(&self) -> impl Fn(&str) -> bool + use<> {
        let ids: std::collections::HashSet<String> = self
            .with_manager(|g| {
                Ok(g.accounting()
                    .reservations()
                    .map(|r| r.id.clone())
                    .collect())
            })
            .unwrap_or_default();
        move |id: &str| ids.contains(id)
    }

    /// Binds `ensemble` to the orchestrator actor `sender` the first time it shows up here;
    /// refuses any other sender afterwards. Without it, an orchestrator that learnt another
    /// deployment's ensemble id (it travels in the bid request) could allocate that
    /// deployment's committed reservations with its own workload, or commit them first.
    fn claim(&self, ensemble: &str, sender: &nunet_did::Did) -> Result<(), ActorError> {
        let mut owners = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = now_ms();
        if owners.len() > 4096 {
            // A day-old claim of an ensemble that holds nothing here protects nothing any
            // more; one that still runs here keeps its claim at any age (orchestrator
            // grants are renewed for as long as the deployment lives).
            let held: std::collections::HashSet<String> = self
                .allocs
                .lock()
                .map(|m| {
                    m.values()
                        .filter_map(|c| c.lock().ok().map(|r| r.ensemble_id.clone()))
                        .collect()
                })
                .unwrap_or_default();
            owners
                .retain(|e, (_, t)| held.contains(e) || now.saturating_sub(*t) < 24 * 3600 * 1000);
        }
        match owners.get(ensemble) {
            Some((owner, _)) if owner != sender.as_str() => Err(ActorError::new(
                nunet_actor::ErrorKind::Denied,
                format!(
                    "ensemble {ensemble} is orchestrated by {owner} on this provider, not by {sender}"
                ),
            )),
            Some(_) => Ok(()),
            None => {
                owners.insert(ensemble.to_string(), (sender.to_string(), now));
                Ok(())
            }
        }
    }

    fn bid(&self, m: &Incoming, req: BidRequest) -> Result<BidReply, ActorError> {
        use nunet_protocol::DeclineReason;
        req.check().map_err(failed)?;
        self.claim(&req.ensemble_id, &m.sender)?;
        let me = self.system.peer_id().to_string();
        if req.exclude.contains(&me) {
            return self.decline(&req, Some(DeclineReason::Excluded), BTreeMap::new());
        }
        // GPU units only for a request that asks for GPUs (every bid request on the network
        // reaches every provider).
        let wants_gpus = req.nodes.iter().any(|n| !n.resources.gpus.is_empty());
        let (onboarded, free, free_gpus) = self.with_manager(|g| {
            Ok((
                g.is_onboarded(),
                g.accounting().free(),
                if wants_gpus {
                    gpus::free_units(g.gpu_units())
                } else {
                    Vec::new()
                },
            ))
        })?;
        if !onboarded || self.is_offboarding() {
            return self.decline(&req, Some(DeclineReason::NotOnboarded), BTreeMap::new());
        }
        {
            let mut a = self.answered.lock().map_err(|_| failed("poisoned"))?;
            let now = now_ms();
            a.retain(|_, t| now - *t < 300_000);
            if a.insert((req.ensemble_id.clone(), req.nonce), now)
                .is_some()
            {
                return Err(failed("already answered"));
            }
        }
        let available = self.available();
        let live = self.live_reservations();
        let mut nodes = req.nodes.clone();
        nodes.shuffle(&mut rand::thread_rng());
        let mut refused = BTreeMap::new();
        let node = nodes.iter().find(|n| {
            let why = self.node_refusal(n, &me, &available, &live, &free_gpus);
            if let Some(r) = why {
                refused.insert(n.node_id.clone(), r);
            }
            why.is_none()
        });
        let Some(node) = node else {
            return self.decline(&req, None, refused);
        };
        // node_refusal matched the node's GPUs among these same units.
        let offer = gpus::pick(&node.resources.gpus, &free_gpus).map_err(failed)?;
        let bid = Bid {
            ensemble_id: req.ensemble_id,
            node_id: node.node_id.clone(),
            peer: me,
            handle: self.system.root(),
            location: self.location.clone(),
            free: offered(&free, &free_gpus),
            executors: available,
            used_subnets: self.subnets.used_ranges(),
            gpus: offer.iter().map(gpus::offered).collect(),
            signature: String::new(),
        }
        .sign(&self.key);
        Ok(BidReply::Bid(Box::new(bid)))
    }

    fn commit(&self, m: &Incoming, req: CommitRequest) -> Result<Committed, ActorError> {
        self.refuse_while_offboarding()?;
        req.check().map_err(failed)?;
        self.claim(&req.ensemble_id, &m.sender)?;
        if let Some(f) = &self.fail_commit
            && f.exists()
        {
            return Err(failed(format!(
                "commit refused by the test hook {}",
                f.display()
            )));
        }
        let mut done: Vec<String> = Vec::new();
        let now = now_ms();
        let r = self.with_manager(|g| {
            // All the allocations' GPUs matched together, as the bid matched the node's: one
            // at a time, an early allocation could take the unit only a later one fits.
            let want_gpus: Vec<_> = req
                .allocations
                .iter()
                .flat_map(|a| a.resources.gpus.iter().cloned())
                .collect();
            let mut units = gpus::pick(&want_gpus, &gpus::free_units(g.gpu_units()))
                .map_err(failed)?
                .into_iter();
            for a in &req.allocations {
                let mut want = held(&a.resources)?;
                want.gpus = units
                    .by_ref()
                    .take(a.resources.gpus.len())
                    .map(|u| (u.key, u.vram_bytes))
                    .collect();
                g.accounting_mut()
                    .commit(&a.id, want, req.expires_at_ms, now)
                    .map_err(|e| failed(format!("{}: {e}", a.name)))?;
                done.push(a.id.clone());
            }
            Ok(())
        });
        let live = self.live_reservations();
        let r = r.and_then(|()| {
            for a in &req.allocations {
                let ports: Vec<u16> = a.ports.iter().map(|p| p.public).collect();
                self.port_locks
                    .lock(&a.id, &ports, &|id: &str| live(id) && id != a.id)
                    .map_err(|e| failed(format!("{}: {e}", a.name)))?;
            }
            Ok(())
        });
        if let Err(e) = r {
            for id in &done {
                self.release(id);
            }
            return Err(e);
        }
        if let Ok(mut c) = self.commits.lock() {
            c.entry(req.ensemble_id.clone())
                .or_default()
                .extend(done.clone());
        }
        Ok(Committed {
            ok: true,
            committed: done,
        })
    }

    fn allocate(
        self: &Arc<Self>,
        m: &Incoming,
        req: AllocateRequest,
    ) -> Result<Allocated, ActorError> {
        self.refuse_while_offboarding()?;
        if req.orchestrator.id != m.sender.as_str() {
            return Err(failed("the orchestrator handle must be the sender"));
        }
        req.check().map_err(failed)?;
        self.claim(&req.ensemble_id, &m.sender)?;
        let committed = self
            .commits
            .lock()
            .ok()
            .and_then(|c| c.get(&req.ensemble_id).cloned())
            .unwrap_or_default();
        if let Some(a) = req.allocations.iter().find(|a| !committed.contains(&a.id)) {
            return Err(failed(format!(
                "allocation {} ({}) was not committed for ensemble {} on this provider",
                a.name, a.id, req.ensemble_id
            )));
        }
        // Everything that can refuse is checked before anything is allocated, so a refusal
        // leaves no allocation of the request behind.
        for a in &req.allocations {
            objects::check(a)?;
        }
        let held_units = req
            .allocations
            .iter()
            .enumerate()
            .map(|(i, a)| self.as_committed(i, a))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(a) = req
            .allocations
            .iter()
            .find(|a| !self.executors.contains_key(a.execution.executor()))
        {
            return Err(failed(format!(
                "no {} executor on this provider",
                a.execution.executor()
            )));
        }
        // AMD/Intel device nodes as they are now (one look at the machine per request).
        let now = held_units
            .iter()
            .flatten()
            .any(|u| u.vendor != nunet_resources::gpu::GpuVendor::Nvidia)
            .then(nunet_resources::hardware::detect_local_gpus);
        let devices = req
            .allocations
            .iter()
            .zip(held_units)
            .map(|(a, units)| self.gpu_devices(a, units, now.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut handles = BTreeMap::new();
        let mut gpu_ids = BTreeMap::new();
        for (a, devices) in req.allocations.iter().zip(devices) {
            self.with_manager(|g| g.accounting_mut().allocate(&a.id, now_ms()).map_err(failed))?;
            let mut rec = record(&req, a);
            if !devices.is_empty() {
                gpu_ids.insert(
                    a.name.clone(),
                    devices.iter().map(|d| d.id.clone()).collect(),
                );
            }
            rec.gpus = devices;
            let h = self.adopt(rec);
            handles.insert(a.name.clone(), h);
        }
        Ok(Allocated {
            ok: true,
            allocations: handles,
            gpus: gpu_ids,
        })
    }

    /// Refuses allocation `i` unless it asks for exactly the resources and public ports its
    /// commitment locked: the executor's limits come from the allocate request, the
    /// accounting from the commit, and the two must not disagree. Returns the GPU units the
    /// commitment holds.
    fn as_committed(
        &self,
        i: usize,
        a: &AllocationRequest,
    ) -> Result<Vec<nunet_resources::gpu::GpuUnit>, ActorError> {
        let want = held(&a.resources)?;
        let (committed, units) = self.with_manager(|g| {
            Ok((
                g.accounting()
                    .reservations()
                    .find(|r| r.id == a.id)
                    .map(|r| r.resources.clone()),
                g.gpu_units(),
            ))
        })?;
        let Some(c) = committed else {
            return Err(failed(format!(
                "allocations[{i}]: no commitment {} on this provider",
                a.id
            )));
        };
        let held_units: Vec<_> = units
            .into_iter()
            .filter(|u| c.gpus.contains_key(&u.key))
            .collect();
        // The same amounts, and GPUs that serve exactly the GPUs asked for.
        let gpus_ok = held_units.len() == c.gpus.len()
            && c.gpus.len() == a.resources.gpus.len()
            && gpus::pick(&a.resources.gpus, &held_units).is_ok();
        if (Held {
            gpus: BTreeMap::new(),
            ..c
        }) != want
            || !gpus_ok
        {
            return Err(failed(format!(
                "allocations[{i}].resources differ from what commitment {} locked",
                a.id
            )));
        }
        let mut ports: Vec<u16> = a.ports.iter().map(|p| p.public).collect();
        ports.sort_unstable();
        if ports != self.port_locks.ports_of(&a.id) {
            return Err(failed(format!(
                "allocations[{i}].ports differ from the ports commitment {} locked",
                a.id
            )));
        }
        Ok(held_units)
    }

    /// The GPU `units` allocation `a`'s commitment holds, as its executor gets them (AMD and
    /// Intel device nodes taken from `now`, the machine as detected at allocate); refused
    /// when that executor cannot hand them over here.
    fn gpu_devices(
        &self,
        a: &AllocationRequest,
        units: Vec<nunet_resources::gpu::GpuUnit>,
        now: Option<&nunet_resources::gpu::GpuDetection>,
    ) -> Result<Vec<nunet_executor::GpuDevice>, ActorError> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let exec = [a.execution.executor().to_string()];
        if let Some(why) = gpus::runtime_refusal(&self.executors, &exec, &units) {
            return Err(failed(format!("{}: {why}", a.name)));
        }
        units
            .into_iter()
            .map(|u| {
                let u = match now {
                    Some(now) => gpus::with_current_nodes(u, now),
                    None => Ok(u),
                }
                .map_err(|e| failed(format!("{}: {e}", a.name)))?;
                gpus::device_of(&u).ok_or_else(|| {
                    failed(format!("{}: GPU {} is of an unknown vendor", a.name, u.key))
                })
            })
            .collect()
    }

    async fn revert(&self, m: &Incoming, req: RevertRequest) -> Result<Reverted, ActorError> {
        // Only the ensemble's orchestrator may revert it; checked before anything is touched
        // (its allocations are taken out of the map below).
        self.claim(&req.ensemble_id, &m.sender)?;
        // Only some allocations (a live update), or all of the ensemble.
        let picked =
            |id: &str| req.allocations.is_empty() || req.allocations.iter().any(|x| x == id);
        let cells: Vec<Arc<Mutex<AllocRecord>>> = {
            let mut map = self.allocs.lock().map_err(|_| failed("poisoned"))?;
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, c)| {
                    c.lock().is_ok_and(|r| {
                        r.ensemble_id == req.ensemble_id
                            && r.orchestrator.id == m.sender.as_str()
                            && picked(&r.id)
                    })
                })
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter().filter_map(|k| map.remove(k)).collect()
        };
        let mut stopped = Vec::new();
        for cell in &cells {
            let Ok(rec) = cell.lock().map(|r| r.clone()) else {
                continue;
            };
            if rec.orchestrator.id != m.sender.as_str() {
                return Err(ActorError::new(
                    nunet_actor::ErrorKind::Denied,
                    "only the ensemble's orchestrator may revert it",
                ));
            }
            if let Some(exec) = self.executors.get(rec.execution.executor()) {
                self.terminate(cell, exec).await;
            }
            self.system.stop_child(&rec.inbox);
            self.forget(&rec.id);
            stopped.push(rec.id);
        }
        let commits: Vec<String> = match self.commits.lock() {
            Ok(mut c) if req.allocations.is_empty() => {
                c.remove(&req.ensemble_id).unwrap_or_default()
            }
            Ok(mut c) => {
                let ids = c.entry(req.ensemble_id.clone()).or_default();
                let (gone, kept): (Vec<String>, Vec<String>) =
                    ids.drain(..).partition(|id| picked(id));
                *ids = kept;
                if ids.is_empty() {
                    c.remove(&req.ensemble_id);
                }
                gone
            }
            Err(_) => Vec::new(),
        };
        for id in &commits {
            self.release_async(id).await;
        }
        self.ensemble_behaviors_down_if_gone(&req.ensemble_id);
        self.subnet_down_if_gone(&req.ensemble_id).await;
        // Only with the whole ensemble: a live update reverts a changed allocation before
        // its replacement starts on the same volumes.
        if req.allocations.is_empty() {
            self.volumes_down_if_gone(&req.ensemble_id).await;
        }
        Ok(Reverted {
            ok: true,
            stopped,
            released_commitments: commits.len(),
        })
    }

    /// The status of every allocation this provider holds (finished ones included).
    pub fn allocation_statuses(&self) -> Vec<AllocationStatus> {
        let cells: Vec<_> = match self.allocs.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return Vec::new(),
        };
        cells
            .iter()
            .filter_map(|c| c.lock().ok().map(|r| r.status))
            .collect()
    }

    /// Re-creates the allocation actors persisted before a restart, then reconciles the ones
    /// that were running or pending with their executors and orchestrators (`reconcile.rs`).
    pub fn restore(self: &Arc<Self>) {
        let docs = match self.records.list(Kind::Allocation) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "allocation records unreadable: none restored");
                Vec::new()
            }
        };
        let mut held = Vec::new();
        for d in docs {
            match serde_json::from_str::<AllocRecord>(&d.doc) {
                Ok(rec) => {
                    // Also a supervised allocation that ended and waits for a restart: its
                    // orchestrator says whether it still wants it, or it is released.
                    let active = rec.holds();
                    let id = rec.id.clone();
                    self.adopt(rec);
                    let cell = self.allocs.lock().ok().and_then(|m| m.get(&id).cloned());
                    if let (true, Some(cell)) = (active, cell) {
                        held.push(cell);
                    }
                }
                Err(e) => tracing::warn!(id = %d.id, error = %e, "unreadable allocation record"),
            }
        }
        // Output of allocations whose records are gone (removed while the daemon was down).
        let known: std::collections::HashSet<String> = self
            .allocs
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let dropped = self.output.spools().retain(|a| known.contains(a));
        if dropped > 0 {
            tracing::info!(dropped, "deleted the output of allocations no longer held");
        }
        tokio::spawn(self.clone().reconcile(held));
    }

    /// Registers the provider behaviors on the root actor.
    pub fn register(self: &Arc<Self>) -> Result<(), ActorError> {
        let p = self.clone();
        // The gossip request carries the same payload and reply as the direct one.
        self.system.register(
            "root",
            BID_REQUEST,
            Behavior::broadcast(move |m: Incoming| {
                let p = p.clone();
                async move {
                    let req =
                        call::decode_request::<BidRequestDirect>(BID_REQUEST, m.payload.clone())?;
                    call::encode(BID_REQUEST, &p.bid(&m, req)?)
                }
            })
            .replying_as(BID.parse().map_err(|e| failed(format!("{BID}: {e}")))?),
        )?;
        let sys = &self.system;
        call::register::<BidRequestDirect, _, _, _>(
            sys,
            "root",
            self.clone(),
            |p, m, req| async move { p.bid(&m, req) },
        )?;
        call::register::<Commit, _, _, _>(sys, "root", self.clone(), |p, m, req| async move {
            let span = ensemble_span(&req.ensemble_id);
            tokio::task::spawn_blocking(move || span.in_scope(|| p.commit(&m, req)))
                .await
                .map_err(failed)?
        })?;
        call::register::<Allocate, _, _, _>(sys, "root", self.clone(), |p, m, req| async move {
            let q = p.clone();
            let span = ensemble_span(&req.ensemble_id);
            let r = tokio::task::spawn_blocking(move || span.in_scope(|| q.allocate(&m, req)))
                .await
                .map_err(failed)??;
            p.durable().await?;
            Ok(r)
        })?;
        call::register::<Revert, _, _, _>(sys, "root", self.clone(), |p, m, req| async move {
            let span = ensemble_span(&req.ensemble_id);
            let r = p.revert(&m, req).instrument(span).await?;
            p.durable().await?;
            Ok(r)
        })?;
        self.register_subnet()?;
        self.register_edge()?;
        self.register_control()
    }
}

/// The span of this provider's lines about one deployment (commit, allocate, revert): the
/// same name and field as the orchestrator's, so one query finds both sides.
fn ensemble_span(id: &str) -> tracing::Span {
    tracing::info_span!("deployment", ensemble = %id, trace_root = %id)
}

fn record(req: &AllocateRequest, a: &AllocationRequest) -> AllocRecord {
    AllocRecord {
        id: a.id.clone(),
        name: a.name.clone(),
        ensemble_id: req.ensemble_id.clone(),
        node_id: req.node_id.clone(),
        orchestrator: req.orchestrator.clone(),
        kind: a.kind,
        execution: a.execution.clone(),
        resources: a.resources.clone(),
        inbox: format!("alloc-{}", a.id),
        status: AllocationStatus::Pending,
        exit_code: None,
        reason: None,
        stdout: String::new(),
        stderr: String::new(),
        ports: a.ports.clone(),
        provision: a.provision.clone(),
        volumes: a.volumes.clone(),
        inputs: a.inputs.clone(),
        outputs: a.outputs.clone(),
        credentials: a.credentials.clone(),
        times: control::Times {
            created_ms: Some(now_ms()),
            ..Default::default()
        },
        healthcheck: a.healthcheck.clone(),
        health: None,
        keep_on_exit: a.keep_on_exit,
        restarts: 0,
        generation: 0,
        gpus: Vec::new(),
    }
}

impl Provider {
    fn is_offboarding(&self) -> bool {
        self.offboarding.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn refuse_while_offboarding(&self) -> Result<(), ActorError> {
        if self.is_offboarding() {
            return Err(failed("this provider is offboarding"));
        }
        Ok(())
    }
}

impl crate::onboarding::Workloads for Provider {
    fn stop_all(self: Arc<Self>) -> futures::future::BoxFuture<'static, Vec<String>> {
        // Closed before the snapshot: nothing allocated or started after it.
        self.offboarding
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let p = self;
            let cells: Vec<Arc<Mutex<AllocRecord>>> = p
                .allocs
                .lock()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let stops = cells.into_iter().map(|cell| {
                let p = p.clone();
                async move {
                    let rec = cell.lock().map(|r| r.clone()).ok()?;
                    // Also a supervised one waiting for its restart: it holds resources.
                    if !rec.holds() {
                        return None;
                    }
                    let exec = p.executors.get(rec.execution.executor())?;
                    p.terminate(&cell, exec).await;
                    tracing::info!(allocation = %rec.id, ensemble = %rec.ensemble_id,
                        "stopped for a forced offboard");
                    let done = cell.lock().map(|r| r.clone()).ok();
                    if let Some(done) = done {
                        // The orchestrator learns it at once; not waited for.
                        let reports = p.reports.clone();
                        tokio::spawn(async move { reports.exit(&done).await });
                    }
                    Some(rec.id)
                }
            });
            futures::future::join_all(stops)
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }

    fn resume(&self) {
        self.offboarding
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn gpu_support(&self) -> BTreeMap<String, nunet_executor::GpuSupport> {
        self.executors
            .iter()
            .map(|(n, e)| (n.clone(), e.gpu_support()))
            .collect()
    }
}
