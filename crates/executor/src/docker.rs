//! Docker backend: containers through the Docker Engine API (bollard) on a local dockerd.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    Mount as DockerMount, MountType, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;

use crate::{
    EXEC_MAX_OUTPUT, ExecOutput, ExecutionInfo, ExecutionSpec, ExecutionState, Executor,
    ExecutorError, ExecutorKind, ExecutorStatus, ExitReason, ExitStatus, GpuSupport,
    LABEL_EXECUTION, LABEL_NODE, LogChunk, LogOptions, LogSource, LogStream, NetworkAttachment,
    Result, Workload, with_deadline,
};

mod gpu;

/// Looks (100 ms apart, for up to 2 s) for dockerd's OOM mark on a SIGKILLed container with
/// a memory limit. The mark comes from a separate event that dockerd may handle after the
/// exit: under load (a CI run) 300 ms were seen to be too short, and the exit was reported
/// as a plain SIGKILL.
const OOM_RECHECKS: u32 = 20;

/// Container names are `nunet-<execution id>`.
const NAME_PREFIX: &str = "nunet-";

/// Settings of the Docker backend.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The node's stable id, put in the `nunet.node` label; `list` finds containers by it.
    pub node: String,
    /// dockerd socket (default `/var/run/docker.sock`, or `DOCKER_HOST` when it is `unix://`).
    pub socket: Option<String>,
    /// Deadline for each API call (pull excepted).
    pub timeout: Duration,
    /// Deadline for an image pull.
    pub pull_timeout: Duration,
    /// Pull from the registry before every start, falling back to the local image store when
    /// the registry is unreachable. When false, an image already in the local store is used
    /// as is and only missing images are pulled, like `docker run`.
    pub pull_always: bool,
}

impl DockerConfig {
    /// Defaults for `node`: the standard socket, 30 s per call, 10 min per pull.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            socket: None,
            timeout: Duration::from_secs(30),
            pull_timeout: Duration::from_secs(600),
            pull_always: false,
        }
    }
}

/// The Docker executor. Construct with [`DockerExecutor::connect`], which never fails: an
/// unreachable dockerd makes the executor report itself unavailable.
pub struct DockerExecutor {
    config: DockerConfig,
    /// [`node_tag`] of `config.node`, in every container name.
    tag: String,
    /// The client and status; re-probed in the background while dockerd is unreachable.
    conn: Arc<RwLock<Conn>>,
    stopped: Mutex<HashSet<String>>,
}

/// What the last probe of dockerd found.
struct Conn {
    client: Option<Docker>,
    status: ExecutorStatus,
    gpu: GpuSupport,
}

/// First pause before probing an unreachable dockerd again; it doubles up to
/// [`REPROBE_MAX`].
const REPROBE_FIRST: Duration = Duration::from_secs(1);
/// Longest pause between two probes of an unreachable dockerd.
const REPROBE_MAX: Duration = Duration::from_secs(30);

/// Connects to dockerd at `socket`, negotiates the API version and asks its version and
/// what GPUs it can hand to containers.
async fn probe(socket: &str, timeout: Duration) -> Result<(Docker, String, GpuSupport)> {
    let secs = timeout.as_secs().max(1);
    let probe = async {
        let client = Docker::connect_with_unix(socket, secs, bollard::API_DEFAULT_VERSION)
            .map_err(|e| ExecutorError::Runtime(format!("no dockerd socket at {socket}: {e}")))?;
        let client = client.negotiate_version().await.map_err(api_err)?;
        let v = client.version().await.map_err(api_err)?;
        let detail = format!(
            "dockerd {}, API {}",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        );
        Ok((client, detail))
    };
    let (client, detail) = with_deadline("dockerd probe", timeout, probe).await?;
    // Asked apart from the probe: a slow `docker info` costs the NVIDIA support only,
    // never Docker itself.
    let gpus = tokio::time::timeout(timeout, gpu::support(&client))
        .await
        .unwrap_or_else(|_| {
            GpuSupport::none(format!(
                "`docker info` did not answer within {} s: GPU support unknown",
                timeout.as_secs()
            ))
        });
    Ok((client, detail, gpus))
}

