//! The subnet service the node integrates: joins and leaves ensembles, keeps their route
//! tables, runs one outbound router thread per ensemble, one writer per remote member, and
//! accepts inbound streams after checking that the authenticated remote peer is a member.
//! With the datagram path on, it owns the node's UDP socket ([`crate::datagram`]).
//!
//! Every task and thread it starts belongs to one ensemble and is stopped and awaited on
//! `leave`, so nothing outlives the TUN device. It must not decide membership itself: the route table
//! (and so the member set) comes from the node, which got it in a capability-checked message.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::{AsyncWriteExt, StreamExt};
use ipnet::Ipv4Net;
use libp2p::{PeerId, Stream};
use tokio::{sync::Semaphore, task::JoinHandle};

use crate::{
    SubnetError,
    carrier::{self, HANDSHAKE_TIMEOUT, Inbound, Links, PeerQueue, QUEUE_LIMIT},
    datagram::{DatagramConfig, Hub},
    router::{Outbound, SharedTable, Table, TunReader},
    stats::{Counters, SubnetStats},
    tun::{self, Tun},
    wire::PROTOCOL,
};

/// Inbound streams that may be in their handshake at once; more are refused at once.
const MAX_PENDING_HANDSHAKES: usize = 64;

/// What a node needs to carry one ensemble's subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetSpec {
    /// The ensemble id (1..=255 bytes); names the subnet on the wire.
    pub ensemble: String,
    /// Name of the TUN device to create (at most 15 bytes).
    pub tun_name: String,
    /// The ensemble's network (a /24 inside 10/8).
    pub network: Ipv4Net,
    /// MTU of the TUN device (1420 in NuNet).
    pub mtu: u16,
    /// Every allocation address of the ensemble → the peer hosting it (local ones included:
    /// they are never sent). The peers in it are the ensemble's members.
    pub routes: BTreeMap<Ipv4Addr, PeerId>,
}

/// The subnet data path of one node. Cheap to clone; all clones share the same state.
#[derive(Clone)]
pub struct SubnetService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SubnetService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubnetService")
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

struct Inner {
    local: PeerId,
    links: Links,
    ensembles: Mutex<HashMap<String, Arc<Ensemble>>>,
    rejected: AtomicU64,
    /// Counters of ensembles already left, and of those being left, so that totals never go
    /// down. Locked after `ensembles` when both are held.
    left: Mutex<Left>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self.accept_task.get_mut().ok().and_then(Option::take) {
            t.abort();
        }
        if let Some(hub) = &self.links.hub {
            hub.stop();
        }
    }
}

/// What [`SubnetService::totals`] keeps of ensembles no longer joined.
#[derive(Default)]
struct Left {
    /// Final counts of ensembles left.
    sum: SubnetStats,
    /// Counters of ensembles being left (their tasks may still count a last packet).
    leaving: Vec<Arc<Counters>>,
}

/// One joined ensemble.
struct Ensemble {
    spec_tun: String,
    network: Ipv4Net,
    table: Arc<SharedTable>,
    counters: Arc<Counters>,
    reader: Arc<TunReader>,
    tasks: Mutex<Tasks>,
}

/// Everything an ensemble owns that must go on leave; `dev` is `None` once left.
#[derive(Default)]
struct Tasks {
    dev: Option<Tun>,
    router: Option<Outbound>,
    writers: HashMap<PeerId, (Arc<PeerQueue>, JoinHandle<()>)>,
    readers: HashMap<PeerId, JoinHandle<()>>,
    /// Aborted readers (they may still hold the device until they are polled once more).
    retired: Vec<JoinHandle<()>>,
}

