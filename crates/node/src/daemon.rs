use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libp2p::Multiaddr;
use nunet_actor::{ActorSystem, SystemConfig};
use nunet_capability::{Anchors, ContextFile};
use nunet_config::Config;
use nunet_did::Keypair;
use nunet_network::{NetConfig, Network};
use tokio::sync::watch;

use crate::api::{self, ApiState};
use crate::behaviors::{self, NodeInfo};
use crate::transport::{Libp2pTransport, pump};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad configuration value.
    #[error("config: {0}")]
    Config(String),
    /// The libp2p host failed to start.
    #[error("network: {0}")]
    Network(String),
    /// The REST API could not bind.
    #[error("REST API on {addr}: {source}")]
    Api {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
    /// The node database could not be opened (corrupt, newer schema, unwritable).
    #[error("{0}")]
    Database(String),
    /// Behaviors could not be registered.
    #[error("behaviors: {0}")]
    Behaviors(String),
}

/// Everything a node needs to start.
pub struct NodeOptions {
    /// Effective configuration.
    pub config: Config,
    /// The node's key (its DID and peer id).
    pub key: Keypair,
    /// Its capability context, and where to reload it from when the file changes.
    pub anchors: Anchors,
    /// `(contexts directory, context name)` to watch for anchor changes.
    pub context: Option<(ContextFile, String)>,
    /// Check capability tokens (off only in benchmarks).
    pub verify_capabilities: bool,
    /// The daemon's logging, for `/dms/node/logger/config` (`None`: that behavior is not
    /// registered).
    pub log: Option<std::sync::Arc<dyn nunet_logging::LogControl>>,
}

/// A running node.
pub struct Node {
    /// Its actors.
    pub system: ActorSystem,
    /// Its libp2p host.
    pub network: Network,
    /// Where the REST API listens.
    pub api_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    records: nunet_store::Records,
}

/// Parses `p2p.swarm_key`: 64 hex characters, or a path to a `swarm.key` file.
pub fn parse_swarm_key(v: &str) -> Result<Option<[u8; 32]>, NodeError> {
    crate::swarm_key::parse(v).map_err(NodeError::Config)
}

/// The relay server's limits from `p2p.relay_*` (validated by the config's own checks, so
/// the conversions only saturate on values it refuses).
fn relay_limits(p: &nunet_config::model::P2p) -> nunet_network::RelayLimits {
    let slots = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    nunet_network::RelayLimits {
        max_reservations: slots(p.relay_max_reservations),
        max_circuits: slots(p.relay_max_circuits),
        max_circuits_per_peer: slots(p.relay_max_circuits_per_peer),
        circuit_bytes: p.relay_circuit_mb.saturating_mul(1024 * 1024),
        circuit_duration: Duration::from_secs(p.relay_circuit_secs),
    }
}

fn addrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>, NodeError> {
    list.iter()
        .map(|a| {
            a.parse()
                .map_err(|e| NodeError::Config(format!("{what} {a:?}: {e}")))
        })
        .collect()
}

