//! The provider's side of ensemble subnets: it turns the orchestrator's [`SubnetPlan`] into a
//! TUN device and data path ([`SubnetService`]), host routes and firewall rules
//! ([`EnsembleNet`]), a `.internal` DNS responder on the gateway, public port forwards, and,
//! per Docker allocation, a network sandbox container whose namespace gets the allocation's
//! address before the workload starts (a TAP for microVMs, `vm.rs`; a thread-held namespace
//! for WASM instances, `wasm.rs`). Plans are kept under `<data_dir>/subnet/` so that a
//! restarted daemon rebuilds the subnets of the allocations it still runs and removes the
//! rest (including anything a crashed daemon left behind).
//!
//! It must not decide who belongs to an ensemble: the plan comes from the orchestrator in a
//! capability-checked message, and the caller checks that the sender is the orchestrator
//! that allocated here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use nunet_executor::{DockerExecutor, ExecutionSpec, Mount};
use nunet_network::PeerId;
use nunet_protocol::{SubnetMember, SubnetPlan};
use nunet_subnet::{
    Attachment, DnsResponder, EnsembleNet, Host, NetnsHolder, PortMap, Proto, Records,
    SubnetService, SubnetSpec, plan,
};

mod join;
mod report;
mod vm;
mod wasm;

pub use report::register;

/// MTU of the ensemble network (NuNet's).
const MTU: u16 = 1420;
/// How long the host's own 10/8 ranges are reused between bids.
const HOST_RANGES_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// One ensemble's subnet on this node.
struct Ensemble {
    plan: SubnetPlan,
    net: EnsembleNet,
    dns: Option<DnsResponder>,
    records: Records,
    ports: PortMap,
    /// allocation id → (attachment, sandbox name; empty for a VM's TAP or a WASM namespace).
    attached: HashMap<String, (Attachment, String)>,
    /// allocation id → the namespace of a WASM allocation (dropping it ends the namespace).
    netns: HashMap<String, NetnsHolder>,
}

impl Ensemble {
    /// The plan's member `alloc`, once an attachment it still has (a start that is retried)
    /// is removed. `None` when the plan gives it no address.
    async fn fresh_member(&mut self, alloc: &str) -> Option<SubnetMember> {
        let member = self.plan.member(alloc).cloned()?;
        if let Some((att, _)) = self.attached.remove(alloc) {
            let n = self.net.clone();
            let _ = blocking(move || n.detach(&att).map_err(err)).await;
        }
        self.netns.remove(alloc);
        Some(member)
    }

    /// Adds the plan's public port forwards of allocation `alloc` to `ip`; on a failure the
    /// ones already added are removed again and the error names the port.
    fn forward_ports(&mut self, alloc: &str, ip: Ipv4Addr) -> Result<(), String> {
        let forwards: Vec<(u16, u16)> = self
            .plan
            .ports
            .iter()
            .filter(|f| f.allocation == alloc)
            .map(|f| (f.public, f.private))
            .collect();
        for (i, (public, private)) in forwards.iter().enumerate() {
            if let Err(x) = self.ports.add(*public, Proto::Tcp, ip, *private) {
                for (done, _) in &forwards[..i] {
                    let _ = self.ports.remove(*done, Proto::Tcp);
                }
                return Err(format!("forwarding port {public}: {x}"));
            }
        }
        Ok(())
    }
}

/// Every ensemble subnet on this node.
pub struct NodeSubnets {
    service: Option<SubnetService>,
    docker: Option<Arc<DockerExecutor>>,
    host: Host,
    dir: PathBuf,
    why_off: Option<String>,
    ensembles: tokio::sync::Mutex<HashMap<String, Ensemble>>,
    /// Networks in use here, for bids (kept outside the async lock).
    in_use: Mutex<HashMap<String, String>>,
    /// The host's own 10/8 ranges, read at most every [`HOST_RANGES_TTL`]: bids ask for them,
    /// and reading them runs two `ip` processes.
    host_ranges: Mutex<Option<(std::time::Instant, Vec<String>)>>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("subnet task failed: {e}"))?
}

