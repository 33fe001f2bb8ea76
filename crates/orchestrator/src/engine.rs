//! The orchestrator actor's work: bids → placement → commit → allocate → start → supervise,
//! retrying with failed peers excluded until the deadline, and shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

use futures::future::join_all;
use nunet_actor::{ActorError, ActorSystem, Handle};
use nunet_placement::Problem;
use nunet_protocol::call::{self, Call};
use nunet_protocol::calls::{Allocate, AllocationStart, Commit, Revert};
use nunet_protocol::names::{BID, BID_REQUEST, DEPLOYMENT_TOPIC};
use nunet_protocol::{
    AllocateRequest, AllocationRequest, AllocationStatus, Bid, BidRequest, CommitAllocation,
    CommitRequest, DeploymentStatus, ManifestAllocation, ManifestNode, NodeBidRequest,
    RevertRequest, allocation_id,
};

use crate::state::Deployment;
use crate::{PersistFn, now_ms};

/// How long a bid round stays open after every node has at least one bid, for the peers
/// known to serve the deployment topic that have not answered yet (a round closes at once
/// when all of them have). Peers still silent then are left out of the next rounds for a
/// while (the network's roster quarantine), so one dead or unreachable provider slows one
/// round, not every round.
const BID_GRACE: Duration = Duration::from_secs(1);

/// How long a peer that failed a deployment round is left out of the next rounds.
pub const FAILED_PEER_PAUSE: Duration = Duration::from_secs(10);

/// How long bids are collected per round (NuNet `BidRequestTimeout`).
pub const BID_COLLECT: Duration = Duration::from_secs(3);
/// Shortest time between the starts of two bid rounds, ms.
pub const RETRY_PACE_MS: i64 = 500;
/// Commit timeout per allocation (NuNet `CommitDeploymentTimeout`).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);
/// Allocate timeout per allocation.
pub const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Revert timeout per provider (its allocations are stopped and released).
pub const REVERT_TIMEOUT: Duration = Duration::from_secs(15);
/// Start timeout (image pulls can be slow; NuNet `AllocationStartTimeout`).
pub const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a commitment lasts unless allocated.
pub const COMMIT_TTL_MS: i64 = 60_000;
/// How often running allocations are polled as a safety net; exits are pushed by providers
/// (`/dms/ensemble/<id>/allocation/exited`), so this only matters for lost reports and dead
/// providers.
pub const MONITOR_EVERY: Duration = Duration::from_secs(5);
/// How soon an allocation that missed a status check is asked again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// Consecutive failed status checks before an allocation counts as dead.
pub const MAX_MISSED_CHECKS: u32 = 3;

/// A placed node: its name and the winning bid.
pub(crate) type Assignment = Vec<(String, Bid)>;

/// Why a round failed.
pub(crate) enum RoundError {
    /// Retry (with these peers excluded).
    Retry(String, Vec<String>),
    /// Retrying cannot help.
    Fatal(String),
}

/// One deployment's orchestrator: its actor, its record and how to persist it.
pub struct Engine {
    pub(crate) system: ActorSystem,
    pub(crate) inbox: String,
    pub(crate) rec: Mutex<Deployment>,
    pub(crate) persist: PersistFn,
    pub(crate) exits: Arc<crate::exits::ExitInbox>,
    /// Link measurements of this deployment (edge constraints), kept across rounds.
    pub(crate) edges: Mutex<crate::edges::EdgeCache>,
    /// This node's side of `subnet.join`, when the node offers one.
    pub(crate) local_subnet: Option<Arc<dyn crate::subnet::LocalSubnet>>,
    /// Held by whatever changes the deployment's shape (a live update, a supervisor
    /// iteration, a standby placement), so that none of them sees the others half done.
    pub(crate) changing: tokio::sync::Mutex<()>,
    /// Liveness of the providers of nodes that heal from a lost provider.
    pub(crate) heartbeats: crate::heartbeat::Heartbeats,
    /// Measured paths to providers, which size call timeouts.
    pub(crate) paths: crate::paths::Paths,
    /// Peers being fenced ([`Engine::fence`]): excluded from placements until fenced.
    pub(crate) fencing: Mutex<std::collections::HashSet<String>>,
    /// Wakes the standby keeper ([`crate::standby`]) when a standby was promoted or lost.
    pub(crate) standby_wake: tokio::sync::Notify,
    /// Why providers declined in the last bid round for every node (key `None`) or for one
    /// node (a redeploy or standby round, which may run beside another), as
    /// `peer: node: reason`, for the error of a round that got no bid.
    pub(crate) declines: Mutex<std::collections::HashMap<Option<String>, Vec<String>>>,
    /// The deployment's secrets (memory only; see [`crate::secrets`]).
    secrets: crate::secrets::Secrets,
    /// Calls in flight from the orchestrator actor; the actor is removed once the
    /// deployment has ended and none is left ([`Engine::retire_if_done`]).
    calls: Mutex<usize>,
}

