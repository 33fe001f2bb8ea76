//! The WASM executor: WebAssembly modules (WASI preview 1) and components (WASI preview 2)
//! run by wasmtime behind the same [`Executor`] trait as containers and VMs. Modules come from
//! a path, an URL or inline bytes (checked against an optional sha256), are compiled once and
//! cached by hash; each run gets args, env, preopened dirs, stdout/stderr log files, a memory
//! limit and a CPU budget (fuel, or running time through epoch interruption). A preview 2
//! component whose spec names a network namespace ([`NetworkAttachment::Namespace`]) runs on
//! a thread inside it and may use `wasi:sockets` there; without one it has no sockets.
//!
//! What this crate must not do: give a guest any host access beyond its preopened dirs, its
//! two log files and sockets inside the namespace its spec names (no inherited env or stdio,
//! never the host's own network, no name lookups), block the async runtime (instances
//! run on their own threads), or outlive the process: instances run in-process, so `list`
//! reports this process's runs only and there is nothing to adopt after a restart.

mod module;
mod netns;
mod run;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream;
use nunet_executor::{
    ExecutionInfo, ExecutionSpec, ExecutionState, Executor, ExecutorError, ExecutorKind,
    ExecutorStatus, ExitStatus, LogOptions, LogSource, LogStream, NetworkAttachment, Result,
    Workload, logs,
};
use tokio::sync::watch;

use module::ModuleCache;
use run::{Control, Job};

/// Settings of the WASM executor.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// The node's stable id, put in each run's `nunet.node` label.
    pub node: String,
    /// Where each run's `stdout.log` / `stderr.log` go (`runs/<execution id>/`).
    pub state_dir: PathBuf,
    /// Epoch tick: how quickly `stop` and time budgets take effect.
    pub tick: Duration,
    /// Deadline for downloading a module.
    pub download_timeout: Duration,
    /// Where compiled modules are kept across restarts, by the sha256 of their bytes
    /// (default `<state_dir>/modules`); `None` keeps them in memory only.
    pub module_cache: Option<PathBuf>,
    /// Download modules only from public addresses (default): a module URL, and every
    /// redirect it takes, must resolve to addresses outside loopback, private, link-local,
    /// shared, multicast and unspecified ranges, so a deployer cannot make the provider
    /// fetch from its own services or LAN. Off only for tests serving modules on loopback.
    pub public_urls_only: bool,
}

impl WasmConfig {
    /// Defaults: 10 ms ticks, 60 s downloads.
    pub fn new(node: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        let state_dir: PathBuf = state_dir.into();
        Self {
            node: node.into(),
            module_cache: Some(state_dir.join("modules")),
            state_dir,
            tick: Duration::from_millis(10),
            download_timeout: Duration::from_secs(60),
            public_urls_only: true,
        }
    }
}

struct RunRecord {
    labels: BTreeMap<String, String>,
    dir: PathBuf,
    control: Arc<Control>,
    /// The network namespace the instance runs in, when it has one.
    netns: Option<std::fs::File>,
    exit: watch::Sender<Option<ExitStatus>>,
}

/// The WASM executor.
pub struct WasmExecutor {
    config: WasmConfig,
    engine: Option<wasmtime::Engine>,
    cache: Option<Arc<ModuleCache>>,
    status: ExecutorStatus,
    runs: Mutex<HashMap<String, Arc<RunRecord>>>,
    ticking: Arc<AtomicBool>,
}

impl Drop for WasmExecutor {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::SeqCst);
    }
}

fn engine() -> std::result::Result<wasmtime::Engine, String> {
    let mut cfg = wasmtime::Config::new();
    cfg.consume_fuel(true).epoch_interruption(true);
    wasmtime::Engine::new(&cfg).map_err(|e| format!("wasmtime engine: {e:#}"))
}