impl NodeSubnets {
    /// The node's subnets. `enabled` is `subnet.enabled`, `datagrams` `subnet.datagrams` /
    /// `subnet.datagram_port`; `net` the libp2p host (the data path registers
    /// `/nunet/subnet/1.0.0` on it); `docker` attaches containers.
    pub fn new(
        enabled: bool,
        datagrams: nunet_subnet::DatagramConfig,
        net: &nunet_network::Network,
        docker: Option<Arc<DockerExecutor>>,
        data_dir: PathBuf,
    ) -> Arc<Self> {
        let (service, why_off) = if !enabled {
            (
                None,
                Some("subnet.enabled is false on this node".to_string()),
            )
        } else {
            match SubnetService::start_with(net, datagrams) {
                Ok(s) => (Some(s), None),
                Err(e) => (
                    None,
                    Some(format!("the subnet data path cannot start: {e}")),
                ),
            }
        };
        if let Some(why) = &why_off {
            tracing::warn!("ensemble subnets are off: {why}");
        }
        Arc::new(Self {
            service,
            docker,
            host: Host::local(),
            dir: data_dir.join("subnet"),
            why_off,
            ensembles: tokio::sync::Mutex::new(HashMap::new()),
            in_use: Mutex::new(HashMap::new()),
            host_ranges: Mutex::new(None),
        })
    }

    /// The data path's counters since the daemon started, over every ensemble it carried
    /// (`None` when subnets are off), and how many ensembles it carries now.
    pub fn traffic(&self) -> Option<(nunet_subnet::SubnetStats, usize)> {
        self.service
            .as_ref()
            .map(|s| (s.totals(), s.ensembles().len()))
    }

    /// Why subnets are off here, or `None` when they work.
    pub fn disabled_reason(&self) -> Option<&str> {
        self.why_off.as_deref()
    }

    /// 10/8 ranges this host already uses (its routes and addresses plus our subnets), for
    /// the orchestrator to avoid.
    pub fn used_ranges(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .in_use
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        if self.service.is_some() {
            out.extend(self.host_ranges());
        }
        out.sort();
        out.dedup();
        out
    }

    fn host_ranges(&self) -> Vec<String> {
        let Ok(mut cached) = self.host_ranges.lock() else {
            return Vec::new();
        };
        if let Some((at, r)) = cached.as_ref()
            && at.elapsed() < HOST_RANGES_TTL
        {
            return r.clone();
        }
        match nunet_subnet::host::used_ranges(&self.host) {
            Ok(r) => {
                let r: Vec<String> = r.iter().map(|n| n.to_string()).collect();
                *cached = Some((std::time::Instant::now(), r.clone()));
                r
            }
            Err(e) => {
                tracing::warn!("reading the host's 10/8 routes: {e}");
                Vec::new()
            }
        }
    }

    fn plan_file(&self, ensemble: &str) -> PathBuf {
        self.dir.join(format!("{ensemble}.json"))
    }