fn conn_of(r: Result<(Docker, String, GpuSupport)>) -> Conn {
    match r {
        Ok((client, detail, gpu)) => Conn {
            client: Some(client),
            status: ExecutorStatus {
                kind: ExecutorKind::Docker,
                available: true,
                detail,
            },
            gpu,
        },
        Err(e) => Conn {
            client: None,
            gpu: GpuSupport::none(format!("dockerd is not reachable: {e}")),
            status: ExecutorStatus {
                kind: ExecutorKind::Docker,
                available: false,
                detail: e.to_string(),
            },
        },
    }
}

/// Probes an unreachable dockerd again, pausing longer each time, until it answers (the
/// executor becomes available: bids offer Docker from then on) or the executor is dropped.
async fn reprobe(conn: Weak<RwLock<Conn>>, socket: String, timeout: Duration) {
    let mut pause = REPROBE_FIRST;
    loop {
        tokio::time::sleep(pause).await;
        if conn.strong_count() == 0 {
            return;
        }
        if let Ok(found) = probe(&socket, timeout).await {
            let Some(conn) = conn.upgrade() else { return };
            let c = conn_of(Ok(found));
            tracing::info!(detail = %c.status.detail, "dockerd answers now: Docker executor available");
            if let Ok(mut g) = conn.write() {
                *g = c;
            }
            return;
        }
        pause = (pause * 2).min(REPROBE_MAX);
    }
}

pub(crate) fn api_err(e: bollard::errors::Error) -> ExecutorError {
    ExecutorError::Runtime(format!("dockerd: {e}"))
}

pub(crate) fn is_status(e: &bollard::errors::Error, code: u16) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// Docker's `NanoCpus` for `cores`: `None` for 0 (no limit, as [`crate::Resources`] says).
/// Negative, NaN, infinite, below one nano-CPU or beyond `i64` is refused: a cast would
/// turn those into no limit or a saturated one without a word.
fn nano_cpus(cores: f64) -> Result<Option<i64>> {
    if cores == 0.0 {
        return Ok(None);
    }
    let nanos = (cores * 1e9).round();
    // 2^63 is the first float past i64::MAX; the range also refuses NaN.
    if !(1.0..9_223_372_036_854_775_808.0).contains(&nanos) {
        return Err(ExecutorError::InvalidSpec(format!(
            "cpu_cores must be 0 (no limit) or from 1e-9 to about 9.2e9, got {cores}"
        )));
    }
    Ok(Some(nanos as i64))
}