impl Tasks {
    fn retire(&mut self, h: JoinHandle<()>) {
        h.abort();
        self.retired.retain(|h| !h.is_finished());
        self.retired.push(h);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SubnetService {
    /// [`start_with`](Self::start_with) the default datagram settings (on, any free port).
    pub fn start(net: &nunet_network::Network) -> Result<Self, SubnetError> {
        Self::start_with(net, DatagramConfig::default())
    }

    /// Registers the inbound protocol on this node's libp2p host, starts the accept loop
    /// and, when `datagrams.enabled`, binds the UDP socket of the datagram path. Must be
    /// called inside a tokio runtime; fails when the protocol is already registered or the
    /// UDP port cannot be bound.
    pub fn start_with(
        net: &nunet_network::Network,
        datagrams: DatagramConfig,
    ) -> Result<Self, SubnetError> {
        let mut control = net.streams();
        let hub = if datagrams.enabled {
            Some(
                Hub::start(&datagrams).map_err(|source| SubnetError::Datagram {
                    port: datagrams.port,
                    source,
                })?,
            )
        } else {
            None
        };
        let incoming = match control.accept(PROTOCOL) {
            Ok(i) => i,
            Err(e) => {
                if let Some(h) = &hub {
                    h.stop();
                }
                return Err(SubnetError::Register(e.to_string()));
            }
        };
        let inner = Arc::new(Inner {
            local: net.local_peer_id(),
            links: Links {
                control,
                net: net.clone(),
                hub,
            },
            ensembles: Mutex::new(HashMap::new()),
            rejected: AtomicU64::new(0),
            left: Mutex::new(Left::default()),
            accept_task: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(Arc::downgrade(&inner), incoming));
        *lock(&inner.accept_task) = Some(task);
        Ok(Self { inner })
    }

    /// Creates (or re-uses, idempotent per ensemble) the TUN device `spec.tun_name` (MTU,
    /// link up, no address: the host module adds addresses/routes) and starts its router.
    /// Joining an already joined ensemble with the same device and network replaces its
    /// routes; with a different one it fails with [`SubnetError::Conflict`].
    pub async fn join(&self, spec: SubnetSpec) -> Result<(), SubnetError> {
        validate(&spec)?;
        let existing = lock(&self.inner.ensembles).get(&spec.ensemble).cloned();
        if let Some(ens) = existing {
            if ens.spec_tun != spec.tun_name || ens.network != spec.network {
                return Err(SubnetError::Conflict(spec.ensemble));
            }
            return self.update_routes(&spec.ensemble, spec.routes).await;
        }
        let dev = tun::open(&spec.tun_name, spec.mtu)?;
        let ens = Arc::new(Ensemble {
            spec_tun: spec.tun_name.clone(),
            network: spec.network,
            table: Arc::new(SharedTable::default()),
            counters: Arc::new(Counters::default()),
            reader: Arc::new(TunReader::new(self.inner.local)),
            tasks: Mutex::new(Tasks::default()),
        });
        {
            let mut map = lock(&self.inner.ensembles);
            if map.contains_key(&spec.ensemble) {
                return Err(SubnetError::Conflict(spec.ensemble)); // a concurrent join won
            }
            map.insert(spec.ensemble.clone(), ens.clone());
        }
        let outbound = Outbound::spawn(
            dev.clone(),
            ens.table.clone(),
            ens.counters.clone(),
            ens.reader.clone(),
        );
        let mut tasks = lock(&ens.tasks);
        let outbound = match outbound {
            Ok(o) => o,
            Err(source) => {
                drop(tasks);
                lock(&self.inner.ensembles).remove(&spec.ensemble);
                return Err(SubnetError::Tun {
                    name: spec.tun_name,
                    source,
                });
            }
        };
        self.apply_routes(&spec.ensemble, &ens, &mut tasks, &spec.routes);
        tasks.router = Some(outbound);
        tasks.dev = Some(dev);
        Ok(())
    }

    /// Replaces the route table (members = the set of peers in routes) of a joined
    /// ensemble: writers start for new remote members, writers and inbound streams of
    /// removed members stop.
    pub async fn update_routes(
        &self,
        ensemble: &str,
        routes: BTreeMap<Ipv4Addr, PeerId>,
    ) -> Result<(), SubnetError> {
        let ens = self.ensemble(ensemble)?;
        check_routes(&ens.network, &routes)?;
        let mut tasks = lock(&ens.tasks);
        if tasks.dev.is_none() {
            return Err(SubnetError::UnknownEnsemble(ensemble.to_string()));
        }
        self.apply_routes(ensemble, &ens, &mut tasks, &routes);
        Ok(())
    }

    /// Stops the router, closes the streams, deletes the TUN device. Idempotent.
    pub async fn leave(&self, ensemble: &str) -> Result<(), SubnetError> {
        let ens = {
            let mut joined = lock(&self.inner.ensembles);
            let Some(ens) = joined.remove(ensemble) else {
                return Ok(());
            };
            lock(&self.inner.left).leaving.push(ens.counters.clone());
            ens
        };
        let (dev, router, handles) = {
            let mut t = lock(&ens.tasks);
            let mut handles: Vec<JoinHandle<()>> = Vec::new();
            handles.extend(t.writers.drain().map(|(_, (_, h))| h));
            handles.extend(t.readers.drain().map(|(_, h)| h));
            handles.append(&mut t.retired);
            (t.dev.take(), t.router.take(), handles)
        };
        if let Some(r) = router {
            r.stop().await;
        }
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
        ens.table.store(Table::default());
        drop(dev); // the last handle: closing it deletes the interface
        let mut left = lock(&self.inner.left);
        left.leaving.retain(|c| !Arc::ptr_eq(c, &ens.counters));
        left.sum += ens.counters.snapshot();
        Ok(())
    }

    /// Counters summed over every ensemble this service has carried since it started,
    /// left ones included: each field only grows.
    pub fn totals(&self) -> SubnetStats {
        let joined = lock(&self.inner.ensembles);
        let left = lock(&self.inner.left);
        let mut t = left.sum;
        for c in joined
            .values()
            .map(|e| &e.counters)
            .chain(left.leaving.iter())
        {
            t += c.snapshot();
        }
        t
    }

    /// A snapshot of a joined ensemble's counters.
    pub fn stats(&self, ensemble: &str) -> Option<SubnetStats> {
        lock(&self.inner.ensembles)
            .get(ensemble)
            .map(|e| e.counters.snapshot())
    }

    /// The UDP port of the datagram path, when it is on.
    pub fn datagram_port(&self) -> Option<u16> {
        self.inner.links.hub.as_ref().map(|h| h.port())
    }

    /// Datagrams no session claimed (unknown session id, or too short): garbage or stale
    /// traffic on the datagram port.
    pub fn unclaimed_datagrams(&self) -> u64 {
        self.inner.links.hub.as_ref().map_or(0, |h| h.unclaimed())
    }

    /// Inbound streams refused: unknown ensemble, peer not a member, bad handshake, or too
    /// many handshakes at once.
    pub fn rejected_streams(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// The ensembles joined on this node.
    pub fn ensembles(&self) -> Vec<String> {
        lock(&self.inner.ensembles).keys().cloned().collect()
    }

    fn ensemble(&self, name: &str) -> Result<Arc<Ensemble>, SubnetError> {
        lock(&self.inner.ensembles)
            .get(name)
            .cloned()
            .ok_or_else(|| SubnetError::UnknownEnsemble(name.to_string()))
    }

    /// Installs `routes`: starts/stops writers, stops readers of removed members, swaps
    /// the table. Called with the ensemble's task lock held.
    fn apply_routes(
        &self,
        name: &str,
        ens: &Ensemble,
        tasks: &mut Tasks,
        routes: &BTreeMap<Ipv4Addr, PeerId>,
    ) {
        let local = self.inner.local;
        let table = Table::new(routes, HashMap::new());
        tasks.writers.retain(|peer, (_, h)| {
            let keep = table.members.contains(peer);
            if !keep {
                h.abort();
            }
            keep
        });
        let gone: Vec<PeerId> = tasks
            .readers
            .keys()
            .filter(|p| !table.members.contains(*p))
            .copied()
            .collect();
        for peer in gone {
            if let Some(h) = tasks.readers.remove(&peer) {
                tasks.retire(h);
            }
        }
        for peer in table.members.iter().filter(|p| **p != local) {
            tasks.writers.entry(*peer).or_insert_with(|| {
                let queue = Arc::new(PeerQueue::new(QUEUE_LIMIT));
                let task = tokio::spawn(carrier::run_writer(
                    self.inner.links.clone(),
                    *peer,
                    name.to_string(),
                    queue.clone(),
                    ens.counters.clone(),
                ));
                (queue, task)
            });
        }
        let queues = tasks
            .writers
            .iter()
            .map(|(p, (q, _))| (*p, q.clone()))
            .collect();
        ens.table.store(Table { queues, ..table });
    }
}

fn validate(spec: &SubnetSpec) -> Result<(), SubnetError> {
    if spec.ensemble.is_empty() || spec.ensemble.len() > 255 {
        return Err(SubnetError::InvalidSpec(
            "ensemble id must be 1..=255 bytes".into(),
        ));
    }
    if !(576..=65_535).contains(&spec.mtu) {
        return Err(SubnetError::InvalidSpec(format!(
            "MTU {} out of range",
            spec.mtu
        )));
    }
    check_routes(&spec.network, &spec.routes)
}

fn check_routes(net: &Ipv4Net, routes: &BTreeMap<Ipv4Addr, PeerId>) -> Result<(), SubnetError> {
    match routes.keys().find(|a| !net.contains(*a)) {
        Some(a) => Err(SubnetError::InvalidSpec(format!("{a} is outside {net}"))),
        None => Ok(()),
    }
}

/// Accepts inbound subnet streams while the service lives; each handshake runs in its own
/// task, at most [`MAX_PENDING_HANDSHAKES`] at once.
async fn accept_loop(inner: Weak<Inner>, mut incoming: libp2p_stream::IncomingStreams) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    while let Some((peer, stream)) = incoming.next().await {
        let Some(svc) = inner.upgrade() else { return };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            svc.rejected.fetch_add(1, Ordering::Relaxed);
            continue; // dropping the stream closes it
        };
        tokio::spawn(async move {
            let accepted = admit(&svc, peer, stream).await;
            drop(permit);
            if !accepted {
                svc.rejected.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Runs the handshake of one inbound stream and, when the peer is a member of the named
/// ensemble, hands the stream to a reader registered with that ensemble (replacing an
/// older stream of the same peer). Returns whether the stream was accepted.
async fn admit(svc: &Inner, peer: PeerId, mut stream: Stream) -> bool {
    let name =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, carrier::read_handshake(&mut stream)).await {
            Ok(Ok(name)) => name,
            _ => {
                tracing::debug!(%peer, "subnet stream: bad handshake");
                return false;
            }
        };
    let Some(ens) = lock(&svc.ensembles).get(&name).cloned() else {
        tracing::debug!(%peer, ensemble = %name, "subnet stream for an unknown ensemble");
        let _ = stream.close().await;
        return false;
    };
    if !ens.table.load().members.contains(&peer) || peer == svc.local {
        tracing::warn!(%peer, ensemble = %name, "subnet stream from a non-member refused");
        let _ = stream.close().await;
        return false;
    }
    let Some(dev) = lock(&ens.tasks).dev.clone() else {
        return false; // left meanwhile
    };
    let ctx = Inbound {
        dev,
        reader: ens.reader.clone(),
        table: ens.table.clone(),
        network: ens.network,
        counters: ens.counters.clone(),
    };
    let session = svc
        .links
        .hub
        .as_ref()
        .and_then(|h| {
            let s = h.register(peer, ctx.clone());
            if s.is_none() {
                tracing::warn!(%peer, "no datagram session (no randomness for a key); this peer stays on the stream");
            }
            s
        });
    let answer = carrier::encode_admission(session.as_ref().map(|s| s.offer()));
    if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() {
        return false;
    }
    let mut tasks = lock(&ens.tasks);
    if tasks.dev.is_none() {
        return false; // left meanwhile
    }
    let task = tokio::spawn(carrier::run_reader(stream, peer, ctx, session));
    if let Some(old) = tasks.readers.insert(peer, task) {
        tasks.retire(old);
    }
    true
}