    /// Creates the ensemble's subnet here (idempotent): TUN + data path, host routes and
    /// rules, DNS responder. `local` is this node's peer id.
    pub async fn create(&self, p: SubnetPlan, local: PeerId) -> Result<(), String> {
        let Some(service) = &self.service else {
            return Err(format!(
                "no ensemble subnet on this node: {}",
                self.why_off.as_deref().unwrap_or("off")
            ));
        };
        let network: Ipv4Net = p
            .network
            .parse()
            .map_err(|e| format!("bad subnet network {:?}: {e}", p.network))?;
        if network.prefix_len() != 24 || !plan::ten_slash_eight().contains(&network) {
            return Err(format!("{network} is not a /24 inside 10.0.0.0/8"));
        }
        let mut routes = std::collections::BTreeMap::new();
        for m in &p.members {
            if !network.contains(&m.ip) || m.ip == plan::gateway(network) {
                return Err(format!("{} is not a host address of {network}", m.ip));
            }
            let peer: PeerId = m
                .peer
                .parse()
                .map_err(|e| format!("bad peer id {:?}: {e}", m.peer))?;
            routes.insert(m.ip, peer);
        }
        if !routes.values().any(|p| *p == local) {
            return Err("no allocation of this ensemble is on this node".into());
        }
        let mut ens = self.ensembles.lock().await;
        if let Some(e) = ens.get_mut(&p.ensemble_id) {
            if e.plan.network != p.network {
                return Err(format!(
                    "ensemble already has subnet {} here",
                    e.plan.network
                ));
            }
            service
                .update_routes(&p.ensemble_id, routes)
                .await
                .map_err(err)?;
            e.records.set(p.records());
            e.plan = p.clone();
            self.persist(&p)?;
            return Ok(());
        }
        let others: Vec<Ipv4Net> = ens
            .values()
            .filter_map(|e| e.plan.network.parse().ok())
            .collect();
        if others
            .iter()
            .any(|o| o.contains(&network.network()) || network.contains(&o.network()))
        {
            return Err(format!(
                "{network} is already used by another ensemble here"
            ));
        }
        let names = plan::names(&p.ensemble_id);
        service
            .join(SubnetSpec {
                ensemble: p.ensemble_id.clone(),
                tun_name: names.tun.clone(),
                network,
                mtu: MTU,
                routes,
            })
            .await
            .map_err(err)?;
        let host = self.host.clone();
        let (id, tun) = (p.ensemble_id.clone(), names.tun.clone());
        let net = match blocking(move || EnsembleNet::setup(&host, &id, network, &tun).map_err(err))
            .await
        {
            Ok(n) => n,
            Err(e) => {
                let _ = service.leave(&p.ensemble_id).await;
                return Err(e);
            }
        };
        let records = Records::new();
        records.set(p.records());
        let dns = match DnsResponder::start(
            SocketAddr::new(IpAddr::V4(net.gateway()), 53),
            records.clone(),
        )
        .await
        {
            Ok(d) => Some(d),
            Err(e) => {
                let _ = service.leave(&p.ensemble_id).await;
                let n2 = net.clone();
                let _ = blocking(move || n2.teardown().map_err(err)).await;
                return Err(format!("DNS responder on {}: {e}", net.gateway()));
            }
        };
        self.persist(&p)?;
        if let Ok(mut m) = self.in_use.lock() {
            m.insert(p.ensemble_id.clone(), p.network.clone());
        }
        let ports = PortMap::new(&net);
        ens.insert(
            p.ensemble_id.clone(),
            Ensemble {
                plan: p,
                net,
                dns,
                records,
                ports,
                attached: HashMap::new(),
                netns: HashMap::new(),
            },
        );
        Ok(())
    }