/// One call in flight from the orchestrator actor (see [`Engine::call`]).
struct ActorInUse<'a>(&'a Engine);

impl Drop for ActorInUse<'_> {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.calls.lock() {
            *n = n.saturating_sub(1);
        }
        self.0.retire_if_done();
    }
}

/// The manifest entry of a node placed on `bid`'s provider.
pub(crate) fn manifest_node(bid: &Bid) -> ManifestNode {
    ManifestNode {
        peer: bid.peer.clone(),
        did: bid.handle.did.clone(),
        handle: bid.handle.clone(),
        location: bid.location.to_string(),
    }
}

/// What a provider is asked to run for allocation `a` of node `node` (a live update compares
/// these to tell a changed allocation from an untouched one).
pub(crate) fn allocation_request(
    ensemble_id: &str,
    e: &nunet_ensemble::Ensemble,
    node: &str,
    a: &nunet_ensemble::spec::Allocation,
) -> AllocationRequest {
    let order = crate::order::start_order(e).unwrap_or_default();
    let supervision = crate::recovery::Supervision::new(e, &order);
    AllocationRequest {
        name: a.name.clone(),
        id: allocation_id(ensemble_id, node, &a.name),
        kind: a.kind,
        execution: a.execution.clone(),
        resources: a.resources.clone(),
        ports: crate::provision::ports_of(e, node, &a.name),
        provision: crate::provision::provision_of(e, a),
        healthcheck: a.healthcheck.as_ref().map(|h| provider_healthcheck(h, a)),
        keep_on_exit: supervision.supervised(&a.name),
        volumes: a.volumes.clone(),
        inputs: a.inputs.clone(),
        outputs: a.outputs.clone(),
        credentials: Default::default(),
    }
}

/// A stand-in bid for a node already placed on `m` (what [`Engine::revert`] needs).
pub(crate) fn bid_of(ensemble_id: &str, node: &str, m: &ManifestNode) -> Bid {
    Bid {
        ensemble_id: ensemble_id.to_string(),
        node_id: node.to_string(),
        peer: m.peer.clone(),
        handle: m.handle.clone(),
        location: Default::default(),
        free: Default::default(),
        executors: Vec::new(),
        used_subnets: Vec::new(),
        gpus: Vec::new(),
        signature: String::new(),
    }
}

/// The health check as the provider runs it: an http endpoint reduced to `:port/path` (the
/// provider does not know the allocation's `dns_name`; the ensemble's checks accepted it).
fn provider_healthcheck(
    h: &nunet_ensemble::spec::Healthcheck,
    a: &nunet_ensemble::spec::Allocation,
) -> nunet_ensemble::spec::Healthcheck {
    let mut h = h.clone();
    if let nunet_ensemble::spec::HealthcheckKind::Http { endpoint, .. } = &mut h.check
        && let Ok(t) = nunet_ensemble::spec::http_target(endpoint, &a.dns_name)
    {
        *endpoint = format!(":{}{}", t.port, t.path);
    }
    h
}

fn executors_of(e: &nunet_ensemble::Ensemble, node: &nunet_ensemble::NodeConfig) -> Vec<String> {
    executors_where(e, node, |_| true)
}