/// Creates `dir` readable by its owner only (compiled code is loaded from it).
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl WasmExecutor {
    /// Builds the engine (fuel metering and epoch interruption on) and starts its epoch ticker.
    pub fn new(config: WasmConfig) -> Self {
        let ticking = Arc::new(AtomicBool::new(true));
        let made = engine().and_then(|e| {
            std::fs::create_dir_all(&config.state_dir)
                .map_err(|err| format!("state dir {}: {err}", config.state_dir.display()))?;
            if let Some(dir) = &config.module_cache {
                create_private_dir(dir)
                    .map_err(|err| format!("module cache {}: {err}", dir.display()))?;
            }
            let cache = ModuleCache::new(e.clone(), config.module_cache.clone())
                .map_err(|err| err.to_string())?;
            Ok((e, cache))
        });
        let (engine, cache, status) = match made {
            Ok((engine, cache)) => {
                let (e, flag, tick) = (engine.clone(), ticking.clone(), config.tick);
                std::thread::spawn(move || {
                    while flag.load(Ordering::SeqCst) {
                        std::thread::sleep(tick);
                        e.increment_epoch();
                    }
                });
                let status = ExecutorStatus {
                    kind: ExecutorKind::Wasm,
                    available: true,
                    detail: "wasmtime 48 (WASI p1 modules, p2 components; fuel + epoch limits)"
                        .into(),
                };
                (Some(engine), Some(Arc::new(cache)), status)
            }
            Err(reason) => (
                None,
                None,
                ExecutorStatus {
                    kind: ExecutorKind::Wasm,
                    available: false,
                    detail: reason,
                },
            ),
        };
        Self {
            config,
            engine,
            cache,
            status,
            runs: Mutex::new(HashMap::new()),
            ticking,
        }
    }

    /// How many distinct modules are compiled and cached.
    pub fn cached_modules(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    fn ready(&self) -> Result<(&wasmtime::Engine, &Arc<ModuleCache>)> {
        match (&self.engine, &self.cache) {
            (Some(e), Some(c)) => Ok((e, c)),
            _ => Err(ExecutorError::Unavailable {
                kind: ExecutorKind::Wasm,
                reason: self.status.detail.clone(),
            }),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunRecord>>> {
        // The map holds Arcs only; a panic elsewhere cannot leave it half-updated.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Result<Arc<RunRecord>> {
        self.ready()?;
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| ExecutorError::NotFound(id.to_string()))
    }

    fn info(id: &str, r: &RunRecord) -> ExecutionInfo {
        ExecutionInfo {
            id: id.to_string(),
            kind: ExecutorKind::Wasm,
            state: match r.exit.borrow().clone() {
                Some(s) => ExecutionState::Exited(s),
                None => ExecutionState::Running,
            },
            labels: r.labels.clone(),
            detail: "wasmtime instance".into(),
        }
    }

    async fn compile(&self, spec: &ExecutionSpec) -> Result<module::Prepared> {
        let (_, cache) = self.ready()?;
        let Workload::Wasm { module, sha256 } = &spec.workload else {
            return Err(ExecutorError::InvalidSpec(
                "the WASM executor runs wasm workloads only".into(),
            ));
        };
        let (source, sha, cache, timeout, public) = (
            module.clone(),
            sha256.clone(),
            cache.clone(),
            self.config.download_timeout,
            self.config.public_urls_only,
        );
        tokio::task::spawn_blocking(move || {
            let bytes = module::fetch(&source, sha.as_deref(), timeout, public)?;
            cache.prepare(&bytes)
        })
        .await
        .map_err(|e| ExecutorError::Runtime(format!("compile task: {e}")))?
    }
}

/// Why WASM modules get no GPU.
pub const GPU_NOTE: &str =
    "WASM modules get no GPU: WASI offers no GPU interface that wasmtime runs here";

#[async_trait::async_trait]
impl Executor for WasmExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Wasm
    }

    fn status(&self) -> ExecutorStatus {
        self.status.clone()
    }

    fn gpu_support(&self) -> nunet_executor::GpuSupport {
        nunet_executor::GpuSupport::none(GPU_NOTE)
    }

    async fn prepare(&self, spec: &ExecutionSpec) -> Result<()> {
        self.compile(spec).await.map(|_| ())
    }

    async fn start(&self, spec: &ExecutionSpec) -> Result<ExecutionInfo> {
        spec.validate_id()?;
        let (engine, _) = self.ready()?;
        if self.table().contains_key(&spec.id) {
            return Err(ExecutorError::AlreadyExists(spec.id.clone()));
        }
        let netns = match &spec.network {
            NetworkAttachment::None | NetworkAttachment::Default => None,
            NetworkAttachment::Namespace(p) => Some(std::fs::File::open(p).map_err(|e| {
                ExecutorError::InvalidSpec(format!("network namespace {}: {e}", p.display()))
            })?),
            other => {
                return Err(ExecutorError::InvalidSpec(format!(
                    "a WASM instance has no network or a network namespace path, not {other:?}"
                )));
            }
        };
        let prepared = self.compile(spec).await?;
        let dir = self.config.state_dir.join("runs").join(&spec.id);
        std::fs::create_dir_all(&dir)?;
        let stdout = std::fs::File::create(dir.join("stdout.log"))?;
        let stderr = std::fs::File::create(dir.join("stderr.log"))?;
        let mut argv = if spec.command.is_empty() {
            vec![format!("{}.wasm", spec.id)]
        } else {
            spec.command.clone()
        };
        argv.extend(spec.args.iter().cloned());
        let memory = match spec.resources.memory_bytes {
            0 => None,
            m => Some(usize::try_from(m).unwrap_or(usize::MAX)),
        };
        let control = Arc::new(Control::default());
        let job = Job {
            prepared,
            argv,
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            preopens: spec
                .mounts
                .iter()
                .map(|m| (m.source.clone(), m.target.clone(), m.read_only))
                .collect(),
            stdout,
            stderr,
            memory,
            cpu: spec.resources.cpu_time,
            control: control.clone(),
            netns: match &netns {
                Some(f) => Some(f.try_clone()?),
                None => None,
            },
        };
        let record = Arc::new(RunRecord {
            labels: spec.runtime_labels(&self.config.node, ExecutorKind::Wasm),
            dir,
            control,
            netns,
            exit: watch::Sender::new(None),
        });
        {
            let mut t = self.table();
            if t.contains_key(&spec.id) {
                return Err(ExecutorError::AlreadyExists(spec.id.clone()));
            }
            t.insert(spec.id.clone(), record.clone());
        }
        let (engine, rec) = (engine.clone(), record.clone());
        std::thread::Builder::new()
            .name(format!("wasm-{}", spec.id))
            .spawn(move || {
                let status = run::execute(&engine, job);
                rec.exit.send_replace(Some(status));
            })?;
        Ok(Self::info(&spec.id, &record))
    }

    async fn inspect(&self, id: &str) -> Result<ExecutionInfo> {
        let r = self.get(id)?;
        Ok(Self::info(id, &r))
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus> {
        let r = self.get(id)?;
        let mut rx = r.exit.subscribe();
        let got = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ExecutorError::Runtime("wasm run ended without a status".into()))?;
        got.clone()
            .ok_or_else(|| ExecutorError::Runtime("wasm run ended without a status".into()))
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        let r = self.get(id)?;
        let done = {
            let r = r.clone();
            Arc::new(move || r.exit.borrow().is_some())
        };
        let out = logs::file_stream(
            r.dir.join("stdout.log"),
            LogSource::Stdout,
            options,
            done.clone(),
        );
        let err = logs::file_stream(r.dir.join("stderr.log"), LogSource::Stderr, options, done);
        Ok(Box::pin(stream::select(out, err)))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let r = self.get(id)?;
        if r.exit.borrow().is_some() {
            return Ok(());
        }
        // WASM has no signal to ask nicely with: interrupt at the next epoch tick. A guest
        // blocked in a host call is interrupted when that call returns; for networked guests,
        // shutting their sockets down makes blocked socket calls return (again every 100 ms,
        // for a guest that opens new ones meanwhile).
        r.control.stop.store(true, Ordering::SeqCst);
        let mut rx = r.exit.subscribe();
        let limit = grace.max(Duration::from_secs(5));
        let ended = async {
            loop {
                if let Some(ns) = &r.netns {
                    netns::shutdown_sockets_in(ns);
                }
                let wait =
                    tokio::time::timeout(Duration::from_millis(100), rx.wait_for(Option::is_some));
                if wait.await.is_ok() {
                    return;
                }
            }
        };
        match tokio::time::timeout(limit, ended).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ExecutorError::Timeout {
                what: format!("wasm instance {id} to stop (blocked in a host call)"),
                after: limit,
            }),
        }
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let r = self.get(id)?;
        if r.exit.borrow().is_none() {
            self.stop(id, Duration::ZERO).await?;
        }
        self.table().remove(id);
        std::fs::remove_dir_all(&r.dir)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ExecutionInfo>> {
        self.ready()?;
        let mut out: Vec<ExecutionInfo> = self
            .table()
            .iter()
            .map(|(id, r)| Self::info(id, r))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