    fn persist(&self, p: &SubnetPlan) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self.dir.join(format!(".{}.tmp", p.ensemble_id));
        std::fs::write(&tmp, serde_json::to_vec(p).map_err(err)?).map_err(err)?;
        std::fs::rename(&tmp, self.plan_file(&p.ensemble_id)).map_err(err)
    }

    /// Whether allocation `alloc` of `ensemble` has an address here.
    pub async fn address_of(&self, ensemble: &str, alloc: &str) -> Option<Ipv4Addr> {
        let ens = self.ensembles.lock().await;
        ens.get(ensemble)
            .and_then(|e| e.plan.member(alloc))
            .map(|m| m.ip)
    }

    /// Puts a Docker allocation on its ensemble's subnet before it starts: a sandbox container
    /// gets the address, routes and DNS; `spec` is changed to join the sandbox's namespace
    /// and read the ensemble's resolv.conf; its public ports become forwards to its address.
    /// Returns `false` (spec untouched) when the ensemble has no subnet here.
    pub async fn attach(&self, ensemble: &str, spec: &mut ExecutionSpec) -> Result<bool, String> {
        let mut ens = self.ensembles.lock().await;
        let Some(e) = ens.get_mut(ensemble) else {
            return Ok(false);
        };
        let Some(member) = e.plan.member(&spec.id).cloned() else {
            return Ok(false);
        };
        let docker = self
            .docker
            .clone()
            .ok_or("this node has no Docker executor for the network sandbox")?;
        if let Some((att, sandbox)) = e.attached.remove(&spec.id) {
            let n = e.net.clone();
            let _ = blocking(move || n.detach(&att).map_err(err)).await;
            let _ = docker.remove_sandbox(&sandbox).await;
        }
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("ensemble".to_string(), ensemble.to_string());
        labels.insert("allocation".to_string(), spec.id.clone());
        let _ = docker.remove_sandbox(&spec.id).await;
        let sandbox = docker
            .start_sandbox(&spec.id, labels)
            .await
            .map_err(|e| format!("network sandbox: {e}"))?;
        let n = e.net.clone();
        let pid = sandbox.pid;
        let att = match blocking(move || n.attach(member.ip, pid).map_err(err)).await {
            Ok(a) => a,
            Err(x) => {
                let _ = docker.remove_sandbox(&spec.id).await;
                return Err(format!("attaching {} to the subnet: {x}", member.ip));
            }
        };
        let resolv = self.dir.join(format!("{ensemble}.resolv.conf"));
        let text = nunet_subnet::resolv_conf(e.net.gateway(), &[]);
        if let Err(x) =
            std::fs::create_dir_all(&self.dir).and_then(|_| std::fs::write(&resolv, text))
        {
            let n = e.net.clone();
            let a2 = att.clone();
            let _ = blocking(move || n.detach(&a2).map_err(err)).await;
            let _ = docker.remove_sandbox(&spec.id).await;
            return Err(format!("writing {}: {x}", resolv.display()));
        }
        if let Err(x) = e.forward_ports(&spec.id, member.ip) {
            let n = e.net.clone();
            let _ = blocking(move || n.detach(&att).map_err(err)).await;
            let _ = docker.remove_sandbox(&spec.id).await;
            return Err(x);
        }
        spec.network = sandbox.network();
        spec.ports.clear();
        spec.mounts.push(Mount {
            source: resolv,
            target: "/etc/resolv.conf".into(),
            read_only: true,
        });
        e.attached
            .insert(spec.id.clone(), (att, sandbox.name.clone()));
        tracing::info!(ensemble, allocation = %spec.id, ip = %member.ip, "allocation attached to the ensemble subnet");
        Ok(true)
    }

    /// Takes allocation `alloc` off the subnet (sandbox, veth, its port forwards).
    pub async fn detach(&self, ensemble: &str, alloc: &str) {
        let mut ens = self.ensembles.lock().await;
        let Some(e) = ens.get_mut(ensemble) else {
            return;
        };
        let fwd: Vec<u16> = e
            .plan
            .ports
            .iter()
            .filter(|f| f.allocation == alloc)
            .map(|f| f.public)
            .collect();
        for p in fwd {
            if let Err(x) = e.ports.remove(p, Proto::Tcp) {
                tracing::warn!(ensemble, port = p, "removing port forward: {x}");
            }
        }
        if let Some((att, sandbox)) = e.attached.remove(alloc) {
            let n = e.net.clone();
            if let Err(x) = blocking(move || n.detach(&att).map_err(err)).await {
                tracing::warn!(ensemble, alloc, "detaching: {x}");
            }
            e.netns.remove(alloc);
            if let Some(d) = self.docker.as_ref().filter(|_| !sandbox.is_empty())
                && let Err(x) = d.remove_sandbox(&sandbox).await
            {
                tracing::warn!(ensemble, alloc, "removing sandbox: {x}");
            }
        }
    }

    /// Removes the ensemble's subnet from this node (every allocation's attachment too).
    pub async fn destroy(&self, ensemble: &str) {
        let allocs: Vec<String> = {
            let ens = self.ensembles.lock().await;
            ens.get(ensemble)
                .map(|e| e.attached.keys().cloned().collect())
                .unwrap_or_default()
        };
        for a in allocs {
            self.detach(ensemble, &a).await;
        }
        // Sandboxes this process did not attach itself (it restarted since).
        if let Some(docker) = &self.docker {
            for sb in docker.list_sandboxes().await.unwrap_or_default() {
                if sb.labels.get("nunet.ensemble").map(String::as_str) == Some(ensemble) {
                    let _ = docker.remove_sandbox(&sb.name).await;
                }
            }
        }
        let removed = self.ensembles.lock().await.remove(ensemble);
        if let Ok(mut m) = self.in_use.lock() {
            m.remove(ensemble);
        }
        let _ = std::fs::remove_file(self.plan_file(ensemble));
        let _ = std::fs::remove_file(self.dir.join(format!("{ensemble}.resolv.conf")));
        let Some(mut e) = removed else {
            return;
        };
        if let Some(d) = e.dns.take() {
            d.stop().await;
        }
        let _ = e.ports.clear();
        if let Some(s) = &self.service
            && let Err(x) = s.leave(ensemble).await
        {
            tracing::warn!(ensemble, "leaving the subnet: {x}");
        }
        let net = e.net.clone();
        let r = blocking(move || net.teardown().map_err(err)).await;
        if let Err(x) = r {
            tracing::warn!(ensemble, "tearing the subnet down: {x}");
        }
        tracing::info!(ensemble, "ensemble subnet removed");
    }

    /// At start: rebuilds the subnets of `live` ensembles from their saved plans, and removes
    /// everything else of ours from the host (a crashed daemon's leftovers).
    pub async fn restore(&self, live: &[String], local: PeerId) {
        if self.service.is_none() {
            return;
        }
        let saved: Vec<SubnetPlan> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        let keep: Vec<String> = saved
            .iter()
            .filter(|p| live.contains(&p.ensemble_id))
            .map(|p| p.ensemble_id.clone())
            .collect();
        if let Some(docker) = &self.docker {
            for sb in docker.list_sandboxes().await.unwrap_or_default() {
                let ens = sb.labels.get("nunet.ensemble").cloned().unwrap_or_default();
                if !keep.contains(&ens) {
                    match docker.remove_sandbox(&sb.name).await {
                        Ok(()) => {
                            tracing::info!(sandbox = %sb.name, "removed a stale network sandbox")
                        }
                        Err(e) => {
                            tracing::warn!(sandbox = %sb.name, "removing a stale sandbox: {e}")
                        }
                    }
                }
            }
        }
        let host = self.host.clone();
        let k2 = keep.clone();
        match blocking(move || nunet_subnet::cleanup_stale(&host, &k2).map_err(err)).await {
            Ok(r) => tracing::info!(report = ?r, "subnet leftovers cleaned"),
            Err(x) => tracing::warn!("cleaning subnet leftovers: {x}"),
        }
        for p in saved {
            if keep.contains(&p.ensemble_id) {
                let id = p.ensemble_id.clone();
                let joined = p.members.iter().any(|m| {
                    m.allocation == nunet_protocol::JOIN_ALLOCATION && m.peer == local.to_string()
                });
                let restored = if joined {
                    self.join_host(p, local).await
                } else {
                    self.create(p, local).await
                };
                if let Err(x) = restored {
                    tracing::warn!(ensemble = %id, "restoring the subnet: {x}");
                }
            } else {
                let _ = std::fs::remove_file(self.plan_file(&p.ensemble_id));
            }
        }
    }
}