/// The executors of `node`'s allocations that pass `keep`, sorted, once each.
fn executors_where(
    e: &nunet_ensemble::Ensemble,
    node: &nunet_ensemble::NodeConfig,
    keep: impl Fn(&nunet_ensemble::spec::Allocation) -> bool,
) -> Vec<String> {
    let mut v: Vec<String> = node
        .allocations
        .iter()
        .filter_map(|a| e.allocation(a))
        .filter(|a| keep(a))
        .map(|a| a.execution.executor().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

impl Engine {
    /// An engine for `rec`, whose orchestrator actor lives at `inbox` in `system`.
    /// Registers the orchestrator's `/dms/ensemble/<id>/allocation/exited` behavior there.
    pub fn new(
        system: ActorSystem,
        inbox: String,
        rec: Deployment,
        persist: PersistFn,
        local_subnet: Option<Arc<dyn crate::subnet::LocalSubnet>>,
    ) -> Self {
        let exits = Arc::new(crate::exits::ExitInbox::default());
        if let Err(e) = exits.register(&system, &inbox, &rec.id) {
            tracing::warn!(target: "orchestrator", id = %rec.id, error = %e.message,
                "no exit-report behavior; relying on status polls");
        }
        Self {
            system,
            inbox,
            rec: Mutex::new(rec),
            persist,
            exits,
            edges: Mutex::default(),
            local_subnet,
            standby_wake: tokio::sync::Notify::new(),
            changing: tokio::sync::Mutex::new(()),
            heartbeats: Default::default(),
            paths: Default::default(),
            fencing: Mutex::default(),
            calls: Mutex::new(0),
            declines: Mutex::new(std::collections::HashMap::new()),
            secrets: Default::default(),
        }
    }

    /// Sizes its calls' timeouts to `paths`.
    pub fn with_paths(mut self, paths: crate::paths::Paths) -> Self {
        self.paths = paths;
        self
    }

    /// The deployment's secrets (empty after a restart).
    pub(crate) fn secrets(&self) -> &crate::secrets::Secrets {
        &self.secrets
    }

    /// The engine holding the deployment's secrets.
    pub fn with_secrets(mut self, secrets: crate::secrets::Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// A copy of the record.
    pub fn record(&self) -> Option<Deployment> {
        self.rec.lock().ok().map(|r| r.clone())
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Deployment)) {
        let (snapshot, ended) = match self.rec.lock() {
            Ok(mut r) => {
                let was = r.status.is_terminal();
                f(&mut r);
                (r.clone(), !was && r.status.is_terminal())
            }
            Err(_) => return,
        };
        (self.persist)(&snapshot);
        // A deployment that ends takes this node off its subnet (`subnet.join`).
        if ended
            && snapshot.ensemble.subnet_join
            && let (Some(local), Ok(rt)) =
                (&self.local_subnet, tokio::runtime::Handle::try_current())
        {
            rt.spawn(local.leave(snapshot.id.clone()));
        }
    }

    pub(crate) fn status(&self) -> DeploymentStatus {
        self.rec
            .lock()
            .map(|r| r.status)
            .unwrap_or(DeploymentStatus::Failed)
    }

    pub(crate) fn event(&self, msg: impl Into<String>) {
        let msg = msg.into();
        tracing::info!(target: "orchestrator", "{msg}");
        self.update(|r| r.event(now_ms(), msg));
    }

    pub(crate) fn set_status(&self, s: DeploymentStatus, msg: impl Into<String>) {
        let msg = msg.into();
        self.update(|r| {
            r.status = s;
            r.event(now_ms(), msg);
        });
    }

    /// Records bids refused by the authorization check: counted per sender, and an event
    /// for each (the sender's DID and the rule that refused it).
    pub(crate) fn refused_bids(&self, denied: &[(Handle, ActorError)]) {
        for (from, e) in denied {
            self.update(|r| {
                *r.refused_bids.entry(from.did.clone()).or_default() += 1;
                r.event(
                    now_ms(),
                    format!(
                        "refused a bid from {}: not authorized for {BID} ({})",
                        from.did,
                        e.rule.as_deref().unwrap_or(e.message.as_str())
                    ),
                );
            });
        }
    }

    pub(crate) fn fail(&self, reason: String) {
        self.update(|r| {
            if !r.status.is_terminal() {
                r.status = DeploymentStatus::Failed;
                r.reason = Some(reason.clone());
                r.event(now_ms(), format!("failed: {reason}"));
            }
        });
    }

    /// Invokes `C` on `to` as the orchestrator actor.
    pub(crate) async fn call<C: Call>(
        &self,
        to: &Handle,
        req: &C::Request,
        t: Duration,
    ) -> Result<C::Reply, ActorError> {
        let _in_use = self.actor_in_use();
        call::invoke::<C>(&self.system, &self.inbox, to.clone(), req, t).await
    }

    /// Invokes the per-ensemble call `C` of this deployment on `to`.
    pub(crate) async fn call_in<C: Call>(
        &self,
        to: &Handle,
        req: &C::Request,
        t: Duration,
    ) -> Result<C::Reply, ActorError> {
        let _in_use = self.actor_in_use();
        call::invoke_in::<C>(&self.system, &self.inbox, to.clone(), &self.inbox, req, t).await
    }

    /// Counts a call in flight, bringing the orchestrator actor back first when the
    /// deployment had ended and it was removed (e.g. a shutdown of a Completed deployment).
    fn actor_in_use(&self) -> ActorInUse<'_> {
        if let Ok(mut n) = self.calls.lock() {
            *n += 1;
            if !self.system.has_key(&self.inbox) {
                crate::control::spawn_orchestrator(&self.system, &self.inbox);
            }
        }
        ActorInUse(self)
    }

    /// Retires the orchestrator actor once the deployment has ended and no call of it is in
    /// flight: its key leaves memory and it can send nothing; it only still answers
    /// providers asking whether an allocation is wanted (no). Its record stays.
    pub(crate) fn retire_if_done(&self) {
        if let Ok(n) = self.calls.lock()
            && *n == 0
            && self.status().is_terminal()
        {
            self.system.retire_child(&self.inbox);
        }
    }

    /// Deploys until Running (or the deadline), then supervises until the end.
    pub async fn run(self: Arc<Self>) {
        let Some(rec) = self.record() else { return };
        // Peers that failed a round sit out the next ones for a while, not for good: one
        // transient failure must not rule out the only provider that fits.
        let mut failed: std::collections::BTreeMap<String, std::time::Instant> = Default::default();
        let mut last = String::from("no round finished");
        loop {
            let now = std::time::Instant::now();
            failed.retain(|_, until| *until > now);
            let mut excluded: Vec<String> = rec.ensemble.exclude_peers.clone();
            excluded.extend(failed.keys().cloned());
            if self.status().is_terminal() {
                return;
            }
            let left = rec.deadline_ms - now_ms();
            if left <= 0 {
                self.fail(format!(
                    "deadline passed before the deployment was running; last error: {last}"
                ));
                return;
            }
            let round = self.record().map_or(1, |r| r.rounds + 1);
            self.update(|r| {
                r.rounds = round;
                r.status = DeploymentStatus::Preparing;
                r.manifest = Default::default();
                r.event(
                    now_ms(),
                    format!(
                        "round {round}: requesting bids (excluded peers: {})",
                        excluded.len()
                    ),
                );
            });
            let collect = BID_COLLECT.min(Duration::from_millis(left.max(1) as u64));
            let started = now_ms();
            match self.round(round, &excluded, collect).await {
                Ok(()) => break,
                Err(RoundError::Fatal(e)) => {
                    self.fail(e);
                    return;
                }
                Err(RoundError::Retry(e, peers)) => {
                    self.event(format!("round {round} failed: {e}"));
                    for p in peers {
                        failed.insert(p, std::time::Instant::now() + FAILED_PEER_PAUSE);
                    }
                    // A round cut short by the deadline says less than a full one before it.
                    if last == "no round finished" || now_ms() < rec.deadline_ms {
                        last = e;
                    }
                    // Rounds that fail at once (e.g. on cached edge measurements) do not spin.
                    let wait = (started + RETRY_PACE_MS - now_ms()).min(rec.deadline_ms - now_ms());
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    }
                }
            }
        }
        if self.status() == DeploymentStatus::Running {
            self.monitor().await;
        }
    }

    async fn round(
        &self,
        round: u32,
        excluded: &[String],
        collect: Duration,
    ) -> Result<(), RoundError> {
        let bids = self
            .collect_bids(round, excluded, collect, None)
            .instrument(tracing::info_span!("bid_round", round))
            .await;
        let assign = self
            .place(&bids, excluded, None)
            .instrument(tracing::info_span!("placement", round, bids = bids.len()))
            .await?;
        self.record_placement(&assign);
        if self.status().is_terminal() {
            return Ok(());
        }
        self.set_status(
            DeploymentStatus::Committing,
            "committing resources on the chosen providers",
        );
        let committed = self
            .commit(&assign)
            .instrument(tracing::info_span!("commit", round))
            .await;
        if let Err(e) = committed {
            self.revert(&assign).await;
            return Err(e);
        }
        self.set_status(DeploymentStatus::Provisioning, "allocating");
        let started = async {
            self.allocate(&assign)
                .instrument(tracing::info_span!("allocate", round))
                .await?;
            self.provision_subnet(&assign)
                .instrument(tracing::info_span!("subnet", round))
                .await?;
            self.start_all()
                .instrument(tracing::info_span!("start", round))
                .await
        };
        if let Err(e) = started.await {
            self.revert(&assign).await;
            return Err(e);
        }
        if self.status().is_terminal() {
            self.revert(&assign).await;
            return Ok(());
        }
        let waiting = self.record().map_or(0, |r| {
            r.manifest
                .allocations
                .values()
                .filter(|a| a.status == AllocationStatus::Pending)
                .count()
        });
        if waiting == 0 {
            self.set_status(DeploymentStatus::Running, "every allocation started");
        } else {
            self.set_status(
                DeploymentStatus::Running,
                format!(
                    "every allocation started but {waiting}, which wait for other allocations' outputs"
                ),
            );
        }
        Ok(())
    }

    /// Bids for every node of the ensemble, or for node `only`.
    pub(crate) async fn collect_bids(
        &self,
        round: u32,
        excluded: &[String],
        collect: Duration,
        only: Option<&str>,
    ) -> Vec<Bid> {
        let Some(rec) = self.record() else {
            return Vec::new();
        };
        let started = std::time::Instant::now();
        let e = &rec.ensemble;
        let req = BidRequest {
            ensemble_id: rec.id.clone(),
            nonce: u64::from(round),
            nodes: e
                .nodes
                .iter()
                .filter(|n| only.is_none_or(|o| o == n.name))
                .map(|n| NodeBidRequest {
                    node_id: n.name.clone(),
                    executors: executors_of(e, n),
                    resources: e.node_resources(n),
                    location: n.location.clone(),
                    peer: n.peer.clone(),
                    ports: n.ports.iter().map(|p| p.public).collect(),
                    gpu_executors: executors_where(e, n, |a| !a.resources.gpus.is_empty()),
                })
                .collect(),
            exclude: excluded.to_vec(),
        };
        // Pinned nodes are asked directly; only the others go out on gossip.
        let (req, pinned) = crate::bids::split_pinned(&req);
        let payload = match call::encode(BID_REQUEST, &req) {
            Ok(p) => p,
            Err(e) => {
                self.event(e.message);
                return Vec::new();
            }
        };
        // Close the round once every node has a bid and every subscribed peer has answered
        // (bid or decline), else a short grace after the last node got its first bid;
        // `collect` stays the upper bound (see `bids::round_closer`).
        let wanted = req.nodes.iter().map(|n| n.node_id.clone()).collect();
        let subscribers: Option<std::collections::HashSet<String>> = self
            .system
            .topic_peers(DEPLOYMENT_TOPIC)
            .await
            .map(|p| p.into_iter().collect());
        let broadcast = async {
            if req.nodes.is_empty() {
                return (Vec::new(), 0, crate::bids::ReplyTiming::default());
            }
            // The grace covers the farthest subscriber's path: a bid from 150 ms away is not
            // a silent peer.
            let grace = self.paths.slowest(
                BID_GRACE,
                subscribers.iter().flatten().map(String::as_str),
                2,
            );
            let close = crate::bids::round_closer(wanted, subscribers.clone(), grace);
            let bid_cap = match BID.parse() {
                Ok(c) => c,
                Err(e) => {
                    self.event(format!("bid capability {BID}: {e}"));
                    return (Vec::new(), 0, crate::bids::ReplyTiming::default());
                }
            };
            match self
                .system
                .broadcast_authorized(
                    &self.inbox,
                    DEPLOYMENT_TOPIC,
                    BID_REQUEST,
                    payload,
                    collect,
                    bid_cap,
                    close,
                )
                .await
            {
                Ok(r) => {
                    self.refused_bids(&r.denied);
                    let timing = crate::bids::ReplyTiming {
                        first: r.first_reply,
                        last: r.last_reply,
                    };
                    (r.replies, r.denied.len(), timing)
                }
                Err(e) => {
                    self.event(format!("bid request not published: {}", e.message));
                    (Vec::new(), 0, crate::bids::ReplyTiming::default())
                }
            }
        };
        let ((mut replies, mut refused, timing), direct) =
            futures::join!(broadcast, self.pinned_bids(pinned, collect));
        // Only pinned nodes: nothing went out on gossip, so nobody was silent.
        if !req.nodes.is_empty() {
            self.event(crate::bids::round_summary(
                &replies,
                subscribers.as_ref(),
                timing,
            ));
            let silent = crate::bids::silent_peers(&replies, subscribers.as_ref());
            if !silent.is_empty() {
                self.system.quiet_topic_peers(silent).await;
            }
        }
        replies.extend(direct);
        let received = replies.len();
        let replies = self.take_declines(&rec.id, replies, only);
        let declined = received - replies.len();
        let replies = crate::bids::cap_per_node(replies);
        let mut bids = Vec::new();
        for (from, v) in replies {
            let Ok(bid) = serde_json::from_value::<Bid>(v) else {
                refused += 1;
                self.event(format!("malformed bid from {}", from.did));
                continue;
            };
            let free = bid.free.check_amount("free");
            if let Some(p) = free.first() {
                refused += 1;
                self.event(format!("refused bid from {}: {p}", from.did));
                continue;
            }
            // One offered GPU per GPU the node asks for, no more (they are shown in events).
            let asked = e
                .nodes
                .iter()
                .find(|n| n.name == bid.node_id)
                .map_or(0, |n| e.node_resources(n).gpus.len());
            if bid.gpus.len() != asked {
                refused += 1;
                self.event(format!(
                    "refused bid from {}: it offers {} GPU(s) for node {}, which asks for {asked}",
                    from.did,
                    bid.gpus.len(),
                    bid.node_id
                ));
                continue;
            }
            match bid.verify() {
                Ok(_) if bid.ensemble_id == rec.id && bid.handle.did == from.did => {
                    let gpus = if bid.gpus.is_empty() {
                        String::new()
                    } else {
                        let g: Vec<&str> = bid.gpus.iter().map(|g| g.device.as_str()).collect();
                        format!(", offering GPU {}", g.join(", "))
                    };
                    self.event(format!(
                        "bid from {} for node {}{gpus}",
                        bid.peer, bid.node_id
                    ));
                    bids.push(bid);
                }
                Ok(_) => {
                    refused += 1;
                    self.event(format!(
                        "bid from {} is for another ensemble or signer",
                        from.did
                    ));
                }
                Err(e) => {
                    refused += 1;
                    self.event(format!("refused bid: {e}"));
                }
            }
        }
        crate::metrics::round(started.elapsed(), bids.len(), declined, refused);
        // [deploy-control] per-node bid counts, shown live by `nunet deploy` (status `bids`).
        self.update(|r| r.set_bids(bids.iter().map(|b| b.node_id.as_str())));
        bids
    }

    /// Places every node of the ensemble, or node `only` (its edge constraints to nodes
    /// already placed are not re-checked).
    pub(crate) async fn place(
        &self,
        bids: &[Bid],
        excluded: &[String],
        only: Option<&str>,
    ) -> Result<Assignment, RoundError> {
        let rec = self
            .record()
            .ok_or_else(|| RoundError::Fatal("record lost".into()))?;
        let mut scope = rec.ensemble.clone();
        if let Some(o) = only {
            scope.nodes.retain(|n| n.name == o);
            scope.edges.retain(|c| c.source == o && c.target == o);
        }
        let mut problem = Problem::from_ensemble(&scope);
        problem.exclude_peers = excluded.to_vec();
        let mut seen = std::collections::HashSet::new();
        let usable: Vec<&Bid> = bids
            .iter()
            .filter(|b| problem.node_index(&b.node_id).is_some())
            .filter(|b| seen.insert((b.node_id.clone(), b.peer.clone())))
            .collect();
        if usable.is_empty() {
            let key = only.map(str::to_string);
            let declines = self
                .declines
                .lock()
                .ok()
                .and_then(|d| d.get(&key).cloned())
                .unwrap_or_default();
            let mut why = if declines.is_empty() {
                "no bids".to_string()
            } else {
                format!("no bids; declined: {}", declines.join("; "))
            };
            // A GPU decline carries no detail: say what the nodes asked for.
            if declines.iter().any(|d| d.contains("GPU")) {
                for n in problem
                    .nodes
                    .iter()
                    .filter(|n| !n.resources.gpus.is_empty())
                {
                    let asked: Vec<String> =
                        n.resources.gpus.iter().map(|g| g.requirement()).collect();
                    why.push_str(&format!(
                        " (node {} asks for GPUs: {})",
                        n.name,
                        asked.join("; ")
                    ));
                }
            }
            return Err(RoundError::Retry(why, Vec::new()));
        }
        let pbids: Vec<nunet_placement::Bid> = usable
            .iter()
            .map(|b| {
                nunet_placement::Bid::new(&b.node_id, &b.peer, b.location.clone(), b.free.clone())
            })
            .collect();
        // Edge constraints: measured links, cached for the deployment (`edges.rs`).
        let placement = self.solve_with_edges(&problem, &pbids, &usable).await?;
        let assign: Assignment = placement
            .assignment
            .iter()
            .map(|a| (a.node.clone(), usable[a.bid].clone()))
            .collect();
        Ok(assign)
    }

    /// Records `assign` as where its nodes run.
    pub(crate) fn record_placement(&self, assign: &Assignment) {
        self.update(|r| {
            for (node, bid) in assign {
                r.manifest.nodes.insert(node.clone(), manifest_node(bid));
                r.event(now_ms(), format!("placed node {node} on {}", bid.peer));
            }
        });
    }

    pub(crate) async fn commit(&self, assign: &Assignment) -> Result<(), RoundError> {
        self.commit_some(assign, None).await
    }

    /// Commits the allocations of `assign`'s nodes, or only those named in `only`.
    pub(crate) async fn commit_some(
        &self,
        assign: &Assignment,
        only: Option<&[String]>,
    ) -> Result<(), RoundError> {
        let rec = self
            .record()
            .ok_or_else(|| RoundError::Fatal("record lost".into()))?;
        let calls = assign.iter().map(|(node, bid)| {
            let allocs: Vec<CommitAllocation> = rec
                .ensemble
                .allocations_of(node)
                .into_iter()
                .filter(|a| only.is_none_or(|o| o.contains(&a.name)))
                .map(|a| CommitAllocation {
                    name: a.name.clone(),
                    id: allocation_id(&rec.id, node, &a.name),
                    resources: a.resources.clone(),
                    ports: crate::provision::ports_of(&rec.ensemble, node, &a.name),
                })
                .collect();
            // The provider's work per allocation, plus two round trips of the path to it.
            let t = self.paths.timeout(
                COMMIT_TIMEOUT * (allocs.len().max(1) as u32),
                &bid.handle.addr.host,
                2,
            );
            let req = CommitRequest {
                ensemble_id: rec.id.clone(),
                node_id: node.clone(),
                allocations: allocs,
                expires_at_ms: now_ms() + COMMIT_TTL_MS,
            };
            async move { (node, bid, self.call::<Commit>(&bid.handle, &req, t).await) }
        });
        let mut failed = Vec::new();
        let mut why = Vec::new();
        for (node, bid, r) in join_all(calls).await {
            match r {
                Ok(_) => self.event(format!("committed node {node} on {}", bid.peer)),
                Err(e) => {
                    why.push(format!(
                        "commit of node {node} on {}: {}",
                        bid.peer, e.message
                    ));
                    failed.push(bid.peer.clone());
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(RoundError::Retry(why.join("; "), failed))
        }
    }

    /// Allocates `assign` and records the allocations in the manifest.
    pub(crate) async fn allocate(&self, assign: &Assignment) -> Result<(), RoundError> {
        self.allocate_some(assign, None).await
    }

    /// [`Engine::allocate`] of the allocations named in `only`, or all.
    pub(crate) async fn allocate_some(
        &self,
        assign: &Assignment,
        only: Option<&[String]>,
    ) -> Result<(), RoundError> {
        let (done, failed) = self.allocate_each(assign, only).await?;
        for (node, bid, mut h) in done {
            self.update(|r| {
                for (name, handle) in h.allocations {
                    r.manifest.allocations.insert(
                        format!("{node}.{name}"),
                        ManifestAllocation {
                            id: allocation_id(&r.id, &node, &name),
                            node_id: node.clone(),
                            handle: Some(handle),
                            status: AllocationStatus::Pending,
                            exit_code: None,
                            ports: crate::provision::port_map(&crate::provision::ports_of(
                                &r.ensemble,
                                &node,
                                &name,
                            )),
                            ip: None,
                            dns: None,
                            health: None,
                            restarts: 0,
                            gpus: h.gpus.remove(&name).unwrap_or_default(),
                        },
                    );
                }
                r.event(now_ms(), format!("allocated node {node} on {}", bid.peer));
            });
        }
        failed.map_or(Ok(()), Err)
    }

    /// Sends the allocate requests of `assign`: the nodes allocated (with their allocation
    /// actors by name) and, when some failed, why (with those peers to exclude).
    #[allow(clippy::type_complexity)]
    pub(crate) async fn allocate_each(
        &self,
        assign: &Assignment,
        only: Option<&[String]>,
    ) -> Result<
        (
            Vec<(String, Bid, nunet_protocol::Allocated)>,
            Option<RoundError>,
        ),
        RoundError,
    > {
        let rec = self
            .record()
            .ok_or_else(|| RoundError::Fatal("record lost".into()))?;
        let me = self.system.root();
        let orchestrator = Handle {
            addr: nunet_actor::envelope::Address {
                host: me.addr.host.clone(),
                inbox: self.inbox.clone(),
            },
            ..rec.orchestrator.clone()
        };
        let calls = assign.iter().map(|(node, bid)| {
            let allocs: Vec<AllocationRequest> = rec
                .ensemble
                .allocations_of(node)
                .into_iter()
                .filter(|a| only.is_none_or(|o| o.contains(&a.name)))
                .map(|a| {
                    let mut r = allocation_request(&rec.id, &rec.ensemble, node, a);
                    r.credentials = crate::secrets::for_allocation(&r, &self.secrets);
                    r
                })
                .collect();
            let t = self.paths.timeout(
                ALLOCATE_TIMEOUT * (allocs.len().max(1) as u32),
                &bid.handle.addr.host,
                2,
            );
            let req = AllocateRequest {
                ensemble_id: rec.id.clone(),
                node_id: node.clone(),
                orchestrator: orchestrator.clone(),
                allocations: allocs,
            };
            async move { (node, bid, self.call::<Allocate>(&bid.handle, &req, t).await) }
        });
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut why = Vec::new();
        for (node, bid, r) in join_all(calls).await {
            match r {
                Ok(a) => done.push((node.clone(), bid.clone(), a)),
                Err(e) => {
                    why.push(format!(
                        "allocate of node {node} on {}: {}",
                        bid.peer, e.message
                    ));
                    failed.push(bid.peer.clone());
                }
            }
        }
        let failed = (!failed.is_empty()).then(|| RoundError::Retry(why.join("; "), failed));
        Ok((done, failed))
    }

    /// Starts allocations in `depends_on` order (dependencies first).
    pub(crate) async fn start_all(&self) -> Result<(), RoundError> {
        self.start_in_order(None).await
    }

    /// Starts the allocations of every node, or of node `only`, in `depends_on` order.
    pub(crate) async fn start_in_order(&self, only: Option<&str>) -> Result<(), RoundError> {
        let rec = self
            .record()
            .ok_or_else(|| RoundError::Fatal("record lost".into()))?;
        let order = crate::order::start_order(&rec.ensemble).map_err(RoundError::Fatal)?;
        let left = Duration::from_millis((rec.deadline_ms - now_ms()).max(10_000) as u64);
        let mut held: Vec<String> = Vec::new();
        // A running deployment's round deadline has passed: what starts now (an allocation
        // that waited for others' outputs, a moved node) gets the whole start timeout.
        let start_timeout = if rec.status == DeploymentStatus::Running {
            START_TIMEOUT
        } else {
            START_TIMEOUT.min(left)
        };
        for name in order {
            let Some((key, alloc)) = rec
                .manifest
                .allocations
                .iter()
                .find(|(k, _)| k.ends_with(&format!(".{name}")))
                .map(|(k, a)| (k.clone(), a.clone()))
            else {
                continue;
            };
            // Only what waits to start (a live update or a moved node leaves the rest alone).
            if only.is_some_and(|n| n != alloc.node_id) || alloc.status != AllocationStatus::Pending
            {
                continue;
            }
            let Some(handle) = alloc.handle.clone() else {
                continue;
            };
            let peer = rec
                .manifest
                .nodes
                .get(&alloc.node_id)
                .map(|n| n.peer.clone())
                .unwrap_or_default();
            // Inputs from other allocations' outputs: it starts once they completed (and
            // what depends on it waits with it).
            let mut waiting = crate::handoff::waiting_on(&rec, &name);
            if let Some(a) = rec.ensemble.allocation(&name) {
                waiting.extend(a.depends_on.iter().filter(|d| held.contains(*d)).cloned());
            }
            if !waiting.is_empty() {
                held.push(name.clone());
                let msg = format!(
                    "{key} waits for {} to complete (it takes their outputs)",
                    waiting.join(", ")
                );
                if !rec.events.iter().any(|e| e.message == msg) {
                    self.event(msg);
                }
                continue;
            }
            let req = self
                .start_request(&rec, &name, &peer)
                .await
                // A failed share is the producer's provider's doing: no candidate is excluded.
                .map_err(|e| RoundError::Retry(e, Vec::new()))?;
            if !req.inputs.is_empty() {
                self.event(format!(
                    "{key} takes {} output(s) straight from their providers",
                    req.inputs.len()
                ));
            }
            match self
                .call::<AllocationStart>(&handle, &req, start_timeout)
                .await
            {
                Ok(_) => self.update(|r| {
                    if let Some(a) = r.manifest.allocations.get_mut(&key) {
                        a.status = AllocationStatus::Running;
                    }
                    r.event(now_ms(), format!("started {key} on {peer}"));
                }),
                Err(e) => {
                    return Err(RoundError::Retry(
                        format!("start of {key} on {peer}: {}", e.message),
                        vec![peer],
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn revert(&self, assign: &Assignment) {
        let Some(rec) = self.record() else { return };
        let calls = assign.iter().map(|(node, bid)| {
            let req = RevertRequest::all(&rec.id);
            async move {
                let t = self.paths.timeout(REVERT_TIMEOUT, &bid.handle.addr.host, 2);
                let r = self.call::<Revert>(&bid.handle, &req, t).await;
                (node, bid, r)
            }
        });
        for (node, bid, r) in join_all(calls).await {
            match r {
                Ok(_) => self.event(format!("reverted node {node} on {}", bid.peer)),
                Err(e) => self.event(format!(
                    "revert of node {node} on {} failed: {} (its commitments lapse by themselves)",
                    bid.peer, e.message
                )),
            }
        }
    }
}