impl Node {
    /// Starts the network, the actor system, the behaviors and the REST API.
    pub async fn start(opts: NodeOptions) -> Result<Node, NodeError> {
        let cfg = &opts.config;
        let limits = crate::limits::apply(cfg);
        let net_cfg = NetConfig {
            keypair: opts.key.to_libp2p(),
            listen: addrs(&cfg.p2p.listen_address, "p2p.listen_address")?,
            bootstrap: addrs(&cfg.p2p.bootstrap_peers, "p2p.bootstrap_peers")?,
            swarm_key: parse_swarm_key(&cfg.p2p.swarm_key)?,
            relay_server: cfg.p2p.relay_server,
            relay_limits: relay_limits(&cfg.p2p),
            probe_private_addrs: cfg.p2p.nat_probe_private_addrs,
            request_timeout: Duration::from_secs(30),
            max_message_bytes: nunet_actor::MAX_ENVELOPE_BYTES,
            limits: limits.net,
        };
        let mut registry = crate::metrics::new_registry();
        let (network, events) = nunet_network::start_metered(net_cfg, &mut registry)
            .await
            .map_err(|e| NodeError::Network(e.to_string()))?;
        let system = ActorSystem::new(
            opts.key.clone(),
            opts.anchors.clone(),
            SystemConfig {
                verify_capabilities: opts.verify_capabilities,
            },
        );
        std::fs::create_dir_all(&cfg.general.data_dir).map_err(|e| {
            NodeError::Database(format!("creating {}: {e}", cfg.general.data_dir.display()))
        })?;
        let replay_log = cfg.general.data_dir.join("replay.log");
        system.keep_replay_state_in(&replay_log).map_err(|e| {
            NodeError::Database(format!("replay log {}: {e}", replay_log.display()))
        })?;
        system.set_transport(std::sync::Arc::new(Libp2pTransport(
            network.clone(),
            opts.key.clone(),
        )));
        for topic in ["/nunet", "/nunet/hello", "/nunet/deployment"] {
            network
                .subscribe(topic)
                .await
                .map_err(|e| NodeError::Network(e.to_string()))?;
        }
        // The node database: opened here, once, and handed out: the accounting gets this
        // connection; deployment and allocation records get a thread with its own.
        let db = nunet_provider::onboarding::database_path(cfg).map_err(NodeError::Database)?;
        let store =
            nunet_store::Store::open(&db).map_err(|e| NodeError::Database(e.to_string()))?;
        let records =
            nunet_store::Records::open(&db).map_err(|e| NodeError::Database(e.to_string()))?;
        let resources =
            nunet_provider::onboarding::manager(cfg, store).map_err(NodeError::Database)?;
        let r = resources.clone();
        behaviors::register(NodeInfo {
            system: system.clone(),
            network: network.clone(),
            started: Instant::now(),
            onboarded: std::sync::Arc::new(move || nunet_provider::onboarding::is_onboarded(&r)),
        })
        .map_err(|e| NodeError::Behaviors(e.to_string()))?;
        if let Some(log) = opts.log.clone() {
            crate::logger::register(&system, log)
                .map_err(|e| NodeError::Behaviors(e.to_string()))?;
        }
        let vm = crate::vm::executor(
            system.did().as_str(),
            cfg.general.data_dir.join("vm"),
            Duration::from_secs(cfg.job.vm_boot_timeout_secs),
        )
        .await;
        tracing::info!(status = ?nunet_executor::Executor::status(vm.as_ref()), "VM executor");
        let (mut executors, docker) = deployment_executors(system.did().as_str(), cfg).await;
        // microVM allocations (`executor: firecracker`) run on the same VM executor; bids
        // offer it only while its status is available.
        executors.insert("firecracker".into(), vm.clone());
        let executors = executors
            .into_iter()
            .map(|(name, e)| (name, nunet_executor::Metered::wrap(e)))
            .collect();
        crate::vm::register(&system, vm).map_err(|e| NodeError::Behaviors(e.to_string()))?;
        let subnets = nunet_provider::subnet::NodeSubnets::new(
            cfg.subnet.enabled,
            nunet_subnet::DatagramConfig {
                enabled: cfg.subnet.datagrams,
                port: cfg.subnet.datagram_port,
                busy_poll: std::time::Duration::from_micros(
                    cfg.subnet.datagram_busy_poll_us.into(),
                ),
            },
            &network,
            Some(docker),
            cfg.general.data_dir.clone(),
        );
        nunet_provider::subnet::register(&system, subnets.clone())
            .map_err(|e| NodeError::Behaviors(e.to_string()))?;
        let files = nunet_files::Files::start(
            &system,
            &network,
            nunet_files::Area::new(cfg.general.data_dir.join("files"), &cfg.files.roots),
            cfg.files.direct,
        )
        .map_err(|e| NodeError::Behaviors(e.to_string()))?;
        let provider = nunet_provider::Provider::new(
            nunet_provider::deployment::Parts {
                system: system.clone(),
                key: opts.key.clone(),
                resources: resources.clone(),
                records: records.clone(),
                executors,
                subnets: subnets.clone(),
                network: network.clone(),
                output: nunet_output::Server::start(
                    &network,
                    Arc::new(nunet_output::Spools::new(
                        cfg.general.data_dir.join("output"),
                        cfg.job.output_retention_mb.saturating_mul(1 << 20),
                    )),
                )
                .map_err(|e| NodeError::Behaviors(e.to_string()))?,
                transfers: files.clone(),
            },
            cfg,
        );
        provider.restore();
        // A forced offboard stops this provider's workloads before it releases anything.
        nunet_provider::onboarding::register(&system, resources.clone(), provider.clone())
            .map_err(|e| NodeError::Behaviors(e.to_string()))?;
        provider
            .register()
            .map_err(|e| NodeError::Behaviors(e.to_string()))?;
        let storage = nunet_storage::Storage::from_config(cfg)
            .map_err(|e| NodeError::Config(format!("storage mode: {e}")))?;
        nunet_storage::register(&system, storage)
            .map_err(|e| NodeError::Behaviors(e.to_string()))?;
        let sessions = Arc::new(nunet_output::Sessions::default());
        let deployments = crate::orchestrator::start(
            &system,
            records.clone(),
            subnets.clone(),
            (network.clone(), sessions.clone()),
        )
        .map_err(|e| NodeError::Behaviors(e.to_string()))?;
        registry.register_collector(Box::new(crate::metrics::StateCollector {
            resources: resources.clone(),
            deployments,
            provider: provider.clone(),
            subnets,
        }));
        let (stop, stop_rx) = watch::channel(false);
        let (wire, wire_task) = crate::nunet_wire::start(
            system.clone(),
            network.clone(),
            opts.key.clone(),
            stop_rx.clone(),
        )
        .map_err(|e| NodeError::Network(e.to_string()))?;
        let mut tasks = vec![
            wire_task,
            tokio::spawn(pump(system.clone(), wire, events)),
            tokio::spawn(nunet_provider::onboarding::expire_loop(
                resources,
                stop_rx.clone(),
            )),
        ];

        let ip: std::net::IpAddr = cfg
            .rest
            .addr
            .parse()
            .map_err(|_| NodeError::Config(format!("rest.addr {:?}", cfg.rest.addr)))?;
        let addr = SocketAddr::new(ip, cfg.rest.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Api { addr, source })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| NodeError::Api { addr, source })?;
        let mut rx = stop_rx.clone();
        let dashboard = nunet_dashboard::Dashboard::new(system.clone(), &cfg.general.data_dir)
            .map_err(|e| NodeError::Behaviors(e.to_string()))?;
        let sampler = dashboard.start_sampling(nunet_dashboard::SAMPLE_EVERY);
        let mut sampler_stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = sampler_stop.wait_for(|s| *s).await;
            sampler.abort();
        }));
        let state = ApiState {
            system: system.clone(),
            metrics: Some(std::sync::Arc::new(registry)),
            files: Some(files),
            output: Some(sessions),
            dashboard: Some(dashboard),
        };
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = api::serve(listener, state, shutdown).await {
                tracing::error!(error = %e, "REST API stopped");
            }
        }));
        let keeper = crate::revocations::Revocations::new(system.clone(), opts.context.clone());
        tasks.push(
            crate::revocations::register(&keeper, stop_rx.clone())
                .map_err(|e| NodeError::Behaviors(e.to_string()))?,
        );
        if let Some((file, name)) = opts.context {
            tasks.push(tokio::spawn(watch_anchors(
                system.clone(),
                file,
                name,
                stop_rx,
            )));
        }
        Ok(Node {
            system,
            network,
            api_addr,
            stop,
            tasks,
            records,
        })
    }

    /// Stops the API and the network and waits for the tasks to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.network.shutdown().await;
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // Record changes still queued reach the disk before the process ends.
        match tokio::time::timeout(Duration::from_secs(5), self.records.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "deployment records at shutdown"),
            Err(_) => tracing::error!("deployment records not flushed within 5 s of shutdown"),
        }
    }
}