/// 8 hex digits of the SHA-256 of a node id: part of the name of every container the node
/// creates (`nunet-<tag>-<execution id>`, `nunet.sandbox-<tag>-<name>`), so nodes that share
/// one dockerd (a devnet, two daemons on one host) never take or remove each other's
/// containers, even for the same execution id (a node redeployed to another provider).
pub fn node_tag(node: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(node.as_bytes());
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

impl DockerExecutor {
    /// Connects to dockerd, negotiates the API version and probes it.
    pub async fn connect(config: DockerConfig) -> Self {
        let socket = config.socket.clone().unwrap_or_else(|| {
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| h.starts_with("unix://"))
                .unwrap_or_else(|| "/var/run/docker.sock".into())
        });
        let first = conn_of(probe(&socket, config.timeout).await);
        let unavailable = first.client.is_none();
        let conn = Arc::new(RwLock::new(first));
        // A dockerd that is slow or not up yet when the node starts is tried again, so the
        // provider offers Docker once it answers (not only after a restart of the node).
        if unavailable && tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(reprobe(Arc::downgrade(&conn), socket, config.timeout));
        }
        Self {
            tag: node_tag(&config.node),
            config,
            conn,
            stopped: Mutex::new(HashSet::new()),
        }
    }

    /// The settings this executor runs with.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// This node's [`node_tag`].
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The container name of execution `id` on this node.
    fn name_of(&self, id: &str) -> String {
        format!("{NAME_PREFIX}{}-{id}", self.tag)
    }

    /// The container of execution `id` and what dockerd says about it: `nunet-<tag>-<id>`, or
    /// one created before names carried the node tag (`nunet-<id>`) when it carries this
    /// node's label (so a daemon upgraded under running containers still adopts them).
    async fn find(&self, id: &str) -> Result<(String, ContainerInspectResponse)> {
        let docker = self.client()?;
        let name = self.name_of(id);
        match self
            .call("container inspect", docker.inspect_container(&name, None))
            .await?
        {
            Ok(c) => return Ok((name, c)),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(api_err(e)),
        }
        let legacy = format!("{NAME_PREFIX}{id}");
        match self
            .call("container inspect", docker.inspect_container(&legacy, None))
            .await?
        {
            Ok(c)
                if c.config
                    .as_ref()
                    .and_then(|cfg| cfg.labels.as_ref())
                    .and_then(|l| l.get(LABEL_NODE))
                    == Some(&self.config.node) =>
            {
                Ok((legacy, c))
            }
            Ok(_) => Err(ExecutorError::NotFound(id.to_string())),
            Err(e) if is_status(&e, 404) => Err(ExecutorError::NotFound(id.to_string())),
            Err(e) => Err(api_err(e)),
        }
    }

    /// The container name of execution `id` (see [`Self::find`]); the new-style name when
    /// there is none.
    async fn resolve(&self, id: &str) -> String {
        match self.find(id).await {
            Ok((name, _)) => name,
            Err(_) => self.name_of(id),
        }
    }

    pub(crate) fn client(&self) -> Result<Docker> {
        let g = self
            .conn
            .read()
            .map_err(|_| ExecutorError::Runtime("Docker executor state poisoned".into()))?;
        g.client.clone().ok_or_else(|| ExecutorError::Unavailable {
            kind: ExecutorKind::Docker,
            reason: g.status.detail.clone(),
        })
    }

    pub(crate) async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = std::result::Result<T, bollard::errors::Error>>,
    ) -> Result<std::result::Result<T, bollard::errors::Error>> {
        with_deadline(what, self.config.timeout, async { Ok(fut.await) }).await
    }

    pub(crate) async fn image_is_local(&self, image: &str) -> Result<bool> {
        let docker = self.client()?;
        let found = self
            .call("image inspect", docker.inspect_image(image))
            .await?;
        Ok(found.is_ok())
    }

    async fn ensure_image(&self, image: &str) -> Result<()> {
        let docker = self.client()?;
        if !self.config.pull_always && self.image_is_local(image).await? {
            return Ok(());
        }
        let (name, tag) = split_reference(image);
        let opts = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag)
            .build();
        let pull = async {
            let mut progress = docker.create_image(Some(opts), None, None);
            while let Some(item) = progress.next().await {
                if let Err(e) = item {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(()))
        };
        let pulled = with_deadline("image pull", self.config.pull_timeout, pull).await;
        let detail = match pulled {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        if self.config.pull_always && self.image_is_local(image).await? {
            return Ok(()); // registry unreachable: the local copy will do
        }
        Err(ExecutorError::ImageNotFound {
            image: image.to_string(),
            detail,
        })
    }

    fn create_body(&self, spec: &ExecutionSpec) -> Result<ContainerCreateBody> {
        let Workload::Container {
            image,
            working_dir,
            user,
        } = &spec.workload
        else {
            return Err(ExecutorError::InvalidSpec(
                "the docker executor runs container workloads only".into(),
            ));
        };
        let r = &spec.resources;
        let mut host = HostConfig {
            nano_cpus: nano_cpus(r.cpu_cores)?,
            ..Default::default()
        };
        if r.memory_bytes > 0 {
            let m = i64::try_from(r.memory_bytes)
                .map_err(|_| ExecutorError::InvalidSpec("memory limit too large".into()))?;
            host.memory = Some(m);
            host.memory_swap = Some(m); // no swap: the limit is the limit
        }
        let support = self.gpu_support();
        if let Some(g) = r.gpus.iter().find(|g| !support.supports(g.vendor)) {
            return Err(ExecutorError::InvalidSpec(format!(
                "GPU {} ({:?}) cannot be handed to a container here: {}",
                g.id,
                g.vendor,
                support.notes.join("; ")
            )));
        }
        let env = gpu::apply(r, &spec.env, &mut host)?;
        if !spec.mounts.is_empty() {
            host.mounts = Some(
                spec.mounts
                    .iter()
                    .map(|m| DockerMount {
                        target: Some(m.target.clone()),
                        source: Some(m.source.to_string_lossy().into_owned()),
                        typ: Some(if m.source.is_absolute() {
                            MountType::BIND
                        } else {
                            MountType::VOLUME
                        }),
                        read_only: Some(m.read_only),
                        ..Default::default()
                    })
                    .collect(),
            );
        }
        host.network_mode = match &spec.network {
            NetworkAttachment::None => Some("none".into()),
            NetworkAttachment::Default => None,
            NetworkAttachment::Host => Some("host".into()),
            NetworkAttachment::Named(n) => Some(n.clone()),
            NetworkAttachment::Tap { .. } => {
                return Err(ExecutorError::InvalidSpec(
                    "TAP attachment is for VMs, not containers".into(),
                ));
            }
            NetworkAttachment::Namespace(_) => {
                return Err(ExecutorError::InvalidSpec(
                    "a namespace path is for WASM instances; a container joins another container's namespace with a named network `container:<name>`".into(),
                ));
            }
        };
        let mut exposed = Vec::new();
        if !spec.ports.is_empty() {
            let mut map: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
            for p in &spec.ports {
                let key = format!("{}/{}", p.guest_port, p.protocol.as_str());
                exposed.push(key.clone());
                map.entry(key)
                    .or_default()
                    .get_or_insert_with(Vec::new)
                    .push(PortBinding {
                        host_ip: None,
                        host_port: Some(p.host_port.to_string()),
                    });
            }
            host.port_bindings = Some(map);
        }
        let labels = spec.runtime_labels(&self.config.node, ExecutorKind::Docker);
        Ok(ContainerCreateBody {
            image: Some(image.clone()),
            entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
            cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
            env: Some(env),
            working_dir: working_dir.clone(),
            user: user.clone(),
            labels: Some(labels.into_iter().collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(host),
            ..Default::default()
        })
    }

    async fn inspect_raw(&self, id: &str) -> Result<ContainerInspectResponse> {
        self.find(id).await.map(|(_, c)| c)
    }

    /// Whether the container runs under a memory limit (so a SIGKILL may be the OOM killer's).
    async fn has_memory_limit(&self, id: &str) -> bool {
        self.inspect_raw(id)
            .await
            .ok()
            .and_then(|c| c.host_config.and_then(|h| h.memory))
            .is_some_and(|m| m > 0)
    }

    fn info_from(&self, id: &str, c: &ContainerInspectResponse) -> ExecutionInfo {
        let labels: BTreeMap<String, String> = c
            .config
            .as_ref()
            .and_then(|cfg| cfg.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let state = match &c.state {
            None => ExecutionState::Created,
            Some(s) => match s.status {
                Some(ContainerStateStatusEnum::CREATED) => ExecutionState::Created,
                Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
                    let code = s.exit_code;
                    let reason = if s.oom_killed == Some(true) {
                        ExitReason::OutOfMemory
                    } else if self.was_stopped(id) {
                        ExitReason::Stopped
                    } else if let Some(err) = s.error.as_ref().filter(|e| !e.is_empty()) {
                        ExitReason::Failed(err.clone())
                    } else {
                        ExitReason::Exited
                    };
                    ExecutionState::Exited(ExitStatus { code, reason })
                }
                _ => ExecutionState::Running,
            },
        };
        ExecutionInfo {
            id: id.to_string(),
            kind: ExecutorKind::Docker,
            state,
            labels,
            detail: format!("container {}", c.id.as_deref().unwrap_or("?")),
        }
    }

    fn was_stopped(&self, id: &str) -> bool {
        self.stopped.lock().map(|s| s.contains(id)).unwrap_or(false)
    }
}

/// Splits `name[:tag][@digest]` into name and tag (default `latest`), minding registry ports.
fn split_reference(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

#[async_trait::async_trait]
impl Executor for DockerExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Docker
    }

    fn status(&self) -> ExecutorStatus {
        match self.conn.read() {
            Ok(g) => g.status.clone(),
            Err(_) => ExecutorStatus {
                kind: ExecutorKind::Docker,
                available: false,
                detail: "Docker executor state poisoned".into(),
            },
        }
    }

    fn gpu_support(&self) -> GpuSupport {
        match self.conn.read() {
            Ok(g) => g.gpu.clone(),
            Err(_) => GpuSupport::none("Docker executor state poisoned"),
        }
    }

    async fn prepare(&self, spec: &ExecutionSpec) -> Result<()> {
        self.client()?;
        let body = self.create_body(spec)?;
        self.ensure_image(body.image.as_deref().unwrap_or_default())
            .await
    }

    async fn start(&self, spec: &ExecutionSpec) -> Result<ExecutionInfo> {
        spec.validate_id()?;
        let docker = self.client()?;
        let body = self.create_body(spec)?;
        self.ensure_image(body.image.as_deref().unwrap_or_default())
            .await?;
        let name = self.name_of(&spec.id);
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        match self
            .call(
                "container create",
                docker.create_container(Some(opts), body),
            )
            .await?
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {
                return Err(ExecutorError::AlreadyExists(spec.id.clone()));
            }
            Err(e) => return Err(api_err(e)),
        }
        if let Err(e) = self
            .call("container start", docker.start_container(&name, None))
            .await?
        {
            let _ = self.remove(&spec.id).await;
            return Err(api_err(e));
        }
        self.inspect(&spec.id).await
    }

    async fn inspect(&self, id: &str) -> Result<ExecutionInfo> {
        let c = self.inspect_raw(id).await?;
        Ok(self.info_from(id, &c))
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus> {
        let docker = self.client()?;
        let (name, _) = self.find(id).await?;
        let mut waiter = docker.wait_container(&name, None);
        // The wait itself has no deadline (the workload decides how long it runs); dockerd
        // answers the request headers at once, which bollard's per-call timeout covers.
        match waiter.next().await {
            Some(Err(e)) if is_status(&e, 404) => return Err(ExecutorError::NotFound(id.into())),
            Some(Ok(_))
            | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. }))
            | None => {}
            Some(Err(e)) => return Err(api_err(e)),
        }
        // dockerd marks a container OOM-killed when the kernel's OOM event reaches it, which
        // can be just after it saw the exit (SIGKILL, 137): a container with a memory limit
        // that died of SIGKILL is asked about again for a moment before the exit is final.
        // (Measured here: the mark was there at the first look after the wait in 10 of 10
        // OOM kills; 300 ms is the margin, and what every plain `docker kill` pays.)
        let mut tries = 0;
        loop {
            match self.inspect(id).await?.state {
                ExecutionState::Exited(s)
                    if s.code == Some(137)
                        && s.reason == ExitReason::Exited
                        && tries < OOM_RECHECKS
                        && self.has_memory_limit(id).await =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                ExecutionState::Exited(s) => return Ok(s),
                other => {
                    return Err(ExecutorError::Runtime(format!(
                        "dockerd reported the wait over but the container is {other:?}"
                    )));
                }
            }
        }
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        let docker = self.client()?.clone();
        let (name, _) = self.find(id).await?;
        let opts = LogsOptionsBuilder::default()
            .follow(options.follow)
            .stdout(true)
            .stderr(true)
            .tail(if options.skip_history { "0" } else { "all" })
            .build();
        let stream = docker
            .logs(&name, Some(opts))
            .filter_map(|item| async move {
                match item {
                    Ok(bollard::container::LogOutput::StdOut { message }) => Some(Ok(LogChunk {
                        source: LogSource::Stdout,
                        data: message,
                    })),
                    Ok(bollard::container::LogOutput::StdErr { message }) => Some(Ok(LogChunk {
                        source: LogSource::Stderr,
                        data: message,
                    })),
                    Ok(bollard::container::LogOutput::Console { message }) => Some(Ok(LogChunk {
                        source: LogSource::Console,
                        data: message,
                    })),
                    Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(api_err(e))),
                }
            });
        Ok(Box::pin(stream))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let docker = self.client()?;
        if let Ok(mut s) = self.stopped.lock() {
            s.insert(id.to_string());
        }
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::default().t(secs).build();
        let deadline = grace + self.config.timeout;
        let name = self.resolve(id).await;
        let r = with_deadline("container stop", deadline, async {
            Ok(docker.stop_container(&name, Some(opts)).await)
        })
        .await?;
        match r {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 304) => Ok(()), // already stopped
            Err(e) if is_status(&e, 404) => Err(ExecutorError::NotFound(id.into())),
            Err(e) => Err(api_err(e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let docker = self.client()?;
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let name = self.resolve(id).await;
        match self
            .call(
                "container remove",
                docker.remove_container(&name, Some(opts)),
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Err(ExecutorError::NotFound(id.into())),
            Err(e) => Err(api_err(e)),
        }
    }

    async fn exec(&self, id: &str, argv: &[String], timeout: Duration) -> Result<ExecOutput> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        if argv.is_empty() {
            return Err(ExecutorError::InvalidSpec("an empty command".into()));
        }
        let docker = self.client()?;
        let name = self.resolve(id).await;
        let run = async {
            let created = docker
                .create_exec(
                    &name,
                    CreateExecOptions {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(argv.to_vec()),
                        ..Default::default()
                    },
                )
                .await;
            let created = match created {
                Ok(c) => c,
                Err(e) if is_status(&e, 404) => return Err(ExecutorError::NotFound(id.into())),
                Err(e) if is_status(&e, 409) => {
                    return Err(ExecutorError::Runtime(format!(
                        "execution {id} is not running"
                    )));
                }
                Err(e) => return Err(api_err(e)),
            };
            let mut out = ExecOutput::default();
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            match docker
                .start_exec(&created.id, None)
                .await
                .map_err(api_err)?
            {
                StartExecResults::Attached { mut output, .. } => {
                    while let Some(item) = output.next().await {
                        let (buf, data) = match item.map_err(api_err)? {
                            bollard::container::LogOutput::StdOut { message } => {
                                (&mut stdout, message)
                            }
                            bollard::container::LogOutput::StdErr { message } => {
                                (&mut stderr, message)
                            }
                            _ => continue,
                        };
                        let room = EXEC_MAX_OUTPUT.saturating_sub(buf.len());
                        buf.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                StartExecResults::Detached => {}
            }
            let inspected = docker.inspect_exec(&created.id).await.map_err(api_err)?;
            out.exit_code = inspected.exit_code;
            out.stdout = String::from_utf8_lossy(&stdout).into_owned();
            out.stderr = String::from_utf8_lossy(&stderr).into_owned();
            // dockerd reports a command it could not start (no such binary) as exit code
            // 126/127 with the reason on the attached output; it is passed on as is.
            Ok(out)
        };
        with_deadline("container exec", timeout, run).await
    }

    async fn netns(&self, id: &str) -> Result<Option<std::path::PathBuf>> {
        let c = self.inspect_raw(id).await?;
        let pid = c
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| ExecutorError::Runtime(format!("execution {id} is not running")))?;
        Ok(Some(std::path::PathBuf::from(format!(
            "/proc/{pid}/ns/net"
        ))))
    }

    async fn list(&self) -> Result<Vec<ExecutionInfo>> {
        let docker = self.client()?;
        let filters =
            HashMap::from([("label", vec![format!("{LABEL_NODE}={}", self.config.node)])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .call("container list", docker.list_containers(Some(opts)))
            .await?
            .map_err(api_err)?;
        let mut out = Vec::new();
        for c in found {
            let Some(id) = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_EXECUTION))
                .cloned()
            else {
                continue;
            };
            match self.inspect(&id).await {
                Ok(info) => out.push(info),
                Err(ExecutorError::NotFound(_)) => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unconnected() -> DockerExecutor {
        DockerExecutor {
            tag: node_tag("node"),
            config: DockerConfig::new("node"),
            conn: Arc::new(RwLock::new(Conn {
                client: None,
                status: ExecutorStatus {
                    kind: ExecutorKind::Docker,
                    available: false,
                    detail: "test".into(),
                },
                gpu: gpu::support_from(&[], None),
            })),
            stopped: Mutex::new(HashSet::new()),
        }
    }

    fn limits(cores: f64, memory: u64) -> Result<(Option<i64>, Option<i64>)> {
        let mut spec = ExecutionSpec::new(
            "x",
            Workload::Container {
                image: "busybox".into(),
                working_dir: None,
                user: None,
            },
        );
        spec.resources.cpu_cores = cores;
        spec.resources.memory_bytes = memory;
        let host = unconnected()
            .create_body(&spec)?
            .host_config
            .unwrap_or_default();
        Ok((host.nano_cpus, host.memory))
    }

    #[test]
    fn limits_are_exact_or_refused_never_wrapped() {
        assert_eq!(
            limits(1.5, 1 << 30).ok(),
            Some((Some(1_500_000_000), Some(1 << 30)))
        );
        assert_eq!(limits(0.0, 0).ok(), Some((None, None)));
        for cores in [-4.0, f64::NAN, f64::INFINITY, 1e300, 1e-12] {
            assert!(
                matches!(limits(cores, 1 << 30), Err(ExecutorError::InvalidSpec(_))),
                "{cores}"
            );
        }
        assert!(matches!(
            limits(1.0, u64::MAX),
            Err(ExecutorError::InvalidSpec(_))
        ));
    }

    #[test]
    fn references_split_into_name_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(
            split_reference("nunet-test/busybox:1.36"),
            ("nunet-test/busybox", "1.36")
        );
        assert_eq!(split_reference("reg:5000/img"), ("reg:5000/img", "latest"));
        assert_eq!(split_reference("reg:5000/img:v1"), ("reg:5000/img", "v1"));
    }
}