/// The executors deployments may use, by ensemble executor name (and Docker's own handle,
/// for the subnet's network sandboxes).
async fn deployment_executors(
    node: &str,
    cfg: &Config,
) -> (
    std::collections::BTreeMap<String, std::sync::Arc<dyn nunet_executor::Executor>>,
    std::sync::Arc<nunet_executor::DockerExecutor>,
) {
    let docker = std::sync::Arc::new(
        nunet_executor::DockerExecutor::connect(nunet_executor::DockerConfig::new(node)).await,
    );
    tracing::info!(status = ?nunet_executor::Executor::status(docker.as_ref()), "Docker executor");
    let wasm = nunet_executor_wasm::WasmExecutor::new(nunet_executor_wasm::WasmConfig::new(
        node,
        cfg.general.data_dir.join("wasm"),
    ));
    let mut m: std::collections::BTreeMap<String, std::sync::Arc<dyn nunet_executor::Executor>> =
        std::collections::BTreeMap::new();
    m.insert("docker".into(), docker.clone());
    m.insert("wasm".into(), std::sync::Arc::new(wasm));
    (m, docker)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reloads the node's anchors when `nunet cap anchor/remove/revoke` changes the context file,
/// so trust changes take effect without a restart.
async fn watch_anchors(
    system: ActorSystem,
    file: ContextFile,
    name: String,
    mut stop: watch::Receiver<bool>,
) {
    let path = file.path_of(&name);
    let mut last = path.as_deref().and_then(mtime);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = path.as_deref().and_then(mtime);
        if now != last {
            last = now;
            match file.load(&name) {
                Ok(a) if &a.did == system.did() => {
                    system.set_anchors(a);
                    tracing::info!(context = %name, "capability anchors reloaded");
                }
                Ok(_) => {
                    tracing::error!(context = %name, "context DID changed on disk; not reloading")
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not reload capability anchors; keeping the previous ones")
                }
            }
        }
    }
}
